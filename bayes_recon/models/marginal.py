"""The collapsed likelihood ``log p(y | z)`` of the program ``z → x → y``, ``x`` marginalised.

The linear algebra behind :func:`bayes_recon.models.collapsed_model`, the SUPN
posterior samplers of :mod:`bayes_recon.inference` and the MAP estimators.

For a fixed latent ``z`` the prior ``x | z ~ N(μ, Λ⁻¹)`` (``Λ = UᵀU``) is
Gaussian and ``y = A x + N(0, σ² I)`` is linear, so

    p(y | z) = N(y; A μ, A Λ⁻¹ Aᵀ + σ² I).

The ``m × m`` covariance is never formed. With ``P = Λ + AᵀA/σ²`` (the
posterior precision, ``N × N``), ``r = y − Aμ`` and ``b = Aᵀr/σ²``:

    log|AΛ⁻¹Aᵀ + σ²I| = log|P| − log|Λ| + m log σ²          (matrix determinant lemma)
    rᵀ(AΛ⁻¹Aᵀ + σ²I)⁻¹ r = ‖r‖²/σ² − bᵀ P⁻¹ b               (Woodbury)

``log|Λ| = 2 Σ log_diag`` is exact. ``log|P|`` and ``bᵀP⁻¹b`` come either
from a dense float64 Cholesky of ``P`` (``method="dense"``, small images) or
from GPyTorch's ``linear_operator`` — stochastic Lanczos quadrature for the
log-determinant and CG for the solve — on the matrix-free operator
:class:`PosteriorPrecisionOperator` (``method="slq"``). Both are
differentiable in ``z`` (and in σ).

Complex measurements (MRI) count as ``m = 2·(complex entries)`` real numbers,
each with noise ``σ``, matching the program.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import linear_operator
import torch
from linear_operator import settings as lo_settings
from linear_operator.operators import LinearOperator as LOBase

from .._validation import check_choice, check_int, check_positive
from ..distributions.stencil import (
    cholesky_matvec,
    cholesky_t_matvec,
    cross_channel_pairs,
    num_spatial_offdiag,
    spatial_offsets,
)
from .preconditioned import PrecisionReference, preconditioned_terms
from .program import check_reconstruction_inputs
from ..operators import LinearOperator

__all__ = [
    "EVIDENCE_METHODS",
    "DENSE_MAX_PIXELS",
    "SLQConfig",
    "PosteriorPrecisionOperator",
    "NotPositiveDefiniteError",
    "collapsed_log_likelihood",
    "marginal_log_likelihood",
    "collapsed_log_posterior",
    "latent_log_prior",
    "choose_evidence_method",
    "decode64",
    "gram_matrix",
    "dense_precision",
    "dense_posterior_cholesky",
    "dense_log_likelihood_and_factor",
    "as_float64",
]

EVIDENCE_METHODS = ("auto", "dense", "slq")
#: The one "dense up to N" threshold: ``method="auto"`` factorises ``P`` densely for
#: every evaluation up to this many pixels (32×32), and so does the ``x | z, y``
#: solver ``"auto"``; beyond, evaluations are matrix-free (SLQ, preconditioned by one
#: dense reference factor in :func:`~bayes_recon.inference.sample_posterior`) and
#: the dense factor is formed once per kept draw only (its exactness check).
DENSE_MAX_PIXELS = 1024


class NotPositiveDefiniteError(FloatingPointError):
    """The posterior precision ``P = Λ + AᵀA/σ²`` failed its Cholesky factorisation."""


@dataclass
class SLQConfig:
    """Settings of the stochastic Lanczos quadrature path (``method="slq"``).

    Attributes
    ----------
    num_probes : int
        Gaussian probe vectors of the Hutchinson trace estimate of ``log|P|``;
        its standard deviation is at most ``sqrt(2/num_probes)·‖log P‖_F``.
    lanczos_iterations : int
        Size of the Lanczos tridiagonal matrix per probe.
    cg_tolerance : float
        Relative residual of the CG solves (mean over right-hand sides).
    max_cg_iterations : int
    seed : int
        Seeds the probes: the estimate is a deterministic, smooth function of
        ``z`` (what HMC needs), and the same seed gives the same number.
    preconditioner : PrecisionReference, optional
        A dense factor of ``P`` at a reference latent
        (:class:`~bayes_recon.models.preconditioned.PrecisionReference`): the
        log-determinant becomes ``log|P̂| + tr(E)`` (exact) plus a probe
        estimate of ``tr(log M − E)`` for the whitened ``M = L̂⁻¹PL̂⁻ᵀ = I + E``,
        and the solve is CG preconditioned by ``P̂``
        (:mod:`bayes_recon.models.preconditioned`). Then ``lanczos_iterations``
        is the step budget of each solve, run until ``cg_tolerance``, and
        ``num_probes`` must be at least 2.
    quadratic_probes : int
        With a ``preconditioner``: probes of a separate estimate of
        ``½tr(E²)`` (one product with ``M`` each), so that Lanczos estimates
        only the third-order rest ``tr(log M − E + ½E²)``; 0 for the
        first-order split alone. Ignored without a preconditioner.
    solve_dtype : {"float64", "float32"}
        With a ``preconditioner``: precision of the triangular solves with its
        factor. Those solves are memory-bound reads of the ``N × N`` factor
        and most of a gradient's time; float32 takes a quarter to a third off
        a gradient at 64², and the value moves
        by far less than the probes' own error (64² CT and MRI, 4 + 64 probes:
        log-determinant to 1e-5 nats, ``bᵀP⁻¹b`` to 1e-4 of ~10⁶, against a
        standard deviation of 0.03–0.7; gradient 1e-5 relative). Everything
        else stays float64. Ignored without a preconditioner.
    """

    num_probes: int = 16
    quadratic_probes: int = 0
    lanczos_iterations: int = 60
    cg_tolerance: float = 1e-6
    max_cg_iterations: int = 1000
    seed: int = 0
    preconditioner: PrecisionReference | None = None
    solve_dtype: str = "float64"

    def __post_init__(self):
        if not isinstance(self.solve_dtype, str):
            raise TypeError(f"solve_dtype must be a str ('float64' or 'float32'), got {type(self.solve_dtype).__name__}")
        if self.solve_dtype not in ("float64", "float32"):
            raise ValueError(f"solve_dtype must be 'float64' or 'float32', got {self.solve_dtype!r}")
        if self.preconditioner is not None and not isinstance(self.preconditioner, PrecisionReference):
            raise TypeError(f"preconditioner must be a PrecisionReference or None, "
                            f"got {type(self.preconditioner).__name__}")
        check_int("num_probes", self.num_probes, minimum=2 if self.preconditioner is not None else 1)
        check_int("lanczos_iterations", self.lanczos_iterations, minimum=2)
        check_positive("cg_tolerance", self.cg_tolerance)
        check_int("max_cg_iterations", self.max_cg_iterations, minimum=self.lanczos_iterations)
        check_int("seed", self.seed, minimum=0)
        check_int("quadratic_probes", self.quadratic_probes, minimum=0)
        if self.quadratic_probes == 1:
            raise ValueError("quadratic_probes must be 0 or >= 2 (for its variance), got 1")


# ---------------------------------------------------------------- helpers
_GRAM: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def decode64(prior, z: torch.Tensor):
    """``prior.decode(z)`` with its parameters cast to float64 (graph kept).

    The network runs in the prior's own dtype (float32 for the shipped priors:
    three times faster than float64 on CPU); all linear algebra downstream is
    float64. For a float64 network end to end, pass ``prior.double()``.

    Returns
    -------
    StructuredGaussian
        Batch shape ``(B,)``, float64.
    """
    dtype = next(prior.parameters()).dtype
    d = prior.decode(z.to(dtype))
    return as_float64(d)


def as_float64(dist, detach: bool = False):
    """``dist`` (a :class:`~bayes_recon.distributions.StructuredGaussian`) with float64 parameters.

    Keeps the autograd graph unless ``detach``.
    """
    def cast(t):
        return (t.detach() if detach else t).to(torch.float64)

    return type(dist)(cast(dist.loc), cast(dist.log_diag), cast(dist.off_diag), dist.radius,
                      validate_args=False)


def gram_matrix(op: LinearOperator, dtype=torch.float64, device=None) -> torch.Tensor:
    """Dense ``AᵀA`` as ``(N, N)`` in pixel order ``x.flatten(-3)`` (cached per operator)."""
    device = torch.device("cpu") if device is None else torch.device(device)
    cache = _GRAM.setdefault(op, {})
    key = (dtype, device)
    if key not in cache:
        n = op.domain_size
        cols = []
        for start in range(0, n, 512):  # columns A^T A e_i in blocks, to bound memory
            idx = torch.arange(start, min(n, start + 512), device=device)
            e = torch.zeros(idx.numel(), n, dtype=dtype, device=device)
            e[torch.arange(idx.numel(), device=device), idx] = 1.0
            cols.append(op.normal(e.reshape(-1, *op.domain_shape)).reshape(idx.numel(), n))
        g = torch.cat(cols)
        cache[key] = 0.5 * (g + g.T)  # symmetric up to round-off; make it exactly so
    return cache[key]


def choose_evidence_method(method: str, num_pixels: int) -> str:
    """Resolve ``"auto"``: dense up to :data:`DENSE_MAX_PIXELS` pixels, SLQ beyond."""
    check_choice("method", method, EVIDENCE_METHODS)
    if method == "auto":
        return "dense" if num_pixels <= DENSE_MAX_PIXELS else "slq"
    return method


def _noise_precision(noise_std, batch: int, ref: torch.Tensor) -> torch.Tensor:
    """``1/σ²`` as a float64 ``(B,)`` tensor (keeps the graph of a tensor σ)."""
    if isinstance(noise_std, torch.Tensor):
        s = noise_std.to(dtype=torch.float64, device=ref.device).reshape(-1)
        if s.numel() == 1:
            s = s.expand(batch)
        if s.numel() != batch:
            raise ValueError(f"noise_std must be a scalar or have shape ({batch},), got {tuple(noise_std.shape)}")
        return s.pow(-2)
    return torch.full((batch,), float(noise_std) ** -2, dtype=torch.float64, device=ref.device)


# --------------------------------------------------- matrix-free operator
class PosteriorPrecisionOperator(LOBase):
    """``P = UᵀU + s·AᵀA`` as a GPyTorch ``linear_operator`` (matrix-free, batched).

    Its ``_args`` are the differentiable prior parameters ``log_diag``
    ``(B, C, H, W)``, ``off_diag`` ``(B, K, H, W)`` and the noise precision
    ``s = 1/σ²`` ``(B,)``, so ``linear_operator``'s SLQ/CG backward passes
    reach the decoder (and σ). Shape ``(B, N, N)``, pixel order ``x.flatten(-3)``.
    """

    def __init__(self, log_diag, off_diag, noise_precision, *, radius: int, op: LinearOperator):
        super().__init__(log_diag, off_diag, noise_precision, radius=radius, op=op)
        self.log_diag, self.off_diag, self.noise_precision = log_diag, off_diag, noise_precision
        self.radius, self.op = radius, op

    def _size(self) -> torch.Size:
        n = self.log_diag.shape[-3:].numel()
        return torch.Size((*self.log_diag.shape[:-3], n, n))

    def _transpose_nonbatch(self):
        return self

    def _matmul(self, rhs: torch.Tensor) -> torch.Tensor:
        batch, event = self.log_diag.shape[:-3], self.log_diag.shape[-3:]
        n, k = event.numel(), rhs.shape[-1]
        rhs = rhs.expand(*batch, n, k)
        v = rhs.movedim(-1, 0).reshape(k, *batch, *event)  # (k, *batch, C, H, W)
        lam = cholesky_t_matvec(cholesky_matvec(v, self.log_diag, self.off_diag, self.radius),
                                self.log_diag, self.off_diag, self.radius)
        data = self.op.normal(v.reshape(-1, *event)).reshape(v.shape)
        s = self.noise_precision.reshape(*batch, 1, 1, 1)
        out = lam + s * data
        return out.reshape(k, *batch, n).movedim(0, -1)


# ---------------------------------------------------------------- public
def _residual_terms(dist, y, op, noise_precision):
    """``‖r‖²`` (B,), ``b = s·Aᵀr`` (B, N) for ``r = y − Aμ``, in float64."""
    y64 = y.to(torch.complex128 if y.is_complex() else torch.float64)
    r = y64 - op(dist.loc)
    rr = (r.abs().square() if r.is_complex() else r.square()).flatten(1).sum(1)
    b = op.adjoint(r).flatten(1) * noise_precision[:, None]
    return rr, b


def _cholesky_p(lam, op, noise_precision):
    g = gram_matrix(op, torch.float64, lam.device)
    chol, info = torch.linalg.cholesky_ex(lam + noise_precision[:, None, None] * g)
    if bool((info > 0).any()):
        raise NotPositiveDefiniteError(
            "Cholesky of the posterior precision P = Λ + AᵀA/σ² failed "
            f"(leading minor {int(info.max())} not positive); the prior precision is degenerate"
        )
    return chol


def dense_precision(w: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Dense ``Λ = Σ_i u_i u_iᵀ`` ``(B, N, N)`` from factor rows ``w`` ``(B, N, R)``, ``idx`` ``(N, R)``.

    Scatters the ``N·R²`` products of each row's weights (no ``N × N`` factor
    product: 64²: 0.1 s instead of 3.5 s for ``UᵀU``).
    """
    batch, n = w.shape[0], idx.shape[0]
    rows = idx[:, :, None].expand(-1, -1, idx.shape[1])
    cols = idx[:, None, :].expand(-1, idx.shape[1], -1)
    bidx = torch.arange(batch, device=w.device)[:, None, None, None]
    lam = torch.zeros(batch, n, n, dtype=w.dtype, device=w.device)
    return lam.index_put_((bidx, rows, cols), w[..., :, None] * w[..., None, :], accumulate=True)


