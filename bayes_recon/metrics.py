"""Image quality metrics against a known truth: PSNR, SSIM, RMSE, per image.

Every metric takes ``(image_true, image_test)`` in scikit-image's order
(``skimage.metrics.peak_signal_noise_ratio(image_true, image_test, data_range=...)``):
a batch of truths and a batch of estimates of the same shape ``(B, ...)``
(images ``(B, C, H, W)``), and returns one value per image as a float64 tensor
``(B,)`` on the estimate's device. The data range is an explicit keyword
argument: taking it from the images themselves (as some libraries do) makes
scores incomparable.

Up to version 0.1.0 the arguments were ``(x, truth, data_range)``, the opposite
order. The old keyword names ``x=`` (the estimate) and ``truth=`` and a
positional ``data_range`` are still accepted for one release with a
``DeprecationWarning``.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from ._validation import check_int, check_positive, check_tensor

_MISSING = object()


def _resolve_arguments(func: str, image_true, image_test, args: tuple, data_range,
                       x, truth, *, needs_range: bool = True):
    """Map the new ``(image_true, image_test, *, data_range)`` call and the deprecated
    ``(x, truth, data_range)`` forms onto ``(image_true, image_test, data_range)``."""
    new_order = (f"{func}(image_true, image_test"
                 + (", *, data_range=...)" if needs_range else ")"))
    if args:
        if not needs_range or len(args) > 1 or data_range is not _MISSING:
            raise TypeError(f"{func}() takes 2 positional arguments (image_true, image_test) "
                            f"and data_range by keyword, got {2 + len(args)} positional")
        warnings.warn(f"{func}: pass data_range by keyword; the signature is {new_order}",
                      DeprecationWarning, stacklevel=3)
        data_range = args[0]
    if x is not _MISSING or truth is not _MISSING:
        if x is not _MISSING and truth is not _MISSING and image_true is None \
                and image_test is None:
            image_true, image_test = truth, x
        elif truth is not _MISSING and x is _MISSING and image_test is None \
                and image_true is not None:
            # old call f(estimate, truth=...): the one positional argument was x
            image_true, image_test = truth, image_true
        else:
            raise TypeError(f"{func}() got the deprecated x=/truth= keywords mixed with "
                            f"image_true/image_test; use {new_order}")
        warnings.warn(
            f"{func}: the keywords x= and truth= are deprecated; the arguments are now in "
            f"scikit-image's order {new_order} (truth first, then the estimate)",
            DeprecationWarning, stacklevel=3)
    if image_true is None or image_test is None:
        missing = "image_true" if image_true is None else "image_test"
        raise TypeError(f"{func}() missing required argument {missing!r}; use {new_order}")
    if needs_range and data_range is _MISSING:
        raise TypeError(f"{func}() missing required keyword argument 'data_range'; "
                        f"use {new_order}")
    return image_true, image_test, data_range


def _check_pair(image_true, image_test, *,
                ndim: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    check_tensor("image_true", image_true)
    check_tensor("image_test", image_test)
    if ndim is not None and image_test.dim() != ndim:
        raise ValueError(f"image_test must have {ndim} dimensions (B, C, H, W), "
                         f"got shape {tuple(image_test.shape)}")
    if image_test.dim() < 2:
        raise ValueError("image_test must have shape (B, ...) with at least 2 dimensions, "
                         f"got {tuple(image_test.shape)}")
    if image_test.shape != image_true.shape:
        raise ValueError(
            f"image_test must have the shape of image_true {tuple(image_true.shape)}, "
            f"got {tuple(image_test.shape)}"
        )
    return image_true.to(device=image_test.device), image_test


def _mse(image_true: torch.Tensor, image_test: torch.Tensor) -> torch.Tensor:
    diff = image_test.to(torch.float64) - image_true.to(torch.float64)
    return diff.pow(2).flatten(1).mean(dim=1)


def rmse(image_true: torch.Tensor | None = None, image_test: torch.Tensor | None = None,
         *, x=_MISSING, truth=_MISSING) -> torch.Tensor:
    """Root mean squared error per image.

    Parameters
    ----------
    image_true, image_test : torch.Tensor
        Truths and estimates, same shape ``(B, ...)``, real, finite.
    x, truth : torch.Tensor
        Deprecated keyword names of ``image_test`` and ``image_true``
        (``DeprecationWarning``; removed in the next release).

    Returns
    -------
    torch.Tensor
        float64 ``(B,)``: ``sqrt(mean((image_test - image_true)^2))`` over all but
        the first axis.

    Examples
    --------
    >>> import torch
    >>> from bayes_recon.metrics import rmse
    >>> rmse(torch.zeros(2, 1, 4, 4), torch.full((2, 1, 4, 4), 0.5))
    tensor([0.5000, 0.5000], dtype=torch.float64)
    """
    image_true, image_test, _ = _resolve_arguments(
        "rmse", image_true, image_test, (), None, x, truth, needs_range=False)
    image_true, image_test = _check_pair(image_true, image_test)
    return _mse(image_true, image_test).sqrt()


def psnr(image_true: torch.Tensor | None = None, image_test: torch.Tensor | None = None,
         *args, data_range: float = _MISSING, x=_MISSING, truth=_MISSING) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, ``10 log10(data_range^2 / MSE)`` in dB.

    Same argument order as ``skimage.metrics.peak_signal_noise_ratio``.

    Parameters
    ----------
    image_true, image_test : torch.Tensor
        Truths and estimates, same shape ``(B, ...)`` (images ``(B, C, H, W)``),
        real, finite.
    data_range : float
        Keyword only. The range of valid intensities (1.0 for images in [0, 1]),
        > 0. Required: estimating it from the images makes scores depend on the
        image content.
    x, truth : torch.Tensor
        Deprecated keyword names of ``image_test`` and ``image_true``
        (``DeprecationWarning``; removed in the next release). A positional
        ``data_range`` is deprecated likewise.

    Returns
    -------
    torch.Tensor
        float64 ``(B,)``; ``inf`` for an image identical to its truth.

    Examples
    --------
    >>> import torch
    >>> from bayes_recon.metrics import psnr
    >>> truth = torch.zeros(1, 1, 8, 8)
    >>> psnr(truth, truth + 0.1, data_range=1.0)  # 10 log10(1 / 0.01)
    tensor([20.0000], dtype=torch.float64)
    """
    image_true, image_test, data_range = _resolve_arguments(
        "psnr", image_true, image_test, args, data_range, x, truth)
    image_true, image_test = _check_pair(image_true, image_test)
    data_range = check_positive("data_range", data_range)
    mse = _mse(image_true, image_test)
    # mse == 0 gives +inf (a perfect reconstruction), never NaN.
    return 10.0 * torch.log10(data_range**2 / mse)


