"""Does the truth-free held-out check say what the truth says? (issue 20, docs/validation.md)

Usage: python benchmarks/heldout_validation.py PROBLEM IMAGES [--methods ...] [--folds 5]
       [--out benchmarks/results/heldout] [--table]

    PROBLEM  ct      held-out test digit, ParallelBeamCT(28, 20 angles)
             mri     held-out test digit, radial MRI (28², 30 spokes)
             deblur  natural test crop (32², natural_patches("test", 32, ·, seed=0)), Gaussian blur σ=1
    IMAGES   comma-separated test indices, e.g. 0,1,2

All with 5 % relative noise (``simulate(op, x, 0.05, seed=index)``), σ known to the method,
method seed = image index. Methods (the registry's settings, library defaults):

    supn-laplace    SUPN posterior, PSIS-checked Laplace in z (``laplace``, 2 x 100 draws, as the
                    quick demo; digits-supn, patches-supn)
    linearised-dip  TV-PredCP linearised DIP (bootstrap level calibration on, as shipped)
    fixed-sigma-dip DIP + fixed σ (image noise from the data misfit)
    mc-dropout-dip  DIP + MC dropout (p = 0.1)
    gmrf            Gaussian posterior of a GMRF prior, hyperparameters by evidence

Per (problem, image, method) one JSON file in ``--out`` (resumable: existing files are
skipped): image-space coverage at 50/90/95 % and test log-likelihood *with* the truth,
held-out-measurement coverage, log-likelihood and excess-variance ratio *without* it
(K folds, the operator's physical scheme), PSIS-LOO of the full-data posterior, and times.
``--table`` prints the markdown tables of docs/validation.md from the files.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

PROBLEMS = ("ct", "mri", "deblur")
METHODS = ("supn-laplace", "linearised-dip", "fixed-sigma-dip", "mc-dropout-dip", "gmrf")
NOISE = 0.05


def build(problem: str, index: int):
    from bayes_recon.data import digits, natural_patches, simulate
    from bayes_recon.operators import MRI, Blur, ParallelBeamCT, gaussian_kernel, radial_mask

    if problem == "ct":
        truth, op, prior = digits("test", 28)[index:index + 1], ParallelBeamCT(28, 20), "digits-supn"
    elif problem == "mri":
        truth, op, prior = digits("test", 28)[index:index + 1], MRI(28, radial_mask(28, 30)), "digits-supn"
    else:
        truth = natural_patches("test", 32, index + 1, seed=0)[index:index + 1]
        op, prior = Blur(32, gaussian_kernel(1.0)), "patches-supn"
    meas = simulate(op, truth, relative_noise=NOISE, seed=index)
    return truth, op, meas.y, meas.noise_std, prior


def settings_for(method: str, prior: str, seed: int):
    from bayes_recon.app.methods import MethodSettings

    if method == "supn-laplace":
        return MethodSettings("laplace", prior=prior, num_samples=100, num_chains=2, seed=seed,
                              progress=False)
    return MethodSettings(method, seed=seed, progress=False, num_samples=1000)


def null_space_fractions(op, post, truth) -> dict:
    """Shares of the mean's error and of the posterior's variance that ``op`` does not see.

    With the truth (for the explanation in docs/validation.md only): ``V`` spans the row
    space of the full operator; what lies outside it is invisible to every measurement,
    held out or not.
    """
    a = op.to_dense()
    _, s, vh = torch.linalg.svd(a, full_matrices=False)
    rows = vh[s > 1e-8 * s[0]]  # (r, N)
    err = (post.mean.double() - truth[0].double()).reshape(-1)
    dev = post.flat_samples.double().reshape(post.num_samples, -1)
    dev = dev - dev.mean(0)
    seen_err = float((rows @ err).pow(2).sum() / err.pow(2).sum())
    seen_var = float((dev @ rows.T).pow(2).sum() / dev.pow(2).sum())
    # Image space: measured over claimed squared error, the analogue of the excess ratio.
    image_ratio = float(err.pow(2).mean() / dev.pow(2).sum(0).div(dev.shape[0] - 1).mean())
    return {"error_null_fraction": 1 - seen_err, "variance_null_fraction": 1 - seen_var,
            "image_variance_ratio": image_ratio,
            "rank": int(rows.shape[0]), "pixels": int(a.shape[1])}


def full_only(problem: str, index: int, method: str) -> dict:
    """The full-data reconstruction's null-space fractions (for rows made before they were kept)."""
    from bayes_recon.app.methods import load_prior, run_method

    truth, op, y, sigma, prior_name = build(problem, index)
    settings = settings_for(method, prior_name, index)
    prior = load_prior(prior_name) if settings.prior is not None else None
    post = run_method(settings, op, y, sigma, prior).posterior
    return null_space_fractions(op, post, truth)


