"""Full posterior with a SUPN prior: ``z`` sampled on the collapsed likelihood, ``x`` exact.

``sample_posterior(..., method="nuts")`` runs Pyro's NUTS over the latent ``z``
with potential ``U(z) = −log p(y | z) − log p(z)``, where ``x`` is marginalised
exactly (:func:`~bayes_recon.inference.collapsed.collapsed_log_likelihood`).
``method="laplace"`` replaces NUTS by a Gaussian at the collapsed MAP of
``z`` with the Hessian of ``−log p(z | y)`` as precision. Either way every
``z`` draw is followed by one exact draw of ``x | z, y``
(:class:`~bayes_recon.inference.gaussian_posterior.GaussianImagePosterior`),
so the image samples are draws from the joint posterior.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from pyro.infer import MCMC, NUTS
from tqdm.auto import tqdm

from .._validation import check_choice, check_int, check_positive
from ..models.program import check_reconstruction_inputs
from .collapsed import SLQConfig, choose_evidence_method, collapsed_log_posterior, decode64
from .gaussian_posterior import GaussianImagePosterior, XSolverConfig
from .latent_map import collapsed_map, initial_latent
from ._rng import pyro_seed
from .posterior import Posterior

__all__ = ["SAMPLING_METHODS", "SamplingConfig", "sample_posterior", "LaplaceWarning",
           "latent_hessian"]

SAMPLING_METHODS = ("nuts", "laplace")


class LaplaceWarning(RuntimeWarning):
    """The Hessian at the latent MAP was not positive definite and was repaired."""


@dataclass
class SamplingConfig:
    """Settings of :func:`sample_posterior`.

    Attributes
    ----------
    warmup : int or None
        NUTS warm-up (adaptation) steps per chain; None uses ``num_samples``.
    max_tree_depth : int
        NUTS tree-depth bound (at most ``2^depth − 1`` gradient evaluations per draw).
    target_accept : float
        Dual-averaging target acceptance probability.
    init : {"map", "encoder"}
        Start chains at the collapsed MAP of ``z`` (plus ``init_jitter``
        Gaussian noise, seeded per chain) or at the encoder's guess.
    init_jitter : float
    map_steps : int
        L-BFGS iterations of the collapsed MAP (``init="map"`` and Laplace).
    evidence : {"auto", "dense", "slq"}
        Collapsed-likelihood path.
    slq : SLQConfig
    x_solver : XSolverConfig
        How the exact ``x | z, y`` samples are solved.
    x_batch : int
        ``z`` draws whose ``x`` samples are solved together (memory bound of
        the dense path: ``x_batch·N²`` float64 numbers).
    temperature : float
        Latent prior scale.
    hessian_step : float
        Finite-difference step of the Laplace Hessian on the SLQ path (the
        dense path uses exact autograd Hessians).
    """

    warmup: int | None = None
    max_tree_depth: int = 6
    target_accept: float = 0.8
    init: str = "map"
    init_jitter: float = 0.1
    map_steps: int = 50
    evidence: str = "auto"
    slq: SLQConfig = field(default_factory=SLQConfig)
    x_solver: XSolverConfig = field(default_factory=XSolverConfig)
    x_batch: int = 16
    temperature: float = 1.0
    hessian_step: float = 1e-3

    def __post_init__(self):
        if self.warmup is not None:
            check_int("warmup", self.warmup, minimum=0)
        check_int("max_tree_depth", self.max_tree_depth, minimum=1)
        if not 0 < self.target_accept < 1:
            raise ValueError(f"target_accept must lie in (0, 1), got {self.target_accept}")
        check_choice("init", self.init, ("map", "encoder"))
        check_positive("init_jitter", self.init_jitter, allow_zero=True)
        check_int("map_steps", self.map_steps, minimum=1)
        check_int("x_batch", self.x_batch, minimum=1)
        check_positive("temperature", self.temperature)
        check_positive("hessian_step", self.hessian_step)


class _RecordingNUTS(NUTS):
    """NUTS that records per-draw statistics (Pyro keeps only running means)."""

    def __init__(self, *args, counter, **kwargs):
        super().__init__(*args, **kwargs)
        self._counter = counter
        self.records = []

    def sample(self, params):
        t_before, mean_before = self._t, self._mean_accept_prob
        div_before, calls_before = len(self._divergences), self._counter[0]
        out = super().sample(params)
        n = self._t - self._warmup_steps if self._t > self._warmup_steps else self._t
        # Pyro's running mean: mean_n = mean_{n-1} + (a_n − mean_{n-1}) / n.
        accept = self._mean_accept_prob * n - mean_before * (n - 1)
        steps = self._counter[0] - calls_before
        self.records.append({
            "warmup": t_before < self._warmup_steps,
            "diverging": len(self._divergences) > div_before,
            "accept_prob": float(min(max(accept, 0.0), 1.0)),
            "step_size": float(self.step_size),
            "num_steps": int(steps),
            "tree_depth": int(math.ceil(math.log2(steps + 1))) if steps > 0 else 0,
        })
        return out


def _potential(y, op, prior, sigma, cfg, counter):
    def potential_fn(params):
        counter[0] += 1
        z = params["z"].reshape(1, -1)
        lp = collapsed_log_posterior(z, y, op, prior, sigma, cfg.temperature, cfg.evidence, cfg.slq)
        return -lp[0]

    return potential_fn


def _nuts_latents(y, op, prior, sigma, num_samples, num_chains, seed, cfg, progress, z_init):
    warmup = num_samples if cfg.warmup is None else cfg.warmup
    chains_z, stats = [], {k: [] for k in ("diverging", "accept_prob", "step_size", "num_steps", "tree_depth")}
    for chain in range(num_chains):
        with pyro_seed(seed + chain):  # NUTS draws from the global generators
            gen = torch.Generator().manual_seed(seed + 1000 + chain)
            start = z_init[0] + cfg.init_jitter * torch.randn(z_init.shape[1:], generator=gen, dtype=z_init.dtype)
            counter = [0]
            kernel = _RecordingNUTS(potential_fn=_potential(y, op, prior, sigma, cfg, counter),
                                    max_tree_depth=cfg.max_tree_depth, target_accept_prob=cfg.target_accept,
                                    adapt_step_size=True, adapt_mass_matrix=True, counter=counter)
            mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=warmup,
                        initial_params={"z": start.detach().to(torch.float64)}, num_chains=1,
                        disable_progbar=not progress)
            mcmc.run()
            chains_z.append(mcmc.get_samples()["z"].detach())
            recs = [r for r in kernel.records if not r["warmup"]][-num_samples:]
            for key in stats:
                stats[key].append([r[key] for r in recs])
    z = torch.stack(chains_z)  # (chains, draws, d)
    return z, {k: np.asarray(v) for k, v in stats.items()}


def latent_hessian(z: torch.Tensor, y, op, prior, noise_std, cfg: SamplingConfig) -> torch.Tensor:
    """Hessian of ``−log p(z | y)`` (collapsed) at ``z`` ``(1, d)``, ``(d, d)`` float64, symmetric.

    Exact (autograd) on the dense path; central differences of the gradient
    with step ``cfg.hessian_step`` on the SLQ path (whose backward pass is not
    twice differentiable).
    """
    method = choose_evidence_method(cfg.evidence, op.domain_size)
    z = z.detach().to(torch.float64).reshape(-1)

    def neg(v):
        return -collapsed_log_posterior(v.reshape(1, -1), y, op, prior, noise_std,
                                        cfg.temperature, method, cfg.slq)[0]

    if method == "dense":
        h = torch.autograd.functional.hessian(neg, z)
    else:
        def grad(v):
            v = v.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(neg(v), v)
            return g

        d, eps = z.numel(), cfg.hessian_step
        cols = []
        for i in range(d):
            e = torch.zeros_like(z)
            e[i] = eps
            cols.append((grad(z + e) - grad(z - e)) / (2 * eps))
        h = torch.stack(cols, 1)
    return 0.5 * (h + h.T)


def _laplace_latents(z_map, y, op, prior, sigma, num_samples, num_chains, seed, cfg):
    h = latent_hessian(z_map, y, op, prior, sigma, cfg)
    evals, evecs = torch.linalg.eigh(h)
    floor = 1e-6 * float(evals.abs().max())
    if bool((evals <= floor).any()):
        warnings.warn(
            f"the Hessian of −log p(z|y) at the MAP has eigenvalues down to {float(evals.min()):.3g}; "
            f"clipped to {floor:.3g} (the MAP may be a saddle point or not converged)",
            LaplaceWarning, stacklevel=3,
        )
        evals = evals.clamp_min(floor)
    cov_root = evecs * evals.rsqrt()  # Σ = V diag(1/λ) Vᵀ = R Rᵀ
    draws = []
    for chain in range(num_chains):
        gen = torch.Generator().manual_seed(seed + chain)
        eps = torch.randn(num_samples, z_map.shape[-1], generator=gen, dtype=torch.float64)
        draws.append(z_map.reshape(1, -1).to(torch.float64) + eps @ cov_root.T)
    return torch.stack(draws), h


def _x_samples(z, y, op, prior, sigma, seed, cfg, progress):
    """One exact ``x | z, y`` per draw: ``z`` ``(chains, draws, d)`` → ``(chains, draws, C, H, W)``."""
    chains, draws, d = z.shape
    flat = z.reshape(-1, d)
    gen = torch.Generator(device=y.device).manual_seed(seed + 7919)
    out, converged = [], True
    steps = range(0, flat.shape[0], cfg.x_batch)
    for start in tqdm(steps, desc="exact x | z, y", disable=not progress, leave=False):
        zb = flat[start:start + cfg.x_batch]
        with torch.no_grad():
            dist = decode64(prior, zb)
        yb = y.expand(zb.shape[0], *y.shape[1:])
        post = GaussianImagePosterior(dist, yb, op, sigma, cfg.x_solver)
        out.append(post.sample(1, generator=gen)[0])
        converged = converged and post.converged
    x = torch.cat(out).reshape(chains, draws, *op.domain_shape)
    return x, converged


def sample_posterior(y: torch.Tensor, op, prior, noise_std: float | None, method: str = "nuts",
                     num_samples: int = 200, num_chains: int = 2, seed: int = 0,
                     config: SamplingConfig | None = None, progress: bool = True) -> Posterior:
    """Posterior samples of the image ``x`` (and latent ``z``) for one measurement.

    Parameters
    ----------
    y : torch.Tensor
        ``(1, *op.range_shape)``: a single measurement.
    op : LinearOperator
    prior : SUPNVAE
    noise_std : float or None
        σ > 0; None estimates it (type-II maximum likelihood of the collapsed
        evidence jointly with the MAP of ``z``) and then keeps it fixed.
    method : {"nuts", "laplace"}
        ``"nuts"``: Pyro NUTS over ``z`` on the collapsed likelihood, chains run
        one after the other with seeds ``seed + chain``. ``"laplace"``:
        ``z ~ N(ẑ, H⁻¹)`` at the collapsed MAP ``ẑ``.
    num_samples : int
        Draws per chain (after warm-up).
    num_chains : int
    seed : int
    config : SamplingConfig, optional
    progress : bool

    Returns
    -------
    Posterior
        ``samples`` ``(chains, draws, C, H, W)`` (in the prior's dtype), ``z``
        ``(chains, draws, d)``; ``sample_stats`` for NUTS: ``diverging``,
        ``accept_prob``, ``step_size``, ``num_steps``, ``tree_depth``;
        extras: ``noise_std``, ``x_converged`` (every CG solve converged),
        ``z_map`` / ``hessian`` for Laplace.

    Examples
    --------
    >>> import torch
    >>> from bayes_recon.models.supn_vae import SUPNVAE
    >>> from bayes_recon.operators import Identity
    >>> vae = SUPNVAE(image_size=6, latent_dim=2, widths=(4,), radius=1)
    >>> post = sample_posterior(torch.zeros(1, 1, 6, 6), Identity((1, 6, 6)), vae, 0.1,
    ...                         method="laplace", num_samples=10, num_chains=1, progress=False)
    >>> post.samples.shape
    torch.Size([1, 10, 1, 6, 6])
    """
    check_reconstruction_inputs(y, op, prior, 1.0 if noise_std is None else noise_std)
    check_choice("method", method, SAMPLING_METHODS)
    check_int("num_samples", num_samples, minimum=1)
    check_int("num_chains", num_chains, minimum=1)
    check_int("seed", seed, minimum=0)
    if y.shape[0] != 1:
        raise ValueError(f"y must hold a single measurement, shape (1, *range_shape), got {tuple(y.shape)}")
    cfg = SamplingConfig() if config is None else config
    if not isinstance(cfg, SamplingConfig):
        raise TypeError(f"config must be a SamplingConfig, got {type(cfg).__name__}")
    z0 = initial_latent(y, op, prior).to(torch.float64)
    extras = {}
    if noise_std is None or method == "laplace" or cfg.init == "map":
        fit = collapsed_map(y, op, prior, noise_std, z0=z0, temperature=cfg.temperature,
                            method=cfg.evidence, slq=cfg.slq, steps=cfg.map_steps)
        sigma, z_start = fit.noise_std, fit.z
        extras["z_map"] = fit.z[0].to(next(prior.parameters()).dtype)
    else:
        sigma, z_start = float(noise_std), z0
    if cfg.init == "encoder" and method == "nuts":
        z_start = z0
    stats = None
    if method == "nuts":
        z, stats = _nuts_latents(y, op, prior, sigma, num_samples, num_chains, seed, cfg, progress, z_start)
        extras["max_tree_depth"] = cfg.max_tree_depth
    else:
        z, h = _laplace_latents(z_start, y, op, prior, sigma, num_samples, num_chains, seed, cfg)
        extras["hessian"] = h.numpy()
    x, x_ok = _x_samples(z, y, op, prior, sigma, seed, cfg, progress)
    dtype = next(prior.parameters()).dtype
    return Posterior(x.to(dtype), z=z.to(dtype), sample_stats=stats, method=method, operator=op,
                     noise_std=sigma, seed=seed, x_converged=x_ok, **extras)
