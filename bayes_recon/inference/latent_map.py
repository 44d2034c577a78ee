"""Optimisation helpers shared by the SUPN inference methods.

* :func:`lbfgs` / :func:`gradient_descent`: small minimisers (L-BFGS with a
  strong-Wolfe line search; gradient descent with Barzilai–Borwein steps and
  Armijo backtracking).
* :func:`initial_latent`: the encoder applied to a rough reconstruction.
* :func:`collapsed_map`: the MAP of ``z`` under the collapsed posterior
  ``p(z | y) ∝ p(y | z) p(z)`` — optionally jointly with ``σ`` (type-II
  maximum likelihood when ``noise_std`` is None).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from ..operators import rough_reconstruction
from ..models.marginal import SLQConfig, collapsed_log_likelihood, latent_log_prior

__all__ = ["lbfgs", "gradient_descent", "initial_latent", "CollapsedMAP", "collapsed_map",
           "default_noise_guess"]


def lbfgs(fn: Callable[[torch.Tensor], torch.Tensor], v0: torch.Tensor, steps: int,
          history: int = 10) -> torch.Tensor:
    """Minimise a scalar ``fn(v)`` from ``v0`` with at most ``steps`` L-BFGS iterations."""
    v = v0.detach().clone().requires_grad_(True)
    opt = torch.optim.LBFGS([v], lr=1.0, max_iter=steps, history_size=history,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-10,
                            tolerance_change=1e-14)

    def closure():
        opt.zero_grad()
        loss = fn(v)
        loss.backward()
        return loss

    opt.step(closure)
    out = v.detach()
    if not bool(torch.isfinite(out).all()):
        raise FloatingPointError("L-BFGS produced non-finite values")
    return out


def gradient_descent(fn: Callable[[torch.Tensor], torch.Tensor], x0: torch.Tensor, steps: int,
                     armijo: float = 1e-4, max_halvings: int = 40) -> torch.Tensor:
    """Minimise ``fn`` by gradient steps with Barzilai–Borwein step sizes and Armijo backtracking.

    Every accepted step lowers ``fn`` (monotone); stops early when no step of
    the backtracking search decreases it.
    """

    def value_grad(x):
        x = x.detach().requires_grad_(True)
        f = fn(x)
        (g,) = torch.autograd.grad(f, x)
        return f.detach(), g

    x = x0.detach()
    f, g = value_grad(x)
    step = float(x.norm().clamp_min(1.0) / g.norm().clamp_min(1e-30)) * 1e-2
    for _ in range(steps):
        gg = float(g.square().sum())
        if gg == 0.0:
            break
        for _ in range(max_halvings):
            x_new = x - step * g
            f_new, g_new = value_grad(x_new)
            if bool(torch.isfinite(f_new)) and float(f_new) <= float(f) - armijo * step * gg:
                break
            step *= 0.5
        else:
            break
        s, d = x_new - x, g_new - g
        sd = float((s * d).sum())
        # BB1 step for the next iteration; keep the last accepted step when curvature is not positive.
        step = float(s.square().sum()) / sd if sd > 0 else step * 2.0
        x, f, g = x_new, f_new, g_new
    return x


def initial_latent(y: torch.Tensor, op, prior) -> torch.Tensor:
    """The encoder's mean on the rough reconstruction (FBP or ``Aᵀy/‖A‖²``), ``(B, d)``."""
    dtype = next(prior.parameters()).dtype
    rough = rough_reconstruction(op, y).to(dtype)
    with torch.no_grad():
        return prior.encode(rough).loc


def default_noise_guess(y: torch.Tensor) -> float:
    """A starting σ for type-II estimation: 10 % of the mean modulus of ``y``."""
    return max(0.1 * float(y.abs().mean()), 1e-6)


@dataclass
class CollapsedMAP:
    """MAP of ``z`` under the collapsed posterior (and the type-II σ when estimated).

    Attributes
    ----------
    z : torch.Tensor
        ``(B, d)`` float64.
    noise_std : float
        The given σ, or the estimate.
    log_posterior : torch.Tensor
        ``(B,)`` collapsed log posterior at the optimum.
    """

    z: torch.Tensor
    noise_std: float
    log_posterior: torch.Tensor


def collapsed_map(y, op, prior, noise_std, z0: torch.Tensor | None = None, temperature: float = 1.0,
                  method: str = "auto", slq: SLQConfig | None = None, steps: int = 100) -> CollapsedMAP:
    """Maximise ``log p(y | z, σ) + log p(z)`` over ``z`` (and ``log σ`` if ``noise_std`` is None).

    With ``noise_std=None`` one σ is shared by the whole batch (type-II
    maximum likelihood of the collapsed evidence, jointly with the MAP of ``z``).
    """
    z0 = initial_latent(y, op, prior) if z0 is None else z0
    z0 = z0.detach().to(torch.float64)
    b, d = z0.shape
    if noise_std is None:
        v0 = torch.cat([z0.reshape(-1), z0.new_tensor([math.log(default_noise_guess(y))])])

        def neg(v):
            z, sigma = v[:-1].reshape(b, d), v[-1].exp()
            return -(collapsed_log_likelihood(z, y, op, prior, sigma, method, slq)
                     + latent_log_prior(z, temperature)).sum()

        v = lbfgs(neg, v0, steps)
        z, sigma = v[:-1].reshape(b, d), float(v[-1].exp())
    else:
        sigma = float(noise_std)

        def neg(z):
            return -(collapsed_log_likelihood(z, y, op, prior, sigma, method, slq)
                     + latent_log_prior(z, temperature)).sum()

        z = lbfgs(neg, z0, steps)
    with torch.no_grad():
        lp = (collapsed_log_likelihood(z, y, op, prior, sigma, method, slq)
              + latent_log_prior(z, temperature))
    return CollapsedMAP(z=z, noise_std=sigma, log_posterior=lp)
