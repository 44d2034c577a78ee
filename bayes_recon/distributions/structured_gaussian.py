"""The structured Gaussian of SUPN: ``N(μ, (UᵀU)⁻¹)`` with a sparse stencil factor ``U``."""

from __future__ import annotations

import math

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints

from .._validation import check_int
from .stencil import (
    cholesky_matvec,
    cholesky_t_matvec,
    num_cross_channel,
    num_offdiag,
    num_spatial_offdiag,
)
from .triangular_solve import SOLVERS, dense_cholesky, solve_cholesky
from .variance import correlation_map, marginal_variance

__all__ = ["LOG_DIAG_BOUND", "soft_clip_log_diag", "StructuredGaussian"]

#: Default bound ``b`` of :func:`soft_clip_log_diag`: ``exp(±7)`` spans standard
#: deviations from about 1e-3 to 1e3, wide enough for images in [0, 1] while
#: keeping the log-likelihood bounded.
LOG_DIAG_BOUND = 7.0
_EVENT_DIMS = (-3, -2, -1)


def soft_clip_log_diag(log_diag: torch.Tensor, bound: float = LOG_DIAG_BOUND) -> torch.Tensor:
    """Smoothly bound raw log-diagonal values to ``(−bound, bound)``: ``b·tanh(x / b)``.

    Close to the identity for ``|x| ≪ b`` (slope 1 at 0) and smooth everywhere,
    so gradients never vanish abruptly as with a hard clamp. The decoder of a
    SUPN-VAE applies it to its raw output *before* building the distribution;
    :class:`StructuredGaussian` itself never alters the parameters it is given,
    so ``log_prob`` is exactly that of the stored ``log_diag``.

    Parameters
    ----------
    log_diag : torch.Tensor
        Any shape.
    bound : float
        ``b > 0``.

    Examples
    --------
    >>> import torch
    >>> soft_clip_log_diag(torch.tensor([0.0, 100.0]), bound=7.0)
    tensor([0., 7.])
    """
    if not bound > 0:
        raise ValueError(f"bound must be > 0, got {bound}")
    return bound * torch.tanh(log_diag / bound)


