"""The linearised model on the leading range of the Jacobian: the ``subspace`` path for large images.

The image prior covariance ``K = J Σ_θ Jᵀ`` of a DIP has a fast-decaying spectrum
(measured for the default U-Net: a rank-1024 basis leaves 5e-5 of the prior
variance at 64², 7e-4 with rank 512). A randomised range finder (Halko, Martinsson &
Tropp 2011) on prior draws ``J Σ₀^{1/2} ε`` (``r`` forward-mode products) gives an
orthonormal ``Q (N, r)``; ``r`` reverse-mode products give ``W = Qᵀ J (r, P)``, and
``J ≈ Q W``. In the coordinates ``u = Qᵀ (x - x*)`` the linearised model is a dense
linear model with ``r`` "pixels", Jacobian ``W`` and forward model ``A Q = U H``
(thin SVD; ``U (m, k)`` orthonormal, ``k = min(m, r)``). The component
``(I - U Uᵀ)(y - A x*)`` of the data is then pure noise, so for both expansions

    ``log p(y) = log p_k(Uᵀ (y - A x*)) - ½ ‖(I - U Uᵀ)(y - A x*)‖² / σ² - ½ (m - k) log 2πσ²``

and the exact path's machinery (distance-class pieces, Cholesky, exact draws) runs
on ``r x r`` matrices; draws are lifted as ``x = x* + Q u``. With ``r >= N`` the
basis spans the whole image space and the path equals the exact one.

The fraction of prior variance the basis misses is estimated with fresh draws and
recorded; above ``config.subspace_tolerance`` it warns
:class:`SubspaceTruncationWarning` (raise ``config.subspace_rank``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ...operators.simple import MatrixOperator
from .evidence import forward_rows
from .jacobian import NetworkJacobian
from .weight_prior import MaternFilterPrior

__all__ = ["SubspaceTruncationWarning", "ProjectedJacobian", "JacobianSubspace", "jacobian_subspace"]


class SubspaceTruncationWarning(RuntimeWarning):
    """The subspace basis misses more of the prior variance than ``config.subspace_tolerance``."""


class ProjectedJacobian(NetworkJacobian):
    """``W = Qᵀ J`` ``(r, P)`` with the dense interface of :class:`NetworkJacobian` (``r`` "pixels").

    Parameters
    ----------
    matrix : torch.Tensor
        ``(r, P)`` in the network dtype, already including any column scale of ``full``.
    full : NetworkJacobian
        The matrix-free Jacobian it was projected from (weights, groups, column scale).
    """

    def __init__(self, matrix: torch.Tensor, full: NetworkJacobian):
        # No network evaluation: every product goes through the dense ``matrix``.
        self.network, self.groups, self.input = None, full.groups, full.input
        self.chunk_size = full.chunk_size
        self.theta, self.dtype = full.theta, full.dtype
        self.matrix = matrix
        self.num_pixels, self.num_params = matrix.shape[0], full.num_params
        self.output = torch.zeros(self.num_pixels, dtype=full.dtype, device=full.theta.device)  # x* ↦ u = 0
        self.column_scale = full.column_scale        # already inside ``matrix``
        self._vjp_fn = None

    def __call__(self, theta):
        raise TypeError("a ProjectedJacobian has no network to evaluate; use the full NetworkJacobian")


@dataclass
class JacobianSubspace:
    """The basis and the reduced problem of the ``subspace`` path.

    Attributes
    ----------
    basis : torch.Tensor
        ``Q (N, r)`` float64, orthonormal columns.
    jacobian : ProjectedJacobian
        ``W = Qᵀ J (r, P)``.
    operator : MatrixOperator
        ``H (k, r)`` on ``(1, 1, r)`` images: ``A Q = U H``.
    data_basis : torch.Tensor
        ``U (m, k)`` float64.
    reduced_data : torch.Tensor
        ``Uᵀ (y - A x*)`` ``(k,)`` float64.
    outside_sq : float
        ``‖(I - U Uᵀ)(y - A x*)‖²``.
    outside_count : int
        ``m - k``.
    image_mean : torch.Tensor
        ``x*`` ``(N,)`` float64 (the lift's origin).
    missed_fraction : float
        Estimated fraction of the prior variance ``tr K`` outside ``span Q`` (fresh draws).
    rank : int
    """

    basis: torch.Tensor
    jacobian: ProjectedJacobian
    operator: MatrixOperator
    data_basis: torch.Tensor
    reduced_data: torch.Tensor
    outside_sq: float
    outside_count: int
    image_mean: torch.Tensor
    missed_fraction: float
    rank: int

    def lift(self, u: torch.Tensor) -> torch.Tensor:
        """Images ``x* + Q u`` ``(s, N)`` from subspace rows ``u (s, r)`` (float64)."""
        return self.image_mean[None] + u.to(self.basis) @ self.basis.T

    def lift_covariance(self, cov: torch.Tensor) -> torch.Tensor:
        """``Q C Qᵀ`` ``(N, N)`` for a subspace covariance ``C (r, r)``."""
        q = self.basis
        out = q @ cov.to(q) @ q.T
        return 0.5 * (out + out.T)


def jacobian_subspace(jac: NetworkJacobian, prior: MaternFilterPrior, op, y_rows: torch.Tensor,
                      log_lengthscale: torch.Tensor, log_variance: torch.Tensor, rank: int, *,
                      power_iterations: int = 0, test_probes: int = 16, tolerance: float = 1e-3,
                      seed: int = 0, progress: bool = False) -> JacobianSubspace:
    """Randomised range finder for ``J Σ₀^{1/2}`` and the reduced problem (see the module docstring).

    Parameters
    ----------
    jac : NetworkJacobian
        Matrix-free (or dense) Jacobian, column scale already set if any.
    prior : MaternFilterPrior
    op : LinearOperator
    y_rows : torch.Tensor
        ``(1, m)`` float64 data (complex stacked as ``[Re, Im]``).
    log_lengthscale, log_variance : torch.Tensor
        ``Σ₀``: the prior the sketch draws from (the initial hyperparameters).
    rank : int
        ``r`` (clipped to ``N``).
    power_iterations : int
        Subspace iterations with ``J Σ₀ Jᵀ`` (each costs ``2 r`` more products).
    test_probes : int
        Fresh prior draws for :attr:`JacobianSubspace.missed_fraction`.
    tolerance : float
        Warn :class:`SubspaceTruncationWarning` above this missed fraction.
    seed : int
        Seeds a generator on the data's device.
    progress : bool

    Returns
    -------
    JacobianSubspace
    """
    f64, dev = torch.float64, jac.theta.device
    n = jac.num_pixels
    r = min(int(rank), n)
    gen = torch.Generator(device=dev).manual_seed(seed)
    batch = jac.chunk_size
    total = r + test_probes + 2 * r * power_iterations + r
    bar = tqdm(total=total, desc="Jacobian subspace", disable=not progress, leave=False)

    def batched(rows: torch.Tensor, fn) -> torch.Tensor:
        out = []
        for start in range(0, rows.shape[0], batch):
            out.append(fn(rows[start:start + batch]))
            bar.update(out[-1].shape[0])
        return torch.cat(out) if out else rows.new_zeros(0, n)

    def prior_draws(k: int) -> torch.Tensor:
        """``(k, N)`` draws ``J Σ₀^{1/2} ε``, made a batch at a time (``ε`` never all in memory)."""
        out = []
        for start in range(0, k, batch):
            eps = torch.randn(min(batch, k - start), jac.num_params, generator=gen, dtype=f64, device=dev)
            tang = prior.apply_sqrt(eps, log_lengthscale, log_variance).to(jac.dtype)
            out.append(jac.jvp(tang).to(f64))
            bar.update(out[-1].shape[0])
        return torch.cat(out)

    with torch.no_grad():
        q = torch.linalg.qr(prior_draws(r).T).Q                               # (N, r)
        for _ in range(power_iterations):
            g = batched(q.T.contiguous(), lambda c: jac.vjp(c.to(jac.dtype)).to(f64))
            s = prior.apply(g, log_lengthscale, log_variance)
            q = torch.linalg.qr(batched(s, lambda c: jac.jvp(c.to(jac.dtype)).to(f64)).T).Q
        w = batched(q.T.contiguous(), lambda c: jac.vjp(c.to(jac.dtype)))        # (r, P) = Qᵀ J
        missed = 0.0
        if test_probes > 0:
            t = prior_draws(test_probes)
            outside = t - (t @ q) @ q.T
            missed = float(outside.pow(2).sum() / t.pow(2).sum().clamp_min(1e-300))
        bar.close()
        aq = forward_rows(op, q.T.contiguous()).T                                # (m, r) = A Q
        u, s, vh = torch.linalg.svd(aq, full_matrices=False)                   # k = min(m, r)
        h = s[:, None] * vh                                                    # (k, r)
        x_star = jac.output.detach().to(f64).reshape(-1)
        resid = y_rows.reshape(-1).to(f64) - forward_rows(op, x_star[None]).reshape(-1)
        reduced = u.T @ resid
        outside_sq = float((resid - u @ reduced).pow(2).sum())
    if missed > tolerance:
        warnings.warn(f"the rank-{r} Jacobian subspace misses an estimated {missed:.3g} of the prior "
                      f"variance (> config.subspace_tolerance = {tolerance:g}); raise config.subspace_rank",
                      SubspaceTruncationWarning, stacklevel=4)   # the LinearisedLaplace(...) call
    return JacobianSubspace(basis=q, jacobian=ProjectedJacobian(w, jac), operator=MatrixOperator(h, (1, 1, r)),
                            data_basis=u, reduced_data=reduced, outside_sq=outside_sq,
                            outside_count=int(resid.numel() - u.shape[1]), image_mean=x_star,
                            missed_fraction=missed, rank=r)
