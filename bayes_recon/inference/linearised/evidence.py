"""Covariances of the linearised model: exact (distance-class pieces) and matrix-free.

Image-space prior covariance ``K = J Σ_θ Jᵀ`` (``N x N``) and observation
covariance ``K_yy = A K Aᵀ + σ_y² I`` (``m x m``; complex measurements are
stacked as ``[Re; Im]`` so everything is real).

* :class:`ExactKernel` computes, once, ``K_{b,δ} = J_b (I ⊗ M_δ) J_bᵀ`` and
  ``A K_{b,δ} Aᵀ`` for every group ``b`` and distance class ``δ`` (float64), so
  that ``K(φ) = Σ_{b,δ} σ_b² e^{-δ/ℓ_b} K_{b,δ}``: one evidence evaluation is a
  weighted sum and one Cholesky.
* :class:`DataKernelOperator` is ``A K Aᵀ`` as a ``linear_operator`` object from
  matrix-free ``J v`` / ``Jᵀ u`` products; :class:`NystromPreconditioner` (via
  :func:`nystrom_preconditioner`) preconditions ``K_yy`` for CG solves and stochastic
  Lanczos log-determinants.
"""

from __future__ import annotations

import torch
from linear_operator.operators import (
    AddedDiagLinearOperator,
    ConstantDiagLinearOperator,
    LinearOperator as LOBase,
    PsdSumLinearOperator,
    RootLinearOperator,
)
from tqdm.auto import tqdm

from ..._validation import check_choice
from ...operators.base import LinearOperator
from .jacobian import NetworkJacobian
from .weight_prior import MaternFilterPrior

__all__ = ["forward_rows", "adjoint_rows", "ExactKernel", "direct_image_kernel",
           "DataKernelOperator", "NystromPreconditioner", "PreconditionedAddedDiag",
           "nystrom_preconditioner"]


def forward_rows(op: LinearOperator, rows: torch.Tensor) -> torch.Tensor:
    """``A`` applied to each row: ``(k, N) -> (k, m)`` real (complex stacked ``[Re, Im]``)."""
    out = op._forward(rows.reshape(rows.shape[0], *op.domain_shape)).reshape(rows.shape[0], -1)
    return torch.cat([out.real, out.imag], 1) if op.complex_range else out


def adjoint_rows(op: LinearOperator, rows: torch.Tensor) -> torch.Tensor:
    """``Aᵀ`` applied to each row: ``(k, m) -> (k, N)`` (inverse stacking for complex)."""
    if op.complex_range:
        half = rows.shape[1] // 2
        rows = torch.complex(rows[:, :half], rows[:, half:])
    out = op._adjoint(rows.reshape(rows.shape[0], *op.range_shape))
    return out.reshape(rows.shape[0], -1)


def direct_image_kernel(jac: NetworkJacobian, prior: MaternFilterPrior, log_lengthscale,
                        log_variance) -> torch.Tensor:
    """``J Σ_θ Jᵀ`` computed directly from the dense Jacobian, float64 ``(N, N)``."""
    k = None
    for gi, g in enumerate(prior.groups):  # one group at a time: a float64 copy of all J is large
        jb = jac.block(g, torch.float64)                   # (N, F, k²)
        cov = prior.filter_covariance(gi, log_lengthscale, log_variance).to(jb)
        term = (jb @ cov).reshape(jac.num_pixels, -1) @ jb.reshape(jac.num_pixels, -1).T
        k = term if k is None else k + term
    return 0.5 * (k + k.T)