def run_one(problem: str, index: int, method: str, folds: int) -> dict:
    from bayes_recon.app.methods import load_prior, run_method
    from bayes_recon.app.validation import ValidationSettings, validate_method
    from bayes_recon.diagnostics import calibration, loo_summary, to_arviz

    truth, op, y, sigma, prior_name = build(problem, index)
    settings = settings_for(method, prior_name, index)
    prior = load_prior(prior_name) if settings.prior is not None else None
    start = time.perf_counter()
    result = run_method(settings, op, y, sigma, prior)
    seconds_full = time.perf_counter() - start
    post = result.posterior
    report = calibration(post, truth[0])
    idata = to_arviz(post, y=y[0], op=op, noise_std=sigma, predictive=True, seed=index)
    loo = loo_summary(idata)
    val = validate_method(settings, op, y, sigma, prior, ValidationSettings(folds=folds),
                          progress=False)
    return {
        "problem": problem, "index": index, "method": method,
        "image_coverage": {f"{lev:g}": report.coverage_at(lev) for lev in (0.5, 0.9, 0.95)},
        "image_calibration_error": report.calibration_error,
        "test_log_likelihood": report.test_log_likelihood,
        "heldout": val.to_dict(),
        "loo": loo,
        "seconds_full": seconds_full,
        "seconds_folds": float(sum(f["seconds"] for f in val.per_fold)),
        "std_scale": post.extras.get("std_scale"),
        "null_space": null_space_fractions(op, post, truth),
    }


