"""Bits per pixel of every shipped prior: recorded train/validation, recomputed test.

Usage: python benchmarks/prior_nll.py

The NLL is the negative ELBO with one seeded latent sample per image (an upper
bound on -log p(x)), in bits per pixel; lower is better.
"""

from __future__ import annotations

from bayes_recon.data import prior_training_data
from bayes_recon.models import available_priors, evaluate_nll, load_pretrained


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


if __name__ == "__main__":
    main()
