"""Exact samples of ``x | z, y``: a Gaussian with precision ``P = Λ(z) + AᵀA/σ²``.

For a fixed latent the SUPN prior ``N(μ, (UᵀU)⁻¹)`` and the linear model
``y = A x + N(0, σ² I)`` give

    x | z, y ~ N(P⁻¹(Λμ + Aᵀy/σ²), P⁻¹),      P = UᵀU + AᵀA/σ².

Samples are exact by perturbation–optimisation (Papandreou & Yuille 2010;
Orieux et al. 2012): with ``w₁ ~ N(0, I_N)`` and ``w₂ ~ N(0, I_m)``,

    x = P⁻¹(Uᵀ(Uμ + w₁) + Aᵀ(y + σ w₂)/σ²)

has mean ``P⁻¹(Λμ + Aᵀy/σ²)`` and covariance ``P⁻¹(UᵀU + AᵀA/σ²)P⁻¹ = P⁻¹``.
The solve is a dense float64 Cholesky (small images) or Jacobi-preconditioned
CG (matrix-free, any size; a residual short of ``tol`` warns with
:class:`~bayes_recon.operators.CGConvergenceWarning` and sets ``converged``
to False; the iterations and residual of every solve are kept in
``cg_iterations`` / ``cg_residuals``). For
:class:`~bayes_recon.operators.Inpainting`, ``solver="condition"`` uses
:meth:`StructuredGaussian.condition` instead: the noise-free limit ``σ → 0``
in which observed pixels are known exactly (so it is *not* ``x | z, y`` at the
given σ; :func:`~bayes_recon.inference.sample_posterior` refuses it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._validation import check_choice, check_int, check_positive
from ..distributions.stencil import cholesky_t_matvec
from ..operators import Inpainting, LinearOperator, conjugate_gradient
from ._generators import check_generator, cpu_generator_from
from .marginal import DENSE_MAX_PIXELS, _factor_rows, as_float64, dense_posterior_cholesky

__all__ = ["X_SOLVERS", "XSolverConfig", "GaussianImagePosterior"]

X_SOLVERS = ("auto", "cholesky", "cg", "condition")


@dataclass
class XSolverConfig:
    """How ``x | z, y`` is solved.

    Attributes
    ----------
    solver : {"auto", "cholesky", "cg", "condition"}
        ``"auto"``: dense Cholesky up to
        :data:`~bayes_recon.models.marginal.DENSE_MAX_PIXELS` pixels (or
        whenever a factor is given), Jacobi-preconditioned CG beyond.
        ``"condition"``: inpainting only, the noise-free limit ``σ → 0``
        (observed pixels exact), whatever ``noise_std`` is.
    cg_tol : float
        Relative residual CG must reach.
    cg_max_iter : int
    diag_probes : int
        Rademacher probes estimating ``diag(AᵀA)`` for the Jacobi preconditioner.
    """

    solver: str = "auto"
    cg_tol: float = 1e-8
    cg_max_iter: int = 2000
    diag_probes: int = 8

    def __post_init__(self):
        check_choice("solver", self.solver, X_SOLVERS)
        check_positive("cg_tol", self.cg_tol)
        check_int("cg_max_iter", self.cg_max_iter, minimum=1)
        check_int("diag_probes", self.diag_probes, minimum=1)


def _as_real_noise(shape, complex_: bool, generator, dtype, device):
    w = torch.randn(shape, generator=generator, dtype=dtype, device=device)
    if complex_:
        w = torch.complex(w, torch.randn(shape, generator=generator, dtype=dtype, device=device))
    return w


class GaussianImagePosterior:
    """``x | z, y`` for a batch of decoded priors, with exact samples and mean.

    Parameters
    ----------
    dist : StructuredGaussian
        ``p(x | z)`` with batch shape ``(B,)`` (e.g. ``prior.decode(z)``);
        everything is computed in float64, without gradients.
    y : torch.Tensor
        ``(B, *op.range_shape)``.
    op : LinearOperator
    noise_std : float
    config : XSolverConfig, optional
    cholesky : torch.Tensor, optional
        ``(B, N, N)`` lower Cholesky factor of ``P`` already computed (e.g. by
        the exactness check of :func:`~bayes_recon.inference.sample_posterior`);
        with solver ``"auto"`` or ``"cholesky"`` it is used instead of
        factorising again.

    Attributes
    ----------
    converged : bool
        False once any CG solve stopped short of ``cg_tol`` (always True for
        the direct solvers).
    solver : str
        The resolved solver (``"cholesky"``, ``"cg"`` or ``"condition"``).
    cg_iterations : list of int
        Iterations of every CG solve so far, in order (empty for direct solvers).
    cg_residuals : list of float
        Largest relative residual ``‖b − P x‖/‖b‖`` over the batch of every CG solve.

    Examples
    --------
    >>> import torch
    >>> from bayes_recon.models.supn_vae import SUPNVAE
    >>> from bayes_recon.operators import Identity
    >>> vae = SUPNVAE(image_size=6, latent_dim=2, widths=(4,), radius=1)
    >>> post = GaussianImagePosterior(vae.decode(torch.zeros(1, 2)), torch.zeros(1, 1, 6, 6),
    ...                               Identity((1, 6, 6)), 0.1)
    >>> post.sample(5, seed=0).shape
    torch.Size([5, 1, 1, 6, 6])
    """

    def __init__(self, dist, y: torch.Tensor, op: LinearOperator, noise_std: float,
                 config: XSolverConfig | None = None, cholesky: torch.Tensor | None = None):
        if not isinstance(op, LinearOperator):
            raise TypeError(f"op must be a bayes_recon LinearOperator, got {type(op).__name__}")
        self.config = XSolverConfig() if config is None else config
        self.sigma = check_positive("noise_std", noise_std)
        self.op = op
        f64 = torch.float64
        self.dist = as_float64(dist, detach=True)
        self.out_dtype = dist.loc.dtype
        self.y = y.detach().to(torch.complex128 if y.is_complex() else f64)
        if tuple(self.dist.batch_shape) != (y.shape[0],):
            raise ValueError(
                f"dist must have batch shape ({y.shape[0]},) to match y, got {tuple(self.dist.batch_shape)}"
            )
        solver = self.config.solver
        if solver == "auto":
            solver = "cholesky" if op.domain_size <= DENSE_MAX_PIXELS or cholesky is not None else "cg"
        if solver == "condition" and not isinstance(op, Inpainting):
            raise ValueError(f"solver='condition' needs an Inpainting operator, got {type(op).__name__}")
        self.solver = solver
        self.converged = True
        self.last_cg = None
        self.cg_iterations: list[int] = []
        self.cg_residuals: list[float] = []
        n = op.domain_size
        if cholesky is not None and tuple(cholesky.shape) != (y.shape[0], n, n):
            raise ValueError(f"cholesky must have shape ({y.shape[0]}, {n}, {n}), got {tuple(cholesky.shape)}")
        self._chol = None if cholesky is None or solver != "cholesky" else cholesky.detach().to(f64)
        self._cond = None
        self._precond_diag = None

    # ------------------------------------------------------------ pieces
    @property
    def _s(self) -> float:
        return self.sigma ** -2

    def _cholesky(self) -> torch.Tensor:
        if self._chol is None:
            idx, w = _factor_rows(self.dist)
            s = torch.full((w.shape[0],), self._s, dtype=w.dtype, device=w.device)
            self._chol = dense_posterior_cholesky(w, idx, self.op, s)
        return self._chol

    def _matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``P v`` for ``v`` ``(S·B, C, H, W)`` (batch element ``i % B``)."""
        b = self.dist.batch_shape[0]
        vv = v.reshape(-1, b, *v.shape[1:])
        out = self.dist.precision_matvec(vv) + self._s * self.op.normal(v).reshape(vv.shape)
        return out.reshape(v.shape)

    def _jacobi(self) -> torch.Tensor:
        """``diag(P)`` ``(B, C, H, W)``: exact ``diag(UᵀU)`` + probed ``diag(AᵀA)/σ²``."""
        if self._precond_diag is None:
            d = self.dist
            # diag(UᵀU)_j = Σ_i U_ij²: a transposed product with the squared factor entries.
            lam_diag = cholesky_t_matvec(torch.ones_like(d.loc), 2.0 * d.log_diag,
                                         d.off_diag.square(), d.radius)
            gen = torch.Generator(device=d.loc.device).manual_seed(0)
            k = self.config.diag_probes
            v = torch.randint(0, 2, (k, *self.op.domain_shape), generator=gen,
                              device=d.loc.device).to(torch.float64) * 2 - 1
            ata = (v * self.op.normal(v)).mean(0).clamp_min(0.0)
            self._precond_diag = lam_diag + self._s * ata
        return self._precond_diag

    def _solve(self, rhs: torch.Tensor) -> torch.Tensor:
        """``P⁻¹ rhs`` for ``rhs`` ``(S, B, C, H, W)``."""
        shape = rhs.shape
        if self.solver == "cholesky":
            flat = rhs.reshape(shape[0], shape[1], -1).permute(1, 2, 0)  # (B, N, S)
            sol = torch.cholesky_solve(flat, self._cholesky())
            return sol.permute(2, 0, 1).reshape(shape)
        diag = self._jacobi()
        b = shape[1]

        def precond(r):
            return (r.reshape(-1, b, *shape[2:]) / diag).reshape(r.shape)

        res = conjugate_gradient(self._matvec, rhs.reshape(-1, *shape[2:]), tol=self.config.cg_tol,
                                 max_iter=self.config.cg_max_iter, preconditioner=precond)
        self.last_cg = res
        self.cg_iterations.append(int(res.iterations))
        self.cg_residuals.append(float(res.relative_residual.max()))
        self.converged = self.converged and res.converged
        return res.x.reshape(shape)

    def _condition(self):
        if self._cond is None:
            values = self.op.adjoint(self.y)  # observed values at their pixels, zeros elsewhere
            self._cond = self.dist.condition(self.op.mask, values)
        return self._cond

    # ------------------------------------------------------------ public
    @property
    def mean(self) -> torch.Tensor:
        """``E[x | z, y] = P⁻¹(Λμ + Aᵀy/σ²)``, ``(B, C, H, W)``."""
        if self.solver == "condition":
            return self._condition().mean.to(self.out_dtype)
        d = self.dist
        rhs = d.precision_matvec(d.loc) + self._s * self.op.adjoint(self.y)
        return self._solve(rhs[None])[0].to(self.out_dtype)

    def sample(self, num_samples: int = 1, seed: int | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Exact samples ``(num_samples, B, C, H, W)`` by perturbation–optimisation.

        Parameters
        ----------
        num_samples : int
        seed : int, optional
            Seeds a fresh generator on the data's device.
        generator : torch.Generator, optional
            Must live on the data's device (``dist.loc.device``); a generator on
            another device raises ``ValueError`` rather than being dropped.
            Give ``seed`` or ``generator``, not both; neither uses torch's global RNG.

        Returns
        -------
        torch.Tensor
            ``(num_samples, B, C, H, W)`` in the input distribution's dtype.
        """
        check_int("num_samples", num_samples, minimum=1)
        device = self.dist.loc.device
        if seed is not None:
            if generator is not None:
                raise ValueError("give seed or generator, not both")
            generator = torch.Generator(device=device).manual_seed(check_int("seed", seed))
        generator = check_generator(generator, device)
        if self.solver == "condition":
            cond = self._condition()
            # The conditional factorises and samples on the host: derive a CPU generator
            # from the device one (unchanged on CPU) instead of falling back to the global RNG.
            return cond.sample((num_samples,), generator=cpu_generator_from(generator)).to(self.out_dtype)
        d = self.dist
        shape = (num_samples, *d.batch_shape, *d.event_shape)
        w1 = torch.randn(shape, generator=generator, dtype=torch.float64, device=device)
        w2 = _as_real_noise((num_samples, *self.y.shape), self.y.is_complex(), generator,
                            torch.float64, device)
        perturbed_y = (self.y + self.sigma * w2).reshape(-1, *self.y.shape[1:])
        data = self.op.adjoint(perturbed_y).reshape(shape) * self._s
        rhs = d.cholesky_t_matvec(d.cholesky_matvec(d.loc) + w1) + data
        return self._solve(rhs).to(self.out_dtype)

    def dense_covariance(self) -> torch.Tensor:
        """``P⁻¹`` as ``(B, N, N)`` (small images; Cholesky path)."""
        chol = self._cholesky()
        eye = torch.eye(chol.shape[-1], dtype=chol.dtype, device=chol.device).expand_as(chol)
        return torch.cholesky_solve(eye, chol)
