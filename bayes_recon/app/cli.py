"""The ``bayes-recon`` command line.

Subcommands: ``reconstruct`` (one problem, one method, outputs to a folder; the
measurement simulated from a built-in or user image, or read from the user's file,
with a built-in geometry or the user's sparse system matrix),
``calibrate`` (calibration report of a Bayesian run folder), ``train-prior``,
``benchmark`` (timing ratios against references) and ``demo`` (the end-to-end
pipeline that ``make demo`` runs). The methods ``reconstruct`` can run are
listed in :mod:`bayes_recon.app.methods`, the one method registry.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
import sys
import time
from pathlib import Path

# Only light imports here: `bayes-recon --help` and argument errors should not wait for
# torch, Pyro and ArviZ. Each command imports what it runs.
from .. import __version__
from .argtypes import (
    ALL_METHODS,
    CLASSICAL_METHODS,
    DIP_CALIBRATIONS,
    DIP_DEFAULTS,
    HVAE_DEFAULTS,
    DIP_METHODS,
    GMRF_METHODS,
    HOLDOUT_SCHEMES,
    NONNEG_INT,
    POS_INT,
    PROBLEMS,
    SUPN_MAP_METHODS,
    SUPN_POSTERIOR_METHODS,
    CliParser,
    DeprecatedAlias,
    int_at_least,
    nonnegative_float,
    positive_float,
    temperature_list,
)

__all__ = ["main", "build_parser", "load_image", "settings_from_args", "classical_reconstruction",
           "CLASSICAL_METHODS", "ALL_METHODS", "IMAGES"]

IMAGES = ("shepp_logan", "digit", "ellipse", "patch")
DEFAULT_SIZE = 64
#: The ``study`` subcommand's help in the command list (as in ``studies.command``).
STUDY_HELP = "calibration studies over test sets on Dask"


def __getattr__(name: str):
    # `from bayes_recon.app.cli import classical_reconstruction` keeps working without
    # importing the method registry (and the inference stack) at import time.
    if name == "classical_reconstruction":
        from .methods import classical_reconstruction

        return classical_reconstruction
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def progress_from_args(args: argparse.Namespace) -> bool:
    """Progress bars: ``--progress`` on, ``--no-progress`` off, else only on a terminal.

    tqdm redraws with carriage returns, which fill a redirected log with one line per update.
    """
    if getattr(args, "progress", False):
        return True
    if getattr(args, "no_progress", False):
        return False
    return sys.stderr.isatty()


def load_image(name: str, size: int, index: int = 0):
    """The ground-truth image ``(1, 1, size, size)`` (a tensor) named on the command line.

    ``digit`` and ``patch`` come from the held-out test splits (MNIST-style
    digits; photographs disjoint from the prior's training patches).
    """
    from ..data import digits, ellipses, natural_patches, shepp_logan

    if name == "shepp_logan":
        return shepp_logan(size)
    if name == "digit":
        images = digits("test", size=size)
        if not 0 <= index < images.shape[0]:
            raise ValueError(f"--index must lie in [0, {images.shape[0]}) for digits, got {index}")
        return images[index : index + 1]
    if name == "ellipse":
        return ellipses(index + 1, size, seed=0)[index : index + 1]
    if name == "patch":
        return natural_patches("test", size, index + 1, seed=0)[index : index + 1]
    raise ValueError(f"image must be one of {list(IMAGES)}, got {name!r}")


def settings_from_args(args: argparse.Namespace):
    """The typed settings of ``reconstruct`` from its parsed arguments (validated).

    ``--noise-std VALUE`` counts as a known σ (the value is handed to the method).
    Returns a :class:`~bayes_recon.app.methods.MethodSettings`.
    """
    from ..inference import (DiffPIRConfig, DPSConfig, HVAEMAPConfig, HVAEPosteriorConfig,
                             LinearisedDIPConfig, MAPConfig, SamplingConfig)
    from ..models import UNetConfig
    from .methods import ClassicalSettings, MethodSettings
    from .own_data import parse_noise_std

    map_config = MAPConfig(max_iterations=args.map_iterations, z_steps=args.z_steps,
                           x_steps=args.x_steps, restarts=args.restarts,
                           temperature=args.temperature, seed=args.seed)
    sampling = SamplingConfig(warmup=args.warmup, max_tree_depth=args.max_tree_depth,
                              map_steps=args.map_steps, temperature=args.temperature)
    dip = LinearisedDIPConfig(tv_scale=args.dip_tv_scale, iterations=args.dip_iterations,
                              lr=args.dip_lr, input=args.dip_input,
                              network=UNetConfig(channels=args.dip_channels),
                              predcp_scale=args.predcp_scale,
                              evidence_iterations=args.evidence_iterations, init=args.dip_init,
                              calibration=args.dip_calibration)
    classical = ClassicalSettings(tikhonov_weight=args.tikhonov_weight,
                                  tv_weight=args.tv_weight, tv_iterations=args.tv_iterations)
    steps = {} if args.diffusion_steps is None else {"steps": args.diffusion_steps}
    dps = DPSConfig(guidance=args.guidance, **steps)
    diffpir = DiffPIRConfig(regularisation=args.diffpir_lambda, zeta=args.diffpir_zeta, **steps)
    temps = {} if args.hvae_temperature is None else {"temperature": args.hvae_temperature}
    hvae = HVAEMAPConfig(max_iterations=args.pnp_iterations, decoder_scale=args.decoder_scale, **temps)
    hvae_posterior = HVAEPosteriorConfig(steps=args.svi_steps)
    noise_mode, _ = parse_noise_std(args.noise_std, simulated=args.measurement is None)
    return MethodSettings(method=args.method, noise=noise_mode, seed=args.seed,
                          progress=progress_from_args(args), classical=classical,
                          prior=args.prior,
                          map=map_config, sampling=sampling, num_samples=args.num_samples,
                          num_chains=args.num_chains, dip=dip, dropout=args.dropout,
                          dps=dps, diffpir=diffpir, hvae=hvae, hvae_posterior=hvae_posterior)


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from ..metrics import psnr, ssim
    from ..operators.classical import rough_noise_std
    from .methods import load_prior, run_method
    from .own_data import (build_problem, check_noise_level, check_output_folder,
                           resolved_spokes, staged_output)
    from .runs import write_run

    settings = settings_from_args(args)  # bad options fail before any work is done
    check_output_folder(args.out, args.overwrite)
    validation = validation_from_args(args, settings)
    prior = load_prior(settings.prior, args.size) if settings.prior is not None else None
    size = args.size if args.size is not None else (
        prior.config.image_size if prior is not None else DEFAULT_SIZE)
    problem = build_problem(args, size, IMAGES, load_image)
    op, y, truth = problem.op, problem.y, problem.truth
    if validation is not None:
        validation.check(op)
    if hasattr(prior, "supports_shape"):  # a hierarchical VAE: any image that tiles
        if not prior.supports_shape(op.domain_shape):
            raise ValueError(f"--prior {settings.prior} runs on images whose sides are multiples "
                             f"of {list(prior.config.factors)}, but the operator's images are "
                             f"{op.domain_shape[-2]}x{op.domain_shape[-1]}")
    elif prior is not None and tuple(op.domain_shape[-2:]) != (prior.config.image_size,) * 2:
        raise ValueError(f"--prior {settings.prior} models {prior.config.image_size}x"
                         f"{prior.config.image_size} images but the operator's images are "
                         f"{op.domain_shape[-2]}x{op.domain_shape[-1]}")
    start = time.perf_counter()
    # A σ from --noise-std VALUE is "known" to the method; None asks it to estimate.
    result = run_method(settings, op, y, problem.noise_std, prior)
    elapsed = time.perf_counter() - start
    x = result.x.detach()
    warned = list(problem.record.get("warnings", []))
    noise_check = None
    if settings.noise == "estimate":  # an estimated σ far above the data flags a misfit
        sigma, by = result.noise_std, settings.method
        if sigma is None:  # the method used no σ: the FBP residual's, as a check only
            sigma, by = rough_noise_std(op, y), "rough_noise_std (FBP residual)"
        noise_check = check_noise_level(sigma, y, by)
        if noise_check["implausible"]:
            warned.append({"category": "NoiseLevelWarning", "message": noise_check["warning"]})
    metrics = {
        "command": f"bayes-recon {args.command} " + " ".join(args.argv),
        "problem": args.problem if args.operator is None else "user operator",
        "operator": type(op).__name__, "size": size,
        "image_shape": list(op.domain_shape), "measurement_shape": list(op.range_shape),
        "angles": getattr(op, "n_angles", None), "detectors": getattr(op, "n_detectors", None),
        "spokes": resolved_spokes(args),
        "index": args.index, "relative_noise": None,  # a simulation's, from problem.record
        # σ of the simulation (None for measured data); the method's σ is noise_std_used.
        "noise_std": problem.record.get("simulated_noise_std", problem.noise_std),
        "noise_std_used": result.noise_std,
        **problem.record, **settings.record(),
        "noise_check": noise_check, "warnings": warned,
        "wall_time_s": elapsed, "info": result.info, "bayes_recon_version": __version__,
    }
    if args.operator is not None:
        metrics["operator_file"] = str(args.operator)
    if truth is not None:
        metrics["psnr"] = float(psnr(truth, x, data_range=1.0)[0])
        metrics["ssim"] = float(ssim(truth, x, data_range=1.0)[0])
        if result.posterior is not None:
            metrics["psnr_of"] = "posterior mean"
        if result.point_estimate is not None:
            metrics["point_estimate_psnr"] = float(
                psnr(truth, result.point_estimate, data_range=1.0)[0])
    heldout = None
    if validation is not None:  # the same method on each fold's kept measurements
        from .validation import validate_method

        heldout = validate_method(settings, op, y, problem.noise_std, prior, validation,
                                  progress=settings.progress)
    with staged_output(args.out, args.overwrite) as stage:  # all of --out, or nothing
        write_run(stage, truth, x, metrics, posterior=result.posterior, y=y, op=op, noise_std=result.noise_std)
        if problem.medical is not None:  # DICOM/NIfTI: also in the scanner's units (HU for CT)
            from .own_data import write_physical_outputs

            write_physical_outputs(stage, problem.medical, x, result.posterior, truth=truth)
        if heldout is not None:
            from .validation import write_validation

            record = write_validation(stage, heldout, seconds_full=elapsed)
    out = Path(args.out)
    what = "posterior mean " if result.posterior is not None else ""
    quality = (f"PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.3f}, "
               if truth is not None else "")
    print(f"{args.method}: {what}{quality}{elapsed:.1f} s -> {out}")
    if heldout is not None:
        cov = record["coverage"]
        print(f"held-out {heldout.scheme}s ({len(heldout.folds_run)} of {heldout.folds} folds, no "
              f"truth): coverage {cov['0.5']:.3f} / {cov['0.9']:.3f} / {cov['0.95']:.3f} at "
              f"50 / 90 / 95 %, log-likelihood {heldout.heldout_log_likelihood:.3f} per "
              f"measurement -> {out / 'validation.md'}")
    if result.posterior is not None:  # LOO needs no truth; coverage and PIT need it
        print(f"calibrate it with: bayes-recon calibrate {out}")
    return 0


def validation_from_args(args: argparse.Namespace, settings: MethodSettings):
    """The hold-out settings of ``--validate`` (None without it); checked before any work."""
    from .methods import POSTERIOR_METHODS
    from .validation import ValidationSettings

    if not args.validate:
        given = [flag for flag, value in (("--folds", args.folds), ("--holdout-scheme",
                 args.holdout_scheme)) if value is not None] + (["--one-fold"] if args.one_fold else [])
        if given:
            raise ValueError(f"{', '.join(given)} only apply with --validate")
        return None
    if settings.method not in POSTERIOR_METHODS:
        raise ValueError(f"--validate needs a method with posterior samples, one of "
                         f"{list(POSTERIOR_METHODS)}; --method {settings.method} gives a point "
                         "estimate only")
    return ValidationSettings(folds=5 if args.folds is None else args.folds,
                              scheme=args.holdout_scheme, quick=args.one_fold, seed=args.seed)


def _add_validation_arguments(p: argparse.ArgumentParser, always: bool = False) -> None:
    v = p.add_argument_group("held-out validation, no ground truth (docs/validation.md)")
    if always:
        p.set_defaults(validate=True)
    else:
        v.add_argument("--validate", action="store_true",
                       help="also hold out measurements, reconstruct from the rest with the same "
                       "method and check the posterior's prediction of them: writes "
                       "validation.json, validation.md and figures (costs --folds more runs)")
    v.add_argument("--folds", type=int_at_least(2), default=None,
                   help="K: each fold holds out 1/K of the projections, spokes, lines or "
                   "entries (default 5)")
    v.add_argument("--holdout-scheme", choices=HOLDOUT_SCHEMES, default=None,
                   help="default: by the problem (projection for CT, spoke or line for MRI, "
                   "random entries otherwise)")
    v.add_argument("--one-fold", action="store_true",
                   help="a quick check: run fold 0 only (1/K of the cost)")


def cmd_calibrate(args: argparse.Namespace) -> int:
    from .runs import calibrate_run

    report = calibrate_run(args.run_dir)
    if "coverage" in report:  # the truth is known
        cov = dict(zip(report["levels"], report["coverage"]))
        print(f"coverage at 90%: {cov.get(0.9, float('nan')):.3f}, calibration error "
              f"{report['calibration_error']:.3f}, test log-likelihood "
              f"{report['test_log_likelihood']:.3f} -> {args.run_dir}/calibration.md")
    if "loo" in report:  # the run has the predictive groups
        loo = report["loo"]
        counts = loo["pareto_k_counts"]
        high = counts["(0.7, 1]"] + counts["(1, inf)"]
        print(f"LOO: elpd_loo {loo['elpd_loo']:.2f} (SE {loo['elpd_loo_se']:.2f}), p_loo "
              f"{loo['p_loo']:.2f}, Pareto k > 0.7 for {high} of {loo['num_observations']} entries "
              f"-> {args.run_dir}/calibration.md")
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    import dataclasses

    from ._io import write_json, write_text
    from .benchmarking import BenchmarkConfig, markdown_table, run_benchmarks

    config = BenchmarkConfig.quick() if args.quick else BenchmarkConfig()
    if args.no_map:
        config = dataclasses.replace(config, map_vs_tv=False)
    results = run_benchmarks(config)
    table = markdown_table(results)
    print(table)
    if args.out is not None:
        out = Path(args.out)
        write_json(out / "benchmark.json", results)
        write_text(out / "benchmark.md", table + "\n")
        print(f"-> {out / 'benchmark.json'}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import torch

    from .demo import DemoConfig, run_demo

    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    # The demo's 28x28 problems gain nothing from intra-op threads, and on a loaded
    # machine spinning OpenMP workers make them several times slower.
    torch.set_num_threads(args.threads)
    run_demo(DemoConfig(out=Path(args.out), quick=args.quick, progress=progress_from_args(args)))
    return 0


def cmd_train_prior(args: argparse.Namespace) -> int:
    import torch

    from ._io import write_json
    from ..data.prior_sets import prior_training_data
    from ..models.checkpoint import save_model
    from ..models.supn_vae import SUPNConfig, SUPNVAE
    from ..models.training import (TrainConfig, copy_mean_network, evaluate_nll, mean_network_state,
                                   train_prior)

    data = prior_training_data(args.dataset, size=args.size, num_patches=args.num_patches,
                               seed=args.seed)
    config = SUPNConfig(image_size=data.train.shape[-1], latent_dim=args.latent_dim,
                        radius=args.radius, widths=tuple(args.widths),
                        covariance=args.covariance)
    train_config = TrainConfig(stage1_epochs=args.stage1_epochs,
                               stage2_epochs=args.stage2_epochs, batch_size=args.batch_size,
                               lr=args.lr, patience=args.patience, seed=args.seed)
    with torch.random.fork_rng(devices=[]):  # seeded weight initialisation
        torch.manual_seed(args.seed)
        model = SUPNVAE(config)
    if args.mean_from is not None:  # stage 1 is taken from another prior, not trained
        copy_mean_network(model, mean_network_state(args.mean_from))
        train_config = replace(train_config, stage1_epochs=0)
    out = Path(args.out)
    start = time.perf_counter()
    result = train_prior(model, data.train, data.val, train_config, checkpoint_dir=out,
                         progress=progress_from_args(args))
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


def _add_problem_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("problem")
    g.add_argument("--problem", choices=PROBLEMS, default="ct",
                   help="forward model (ct: parallel beam; ct-fan: fan beam, flat detector)")
    g.add_argument("--size", type=int_at_least(4), default=None,
                   help=f"image side length in pixels (default: the prior's image size, "
                   f"else {DEFAULT_SIZE})")
    g.add_argument("--angles", type=POS_INT, default=None,
                   help="CT only: number of projection angles (default: a --measurement's first "
                   "axis, else 20)")
    g.add_argument("--detectors", type=POS_INT, default=None,
                   help="CT only: detector count (default: the geometry's own, covering the "
                   "image; a --measurement must have that many unless this is given)")
    g.add_argument("--spokes", type=POS_INT, default=None,
                   help="MRI only: number of radial spokes (default: 30)")
    g.add_argument("--relative-noise", type=positive_float, default=None, metavar="R",
                   help="noise of a simulated measurement relative to the data: noise_std = R * "
                   "mean|A x| (default: 0.05); --noise-std is the method's absolute sigma")
    g.add_argument("--noise", dest="relative_noise", type=positive_float, default=None,
                   action=DeprecatedAlias, replacement="--relative-noise", metavar="R",
                   help="deprecated name of --relative-noise")
    g.add_argument("--image", default=None, metavar="NAME|FILE",
                   help=f"simulate the measurement from this image: one of {', '.join(IMAGES)} "
                   "(digit, patch: held-out test images) or a PNG/TIFF/NPY file (grey or RGB, "
                   "resized to --size), or a scanner image: DICOM .dcm or NIfTI .nii/.nii.gz "
                   "(physical units, e.g. HU, mapped to [0, 1] by its min-max or --window; "
                   "adds *_hu.tif / *_physical.tif outputs); default shepp_logan")
    f = p.add_argument_group("your own data (docs/own_data.md)")
    f.add_argument("--measurement", default=None, metavar="FILE",
                   help="reconstruct a measured sinogram (real) or k-space (complex) from "
                   "NPY/NPZ/HDF5 instead of simulating one")
    f.add_argument("--dataset", default=None,
                   help="array name in an NPZ, or dataset path in an HDF5 --measurement")
    f.add_argument("--operator", default=None, metavar="FILE.npz",
                   help="any linear geometry as a scipy sparse matrix (scipy.sparse.save_npz): "
                   "rows are measurements, columns pixels; needs --image-shape")
    f.add_argument("--image-shape", type=POS_INT, nargs="+", default=None, metavar="N",
                   help="--operator: the image the matrix's columns stand for, H W (row-major)")
    f.add_argument("--window", type=float, nargs=2, default=None, metavar=("CENTER", "WIDTH"),
                   help="DICOM/NIfTI --image: map [CENTER - WIDTH/2, CENTER + WIDTH/2] (physical "
                   "units, e.g. 40 400 HU) to [0, 1], clipping beyond (default: the slice's "
                   "min-max, lossless)")
    f.add_argument("--frame", type=NONNEG_INT, default=None, metavar="N",
                   help="DICOM/NIfTI --image: frame of a multi-frame DICOM or volume of a 4-D "
                   "NIfTI (0-based; required when there are several)")
    f.add_argument("--slice", type=NONNEG_INT, nargs=2, default=None, metavar=("AXIS", "INDEX"),
                   help="NIfTI --image: slice INDEX along AXIS (0-2) of a 3-D volume (default: "
                   "the middle slice of axis 2)")
    fan = p.add_argument_group("fan-beam CT (--problem ct-fan)")
    fan.add_argument("--source-distance", type=positive_float, default=None,
                     help="source to rotation centre, in pixels (default 2 * size)")
    fan.add_argument("--detector-distance", type=positive_float, default=None,
                     help="rotation centre to the flat detector, in pixels (default size)")
    fan.add_argument("--detector-spacing", type=positive_float, default=None,
                     help="detector pitch in pixels (default: covering the image)")
    fan.add_argument("--scan", choices=("full", "short"), default="full",
                     help="full circle or short scan (pi + fan angle, Parker weights)")
    g.add_argument("--index", type=NONNEG_INT, default=0,
                   help="which test image (digit/ellipse/patch)")
    g.add_argument("--seed", type=NONNEG_INT, default=0,
                   help="seed of the noise, masks and the inference (chains, restarts, weights)")


def _add_progress_arguments(p: argparse.ArgumentParser) -> None:
    bars = p.add_mutually_exclusive_group()
    bars.add_argument("--progress", action="store_true",
                      help="show progress bars (default: only when stderr is a terminal)")
    bars.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _add_method_arguments(rec: argparse.ArgumentParser) -> None:
    rec.add_argument("--method", choices=ALL_METHODS, default="tv", metavar="METHOD",
                     help=f"classical: {', '.join(CLASSICAL_METHODS)}; SUPN MAP (needs --prior): "
                     f"{', '.join(SUPN_MAP_METHODS)}; SUPN posterior (needs --prior): "
                     f"{', '.join(SUPN_POSTERIOR_METHODS)}; deep image prior: "
                     f"{', '.join(DIP_METHODS)}; GMRF posterior: {', '.join(GMRF_METHODS)} "
                     "(default: tv)")
    rec.add_argument("--noise-std", default=None, metavar="known|estimate|VALUE",
                     help="known: give the method the simulated noise std (the default for a "
                     "simulated measurement); estimate: the method estimates it (evidence for "
                     "SUPN and linearised-dip; the default for --measurement); VALUE: this std")
    rec.add_argument("--num-samples", type=POS_INT, default=None,
                     help="posterior draws: per chain for nuts/laplace (default 200), in total "
                     "for DIP posteriors (default 1000)")
    rec.add_argument("--out", required=True, help="output folder")
    rec.add_argument("--overwrite", action="store_true",
                     help="replace --out whole if it already holds files (else refused)")
    _add_progress_arguments(rec)

    c = rec.add_argument_group("classical methods")
    c.add_argument("--tikhonov-weight", type=positive_float, default=0.01,
                   help="Tikhonov weight in units of ||A||^2")
    c.add_argument("--tv-weight", type=positive_float, default=0.05,
                   help="TV weight in units of noise_std * ||A|| (data term 1/2||Ax-y||^2)")
    c.add_argument("--tv-iterations", type=POS_INT, default=1000,
                   help="Chambolle-Pock iterations of tv")

    s = rec.add_argument_group("SUPN prior methods (alternating, jpmap, csgm, svi, nuts, laplace)")
    s.add_argument("--prior", default=None,
                   help="shipped prior name (bayes_recon.models.available_priors(), e.g. "
                   "digits-supn; available_diffusion_priors() for dps/diffpir, e.g. "
                   "digits-diffusion; available_hvae_priors() for pnp-hvae/hvae-svi, e.g. "
                   "digits-hvae) or a .safetensors file saved with save_model")
    s.add_argument("--map-iterations", type=POS_INT, default=30,
                   help="MAP outer iterations (svi: 10x as many SVI steps)")
    s.add_argument("--z-steps", type=POS_INT, default=20, help="L-BFGS iterations per MAP z-step")
    s.add_argument("--x-steps", type=POS_INT, default=20,
                   help="gradient steps per x-step of alternating")
    s.add_argument("--restarts", type=POS_INT, default=4, help="csgm starts (encoder + random)")
    s.add_argument("--temperature", type=positive_float, default=1.0, help="latent prior scale T")
    s.add_argument("--num-chains", type=POS_INT, default=2, help="nuts/laplace chains")
    s.add_argument("--warmup", type=NONNEG_INT, default=None,
                   help="NUTS warm-up steps per chain (default: --num-samples)")
    s.add_argument("--max-tree-depth", type=POS_INT, default=6, help="NUTS tree-depth bound")
    s.add_argument("--map-steps", type=POS_INT, default=50,
                   help="L-BFGS iterations of the collapsed latent MAP (chain start, laplace)")

    df = rec.add_argument_group("diffusion prior methods (dps, diffpir; docs/diffusion.md)")
    df.add_argument("--diffusion-steps", type=int_at_least(2), default=None,
                    help="reverse steps (default: 100)")
    df.add_argument("--guidance", type=positive_float, default=0.1,
                    help="dps: step ζ on ||y - A x0_hat|| per reverse step")
    df.add_argument("--diffpir-lambda", type=positive_float, default=7.0,
                    help="diffpir: λ of the data step's weight ρ_t = λ σ² / σ_t²")
    df.add_argument("--diffpir-zeta", type=float, default=0.3,
                    help="diffpir: share of fresh noise when re-noising, in [0, 1]")
    hv = rec.add_argument_group("hierarchical VAE prior methods (pnp-hvae, hvae-svi; docs/hvae.md)")
    hv.add_argument("--hvae-temperature", type=temperature_list, default=None,
                    help="pnp-hvae: τ in (0, 1], one value or one per latent group, comma-separated "
                    f"(default: {HVAE_DEFAULTS['temperature']})")
    hv.add_argument("--pnp-iterations", type=POS_INT, default=HVAE_DEFAULTS["max_iterations"],
                    help="pnp-hvae fixed-point iterations")
    hv.add_argument("--decoder-scale", type=positive_float, default=1.0,
                    help="pnp-hvae: γ multiplying the decoder's standard deviation")
    hv.add_argument("--svi-steps", type=POS_INT, default=HVAE_DEFAULTS["svi_steps"],
                    help="hvae-svi: SVI steps per chain")
    d = rec.add_argument_group("deep image prior methods (dip, linearised-dip, mc-dropout-dip, "
                               "fixed-sigma-dip)")
    d.add_argument("--dip-iterations", type=POS_INT, default=DIP_DEFAULTS["iterations"],
                   help="DIP Adam iterations")
    d.add_argument("--dip-lr", type=positive_float, default=DIP_DEFAULTS["lr"], help="DIP Adam learning rate")
    d.add_argument("--dip-tv-scale", type=positive_float, default=3.0,
                   help="DIP TV weight in units of noise_std (estimated from the FBP residual "
                   "with --noise-std estimate)")
    d.add_argument("--dip-channels", type=POS_INT, default=32, help="U-Net channels per scale")
    d.add_argument("--dip-input", choices=("fbp", "noise"), default="fbp",
                   help="network input: FBP/A^T y of the measurement, or seeded noise")
    d.add_argument("--dip-init", default=None, metavar="NAME|FILE",
                   help="start the DIP from a pretrained U-Net ('educated DIP'): a shipped network "
                   "(ellipses-ct-dip) or a U-Net checkpoint .safetensors; default: random initialisation")
    d.add_argument("--dropout", type=float, default=0.1,
                   help="mc-dropout-dip: channel dropout probability")
    d.add_argument("--dip-calibration", choices=DIP_CALIBRATIONS, default=DIP_DEFAULTS["calibration"],
                   help="linearised-dip: how the error bars' level is set: heldout (an image-space "
                   "discrepancy fitted on held-out projections), bootstrap (DIP refits, a factor) or none")
    d.add_argument("--evidence-iterations", type=POS_INT, default=200,
                   help="linearised-dip: evidence (type-II) optimisation iterations")
    d.add_argument("--predcp-scale", type=nonnegative_float, default=DIP_DEFAULTS["predcp_scale"],
                   help="linearised-dip: TV-PredCP rate kappa on the hyperparameters (0: plain MLL)")


def build_parser(*, study: bool = True) -> argparse.ArgumentParser:
    """The ``bayes-recon`` parser.

    ``study=False`` puts a placeholder in place of the ``study`` subcommand's parser:
    that one imports the studies package and with it torch (1.5-2.5 s), which every
    other command's ``--help`` and argument errors would otherwise wait for.
    """
    parser = CliParser(  # its subparsers inherit the class: short usage errors, shown defaults
        prog="bayes-recon",
        description="Bayesian uncertainty quantification for imaging inverse problems.",
    )
    parser.add_argument("--version", action="version", version=f"bayes_recon {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    rec = sub.add_parser("reconstruct", help="reconstruct one measurement (simulated or yours)",
                         description="Reconstruct y = A x + noise with any method: y simulated "
                         "from a test image or your image file, or read from your measurement "
                         "file; A a built-in geometry or your sparse matrix. Writes "
                         "reconstruction .npy/.png/.tif (and truth, when known) and metrics.json "
                         "to --out; posterior methods also write posterior.nc (ArviZ), mean/std "
                         ".npy/.png/.tif and samples.npy, ready for `bayes-recon calibrate`. "
                         "Nothing is written to --out if anything fails.")
    _add_problem_arguments(rec)
    _add_method_arguments(rec)
    _add_validation_arguments(rec)
    rec.set_defaults(func=cmd_reconstruct)

    val = sub.add_parser("validate", help="reconstruct and check the error bars on held-out "
                         "measurements (no ground truth)",
                         description="`bayes-recon reconstruct ... --validate`: the same "
                         "options and outputs, plus validation.json / validation.md from a "
                         "K-fold hold-out of the measurements by the problem's physical scheme. "
                         "Needs a method with posterior samples.")
    _add_problem_arguments(val)
    _add_method_arguments(val)
    _add_validation_arguments(val, always=True)
    val.set_defaults(func=cmd_reconstruct)

    tp = sub.add_parser("train-prior", help="train a SUPN-VAE prior (two stages)",
                        description="Train a structured / diagonal / identity SUPN-VAE "
                        "prior; writes model.safetensors + model.json (config and training "
                        "record), history.json and a resumable checkpoint to --out.")
    tp.add_argument("--dataset", choices=("digits", "patches"), default="digits",
                    help="training images")
    tp.add_argument("--covariance", choices=("structured", "diagonal", "identity"),
                    default="structured", help="decoder covariance")
    tp.add_argument("--size", type=int, default=None, help="image size (28 digits, 32 patches)")
    tp.add_argument("--latent-dim", type=int, default=16, help="latent dimension")
    tp.add_argument("--radius", type=int, default=2, help="stencil radius (structured)")
    tp.add_argument("--widths", type=int, nargs="+", default=[32, 64],
                    help="encoder/decoder channels per level")
    tp.add_argument("--stage1-epochs", type=int, default=150, help="max epochs, stage 1 (encoder + mean decoder)")
    tp.add_argument("--stage2-epochs", type=int, default=150, help="max epochs, stage 2 (precision decoder)")
    tp.add_argument("--batch-size", type=int, default=64, help="images per step")
    tp.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    tp.add_argument("--patience", type=int, default=15, help="epochs without validation gain before a stage stops")
    tp.add_argument("--num-patches", type=int, default=20000, help="patches dataset size")
    tp.add_argument("--seed", type=int, default=0, help="seed of the data split, patches and weights")
    tp.add_argument("--mean-from", default=None, metavar="PATH",
                    help="skip stage 1: copy the encoder and mean decoder of a trained prior "
                         "(a model .safetensors, or a training folder past stage 1), e.g. a "
                         "diagonal baseline sharing a structured prior's mean network")
    tp.add_argument("--out", required=True, help="output folder (resumes a checkpoint there)")
    _add_progress_arguments(tp)
    tp.set_defaults(func=cmd_train_prior)

    cal = sub.add_parser("calibrate", help="calibration report of a saved Bayesian run",
                         description="Read RUN_DIR/posterior.nc (written by `reconstruct` "
                         "with a Bayesian method) and write calibration.json, calibration.md "
                         "and figures (calibration curve, PIT, sparsification, error vs std) "
                         "when the truth is known; with the predictive groups also PSIS-LOO "
                         "of the measurement (elpd_loo, p_loo, Pareto k) and ppc.png, "
                         "loo_pit.png, which need no truth.")
    cal.add_argument("run_dir", help="folder written by bayes-recon reconstruct")
    cal.set_defaults(func=cmd_calibrate)

    bench = sub.add_parser("benchmark", help="timing ratios against reference implementations",
                           description="Time CT forward vs skimage radon, StructuredGaussian "
                           "log_prob vs a diagonal Normal, and jpmap MAP vs TV, each against "
                           "its reference in the same run; prints a markdown table.")
    bench.add_argument("--quick", action="store_true", help="small sizes (< 30 s)")
    bench.add_argument("--no-map", action="store_true", help="skip the jpmap-vs-TV comparison")
    bench.add_argument("--out", default=None,
                       help="folder for benchmark.json and benchmark.md (default: print only)")
    bench.set_defaults(func=cmd_benchmark)

    demo = sub.add_parser("demo", help="the end-to-end demo (what `make demo` runs)",
                          description="CT of a held-out digit with every method, "
                          "a calibration report and a summary table in --out.")
    demo.add_argument("--out", default="demo_output", help="output folder")
    demo.add_argument("--quick", action="store_true", help="a fast version (< 2 minutes)")
    _add_progress_arguments(demo)
    demo.add_argument("--threads", type=int, default=1,
                      help="torch intra-op threads (default 1: the problems are small)")
    demo.set_defaults(func=cmd_demo)
    if study:
        from .studies.command import add_study_parser

        add_study_parser(sub)
    else:  # same name and help in the command list; main() builds the real one for `study`
        sub.add_parser("study", help=STUDY_HELP)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # The subcommand is the first word that is not an option (the top level takes no values).
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(study=command == "study")
    args = parser.parse_args(argv)
    args.argv = argv[1:]
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError) as err:
        parser.exit(2, f"bayes-recon {args.command}: error: {err}\n")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
