"""Image quality metrics against a known truth: PSNR, SSIM, RMSE.

Every metric takes ``(image_true, image_test)`` in scikit-image's order
(``skimage.metrics.peak_signal_noise_ratio(image_true, image_test, data_range=...)``),
as torch tensors or NumPy arrays of the same shape, and reduces them the way
scikit-image does:

* ``(H, W)`` or ``(C, H, W)``: ONE image → one value (a 0-d float64 tensor on the
  estimate's device for torch input, a NumPy ``float64`` scalar for NumPy input);
  ``(C, H, W)`` is one multi-channel image (``ssim`` averages its channels, as
  scikit-image's ``channel_axis=0``), not a batch of ``C`` images;
* ``(B, C, H, W)``: a batch → one value per image, float64 ``(B,)`` (a tensor, or a
  NumPy array for NumPy input).

Other numbers of dimensions are refused rather than guessed at. The data range is
an explicit keyword argument: taking it from the images themselves (as some
libraries do) makes scores incomparable.

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


def _as_tensor(name: str, value) -> torch.Tensor:
    """A torch tensor or NumPy array as a tensor; integer images (uint8, ...) become float64."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "iuf":
            raise TypeError(f"{name} must be a real numeric array, got dtype {value.dtype}")
        # ascontiguousarray: torch.from_numpy refuses negative strides (flipped views).
        value = torch.from_numpy(np.ascontiguousarray(value))
    elif not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or a numpy.ndarray, "
                        f"got {type(value).__name__}")
    if not (value.is_floating_point() or value.is_complex() or value.dtype == torch.bool):
        value = value.to(torch.float64)  # as scikit-image, which casts integer images to float
    return check_tensor(name, value)


def _check_pair(image_true, image_test) -> tuple[torch.Tensor, torch.Tensor, bool, bool]:
    """Both images as 4-D tensors ``(B, C, H, W)`` on the estimate's device.

    Also returns ``single`` (the input was one image, ``(H, W)`` or ``(C, H, W)``:
    the result is a scalar) and ``as_numpy`` (neither input was a tensor: the
    result is NumPy).
    """
    as_numpy = not isinstance(image_true, torch.Tensor) and not isinstance(image_test, torch.Tensor)
    image_true = _as_tensor("image_true", image_true)
    image_test = _as_tensor("image_test", image_test)
    if image_test.dim() not in (2, 3, 4):
        raise ValueError(
            "image_test must have shape (H, W) or (C, H, W) (one image) or (B, C, H, W) "
            f"(a batch), got {tuple(image_test.shape)}"
        )
    if image_test.shape != image_true.shape:
        raise ValueError(
            f"image_test must have the shape of image_true {tuple(image_true.shape)}, "
            f"got {tuple(image_test.shape)}"
        )
    single = image_test.dim() < 4
    while image_test.dim() < 4:
        image_true, image_test = image_true.unsqueeze(0), image_test.unsqueeze(0)
    return image_true.to(device=image_test.device), image_test, single, as_numpy


def _result(values: torch.Tensor, single: bool, as_numpy: bool):
    """Per-image values ``(B,)`` in the caller's form: scalar for one image, NumPy for NumPy input."""
    if single:
        values = values[0]
    if as_numpy:
        values = values.cpu().numpy()
        return np.float64(values) if single else values
    return values


def _mse(image_true: torch.Tensor, image_test: torch.Tensor) -> torch.Tensor:
    diff = image_test.to(torch.float64) - image_true.to(torch.float64)
    return diff.pow(2).flatten(1).mean(dim=1)


def rmse(image_true: torch.Tensor | None = None, image_test: torch.Tensor | None = None,
         *, x=_MISSING, truth=_MISSING) -> torch.Tensor:
    """Root mean squared error per image.

    Parameters
    ----------
    image_true, image_test : torch.Tensor or numpy.ndarray
        Truth and estimate, same shape: one image ``(H, W)`` or ``(C, H, W)``, or
        a batch ``(B, C, H, W)``; real (integers are cast to float64), finite.
    x, truth : torch.Tensor
        Deprecated keyword names of ``image_test`` and ``image_true``
        (``DeprecationWarning``; removed in the next release).

    Returns
    -------
    torch.Tensor or numpy.float64 or numpy.ndarray
        ``sqrt(mean((image_test - image_true)^2))`` over each image: a float64
        scalar for one image (0-d tensor, or NumPy scalar for NumPy input),
        float64 ``(B,)`` for a batch. As ``sqrt(skimage.metrics.mean_squared_error)``.

    Examples
    --------
    >>> import torch
    >>> from bayes_recon.metrics import rmse
    >>> rmse(torch.zeros(2, 1, 4, 4), torch.full((2, 1, 4, 4), 0.5))
    tensor([0.5000, 0.5000], dtype=torch.float64)
    """
    image_true, image_test, _ = _resolve_arguments(
        "rmse", image_true, image_test, (), None, x, truth, needs_range=False)
    image_true, image_test, single, as_numpy = _check_pair(image_true, image_test)
    return _result(_mse(image_true, image_test).sqrt(), single, as_numpy)


def psnr(image_true: torch.Tensor | None = None, image_test: torch.Tensor | None = None,
         *args, data_range: float = _MISSING, x=_MISSING, truth=_MISSING) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, ``10 log10(data_range^2 / MSE)`` in dB.

    Same argument order as ``skimage.metrics.peak_signal_noise_ratio``.

    Parameters
    ----------
    image_true, image_test : torch.Tensor or numpy.ndarray
        Truth and estimate, same shape: one image ``(H, W)`` or ``(C, H, W)``, or
        a batch ``(B, C, H, W)``; real (integers are cast to float64), finite.
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
    torch.Tensor or numpy.float64 or numpy.ndarray
        A float64 scalar for one image (0-d tensor, or NumPy scalar for NumPy
        input), float64 ``(B,)`` for a batch; ``inf`` for an image identical to
        its truth.

    Examples
    --------
    >>> import torch
    >>> from bayes_recon.metrics import psnr
    >>> truth = torch.zeros(1, 1, 8, 8)
    >>> psnr(truth, truth + 0.1, data_range=1.0)  # 10 log10(1 / 0.01)
    tensor([20.0000], dtype=torch.float64)
    >>> psnr(truth[0, 0], truth[0, 0] + 0.1, data_range=1.0)  # one (H, W) image: a scalar
    tensor(20.0000, dtype=torch.float64)
    """
    image_true, image_test, data_range = _resolve_arguments(
        "psnr", image_true, image_test, args, data_range, x, truth)
    image_true, image_test, single, as_numpy = _check_pair(image_true, image_test)
    data_range = check_positive("data_range", data_range)
    mse = _mse(image_true, image_test)
    # mse == 0 gives +inf (a perfect reconstruction), never NaN.
    return _result(10.0 * torch.log10(data_range**2 / mse), single, as_numpy)


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
    image_true, image_test : torch.Tensor or numpy.ndarray
        Truth and estimate, same shape: one image ``(H, W)`` or ``(C, H, W)``, or
        a batch ``(B, C, H, W)``, with ``H, W >= 3``; real (integers are cast to
        float64), finite.
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
    torch.Tensor or numpy.float64 or numpy.ndarray
        In [-1, 1], 1 for identical images: a float64 scalar for one image (0-d
        tensor, or NumPy scalar for NumPy input), float64 ``(B,)`` for a batch.

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
    image_true, image_test, single, as_numpy = _check_pair(image_true, image_test)
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
    return _result(torch.from_numpy(values).to(device=image_test.device), single, as_numpy)
