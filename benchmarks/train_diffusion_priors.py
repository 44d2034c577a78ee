"""Train the shipped diffusion priors ``digits-diffusion`` and ``patches-diffusion``.

    .venv/bin/python benchmarks/train_diffusion_priors.py digits  --steps 15000
    .venv/bin/python benchmarks/train_diffusion_priors.py patches --steps 15000

Runs resume from ``runs/<name>/checkpoint``; the final (weight-averaged) model is
written to ``bayes_recon/pretrained/<name>.safetensors`` + ``.json`` with its
record: held-out ε-loss and denoising MSE at several σ beside the Wiener
filter fitted on the same training images.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from bayes_recon import __version__
from bayes_recon.data.prior_sets import prior_training_data
from bayes_recon.models.diffusion import GaussianDiffusionPrior
from bayes_recon.models.diffusion_unet import DiffusionConfig, DiffusionUNet
from bayes_recon.models.diffusion_training import (DiffusionTrainConfig, denoising_mse,
                                                   evaluate_diffusion_loss, train_diffusion)

SIGMAS = (0.05, 0.1, 0.2, 0.4)
ROOT = Path(__file__).resolve().parents[1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=("digits", "patches"))
    parser.add_argument("--steps", type=int, default=15000)
    parser.add_argument("--num-patches", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    name = f"{args.dataset}-diffusion"
    data = prior_training_data(args.dataset, num_patches=args.num_patches)
    size = data.train.shape[-1]
    model_cfg = DiffusionConfig(image_size=size, widths=(16, 32, 64), groups=8)
    digits = args.dataset == "digits"
    train_cfg = DiffusionTrainConfig(steps=args.steps, batch_size=32, lr=5e-4, warmup_steps=500,
                                     ema_decay=0.999, max_shift=2 if digits else 0,
                                     flips=not digits, val_every=500, seed=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = DiffusionUNet(model_cfg)
    start = time.perf_counter()
    result = train_diffusion(model, data.train, data.val, train_cfg,
                             checkpoint_dir=ROOT / "runs" / name, progress=not args.no_progress)
    seconds = time.perf_counter() - start
    net = result.model
    wiener = GaussianDiffusionPrior.fit(data.train, shift=net.shift, scale=net.scale)
    test = data.test[:300]
    mse_net = denoising_mse(net, test, SIGMAS, seed=1)
    mse_wiener = denoising_mse(wiener, test.double(), SIGMAS, seed=1)
    meta = {
        "bayes_recon_version": __version__,
        "command": "python benchmarks/train_diffusion_priors.py " + " ".join(argv or sys.argv[1:]),
        "dataset": args.dataset,
        "num_patches": args.num_patches if args.dataset == "patches" else None,
        "split": data.split,
        "train_config": {k: getattr(train_cfg, k) for k in train_cfg.__dataclass_fields__},
        "train_seconds_this_run": seconds,
        "val_eps_loss": evaluate_diffusion_loss(net, data.val, seed=0),
        "test_eps_loss": evaluate_diffusion_loss(net, data.test, seed=0),
        "test_denoising_mse": {str(s): v for s, v in mse_net.items()},
        "test_wiener_mse": {str(s): v for s, v in mse_wiener.items()},
        "denoising_note": "per-pixel MSE on the first 300 test images, noise seed 1; Wiener = "
                          "empirical mean/covariance of the training images",
        "history": result.history,
    }
    path = net.save(ROOT / "bayes_recon" / "pretrained" / name, meta)
    print(path)
    for s in SIGMAS:
        print(f"sigma {s}: diffusion {mse_net[s]:.5f}  wiener {mse_wiener[s]:.5f}")


if __name__ == "__main__":
    main()
