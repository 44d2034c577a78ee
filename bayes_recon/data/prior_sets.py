"""Train / validation / test sets for fitting generative priors, by name."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._validation import check_choice, check_int
from .digits import digits
from .patches import natural_patches

PRIOR_DATASETS = ("digits", "patches")


@dataclass(frozen=True)
class PriorData:
    """Images ``(N, 1, size, size)`` for training a prior, and how they were split."""

    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    split: str


def prior_training_data(dataset: str, size: int | None = None, num_patches: int = 20000,
                        val_fraction: float = 0.1, seed: int = 0) -> PriorData:
    """The data a named prior is trained on.

    ``digits``: the fixed ``digits("train")`` split, of which a seeded
    ``val_fraction`` is held out for validation / early stopping; test is
    ``digits("test")``. ``patches``: ``num_patches`` training patches from the
    training photographs (same validation hold-out) and ``num_patches // 10``
    test patches from the disjoint test photographs.

    Parameters
    ----------
    dataset : str
        ``"digits"`` (default size 28) or ``"patches"`` (default size 32).
    """
    check_choice("dataset", dataset, PRIOR_DATASETS)
    check_int("num_patches", num_patches, minimum=10)
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if dataset == "digits":
        size = 28 if size is None else size
        pool = digits("train", size=size)
        test = digits("test", size=size)
        source = "sklearn digits, fixed train split / test split"
    else:
        size = 32 if size is None else size
        pool = natural_patches("train", size, num_patches, seed=seed)
        test = natural_patches("test", size, max(num_patches // 10, 10), seed=seed + 1)
        source = "scikit-image photographs: training images / disjoint test images"
    perm = torch.randperm(pool.shape[0], generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(round(val_fraction * pool.shape[0])))
    split = (f"{source}; train {pool.shape[0] - n_val}, validation {n_val} "
             f"(seeded hold-out, seed {seed}), test {test.shape[0]}")
    return PriorData(train=pool[perm[n_val:]], val=pool[perm[:n_val]], test=test, split=split)
