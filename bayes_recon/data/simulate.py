"""Simulated measurements ``y = A x + noise`` with a relative noise level."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from .._validation import check_int, check_positive
from ..operators.base import LinearOperator


class ZeroSignalWarning(UserWarning):
    """``A x`` is identically zero, so a relative noise level gives no noise."""


@dataclass(frozen=True)
class Measurement:
    """A simulated measurement.

    Attributes
    ----------
    y : torch.Tensor
        ``(B, *op.range_shape)``, real, or complex for complex-range operators.
    noise_std : float
        Standard deviation of the Gaussian noise added to every real number of
        ``y`` (to the real and the imaginary part separately when complex).
    """

    y: torch.Tensor
    noise_std: float


def simulate(op: LinearOperator, x: torch.Tensor, relative_noise: float = 0.05,
             seed: int = 0) -> Measurement:
    """Simulate ``y = A x + e`` with white Gaussian noise ``e ~ N(0, noise_std^2 I)``.

    ``noise_std = relative_noise * mean|A x|``, the mean of the absolute values
    (moduli, when complex) over the **whole batch**, so one call gives every
    image the same noise level. For a per-image level, simulate one image at a
    time. For complex-range operators (e.g. MRI k-space) the real and the
    imaginary parts each get independent ``N(0, noise_std^2)`` noise.

    Parameters
    ----------
    op : LinearOperator
    x : torch.Tensor
        ``(B, *op.domain_shape)``, real and finite (checked by ``op``).
    relative_noise : float
        >= 0; 0 gives the noiseless ``A x``.
    seed : int
        Seeds a ``torch.Generator`` on ``x.device``: same seed, same noise.

    Returns
    -------
    Measurement
        ``y`` of shape ``(B, *op.range_shape)`` on ``x``'s device, in ``x``'s dtype
        (its complex counterpart for complex-range operators), detached from
        autograd; and ``noise_std`` as a Python float.

    Raises
    ------
    TypeError
        ``op`` is not a LinearOperator, ``x`` is not a real floating tensor.
    ValueError
        ``relative_noise`` negative or not finite; ``x`` non-finite or of the
        wrong shape for ``op``.

    Warns
    -----
    ZeroSignalWarning
        ``A x`` is identically zero while ``relative_noise > 0``: the noise
        level is 0.

    Examples
    --------
    >>> import torch
    >>> from bayes_recon.data import simulate
    >>> from bayes_recon.operators.simple import Identity
    >>> x = torch.ones(2, 1, 8, 8)
    >>> m = simulate(Identity((1, 8, 8)), x, relative_noise=0.1, seed=0)
    >>> tuple(m.y.shape), round(m.noise_std, 6)
    ((2, 1, 8, 8), 0.1)
    >>> bool((simulate(Identity((1, 8, 8)), x, 0.1, seed=0).y == m.y).all())
    True
    """
    if not isinstance(op, LinearOperator):
        raise TypeError(f"op must be a LinearOperator, got {type(op).__name__}")
    relative_noise = check_positive("relative_noise", relative_noise, allow_zero=True)
    check_int("seed", seed, minimum=0)
    with torch.no_grad():
        clean = op(x)  # the operator rejects a non-tensor, NaN/inf and a wrong shape
        scale = float(clean.abs().mean())
        noise_std = relative_noise * scale
        if scale == 0.0 and relative_noise > 0:
            warnings.warn(
                "A x is identically zero, so relative_noise gives noise_std = 0; "
                "the measurement is noiseless",
                ZeroSignalWarning,
                stacklevel=2,
            )
        gen = torch.Generator(device=x.device).manual_seed(seed)
        y = clean + white_noise(clean, noise_std, gen)
    return Measurement(y=y, noise_std=noise_std)


def white_noise(like: torch.Tensor, noise_std: float, generator: torch.Generator) -> torch.Tensor:
    """``N(0, noise_std²)`` noise of ``like``'s shape, dtype and device.

    For a complex ``like`` the real and the imaginary parts each get ``noise_std``
    (as :func:`simulate` adds them). ``generator`` must live on ``like.device``.
    """
    real_dtype = like.real.dtype if like.is_complex() else like.dtype
    noise = torch.randn(like.shape, generator=generator, dtype=real_dtype, device=like.device)
    if like.is_complex():
        imag = torch.randn(like.shape, generator=generator, dtype=real_dtype, device=like.device)
        noise = torch.complex(noise, imag)
    return noise_std * noise
