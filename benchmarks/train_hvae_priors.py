"""Train the shipped hierarchical VAE priors ``digits-hvae`` and ``patches-hvae``.

    .venv/bin/python benchmarks/train_hvae_priors.py digits  --steps 12000
    .venv/bin/python benchmarks/train_hvae_priors.py patches --steps 12000

Runs resume from ``runs/<name>/checkpoint``; the best-validation model is
written to ``bayes_recon/pretrained/<name>.safetensors`` + ``.json`` with its
record: train, validation and test negative ELBO in bits per pixel (one seeded
latent draw per image, the convention of the shipped SUPN priors).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from bayes_recon import __version__
from bayes_recon.data.prior_sets import prior_training_data
from bayes_recon.models.hvae import HierarchicalVAE, HVAEConfig
from bayes_recon.models.hvae_training import HVAETrainConfig, evaluate_hvae_nll, train_hvae

ROOT = Path(__file__).resolve().parents[1]
#: Latent grids 1, 4, 7, 14 for 28² digits; 4, 8, 16 for 32² patches (fully convolutional).
ARCHITECTURES = {
    "digits": HVAEConfig(image_size=28, factors=(28, 7, 4, 2), width=32, latent_channels=4),
    "patches": HVAEConfig(image_size=32, factors=(8, 4, 2), width=32, latent_channels=4),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=tuple(ARCHITECTURES))
    parser.add_argument("--steps", type=int, default=12000)
    parser.add_argument("--num-patches", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    name = f"{args.dataset}-hvae"
    data = prior_training_data(args.dataset, num_patches=args.num_patches)
    digits = args.dataset == "digits"
    train_cfg = HVAETrainConfig(steps=args.steps, batch_size=32, lr=1e-3, warmup_steps=200,
                                kl_warmup_steps=1000, max_shift=2 if digits else 0,
                                flips=not digits, val_every=500, seed=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = HierarchicalVAE(ARCHITECTURES[args.dataset])
    start = time.perf_counter()
    result = train_hvae(model, data.train, data.val, train_cfg,
                        checkpoint_dir=ROOT / "runs" / name, progress=not args.no_progress)
    seconds = time.perf_counter() - start
    net = result.model
    meta = {
        "bayes_recon_version": __version__,
        "command": "python benchmarks/train_hvae_priors.py " + " ".join(argv or sys.argv[1:]),
        "dataset": args.dataset,
        "num_patches": args.num_patches if args.dataset == "patches" else None,
        "seed": 0,
        "split": data.split,
        "nll": "negative ELBO, one seeded latent draw per image (seed 0), bits per pixel",
        "train_config": {k: getattr(train_cfg, k) for k in train_cfg.__dataclass_fields__},
        "train_seconds_this_run": seconds,
        "train_bpp": evaluate_hvae_nll(net, data.train[:1000], seed=0),
        "val_bpp": evaluate_hvae_nll(net, data.val, seed=0),
        "test_bpp": evaluate_hvae_nll(net, data.test, seed=0),
        "history": result.history,
    }
    path = net.save(ROOT / "bayes_recon" / "pretrained" / name, meta)
    print(path)
    print(f"bits per pixel: train {meta['train_bpp']:.3f}  val {meta['val_bpp']:.3f}  "
          f"test {meta['test_bpp']:.3f}")


if __name__ == "__main__":
    main()
