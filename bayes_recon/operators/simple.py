"""Image-domain forward models: identity (denoising), blur, inpainting, downsampling."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .._validation import check_int, check_positive, check_tensor, image_size_pair
from ._buffers import CachedBuffer, CachedIndex
from .base import LinearOperator


class Identity(LinearOperator):
    """``A = I`` on images of shape ``shape = (C, H, W)``: the denoising problem.

    Examples
    --------
    >>> import torch
    >>> from bayes_recon.operators import Identity
    >>> op = Identity((1, 4, 4))
    >>> x = torch.rand(2, 1, 4, 4)
    >>> bool((op(x) == x).all())
    True
    """

    def __init__(self, shape):
        if not isinstance(shape, (tuple, list)) or len(shape) != 3:
            raise TypeError(f"shape must be a (C, H, W) tuple, got {shape!r}")
        for s in shape:
            check_int("shape", s, minimum=1)
        super().__init__(shape, shape)

    def _forward(self, x):
        return x.clone()

    def _adjoint(self, y):
        return y.clone()

    def norm(self, *args, **kwargs) -> float:
        return 1.0


def gaussian_kernel(sigma: float, size: int | None = None) -> torch.Tensor:
    """Normalised 2-D Gaussian blur kernel of shape ``(size, size)`` (float64).

    Parameters
    ----------
    sigma : float
        Standard deviation in pixels, > 0.
    size : int, optional
        Odd kernel width; default ``2 * ceil(3 sigma) + 1``.

    Examples
    --------
    >>> from bayes_recon.operators import gaussian_kernel
    >>> k = gaussian_kernel(1.0, 5)
    >>> tuple(k.shape), round(float(k.sum()), 6)
    ((5, 5), 1.0)
    """
    sigma = check_positive("sigma", sigma)
    if size is None:
        size = 2 * math.ceil(3 * sigma) + 1
    check_int("size", size, minimum=1)
    if size % 2 == 0:
        raise ValueError(f"size must be odd, got {size}")
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-0.5 * (r / sigma) ** 2)
    k = g[:, None] * g[None, :]
    return k / k.sum()


def motion_kernel(length: float, angle: float = 0.0, size: int | None = None,
                  supersample: int = 8) -> torch.Tensor:
    """Normalised linear motion-blur kernel ``(size, size)`` (float64): a segment of ``length`` pixels.

    The segment is centred, at ``angle`` degrees from the horizontal
    (counter-clockwise, rows pointing down); each pixel's weight is the share
    of ``supersample²`` sub-pixel points per pixel that lie within half a
    pixel of the segment (anti-aliased).

    Parameters
    ----------
    length : float
        Segment length in pixels, ≥ 1.
    angle : float
        Degrees.
    size : int, optional
        Odd kernel width; default the smallest odd width holding the segment.
    supersample : int

    Examples
    --------
    >>> from bayes_recon.operators import motion_kernel
    >>> k = motion_kernel(5, 0)
    >>> tuple(k.shape), round(float(k.sum()), 6), bool((k[2] > 0).all()), float(k[0].sum())
    ((5, 5), 1.0, True, 0.0)
    """
    length = check_positive("length", length)
    if length < 1:
        raise ValueError(f"length must be >= 1 pixel, got {length}")
    check_int("supersample", supersample, minimum=1)
    if size is None:
        size = 2 * math.ceil((length - 1) / 2) + 1
    check_int("size", size, minimum=1)
    if size % 2 == 0:
        raise ValueError(f"size must be odd, got {size}")
    theta = math.radians(float(angle))
    ux, uy = math.cos(theta), -math.sin(theta)  # rows grow downwards
    step = 1.0 / supersample
    sub = (torch.arange(size * supersample, dtype=torch.float64) + 0.5) * step - size / 2
    yy, xx = torch.meshgrid(sub, sub, indexing="ij")
    along = xx * ux + yy * uy
    across = (-xx * uy + yy * ux).abs()
    inside = ((along.abs() <= length / 2) & (across <= 0.5)).to(torch.float64)
    k = inside.reshape(size, supersample, size, supersample).sum((1, 3))
    return k / k.sum()


class Blur(LinearOperator):
    """Convolution with ``kernel`` (odd ``(k, k)``), zero boundary, same-size output.

    ``A x = kernel ⋆ x`` channel by channel, on images ``(C, H, W)``; the adjoint
    is the transposed convolution with the same zero padding, so it is exact.

    Parameters
    ----------
    image_size : int or (H, W)
    kernel : torch.Tensor
        ``(k, k)`` with ``k`` odd, finite.
    channels : int
    """

    def __init__(self, image_size, kernel: torch.Tensor, channels: int = 1):
        h, w = image_size_pair("image_size", image_size)
        check_int("channels", channels, minimum=1)
        check_tensor("kernel", kernel, ndim=2)
        kh, kw = kernel.shape
        if kh % 2 == 0 or kw % 2 == 0:
            raise ValueError(f"kernel must have odd sides, got shape {tuple(kernel.shape)}")
        super().__init__((channels, h, w), (channels, h, w))
        self._kernel = CachedBuffer(kernel[None, None])
        self._padding = (kh // 2, kw // 2)

    def _weight(self, x):
        k = self._kernel.like(x)
        return k.expand(self.domain_shape[0], 1, *k.shape[-2:])

    def _forward(self, x):
        return F.conv2d(x, self._weight(x), padding=self._padding, groups=self.domain_shape[0])

    def _adjoint(self, y):
        return F.conv_transpose2d(
            y, self._weight(y), padding=self._padding, groups=self.domain_shape[0]
        )


class Inpainting(LinearOperator):
    """Observe the pixels where ``mask`` is True: ``(B, C, H, W) -> (B, m)``.

    Parameters
    ----------
    mask : torch.Tensor
        Boolean, ``(C, H, W)`` or ``(H, W)`` (one channel). ``m = mask.sum()``
        observed values, ordered row-major over ``(C, H, W)``. The adjoint
        scatters them back into a zero-filled image.
    """

    def __init__(self, mask: torch.Tensor):
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise TypeError(f"mask must be a boolean torch.Tensor, got {got}")
        if mask.dim() == 2:
            mask = mask[None]
        if mask.dim() != 3:
            raise ValueError(f"mask must have shape (C, H, W) or (H, W), got {tuple(mask.shape)}")
        m = int(mask.sum())
        if m < 1:
            raise ValueError("mask must observe at least one pixel, got an all-False mask")
        super().__init__(tuple(mask.shape), (m,))
        self.mask = mask.detach().cpu()
        self._index = CachedIndex(torch.nonzero(self.mask.reshape(-1)).squeeze(1))

    def _forward(self, x):
        return x.reshape(x.shape[0], -1).index_select(1, self._index.on(x))

    def _adjoint(self, y):
        out = y.new_zeros(y.shape[0], self.domain_size)
        out = out.index_copy(1, self._index.on(y), y)
        return out.reshape(y.shape[0], *self.domain_shape)

    def norm(self, *args, **kwargs) -> float:
        return 1.0


class Downsampling(LinearOperator):
    """Average pooling by ``factor``: ``(B, C, H, W) -> (B, C, H/k, W/k)``.

    The adjoint spreads each value uniformly over its ``k × k`` block, divided by
    ``k²`` (the exact transpose of averaging).
    """

    def __init__(self, image_size, factor: int, channels: int = 1):
        h, w = image_size_pair("image_size", image_size)
        check_int("factor", factor, minimum=1)
        check_int("channels", channels, minimum=1)
        if h % factor or w % factor:
            raise ValueError(
                f"image_size must be divisible by factor={factor}, got {(h, w)}"
            )
        super().__init__((channels, h, w), (channels, h // factor, w // factor))
        self.factor = factor

    def _forward(self, x):
        return F.avg_pool2d(x, self.factor)

    def _adjoint(self, y):
        k = self.factor
        return y.repeat_interleave(k, dim=-2).repeat_interleave(k, dim=-1) / (k * k)

    def norm(self, *args, **kwargs) -> float:
        return 1.0 / self.factor

    def extra_repr(self):
        return f"factor={self.factor}"


class MatrixOperator(LinearOperator):
    """A dense real matrix ``(m, n)`` acting on images ``domain_shape`` (prod = n).

    Useful for tests and for small custom forward models; measurements have
    shape ``(B, m)``.
    """

    def __init__(self, matrix: torch.Tensor, domain_shape):
        check_tensor("matrix", matrix, ndim=2)
        if not isinstance(domain_shape, (tuple, list)) or len(domain_shape) != 3:
            raise TypeError(f"domain_shape must be a (C, H, W) tuple, got {domain_shape!r}")
        if math.prod(domain_shape) != matrix.shape[1]:
            raise ValueError(
                f"matrix must have prod(domain_shape)={math.prod(domain_shape)} columns, "
                f"got shape {tuple(matrix.shape)}"
            )
        super().__init__(domain_shape, (matrix.shape[0],))
        self._matrix = CachedBuffer(matrix)

    def _forward(self, x):
        return x.reshape(x.shape[0], -1) @ self._matrix.like(x).T

    def _adjoint(self, y):
        return (y @ self._matrix.like(y)).reshape(y.shape[0], *self.domain_shape)

    def to_dense(self, dtype=torch.float64, device=None):
        out = self._matrix.base.to(dtype=dtype)
        return out if device is None else out.to(device)
