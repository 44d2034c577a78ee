"""The ``bayes-recon`` command line.

Subcommands: ``reconstruct`` (one problem, one method, outputs to a folder) and
``demo`` (the end-to-end pipeline that ``make demo`` runs).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from . import __version__
from ._io import write_json
from .runs import write_run
from .data import PROBLEMS, digits, ellipses, shepp_logan, simulate
from .metrics import psnr, ssim
from .operators import tikhonov, tv_reconstruction



CLASSICAL_METHODS = ("fbp", "adjoint", "tikhonov", "tv")
IMAGES = ("shepp_logan", "digit", "ellipse")


def load_image(name: str, size: int, index: int = 0) -> torch.Tensor:
    """The ground-truth image ``(1, 1, size, size)`` named on the command line."""
    if name == "shepp_logan":
        return shepp_logan(size)
    if name == "digit":
        return digits("test", size=size)[index : index + 1]
    if name == "ellipse":
        return ellipses(index + 1, size, seed=0)[index : index + 1]
    raise ValueError(f"image must be one of {list(IMAGES)}, got {name!r}")


def classical_reconstruction(method: str, op, y: torch.Tensor, noise_std: float,
                             tikhonov_weight: float, tv_weight: float, tv_iterations: int,
                             progress: bool):
    """Run one classical method; returns ``(B, C, H, W)``.

    Weights are relative: Tikhonov ``weight · ||A||²``, TV ``weight · σ · ||A||``,
    so one default works across problem sizes and noise levels.
    """
    if method == "fbp":
        if not hasattr(op, "fbp"):
            raise ValueError(f"method 'fbp' needs a CT problem, got {type(op).__name__}")
        return op.fbp(y)
    if method == "adjoint":
        return op.adjoint(y)
    if method == "tikhonov":
        return tikhonov(op, y, weight=tikhonov_weight * op.norm() ** 2)
    if method == "tv":
        return tv_reconstruction(op, y, weight=tv_weight * noise_std * op.norm(),
                                 iterations=tv_iterations, progress=progress)
    raise ValueError(f"method must be one of {list(CLASSICAL_METHODS)}, got {method!r}")


def _add_problem_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--problem", choices=PROBLEMS, default="ct", help="forward model")
    p.add_argument("--size", type=int, default=64, help="image side length in pixels")
    p.add_argument("--angles", type=int, default=20, help="CT: number of projection angles")
    p.add_argument("--spokes", type=int, default=30, help="MRI: number of radial spokes")
    p.add_argument("--noise", type=float, default=0.05,
                   help="relative noise: noise_std = noise * mean|A x|")
    p.add_argument("--image", choices=IMAGES, default="shepp_logan", help="ground truth")
    p.add_argument("--index", type=int, default=0, help="which test image (digit/ellipse)")
    p.add_argument("--seed", type=int, default=0, help="noise and mask seed")


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from .data.problems import ProblemConfig, build_operator

    config = ProblemConfig(problem=args.problem, size=args.size, angles=args.angles,
                           spokes=args.spokes, seed=args.seed)
    op = build_operator(config)
    truth = load_image(args.image, args.size, args.index)
    meas = simulate(op, truth, relative_noise=args.noise, seed=args.seed)
    start = time.perf_counter()
    x = classical_reconstruction(args.method, op, meas.y, meas.noise_std, args.tikhonov_weight,
                                 args.tv_weight, args.tv_iterations, not args.no_progress)
    elapsed = time.perf_counter() - start
    metrics = {
        "problem": args.problem, "method": args.method, "image": args.image,
        "size": args.size, "angles": args.angles, "relative_noise": args.noise,
        "noise_std": meas.noise_std, "seed": args.seed,
        "psnr": float(psnr(x, truth, data_range=1.0)[0]),
        "ssim": float(ssim(x, truth, data_range=1.0)[0]),
        "wall_time_s": elapsed, "bayes_recon_version": __version__,
    }
    out = write_run(args.out, truth, x, metrics)
    print(f"{args.method}: PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.3f} -> {out}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from .runs import calibrate_run

    report = calibrate_run(args.run_dir)
    cov = dict(zip(report["levels"], report["coverage"]))
    print(f"coverage at 90%: {cov.get(0.9, float('nan')):.3f}, calibration error "
          f"{report['calibration_error']:.3f}, test log-likelihood "
          f"{report['test_log_likelihood']:.3f} -> {args.run_dir}/calibration.md")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import DemoConfig, run_demo

    run_demo(DemoConfig(out=Path(args.out), quick=args.quick, progress=not args.no_progress))
    return 0


def cmd_train_prior(args: argparse.Namespace) -> int:
    from .data.prior_sets import prior_training_data
    from .models.checkpoint import save_model
    from .models.supn_vae import SUPNConfig, SUPNVAE
    from .models.training import TrainConfig, evaluate_nll, train_prior

    data = prior_training_data(args.dataset, size=args.size, num_patches=args.num_patches,
                               seed=args.seed)
    config = SUPNConfig(image_size=data.train.shape[-1], latent_dim=args.latent_dim,
                        radius=args.radius, widths=tuple(args.widths),
                        covariance=args.covariance)
    train_config = TrainConfig(stage1_epochs=args.stage1_epochs,
                               stage2_epochs=args.stage2_epochs, batch_size=args.batch_size,
                               lr=args.lr, patience=args.patience, seed=args.seed)
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(args.seed)  # weight initialisation; restored below
    model = SUPNVAE(config)
    torch.random.set_rng_state(gen_state)
    out = Path(args.out)
    start = time.perf_counter()
    result = train_prior(model, data.train, data.val, train_config, checkpoint_dir=out,
                         progress=not args.no_progress)
    elapsed = time.perf_counter() - start
    record = {
        "command": "bayes-recon train-prior " + " ".join(args.argv),
        "dataset": args.dataset,
        "split": data.split,
        "seed": args.seed,
        "num_patches": args.num_patches,
        "train_bpp": evaluate_nll(result.model, data.train, seed=args.seed),
        "val_bpp": evaluate_nll(result.model, data.val, seed=args.seed),
        "test_bpp": evaluate_nll(result.model, data.test, seed=args.seed),
        "nll": "negative ELBO, one seeded z sample per image, bits per pixel",
        "train_seconds": elapsed,
        "bayes_recon_version": __version__,
    }
    save_model(result.model, out / "model.safetensors", metadata=record)
    write_json(out / "history.json", {"history": result.history, "best": result.best_val_bpp})
    print(f"{args.covariance} prior on {args.dataset}: train {record['train_bpp']:.3f}, "
          f"val {record['val_bpp']:.3f}, test {record['test_bpp']:.3f} bits/pixel -> {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bayes-recon",
        description="Bayesian uncertainty quantification for imaging inverse problems.",
    )
    parser.add_argument("--version", action="version", version=f"bayes_recon {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    rec = sub.add_parser("reconstruct", help="reconstruct one simulated measurement",
                         description="Simulate y = A x + noise for a test image and "
                         "reconstruct it; writes PNG, .npy and metrics.json to --out.")
    _add_problem_arguments(rec)
    rec.add_argument("--method", choices=CLASSICAL_METHODS, default="tv")
    rec.add_argument("--tikhonov-weight", type=float, default=0.01,
                     help="Tikhonov weight in units of ||A||^2")
    rec.add_argument("--tv-weight", type=float, default=0.05,
                     help="TV weight in units of noise_std * ||A|| (data term 1/2||Ax-y||^2)")
    rec.add_argument("--tv-iterations", type=int, default=1000)
    rec.add_argument("--out", required=True, help="output folder")
    rec.add_argument("--no-progress", action="store_true", help="hide progress bars")
    rec.set_defaults(func=cmd_reconstruct)

    tp = sub.add_parser("train-prior", help="train a SUPN-VAE prior (two stages)",
                        description="Train a structured / diagonal / identity SUPN-VAE "
                        "prior; writes model.safetensors + model.json (config and training "
                        "record), history.json and a resumable checkpoint to --out.")
    tp.add_argument("--dataset", choices=("digits", "patches"), default="digits")
    tp.add_argument("--covariance", choices=("structured", "diagonal", "identity"),
                    default="structured")
    tp.add_argument("--size", type=int, default=None, help="image size (28 digits, 32 patches)")
    tp.add_argument("--latent-dim", type=int, default=16)
    tp.add_argument("--radius", type=int, default=2, help="stencil radius (structured)")
    tp.add_argument("--widths", type=int, nargs="+", default=[32, 64])
    tp.add_argument("--stage1-epochs", type=int, default=150)
    tp.add_argument("--stage2-epochs", type=int, default=150)
    tp.add_argument("--batch-size", type=int, default=64)
    tp.add_argument("--lr", type=float, default=1e-3)
    tp.add_argument("--patience", type=int, default=15)
    tp.add_argument("--num-patches", type=int, default=20000, help="patches dataset size")
    tp.add_argument("--seed", type=int, default=0)
    tp.add_argument("--out", required=True, help="output folder (resumes a checkpoint there)")
    tp.add_argument("--no-progress", action="store_true", help="hide progress bars")
    tp.set_defaults(func=cmd_train_prior)

    cal = sub.add_parser("calibrate", help="calibration report of a saved Bayesian run",
                         description="Read RUN_DIR/posterior.nc (written by `reconstruct` "
                         "with a Bayesian method) and write calibration.json, calibration.md "
                         "and figures (calibration curve, PIT, sparsification, error vs std).")
    cal.add_argument("run_dir", help="folder written by bayes-recon reconstruct")
    cal.set_defaults(func=cmd_calibrate)

    demo = sub.add_parser("demo", help="the end-to-end demo (what `make demo` runs)",
                          description="CT of a held-out digit with every method, "
                          "a calibration report and a summary table in --out.")
    demo.add_argument("--out", default="demo_output", help="output folder")
    demo.add_argument("--quick", action="store_true", help="a fast version (< 2 minutes)")
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv[1:]
    try:
        return args.func(args)
    except (ValueError, TypeError) as err:
        parser.exit(2, f"bayes-recon {args.command}: error: {err}\n")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