def _odd_window(win_size: int | None, height: int, width: int) -> int:
    side = min(height, width)
    if side < 3:
        raise ValueError(
            f"image_test must have height and width >= 3 for ssim, got {height}x{width}"
        )
    if win_size is None:
        # skimage's default 7, shrunk to the largest odd size that fits the image
        # (8x8 digits get 7, a 5x5 image gets 5).
        return min(7, side if side % 2 else side - 1)
    check_int("win_size", win_size, minimum=3)
    if win_size % 2 == 0 or win_size > side:
        raise ValueError(
            f"win_size must be odd and <= min(H, W) = {side}, got {win_size}"
        )
    return win_size


def ssim(image_true: torch.Tensor | None = None, image_test: torch.Tensor | None = None,
         *args, data_range: float = _MISSING, win_size: int | None = None,
         x=_MISSING, truth=_MISSING) -> torch.Tensor:
    """Structural similarity index per image (wraps ``skimage.metrics.structural_similarity``).

    Same argument order as scikit-image. Uses scikit-image's defaults (uniform
    ``win_size`` window, sample covariance, ``K1 = 0.01``, ``K2 = 0.03``);
    multi-channel images are compared channel-wise and averaged.

    Parameters
    ----------
    image_true, image_test : torch.Tensor
        Truths and estimates, same shape ``(B, C, H, W)`` with ``H, W >= 3``,
        real, finite.
    data_range : float
        Keyword only. The range of valid intensities, > 0.
    win_size : int, optional
        Keyword only. Odd side of the sliding window, <= min(H, W). Default: 7,
        or the largest odd size that fits smaller images.
    x, truth : torch.Tensor
        Deprecated keyword names of ``image_test`` and ``image_true``
        (``DeprecationWarning``; removed in the next release). A positional
        ``data_range`` is deprecated likewise.

    Returns
    -------
    torch.Tensor
        float64 ``(B,)`` in [-1, 1]; 1 for identical images.

    Examples
    --------
    >>> import torch
    >>> from bayes_recon.metrics import ssim
    >>> truth = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    >>> ssim(truth, truth, data_range=1.0)
    tensor([1., 1.], dtype=torch.float64)
    """
    from skimage.metrics import structural_similarity

    image_true, image_test, data_range = _resolve_arguments(
        "ssim", image_true, image_test, args, data_range, x, truth)
    image_true, image_test = _check_pair(image_true, image_test, ndim=4)
    data_range = check_positive("data_range", data_range)
    win = _odd_window(win_size, image_test.shape[-2], image_test.shape[-1])
    ts = image_true.detach().to(device="cpu", dtype=torch.float64).numpy()
    es = image_test.detach().to(device="cpu", dtype=torch.float64).numpy()
    channel_axis = 0 if image_test.shape[1] > 1 else None
    values = np.empty(image_test.shape[0], dtype=np.float64)
    for i in range(image_test.shape[0]):
        t, e = (ts[i], es[i]) if channel_axis is not None else (ts[i, 0], es[i, 0])
        values[i] = structural_similarity(
            t, e, data_range=data_range, win_size=win, channel_axis=channel_axis
        )
    return torch.from_numpy(values).to(device=image_test.device)
