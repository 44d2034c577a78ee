"""Grayscale patches of the photographs that ship with scikit-image.

The train and test splits come from disjoint source images, so a prior trained
on train patches is evaluated on photographs it has never seen.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from .._validation import check_choice, check_int, check_positive

#: Source images of the train split (names of ``skimage.data`` functions).
NATURAL_TRAIN_IMAGES: tuple[str, ...] = (
    "camera", "moon", "coins", "text", "page", "clock", "horse", "brick", "grass",
    "gravel", "astronaut", "chelsea", "coffee", "rocket",
)
#: Source images of the test split, disjoint from the train split.
NATURAL_TEST_IMAGES: tuple[str, ...] = (
    "cell", "microaneurysms", "immunohistochemistry", "hubble_deep_field",
)
_SPLITS = {"train": NATURAL_TRAIN_IMAGES, "test": NATURAL_TEST_IMAGES}


@functools.lru_cache(maxsize=None)
def _gray(name: str) -> np.ndarray:
    """Source image ``name`` as float64 grayscale in [0, 1] (colour -> luminance)."""
    import skimage.data
    from skimage.color import rgb2gray
    from skimage.util import img_as_float

    image = img_as_float(getattr(skimage.data, name)())  # bool -> {0., 1.}, uint8 -> /255
    if image.ndim == 3:
        image = rgb2gray(image[..., :3])
    return np.clip(image, 0.0, 1.0)


@functools.lru_cache(maxsize=64)
def _scaled(name: str, shape: tuple[int, int]) -> np.ndarray:
    """Source image ``name`` resized (anti-aliased) to ``shape``, float32."""
    from skimage.transform import resize

    image = _gray(name)
    if image.shape != shape:
        image = resize(image, shape, order=1, mode="reflect", anti_aliasing=True)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def _scaled_shape(shape: tuple[int, int], scale: float, size: int) -> tuple[int, int] | None:
    """Shape after downscaling by ``scale``, enlarged (up to full size) so that a
    ``size`` patch fits; ``None`` when the image is smaller than a patch."""
    h, w = shape
    if min(h, w) < size:
        return None
    effective = min(1.0, max(scale, size / min(h, w)))
    out = (max(size, int(round(h * effective))), max(size, int(round(w * effective))))
    return out


def natural_patches(split: str, size: int, n: int, seed: int, *, scale: float = 0.5,
                    return_sources: bool = False):
    """Random grayscale patches of scikit-image's bundled photographs.

    Each source image is converted to grayscale in [0, 1] and downscaled by
    ``scale`` with anti-aliasing (default 0.5: at full resolution a small patch
    of a 512-pixel photograph is mostly flat; halving puts edges and texture in
    most patches). An image that would then be smaller than a patch is shrunk
    only as far as the patch still fits; one smaller than a patch at full
    resolution is skipped. Each patch picks its source image uniformly at random
    (so every photograph is equally represented, whatever its size), then a
    uniformly random position. Intensities are not renormalised per patch.

    Parameters
    ----------
    split : {"train", "test"}
        ``"train"`` draws from :data:`NATURAL_TRAIN_IMAGES`, ``"test"`` from
        :data:`NATURAL_TEST_IMAGES`; the two sets of photographs are disjoint.
    size : int
        Patch side length in pixels, >= 1.
    n : int
        Number of patches, >= 1.
    seed : int
        Same seed, same patches.
    scale : float
        Downscaling factor in (0, 1].
    return_sources : bool
        Also return the name of each patch's source image.

    Returns
    -------
    patches : torch.Tensor
        float32 ``(n, 1, size, size)`` in [0, 1].
    sources : list of str
        Length ``n``, only if ``return_sources``.

    Examples
    --------
    >>> from bayes_recon.data import natural_patches
    >>> x, src = natural_patches("test", 32, 8, seed=0, return_sources=True)
    >>> tuple(x.shape), x.dtype, len(src)
    ((8, 1, 32, 32), torch.float32, 8)
    >>> set(src) <= {"cell", "microaneurysms", "immunohistochemistry", "hubble_deep_field"}
    True
    """
    check_choice("split", split, tuple(_SPLITS))
    check_int("size", size, minimum=1)
    check_int("n", n, minimum=1)
    check_int("seed", seed, minimum=0)
    scale = check_positive("scale", scale)
    if scale > 1:
        raise ValueError(f"scale must be in (0, 1], got {scale}")

    names, images = [], []
    for name in _SPLITS[split]:
        shape = _scaled_shape(_gray(name).shape, scale, size)
        if shape is not None:
            names.append(name)
            images.append(_scaled(name, shape))
    if not images:
        longest = max(min(_gray(m).shape) for m in _SPLITS[split])
        raise ValueError(
            f"size must be <= {longest} (the longest short side of the {split!r} "
            f"source images), got {size}"
        )

    rng = np.random.default_rng(seed)
    source = rng.integers(0, len(images), size=n)
    heights = np.array([im.shape[0] for im in images])[source]
    widths = np.array([im.shape[1] for im in images])[source]
    rows = (rng.random(n) * (heights - size + 1)).astype(np.int64)
    cols = (rng.random(n) * (widths - size + 1)).astype(np.int64)

    out = np.empty((n, 1, size, size), dtype=np.float32)
    for i, (s, r, c) in enumerate(zip(source, rows, cols)):
        out[i, 0] = images[s][r:r + size, c:c + size]
    patches = torch.from_numpy(out)
    if return_sources:
        return patches, [names[s] for s in source]
    return patches
