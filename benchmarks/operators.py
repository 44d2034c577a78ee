"""Forward-model timings as ratios to scikit-image's radon/iradon in the same run.

Usage: python benchmarks/operators.py [--size 128] [--angles 180] [--repeats 7] [--json PATH]

Prints a markdown table: CT forward and adjoint per image and per image in a
batch of 32 (float32), skimage's radon / iradon per image, the ratios, the matrix
build time, and forward+adjoint of the other operators for a batch of 32.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch
from skimage.transform import iradon, radon

from bayes_recon.data import shepp_logan
from bayes_recon.operators import (
    MRI,
    Blur,
    Downsampling,
    Identity,
    Inpainting,
    ParallelBeamCT,
    gaussian_kernel,
    radial_mask,
)


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up (caches, first-touch allocation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--angles", type=int, default=180)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    n, b = args.size, args.batch

    start = time.perf_counter()
    op = ParallelBeamCT(n, args.angles, n_detectors=n)  # skimage's circle=True detector count
    build = time.perf_counter() - start
    x1 = shepp_logan(n)
    xb = x1.repeat(b, 1, 1, 1)
    y1, yb = op(x1), op(xb)
    theta = np.rad2deg(op.angles)
    img = x1[0, 0].numpy()
    sino = radon(img, theta=theta, circle=True)

    rows = {
        "CT forward, 1 image": median_time(lambda: op(x1), args.repeats),
        f"CT forward, batch {b} (per image)": median_time(lambda: op(xb), args.repeats) / b,
        "CT adjoint, 1 image": median_time(lambda: op.adjoint(y1), args.repeats),
        f"CT adjoint, batch {b} (per image)": median_time(lambda: op.adjoint(yb), args.repeats) / b,
        "CT FBP, 1 image": median_time(lambda: op.fbp(y1), args.repeats),
        "skimage radon, 1 image": median_time(lambda: radon(img, theta=theta, circle=True),
                                              args.repeats),
        "skimage iradon (ramp), 1 image": median_time(
            lambda: iradon(sino, theta=theta, circle=True, filter_name="ramp"), args.repeats),
    }
    ref_fwd = rows["skimage radon, 1 image"]
    ref_adj = rows["skimage iradon (ramp), 1 image"]
    print(f"## CT {n}x{n}, {args.angles} angles, float32, torch threads {torch.get_num_threads()}")
    print(f"\nmatrix build: {build * 1e3:.0f} ms, nnz {op.matrix.scipy.nnz:,}\n")
    print("| what | ms | skimage / this |")
    print("|---|---|---|")
    for name, t in rows.items():
        ref = ref_adj if ("adjoint" in name or "FBP" in name or "iradon" in name) else ref_fwd
        print(f"| {name} | {t * 1e3:.2f} | {ref / t:.1f}x |")

    other = {
        "Identity": Identity((1, n, n)),
        "Blur (Gaussian, sigma 1.5)": Blur(n, gaussian_kernel(1.5)),
        "Inpainting (50%)": Inpainting(torch.rand(n, n, generator=torch.Generator().manual_seed(0)) < 0.5),
        "Downsampling x4": Downsampling(n, 4),
        "MRI (radial, 30 spokes)": MRI(n, radial_mask(n, 30)),
        "ParallelBeamCT": op,
    }
    print(f"\n## forward + adjoint, batch of {b}, {n}x{n}, float32\n")
    print("| operator | ms per batch | ms per image |")
    print("|---|---|---|")
    other_rows = {}
    for name, o in other.items():
        t = median_time(lambda: o.adjoint(o(xb)), args.repeats)
        other_rows[name] = t
        print(f"| {name} | {t * 1e3:.2f} | {t * 1e3 / b:.3f} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"build_s": build, "ct": rows, "others_batch": other_rows,
                       "size": n, "angles": args.angles, "batch": b}, fh, indent=2)


if __name__ == "__main__":
    main()