class ExactKernel:
    """Distance-class pieces of ``A K Aᵀ`` (float64), and ``K`` at given hyperparameters.

    ``A K_{b,δ} Aᵀ`` is built by the cheaper of two equal products: with fewer
    measurements than pixels (``m < N``) from ``B_b = A J_b`` as ``B_b (I ⊗ M_δ) B_bᵀ``
    (``m x m``, never an ``N x N`` piece); otherwise from the image piece ``K_{b,δ}``
    as ``A K_{b,δ} Aᵀ``, and the image pieces are kept. The evidence needs only the
    data pieces; ``K`` itself is needed at the fitted hyperparameters alone (posterior
    moments): a weighted sum of the image pieces, or on the data route formed directly
    as ``J Σ_θ Jᵀ`` when asked for and kept for the last hyperparameters.

    Parameters
    ----------
    jac : NetworkJacobian
        Dense (``jac.matrix`` set).
    prior : MaternFilterPrior
    op : LinearOperator
    route : {"auto", "data", "image"}
        How the data pieces are built; ``"auto"`` takes ``"data"`` when ``m < N``
        (per class it costs ~``m² P_b`` flops against ~``N² P_b``). The two agree to
        rounding; the choice is for benchmarks and tests.
    progress : bool

    Attributes
    ----------
    data_pieces : list of torch.Tensor
        Per group ``(D_b, m, m)``.
    image_pieces : list of torch.Tensor or None
        Per group ``(D_b, N, N)`` on the image route; None on the data route.
    route : str
        ``"data"`` (from ``A J_b``) or ``"image"`` (from ``K_{b,δ}``).
    """

    def __init__(self, jac: NetworkJacobian, prior: MaternFilterPrior, op: LinearOperator,
                 route: str = "auto", progress: bool = False):
        if jac.matrix is None:
            raise ValueError("ExactKernel needs a dense Jacobian (NetworkJacobian(dense=True))")
        check_choice("route", route, ("auto", "data", "image"))
        self.jac, self.prior = jac, prior
        n = jac.num_pixels
        if route == "auto":
            route = "data" if op.range_size < n else "image"
        self.route = route
        self._image_cache = None
        self.data_pieces, image_pieces = [], []
        total = sum(len(c[0]) for c in prior.classes)
        bar = tqdm(total=total, desc="kernel pieces", disable=not progress, leave=False)
        for gi, g in enumerate(prior.groups):
            jb = jac.block(g, torch.float64)                  # (N, F, k²)
            if self.route == "data":
                flat = forward_rows(op, jb.reshape(n, -1).T.contiguous()).T.contiguous()  # A J_b (m, F k²)
                jb = flat.reshape(flat.shape[0], g.num_filters, -1)
            else:
                flat = jb.reshape(n, -1)
            dat, img = [], []
            for mask in prior.classes[gi][1]:
                piece = (jb @ mask).reshape(flat.shape[0], -1) @ flat.T   # X_b (I ⊗ M_δ) X_bᵀ
                piece = 0.5 * (piece + piece.T)
                if self.route == "image":
                    img.append(piece)
                    ka = forward_rows(op, piece)              # rows of K A^T  (K symmetric)
                    piece = forward_rows(op, ka.T.contiguous())
                    piece = 0.5 * (piece + piece.T)
                dat.append(piece)
                bar.update(1)
            self.data_pieces.append(torch.stack(dat))
            if img:
                image_pieces.append(torch.stack(img))
            del jb, flat
        bar.close()
        self.image_pieces = image_pieces if self.route == "image" else None

    def image_kernel(self, log_lengthscale, log_variance) -> torch.Tensor:
        """``K = J Σ_θ Jᵀ`` ``(N, N)`` float64 (kept for the last hyperparameters asked for)."""
        if self.image_pieces is not None:
            return self._combine(self.image_pieces, log_lengthscale, log_variance)
        key = (log_lengthscale.detach().cpu().tolist(), log_variance.detach().cpu().tolist())
        grad = torch.is_grad_enabled() and (log_lengthscale.requires_grad or log_variance.requires_grad)
        if self._image_cache is not None and self._image_cache[0] == key and not grad:
            return self._image_cache[1]
        k = direct_image_kernel(self.jac, self.prior, log_lengthscale, log_variance)
        if not grad:
            self._image_cache = (key, k)
        return k

    def data_kernel(self, log_lengthscale, log_variance) -> torch.Tensor:
        """``A K Aᵀ`` ``(m, m)`` (without the noise)."""
        return self._combine(self.data_pieces, log_lengthscale, log_variance)

    def _combine(self, pieces, log_lengthscale, log_variance) -> torch.Tensor:
        total = None
        for gi, p in enumerate(pieces):
            w = self.prior.class_weights(gi, log_lengthscale, log_variance).to(p)
            term = torch.einsum("d,dij->ij", w, p)
            total = term if total is None else total + term
        return total


class DataKernelOperator(LOBase):
    """``A J Σ_θ(φ) Jᵀ Aᵀ`` as a matrix-free ``linear_operator`` (float64, ``(m, m)``).

    Differentiable in ``log_lengthscale`` and ``log_variance``: the bilinear
    derivative ``∂(uᵀ K v)/∂φ`` is ``∂((JᵀAᵀu)ᵀ Σ(φ) (JᵀAᵀv))/∂φ``, which needs
    only reverse-mode products.
    """

    def __init__(self, log_lengthscale, log_variance, *, jac, prior, op, size):
        super().__init__(log_lengthscale, log_variance, jac=jac, prior=prior, op=op, size=size)
        # linear_operator rebuilds the operator from these same two tensors (its representation).
        self.log_lengthscale, self.log_variance = log_lengthscale, log_variance
        self.jac, self.prior, self.op, self.m = jac, prior, op, size

    def _weights_space(self, rows: torch.Tensor) -> torch.Tensor:
        return self.jac.vjp(adjoint_rows(self.op, rows.to(self.jac.dtype))).to(torch.float64)

    def _matmul(self, rhs: torch.Tensor) -> torch.Tensor:
        vec = rhs.dim() == 1
        rows = rhs.reshape(self.m, -1).T
        with torch.no_grad():
            g = self._weights_space(rows)
            s = self.prior.apply(g, self.log_lengthscale.detach(), self.log_variance.detach())
            x = self.jac.jvp(s.to(self.jac.dtype)).to(torch.float64)
            out = forward_rows(self.op, x).T.to(rhs.dtype)
        return out.reshape(-1) if vec else out

    def _size(self):
        return torch.Size([self.m, self.m])

    def _transpose_nonbatch(self):
        return self

    def _bilinear_derivative(self, left_vecs, right_vecs):
        with torch.no_grad():
            gl = self._weights_space(left_vecs.reshape(self.m, -1).T)
            gr = self._weights_space(right_vecs.reshape(self.m, -1).T)
        args = (self.log_lengthscale, self.log_variance)
        need = [a for a in args if a.requires_grad]
        if not need:
            return (None,) * len(args)
        with torch.enable_grad():
            loss = (gl * self.prior.apply(gr, *args)).sum()
            grads = iter(torch.autograd.grad(loss, need, allow_unused=True))
        return tuple(next(grads) if a.requires_grad else None for a in args)


