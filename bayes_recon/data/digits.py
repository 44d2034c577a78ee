"""scikit-learn's bundled 8x8 handwritten digits, resized, with a fixed train/test split."""

from __future__ import annotations

import functools

import numpy as np
import torch
from skimage.transform import resize

from .._validation import check_choice, check_int

#: Seed of the permutation that defines the split. Changing it changes every
#: "test set" result ever reported with this library: never change it.
_SPLIT_SEED = 20240611
#: Fraction of each digit class held out for the test split.
_TEST_FRACTION = 0.2


@functools.lru_cache(maxsize=1)
def _raw_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 digits as float64 ``(N, 8, 8)`` in [0, 1] and int64 labels ``(N,)``."""
    # Imported here: scikit-learn is only needed when digits are asked for.
    from sklearn.datasets import load_digits

    bunch = load_digits()  # ships with scikit-learn, no download
    images = np.asarray(bunch.images, dtype=np.float64) / 16.0
    labels = np.asarray(bunch.target, dtype=np.int64)
    return images, labels


@functools.lru_cache(maxsize=1)
def _split_indices() -> dict[str, np.ndarray]:
    """Stratified, seeded 80/20 split of the digit indices (sorted per split)."""
    _, labels = _raw_digits()
    rng = np.random.default_rng(_SPLIT_SEED)
    train, test = [], []
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        idx = idx[rng.permutation(len(idx))]
        n_test = int(round(_TEST_FRACTION * len(idx)))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return {"train": np.sort(np.concatenate(train)), "test": np.sort(np.concatenate(test))}


@functools.lru_cache(maxsize=8)
def _resized(size: int) -> np.ndarray:
    """All digits resized to ``(N, size, size)`` float32 in [0, 1] (cached per size)."""
    images, _ = _raw_digits()
    if size == 8:
        out = images
    else:
        # Resize the stack as an (8, 8, N) "multi-channel" image: the trailing axis
        # is kept, so every digit is interpolated independently in one call.
        stack = np.moveaxis(images, 0, -1)
        out = resize(stack, (size, size), order=3, mode="edge", anti_aliasing=True)
        out = np.moveaxis(out, -1, 0)
    # Bicubic interpolation overshoots near strokes; clip back to the valid range.
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def digits(split: str, size: int = 28, return_labels: bool = False):
    """Handwritten digits (scikit-learn's bundled 8x8 set), resized to ``size``.

    The 1797 images (values 0..16) are scaled to [0, 1] and resized with
    bicubic interpolation (anti-aliased when shrinking), then clipped to [0, 1].
    The train/test split is fixed forever: a seeded permutation, stratified by
    label, holding out 20 % of each class (1438 train, 359 test images).

    Parameters
    ----------
    split : {"train", "test"}
    size : int
        Output side length in pixels, >= 2.
    return_labels : bool
        Also return the digit labels.

    Returns
    -------
    images : torch.Tensor
        float32 ``(N, 1, size, size)`` in [0, 1]; a fresh tensor on every call.
    labels : torch.Tensor
        int64 ``(N,)``, only if ``return_labels``.

    Examples
    --------
    >>> from bayes_recon.data import digits
    >>> x, labels = digits("test", size=8, return_labels=True)  # native size: no resize
    >>> tuple(x.shape), x.dtype, tuple(labels.shape)
    ((359, 1, 8, 8), torch.float32, (359,))
    >>> bool(x.min() >= 0) and bool(x.max() <= 1)
    True
    """
    check_choice("split", split, ("train", "test"))
    check_int("size", size, minimum=2)
    idx = _split_indices()[split]
    images = torch.from_numpy(_resized(size)[idx].copy()).unsqueeze(1)
    if not return_labels:
        return images
    _, labels = _raw_digits()
    return images, torch.from_numpy(labels[idx].copy())
