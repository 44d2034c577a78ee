"""Calibration of the linearised DIP per image size (issue 21): new default, no calibration, bootstrap.

Usage: python benchmarks/linearised_calibration.py SPLIT SIZE INDICES [--bootstrap]
       [--num-samples 1000] [--heldout-folds 4] [--json PATH]

    SPLIT    train | test (choose settings on train, report test)
    SIZE     28 (digits, ``ParallelBeamCT(28, 20)``), 64 (natural crops, 60 angles),
             128 (natural crops, 90 angles)
    INDICES  comma-separated image indices (``digits(SPLIT, 28)[i]`` or crop ``i`` of
             ``natural_patches(SPLIT, SIZE, ·, seed=0)``)

5 % noise (``simulate(op, x, 0.05, seed=i)``), σ known, DIP and draws seeded with ``i``,
library defaults otherwise. One :func:`linearised_dip` call per image with the default
``calibration="heldout"`` (the image-space discrepancy fitted on a held-out quarter of the
projections); from the same call, ``res.laplace.sample`` gives the Laplace posterior with
no calibration ("none"), and with ``--bootstrap`` the library's previous default
(``calibration="bootstrap"``: that posterior's spread × max(1, bootstrap factor), four DIP
refits) is computed on it too. The truth only scores the draws
(:func:`bayes_recon.diagnostics.calibration`: coverage at 50/90/95 %, calibration error,
test log-likelihood). Per image: wall time of the call and the process's peak resident
memory so far (``resource.getrusage``). Prints a markdown table; ``--json`` writes all rows
after each image.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
import warnings

import torch

from bayes_recon.data import digits, natural_patches, simulate
from bayes_recon.diagnostics import calibration
from bayes_recon.inference.bootstrap_scale import bootstrap_std_scale, scale_spread
from bayes_recon.inference.dip import fit_dip
from bayes_recon.inference.linearised.pipeline import LinearisedDIPConfig, dip_tv_weight, linearised_dip
from bayes_recon.operators import ParallelBeamCT

ANGLES = {28: 20, 64: 60, 128: 90}
LEVELS = (0.5, 0.9, 0.95)


def scores(post, truth) -> dict:
    rep = calibration(post, truth, levels=LEVELS, patch_sizes=())
    return {"coverage": [float(c) for c in rep.coverage], "calibration_error": float(rep.calibration_error),
            "test_log_likelihood": float(rep.test_log_likelihood), "mean_std": float(rep.mean_std),
            "rmse": float(rep.rmse)}


def run_image(size: int, index: int, x: torch.Tensor, op, num_samples: int, bootstrap: bool,
              heldout_folds: int) -> dict:
    meas = simulate(op, x, 0.05, seed=index)
    cfg = LinearisedDIPConfig(num_samples=num_samples, heldout_folds=heldout_folds)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")    # recorded in the row, not hidden
        res = linearised_dip(meas.y, op, meas.noise_std, cfg, seed=index, progress=False)
    seconds = time.perf_counter() - t0
    truth = x[0]
    none = res.laplace.sample(num_samples, seed=index)
    row = {"size": size, "image": index, "heldout_folds": heldout_folds, "seconds": seconds, "timings": res.timings,
           "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
           "path": res.laplace.path, "discrepancy": res.discrepancy.to_dict(),
           "heldout": scores(res.posterior, truth), "none": scores(none, truth),
           "warnings": sorted({f"{w.category.__name__}: {str(w.message)[:120]}" for w in caught})}
    if bootstrap:
        t1 = time.perf_counter()
        gamma = dip_tv_weight(cfg, op, meas.y, meas.noise_std)

        def refit(y_k, k):
            return fit_dip(y_k, op, gamma, cfg.iterations, lr=cfg.lr, input=cfg.input, seed=index + 7919 * (k + 1),
                           network_config=cfg.network, progress=False).x
        boot = bootstrap_std_scale(refit, op, res.fit.x, none.std, meas.noise_std, fits=cfg.bootstrap_fits,
                                   level=cfg.calibration_level, seed=index, progress=False)
        applied = max(cfg.bootstrap_min_scale, boot.scale)
        row["bootstrap"] = {**scores(scale_spread(none, applied), truth), "factor": boot.scale, "scale": applied,
                            "seconds": time.perf_counter() - t1}
    return row


def problem(split: str, size: int, indices: str):
    """``(indices, operator, truths)`` of a row: digits at 28², natural crops above."""
    indices = [int(i) for i in indices.split(",") if i]
    op = ParallelBeamCT(size, ANGLES[size])
    truths = (digits(split, 28) if size == 28 else natural_patches(split, size, max(indices) + 1, seed=0))
    return indices, op, truths


def write_rows(path: str, argv: dict, rows: list[dict]) -> None:
    """All rows so far as JSON, replaced atomically (a stopped run keeps its finished images)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as fh:
        json.dump({"argv": argv, "rows": rows}, fh, indent=1)
    os.replace(path + ".tmp", path)