def dense_posterior_cholesky(w: torch.Tensor, idx: torch.Tensor, op, noise_precision: torch.Tensor):
    """Lower Cholesky factor ``(B, N, N)`` of ``P = Λ + s·AᵀA`` (the one factorisation of ``P``).

    ``w`` ``(B, N, R)`` and ``idx`` ``(N, R)`` are the factor rows of
    :func:`_factor_rows`, ``noise_precision`` ``s`` is ``(B,)``. Used by the
    dense evidence, :class:`~bayes_recon.models.preconditioned.PrecisionReference`
    and :class:`~bayes_recon.models.exact_conditional.GaussianImagePosterior`.

    Raises
    ------
    NotPositiveDefiniteError
    """
    return _cholesky_p(dense_precision(w, idx), op, noise_precision)


def _dense_terms_autograd(dist, op, noise_precision, b):
    """``log|P|``, ``bᵀP⁻¹b`` by autograd through the dense ``Λ`` and Cholesky (twice differentiable)."""
    idx, w = _factor_rows(dist)
    chol = _cholesky_p(dense_precision(w, idx), op, noise_precision)
    logdet_p = 2.0 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    v = torch.linalg.solve_triangular(chol, b.unsqueeze(-1), upper=False).squeeze(-1)
    return logdet_p, v.square().sum(-1)


