"""The Shepp-Logan phantom at any resolution."""

from __future__ import annotations

import functools

import numpy as np
import torch

from .._validation import check_int


@functools.lru_cache(maxsize=8)
def _shepp_logan_array(size: int) -> np.ndarray:
    from skimage.data import shepp_logan_phantom
    from skimage.transform import resize

    phantom = shepp_logan_phantom()  # (400, 400) float64 in [0, 1], ships with skimage
    if phantom.shape != (size, size):
        # Linear interpolation (no overshoot on the piecewise-constant phantom),
        # Gaussian anti-aliasing when shrinking.
        phantom = resize(phantom, (size, size), order=1, mode="edge", anti_aliasing=True)
    return np.clip(phantom, 0.0, 1.0).astype(np.float32)


def shepp_logan(size: int) -> torch.Tensor:
    """The (modified) Shepp-Logan phantom from scikit-image, resized to ``size``.

    Parameters
    ----------
    size : int
        Side length in pixels, >= 2.

    Returns
    -------
    torch.Tensor
        float32 ``(1, 1, size, size)`` in [0, 1]; a fresh tensor on every call.

    Examples
    --------
    >>> from bayes_recon.data import shepp_logan
    >>> x = shepp_logan(64)
    >>> tuple(x.shape), x.dtype, float(x.max()) <= 1.0
    ((1, 1, 64, 64), torch.float32, True)
    """
    check_int("size", size, minimum=2)
    return torch.from_numpy(_shepp_logan_array(size).copy())[None, None]