class NystromPreconditioner:
    """Randomised Nyström preconditioner ``P = U Λ Uᵀ + σ² I`` of ``K + σ² I`` (``K`` PSD).

    ``K ≈ U Λ Uᵀ`` from ``rank`` products with a seeded Gaussian sketch
    (Frangella, Tropp & Udell 2023); exact (up to a ``1e-12`` relative shift)
    when ``rank >= rank(K)``, in particular when ``rank >= size``. ``P⁻¹`` is
    applied by Woodbury and ``log|P|`` is exact.

    Parameters
    ----------
    matmul : callable
        ``V (size, k) -> K V (size, k)``, float64.
    size : int
        ``m``.
    rank : int
        Sketch size (clipped to ``size``).
    noise_variance : torch.Tensor or float
        ``σ² > 0`` (taken as a constant: no gradient flows through ``P``).
    seed : int
    device : torch.device, optional
        Device of the sketch (that of ``noise_variance`` by default).

    Attributes
    ----------
    basis : torch.Tensor
        ``U (size, r)``, orthonormal columns.
    eigenvalues : torch.Tensor
        ``Λ (r,)``, non-negative.
    logdet : torch.Tensor
        ``log|P|``, 0-d.
    """

    def __init__(self, matmul, size: int, rank: int, noise_variance, seed: int = 0, device=None):
        noise = torch.as_tensor(noise_variance, dtype=torch.float64).detach().reshape(())
        device = noise.device if device is None else device
        self.size, self.noise = int(size), noise.to(device)
        r = min(int(rank), self.size)
        gen = torch.Generator(device=device).manual_seed(seed)
        omega = torch.randn(self.size, r, generator=gen, dtype=torch.float64, device=device)
        omega, _ = torch.linalg.qr(omega)
        with torch.no_grad():
            y = matmul(omega).to(torch.float64)
            # Shift so the core matrix is positive definite in floating point; removed again below.
            shift = 1e-12 * max(float(y.norm()), 1e-300)
            y = y + shift * omega
            c = torch.linalg.cholesky(0.5 * (omega.T @ y + y.T @ omega))
            b = torch.linalg.solve_triangular(c, y.T, upper=False).T
            u, s, _ = torch.linalg.svd(b, full_matrices=False)
            lam = (s.pow(2) - shift).clamp_min(0.0)
        self.basis, self.eigenvalues = u, lam
        self._frac = lam / (lam + self.noise)
        self.logdet = torch.log(lam + self.noise).sum() + (self.size - r) * torch.log(self.noise)

    def solve(self, rhs: torch.Tensor) -> torch.Tensor:
        """``P⁻¹ R`` for ``R (size, k)`` (or ``(size,)``)."""
        u = self.basis
        if rhs.dim() == 1:
            return self.solve(rhs[:, None])[:, 0]
        return (rhs - u @ (self._frac[:, None] * (u.T @ rhs))) / self.noise

    def operator(self) -> LOBase:
        """``P`` as a ``linear_operator`` (for drawing the preconditioned probes)."""
        return PsdSumLinearOperator(RootLinearOperator(self.basis * self.eigenvalues.sqrt()),
                                    ConstantDiagLinearOperator(self.noise.reshape(1), diag_shape=self.size))


class PreconditionedAddedDiag(AddedDiagLinearOperator):
    """``K + D`` that keeps its ``preconditioner_override`` through ``evaluate_kernel``.

    ``AddedDiagLinearOperator.evaluate_kernel`` rebuilds the sum with ``+`` and so
    drops the override (``MultivariateNormal.log_prob`` calls it); ``K`` here is
    already an operator with nothing to evaluate, so the sum is returned as is.
    """

    def evaluate_kernel(self):
        return self


def nystrom_preconditioner(kernel: LOBase, noise_variance, rank: int, seed: int = 0):
    """A ``preconditioner_override`` for ``AddedDiagLinearOperator(kernel, σ² I)``.

    Builds a :class:`NystromPreconditioner` of ``kernel`` with the given noise
    when linear_operator asks for it. Returns ``override(added) -> (solve, P, log|P|)``.
    """

    def override(_added):
        pre = NystromPreconditioner(kernel.matmul, kernel.shape[-1], rank, noise_variance, seed)
        return pre.solve, pre.operator(), pre.logdet

    return override
