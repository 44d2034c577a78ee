"""Train the shipped educated-DIP U-Net ``ellipses-ct-dip`` (FBP → phantom on synthetic ellipses).

    python benchmarks/train_dip_init.py [--images 4000] [--epochs 10] [--size 32] [--out bayes_recon/pretrained/ellipses-ct-dip]

One network for many geometries: parallel-beam CT with angle counts ``ANGLES`` scaled
with the image side (10, 15, 22, 30, 45 at 32²: the angular sampling of 20 … 90 angles at
64²) and relative noise 2, 5 and 10 % (``pretrain_dip`` with a list of operators and
levels). The architecture is the DIP's default ``UNetConfig()``, so the linearised
Laplace sees the same blocks as with a random start; the network is fully
convolutional, so a 32² training runs (4× cheaper than 64²) and the check below runs it
at twice and four times that size. Held-out check: mean PSNR of the network's output
and of the FBP on 50 fresh phantoms (another seed) per angle count, at the training
size and at 2× and 4× (angles scaled likewise), recorded in the checkpoint's JSON.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from bayes_recon.data import ellipses, simulate
from bayes_recon.inference import pretrain_dip
from bayes_recon.metrics import psnr
from bayes_recon.models.unet import UNetConfig
from bayes_recon.operators import ParallelBeamCT

ANGLES = (20, 30, 45, 60, 90)  # at 64²; scaled with the side
LEVELS = (0.02, 0.05, 0.1)


def angles_for(size):
    """``ANGLES`` (defined at 64²) scaled to an image side."""
    return [max(4, round(a * size / 64)) for a in ANGLES]


def held_out(net, size, seed=12345, images=50):
    """Mean PSNR (dB) of FBP and of the network's output on fresh phantoms, per angle count (5 % noise)."""
    x = ellipses(images, size, seed)
    rows = {}
    for a in angles_for(size):
        op = ParallelBeamCT(size, a)
        m = simulate(op, x, 0.05, seed=seed)
        fbp = op.fbp(m.y)
        with torch.no_grad():
            out = net(fbp)
        rows[str(a)] = {"fbp_psnr": float(psnr(x, fbp.clamp(0, 1), data_range=1.0).mean()),
                        "network_psnr": float(psnr(x, out, data_range=1.0).mean())}
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=4000)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("bayes_recon/pretrained/ellipses-ct-dip"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    ops = [ParallelBeamCT(args.size, a) for a in angles_for(args.size)]
    t0 = time.perf_counter()
    net = pretrain_dip(ops, num_images=args.images, epochs=args.epochs, relative_noise=LEVELS,
                       seed=args.seed, network_config=UNetConfig(), progress=True)
    seconds = time.perf_counter() - t0
    check = {str(s): held_out(net, s, images=50 if s <= 64 else 10) for s in (args.size, 2 * args.size, 4 * args.size)}
    meta = {"command": f"python benchmarks/train_dip_init.py --images {args.images} --epochs {args.epochs} "
                       f"--size {args.size} --seed {args.seed}",
            "dataset": f"bayes_recon.data.ellipses({args.images}, {args.size}, seed={args.seed})",
            "operators": [f"ParallelBeamCT({args.size}, {a})" for a in angles_for(args.size)],
            "relative_noise": list(LEVELS), "epochs": args.epochs, "train_seconds": seconds,
            "held_out": {"phantoms": "ellipses(50 (10 above 64²), size, seed=12345), 5 % noise",
                         "psnr_by_size_and_angles": check}}
    net.save(args.out, meta)
    print(f"saved {args.out} in {seconds:.0f} s")
    for size, rows in check.items():
        for a, r in rows.items():
            print(f"  {size}², {a:>3} angles: FBP {r['fbp_psnr']:.2f} dB, network {r['network_psnr']:.2f} dB")


if __name__ == "__main__":
    main()
