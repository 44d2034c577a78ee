"""Is the DIP's error smooth or rough as seen by projections? (issue 21, training images only)

Usage: python benchmarks/linearised_error_structure.py SPLIT SIZE INDICES [--json PATH]

The held-out discrepancy models the DIP's image error as white, ``δ ~ N(0, τ² I)``, so a
projection ray of the held-out data sees variance ``τ² (A Aᵀ)_ii``. A real error ``e = x* − x``
that is correlated along rays (smooth blobs) puts more variance into projections than white
noise of the same per-pixel variance would, and one that alternates in sign (edges, texture)
puts less. Fitting ``τ`` on projections then over-states (smooth) or under-states (rough) the
per-pixel variance the intervals need. Per image (same problems as
``benchmarks/linearised_calibration.py``: library-default DIP, 5 % noise, seed = index):

- ``pixel_mse`` = mean ``e²``;
- ``ray_ratio`` = mean ``(A e)²`` / (mean ``e²`` · mean ``(A Aᵀ)_ii``): 1 for white error,
  > 1 smooth, < 1 rough — for all projections and for fold 0's held-out ones;
- ``lag1`` = correlation of ``e`` with itself shifted one pixel (mean of the two axes).
"""

from __future__ import annotations

import argparse
import time

import torch

from bayes_recon.data import simulate
from bayes_recon.inference.dip import fit_dip
from bayes_recon.inference.linearised.evidence import forward_rows
from bayes_recon.inference.linearised.pipeline import LinearisedDIPConfig, dip_tv_weight
from bayes_recon.operators.holdout import split_measurements
from linearised_calibration import problem, write_rows  # benchmarks/ is the script's directory


def ray_ratio(op, e: torch.Tensor) -> float:
    proj = forward_rows(op, e.reshape(1, -1)).reshape(-1).double()
    white = float(e.pow(2).mean()) * float(op.gram_diagonal(device=e.device).double().mean())
    return float(proj.pow(2).mean()) / white


def lag1(e: torch.Tensor) -> float:
    img = e.reshape(e.shape[-2], e.shape[-1])
    img = img - img.mean()
    out = []
    for a, b in ((img[1:], img[:-1]), (img[:, 1:], img[:, :-1])):
        out.append(float((a * b).mean() / img.pow(2).mean()))
    return sum(out) / 2


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("split", choices=("train", "test"))
    ap.add_argument("size", type=int)
    ap.add_argument("indices")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    indices, op, truths = problem(args.split, args.size, args.indices)
    cfg = LinearisedDIPConfig()
    rows = []
    for i in indices:
        t0 = time.perf_counter()
        x = truths[i:i + 1]
        meas = simulate(op, x, 0.05, seed=i)
        fit = fit_dip(meas.y, op, dip_tv_weight(cfg, op, meas.y, meas.noise_std), cfg.iterations, lr=cfg.lr,
                      input=cfg.input, seed=i, network_config=cfg.network, progress=False)
        e = (fit.x.detach() - x).double()
        held = split_measurements(op, 0, cfg.heldout_folds, None, seed=i).held_op
        row = {"size": args.size, "image": i, "pixel_mse": float(e.pow(2).mean()), "ray_ratio": ray_ratio(op, e),
               "ray_ratio_fold0": ray_ratio(held, e), "lag1": lag1(e), "seconds": time.perf_counter() - t0}
        rows.append(row)
        print(f"{args.split} {args.size}² image {i}: rms error {row['pixel_mse'] ** 0.5:.4f}, ray ratio "
              f"{row['ray_ratio']:.2f} (fold 0 held out: {row['ray_ratio_fold0']:.2f}), lag-1 corr. "
              f"{row['lag1']:.2f}, {row['seconds']:.0f} s", flush=True)
        if args.json:
            write_rows(args.json, vars(args), rows)


if __name__ == "__main__":
    main()
