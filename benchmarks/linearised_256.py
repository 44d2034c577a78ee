"""The linearised DIP measured at 256² (issue 21): time per stage, peak memory, coverage.

    python benchmarks/linearised_256.py [--image shepp_logan|camera] [--angles 120] \
        [--calibration heldout|none|bootstrap] [--json benchmarks/results/linearised_256/NAME.json]

CT ``ParallelBeamCT(256, 120)``, 5 % noise (``simulate(..., seed=0)``), σ known, the library's
defaults otherwise (``LinearisedDIPConfig()``: the path is chosen by the library — the
rank-1024 subspace at this size), so the row is what a user gets. With a calibration, the
Laplace posterior without it (``res.laplace.sample``) is scored too (``calibration_none``). Peak memory is the
process's maximum resident set size (``resource.getrusage``), which includes Python and torch.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch

from bayes_recon.data import shepp_logan, simulate
from bayes_recon.diagnostics import calibration
from bayes_recon.inference import LinearisedDIPConfig, linearised_dip
from bayes_recon.metrics import psnr
from bayes_recon.operators import ParallelBeamCT


def camera(size):
    """scikit-image's bundled camera photograph, resized to ``size`` and scaled to [0, 1]."""
    from skimage import data
    from skimage.transform import resize

    img = resize(data.camera().astype("float64") / 255.0, (size, size), anti_aliasing=True)
    return torch.as_tensor(img, dtype=torch.float32)[None, None]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", choices=("shepp_logan", "camera"), default="shepp_logan")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--angles", type=int, default=120)
    ap.add_argument("--calibration", choices=("heldout", "none", "bootstrap"), default="heldout")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    x = shepp_logan(args.size) if args.image == "shepp_logan" else camera(args.size)
    t0 = time.perf_counter()
    op = ParallelBeamCT(args.size, args.angles)
    t_op = time.perf_counter() - t0
    m = simulate(op, x, 0.05, seed=0)
    cfg = LinearisedDIPConfig(calibration=args.calibration)
    t0 = time.perf_counter()
    res = linearised_dip(m.y, op, m.noise_std, cfg, progress=True)
    total = time.perf_counter() - t0
    post = res.posterior
    cal = calibration(post, x[0])

    def summary(c):
        return {k: v for k, v in c.to_dict(include_pit=False).items()
                if k not in ("sparsification", "qq_theoretical", "qq_observed", "per_image")}
    row = {"image": args.image, "size": args.size, "angles": args.angles, "calibration": args.calibration,
           "path": res.laplace.path, "operator_seconds": t_op, "seconds": total,
           "timings": {k: float(v) for k, v in res.timings.items()},
           "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
           "psnr_dip": float(psnr(x, res.fit.x, data_range=1.0)[0]),
           "psnr_mean": float(psnr(x, post.mean[None].clamp(0, 1).to(x.dtype), data_range=1.0)[0]),
           "std_scale": post.extras.get("std_scale"),
           "discrepancy": None if res.discrepancy is None else res.discrepancy.to_dict(),
           "evidence_converged": res.evidence.converged, "hyperparameters": res.evidence.hyperparameters,
           "calibration_metrics": summary(cal)}
    if args.calibration != "none":
        row["calibration_none"] = summary(calibration(res.laplace.sample(cfg.num_samples, seed=0), x[0]))
    print(json.dumps(row, indent=2, default=str))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(row, indent=2, default=str))


if __name__ == "__main__":
    main()