def _factor_rows(dist):
    """Row ``i`` of ``U`` as ``(column index, weight)`` pairs: ``idx`` ``(N, R)``, ``w`` ``(B, N, R)``.

    ``R = 1 + F + P`` slots per row (diagonal, spatial offsets, cross-channel
    pairs; module docstring of :mod:`bayes_recon.distributions.stencil`).
    Slots outside the image or of another channel's pair get weight 0 (and a
    clamped, harmless index). ``w`` keeps the autograd graph of the factor.
    """
    ld, off, r = dist.log_diag, dist.off_diag, dist.radius
    c, h, w = ld.shape[-3:]
    kw = {"device": ld.device}
    cc, hh, ww = torch.meshgrid(torch.arange(c, **kw), torch.arange(h, **kw), torch.arange(w, **kw),
                                indexing="ij")
    cols, valid, weights = [cc * h * w + hh * w + ww], [torch.ones_like(cc, dtype=torch.bool)], [ld.exp()]
    if r > 0:
        f = num_spatial_offdiag(r)  # slots c·F + k spatial, then the cross-channel pairs
        spatial, cross = off[..., : c * f, :, :].unflatten(-3, (c, f)), off[..., c * f:, :, :]
        for k, (dy, dx) in enumerate(spatial_offsets(r)):
            h2, w2 = hh + dy, ww + dx
            valid.append((h2 < h) & (w2 >= 0) & (w2 < w))
            cols.append(cc * h * w + h2.clamp(max=h - 1) * w + w2.clamp(0, w - 1))
            weights.append(spatial[..., :, k, :, :])
    else:
        cross = off
    for p, (first, second) in enumerate(cross_channel_pairs(c)):
        valid.append(cc == first)
        cols.append(second * h * w + hh * w + ww)
        weights.append(cross[..., p:p + 1, :, :].expand_as(ld))
    n = c * h * w
    idx = torch.stack(cols, -1).reshape(n, -1)
    mask = torch.stack(valid, -1).reshape(n, -1)
    wts = torch.stack(weights, -1).reshape(*ld.shape[:-3], n, -1) * mask
    return idx, wts


