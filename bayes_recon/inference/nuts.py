"""Pyro's NUTS with per-draw statistics from its public interface, and an initial dense mass matrix.

:func:`_run_nuts` runs one chain of ``pyro.infer.MCMC(NUTS(...))`` on a Pyro
program (or a potential function) and reads, per kept draw, divergences,
acceptance, step size, gradient evaluations and tree depth. A dense mass
matrix can start from a given ``M⁻¹`` (the inverse Hessian of the Laplace fit)
through Pyro's public ``mass_matrix_adapter`` setter.
"""

from __future__ import annotations

import numpy as np
import torch
from pyro.infer import MCMC, NUTS
from pyro.infer.mcmc.adaptation import BlockMassMatrix

from ..models.marginal import collapsed_log_posterior
from ._rng import pyro_seed

__all__ = ["NUTS_STATS", "MAX_TREE_DEPTH"]

#: Largest NUTS tree depth accepted (Pyro's default): up to 2¹⁰ − 1 gradients per draw.
MAX_TREE_DEPTH = 10


class _InitialMassMatrix(BlockMassMatrix):
    """Pyro's block mass matrix, configured with a given initial inverse mass matrix.

    ``configure`` is Pyro's, followed by the public ``inverse_mass_matrix``
    setter; warm-up adaptation (if on) proceeds from there.
    """

    def __init__(self, inverse_mass_matrix: dict):
        super().__init__()
        self._initial = inverse_mass_matrix

    def configure(self, mass_matrix_shape, adapt_mass_matrix=True, options={}):
        super().configure(mass_matrix_shape, adapt_mass_matrix, options=options)
        self.inverse_mass_matrix = {k: v.to(**options) for k, v in self._initial.items()}


class _CountingNUTS(NUTS):
    """Pyro's NUTS, unchanged, except that ``setup`` reports when it is done.

    The per-draw gradient count is the number of potential evaluations between
    consecutive ``hook_fn`` calls; the first draw needs to know where setup
    (initial energy, step-size search) stopped counting.
    """

    def __init__(self, *args, on_setup, **kwargs):
        super().__init__(*args, **kwargs)
        self._on_setup = on_setup

    def setup(self, warmup_steps, *args, **kwargs):
        super().setup(warmup_steps, *args, **kwargs)
        self._on_setup()


def _potential(y, op, prior, sigma, cfg, counter):
    """``U(z) = −log p(z | y)`` (collapsed) for NUTS; ``counter[0]`` counts evaluations."""
    def potential_fn(params):
        counter[0] += 1
        z = params["z"].reshape(1, -1)
        lp = collapsed_log_posterior(z, y, op, prior, sigma, cfg.temperature, cfg.evidence, cfg.slq)
        return -lp[0]

    return potential_fn


#: Per-draw NUTS statistics of :func:`sample_posterior` (keys of ``sample_stats``).
NUTS_STATS = ("diverging", "accepted", "step_size", "num_steps", "tree_depth")


def _counting(model, counter):
    """``model`` that increments ``counter[0]`` per call (one potential evaluation of NUTS)."""
    def counted(*args, **kwargs):
        counter[0] += 1
        return model(*args, **kwargs)

    return counted


