"""Educated vs random DIP start on held-out CT images (issue 21, item 4).

    python benchmarks/educated_dip.py [--size 64] [--angles 60] [--iterations 300] \
        [--linearised] [--json benchmarks/results/educated_dip.json]

Images none of the networks saw: two ellipse phantoms from another seed than the shipped
network's training (``ellipses(2, size, seed=777)``), two natural test crops
(``natural_patches("test", size, 2, seed=1)``) and the real CT slice shipped with pydicom
(``pydicom.examples`` "ct", resized). CT with ``--angles`` angles, 5 % noise, σ known.
For each, the DIP is fitted from a random start (seed 0) and from the shipped
``ellipses-ct-dip``; the table gives the PSNR at the best iterate, the PSNR after 50 and
100 iterations and the iterations to reach the random start's final PSNR. With
``--linearised``, ``linearised_dip`` (``calibration="none"``, 500 draws) also runs from both
starts: 90 % coverage, mean std / RMSE and wall time.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from bayes_recon.data import ellipses, load_image, natural_patches, simulate
from bayes_recon.inference import LinearisedDIPConfig, fit_dip, linearised_dip
from bayes_recon.inference.linearised.pipeline import dip_tv_weight
from bayes_recon.metrics import psnr
from bayes_recon.operators import ParallelBeamCT


def images(size):
    import pydicom.examples

    out = [(f"ellipses {i}", x[None]) for i, x in enumerate(ellipses(2, size, seed=777))]
    out += [(f"natural crop {i}", x[None]) for i, x in enumerate(natural_patches("test", size, 2, seed=1))]
    out.append(("pydicom CT_small", load_image(pydicom.examples.get_path("ct"), size=size)))
    return out


def dip_row(name, x, op, m, init, iterations):
    cfg = LinearisedDIPConfig(init=init, iterations=iterations)
    weight = dip_tv_weight(cfg, op, m.y, m.noise_std)
    fit = fit_dip(m.y, op, weight, iterations, init=init, progress=False, truth=x)
    curve = fit.psnr_history
    return {"image": name, "init": init or "random", "psnr_best_iterate": float(psnr(x, fit.x, data_range=1.0)[0]),
            "psnr_50": float(curve[min(49, len(curve) - 1)]), "psnr_100": float(curve[min(99, len(curve) - 1)]),
            "psnr_curve": [float(v) for v in curve], "seconds": fit.seconds}


def linearised_row(name, x, op, m, init, iterations):
    cfg = LinearisedDIPConfig(init=init, iterations=iterations, calibration="none", num_samples=500)
    t0 = time.perf_counter()
    res = linearised_dip(m.y, op, m.noise_std, cfg, progress=False)
    post = res.posterior
    truth = x[0].to(post.mean.dtype)
    lo, hi = post.quantile(0.05), post.quantile(0.95)
    rmse = float((post.mean - truth).pow(2).mean().sqrt())
    return {"image": name, "init": init or "random", "coverage90": float(((truth >= lo) & (truth <= hi)).double().mean()),
            "std_over_rmse": float(post.std.mean()) / rmse, "psnr": float(psnr(x, post.mean[None].to(x.dtype), data_range=1.0)[0]),
            "seconds": time.perf_counter() - t0}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--angles", type=int, default=60)
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--linearised", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    op = ParallelBeamCT(args.size, args.angles)
    out = {"dip": [], "linearised": [], "size": args.size, "angles": args.angles, "iterations": args.iterations}
    for name, x in images(args.size):
        m = simulate(op, x, 0.05, seed=0)
        for init in (None, "ellipses-ct-dip"):
            out["dip"].append(dip_row(name, x, op, m, init, args.iterations))
            if args.linearised:
                out["linearised"].append(linearised_row(name, x, op, m, init, args.iterations))
            if args.json:
                args.json.write_text(json.dumps(out, indent=2))
    print(f"\n### DIP from a random vs an educated start ({args.size}², {args.angles} angles, 5 % noise)\n")
    print("| image | start | PSNR after 50 it. | after 100 | best iterate | it. to the random start's final PSNR | s |")
    print("|---|---|---|---|---|---|---|")
    rows = out["dip"]
    for i in range(0, len(rows), 2):
        target = rows[i]["psnr_best_iterate"]
        for r in rows[i:i + 2]:
            hit = np.flatnonzero(np.asarray(r["psnr_curve"]) >= target)
            it = str(int(hit[0]) + 1) if hit.size else "not reached"
            print(f"| {r['image']} | {r['init']} | {r['psnr_50']:.2f} | {r['psnr_100']:.2f} "
                  f"| {r['psnr_best_iterate']:.2f} | {it} | {r['seconds']:.0f} |")
    if out["linearised"]:
        print("\n### Linearised DIP (calibration='none') from both starts\n")
        print("| image | start | coverage 90 % | mean std / RMSE | PSNR | s |")
        print("|---|---|---|---|---|---|")
        for r in out["linearised"]:
            print(f"| {r['image']} | {r['init']} | {r['coverage90']:.3f} | {r['std_over_rmse']:.2f} "
                  f"| {r['psnr']:.2f} | {r['seconds']:.0f} |")


if __name__ == "__main__":
    main()
