"""Forward-model timings, as ratios to scikit-image's radon/iradon measured in the same run.

Usage: python benchmarks/operators.py [--size 128] [--angles 180] [--fan-angles 360]
                                      [--batch 32] [--repeats 7] [--json PATH|-]

Prints markdown tables: the CT matrix build time; CT forward, adjoint and FBP
(float32) per image and per batch, against ``skimage.transform.radon`` /
``iradon`` per image in the same geometry (``circle=True``: ``N`` detectors,
angles ``θ_a = a·180°/n_angles``); FanBeamCT beside ParallelBeamCT at
``--fan-angles`` (matrix build, forward, adjoint, FBP) with skimage at the same
number of angles; and forward+adjoint of the other operators
for a batch. ``--json PATH`` also writes the numbers there (``-`` for stdout).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
import torch
from skimage.transform import iradon, radon

from bayes_recon import operators as ops
from bayes_recon.app.benchmarking import median_time
from bayes_recon.data import shepp_logan


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def ct_table(n: int, n_angles: int, batch: int, repeats: int) -> dict:
    # skimage's circle=True geometry: N detectors, rotation about the centre pixel.
    start = time.perf_counter()
    op = ops.ParallelBeamCT(n, n_angles, n_detectors=n)
    build_first = time.perf_counter() - start  # cold: first large allocations
    build = statistics.median(
        _timed(lambda: ops.ParallelBeamCT(n, n_angles, n_detectors=n)) for _ in range(3))
    x1 = shepp_logan(n)
    xb = x1.repeat(batch, 1, 1, 1)
    start = time.perf_counter()
    y1 = op(x1)  # first call converts M and Mᵀ to torch float32 CSR
    convert = time.perf_counter() - start
    yb = op(xb)
    theta = np.rad2deg(op.angles)
    img = x1[0, 0].numpy()
    sino = radon(img, theta=theta, circle=True)

    radon_t = median_time(lambda: radon(img, theta=theta, circle=True), repeats)
    iradon_t = median_time(
        lambda: iradon(sino, theta=theta, circle=True, filter_name="ramp"), repeats)
    rows = [  # (what, images per call, seconds per call, skimage reference per image)
        ("CT forward", 1, median_time(lambda: op(x1), repeats), radon_t),
        ("CT forward", batch, median_time(lambda: op(xb), repeats), radon_t),
        ("CT adjoint", 1, median_time(lambda: op.adjoint(y1), repeats), iradon_t),
        ("CT adjoint", batch, median_time(lambda: op.adjoint(yb), repeats), iradon_t),
        ("CT FBP (ramp)", 1, median_time(lambda: op.fbp(y1), repeats), iradon_t),
        ("CT FBP (ramp)", batch, median_time(lambda: op.fbp(yb), repeats), iradon_t),
        ("skimage radon", 1, radon_t, radon_t),
        ("skimage iradon (ramp)", 1, iradon_t, iradon_t),
    ]
    return {
        "size": n, "angles": n_angles, "detectors": op.n_detectors, "batch": batch,
        "nnz": op.matrix.nnz, "build_s": build, "build_first_s": build_first,
        "first_call_convert_s": convert,
        "rows": [
            {"what": w, "images": k, "ms_per_call": t * 1e3, "ms_per_image": t * 1e3 / k,
             "speedup_vs_skimage_per_image": ref / (t / k)}
            for w, k, t, ref in rows
        ],
    }


def fan_table(n: int, n_angles: int, batch: int, repeats: int) -> dict:
    """FanBeamCT beside ParallelBeamCT with the same number of angles, and skimage's radon.

    Fan beam: full scan over [0, 2π), source at 2N and detector at N pixels from the
    centre, default detectors (the whole image in view); parallel beam: [0, π),
    default detectors. skimage: ``radon``/``iradon`` at the parallel angles, per image.
    """
    makers = {
        "fan": lambda: ops.FanBeamCT(n, n_angles, source_distance=2.0 * n,
                                     detector_distance=float(n)),
        "parallel": lambda: ops.ParallelBeamCT(n, n_angles),
    }
    x1 = shepp_logan(n)
    xb = x1.repeat(batch, 1, 1, 1)
    img = x1[0, 0].numpy()
    theta = np.arange(n_angles) * 180.0 / n_angles
    sino = radon(img, theta=theta, circle=True)
    radon_t = median_time(lambda: radon(img, theta=theta, circle=True), repeats)
    iradon_t = median_time(
        lambda: iradon(sino, theta=theta, circle=True, filter_name="ramp"), repeats)
    out = {"size": n, "angles": n_angles, "batch": batch, "geometries": {}, "rows": []}
    for name, make in makers.items():
        op = make()
        build = statistics.median(_timed(make) for _ in range(3))
        y1, yb = op(x1), op(xb)
        first_fbp = _timed(lambda: op.fbp(y1))  # fan beam: builds its back-projection matrix
        out["geometries"][name] = {"detectors": op.n_detectors, "nnz": op.matrix.nnz,
                                   "build_s": build, "first_fbp_s": first_fbp}
        label = "FanBeamCT" if name == "fan" else "ParallelBeamCT"
        for what, k, fn, ref in [
            ("forward", 1, lambda: op(x1), radon_t),
            ("forward", batch, lambda: op(xb), radon_t),
            ("adjoint", 1, lambda: op.adjoint(y1), iradon_t),
            ("adjoint", batch, lambda: op.adjoint(yb), iradon_t),
            ("FBP (ramp)", 1, lambda: op.fbp(y1), iradon_t),
            ("FBP (ramp)", batch, lambda: op.fbp(yb), iradon_t),
        ]:
            t = median_time(fn, repeats)
            out["rows"].append({"what": f"{label} {what}", "images": k,
                                "ms_per_call": t * 1e3, "ms_per_image": t * 1e3 / k,
                                "speedup_vs_skimage_per_image": ref / (t / k)})
    for what, t in (("skimage radon", radon_t), ("skimage iradon (ramp)", iradon_t)):
        out["rows"].append({"what": what, "images": 1, "ms_per_call": t * 1e3,
                            "ms_per_image": t * 1e3, "speedup_vs_skimage_per_image": 1.0})
    return out


def other_operators(n: int, batch: int, repeats: int, ct_op=None) -> dict:
    """Forward+adjoint of each operator that exists in ``bayes_recon.operators``."""
    gen = torch.Generator().manual_seed(0)
    makers = {
        "Identity": lambda: ops.Identity((1, n, n)),
        "Blur (Gaussian sigma 1.5)": lambda: ops.Blur(n, ops.gaussian_kernel(1.5)),
        "Inpainting (50%)": lambda: ops.Inpainting(torch.rand(n, n, generator=gen) < 0.5),
        "Downsampling x4": lambda: ops.Downsampling(n, 4),
        "MRI (radial, 30 spokes)": lambda: ops.MRI(n, ops.radial_mask(n, 30)),
        "ParallelBeamCT (180 angles, default detectors)":
            lambda: ops.ParallelBeamCT(n, 180),
    }
    x = shepp_logan(n).repeat(batch, 1, 1, 1)
    out = {}
    for name, make in makers.items():
        try:
            op = make()
        except AttributeError:  # operator not (yet) in the package
            continue
        out[name] = median_time(lambda: op.adjoint(op(x)), repeats)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--angles", type=int, default=180)
    parser.add_argument("--fan-angles", type=int, default=360,
                        help="angles of the fan- vs parallel-beam table")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", default=None, help="also write the results here ('-': stdout)")
    args = parser.parse_args(argv)

    ct = ct_table(args.size, args.angles, args.batch, args.repeats)
    n, b = args.size, args.batch
    print(f"## ParallelBeamCT {n}x{n}, {args.angles} angles, {ct['detectors']} detectors, "
          f"float32, torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print(f"matrix build (Joseph + stored transpose): {ct['build_s'] * 1e3:.0f} ms "
          f"(median of 3; first in process {ct['build_first_s'] * 1e3:.0f} ms), "
          f"nnz {ct['nnz']:,}; first call (to torch CSR float32): "
          f"{ct['first_call_convert_s'] * 1e3:.0f} ms\n")
    print("| what | images | ms per call | ms per image | skimage / this (per image) |")
    print("|---|---|---|---|---|")
    for r in ct["rows"]:
        print(f"| {r['what']} | {r['images']} | {r['ms_per_call']:.2f} | "
              f"{r['ms_per_image']:.3f} | {r['speedup_vs_skimage_per_image']:.1f}x |")

    fan = fan_table(n, args.fan_angles, b, args.repeats)
    print(f"\n## FanBeamCT beside ParallelBeamCT, {n}x{n}, {args.fan_angles} angles, float32\n")
    for name, g in fan["geometries"].items():
        print(f"- {name} beam: {g['detectors']} detectors, nnz {g['nnz']:,}, matrix build "
              f"{g['build_s'] * 1e3:.0f} ms (median of 3); first FBP call "
              f"{g['first_fbp_s'] * 1e3:.0f} ms"
              + (" (builds the weighted back-projection matrix)" if name == "fan" else ""))
    print("\n| what | images | ms per call | ms per image | skimage / this (per image) |")
    print("|---|---|---|---|---|")
    for r in fan["rows"]:
        print(f"| {r['what']} | {r['images']} | {r['ms_per_call']:.2f} | "
              f"{r['ms_per_image']:.3f} | {r['speedup_vs_skimage_per_image']:.1f}x |")

    others = other_operators(n, b, args.repeats)
    print(f"\n## forward + adjoint, batch of {b}, {n}x{n}, float32\n")
    print("| operator | ms per batch | ms per image |")
    print("|---|---|---|")
    for name, t in others.items():
        print(f"| {name} | {t * 1e3:.2f} | {t * 1e3 / b:.3f} |")

    if args.json:
        result = {"ct": ct, "fan_vs_parallel": fan, "others_forward_adjoint_s": others,
                  "torch_threads": torch.get_num_threads()}
        if args.json == "-":
            json.dump(result, sys.stdout, indent=2)
            print()
        else:
            with open(args.json, "w") as fh:
                json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