class _DenseTerms(torch.autograd.Function):
    """``(log|P|, bᵀP⁻¹b)`` from the factor rows ``w``, ``s = 1/σ²`` and ``b``; adjoint backward.

    ``d log|P| = tr(P⁻¹ dΛ) + tr(P⁻¹AᵀA) ds`` with ``tr(P⁻¹ dΛ) = 2 Σ_i u_iᵀ P⁻¹ du_i``
    (``P⁻¹`` gathered on the stencil) and ``tr(P⁻¹AᵀA) = (N − tr(P⁻¹Λ))/s``;
    ``d(bᵀP⁻¹b) = 2vᵀdb − 2(Uv)ᵀ dU v − vᵀAᵀAv ds`` (``v = P⁻¹b``). Once
    differentiable: a backward pass with ``create_graph=True`` raises instead
    of returning a silently wrong second derivative (use ``exact_hessian=True``).
    """

    @staticmethod
    def forward(ctx, w, noise_precision, b, idx, op):
        chol = dense_posterior_cholesky(w, idx, op, noise_precision)
        v = torch.cholesky_solve(b.unsqueeze(-1), chol).squeeze(-1)
        ctx.save_for_backward(w, noise_precision, v, chol, idx)
        ctx.op = op
        return 2.0 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1), (b * v).sum(-1)

    @staticmethod
    def backward(ctx, g_logdet, g_quad):
        if torch.is_grad_enabled():  # create_graph=True: a second derivative was asked for
            raise RuntimeError("the dense collapsed likelihood's adjoint gradient is once differentiable; "
                               "for second derivatives (Hessians) pass exact_hessian=True")
        w, s, v, chol, idx = ctx.saved_tensors
        n = v.shape[-1]
        rows = idx[:, :, None].expand(-1, -1, idx.shape[1])
        cols = idx[:, None, :].expand(-1, idx.shape[1], -1)
        bidx = torch.arange(v.shape[0], device=v.device)[:, None, None, None]
        q_w = torch.einsum("bnrs,bns->bnr", torch.cholesky_inverse(chol)[bidx, rows, cols], w)
        v_idx = v[:, idx]  # (B, N, R)
        uv = (w * v_idx).sum(-1, keepdim=True)
        grad_w = 2.0 * g_logdet[:, None, None] * q_w - 2.0 * g_quad[:, None, None] * uv * v_idx
        tr_lam = (w * q_w).sum((-2, -1))
        v_gram_v = ((v @ gram_matrix(ctx.op, torch.float64, v.device)) * v).sum(-1)
        grad_s = g_logdet * (n - tr_lam) / s - g_quad * v_gram_v
        return grad_w, grad_s, 2.0 * g_quad[:, None] * v, None, None


