"""Are DPS and DiffPIR calibrated? Beside the SUPN posterior and the linearised DIP (issue 23, docs/diffusion.md).

Usage::

    python benchmarks/diffusion_calibration.py sweep [--images 3]     # training images: pick defaults
    python benchmarks/diffusion_calibration.py eval PROBLEM IMAGES [--methods dps,diffpir,...]
    python benchmarks/diffusion_calibration.py table                  # markdown for docs/diffusion.md

Problems (as ``benchmarks/heldout_validation.py``, 5 % relative noise, ``simulate(op, x, 0.05,
seed=index)``, σ known to the method, method seed = image index):

    ct      28² digit, ParallelBeamCT(28, 20 angles), digits-diffusion / digits-supn
    mri     28² digit, radial MRI (30 spokes),       digits-diffusion / digits-supn
    deblur  32² natural crop, Gaussian blur σ = 1,   patches-diffusion / patches-supn

``sweep`` runs on *training* images (``digits("train")``, ``natural_patches("train", 32, ·)``)
over DPS guidance (then steps) and DiffPIR λ × ζ (then steps); ``eval`` on the *test*
images with the library defaults (chosen from the sweep, see docs/diffusion.md). Diffusion
samplers: 2 chains × 16 independent runs. One JSON file per run under
``benchmarks/results/diffusion/`` (existing files are skipped: the runs resume).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch

PROBLEMS = ("ct", "mri", "deblur")
METHODS = ("dps", "diffpir", "supn-laplace", "linearised-dip")
NOISE = 0.05
OUT = Path(__file__).resolve().parent / "results" / "diffusion"
#: Guidance at 100 steps, then the step count at two guidance weights.
DPS_GRID = ([{"guidance": g, "steps": 100} for g in (0.1, 0.3, 1.0, 3.0)]
            + [{"guidance": g, "steps": n} for g in (0.3, 1.0) for n in (50, 250)])
#: λ × ζ at 50 steps, then the step count at two settings.
DIFFPIR_GRID = ([{"regularisation": lam, "zeta": z, "steps": 50} for lam in (1.0, 7.0, 30.0)
                 for z in (0.3, 1.0)]
                + [{"regularisation": lam, "zeta": z, "steps": n} for lam, z in ((7.0, 0.3), (1.0, 1.0))
                   for n in (25, 100)])
SAMPLES, CHAINS = 16, 2


def build(problem: str, split: str, index: int):
    """``(truth (1, 1, n, n), op, y, σ, diffusion prior name, SUPN prior name)``."""
    from bayes_recon.data import digits, natural_patches, simulate
    from bayes_recon.operators import MRI, Blur, ParallelBeamCT, gaussian_kernel, radial_mask

    if problem in ("ct", "mri"):
        truth = digits(split, 28)[index:index + 1]
        op = ParallelBeamCT(28, 20) if problem == "ct" else MRI(28, radial_mask(28, 30))
        names = ("digits-diffusion", "digits-supn")
    else:
        truth = natural_patches(split, 32, index + 1, seed=0)[index:index + 1]
        op, names = Blur(32, gaussian_kernel(1.0)), ("patches-diffusion", "patches-supn")
    meas = simulate(op, truth, relative_noise=NOISE, seed=index)
    return truth, op, meas.y, meas.noise_std, *names


def scores(post, truth, seconds: float) -> dict:
    from bayes_recon.diagnostics import calibration
    from bayes_recon.metrics import psnr

    report = calibration(post, truth[0], patch_sizes=())
    return {"coverage": {f"{lev:g}": report.coverage_at(lev) for lev in (0.5, 0.9, 0.95)},
            "calibration_error": report.calibration_error,
            "test_log_likelihood": report.test_log_likelihood,
            "psnr": float(psnr(truth, post.mean[None].to(truth.dtype), data_range=1.0)),
            "rmse": report.rmse, "mean_std": report.mean_std,
            "seconds": seconds, "seconds_per_sample": seconds / post.num_samples,
            "num_samples": post.num_samples}


def run_diffusion(problem, split, index, method, config) -> dict:
    from bayes_recon.inference import sample_posterior
    from bayes_recon.models import load_pretrained_diffusion

    truth, op, y, sigma, name, _ = build(problem, split, index)
    prior = load_pretrained_diffusion(name)
    start = time.perf_counter()
    post = sample_posterior(y, op, prior, sigma, method=method, num_samples=SAMPLES,
                            num_chains=CHAINS, seed=index, config=config, progress=False)
    out = scores(post, truth, time.perf_counter() - start)
    out["mean_data_misfit"] = float(post.sample_stats["data_misfit"].mean())
    if method == "diffpir":
        out["cg_converged"] = post.extras["cg_converged"]
        out["cg_max_residual"] = post.extras["cg_max_residual"]
    return out


def run_reference(problem, index, method) -> dict:
    from bayes_recon.app.methods import MethodSettings, load_prior, run_method

    truth, op, y, sigma, _, supn = build(problem, "test", index)
    if method == "supn-laplace":
        settings = MethodSettings("laplace", prior=supn, num_samples=100, num_chains=2,
                                  seed=index, progress=False)
        prior = load_prior(supn)
    else:
        settings, prior = MethodSettings("linearised-dip", seed=index, progress=False), None
    start = time.perf_counter()
    post = run_method(settings, op, y, sigma, prior).posterior
    return scores(post, truth, time.perf_counter() - start)


def _write(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(path)


def sweep(images: int, problems) -> None:
    from bayes_recon.inference import DiffPIRConfig, DPSConfig

    for problem, index in itertools.product(problems, range(images)):
        for method, grid, cls in (("dps", DPS_GRID, DPSConfig), ("diffpir", DIFFPIR_GRID, DiffPIRConfig)):
            for params in grid:
                key = "_".join(f"{k}{v:g}" for k, v in params.items())
                path = OUT / "sweep" / f"{problem}_{index}_{method}_{key}.json"
                if path.exists():
                    continue
                rec = run_diffusion(problem, "train", index, method, cls(**params))
                _write(path, {"problem": problem, "index": index, "split": "train",
                              "method": method, "params": params, **rec})
                print(path.name, f"cov90 {rec['coverage']['0.9']:.3f} psnr {rec['psnr']:.2f} "
                      f"tll {rec['test_log_likelihood']:.3f}", flush=True)


def evaluate(problem: str, images, methods) -> None:
    for index, method in itertools.product(images, methods):
        path = OUT / "eval" / f"{problem}_{index}_{method}.json"
        if path.exists():
            continue
        if method in ("dps", "diffpir"):
            rec = run_diffusion(problem, "test", index, method, None)  # library defaults
        else:
            rec = run_reference(problem, index, method)
        _write(path, {"problem": problem, "index": index, "split": "test", "method": method,
                      **rec})
        print(path.name, f"cov90 {rec['coverage']['0.9']:.3f} psnr {rec['psnr']:.2f}", flush=True)


def _mean(rows, f):
    return float(np.mean([f(r) for r in rows]))


def table() -> str:
    lines = []
    sweep_rows = [json.loads(p.read_text()) for p in sorted((OUT / "sweep").glob("*.json"))]
    for method in ("dps", "diffpir"):
        rows = [r for r in sweep_rows if r["method"] == method]
        if not rows:
            continue
        keys = sorted({json.dumps(r["params"], sort_keys=True) for r in rows})
        lines += [f"\n**{method} sweep** (training images; mean over images; per problem "
                  "cov. 90 % / test LL / PSNR)\n",
                  "| settings | " + " | ".join(PROBLEMS) + " | mean test LL |",
                  "|---|" + "---|" * (len(PROBLEMS) + 1)]
        for key in keys:
            cells, tlls = [], []
            for problem in PROBLEMS:
                rs = [r for r in rows if r["problem"] == problem
                      and json.dumps(r["params"], sort_keys=True) == key]
                if not rs:
                    cells.append("–")
                    continue
                tll = _mean(rs, lambda r: r["test_log_likelihood"])
                tlls.append(tll)
                cells.append(f"{_mean(rs, lambda r: r['coverage']['0.9']):.2f} / {tll:.2f} / "
                             f"{_mean(rs, lambda r: r['psnr']):.1f}")
            params = ", ".join(f"{k}={v:g}" for k, v in json.loads(key).items())
            lines.append(f"| {params} | " + " | ".join(cells) + f" | {np.mean(tlls):.2f} |")
    eval_rows = [json.loads(p.read_text()) for p in sorted((OUT / "eval").glob("*.json"))]
    for problem in PROBLEMS:
        mine = [r for r in eval_rows if r["problem"] == problem]
        if not mine:
            continue
        images = sorted({r["index"] for r in mine})
        lines += [f"\n**{problem}** (test images {', '.join(map(str, images))})\n",
                  "| method | cov. 50 % | cov. 90 % | cov. 95 % | min cov. 90 % | cal. error | "
                  "test LL | PSNR | s / sample | s / image |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for method in METHODS:
            rs = [r for r in mine if r["method"] == method]
            if not rs:
                continue
            lines.append(
                f"| {method} ({len(rs)}) | {_mean(rs, lambda r: r['coverage']['0.5']):.3f} | "
                f"{_mean(rs, lambda r: r['coverage']['0.9']):.3f} | "
                f"{_mean(rs, lambda r: r['coverage']['0.95']):.3f} | "
                f"{min(r['coverage']['0.9'] for r in rs):.3f} | "
                f"{_mean(rs, lambda r: r['calibration_error']):.3f} | "
                f"{_mean(rs, lambda r: r['test_log_likelihood']):.3f} | "
                f"{_mean(rs, lambda r: r['psnr']):.2f} | "
                f"{_mean(rs, lambda r: r['seconds_per_sample']):.3f} | "
                f"{_mean(rs, lambda r: r['seconds']):.1f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sw = sub.add_parser("sweep")
    sw.add_argument("--images", type=int, default=3)
    sw.add_argument("--problems", default=",".join(PROBLEMS))
    ev = sub.add_parser("eval")
    ev.add_argument("problem", choices=PROBLEMS)
    ev.add_argument("images", help="comma-separated test indices")
    ev.add_argument("--methods", default=",".join(METHODS))
    sub.add_parser("table")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.command == "sweep":
        sweep(args.images, args.problems.split(","))
    elif args.command == "eval":
        evaluate(args.problem, [int(i) for i in args.images.split(",")], args.methods.split(","))
    else:
        print(table())


if __name__ == "__main__":
    main()
