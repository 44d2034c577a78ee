"""Ablation of the linearised DIP's model ingredients on TRAINING images (issue 21).

Usage: python benchmarks/linearised_ablation.py [--digits 0,1,2] [--crops 0] [--variants ...]
       [--floor -9] [--num-samples 200] [--json PATH]

Runs :func:`~bayes_recon.inference.linearised.linearised_dip` with ``calibration="none"``
(the evidence-fitted Laplace posterior as it is, no bootstrap factor) and the library's
other defaults (300 Adam steps, 32-channel U-Net, γ = 3σ, path chosen by the library)
on

* 28² training digits ``digits("train", 28)[i]``, ``ParallelBeamCT(28, 20)``;
* 64² training crops ``natural_patches("train", 64, ·, seed=0)[i]``, ``ParallelBeamCT(64, 60)``
  (``--crop-size 128``: 128² crops with ``ParallelBeamCT(128, 90)``);

5 % noise, ``simulate(op, x, 0.05, seed=i)``, σ known, DIP and draws seeded with ``i``.
Variants (each adds one ingredient to today's default; ``κ`` is the TV-PredCP rate):

=============  ===============================================================================
default        ``LaplaceConfig()``, κ = 20 on the summed expected TV
mean_tv        ``predcp_normalisation="mean"``, κ = 20·784 = 15680 (identical prior at 28²)
floor          ``min_log_variance=--floor``
lin_g_lbfgs    ``expansion="linearised", g_prior=True``, L-BFGS, κ = 20 (sum)
lin_g_em       the same with ``hyperparameter_method="em"`` (Antorán et al. ICLR 2023)
all_lbfgs      mean TV (κ = 15680) + floor + linearised + g-prior, L-BFGS
all_em         the same with EM
recipe_em      linearised + g-prior + EM + floor, κ = 0 (plain type-II evidence, the ICLR 2023 recipe)
with_1x1       ``include_1x1=True``: the 1x1 convolutions linearised too (iid prior per block)
mean_tv_1x1    mean TV (κ = 15680) and the 1x1 convolutions
=============  ===============================================================================

Columns: 90 % coverage of the truth by the central interval
``[res.posterior.quantile(0.05), quantile(0.95)]`` (fraction of pixels), mean posterior
std / RMSE of the posterior mean, PSNR of the mean (data range 1), wall seconds of the
whole call. The truth scores the draws only. Prints a markdown table; ``--json`` writes
every row (plus hyperparameters, floored blocks, stop reasons) after each run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
import warnings

import torch

from bayes_recon.data import digits, natural_patches, simulate
from bayes_recon.inference.linearised.config import LaplaceConfig
from bayes_recon.inference.linearised.pipeline import LinearisedDIPConfig, linearised_dip
from bayes_recon.metrics import psnr
from bayes_recon.operators import ParallelBeamCT

KAPPA_SUM = 20.0
#: κ with the per-pixel expected TV that equals κ = 20 on the summed one at 28² (N = 784).
KAPPA_MEAN = KAPPA_SUM * 28 * 28
VARIANTS = ("default", "mean_tv", "floor", "lin_g_lbfgs", "lin_g_em", "all_lbfgs", "all_em", "recipe_em",
            "with_1x1", "mean_tv_1x1")


def variant_config(name: str, floor: float, num_samples: int) -> LinearisedDIPConfig:
    """The :class:`LinearisedDIPConfig` of one variant (see the module docstring)."""
    lin = {"expansion": "linearised", "g_prior": True}
    table = {
        "default": ({}, KAPPA_SUM),
        "mean_tv": ({"predcp_normalisation": "mean"}, KAPPA_MEAN),
        "floor": ({"min_log_variance": floor}, KAPPA_SUM),
        "lin_g_lbfgs": ({**lin, "hyperparameter_method": "lbfgs"}, KAPPA_SUM),
        "lin_g_em": ({**lin, "hyperparameter_method": "em"}, KAPPA_SUM),
        "all_lbfgs": ({**lin, "hyperparameter_method": "lbfgs", "predcp_normalisation": "mean",
                       "min_log_variance": floor}, KAPPA_MEAN),
        "all_em": ({**lin, "hyperparameter_method": "em", "predcp_normalisation": "mean",
                    "min_log_variance": floor}, KAPPA_MEAN),
        "recipe_em": ({**lin, "hyperparameter_method": "em", "min_log_variance": floor}, 0.0),
        "with_1x1": ({"include_1x1": True}, KAPPA_SUM),
        "mean_tv_1x1": ({"include_1x1": True, "predcp_normalisation": "mean"}, KAPPA_MEAN),
    }
    laplace, kappa = table[name]
    return LinearisedDIPConfig(calibration="none", num_samples=num_samples, predcp_scale=kappa,
                               laplace=LaplaceConfig(**laplace))


def run_one(size: int, index: int, x: torch.Tensor, op, variant: str, floor: float, num_samples: int) -> dict:
    meas = simulate(op, x, 0.05, seed=index)
    cfg = variant_config(variant, floor, num_samples)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        # Recorded, not hidden: every warning's class and text goes into the row.
        warnings.simplefilter("always")
        res = linearised_dip(meas.y, op, meas.noise_std, cfg, seed=index, progress=False)
    seconds = time.perf_counter() - t0
    for w in caught:
        print(f"  warning {w.category.__name__}: {str(w.message)[:160]}", flush=True)
    post = res.posterior
    truth = x[0].to(post.mean.dtype)
    lo, hi = post.quantile(0.05), post.quantile(0.95)
    coverage = float(((truth >= lo) & (truth <= hi)).double().mean())
    mean = post.mean
    rmse = float((mean - truth).pow(2).mean().sqrt())
    std = float(post.std.mean())
    ev = res.evidence
    return {"size": size, "image": index, "variant": variant, "coverage90": coverage,
            "mean_std": std, "rmse": rmse, "std_over_rmse": std / rmse,
            "psnr": float(psnr(truth, mean, data_range=1.0)), "seconds": seconds,
            "predcp_scale": cfg.predcp_scale, "laplace": {k: v for k, v in cfg.laplace.__dict__.items()},
            "path": res.laplace.path, "method": ev.history and "em" or "lbfgs",
            "evidence_converged": ev.converged, "stop_reason": ev.stop_reason,
            "iterations": ev.iterations, "floored_blocks": ev.floored_blocks,
            "hyperparameters": res.laplace.hyperparameters, "log_evidence": ev.log_evidence,
            "timings": res.timings, "warnings": [f"{w.category.__name__}: {str(w.message)[:300]}" for w in caught]}


def table(rows: list[dict]) -> str:
    lines = ["| size | image | variant | 90 % coverage | mean std / RMSE | PSNR | s | floored | stop |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['size']}² | {r['image']} | {r['variant']} | {r['coverage90']:.3f} | "
                     f"{r['mean_std']:.4f} / {r['rmse']:.4f} = {r['std_over_rmse']:.2f} | {r['psnr']:.2f} | "
                     f"{r['seconds']:.0f} | {len(r['floored_blocks'])} | {r['stop_reason']} |")
    means = {}
    for r in rows:
        means.setdefault((r["size"], r["variant"]), []).append(r)
    lines += ["", "| size | variant | images | mean 90 % coverage | mean std / RMSE | mean PSNR |",
              "|---|---|---|---|---|---|"]
    for (size, variant), rs in means.items():
        n = len(rs)
        lines.append(f"| {size}² | {variant} | {n} | {sum(r['coverage90'] for r in rs) / n:.3f} | "
                     f"{sum(r['std_over_rmse'] for r in rs) / n:.2f} | {sum(r['psnr'] for r in rs) / n:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--digits", default="0,1,2", help="comma-separated training digits at 28² ('' for none)")
    ap.add_argument("--crops", default="", help="comma-separated training crops ('' for none)")
    ap.add_argument("--crop-size", type=int, choices=(64, 128), default=64,
                    help="side of the crops: 64 (60 angles) or 128 (90 angles), as docs/scaling.md")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {VARIANTS}")
    ap.add_argument("--floor", type=float, default=-9.0, help="min_log_variance of the floor variants")
    ap.add_argument("--num-samples", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None, help="write the rows here (after every run)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    variants = [v for v in args.variants.split(",") if v]
    for v in variants:
        if v not in VARIANTS:
            raise ValueError(f"--variants: unknown variant {v!r}; expected some of {VARIANTS}")
    problems = []
    idx = [int(i) for i in args.digits.split(",") if i]
    if idx:
        truths = digits("train", 28)
        problems += [(28, i, truths[i:i + 1], ParallelBeamCT(28, 20)) for i in idx]
    idx = [int(i) for i in args.crops.split(",") if i]
    if idx:
        side = args.crop_size
        truths = natural_patches("train", side, max(idx) + 1, seed=0)
        problems += [(side, i, truths[i:i + 1], ParallelBeamCT(side, {64: 60, 128: 90}[side])) for i in idx]
    rows = []
    for size, i, x, op in problems:
        for v in variants:
            row = run_one(size, i, x, op, v, args.floor, args.num_samples)
            rows.append(row)
            print(f"{size}² image {i} {v}: coverage {row['coverage90']:.3f}, std/RMSE "
                  f"{row['std_over_rmse']:.2f}, PSNR {row['psnr']:.2f}, {row['seconds']:.0f} s, path {row['path']}, "
                  f"floored {row['floored_blocks']}, stop {row['stop_reason']}", flush=True)
            if args.json:
                os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
                tmp = args.json + ".tmp"
                with open(tmp, "w") as f:
                    json.dump({"argv": vars(args), "kappa_sum": KAPPA_SUM, "kappa_mean": KAPPA_MEAN,
                               "rows": rows}, f, indent=1, default=lambda o: None if isinstance(o, float)
                              and not math.isfinite(o) else str(o))
                os.replace(tmp, args.json)
    print(table(rows))


if __name__ == "__main__":
    main()
