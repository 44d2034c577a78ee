"""Baselines sharing the DIP code: MC-dropout DIP and DIP with a fixed homoscedastic σ."""

from __future__ import annotations

import torch
from torch import nn

from .._validation import check_int, check_positive
from ..operators.base import LinearOperator
from .dip import DIPFit
from ..posterior import Posterior
from .linearised.evidence import forward_rows

__all__ = ["mc_dropout_posterior", "fixed_noise_posterior"]


def mc_dropout_posterior(fit: DIPFit, num_samples: int, seed: int = 0,
                         batch_size: int = 100) -> Posterior:
    """MC-dropout DIP: network outputs with dropout active at the fitted weights.

    The fit must use a network with dropout (``UNetConfig(dropout=p)``, p > 0);
    only the dropout layers are switched to training mode (GroupNorm has no
    running statistics). Returns a ``Posterior`` with ``method="mc-dropout-dip"``.
    """
    if not isinstance(fit, DIPFit):
        raise TypeError(f"fit must be a DIPFit, got {type(fit).__name__}")
    check_int("num_samples", num_samples, minimum=2)
    check_int("seed", seed, minimum=0)
    check_int("batch_size", batch_size, minimum=1)
    drops = [m for m in fit.network.modules() if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0]
    if not drops:
        raise ValueError("fit.network must contain dropout layers with p > 0 for MC dropout, got none "
                         "(fit with network_config=UNetConfig(dropout=p))")
    net = fit.network
    out = []
    try:
        for d in drops:
            d.train()
        with torch.random.fork_rng(devices=[fit.input.device] if fit.input.is_cuda else []), torch.no_grad():
            torch.manual_seed(seed)
            for start in range(0, num_samples, batch_size):
                b = min(batch_size, num_samples - start)
                out.append(net(fit.input.expand(b, *fit.input.shape[1:])))
    finally:
        net.eval()
    samples = torch.cat(out)[None]
    p = drops[0].p
    return Posterior(samples, method="mc-dropout-dip", seed=seed, dropout=p,
                     map_estimate=fit.x.detach().clone())


def fixed_noise_posterior(fit: DIPFit, op: LinearOperator, num_samples: int, seed: int = 0,
                          std: float | None = None, probes: int = 16) -> Posterior:
    """DIP with a fixed homoscedastic image-space σ (no evidence): ``x ~ N(x*, σ² I)``.

    Without ``std``, ``σ² = ||y - A x*||² / ||A||_F²``: the per-pixel noise level
    that, pushed through ``A``, explains the measurement residual;
    ``||A||_F² = E||A ε||²`` is estimated from ``probes`` seeded Gaussian probes.
    """
    if not isinstance(fit, DIPFit):
        raise TypeError(f"fit must be a DIPFit, got {type(fit).__name__}")
    check_int("num_samples", num_samples, minimum=2)
    check_int("seed", seed, minimum=0)
    gen = torch.Generator().manual_seed(seed)
    if std is None:
        check_int("probes", probes, minimum=1)
        eps = torch.randn(probes, op.domain_size, generator=gen, dtype=torch.float64)
        fro2 = float(forward_rows(op, eps).pow(2).sum(1).mean())
        x = fit.x.to(torch.float64).reshape(1, -1)
        y = fit.y.to(torch.complex128 if fit.y.is_complex() else torch.float64)
        y = torch.cat([y.real, y.imag], 1) if y.is_complex() else y
        resid = float((y.reshape(1, -1) - forward_rows(op, x)).pow(2).sum())
        std = (resid / fro2) ** 0.5
        if std == 0.0:
            raise ValueError("the DIP fits y exactly (zero residual); pass std= explicitly")
    std = check_positive("std", std)
    eps = torch.randn(num_samples, *fit.x.shape[1:], generator=gen, dtype=fit.x.dtype)
    samples = (fit.x.detach() + std * eps.to(fit.x.device))[None]
    return Posterior(samples, method="fixed-sigma-dip", seed=seed, image_std=std,
                     map_estimate=fit.x.detach().clone())