def _machine() -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {"commit": commit, "machine": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def table(out: Path) -> str:
    """Markdown tables of docs/validation.md from the JSON files in ``out``."""
    from scipy import stats

    rows = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    lines = []
    for problem in PROBLEMS:
        mine = [r for r in rows if r["problem"] == problem]
        if not mine:
            continue
        images = sorted({r["index"] for r in mine})
        lines += [f"\n**{problem}** (test images {', '.join(map(str, images))})\n",
                  "| method | image 90 % cov. (truth) | held-out 90 % cov. (no truth) | "
                  "noise-only 90 % | excess var. ratio (no truth) | image var. ratio (truth) | "
                  "test LL (truth) | held-out LL | "
                  "elpd_loo | k̂ > 0.7 | null space: error / variance (truth) | full (s) | "
                  "5 folds / full |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for method in METHODS:
            rs = [r for r in mine if r["method"] == method]
            if not rs:
                continue
            mean = lambda f: float(np.mean([f(r) for r in rs]))
            ratios = [r["heldout"]["excess_variance_ratio"] for r in rs]
            ratio = ("n/a" if any(v is None for v in ratios)
                     else f"{np.median(ratios):.2f}")
            null = ("–" if any("null_space" not in r for r in rs) else
                    f"{max(0.0, mean(lambda r: r['null_space']['error_null_fraction'])):.2f} / "
                    f"{max(0.0, mean(lambda r: r['null_space']['variance_null_fraction'])):.2f}")
            img_ratio = ("–" if any("image_variance_ratio" not in r.get("null_space", {})
                                    for r in rs) else
                         f"{np.median([r['null_space']['image_variance_ratio'] for r in rs]):.2f}")
            bad_k = sum(r["loo"]["pareto_k_counts"].get("(0.7, 1]", 0)
                        + r["loo"]["pareto_k_counts"].get("(1, inf)", 0) for r in rs)
            lines.append(
                f"| {method} | {mean(lambda r: r['image_coverage']['0.9']):.3f} | "
                f"{mean(lambda r: r['heldout']['coverage']['0.9']):.3f} | "
                f"{mean(lambda r: r['heldout']['noise_only_coverage']['0.9']):.3f} | {ratio} | {img_ratio} | "
                f"{mean(lambda r: r['test_log_likelihood']):.3f} | "
                f"{mean(lambda r: r['heldout']['heldout_log_likelihood']):.3f} | "
                f"{mean(lambda r: r['loo']['elpd_loo']):.1f} | {bad_k} | {null} | "
                f"{mean(lambda r: r['seconds_full']):.1f} | "
                f"{mean(lambda r: r['seconds_folds'] / r['seconds_full']):.1f} |")
        # Rankings per image: by test log-likelihood (truth) against by elpd_loo (no truth).
        taus = []
        for i in images:
            rs = [r for r in mine if r["index"] == i]
            if len(rs) < 3:
                continue
            tll = [r["test_log_likelihood"] for r in rs]
            elpd = [r["loo"]["elpd_loo"] for r in rs]
            hll = [r["heldout"]["heldout_log_likelihood"] for r in rs]
            taus.append((stats.kendalltau(tll, elpd).statistic,
                         stats.kendalltau(tll, hll).statistic,
                         [r["method"] for r in sorted(rs, key=lambda r: -r["test_log_likelihood"])],
                         [r["method"] for r in sorted(rs, key=lambda r: -r["loo"]["elpd_loo"])]))
        for i, (t_loo, t_held, by_tll, by_loo) in zip(images, taus):
            lines.append(f"\nimage {i}: ranking by test LL {' > '.join(by_tll)}; by elpd_loo "
                         f"{' > '.join(by_loo)} (Kendall τ {t_loo:.2f}; held-out LL τ {t_held:.2f})")
    return "\n".join(lines) + "\n"


def _write(path: Path, row: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(row, indent=1, default=float))
    os.replace(tmp, path)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("problem", choices=PROBLEMS + ("none",))
    ap.add_argument("images", nargs="?", default="0")
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--out", default="benchmarks/results/heldout")
    ap.add_argument("--table", action="store_true", help="print the tables from --out and stop")
    ap.add_argument("--fill-null-space", action="store_true",
                    help="add the null-space fractions to files made without them (one full run each)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.table:
        print(table(out))
        return
    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    for index in [int(i) for i in args.images.split(",")]:
        for method in args.methods:
            path = out / f"{args.problem}_{index}_{method}.json"
            if args.fill_null_space and path.exists():
                row = json.loads(path.read_text())
                if "image_variance_ratio" not in row.get("null_space", {}):
                    row["null_space"] = full_only(args.problem, index, method)
                    _write(path, row)
                    print(f"{path.name}: {row['null_space']}", flush=True)
                continue
            if path.exists():
                continue
            row = run_one(args.problem, index, method, args.folds)
            row.update(_machine())
            _write(path, row)
            print(f"{args.problem} {index} {method}: image cov90 {row['image_coverage']['0.9']:.3f}"
                  f", held-out cov90 {row['heldout']['coverage']['0.9']:.3f}, excess ratio "
                  f"{row['heldout']['excess_variance_ratio']}, test LL "
                  f"{row['test_log_likelihood']:.3f}, elpd {row['loo']['elpd_loo']:.1f}, "
                  f"{row['seconds_full']:.0f}+{row['seconds_folds']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