def _dense_terms(dist, op, noise_precision, b):
    """``log|P|`` and ``bᵀP⁻¹b`` by a dense float64 Cholesky, with the adjoint gradient of
    :class:`_DenseTerms` (autograd through a dense ``Λ = UᵀU`` and the Cholesky costs
    several times more at 28²)."""
    idx, w = _factor_rows(dist)
    return _DenseTerms.apply(w, noise_precision, b, idx, op)


def _slq_terms(dist, op, noise_precision, b, slq: SLQConfig):
    if slq.preconditioner is not None:
        if slq.preconditioner.op is not op:
            raise ValueError("slq.preconditioner was built for another operator")
        idx, w = _factor_rows(dist)
        est = preconditioned_terms(w, idx, noise_precision, b, slq.preconditioner, slq)
        return est.log_det, est.inv_quad
    pop = PosteriorPrecisionOperator(dist.log_diag, dist.off_diag, noise_precision,
                                     radius=dist.radius, op=op)
    with torch.random.fork_rng(devices=[] if b.device.type == "cpu" else [b.device]), \
            lo_settings.max_cholesky_size(0), \
            lo_settings.num_trace_samples(slq.num_probes), \
            lo_settings.max_lanczos_quadrature_iterations(slq.lanczos_iterations), \
            lo_settings.max_cg_iterations(slq.max_cg_iterations), \
            lo_settings.cg_tolerance(slq.cg_tolerance), \
            lo_settings.terminate_cg_by_size(False):
        torch.manual_seed(slq.seed)
        inv_quad, logdet = linear_operator.inv_quad_logdet(pop, inv_quad_rhs=b.unsqueeze(-1), logdet=True)
    return logdet, inv_quad


