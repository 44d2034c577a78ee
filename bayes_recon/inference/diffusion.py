"""Posterior sampling with a diffusion prior: DPS (Chung et al., ICLR 2023) and DiffPIR (Zhu et al., CVPR 2023).

Both run the prior's reverse process on a respaced grid of ``steps`` times
``t_K > … > t_1 = 0`` (evenly spaced over the schedule) and pull each step
towards the measurement ``y = A x + ε``:

- **DPS**: a DDPM ancestral step, then ``u ← u − ζ ∇_{u_t} ‖y − A x̂_0(u_t)‖``
  with ``x̂_0`` the Tweedie estimate (the gradient goes through the network)
  and ``u`` the model-space image; ``ζ`` is the *guidance* (the step on the
  norm, not its square, as in the authors' code, so ``ζ`` means what it
  means there; its scale depends on ``‖A‖``, see docs/diffusion.md).
- **DiffPIR**: the Tweedie estimate ``x̂_0``, then the data proximal step
  ``argmin ‖y − A x‖² + ρ_t ‖x − x̂_0‖²`` with ``ρ_t = λ σ² / σ̄_t²`` (``σ̄_t``
  the denoiser's noise level in image units), solved by conjugate gradients,
  then a DDIM-like step that re-noises with the effective noise mixed with
  fresh noise in proportion ``ζ``.

Neither is an exact posterior sampler, even with the exact score (the tests
measure how far each is on a Gaussian prior, where the posterior is known);
the library reports their calibration like every other method's.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .._validation import check_int, check_positive, check_tensor
from ..models.diffusion import DiffusionPrior
from ..models.program import check_measurement, squared_residual
from ..operators.cg import conjugate_gradient
from ..posterior import Posterior

__all__ = ["DIFFUSION_METHODS", "DPSConfig", "DiffPIRConfig", "respaced_timesteps", "data_proximal_step",
           "diffusion_posterior", "check_diffusion_inputs"]

DIFFUSION_METHODS = ("dps", "diffpir")


@dataclass
class DPSConfig:
    """Settings of DPS (``sample_posterior(..., method="dps")``).

    The defaults (100 steps, ζ = 0.1) had the best mean test log-likelihood over a
    guidance × steps sweep on *training* images (CT, radial MRI, deblurring;
    ``benchmarks/diffusion_calibration.py sweep``, docs/diffusion.md). No single ζ
    suits every operator: there the best ζ was 0.1 for CT, 0.3–3 for MRI and 1 for
    deblurring.

    Attributes
    ----------
    steps : int
        Reverse steps (respaced from the prior's schedule), 2 to ``T``.
    guidance : float
        ``ζ > 0``, the step on ``‖y − A x̂_0‖`` per reverse step.
    batch_size : int
        Samples run together (memory: one network forward and backward each).
    """

    steps: int = 100
    guidance: float = 0.1
    batch_size: int = 16

    def __post_init__(self):
        check_int("steps", self.steps, minimum=2)
        check_positive("guidance", self.guidance)
        check_int("batch_size", self.batch_size, minimum=1)


@dataclass
class DiffPIRConfig:
    """Settings of DiffPIR (``sample_posterior(..., method="diffpir")``).

    The defaults (100 steps, λ = 7, ζ = 0.3; λ and ζ as in the paper's deblurring
    runs) had the best mean test log-likelihood of the λ × ζ × steps sweep on
    training images (docs/diffusion.md).

    Attributes
    ----------
    steps : int
        Reverse steps, 2 to ``T``.
    regularisation : float
        ``λ > 0`` in ``ρ_t = λ σ² / σ̄_t²``: the weight of the denoiser's estimate
        against the data in each proximal step.
    zeta : float
        ``ζ ∈ [0, 1]``: the share of fresh noise when re-noising (0 is
        deterministic given the start, 1 is a DDPM-like step).
    cg_tol, cg_max_iter
        Stopping rule of the proximal solves (a
        :class:`~bayes_recon.operators.cg.CGConvergenceWarning` if not met; the
        worst residual is recorded).
    batch_size : int
    """

    steps: int = 100
    regularisation: float = 7.0
    zeta: float = 0.3
    cg_tol: float = 1e-4
    cg_max_iter: int = 300
    batch_size: int = 16

    def __post_init__(self):
        check_int("steps", self.steps, minimum=2)
        check_positive("regularisation", self.regularisation)
        if isinstance(self.zeta, bool) or not isinstance(self.zeta, (int, float)) or not 0 <= self.zeta <= 1:
            raise ValueError(f"zeta must be a number in [0, 1], got {self.zeta!r}")
        check_positive("cg_tol", self.cg_tol)
        check_int("cg_max_iter", self.cg_max_iter, minimum=1)
        check_int("batch_size", self.batch_size, minimum=1)


def respaced_timesteps(num_steps: int, steps: int) -> torch.Tensor:
    """``steps`` decreasing integer times from ``num_steps − 1`` to 0, evenly spaced.

    Examples
    --------
    >>> respaced_timesteps(1000, 5).tolist()
    [999, 749, 500, 250, 0]
    """
    check_int("steps", steps, minimum=2)
    if steps > num_steps:
        raise ValueError(f"steps must be at most the prior's schedule length {num_steps}, got {steps}")
    return torch.linspace(num_steps - 1, 0, steps, dtype=torch.float64).round().long()


def check_diffusion_inputs(y, op, prior, noise_std) -> float:
    """Validate ``(y, op, prior, noise_std)`` for the diffusion samplers; returns σ."""
    if not isinstance(prior, DiffusionPrior):
        raise TypeError(f"prior must be a DiffusionPrior for DPS/DiffPIR, got {type(prior).__name__}")
    check_measurement(y, op, prior.image_shape)
    if y.shape[0] != 1:
        raise ValueError(f"y must hold a single measurement, shape (1, *range_shape), got "
                         f"{tuple(y.shape)}")
    if noise_std is None:
        raise ValueError("noise_std must be given (> 0) for DPS/DiffPIR: they do not estimate it")
    return check_positive("noise_std", noise_std)


def data_proximal_step(y: torch.Tensor, op, x0: torch.Tensor, rho: float, tol: float = 1e-5,
                       max_iter: int = 200):
    """DiffPIR's data step ``argmin_x ‖y − A x‖² + ρ ‖x − x0‖²``, by conjugate gradients.

    Solves ``(AᴴA + ρ I) x = Aᴴy + ρ x0`` slice-wise, started at ``x0``.

    Parameters
    ----------
    y : torch.Tensor
        ``(1 or B, *op.range_shape)``.
    op : LinearOperator
    x0 : torch.Tensor
        ``(B, *op.domain_shape)``.
    rho : float
        ρ > 0.
    tol, max_iter
        CG stopping rule (relative residual).

    Returns
    -------
    CGResult
        ``x`` ``(B, *op.domain_shape)``, ``converged``, ``relative_residual``, ``iterations``.
    """
    rho = check_positive("rho", rho)
    check_tensor("x0", x0, shape=(None, *op.domain_shape))
    rhs = op.adjoint(y).expand(x0.shape[0], *op.domain_shape) + rho * x0
    return conjugate_gradient(lambda v: op.normal(v) + rho * v, rhs, x0=x0, tol=tol, max_iter=max_iter)


def _residual_norm(y, op, x):
    return squared_residual(y, op, x).sqrt()


def _dps_run(y, op, prior, gen, n, ts, cfg, bar, step):
    a_all = prior.alphas_cumprod
    dtype = y.real.dtype
    u = torch.randn((n, *prior.image_shape), generator=gen, dtype=dtype, device=y.device)
    for i, t in enumerate(ts):
        a = a_all[t].to(dtype)
        a_prev = a_all[ts[i + 1]].to(dtype) if i + 1 < len(ts) else torch.ones((), dtype=dtype,
                                                                               device=y.device)
        u = u.detach().requires_grad_(True)
        eps = prior.predict_noise(u, t.expand(n).to(y.device))
        u0 = (u - (1 - a).sqrt() * eps) / a.sqrt()
        norm = _residual_norm(y, op, prior.to_image(u0))
        (grad,) = torch.autograd.grad(norm.sum(), u)
        with torch.no_grad():
            beta = 1 - a / a_prev
            mean = ((a / a_prev).sqrt() * (1 - a_prev) * u + a_prev.sqrt() * beta * u0) / (1 - a)
            if i + 1 < len(ts):
                z = torch.randn(u.shape, generator=gen, dtype=dtype, device=y.device)
                mean = mean + (beta * (1 - a_prev) / (1 - a)).sqrt() * z
            u = mean - step * grad
        bar.update(1)
    return prior.to_image(u.detach())


def _diffpir_run(y, op, prior, gen, n, ts, cfg, sigma, bar, record):
    """``n`` DiffPIR draws; the worst CG solve so far is kept in ``record``."""
    a_all = prior.alphas_cumprod
    dtype = y.real.dtype
    u = torch.randn((n, *prior.image_shape), generator=gen, dtype=dtype, device=y.device)
    record.setdefault("cg_max_residual", 0.0)
    record.setdefault("cg_max_iterations", 0)
    record.setdefault("cg_converged", True)
    with torch.no_grad():
        for i, t in enumerate(ts):
            a = a_all[t].to(dtype)
            eps = prior.predict_noise(u, t.expand(n).to(y.device))
            x0 = prior.to_image((u - (1 - a).sqrt() * eps) / a.sqrt())
            sbar = prior.scale * ((1 - a) / a).sqrt()
            rho = cfg.regularisation * sigma ** 2 / sbar ** 2
            sol = data_proximal_step(y, op, x0, float(rho), cfg.cg_tol, cfg.cg_max_iter)
            record["cg_max_residual"] = max(record["cg_max_residual"],
                                            float(torch.as_tensor(sol.relative_residual).max()))
            record["cg_max_iterations"] = max(record["cg_max_iterations"], int(sol.iterations))
            record["cg_converged"] = record["cg_converged"] and bool(sol.converged)
            u0 = prior.to_model(sol.x)
            if i + 1 == len(ts):
                u = u0
            else:
                eps_hat = (u - a.sqrt() * u0) / (1 - a).sqrt()
                a_prev = a_all[ts[i + 1]].to(dtype)
                z = torch.randn(u.shape, generator=gen, dtype=dtype, device=y.device)
                mix = math.sqrt(1 - cfg.zeta) * eps_hat + math.sqrt(cfg.zeta) * z
                u = a_prev.sqrt() * u0 + (1 - a_prev).sqrt() * mix
            bar.update(1)
    return prior.to_image(u)


def diffusion_posterior(y: torch.Tensor, op, prior: DiffusionPrior, noise_std: float, method: str = "dps",
                        num_samples: int = 8, num_chains: int = 2, seed: int = 0, config=None,
                        progress: bool = True) -> Posterior:
    """DPS or DiffPIR samples of one image; what ``sample_posterior`` runs for these methods.

    Parameters
    ----------
    y : torch.Tensor
        ``(1, *op.range_shape)``.
    op : LinearOperator
    prior : DiffusionPrior
        Image shape ``op.domain_shape``.
    noise_std : float
        σ > 0 (DiffPIR weighs its data step with it; DPS records it).
    method : {"dps", "diffpir"}
    num_samples, num_chains : int
        Independent runs; chain ``c`` draws all its runs from the generator
        seeded ``seed + c`` on ``y``'s device.
    seed : int
    config : DPSConfig or DiffPIRConfig, optional
    progress : bool
        A bar over the reverse steps.

    Returns
    -------
    Posterior
        ``samples`` ``(chains, draws, C, H, W)`` in ``y``'s real dtype;
        ``sample_stats["data_misfit"]`` ``(chains, draws)``: ``‖y − A x‖ / (σ √m)``
        (≈ 1 when the sample explains the data to the noise level). Extras:
        ``steps``, ``timesteps``, ``guidance`` (DPS) or ``regularisation``,
        ``zeta``, ``cg_max_residual``, ``cg_max_iterations``, ``cg_converged``
        (DiffPIR), ``seconds_per_sample``.
    """
    sigma = check_diffusion_inputs(y, op, prior, noise_std)
    if method not in DIFFUSION_METHODS:
        raise ValueError(f"method must be one of {list(DIFFUSION_METHODS)}, got {method!r}")
    check_int("num_samples", num_samples, minimum=1)
    check_int("num_chains", num_chains, minimum=1)
    check_int("seed", seed, minimum=0)
    cls = DPSConfig if method == "dps" else DiffPIRConfig
    cfg = cls() if config is None else config
    if not isinstance(cfg, cls):
        raise TypeError(f"config must be a {cls.__name__} for method={method!r}, got {type(cfg).__name__}")
    ts = respaced_timesteps(prior.num_steps, cfg.steps).to(prior.alphas_cumprod.device)
    was_training = prior.training
    prior.eval()
    start = time.perf_counter()
    record = {}
    batches = [(c, b) for c in range(num_chains) for b in range(0, num_samples, cfg.batch_size)]
    bar = tqdm(total=len(batches) * len(ts), desc=method, disable=not progress, leave=False)
    try:
        gens = {c: torch.Generator(device=y.device).manual_seed(seed + c) for c in range(num_chains)}
        out = {c: [] for c in range(num_chains)}
        for c, b in batches:
            n = min(cfg.batch_size, num_samples - b)
            if method == "dps":
                # DPS differentiates w.r.t. the image only (autograd.grad), so the
                # weights' requires_grad flags are left as the caller set them.
                x = _dps_run(y, op, prior, gens[c], n, ts, cfg, bar, cfg.guidance)
            else:
                x = _diffpir_run(y, op, prior, gens[c], n, ts, cfg, sigma, bar, record)
            out[c].append(x)
        chains = [torch.cat(out[c]) for c in range(num_chains)]
    finally:
        bar.close()
        prior.train(was_training)
    seconds = time.perf_counter() - start
    samples = torch.stack(chains)  # (chains, draws, C, H, W)
    if not torch.isfinite(samples).all():
        raise FloatingPointError(f"{method} produced non-finite samples (guidance or steps too large?)")
    m = math.prod(op.range_shape) * (2 if op.complex_range else 1)
    with torch.no_grad():
        misfit = _residual_norm(y, op, samples.flatten(0, 1)) / (sigma * math.sqrt(m))
    settings = ({"guidance": cfg.guidance} if method == "dps" else
                {"regularisation": cfg.regularisation, "zeta": cfg.zeta})
    return Posterior(samples, sample_stats={"data_misfit": misfit.reshape(num_chains, num_samples).cpu().numpy()},
                     method=method, operator=op, noise_std=sigma, seed=seed, steps=cfg.steps,
                     timesteps=ts.cpu().numpy(), seconds_per_sample=seconds / (num_chains * num_samples),
                     **settings, **record)
