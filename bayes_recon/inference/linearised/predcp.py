"""TV predictive-complexity prior (TV-PredCP) on the filter lengthscales.

For each Matérn group ``b``, the expected total variation of image-space prior
draws under that block alone, ``E_b(ℓ_b) = E_ε[TV(J_b Σ_b^{1/2}(ℓ_b) ε)]``, is
given an exponential prior with rate ``κ`` (``predcp_scale``); the induced
density on ``ℓ_b`` is ``log p(ℓ_b) = log κ - κ E_b(ℓ_b) + log|∂E_b/∂ℓ_b|``
(Nalisnick et al.'s predictive complexity priors; Antorán et al. 2022).
``E_b`` is a sum over pixels (``normalisation="sum"``) or a mean
(``"mean"``); with the sum, the same ``κ`` is stronger per pixel the larger
the image.

The expectation uses reparameterised draws with FIXED probes ``ε`` (seeded at
construction), so the objective is deterministic and smooth enough for
quasi-Newton optimisation. With ``θ_f = L(ℓ) ε_f`` per filter (``C(ℓ) = L Lᵀ``),
``J_b θ = Σ_{ij} L_ij T_ij`` with ``T_ij = Σ_f J_b[:, f, i] ε_f[j]``, which is
precomputed once per group: every evaluation is then an ``(S, N, k², k²)``
contraction and a TV, and ``∂E/∂ℓ`` (and its gradient) come from autograd.
"""

from __future__ import annotations

import math

import torch

from ...operators.classical import total_variation
from .jacobian import NetworkJacobian
from .weight_prior import MaternFilterPrior

__all__ = ["TVPredCP"]


class TVPredCP:
    """Deterministic TV-PredCP log-density over the lengthscales of the Matérn groups.

    Parameters
    ----------
    jac : NetworkJacobian
        Dense or matrix-free.
    prior : MaternFilterPrior
    image_shape : tuple of int
        ``(C, H, W)`` of the network output.
    num_samples : int
        Fixed probes ``S`` per group.
    seed : int
    basis : torch.Tensor, optional
        ``Q (N, r)``: ``jac`` is a projected Jacobian ``Qᵀ J`` (subspace path) and
        draws are lifted by ``Q`` before their TV is taken.
    normalisation : {"sum", "mean"}
        ``E_b`` is the expected TV summed over the ``N = C·H·W`` pixels (``"sum"``)
        or per pixel (``"mean"``, ``E_b / N``), so that a rate ``κ`` means the same
        at every image size (``κ_mean = N · κ_sum`` gives the same prior).
    """

    def __init__(self, jac: NetworkJacobian, prior: MaternFilterPrior, image_shape,
                 num_samples: int = 32, seed: int = 0, basis: torch.Tensor | None = None,
                 normalisation: str = "sum"):
        if normalisation not in ("sum", "mean"):
            raise ValueError(f"normalisation must be 'sum' or 'mean', got {normalisation!r}")
        self.prior, self.basis, self.normalisation = prior, basis, normalisation
        self.image_shape = tuple(image_shape)
        self.num_pixels = math.prod(self.image_shape)
        self.num_samples = int(num_samples)
        dev = jac.theta.device
        gen = torch.Generator(device=dev).manual_seed(seed)
        self.taps: dict[int, torch.Tensor] = {}
        for gi in prior.matern_groups:
            g = prior.groups[gi]
            k2 = g.kernel_size**2
            eps = torch.randn(self.num_samples, g.num_filters, k2, generator=gen, dtype=torch.float64, device=dev)
            self.taps[gi] = self._tap_products(jac, g, eps)          # (S, N, k², k²)

    @staticmethod
    def _tap_products(jac, g, eps) -> torch.Tensor:
        s, f, k2 = eps.shape
        if jac.matrix is not None:
            jb = jac.block(g, torch.float64)                          # (N, F, k²)
            return torch.einsum("nfi,sfj->snij", jb, eps)
        # Matrix-free: tangent (s, i, j) puts ε_s[:, j] in tap i of every filter.
        eye = torch.eye(k2, dtype=torch.float64, device=eps.device)
        tang = torch.einsum("sfj,ik->sijfk", eps, eye).reshape(s * k2 * k2, f * k2)
        full = torch.zeros(tang.shape[0], jac.num_params, dtype=torch.float64, device=eps.device)
        full[:, g.slice] = tang
        out = jac.jvp(full).to(torch.float64)                         # (s k² k², N)
        return out.reshape(s, k2, k2, -1).permute(0, 3, 1, 2).contiguous()

    def expected_tv(self, gi: int, lengthscale: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
        """``E_b`` for group ``gi`` at a lengthscale and variance (0-d tensors; per pixel with "mean")."""
        g = self.prior.groups[gi]
        dist, masks = self.prior.classes[gi]
        corr = torch.einsum("d,dij->ij", torch.exp(-dist.to(lengthscale) / lengthscale), masks.to(lengthscale))
        chol = torch.linalg.cholesky(corr)
        x = variance.sqrt() * torch.einsum("snij,ij->sn", self.taps[gi], chol)
        if self.basis is not None:
            x = x @ self.basis.T.to(x)
        tv = total_variation(x.reshape(self.num_samples, *self.image_shape), isotropic=False).mean()
        return tv / self.num_pixels if self.normalisation == "mean" else tv

    def log_prob(self, log_lengthscale: torch.Tensor, log_variance: torch.Tensor,
                 scale: float) -> torch.Tensor:
        """``Σ_b log p(ℓ_b)`` (differentiable in both hyperparameter vectors)."""
        total = log_lengthscale.new_zeros(())
        for j, gi in enumerate(self.prior.matern_groups):
            ell = log_lengthscale[j].exp()
            with torch.enable_grad():
                if not ell.requires_grad:  # evaluation without gradients: still need ∂E/∂ℓ
                    ell = ell.detach().requires_grad_(True)
                e = self.expected_tv(gi, ell, log_variance[gi].exp())
                (de,) = torch.autograd.grad(e, ell, create_graph=True)
            total = total + math.log(scale) - scale * e + torch.log(de.abs() + 1e-300)
        return total