def collapsed_log_likelihood(z: torch.Tensor, y: torch.Tensor, op: LinearOperator, prior,
                             noise_std, method: str = "auto", slq: SLQConfig | None = None,
                             exact_hessian: bool = False) -> torch.Tensor:
    """``log p(y | z) = log N(y; A μ(z), A Λ(z)⁻¹ Aᵀ + σ² I)``, ``x`` marginalised exactly.

    Parameters
    ----------
    z : torch.Tensor
        ``(B, latent_dim)``, one latent per measurement.
    y : torch.Tensor
        ``(B, *op.range_shape)``, real or complex as the operator.
    op : LinearOperator
    prior : SUPNVAE
        Any prior whose ``decode`` returns a :class:`StructuredGaussian`;
        decoded by its own network, then cast to float64.
    noise_std : float or torch.Tensor
        σ > 0; a tensor (scalar or ``(B,)``) keeps its autograd graph (type-II
        estimation of σ).
    method : {"auto", "dense", "slq"}
        ``"dense"``: exact float64 Cholesky of the ``N × N`` matrix ``P``;
        ``"slq"``: stochastic Lanczos quadrature + CG via ``linear_operator``;
        ``"auto"``: dense up to :data:`DENSE_MAX_PIXELS` pixels.
    slq : SLQConfig, optional
    exact_hessian : bool
        Dense path only: autograd through the dense ``Λ`` and its Cholesky,
        so second derivatives are right too (6× slower at 28²). By default the
        dense gradient is a hand-derived adjoint, exact to first order only.

    Returns
    -------
    torch.Tensor
        ``(B,)`` float64, differentiable in ``z`` (and a tensor ``noise_std``).

    Examples
    --------
    >>> import torch
    >>> from bayes_recon.models.supn_vae import SUPNVAE
    >>> from bayes_recon.operators import Identity
    >>> vae = SUPNVAE(image_size=6, latent_dim=2, widths=(4,), radius=1)
    >>> y = torch.zeros(1, 1, 6, 6)
    >>> collapsed_log_likelihood(torch.zeros(1, 2), y, Identity((1, 6, 6)), vae, 0.1).shape
    torch.Size([1])
    """
    sigma_value = float(noise_std.detach().reshape(-1)[0]) if isinstance(noise_std, torch.Tensor) else noise_std
    check_reconstruction_inputs(y, op, prior, sigma_value)
    if not isinstance(z, torch.Tensor) or z.dim() != 2 or z.shape[0] != y.shape[0]:
        got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise ValueError(f"z must have shape ({y.shape[0]}, latent_dim) to match y, got {got}")
    return marginal_log_likelihood(decode64(prior, z), y, op, noise_std, method, slq, exact_hessian)


