"""Fan-beam CT with a flat detector, as an explicit sparse matrix, with weighted FBP.

Geometry (all lengths in pixels; pixel centres as in :mod:`.ct`): the source
circles the image centre at distance ``R = source_distance``; at view angle
``β`` it sits at ``S = R (sin β, -cos β)``, the central ray points along
``d = (-sin β, cos β)``, and the flat detector is perpendicular to it at
distance ``D = detector_distance`` beyond the centre, its axis
``e = (cos β, sin β)``. Detector ``k`` is at ``u_k = (k - (N-1)/2) · spacing``
along ``e``. So at ``β = 0`` the source is below the image, rays go up the
columns and the detector index grows left to right, as in
:class:`~bayes_recon.operators.ParallelBeamCT` at angle 0.

The ray of view ``β`` and detector ``u`` makes the fan angle
``γ = atan(u / (R + D))`` with the central ray and is the line
``x cos(β - γ) + y sin(β - γ) = R sin γ``: a parallel-beam line with its own
normal angle and offset, so the matrix is built by the same Joseph marcher
(:func:`~bayes_recon.operators.ct.ray_matrix`). Each line integral runs over the
whole image (the source must lie outside its circumscribed circle; the
detector only labels the rays, as a virtual detector would). As ``R → ∞`` with
``spacing = (R + D) / R`` the rays tend to the parallel-beam ones at ``θ = β``,
``s = u / spacing``.

Scans: ``"full"`` takes ``n_angles`` views equispaced in ``[0, 2π)``; ``"short"``
the minimal ``[0, π + 2δ)`` with ``δ`` the half fan angle of the detector,
each line measured once or twice, and Parker weights in the FBP.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import torch

from .._validation import check_choice, check_int, check_positive, check_tensor, image_size_pair
from .ct import FILTERS, RayTransform, check_angles, ray_matrix
from .sparse import SparseMatrix

SCANS = ("full", "short")


def parker_weights(beta, gamma, delta: float) -> np.ndarray:
    """Parker's short-scan weights ``w(β, γ)`` in this module's geometry.

    The line of ``(β, γ)`` is measured again at ``(β + π - 2γ, -γ)``; over
    ``β ∈ [0, π + 2δ]`` the weights of the two measurements of every line sum
    to 1 and are smooth (sin² ramps), which lets a short scan be reconstructed
    like half a full scan (Parker 1982, with ``γ`` mirrored for this module's
    sign of the fan angle).

    Parameters
    ----------
    beta : array-like
        View angles relative to the first view of the scan, radians.
    gamma : array-like
        Fan angles, ``|γ| <= delta``; broadcast against ``beta``.
    delta : float
        Half fan angle, ``0 < delta < π / 2``.

    Returns
    -------
    numpy.ndarray
        Weights in ``[0, 1]``, the broadcast shape of ``beta`` and ``gamma``.

    Examples
    --------
    >>> import numpy as np
    >>> from bayes_recon.operators.fanbeam import parker_weights
    >>> w = parker_weights(0.3, 0.05, 0.2)                  # a line and ...
    >>> w2 = parker_weights(0.3 + np.pi - 0.1, -0.05, 0.2)  # ... its second measurement
    >>> round(float(w + w2), 12)
    1.0
    """
    beta, gamma = np.broadcast_arrays(np.asarray(beta, dtype=np.float64),
                                      np.asarray(gamma, dtype=np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        rise = np.sin(np.pi / 4 * beta / (delta + gamma)) ** 2
        fall = np.sin(np.pi / 4 * (np.pi + 2 * delta - beta) / (delta - gamma)) ** 2
    out = np.ones(beta.shape)
    start = beta < 2 * delta + 2 * gamma
    end = beta > np.pi + 2 * gamma
    out = np.where(start, rise, out)
    out = np.where(end, fall, out)
    out = np.where((beta < 0) | (beta > np.pi + 2 * delta), 0.0, out)
    return np.nan_to_num(out, nan=0.0)


class FanBeamCT(RayTransform):
    """Fan-beam ray transform (flat detector), stored once as an explicit sparse matrix.

    ``(B, C, H, W) -> (B, C, n_angles, n_detectors)``; geometry in the module
    docstring. Same machinery as :class:`~bayes_recon.operators.ParallelBeamCT`:
    Joseph's method for each ray, the transpose stored explicitly, so the
    adjoint is exact (``adjointness_error`` ~ 1e-16 in float64), and both follow
    the device and dtype of their input.

    Parameters
    ----------
    image_size : int or (H, W)
    n_angles : int or None
        Number of views, equispaced over the scan (``[0, 2π)`` full,
        ``[0, π + 2δ)`` short). May be None when ``angles`` is given.
    source_distance : float
        Source to rotation centre, pixels; must exceed ``hypot(H, W) / 2`` (the
        source outside the image's circumscribed circle).
    detector_distance : float
        Rotation centre to detector, pixels, > 0.
    n_detectors : int, optional
        Default: enough to see the whole circumscribed circle at every view.
    detector_spacing : float, optional
        Detector pitch on the detector, pixels. Default ``(R + D) / R``: one
        pixel at the rotation centre.
    scan : {"full", "short"}
    angles : array-like, optional
        Explicit view angles (radians); ``scan`` then only chooses the FBP
        weighting (``"short"``: the views are taken to start a short scan at
        ``angles[0]`` with spacing ``(π + 2δ) / n_angles``).
    channels : int

    Attributes
    ----------
    angles : numpy.ndarray
        ``(n_angles,)``, radians.
    fan_angle : float
        ``2δ``, the full fan angle of the detector (radians, detector centres).
    matrix : SparseMatrix
        ``(n_angles * n_detectors, H * W)``.

    Examples
    --------
    >>> import torch
    >>> from bayes_recon.operators import FanBeamCT, adjointness_error
    >>> op = FanBeamCT(32, 60, source_distance=64, detector_distance=32)
    >>> op.range_shape
    (1, 60, 49)
    >>> adjointness_error(op) < 1e-12
    True
    >>> op(torch.ones(2, 1, 32, 32)).shape
    torch.Size([2, 1, 60, 49])
    """

    def __init__(self, image_size, n_angles: int | None, source_distance: float,
                 detector_distance: float, n_detectors: int | None = None,
                 detector_spacing: float | None = None, scan: str = "full", angles=None,
                 channels: int = 1):
        h, w = image_size_pair("image_size", image_size)
        check_int("channels", channels, minimum=1)
        check_choice("scan", scan, SCANS)
        r = check_positive("source_distance", source_distance)
        dist = check_positive("detector_distance", detector_distance)
        radius = math.hypot(h, w) / 2
        if r <= radius:
            raise ValueError(
                f"source_distance must exceed the radius of the image's circumscribed circle, "
                f"hypot(H, W) / 2 = {radius:.4g} pixels for image_size {(h, w)} (otherwise the "
                f"source is inside the reconstruction circle), got {r}")
        spacing = (r + dist) / r if detector_spacing is None else check_positive(
            "detector_spacing", detector_spacing)
        if n_detectors is None:
            # Half-width on the detector of the circumscribed circle's shadow.
            half = (r + dist) * math.tan(math.asin(radius / r))
            n_detectors = int(math.ceil(2 * half / spacing))
        check_int("n_detectors", n_detectors, minimum=1)
        u = (np.arange(n_detectors) - (n_detectors - 1) / 2) * spacing
        self.gammas = np.arctan(u / (r + dist))
        half_fan = float(np.abs(self.gammas).max())
        span = 2 * math.pi if scan == "full" else math.pi + 2 * half_fan
        angles = check_angles(n_angles, angles, full_range=span)
        theta = (angles[:, None] - self.gammas[None, :]).reshape(-1)
        offset = np.broadcast_to(r * np.sin(self.gammas), (angles.size, n_detectors))
        super().__init__((h, w), angles, n_detectors, channels,
                         ray_matrix((h, w), theta, offset.reshape(-1)))
        self.source_distance = r
        self.detector_distance = dist
        self.detector_spacing = spacing
        self.scan = scan
        self.fan_angle = 2 * half_fan
        self._span = span
        self._fbp_matrix: SparseMatrix | None = None

    # --------------------------------------------------------------- FBP
    def fbp(self, y: torch.Tensor, filter: str = "ramp") -> torch.Tensor:
        """Weighted filtered back-projection for the flat detector.

        With the detector scaled to a virtual one through the rotation centre
        (coordinate ``p = u R / (R + D)``, pitch ``a``): each projection is
        multiplied by ``R / sqrt(R² + p²)`` (cosine pre-weighting) and, for a
        short scan, by twice its Parker weight (:func:`parker_weights`);
        convolved with the ramp filter of pitch ``a`` (:func:`ramp_filter`
        scaled by ``1 / a``), halved; and back-projected pixel by pixel with
        linear interpolation on the detector and the distance weight
        ``R² / L²`` (``L``: distance from the source to the pixel along the
        central ray), summed with the quadrature weight ``Δβ`` of the scan
        (Kak & Slaney, ch. 3.4.2). The back-projection is not this operator's
        adjoint (the distance weight differs per view and pixel); it is a
        sparse matrix of its own, built on the first call and kept.

        Parameters
        ----------
        y : torch.Tensor
            Sinogram ``(B, C, n_angles, n_detectors)``, real and finite.
        filter : {"ramp", "hann"}

        Returns
        -------
        torch.Tensor
            ``(B, C, H, W)`` on the device and in the dtype of ``y``;
            differentiable in ``y``.

        Examples
        --------
        >>> from bayes_recon.operators import FanBeamCT
        >>> from bayes_recon.data import shepp_logan
        >>> op = FanBeamCT(64, 180, source_distance=100, detector_distance=60)
        >>> x = shepp_logan(64)
        >>> float((op.fbp(op(x)) - x).abs().mean()) < 0.05
        True
        """
        check_choice("filter", filter, FILTERS)
        check_tensor("y", y, shape=(None, *self.range_shape))
        r = self.source_distance
        pitch = self.detector_spacing * r / (r + self.detector_distance)
        weight = np.broadcast_to(np.cos(self.gammas), (self.n_angles, self.n_detectors)) / 2
        if self.scan == "short":
            weight = weight * 2 * parker_weights(self.angles[:, None] - self.angles[0],
                                                 self.gammas[None, :], self.fan_angle / 2)
        weight = torch.as_tensor(np.ascontiguousarray(weight), dtype=y.dtype, device=y.device)
        filtered = self._filter(y * weight, filter, spacing=pitch)
        b, c = y.shape[:2]
        out = self._backprojector().matmul(filtered.reshape(b * c, -1))
        return out.reshape(b, c, *self.domain_shape[1:])

    def _backprojector(self) -> SparseMatrix:
        """The weighted back-projection as a sparse ``(H W, A N)`` matrix (built once).

        Entry ``(pixel, a N + k)``: the linear-interpolation weight of detector
        ``k`` at the pixel's virtual-detector position in view ``a``, times
        ``(R / L)²`` and the quadrature weight ``Δβ``. Two entries per pixel
        and view; a position beyond the outer detectors fades linearly to 0.
        """
        if self._fbp_matrix is None:
            _, h, w = self.domain_shape
            r, n = self.source_distance, self.n_detectors
            pitch = self.detector_spacing * r / (r + self.detector_distance)
            ys, xs = np.meshgrid((h - 1) / 2 - np.arange(h), np.arange(w) - (w - 1) / 2,
                                 indexing="ij")
            xs, ys = xs.reshape(-1, 1), ys.reshape(-1, 1)
            sin, cos = np.sin(self.angles), np.cos(self.angles)
            view = np.arange(self.n_angles)[:, None] * n
            counts, cols, vals = [], [], []
            chunk = max(1, (1 << 19) // self.n_angles)
            # Pixel by pixel, view by view, left then right detector: CSR order as built.
            for start in range(0, h * w, chunk):
                x, y = xs[start:start + chunk], ys[start:start + chunk]
                along = r - x * sin + y * cos                       # L, (pixels, views)
                pos = r * (x * cos + y * sin) / along / pitch + (n - 1) / 2
                left = np.floor(pos)
                frac = pos - left
                weight = (r / along) ** 2 * (self._span / self.n_angles)
                det = np.stack([left, left + 1], axis=-1)
                share = np.stack([1 - frac, frac], axis=-1) * weight[..., None]
                ok = (det >= 0) & (det < n) & (share > 0)
                counts.append(ok.sum(axis=(1, 2)))
                cols.append((view + det.astype(np.int64))[ok])
                vals.append(share[ok])
            indptr = np.zeros(h * w + 1, dtype=np.int64)
            np.cumsum(np.concatenate(counts), out=indptr[1:])
            matrix = sp.csr_matrix((np.concatenate(vals), np.concatenate(cols), indptr),
                                   shape=(h * w, self.n_angles * n))
            self._fbp_matrix = SparseMatrix(matrix)
        return self._fbp_matrix

    def extra_repr(self):
        return (f"n_angles={self.n_angles}, n_detectors={self.n_detectors}, "
                f"source_distance={self.source_distance:g}, "
                f"detector_distance={self.detector_distance:g}, "
                f"detector_spacing={self.detector_spacing:g}, scan={self.scan!r}")