def _run_nuts(potential_fn, counter, start, num_samples, warmup, seed, max_tree_depth=6,
              target_accept=0.8, progress=False, *, model=None, model_args=(), model_kwargs=None,
              inverse_mass_matrix=None, adapt_mass_matrix=True, thin=1):
    """One NUTS chain with per-draw statistics from Pyro's public interface only.

    Parameters
    ----------
    potential_fn : callable or None
        ``{"z": (d,)} → scalar`` potential energy; must increment ``counter[0]``
        once per call (one call = one gradient evaluation = one leapfrog step).
        None when ``model`` is given.
    counter : list of int
        Counts potential evaluations (done here for a ``model``: one model
        call per evaluation after setup).
    start : torch.Tensor
        Initial ``z``, shaped as the site (``(d,)`` for a potential,
        ``(B, d)`` for :func:`~bayes_recon.models.collapsed_model`).
    num_samples, warmup : int
        Kept draws and adaptation steps.
    seed : int
        Seeds Pyro's global generators for the run (restored after).
    model : callable, optional
        A Pyro program with latent site ``z``: runs ``NUTS(model)`` on
        ``model(*model_args, **model_kwargs)``.
    inverse_mass_matrix : torch.Tensor, optional
        ``(D, D)`` (``D = start.numel()``): a dense mass matrix (``full_mass``)
        started at ``M⁻¹ = inverse_mass_matrix``; None keeps Pyro's diagonal default.
    adapt_mass_matrix : bool
        Pyro's windowed mass-matrix adaptation during warm-up.
    thin : int
        Keep every ``thin``-th transition: ``num_samples · thin`` transitions
        after warm-up, ``num_samples`` kept.

    Returns
    -------
    z : torch.Tensor
        ``(num_samples, d)``.
    stats : dict of str to numpy.ndarray
        Each ``(num_samples,)``: ``diverging`` (Pyro's divergence indices from
        the kernel's ``diagnostics()``, as ``MCMC.diagnostics()`` reports them),
        ``accepted`` (the draw moved away from the previous state; its mean is
        Pyro's ``acceptance rate`` when ``thin=1``), ``step_size``
        (``kernel.step_size``), ``num_steps`` (potential-gradient evaluations
        = leapfrog steps of the trajectory), ``tree_depth`` (the NUTS doubling
        count: a trajectory of depth ``j`` has ``2^(j−1) ≤ num_steps ≤ 2^j − 1``
        steps, so ``j`` is the bit length of ``num_steps``). With ``thin > 1``
        each kept draw summarises the ``thin`` transitions that led to it:
        divergence or move in any of them, gradient evaluations summed, the
        largest tree depth, the last step size.
    info : dict
        ``acceptance_rate`` (float) and ``divergences`` (list of draw indices)
        from the kernel's ``diagnostics()``.

    Notes
    -----
    NUTS's per-draw mean Metropolis acceptance probability is not exposed by
    Pyro (only a running mean in private state), so it is not reported.
    """
    state = {"count": None, "prev": start.detach().clone()}
    steps, sizes, prevs = [], [], []

    def on_setup():
        state["count"] = counter[0]

    def hook(kernel, params, stage, i):
        n = counter[0]
        delta, state["count"] = n - state["count"], n
        z_now = params["z"].detach().clone()
        if not stage.startswith("Warmup"):
            steps.append(delta)
            sizes.append(float(kernel.step_size))
            prevs.append(state["prev"])
            if len(steps) == num_samples * thin:
                # The kernel's public diagnostics (what MCMC.diagnostics() reports per chain),
                # read here because MCMC.diagnostics() also computes R-hat, which needs ≥ 4 draws.
                diag = kernel.diagnostics()
                state["diag"] = {"divergences": [int(k) for k in diag["divergences"]],
                                 "acceptance rate": float(diag["acceptance rate"])}
        state["prev"] = z_now

    with pyro_seed(seed):  # NUTS draws from the global generators
        kernel = _CountingNUTS(model=None if model is None else _counting(model, counter),
                               potential_fn=potential_fn, max_tree_depth=max_tree_depth,
                               target_accept_prob=target_accept, adapt_step_size=True,
                               adapt_mass_matrix=adapt_mass_matrix,
                               full_mass=inverse_mass_matrix is not None, on_setup=on_setup)
        if inverse_mass_matrix is not None:  # Pyro's public mass-matrix adapter setter
            kernel.mass_matrix_adapter = _InitialMassMatrix({("z",): inverse_mass_matrix})
        mcmc = MCMC(kernel, num_samples=num_samples * thin, warmup_steps=warmup,
                    initial_params={"z": start.detach().to(torch.float64)}, num_chains=1,
                    disable_progbar=not progress, hook_fn=hook)
        mcmc.run(*model_args, **(model_kwargs or {}))
    z_all = mcmc.get_samples(group_by_chain=True)["z"][0].detach()  # (num_samples·thin, *site shape)
    n = num_samples * thin
    diag = state["diag"]
    divergences = diag["divergences"]
    diverging = np.zeros(n, dtype=bool)
    diverging[divergences] = True
    # A rejected NUTS transition returns the previous state bit for bit.
    accepted = np.array([not torch.equal(z_all[i], prevs[i].to(z_all.dtype)) for i in range(n)])
    num_steps = np.asarray(steps, dtype=np.int64)
    depth = np.array([int(k).bit_length() for k in num_steps], dtype=np.int64)
    blocks = (num_samples, thin)  # kept draw i closes transitions i·thin … (i+1)·thin − 1
    stats = {
        "diverging": diverging.reshape(blocks).any(1),
        "accepted": accepted.reshape(blocks).any(1),
        "step_size": np.asarray(sizes, dtype=np.float64).reshape(blocks)[:, -1],
        "num_steps": num_steps.reshape(blocks).sum(1),
        "tree_depth": depth.reshape(blocks).max(1),
    }
    z = z_all[thin - 1::thin]
    info = {"acceptance_rate": diag["acceptance rate"], "divergences": divergences}
    return z, stats, info