class StructuredGaussian(TorchDistribution):
    r"""Gaussian image distribution ``N(loc, Λ⁻¹)`` with ``Λ = UᵀU`` and ``U`` a sparse stencil factor.

    The SUPN parametrisation (Dorta et al., CVPR 2018). Event shape ``(C, H, W)``,
    any batch shape. Every operation costs O(N·K) for ``N = C·H·W`` pixels and
    ``K`` weights per pixel, except the dense helpers (small images only).

    **Orientation** (easy to get wrong, and the error is silent). Pixels are
    ordered row-major over ``(C, H, W)`` — index ``i = c·H·W + h·W + w``, i.e.
    ``x.flatten(-3)``. ``U`` is *upper* triangular in that order and the weights
    stored at pixel ``i`` form *row* ``i`` of ``U``::

        (U v)[c,h,w] = exp(log_diag[c,h,w]) v[c,h,w]
                     + Σ_k off_diag[c·F+k, h, w] · v[c, h+dy_k, w+dx_k]
                     + Σ_{c'>c} off_diag[C·F+p(c,c'), h, w] · v[c', h, w]

    with the ``F = ((2r+1)²−1)/2`` raster-forward offsets ``(dy_k, dx_k)`` of
    :func:`~bayes_recon.distributions.stencil.spatial_offsets` — first the rest
    of the centre row to the right, ``(0,1)…(0,r)``, then the rows below,
    ``dy = 1…r``, each for ``dx = −r…r`` — and ``p(c, c')`` the index of the
    channel pair in lexicographic order ``(0,1), (0,2), …, (1,2), …``.
    Neighbours outside the image are dropped. Hence
    ``log p(x) = −½‖U(x−μ)‖² + Σ log_diag − (N/2) log 2π`` and ``x = μ + U⁻¹u``
    with ``u ~ N(0, I)`` is a sample.

    Parameters
    ----------
    loc : torch.Tensor
        Mean, ``(*batch, C, H, W)``, floating point.
    log_diag : torch.Tensor
        Log of the diagonal of ``U``, same shape as ``loc``. Used as given; to
        bound it, pass it through :func:`soft_clip_log_diag` first.
    off_diag : torch.Tensor
        Off-diagonal weights of ``U``, ``(*batch, K, H, W)`` with
        ``K = C·F + C(C−1)/2`` (:func:`~bayes_recon.distributions.num_offdiag`):
        slot ``c·F + k`` holds channel ``c``'s weight on offset ``k``, slot
        ``C·F + p`` the same-pixel weight of channel pair ``p``. Also accepted:
        ``(*batch, C, F, H, W)``, per-channel spatial weights only — the
        cross-channel weights are then zero (independent channels) and the
        tensor is stored in the flat layout.
    radius : int
        Stencil radius ``r >= 0`` (0: a diagonal precision).
    validate_args : bool, optional
        As in :mod:`torch.distributions`; when on (the default), non-finite
        parameters and ``|log_diag|`` beyond ``½ log(finfo.max)`` (44 in float32)
        raise ``ValueError``, and samples passed to ``log_prob`` are checked.
        Shapes are always checked.
    solver : {"scipy", "dense"}
        Triangular solves for sampling: ``"scipy"`` (sparse, CPU, any size —
        results return to the device of ``loc``) or ``"dense"`` (torch, any
        device, at most :data:`DENSE_MAX_PIXELS` pixels).

    Examples
    --------
    >>> import torch
    >>> from bayes_recon.distributions import StructuredGaussian, num_offdiag
    >>> loc = torch.zeros(1, 8, 8)
    >>> d = StructuredGaussian(loc, torch.zeros(1, 8, 8), 0.1 * torch.ones(num_offdiag(2), 8, 8), radius=2)
    >>> x = d.rsample((16,))
    >>> x.shape, d.log_prob(x).shape
    (torch.Size([16, 1, 8, 8]), torch.Size([16]))
    """

    arg_constraints = {
        "loc": constraints.independent(constraints.real, 3),
        "log_diag": constraints.independent(constraints.real, 3),
        "off_diag": constraints.independent(constraints.real, 3),
    }
    support = constraints.independent(constraints.real, 3)
    has_rsample = True

    def __init__(self, loc, log_diag, off_diag, radius, validate_args=None, *, solver="scipy"):
        self.radius = check_int("radius", radius, minimum=0)
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {list(SOLVERS)}, got {solver!r}")
        self.solver = solver
        for name, t in (("loc", loc), ("log_diag", log_diag), ("off_diag", off_diag)):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
            if not t.is_floating_point():
                raise TypeError(f"{name} must be a real floating tensor, got dtype {t.dtype}")
        if loc.dim() < 3:
            raise ValueError(f"loc must have shape (*batch, C, H, W), got {tuple(loc.shape)}")
        if log_diag.shape != loc.shape:
            raise ValueError(
                f"log_diag must have the shape of loc {tuple(loc.shape)}, got {tuple(log_diag.shape)}"
            )
        for name, t in (("log_diag", log_diag), ("off_diag", off_diag)):
            if t.dtype != loc.dtype or t.device != loc.device:
                raise TypeError(
                    f"{name} must have loc's dtype and device ({loc.dtype}, {loc.device}), "
                    f"got ({t.dtype}, {t.device})"
                )
        self.loc, self.log_diag = loc, log_diag
        self.off_diag = self._flat_off_diag(off_diag)
        if validate_args if validate_args is not None else TorchDistribution._validate_args:
            for name, t in (("loc", loc), ("log_diag", log_diag), ("off_diag", off_diag)):
                if not bool(torch.isfinite(t).all()):
                    raise ValueError(f"{name} contains NaN or inf entries")
            # exp(2 l) enters the precision: beyond this bound it overflows the dtype.
            limit = 0.5 * math.log(torch.finfo(loc.dtype).max)
            max_abs = float(log_diag.detach().abs().max()) if log_diag.numel() else 0.0
            if max_abs > limit:
                raise ValueError(
                    f"log_diag must lie within ±{limit:.1f} for {loc.dtype} (exp(2*log_diag) "
                    f"overflows beyond), got max |log_diag| = {max_abs:.3g}; "
                    "bound it with soft_clip_log_diag"
                )
        super().__init__(loc.shape[:-3], loc.shape[-3:], validate_args=validate_args)

    def _flat_off_diag(self, off: torch.Tensor) -> torch.Tensor:
        batch, (c, h, w) = self.loc.shape[:-3], self.loc.shape[-3:]
        r, f, k = self.radius, num_spatial_offdiag(self.radius), num_offdiag(self.radius, c)
        expected = (*batch, k, h, w)
        if off.dim() == self.loc.dim() + 1 and off.shape[:-3] == (*batch, c) and off.shape[-2:] == (h, w):
            if off.shape[-3] != f:
                raise ValueError(
                    f"off_diag in the per-channel layout (*batch, C, F, H, W) must have F = "
                    f"((2r+1)^2-1)/2 = {f} for radius={r}, got F = {off.shape[-3]} "
                    f"(shape {tuple(off.shape)})"
                )
            flat = off.reshape(*batch, c * f, h, w)
            if c > 1:  # no cross-channel weights in this layout: independent channels
                flat = torch.cat([flat, off.new_zeros(*batch, num_cross_channel(c), h, w)], dim=-3)
            return flat
        if off.dim() != self.loc.dim() or off.shape[:-3] != batch or off.shape[-2:] != (h, w):
            raise ValueError(
                f"off_diag must have shape {expected} (batch and image size of loc, "
                f"K = C*F + C(C-1)/2 for radius={r}, C={c}), got {tuple(off.shape)}"
            )
        if off.shape[-3] != k:
            raise ValueError(
                f"off_diag has {off.shape[-3]} weights per pixel but radius={r} with C={c} "
                f"channels needs K = C*F + C(C-1)/2 = {c}*{f} + {num_cross_channel(c)} = {k}"
            )
        return off

    # ------------------------------------------------------------------ basics
    @property
    def num_pixels(self) -> int:
        """``N = C·H·W``, the event size."""
        return self.event_shape.numel()

    @property
    def mean(self) -> torch.Tensor:
        return self.loc

    @property
    def mode(self) -> torch.Tensor:
        return self.loc

    @property
    def variance(self) -> torch.Tensor:
        """Marginal variances, :meth:`marginal_variance` with its defaults."""
        return self.marginal_variance()

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(StructuredGaussian, _instance)
        batch_shape = torch.Size(batch_shape)
        new.radius, new.solver = self.radius, self.solver
        new.loc = self.loc.expand(batch_shape + self.event_shape)
        new.log_diag = self.log_diag.expand(batch_shape + self.event_shape)
        new.off_diag = self.off_diag.expand(batch_shape + self.off_diag.shape[-3:])
        super(StructuredGaussian, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def _check_image(self, name: str, v, exact_batch: bool = False) -> torch.Tensor:
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(v).__name__}")
        tail = (self.batch_shape + self.event_shape) if exact_batch else self.event_shape
        if v.dim() < len(tail) or v.shape[v.dim() - len(tail):] != tail:
            what = "*batch" if not exact_batch else ", ".join(map(str, self.batch_shape))
            raise ValueError(
                f"{name} must have shape (*sample, {what}{', ' if what else ''}"
                f"{', '.join(map(str, self.event_shape))}), got {tuple(v.shape)}"
            )
        return v

    # ------------------------------------------------------------ densities
    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``−½‖U(x−μ)‖² + Σ log_diag − (N/2) log 2π``; ``(*sample, *batch, C, H, W) → (*sample, *batch)``."""
        if self._validate_args:
            self._validate_sample(value)
        r = cholesky_matvec(value - self.loc, self.log_diag, self.off_diag, self.radius)
        quad = r.square().sum(_EVENT_DIMS)
        return -0.5 * quad + self.log_diag.sum(_EVENT_DIMS) - 0.5 * self.num_pixels * math.log(2 * math.pi)

    def log_det_precision(self) -> torch.Tensor:
        """``log|Λ| = 2 Σ log_diag``, shape ``batch_shape``."""
        return 2.0 * self.log_diag.sum(_EVENT_DIMS)

    def entropy(self) -> torch.Tensor:
        return 0.5 * self.num_pixels * (1.0 + math.log(2 * math.pi)) - self.log_diag.sum(_EVENT_DIMS)

    # -------------------------------------------------------------- sampling
    def transform_noise(self, u: torch.Tensor) -> torch.Tensor:
        """The reparameterisation ``x = μ + U⁻¹u``: white noise to a sample, differentiable.

        Parameters
        ----------
        u : torch.Tensor
            ``(*sample, *batch, C, H, W)`` (the batch dimensions exactly).
        """
        self._check_image("u", u, exact_batch=True)
        eps = solve_cholesky(u, self.log_diag, self.off_diag, self.radius, solver=self.solver)
        return self.loc + eps

    def whiten(self, x: torch.Tensor) -> torch.Tensor:
        """``U(x − μ)``, the inverse of :meth:`transform_noise` (white for samples)."""
        self._check_image("x", x)
        return cholesky_matvec(x - self.loc, self.log_diag, self.off_diag, self.radius)

    def rsample(self, sample_shape=torch.Size(), generator: torch.Generator | None = None):
        """Reparameterised samples ``(*sample_shape, *batch, C, H, W)``.

        All samples of one batch element are solved in one sparse triangular
        solve with many right-hand sides. ``generator`` (on ``loc``'s device)
        makes the draw reproducible; by default torch's global RNG is used.
        """
        shape = self._extended_shape(torch.Size(sample_shape))
        u = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device, generator=generator)
        return self.transform_noise(u)

    def sample(self, sample_shape=torch.Size(), generator: torch.Generator | None = None):
        """As :meth:`rsample`, without gradients."""
        with torch.no_grad():
            return self.rsample(sample_shape, generator=generator)

    # -------------------------------------------------------- linear algebra
    def cholesky_matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``U v``, ``(*sample, *batch, C, H, W)`` (batch dimensions broadcast)."""
        self._check_image("v", v)
        return cholesky_matvec(v, self.log_diag, self.off_diag, self.radius)

    def cholesky_t_matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``Uᵀ v``, shapes as :meth:`cholesky_matvec`."""
        self._check_image("v", v)
        return cholesky_t_matvec(v, self.log_diag, self.off_diag, self.radius)

    def precision_matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``Λ v = Uᵀ(U v)``, shapes as :meth:`cholesky_matvec`."""
        return self.cholesky_t_matvec(self.cholesky_matvec(v))

    def solve_precision(self, b: torch.Tensor) -> torch.Tensor:
        """``Λ⁻¹ b = U⁻¹(U⁻ᵀ b)`` by two sparse triangular solves, differentiable.

        Parameters
        ----------
        b : torch.Tensor
            ``(*sample, *batch, C, H, W)`` (the batch dimensions exactly).
        """
        self._check_image("b", b, exact_batch=True)
        args = (self.log_diag, self.off_diag, self.radius)
        y = solve_cholesky(b, *args, transpose=True, solver=self.solver)
        return solve_cholesky(y, *args, transpose=False, solver=self.solver)

    def to_dense_cholesky(self) -> torch.Tensor:
        """Dense ``U``, ``(*batch, N, N)`` (``N <= DENSE_MAX_PIXELS``, else ``ValueError``)."""
        return dense_cholesky(self.log_diag, self.off_diag, self.radius)

    def to_dense_precision(self) -> torch.Tensor:
        """Dense ``Λ = UᵀU``, ``(*batch, N, N)``, pixel order ``x.flatten(-3)``."""
        u = self.to_dense_cholesky()
        return u.mT @ u

    def to_dense_covariance(self) -> torch.Tensor:
        """Dense ``Λ⁻¹ = U⁻¹U⁻ᵀ``, ``(*batch, N, N)`` (small images only)."""
        u = self.to_dense_cholesky()
        eye = torch.eye(u.shape[-1], dtype=u.dtype, device=u.device)
        u_inv = torch.linalg.solve_triangular(u, eye.expand_as(u), upper=True)
        return u_inv @ u_inv.mT

    # --------------------------------------------------------- introspection
    def marginal_variance(self, num_samples: int | None = None, seed: int = 0) -> torch.Tensor:
        """Per-pixel variances ``diag(Λ⁻¹)``, ``(*batch, C, H, W)``.

        Exact (``Σ_ii = Σ_j (U⁻¹)_ij²`` by sparse solves against blocks of the
        identity) when ``num_samples`` is None and ``N <= DENSE_MAX_PIXELS``.
        Otherwise a Monte Carlo estimate ``mean((x − μ)²)`` from
        ``num_samples`` (default 1000) seeded samples; its relative standard
        error is ``sqrt(2 / num_samples)``. Not differentiable.
        """
        return marginal_variance(self, num_samples=num_samples, seed=seed)

    def correlation_map(self, pixel, num_samples: int | None = None, seed: int = 0) -> torch.Tensor:
        """Correlations of one pixel with every pixel, ``(*batch, C, H, W)``.

        Parameters
        ----------
        pixel : tuple of int
            ``(c, h, w)``, or ``(h, w)`` when ``C == 1``.
        num_samples, seed
            Passed to :meth:`marginal_variance` for the normalisation.

        Notes
        -----
        The covariance column ``Λ⁻¹ e_p`` is always exact (two triangular
        solves); it is divided by ``sqrt(Σ_pp Σ_jj)`` with the variances of
        :meth:`marginal_variance` — exact for small images, sample-based
        otherwise (then clamped to [−1, 1]). The entry at ``pixel`` is 1.
        """
        return correlation_map(self, pixel, num_samples=num_samples, seed=seed)

    def condition(self, observed_mask: torch.Tensor, values: torch.Tensor):
        """The conditional ``x_U | x_K = values_K``; see :class:`ConditionalStructuredGaussian`.

        Parameters
        ----------
        observed_mask : torch.Tensor
            Boolean, the event shape ``(C, H, W)`` (or ``(H, W)`` when ``C == 1``);
            True marks an observed pixel. The same mask for every batch element.
        values : torch.Tensor
            ``(*batch, C, H, W)``; read at the observed pixels only (other
            entries are ignored and may be NaN).
        """
        from .conditional import ConditionalStructuredGaussian

        return ConditionalStructuredGaussian(self, observed_mask, values)

    def __repr__(self) -> str:
        return (
            f"StructuredGaussian(batch_shape={tuple(self.batch_shape)}, "
            f"event_shape={tuple(self.event_shape)}, radius={self.radius}, "
            f"dtype={self.loc.dtype}, solver={self.solver!r})"
        )

