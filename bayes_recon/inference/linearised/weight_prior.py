"""Gaussian prior over the linearised conv weights: a Matérn-½ covariance inside each filter.

Each ``k x k`` filter of group ``b`` is ``N(0, σ_b² C(ℓ_b))`` with
``C(ℓ)_{ij} = exp(-||c_i - c_j|| / ℓ)`` over the filter's pixel coordinates
``c_i`` (unit spacing), independently across filters; 1x1 groups are iid
``N(0, σ_b²)``. So ``Σ_θ = blockdiag_b(σ_b² I_{F_b} ⊗ C(ℓ_b))``.

Because a ``k x k`` grid has few distinct pairwise distances (six for 3x3:
0, 1, √2, 2, √5, √8), ``C(ℓ) = Σ_δ exp(-δ/ℓ) M_δ`` with fixed 0/1 matrices
``M_δ``; the image-space kernel is then ``K = Σ_b Σ_δ σ_b² e^{-δ/ℓ_b} J_b (I ⊗ M_δ) J_bᵀ``.

Hyperparameters are unconstrained logs: ``log ℓ`` per 3x3 group, ``log σ²`` per
group, in the order of the groups.
"""

from __future__ import annotations

import math

import torch

from .jacobian import ParameterGroup

__all__ = ["distance_classes", "MaternFilterPrior"]


def distance_classes(kernel_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct pairwise distances of a ``k x k`` grid and their indicator matrices.

    Returns
    -------
    distances : torch.Tensor
        float64 ``(D,)``, increasing, ``distances[0] == 0``.
    masks : torch.Tensor
        float64 ``(D, k², k²)``, 0/1, summing to the all-ones matrix.
    """
    r = torch.arange(kernel_size, dtype=torch.float64)
    coords = torch.stack(torch.meshgrid(r, r, indexing="ij"), -1).reshape(-1, 2)
    sq = (coords[:, None] - coords[None]).pow(2).sum(-1)       # integer squared distances
    values = torch.unique(sq)
    masks = torch.stack([(sq == v).to(torch.float64) for v in values])
    return values.sqrt(), masks


class MaternFilterPrior:
    """The block-wise Matérn-½ filter prior over a list of parameter groups.

    Parameters
    ----------
    groups : list of ParameterGroup

    Attributes
    ----------
    matern_groups : list of int
        Indices of the groups with a lengthscale (kernel size > 1).
    classes : list of (distances, masks)
        Per group, from :func:`distance_classes`.
    """

    def __init__(self, groups: list[ParameterGroup]):
        self.groups = list(groups)
        self.matern_groups = [i for i, g in enumerate(self.groups) if g.kernel_size > 1]
        self._ls_index = {gi: j for j, gi in enumerate(self.matern_groups)}
        self.classes = [distance_classes(g.kernel_size) for g in self.groups]

    @property
    def names(self) -> list[str]:
        return [g.name for g in self.groups]

    def check_block(self, name: str) -> int:
        """Index of the group called ``name``; ``ValueError`` listing the known blocks."""
        for i, g in enumerate(self.groups):
            if g.name == name:
                return i
        raise ValueError(f"unknown prior block {name!r}; expected one of {self.names}")

    def initial_hyperparameters(self, theta: torch.Tensor, lengthscale: float, variance: float | None = None,
                                min_log_variance: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Starting ``(log ℓ (L,), σ² (G,))`` float64 on ``theta``'s device.

        ``ℓ_b = lengthscale``; ``σ_b² = variance``, or (None) the mean squared weight of
        block ``b`` in the flat weights ``theta (P,)``; at least 1e-12 and ``exp(min_log_variance)``.
        """
        f64, dev = torch.float64, theta.device
        log_ls = torch.full((len(self.matern_groups),), math.log(lengthscale), dtype=f64, device=dev)
        if variance is not None:
            var = torch.full((len(self.groups),), float(variance), dtype=f64, device=dev)
        else:
            theta = theta.to(f64)
            var = torch.stack([theta[g.slice].pow(2).mean() for g in self.groups])
        var = var.clamp_min(1e-12)
        if min_log_variance is not None:
            # Start (and build the subspace sketch) on the floor's side the fit will keep.
            var = var.clamp_min(math.exp(min_log_variance))
        return log_ls, var

    # --------------------------------------------------------------- pieces
    def class_weights(self, gi: int, log_lengthscale: torch.Tensor,
                      log_variance: torch.Tensor) -> torch.Tensor:
        """``σ_b² exp(-δ/ℓ_b)`` for each distance class of group ``gi``: ``(D,)``."""
        dist = self.classes[gi][0].to(log_variance)
        var = log_variance[gi].exp()
        if gi not in self._ls_index:
            return var * torch.ones_like(dist)
        return var * torch.exp(-dist / log_lengthscale[self._ls_index[gi]].exp())

    def filter_covariance(self, gi: int, log_lengthscale: torch.Tensor,
                          log_variance: torch.Tensor) -> torch.Tensor:
        """``σ_b² C(ℓ_b)`` of group ``gi``: ``(k², k²)``."""
        w = self.class_weights(gi, log_lengthscale, log_variance)
        return torch.einsum("d,dij->ij", w, self.classes[gi][1].to(w))

    # -------------------------------------------------------------- actions
    def _split(self, theta: torch.Tensor, gi: int) -> torch.Tensor:
        g = self.groups[gi]
        return theta[..., g.slice].reshape(*theta.shape[:-1], g.num_filters, g.kernel_size**2)

    def apply(self, theta: torch.Tensor, log_lengthscale, log_variance) -> torch.Tensor:
        """``Σ_θ θ`` for rows ``θ (..., P)``."""
        parts = []
        for gi in range(len(self.groups)):
            cov = self.filter_covariance(gi, log_lengthscale, log_variance).to(theta)
            t = self._split(theta, gi)
            parts.append((t @ cov).reshape(*theta.shape[:-1], -1))
        return torch.cat(parts, -1)

    def apply_sqrt(self, eps: torch.Tensor, log_lengthscale, log_variance) -> torch.Tensor:
        """``Σ_θ^{1/2} ε`` (per-filter Cholesky factor) for rows ``ε (..., P)``: prior draws."""
        parts = []
        for gi in range(len(self.groups)):
            cov = self.filter_covariance(gi, log_lengthscale, log_variance).to(eps)
            chol = torch.linalg.cholesky(cov)
            parts.append((self._split(eps, gi) @ chol.T).reshape(*eps.shape[:-1], -1))
        return torch.cat(parts, -1)

    def filter_grams(self, theta: torch.Tensor) -> list[torch.Tensor]:
        """``Θ_bᵀ Θ_b (k², k²)`` per group for one flat weight vector ``θ (P,)`` (float64)."""
        out = []
        for gi in range(len(self.groups)):
            t = self._split(theta.to(torch.float64), gi)
            out.append(t.T @ t)
        return out

    def inv_quad(self, grams: list[torch.Tensor], log_lengthscale, log_variance) -> torch.Tensor:
        """``θᵀ Σ_θ⁻¹ θ = Σ_b tr(C_b⁻¹ Θ_bᵀΘ_b) / σ_b²`` from :meth:`filter_grams`."""
        total = log_variance.new_zeros(())
        for gi, gram in enumerate(grams):
            cov = self.filter_covariance(gi, log_lengthscale, log_variance)
            chol = torch.linalg.cholesky(cov)
            total = total + torch.cholesky_solve(gram.to(cov), chol).diagonal().sum()
        return total
