"""Posterior draws with a hierarchical VAE prior: SVI over the latent groups, ``x | z, y`` exact.

The route: Pyro's ``SVI`` with an ``AutoNormal`` (mean-field Gaussian) guide on
:func:`~bayes_recon.models.hierarchical_collapsed_model`, whose likelihood
``p(y | z)`` has the image marginalised exactly, started at the PnP-HVAE
estimate's latents; then ``z_s ~ q`` and one exact draw ``x_s ~ p(x | z_s, y)``
each (perturbation–optimisation, :class:`~bayes_recon.models.GaussianImagePosterior`).
The image given the latents is exact; the mean-field guide over the latents is
the approximation (fitted by KL(q ‖ p), it tends to under-state their spread),
which is why the coverage of this route is measured (docs/hvae.md) rather than
assumed: near nominal for blur and inpainting, far too narrow for ×4
super-resolution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pyro
import pyro.optim
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.infer.autoguide.initialization import init_to_value
from tqdm.auto import tqdm

from .._validation import check_int, check_positive
from ..models.exact_conditional import GaussianImagePosterior, XSolverConfig
from ..models.hvae_program import (check_hvae_inputs, check_temperature,
                                   hierarchical_collapsed_model, latent_site_names)
from ..posterior import Posterior
from ._rng import pyro_seed
from .diffusion import _residual_norm
from .hvae import HVAEMAPConfig, hvae_map_estimate

__all__ = ["HVAEPosteriorConfig", "hvae_posterior"]


@dataclass
class HVAEPosteriorConfig:
    """Settings of :func:`hvae_posterior`.

    Attributes
    ----------
    steps : int
        SVI steps per chain.
    lr : float
        Adam learning rate of SVI.
    num_particles : int
        ELBO particles per step.
    init_scale : float
        The guide's initial standard deviation.
    temperature : float or tuple of float
        τ of the program's latent prior (1: the trained prior).
    start : HVAEMAPConfig
        The PnP-HVAE run whose latents start the guide.
    x_solver : XSolverConfig
        How the ``x | z, y`` draws are solved.
    """

    steps: int = 300
    lr: float = 0.02
    num_particles: int = 1
    init_scale: float = 0.05
    temperature: float | tuple = 1.0
    start: HVAEMAPConfig = field(default_factory=HVAEMAPConfig)
    x_solver: XSolverConfig = field(default_factory=XSolverConfig)

    def __post_init__(self):
        check_int("steps", self.steps, minimum=1)
        check_positive("lr", self.lr)
        check_int("num_particles", self.num_particles, minimum=1)
        check_positive("init_scale", self.init_scale)
        if not isinstance(self.temperature, (int, float)):
            self.temperature = tuple(float(t) for t in self.temperature)


def hvae_posterior(y: torch.Tensor, op, prior, noise_std: float, num_samples: int = 100,
                   num_chains: int = 2, seed: int = 0, config: HVAEPosteriorConfig | None = None,
                   progress: bool = True) -> Posterior:
    """Posterior samples of ``x`` with a hierarchical VAE prior; ``sample_posterior(method="hvae-svi")``.

    Each chain is an independent SVI fit (seed ``seed + chain``) from the same
    PnP-HVAE start.

    Parameters
    ----------
    y : torch.Tensor
        ``(1, *op.range_shape)``.
    op : LinearOperator
        ``domain_shape`` must tile for the prior.
    prior : HierarchicalVAE
    noise_std : float
        σ > 0.
    num_samples : int
        Draws per chain.
    num_chains : int
    seed : int
    config : HVAEPosteriorConfig, optional
    progress : bool

    Returns
    -------
    Posterior
        ``samples`` ``(chains, draws, C, H, W)``; ``z`` ``(chains, draws, d)``
        (the groups flattened, top first); ``sample_stats["data_misfit"]``
        (``‖y − A x_s‖ / (σ √m)``). Extras: ``noise_std``, ``elbo_history``
        (per chain, per step), ``temperature`` (the program's τ),
        ``start_temperature`` (the PnP-HVAE start's), ``x_converged``,
        ``x_cg_iterations``.

    Examples
    --------
    >>> import torch
    >>> from bayes_recon.models.hvae import HierarchicalVAE
    >>> from bayes_recon.operators import Identity
    >>> hvae = HierarchicalVAE(image_size=4, factors=(2, 1), width=4, latent_channels=1)
    >>> cfg = HVAEPosteriorConfig(steps=3, start=HVAEMAPConfig(max_iterations=2))
    >>> post = hvae_posterior(torch.rand(1, 1, 4, 4), Identity((1, 4, 4)), hvae, 0.1,
    ...                       num_samples=5, num_chains=1, config=cfg, progress=False)
    >>> post.samples.shape, post.z.shape
    (torch.Size([1, 5, 1, 4, 4]), torch.Size([1, 5, 20]))
    """
    sigma = check_hvae_inputs(y, op, prior, noise_std)
    check_int("num_samples", num_samples, minimum=1)
    check_int("num_chains", num_chains, minimum=1)
    check_int("seed", seed, minimum=0)
    if y.shape[0] != 1:
        raise ValueError(f"y must hold a single measurement, shape (1, *range_shape), got {tuple(y.shape)}")
    cfg = HVAEPosteriorConfig() if config is None else config
    if not isinstance(cfg, HVAEPosteriorConfig):
        raise TypeError(f"config must be an HVAEPosteriorConfig, got {type(cfg).__name__}")
    temps = tuple(check_temperature(cfg.temperature, prior.num_groups))
    start = hvae_map_estimate(y, op, prior, sigma, "pnp-hvae", cfg.start, progress=False)
    names = latent_site_names(prior)
    dtype = prior.stem.weight.dtype
    args = (y, op, prior, sigma, temps)  # ImageMarginal evaluates in float64 whatever y's dtype
    params = list(prior.parameters())
    flags = [p.requires_grad for p in params]
    chains_z, histories = [], []
    bar = tqdm(total=num_chains * cfg.steps, desc="HVAE SVI", disable=not progress, leave=False)
    try:
        for p in params:  # the guide's parameters only; restored below
            p.requires_grad_(False)
        for c in range(num_chains):
            with pyro_seed(seed + c), pyro.get_param_store().scope():
                guide = AutoNormal(hierarchical_collapsed_model, init_scale=cfg.init_scale,
                                   init_loc_fn=init_to_value(values=dict(zip(names, start.latents))))
                svi = SVI(hierarchical_collapsed_model, guide, pyro.optim.Adam({"lr": cfg.lr}),
                          Trace_ELBO(num_particles=cfg.num_particles))
                history = []
                for _ in range(cfg.steps):
                    history.append(-float(svi.step(*args)))
                    bar.update(1)
                with torch.no_grad():
                    draws = [guide(*args) for _ in range(num_samples)]
            chains_z.append([torch.cat([d[n] for d in draws]) for n in names])  # groups (S, k, h, w)
            histories.append(history)
    finally:
        bar.close()
        for p, f in zip(params, flags):
            p.requires_grad_(f)
    xs, zs, cg_its, x_ok = [], [], [], True
    gen = torch.Generator(device=y.device).manual_seed(seed)
    for groups in chains_z:
        with torch.no_grad():
            image = prior.decode(groups)
        post = GaussianImagePosterior(image, y.expand(num_samples, *y.shape[1:]), op, sigma, cfg.x_solver)
        xs.append(post.sample(1, generator=gen)[0])
        cg_its += post.cg_iterations
        x_ok &= post.converged
        zs.append(torch.cat([g.flatten(1) for g in groups], dim=1))
    samples = torch.stack(xs).to(dtype)
    if not torch.isfinite(samples).all():
        raise FloatingPointError("hvae-svi produced non-finite samples")
    m = math.prod(op.range_shape) * (2 if op.complex_range else 1)
    with torch.no_grad():
        y64 = y.to(torch.complex128 if y.is_complex() else torch.float64)
        misfit = _residual_norm(y64, op, samples.flatten(0, 1).to(torch.float64))
    misfit = (misfit / (sigma * math.sqrt(m))).reshape(num_chains, num_samples)
    return Posterior(samples, z=torch.stack(zs).to(dtype),
                     sample_stats={"data_misfit": misfit.cpu().numpy()}, method="hvae-svi",
                     operator=op, noise_std=sigma, seed=seed, temperature=temps,
                     elbo_history=histories, x_converged=bool(x_ok), x_cg_iterations=cg_its,
                     start_temperature=start.temperature)
