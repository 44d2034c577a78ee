"""Turn what users hand to diagnostics (Posterior, InferenceData, tensors) into numpy.

Private helpers shared by ``arviz_export``, ``calibration`` and ``plots``.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from ..posterior import Posterior

with warnings.catch_warnings():
    # arviz 0.2x announces its 1.x refactor on import; say it once, not in every user session.
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az  # noqa: E402

__all__ = ["az", "to_numpy", "samples_array", "truth_array"]


def to_numpy(value) -> np.ndarray:
    """A torch tensor or array-like as a numpy array (detached, on CPU)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def samples_array(source, var_name: str = "x", *, argname: str = "posterior") -> np.ndarray:
    """Samples ``(chains, draws, C, H, W)`` as float64 from a Posterior or InferenceData.

    Raises ``TypeError`` for other inputs and ``ValueError`` for a missing
    variable, wrong dimensions or non-finite samples.
    """
    if isinstance(source, Posterior):
        arr = to_numpy(source.samples)
    elif isinstance(source, az.InferenceData):
        if "posterior" not in source.groups():
            raise ValueError(f"{argname} (InferenceData) has no 'posterior' group")
        if var_name not in source.posterior:
            raise ValueError(
                f"{argname} (InferenceData) has no posterior variable {var_name!r}; "
                f"found {list(source.posterior.data_vars)}"
            )
        da = source.posterior[var_name]
        if da.ndim != 5 or da.dims[:2] != ("chain", "draw"):
            raise ValueError(
                f"{argname}.posterior[{var_name!r}] must have dims (chain, draw, channel, row, col), "
                f"got {da.dims}"
            )
        arr = np.asarray(da.values)
    else:
        raise TypeError(
            f"{argname} must be a Posterior or an arviz.InferenceData, got {type(source).__name__}"
        )
    if arr.dtype.kind != "f":
        raise TypeError(f"{argname} samples must be real floating point, got dtype {arr.dtype}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{argname} samples contain NaN or inf entries")
    return arr.astype(np.float64, copy=False)


def truth_array(truth, image_shape, *, argname: str = "truth") -> np.ndarray:
    """The truth as float64 ``(C, H, W)``, from any documented image shape.

    Accepts ``(C, H, W)``, ``(1, C, H, W)`` (the batch form, one image) and, when
    ``C = 1``, ``(H, W)``: the same set for ``to_arviz``, ``calibration`` and the
    plots. Anything else (another shape, a batch of several images, complex,
    NaN/inf) raises a ``ValueError`` or ``TypeError`` naming ``argname``.
    """
    if not isinstance(truth, (torch.Tensor, np.ndarray)):
        raise TypeError(f"{argname} must be a torch.Tensor or numpy array, got {type(truth).__name__}")
    arr = to_numpy(truth)
    image_shape = tuple(int(s) for s in image_shape)
    c = image_shape[0]
    accepted = [image_shape, (1, *image_shape)]
    if c == 1:
        accepted.insert(0, image_shape[1:])
    if arr.shape == (1, *image_shape):
        arr = arr[0]
    elif c == 1 and arr.shape == image_shape[1:]:
        arr = arr[None]  # a single-channel image given as (H, W)
    if arr.shape != image_shape:
        shapes = " or ".join(str(s) for s in accepted)
        raise ValueError(
            f"{argname} must have shape {shapes} (the samples' image is (C, H, W) = "
            f"{image_shape}), got {arr.shape}"
        )
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{argname} must be real, got dtype {arr.dtype}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{argname} contains NaN or inf entries")
    return arr.astype(np.float64)
