"""Bits per pixel of every shipped VAE prior (SUPN and hierarchical): recorded train/validation, recomputed test.

Usage: python benchmarks/prior_nll.py

The NLL is the negative ELBO with one seeded latent sample per image (an upper
bound on -log p(x)), in bits per pixel; lower is better.
"""

from __future__ import annotations

from bayes_recon.data import prior_training_data
from bayes_recon.models import (available_hvae_priors, available_priors, evaluate_hvae_nll,
                                evaluate_nll, load_pretrained, load_pretrained_hvae)


def main() -> None:
    print("| prior | covariance | train bpp | validation bpp | test bpp (recomputed) | data split |")
    print("|---|---|---|---|---|---|")
    for name in available_priors():
        model = load_pretrained(name)
        meta = model.metadata
        data = prior_training_data(meta["dataset"], size=model.config.image_size,
                                   num_patches=meta["num_patches"], seed=meta["seed"])
        test = evaluate_nll(model, data.test, seed=meta["seed"])
        print(f"| {name} | {model.config.covariance} | {meta['train_bpp']:.3f} "
              f"| {meta['val_bpp']:.3f} | {test:.3f} | {meta['split']} |")
    for name in available_hvae_priors():
        model = load_pretrained_hvae(name)
        meta = model.metadata
        data = prior_training_data(meta["dataset"], num_patches=meta["num_patches"] or 3000,
                                   seed=meta["seed"])
        test = evaluate_hvae_nll(model, data.test, seed=meta["seed"])
        print(f"| {name} | hierarchical ({model.num_groups} groups) | {meta['train_bpp']:.3f} "
              f"| {meta['val_bpp']:.3f} | {test:.3f} | {meta['split']} |")
    print()
    print("Same test images for every prior of a dataset (the hierarchical priors' test split: "
          "digits('test'), or 300 crops of the test photographs):")
    print()
    print("| dataset | prior | test bpp |")
    print("|---|---|---|")
    for dataset in ("digits", "patches"):
        test = prior_training_data(dataset, num_patches=3000, seed=0).test
        size = test.shape[-1]
        for name in available_priors():
            model = load_pretrained(name)
            if model.metadata["dataset"] == dataset and model.config.image_size == size:
                print(f"| {dataset} | {name} | {evaluate_nll(model, test, seed=0):.3f} |")
        for name in available_hvae_priors():
            model = load_pretrained_hvae(name)
            if model.metadata["dataset"] == dataset:
                print(f"| {dataset} | {name} | {evaluate_hvae_nll(model, test, seed=0):.3f} |")


if __name__ == "__main__":
    main()
