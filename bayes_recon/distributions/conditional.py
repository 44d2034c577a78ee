"""Conditioning a :class:`StructuredGaussian` on observed pixels, in precision form."""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.linalg import splu

from .._validation import check_int
from .stencil import cholesky_matvec
from .triangular_solve import DENSE_MAX_PIXELS, factor_matrix

__all__ = ["ConditionalStructuredGaussian"]


def _event_mask(observed_mask, event_shape) -> torch.Tensor:
    if not isinstance(observed_mask, torch.Tensor):
        raise TypeError(f"observed_mask must be a torch.Tensor, got {type(observed_mask).__name__}")
    if observed_mask.dtype != torch.bool:
        raise TypeError(f"observed_mask must be a bool tensor, got dtype {observed_mask.dtype}")
    c, h, w = event_shape
    shape = tuple(observed_mask.shape)
    if shape == (c, h, w):
        return observed_mask
    if c == 1 and shape == (h, w):
        return observed_mask.unsqueeze(0)
    allowed = f"{(c, h, w)}" + (f" or {(h, w)}" if c == 1 else "")
    raise ValueError(f"observed_mask must have the event shape {allowed}, got {shape}")


class ConditionalStructuredGaussian:
    r"""``x_U | x_K = v_K`` for ``x ~ StructuredGaussian``: ``N(m_U, Λ_UU⁻¹)``.

    ``U`` are the unobserved and ``K`` the observed pixels; with ``Λ = UᵀU``
    (factor ``U`` as in :class:`StructuredGaussian`)::

        m_U = μ_U − Λ_UU⁻¹ Λ_UK (v_K − μ_K),      Cov = Λ_UU⁻¹.

    ``Λ_UU`` is assembled as a scipy sparse matrix and factorised once per
    batch element (SuperLU with a symmetric fill-reducing ordering); the mean
    and every sample are solves with that factorisation. Samples are exact, by
    perturbation–optimisation: ``Λ_UU = VᵀV`` with ``V = U[:, U]`` (the
    columns of the factor at unobserved pixels), so for ``u ~ N(0, I_N)``,
    ``m_U + Λ_UU⁻¹ Vᵀu ~ N(m_U, Λ_UU⁻¹)``.

    Everything is computed in float64 on the CPU, without gradients, and
    returned on the device and dtype of the base distribution. Unobserved
    pixels are ordered as ``observed_mask.flatten()`` (row-major ``(C, H, W)``).

    Parameters
    ----------
    base : StructuredGaussian
    observed_mask : torch.Tensor
        Bool, ``(C, H, W)`` (or ``(H, W)`` when ``C == 1``); True = observed.
    values : torch.Tensor
        ``(*batch, C, H, W)``, the base distribution's batch shape exactly;
        only the observed entries are read (the others may be NaN).

    Examples
    --------
    >>> import torch
    >>> from bayes_recon.distributions import StructuredGaussian, num_offdiag
    >>> d = StructuredGaussian(torch.zeros(1, 6, 6), torch.zeros(1, 6, 6),
    ...                        -0.4 * torch.ones(num_offdiag(1), 6, 6), radius=1)
    >>> mask = torch.zeros(6, 6, dtype=torch.bool)
    >>> mask[:, :3] = True
    >>> cond = d.condition(mask, torch.ones(1, 6, 6))
    >>> cond.mean.shape, cond.sample((4,), seed=0).shape
    (torch.Size([1, 6, 6]), torch.Size([4, 1, 6, 6]))
    >>> bool((cond.mean[0, :, :3] == 1).all())
    True
    """

    def __init__(self, base, observed_mask: torch.Tensor, values: torch.Tensor):
        self.base = base
        self.observed_mask = _event_mask(observed_mask, tuple(base.event_shape)).to(base.loc.device)
        full = base.batch_shape + base.event_shape
        if not isinstance(values, torch.Tensor):
            raise TypeError(f"values must be a torch.Tensor, got {type(values).__name__}")
        if not values.is_floating_point():
            raise TypeError(f"values must be a real floating tensor, got dtype {values.dtype}")
        if values.shape != full:
            raise ValueError(f"values must have shape {tuple(full)} (batch + event shape), got {tuple(values.shape)}")
        mask_np = self.observed_mask.cpu().numpy().ravel()
        self._obs = np.flatnonzero(mask_np)
        self._unobs = np.flatnonzero(~mask_np)
        values = values.to(device=base.loc.device, dtype=base.loc.dtype)
        obs_vals = values.reshape(*base.batch_shape, -1)[..., torch.as_tensor(self._obs, device=values.device)]
        if not bool(torch.isfinite(obs_vals).all()):
            raise ValueError("values contains NaN or inf entries at observed pixels")
        # Keep the observed values only; unobserved entries of `values` may be anything.
        self.values = torch.where(self.observed_mask, values, torch.zeros_like(values))
        self._factorise()

    # ---------------------------------------------------------------- set-up
    def _factorise(self):
        base = self.base
        c, h, w = base.event_shape
        nb = max(1, base.batch_shape.numel())
        f64 = dict(device="cpu", dtype=torch.float64)
        ld = base.log_diag.detach().to(**f64).reshape(nb, c, h, w).numpy()
        off = base.off_diag.detach().to(**f64).reshape(nb, -1, h, w).numpy()
        mu = base.loc.detach().to(**f64).reshape(nb, -1).numpy()
        vals = self.values.detach().to(**f64).reshape(nb, -1).numpy()
        self._lu, self._vt, self._mean_u, self._logdet = [], [], [], []
        u_idx, k_idx = self._unobs, self._obs
        for b in range(nb):
            fac = factor_matrix(ld[b], off[b], base.radius)  # CSC U
            v = fac[:, u_idx]  # columns of U at the unobserved pixels (CSC slicing)
            if u_idx.size == 0:  # everything observed: a point mass at the values
                self._lu.append(None)
                self._vt.append(None)
                self._mean_u.append(np.zeros(0))
                self._logdet.append(0.0)
                continue
            lam_uu = (v.T @ v).tocsc()
            lu = splu(lam_uu, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                      options={"SymmetricMode": True})
            mean_u = mu[b, u_idx].copy()
            if k_idx.size:
                lam_uk = v.T @ fac[:, k_idx]
                mean_u -= lu.solve(lam_uk @ (vals[b, k_idx] - mu[b, k_idx]))
            self._lu.append(lu)
            self._vt.append(sp.csr_matrix(v.T))
            self._mean_u.append(mean_u)
            self._logdet.append(float(np.sum(np.log(np.abs(lu.U.diagonal())))))

    def _to_image(self, unobs: np.ndarray) -> torch.Tensor:
        """``(S, nb, n_U)`` float64 → ``(S, *batch, C, H, W)`` with observed pixels filled in."""
        base = self.base
        s = unobs.shape[0]
        n = base.num_pixels
        out = np.zeros((s, unobs.shape[1], n))
        out[:, :, self._unobs] = unobs
        img = torch.from_numpy(out).to(device=base.loc.device, dtype=base.loc.dtype)
        img = img.reshape(s, *base.batch_shape, *base.event_shape)
        return torch.where(self.observed_mask, self.values, img)

    # ------------------------------------------------------------ interface
    @property
    def num_unobserved(self) -> int:
        return int(self._unobs.size)

    @property
    def mean(self) -> torch.Tensor:
        """Conditional mean as a full image ``(*batch, C, H, W)``; observed pixels equal ``values``."""
        return self._to_image(np.stack(self._mean_u)[None])[0]

    def sample(self, sample_shape=torch.Size(), seed: int | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Exact conditional samples ``(*sample_shape, *batch, C, H, W)``.

        Observed pixels equal ``values``. ``seed`` (or a CPU ``generator``)
        makes the draw reproducible; by default torch's global RNG is used.
        """
        if seed is not None and generator is not None:
            raise ValueError("give seed or generator, not both")
        if seed is not None:
            generator = torch.Generator().manual_seed(check_int("seed", seed))
        sample_shape = torch.Size(sample_shape)
        s = max(1, sample_shape.numel())
        n, nb = self.base.num_pixels, len(self._lu)
        noise = torch.randn(nb, n, s, dtype=torch.float64, generator=generator).numpy()
        out = np.empty((s, nb, self.num_unobserved))
        for b in range(nb):
            if self.num_unobserved == 0:
                continue
            z = self._lu[b].solve(np.asarray(self._vt[b] @ noise[b]))  # Λ_UU⁻¹ Vᵀ u
            out[:, b, :] = (self._mean_u[b][:, None] + z).T
        x = self._to_image(out)
        return x.reshape(*sample_shape, *x.shape[1:])

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``log N(x_U; m_U, Λ_UU⁻¹)``, ``(*sample, *batch, C, H, W) → (*sample, *batch)``.

        Only the unobserved entries of ``value`` are read. Differentiable in
        ``value`` (the quadratic form is ``‖U d‖²`` with ``d`` the deviation
        from the conditional mean, zero at observed pixels).
        """
        base = self.base
        full = base.batch_shape + base.event_shape
        if not isinstance(value, torch.Tensor) or value.shape[value.dim() - len(full):] != full:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"value must have shape (*sample, {', '.join(map(str, full))}), got {got}")
        d = torch.where(self.observed_mask, torch.zeros_like(value), value - self.mean)
        r = cholesky_matvec(d, base.log_diag.detach(), base.off_diag.detach(), base.radius)
        logdet = torch.tensor(self._logdet, dtype=value.dtype, device=value.device).reshape(base.batch_shape)
        return (-0.5 * r.square().sum((-3, -2, -1)) + 0.5 * logdet
                - 0.5 * self.num_unobserved * math.log(2 * math.pi))

    def covariance_matrix(self) -> torch.Tensor:
        """Dense ``Λ_UU⁻¹``, ``(*batch, n_U, n_U)`` in the order of the unobserved pixels.

        Small problems only (``n_U <= DENSE_MAX_PIXELS``, else ``ValueError``).
        """
        m = self.num_unobserved
        if m > DENSE_MAX_PIXELS:
            raise ValueError(f"covariance_matrix needs n_U <= {DENSE_MAX_PIXELS} unobserved pixels, got {m}")
        eye = np.eye(m)
        cov = np.stack([lu.solve(eye) if lu is not None else eye for lu in self._lu])
        cov = torch.from_numpy(cov).to(device=self.base.loc.device, dtype=self.base.loc.dtype)
        return cov.reshape(*self.base.batch_shape, m, m)

    def marginal_variance(self) -> torch.Tensor:
        """Conditional variances as an image ``(*batch, C, H, W)`` (0 at observed pixels).

        Exact: ``diag(Λ_UU⁻¹)`` by blocked solves with the stored factorisation.
        """
        m, nb = self.num_unobserved, len(self._lu)
        var = np.zeros((1, nb, m))
        block = max(1, min(m, 2**22 // max(1, m)))
        for b, lu in enumerate(self._lu):
            for start in range(0, m, block):
                idx = np.arange(start, min(m, start + block))
                rhs = np.zeros((m, idx.size))
                rhs[idx, np.arange(idx.size)] = 1.0
                var[0, b, idx] = lu.solve(rhs)[idx, np.arange(idx.size)]
        img = self._to_image(var)[0]
        return torch.where(self.observed_mask, torch.zeros_like(img), img)