def marginal_log_likelihood(dist, y: torch.Tensor, op: LinearOperator, noise_std,
                            method: str = "auto", slq: SLQConfig | None = None,
                            exact_hessian: bool = False) -> torch.Tensor:
    """``log N(y; A μ, A Λ⁻¹ Aᵀ + σ² I)`` for a decoded image Gaussian ``dist`` ``N(μ, Λ⁻¹)``.

    The likelihood of :func:`collapsed_log_likelihood` for any
    :class:`~bayes_recon.distributions.StructuredGaussian` with batch shape
    ``(B,)`` (e.g. a hierarchical VAE's decoder output), float64,
    differentiable in its parameters. Arguments as there.
    """
    if tuple(dist.batch_shape) != (y.shape[0],):
        raise ValueError(f"dist must have batch shape ({y.shape[0]},) to match y, "
                         f"got {tuple(dist.batch_shape)}")
    if dist.loc.dtype != torch.float64:
        dist = as_float64(dist)
    method = choose_evidence_method(method, op.domain_size)
    slq = SLQConfig() if slq is None else slq
    s = _noise_precision(noise_std, y.shape[0], dist.loc)
    rr, b = _residual_terms(dist, y, op, s)
    if method == "dense":
        terms = _dense_terms_autograd if exact_hessian else _dense_terms
        logdet_p, quad_b = terms(dist, op, s, b)
    else:
        logdet_p, quad_b = _slq_terms(dist, op, s, b, slq)
    return _gaussian_log_likelihood(dist, op, s, rr, logdet_p, quad_b)


def _gaussian_log_likelihood(dist, op, s, rr, logdet_p, quad_b):
    """``log N(y; Aμ, AΛ⁻¹Aᵀ + σ²I)`` from ``‖r‖²``, ``log|P|`` and ``bᵀP⁻¹b`` (lemma + Woodbury)."""
    m = op.range_size
    # log|Σ_y| = log|P| − log|Λ| + m log σ² and log σ² = −log s.
    log_det_cov = logdet_p - dist.log_det_precision() - m * s.log()
    quad = rr * s - quad_b
    return -0.5 * (quad + log_det_cov + m * math.log(2 * math.pi))


def dense_log_likelihood_and_factor(dist, y: torch.Tensor, op: LinearOperator, noise_std: float):
    """The exact ``log N(y; Aμ, AΛ⁻¹Aᵀ + σ²I)`` ``(B,)`` and the Cholesky factor of ``P`` ``(B, N, N)``.

    No gradient: the exactness check of a matrix-free evidence, whose factor
    then also draws ``x | z, y``
    (:class:`~bayes_recon.models.exact_conditional.GaussianImagePosterior`'s
    ``cholesky=``). ``dist`` has batch shape ``(B,)`` matching ``y``.
    """
    with torch.no_grad():
        dist = as_float64(dist, detach=True)
        s = _noise_precision(noise_std, y.shape[0], dist.loc)
        rr, b = _residual_terms(dist, y, op, s)
        idx, w = _factor_rows(dist)
        chol = dense_posterior_cholesky(w, idx, op, s)
        logdet_p = 2.0 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        quad_b = (b * torch.cholesky_solve(b.unsqueeze(-1), chol).squeeze(-1)).sum(-1)
        return _gaussian_log_likelihood(dist, op, s, rr, logdet_p, quad_b), chol


def latent_log_prior(z: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``log N(z; 0, temperature² I)``, ``(B, d) → (B,)`` in float64."""
    z64 = z.to(torch.float64)
    d = z64.shape[-1]
    return (-0.5 * (z64 / temperature).square().sum(-1) - d * math.log(temperature)
            - 0.5 * d * math.log(2 * math.pi))


def collapsed_log_posterior(z: torch.Tensor, y: torch.Tensor, op: LinearOperator, prior,
                            noise_std, temperature: float = 1.0, method: str = "auto",
                            slq: SLQConfig | None = None, exact_hessian: bool = False) -> torch.Tensor:
    """Unnormalised ``log p(z | y) = log p(y | z) + log N(z; 0, T² I)``, ``(B,)`` float64.

    Arguments as in :func:`collapsed_log_likelihood`; ``temperature`` ``T > 0``
    scales the latent prior as in the program.
    """
    temperature = check_positive("temperature", temperature)
    return (collapsed_log_likelihood(z, y, op, prior, noise_std, method, slq, exact_hessian)
            + latent_log_prior(z, temperature))
