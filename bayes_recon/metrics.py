"""Image quality metrics against a known truth: PSNR, SSIM, RMSE, per image.

Every metric takes a batch ``x`` and ``truth`` of the same shape ``(B, ...)``
(images ``(B, C, H, W)``) and returns one value per image as a float64 tensor
``(B,)`` on the input's device. The data range is an explicit argument: taking
it from the images themselves (as some libraries do) makes scores incomparable.
"""

from __future__ import annotations

import numpy as np
import torch

from ._validation import check_int, check_positive, check_tensor


def _check_pair(x, truth, *, ndim: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    check_tensor("x", x)
    check_tensor("truth", truth)
    if ndim is not None and x.dim() != ndim:
        raise ValueError(f"x must have {ndim} dimensions (B, C, H, W), got shape {tuple(x.shape)}")
    if x.dim() < 2:
        raise ValueError(
            f"x must have shape (B, ...) with at least 2 dimensions, got {tuple(x.shape)}"
        )
    if x.shape != truth.shape:
        raise ValueError(
            f"truth must have the shape of x {tuple(x.shape)}, got {tuple(truth.shape)}"
        )
    return x, truth.to(device=x.device)


def _mse(x: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    diff = x.to(torch.float64) - truth.to(torch.float64)
    return diff.pow(2).flatten(1).mean(dim=1)


def rmse(x: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Root mean squared error per image.

    Parameters
    ----------
    x, truth : torch.Tensor
        Same shape ``(B, ...)``, real, finite.

    Returns
    -------
    torch.Tensor
        float64 ``(B,)``: ``sqrt(mean((x - truth)^2))`` over all but the first axis.

    Examples
    --------
    >>> import torch
    >>> from bayes_recon.metrics import rmse
    >>> rmse(torch.full((2, 1, 4, 4), 0.5), torch.zeros(2, 1, 4, 4))
    tensor([0.5000, 0.5000], dtype=torch.float64)
    """
    x, truth = _check_pair(x, truth)
    return _mse(x, truth).sqrt()


def psnr(x: torch.Tensor, truth: torch.Tensor, data_range: float) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, ``10 log10(data_range^2 / MSE)`` in dB.

    Parameters
    ----------
    x, truth : torch.Tensor
        Same shape ``(B, ...)`` (images ``(B, C, H, W)``), real, finite.
    data_range : float
        The range of valid intensities (1.0 for images in [0, 1]), > 0. Required:
        estimating it from the images makes scores depend on the image content.

    Returns
    -------
    torch.Tensor
        float64 ``(B,)``; ``inf`` for an image identical to its truth.

    Examples
    --------
    >>> import torch
    >>> from bayes_recon.metrics import psnr
    >>> truth = torch.zeros(1, 1, 8, 8)
    >>> psnr(truth + 0.1, truth, data_range=1.0)  # 10 log10(1 / 0.01)
    tensor([20.0000], dtype=torch.float64)
    """
    x, truth = _check_pair(x, truth)
    data_range = check_positive("data_range", data_range)
    mse = _mse(x, truth)
    # mse == 0 gives +inf (a perfect reconstruction), never NaN.
    return 10.0 * torch.log10(data_range**2 / mse)


def _odd_window(win_size: int | None, height: int, width: int) -> int:
    side = min(height, width)
    if side < 3:
        raise ValueError(
            f"x must have height and width >= 3 for ssim, got {height}x{width}"
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


def ssim(x: torch.Tensor, truth: torch.Tensor, data_range: float,
         win_size: int | None = None) -> torch.Tensor:
    """Structural similarity index per image (wraps ``skimage.metrics.structural_similarity``).

    Uses scikit-image's defaults (uniform ``win_size`` window, sample
    covariance, ``K1 = 0.01``, ``K2 = 0.03``); multi-channel images are
    compared channel-wise and averaged.

    Parameters
    ----------
    x, truth : torch.Tensor
        Same shape ``(B, C, H, W)`` with ``H, W >= 3``, real, finite.
    data_range : float
        The range of valid intensities, > 0.
    win_size : int, optional
        Odd side of the sliding window, <= min(H, W). Default: 7, or the
        largest odd size that fits smaller images.

    Returns
    -------
    torch.Tensor
        float64 ``(B,)`` in [-1, 1]; 1 for identical images.

    Examples
    --------
    >>> import torch
    >>> from bayes_recon.metrics import ssim
    >>> x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    >>> ssim(x, x, data_range=1.0)
    tensor([1., 1.], dtype=torch.float64)
    """
    from skimage.metrics import structural_similarity

    x, truth = _check_pair(x, truth, ndim=4)
    data_range = check_positive("data_range", data_range)
    win = _odd_window(win_size, x.shape[-2], x.shape[-1])
    xs = x.detach().to(device="cpu", dtype=torch.float64).numpy()
    ts = truth.detach().to(device="cpu", dtype=torch.float64).numpy()
    channel_axis = 0 if x.shape[1] > 1 else None
    values = np.empty(x.shape[0], dtype=np.float64)
    for i in range(x.shape[0]):
        a, b = (xs[i], ts[i]) if channel_axis is not None else (xs[i, 0], ts[i, 0])
        values[i] = structural_similarity(
            a, b, data_range=data_range, win_size=win, channel_axis=channel_axis
        )
    return torch.from_numpy(values).to(device=x.device)