def table(rows: list[dict]) -> str:
    kinds = [k for k in ("heldout", "none", "bootstrap") if any(k in r for r in rows)]
    lines = ["| size | image | τ | " + " | ".join(f"{k}: 90 % cov., test LL" for k in kinds) + " | s | peak GiB |",
             "|---|---|---|" + "---|" * len(kinds) + "---|---|"]
    for r in rows:
        cells = [f"{r[k]['coverage'][1]:.3f}, {r[k]['test_log_likelihood']:.3f}" for k in kinds]
        lines.append(f"| {r['size']}² | {r['image']} | {r['discrepancy']['std']:.4f} | " + " | ".join(cells)
                     + f" | {r['seconds']:.0f} | {r['peak_rss_gib']:.2f} |")
    lines += ["", "| setting | images | mean coverage 50 / 90 / 95 % | min 90 % | mean cal. err. | mean test LL |",
              "|---|---|---|---|---|---|"]
    for k in kinds:
        n = len(rows)
        cov = [sum(r[k]["coverage"][j] for r in rows) / n for j in range(3)]
        lines.append(f"| {k} | {n} | {cov[0]:.3f} / {cov[1]:.3f} / {cov[2]:.3f} | "
                     f"{min(r[k]['coverage'][1] for r in rows):.3f} | "
                     f"{sum(r[k]['calibration_error'] for r in rows) / n:.3f} | "
                     f"{sum(r[k]['test_log_likelihood'] for r in rows) / n:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("split", choices=("train", "test"))
    ap.add_argument("size", type=int, choices=sorted(ANGLES))
    ap.add_argument("indices", help="comma-separated image indices")
    ap.add_argument("--bootstrap", action="store_true", help="also score the previous default (bootstrap)")
    ap.add_argument("--num-samples", type=int, default=1000)
    ap.add_argument("--heldout-folds", type=int, default=LinearisedDIPConfig.heldout_folds,
                    help="LinearisedDIPConfig.heldout_folds (1/K of the projections held out)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    indices, op, truths = problem(args.split, args.size, args.indices)
    rows = []
    for i in indices:
        row = run_image(args.size, i, truths[i:i + 1], op, args.num_samples, args.bootstrap, args.heldout_folds)
        rows.append(row)
        extra = f", bootstrap {row['bootstrap']['coverage'][1]:.3f}" if "bootstrap" in row else ""
        print(f"{args.split} {args.size}² image {i}: τ = {row['discrepancy']['std']:.4f}, 90 % coverage "
              f"heldout {row['heldout']['coverage'][1]:.3f} (LL {row['heldout']['test_log_likelihood']:.3f}), "
              f"none {row['none']['coverage'][1]:.3f} (LL {row['none']['test_log_likelihood']:.3f}){extra}, "
              f"{row['seconds']:.0f} s", flush=True)
        if args.json:
            write_rows(args.json, vars(args), rows)
    print(table(rows))


if __name__ == "__main__":
    main()
