"""Parallel-beam CT as an explicit sparse matrix (Joseph's method), with FBP.

Geometry (all lengths in pixels): pixel centres at ``x = j - (W-1)/2`` (column
``j``, left to right) and ``y = (H-1)/2 - i`` (row ``i``, so ``y`` points up);
the ray at angle ``θ`` (radians) and detector offset ``s`` is the line
``x cos θ + y sin θ = s``; detectors are 1 pixel apart and centred,
``s_k = k - (D-1)/2``. Angle 0 integrates down the columns (projection =
``image.sum(rows)``, indexed left to right); angle ``π/2`` integrates along rows,
detector index increasing from the bottom row to the top. Sinograms are laid
out ``(C, angles, detectors)``.

Mapping to ``skimage.transform.radon(image, theta, circle)`` (which returns
``(detectors, angles)``): ``theta = degrees(angles)``, sinogram transposed, same
detector order and the same scale (both integrate in pixel units). skimage
rotates about pixel ``N // 2``, which is the image centre ``(N-1)/2`` only for odd
``N``; so for odd ``N`` the geometry is identical to ``circle=True`` with
``n_detectors=N``, and to ``circle=False`` with the default ``n_detectors`` when
``ceil(sqrt(2) N) - N`` is even (e.g. ``N = 67``). For even ``N`` skimage's
sinogram is that of the image shifted by half a pixel.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import torch

from .._validation import check_choice, check_int, check_tensor, image_size_pair
from .base import LinearOperator
from .sparse import SparseMatrix

FILTERS = ("ramp", "hann")


def _march(size, theta, offset, along_columns):
    """Joseph weights of a group of rays that all march the same way.

    Ray ``i`` is the line ``x cos θ_i + y sin θ_i = offset_i`` (``theta``,
    ``offset``: ``(rays,)``). ``along_columns``: each ray steps one pixel column
    at a time (``|sin θ| >= |cos θ|``) and its row coordinate is fractional;
    otherwise it steps over rows. Returns ``(counts, pixels, weights)``: entries
    per ray ``(rays,)`` and the entries themselves, grouped ray by ray in ray
    order (so they are CSR rows as they stand).
    """
    h, w = size
    c, si = np.cos(theta)[:, None], np.sin(theta)[:, None]
    if along_columns:
        t = np.arange(w)
        u = t - (w - 1) / 2                                  # x of each column
        pos = (h - 1) / 2 - (offset[:, None] - u * c) / si   # fractional row index
        n_other, step = h, 1.0 / np.abs(si)
    else:
        t = np.arange(h)
        u = (h - 1) / 2 - t                                  # y of each row
        pos = (w - 1) / 2 + (offset[:, None] - u * si) / c   # fractional column index
        n_other, step = w, 1.0 / np.abs(c)
    base = np.floor(pos)
    frac = pos - base
    base = base.astype(np.int32)
    # (rays, steps, 2): the two pixels straddling the ray share the step
    # linearly; a neighbour outside the image contributes nothing.
    idx = np.stack([base, base + 1], axis=-1)
    weight = np.stack([1.0 - frac, frac], axis=-1) * step[..., None]
    ok = (idx >= 0) & (idx < n_other) & (weight > 0)
    pixel = idx * w + t[:, None] if along_columns else t[:, None] * w + idx
    counts = ok.sum(axis=(1, 2))
    return counts, pixel[ok], weight[ok]


def ray_matrix(image_size, theta, offset) -> sp.csr_matrix:
    """The matrix of line integrals along arbitrary lines, by Joseph's method.

    Row ``i`` integrates the image along the line ``x cos θ_i + y sin θ_i =
    offset_i`` (pixel units, geometry as in the module docstring). Each ray
    steps one pixel at a time along the image axis it is most aligned with and
    interpolates linearly along the other; the weight of a step is its length,
    ``1 / max(|sin θ|, |cos θ|)``. Parallel-beam (:func:`joseph_matrix`) and
    fan-beam geometries are both this matrix for their own lines.

    Parameters
    ----------
    image_size : int or (H, W)
    theta, offset : array-like, ``(n_rays,)``
        Normal angle (radians) and signed distance from the image centre of
        each line; finite.

    Returns
    -------
    scipy.sparse.csr_matrix
        ``(n_rays, H * W)``, float64, canonical (sorted indices, no
        duplicates), int32 indices.

    Examples
    --------
    >>> from bayes_recon.operators.ct import ray_matrix
    >>> m = ray_matrix(4, [0.0], [0.5])     # the vertical line x = 0.5
    >>> m.toarray().reshape(4, 4)[:, 2]     # column 2 has x = 0.5: weight 1 per row
    array([1., 1., 1., 1.])
    """
    h, w = image_size_pair("image_size", image_size)
    if h * w >= 2**31:
        raise ValueError(f"image_size must have fewer than 2**31 pixels, got {(h, w)}")
    theta = np.asarray(theta, dtype=np.float64).reshape(-1)
    offset = np.asarray(offset, dtype=np.float64).reshape(-1)
    if theta.shape != offset.shape:
        raise ValueError(f"theta and offset must have the same length, got {theta.size} "
                         f"and {offset.size}")
    if not (np.isfinite(theta).all() and np.isfinite(offset).all()):
        raise ValueError("theta and offset must be finite")
    by_columns = np.abs(np.sin(theta)) >= np.abs(np.cos(theta))
    # Runs of consecutive rays with the same marching axis, then chunks.
    breaks = np.flatnonzero(np.diff(by_columns.astype(np.int8))) + 1
    counts, pixels, weights = [], [], []
    for run in np.split(np.arange(theta.size), breaks):
        if run.size == 0:
            continue
        along_columns = bool(by_columns[run[0]])
        steps = w if along_columns else h
        chunk = max(1, (1 << 18) // steps)  # ~2 MB arrays: stay in cache
        for start in range(0, run.size, chunk):
            part = run[start : start + chunk]
            n, p, v = _march((h, w), theta[part], offset[part], along_columns)
            counts.append(n)
            pixels.append(p)
            weights.append(v)
    indptr = np.zeros(theta.size + 1, dtype=np.int64)
    if counts:
        np.cumsum(np.concatenate(counts), out=indptr[1:])
    if indptr[-1] < 2**31:
        indptr = indptr.astype(np.int32)
    empty = np.zeros(0)
    mat = sp.csr_matrix(
        (np.concatenate(weights) if weights else empty,
         np.concatenate(pixels) if pixels else empty.astype(np.int32), indptr),
        shape=(theta.size, h * w),
    )
    # Each step touches a different pixel column (or row), so there are no
    # duplicates; only the order within a ray needs sorting.
    mat.sort_indices()
    return mat


def joseph_matrix(image_size, angles, n_detectors: int) -> sp.csr_matrix:
    """The parallel-beam ray-transform matrix ``(len(angles) * n_detectors, H * W)``.

    Row ``a * n_detectors + k`` is the ray at ``angles[a]`` (radians) and
    detector ``k``, the line ``x cos θ_a + y sin θ_a = s_k``; geometry as in the
    module docstring, weights by Joseph's method (:func:`ray_matrix`).
    Vectorised over angles, in chunks of consecutive angles that march the same
    way, written straight into CSR order (no COO conversion).

    Returns
    -------
    scipy.sparse.csr_matrix
        float64, canonical (sorted indices, no duplicates), int32 indices.
    """
    image_size_pair("image_size", image_size)
    check_int("n_detectors", n_detectors, minimum=1)
    angles = np.asarray(angles, dtype=np.float64).reshape(-1)
    s = np.arange(n_detectors) - (n_detectors - 1) / 2
    return ray_matrix(image_size, np.repeat(angles, n_detectors), np.tile(s, angles.size))


def ramp_filter(n_detectors: int, filter: str = "ramp") -> np.ndarray:
    """Frequency response of the FBP filter, length ``P`` (a power of two ``>= 2D``, ``>= 64``).

    The Ram-Lak filter is the DFT of its band-limited spatial samples
    (``h(0) = 1/4``, ``h(n) = -1/(π n)²`` at odd ``n``, 0 at even ``n``; unit
    detector spacing), applied with zero padding to ``P`` so that the circular
    convolution equals the linear one (Kak & Slaney, ch. 3.3). Sampling the
    spatial kernel rather than ``|ω|`` gets the DC gain right (no cupping).
    ``"hann"`` multiplies it by the Hann window ``(1 + cos 2πf) / 2``
    (``f`` in cycles per detector), which is 0 at the Nyquist frequency.

    Parameters
    ----------
    n_detectors : int
    filter : {"ramp", "hann"}

    Returns
    -------
    numpy.ndarray
        float64 ``(P,)``, in ``numpy.fft.fftfreq(P)`` order.
    """
    check_int("n_detectors", n_detectors, minimum=1)
    check_choice("filter", filter, FILTERS)
    size = max(64, 1 << int(math.ceil(math.log2(2 * n_detectors))))
    # Circular distance of each tap from 0; only odd distances are non-zero.
    n = np.minimum(np.arange(size), size - np.arange(size))
    kernel = np.zeros(size)
    kernel[0] = 0.25
    odd = n % 2 == 1
    kernel[odd] = -1.0 / (np.pi * n[odd]) ** 2
    response = np.real(np.fft.fft(kernel))
    if filter == "hann":
        response *= 0.5 + 0.5 * np.cos(2 * np.pi * np.fft.fftfreq(size))
    return response


def check_angles(n_angles, angles, full_range: float) -> np.ndarray:
    """Validated view angles (radians): explicit ``angles``, or ``n_angles`` equispaced in ``[0, full_range)``."""
    if n_angles is not None:
        check_int("n_angles", n_angles, minimum=1)
    if angles is None:
        if n_angles is None:
            raise ValueError("n_angles must be given when angles is None, got None")
        return np.arange(n_angles) * full_range / n_angles
    angles = np.array(angles, dtype=np.float64)
    if angles.ndim != 1 or angles.size < 1 or not np.isfinite(angles).all():
        raise ValueError(f"angles must be a non-empty finite 1-D array (radians), got {angles!r}")
    if n_angles is not None and n_angles != angles.size:
        raise ValueError(f"n_angles must equal len(angles)={angles.size}, got {n_angles}")
    return angles


class RayTransform(LinearOperator):
    """A ray transform stored as an explicit sparse matrix with its transpose.

    ``(B, C, H, W) -> (B, C, n_angles, n_detectors)``: row ``a * n_detectors + k``
    of ``matrix`` is the ray of view ``a`` and detector ``k``; channels are
    projected independently. The adjoint is the stored transpose. Subclasses
    (:class:`ParallelBeamCT`, :class:`~bayes_recon.operators.FanBeamCT`) build
    the matrix of their geometry.
    """

    def __init__(self, image_size, angles: np.ndarray, n_detectors: int, channels: int,
                 matrix: sp.spmatrix):
        h, w = image_size
        super().__init__((channels, h, w), (channels, angles.size, n_detectors))
        self.angles = angles
        self.n_angles = int(angles.size)
        self.n_detectors = n_detectors
        self.matrix = SparseMatrix(matrix)

    def _forward(self, x):
        b, c, h, w = x.shape
        out = self.matrix.matmul(x.reshape(b * c, h * w))
        return out.reshape(b, c, self.n_angles, self.n_detectors)

    def _adjoint(self, y):
        b, c = y.shape[:2]
        out = self.matrix.rmatmul(y.reshape(b * c, -1))
        return out.reshape(b, c, *self.domain_shape[1:])

    def gram_diagonal(self, dtype: torch.dtype = torch.float64, device=None,
                      chunk_size: int = 256) -> torch.Tensor:
        """``diag(A Aᵀ)`` ``(range_size,)`` from the stored matrix (squared row sums, per channel)."""
        device = self._buffer_device() if device is None else device
        rows = np.asarray(self.matrix.scipy.multiply(self.matrix.scipy).sum(axis=1)).ravel()
        return torch.as_tensor(np.tile(rows, self.domain_shape[0]), dtype=dtype, device=device)

    def _filter(self, y: torch.Tensor, filter: str, spacing: float = 1.0) -> torch.Tensor:
        """Each projection of ``y`` convolved with :func:`ramp_filter` (detector ``spacing``)."""
        response = torch.as_tensor(ramp_filter(self.n_detectors, filter), dtype=y.dtype,
                                   device=y.device)
        spectrum = torch.fft.fft(y, n=response.shape[0], dim=-1) * response
        filtered = torch.fft.ifft(spectrum, dim=-1).real[..., : self.n_detectors]
        return filtered if spacing == 1.0 else filtered / spacing

    def extra_repr(self):
        return f"n_angles={self.n_angles}, n_detectors={self.n_detectors}"


class ParallelBeamCT(RayTransform):
    """Parallel-beam ray transform, stored once as an explicit sparse matrix.

    ``(B, C, H, W) -> (B, C, n_angles, n_detectors)``. The matrix is built by
    Joseph's method (see :func:`joseph_matrix`; geometry in the module
    docstring) and its transpose is stored explicitly, so the adjoint is the
    exact transpose (``adjointness_error`` ~ 1e-16 in float64) and as fast as
    the forward. Both follow the device and dtype of their input.

    Parameters
    ----------
    image_size : int or (H, W)
    n_angles : int, optional
        Number of angles, equispaced in ``[0, π)``: ``θ_a = a π / n_angles``.
        May be omitted when ``angles`` is given; if both are given,
        ``n_angles`` must equal ``len(angles)``.
    n_detectors : int, optional
        Detector bins, 1 pixel wide, centred. Default ``ceil(sqrt(H² + W²))``:
        every pixel is seen at every angle, so the whole image is in the field
        of view and nothing outside an inscribed circle is lost
        (``skimage``'s ``circle=True`` uses ``N`` bins and sees only the
        inscribed disc).
    angles : array-like, optional
        Explicit angles in radians (any finite values, 1-D).
    channels : int
        Channels ``C``, each projected independently.

    Attributes
    ----------
    angles : numpy.ndarray
        The angles in radians, ``(n_angles,)``.
    matrix : SparseMatrix
        The ray-transform matrix ``(n_angles * n_detectors, H * W)``.

    Examples
    --------
    >>> import torch
    >>> from bayes_recon.operators import ParallelBeamCT, adjointness_error
    >>> op = ParallelBeamCT(32, n_angles=20)
    >>> op.range_shape
    (1, 20, 46)
    >>> adjointness_error(op) < 1e-12
    True
    >>> op(torch.ones(2, 1, 32, 32)).shape
    torch.Size([2, 1, 20, 46])
    """

    def __init__(self, image_size, n_angles: int | None = None, n_detectors: int | None = None,
                 angles=None, channels: int = 1):
        h, w = image_size_pair("image_size", image_size)
        check_int("channels", channels, minimum=1)
        angles = check_angles(n_angles, angles, full_range=math.pi)
        if n_detectors is None:
            n_detectors = int(math.ceil(math.hypot(h, w)))
        check_int("n_detectors", n_detectors, minimum=1)
        super().__init__((h, w), angles, n_detectors, channels,
                         joseph_matrix((h, w), angles, n_detectors))

    def fbp(self, y: torch.Tensor, filter: str = "ramp") -> torch.Tensor:
        """Filtered back-projection ``(π / n_angles) · Aᵀ (h ⋆ y)``.

        Each projection is convolved with the filter ``h`` (:func:`ramp_filter`)
        along the detectors, then back-projected with this operator's own exact
        adjoint; ``π / n_angles`` is the quadrature weight of ``∫_0^π dθ`` for
        angles equispaced over ``[0, π)``, so a full-angle sinogram of an image
        reconstructs that image. (For other angle sets the same weight is used;
        sparse or limited views give the usual streaks.)

        Parameters
        ----------
        y : torch.Tensor
            Sinogram ``(B, C, n_angles, n_detectors)``, real and finite.
        filter : {"ramp", "hann"}
            Ram-Lak ramp, or ramp times a Hann window (smoother, less noise).

        Returns
        -------
        torch.Tensor
            ``(B, C, H, W)`` on the device and in the dtype of ``y``;
            differentiable in ``y``.

        Examples
        --------
        >>> from bayes_recon.operators import ParallelBeamCT
        >>> from bayes_recon.data import shepp_logan
        >>> op = ParallelBeamCT(64, 90)
        >>> x = shepp_logan(64)
        >>> float((op.fbp(op(x)) - x).abs().mean()) < 0.05
        True
        """
        check_choice("filter", filter, FILTERS)
        check_tensor("y", y, shape=(None, *self.range_shape))
        return self._adjoint(self._filter(y, filter)) * (math.pi / self.n_angles)
