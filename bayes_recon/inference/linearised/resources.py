"""Memory and time estimates of the three computational paths, and the memory-aware choice.

``exact``: dense Jacobian ``J (N, P)``, the distance-class pieces
``Σ_b D_b m²`` float64 numbers (and ``Σ_b D_b N²`` more when ``m ≥ N``) and dense
``N x N`` posterior covariances.
``subspace``: ``2 r`` matrix-free products, ``W (r, P)``, bases ``Q (N, r)`` and
``U (m, r)``, pieces ``2 Σ_b D_b r²`` and ``r x r`` factorisations.
``scalable``: matrix-free ``J v`` / ``Jᵀ u`` (activation memory of ``chunk``
batched network passes), a rank-``r`` Nyström sketch and batches of Matheron
samples. Times are first-order models (dense BLAS at ``FLOPS`` flop/s; one
``J``-product ≈ 3 forward passes, measured once) good to a factor of a few: they
rank the paths, they are not benchmarks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

__all__ = ["PathEstimate", "available_memory", "network_cost", "estimate_paths", "choose_path", "plan_path"]

FLOPS = 5e9             # sustained float64 GEMM rate assumed for one CPU core
DEFAULT_MEMORY_FRACTION = 0.5


@dataclass
class PathEstimate:
    """Predicted peak memory (bytes) and wall time (s) of one path for the whole UQ run."""

    path: str
    bytes: float
    seconds: float

    def describe(self) -> str:
        return f"{self.path}: ~{self.bytes / 2**30:.2f} GiB, ~{self.seconds:.0f} s"


def available_memory() -> int:
    """Bytes of memory available to new allocations (``psutil``; ``/proc/meminfo`` as fallback)."""
    try:
        import psutil
        return int(psutil.virtual_memory().available)
    except ImportError:  # pragma: no cover - psutil is a declared dependency
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    raise RuntimeError("cannot determine available memory; pass config.memory_budget")


def network_cost(network: torch.nn.Module, input: torch.Tensor) -> tuple[float, float]:
    """``(activation bytes, seconds)`` of one forward pass at ``input`` (leaf-module outputs summed)."""
    total = [0]

    def hook(_m, _i, out):
        if torch.is_tensor(out):
            total[0] += out.numel() * out.element_size()

    handles = [m.register_forward_hook(hook) for m in network.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            t0 = time.perf_counter()
            network(input)
            seconds = time.perf_counter() - t0
    finally:
        for h in handles:
            h.remove()
    return float(total[0]), seconds


def estimate_paths(n: int, p: int, m: int, group_sizes: list[tuple[int, int]], act_bytes: float,
                   forward_seconds: float, itemsize: int, config) -> dict[str, PathEstimate]:
    """Peak memory and time of ``exact``, ``subspace`` and ``scalable``.

    Parameters
    ----------
    n, p, m : int
        Pixels, linearised weights, (real) measurements.
    group_sizes : list of (int, int)
        ``(P_b, D_b)`` per group: weights and distance classes.
    act_bytes, forward_seconds : float
        From :func:`network_cost`.
    itemsize : int
        Bytes per number of the network dtype.
    config : LaplaceConfig

    Examples
    --------
    >>> from bayes_recon.inference.linearised.config import LaplaceConfig
    >>> est = estimate_paths(784, 60_000, 800, [(60_000, 6)], 4e6, 0.01, 4, LaplaceConfig())
    >>> sorted(est), est["exact"].bytes > 784 * 60_000 * 4
    (['exact', 'scalable', 'subspace'], True)
    """
    chunk, rank = config.jacobian_chunk, config.preconditioner_rank
    d_total = sum(d for _, d in group_sizes)
    p_max = max(pb for pb, _ in group_sizes)
    # ExactKernel's data route (m < N) builds m x m pieces from A J_b and forms K once at the end;
    # the image route builds N x N pieces and keeps them.
    data_route = m < n
    piece_side = min(n, m)
    exact_bytes = (n * p * itemsize + d_total * (m * m + (0 if data_route else n * n)) * 8
                   + 2 * n * p_max * 8 + (m * p_max * 8 if data_route else 0)
                   + 4 * n * n * 8 + 2 * n * m * 8 + 3 * chunk * act_bytes)
    product = 3 * forward_seconds                        # one J-product, per vector
    exact_seconds = (n * product                                         # dense J
                     + sum(2.0 * d * piece_side**2 * pb for pb, d in group_sizes) / FLOPS   # pieces
                     + (2.0 * n * m * p + 2.0 * n * n * p if data_route else 0.0) / FLOPS  # A J, K once
                     + 60 * (d_total * m * m + m**3 / 3) / FLOPS          # ~60 evaluations
                     + (n**3 + m * n * n) / FLOPS)                        # covariance + samples
    batch = max(config.sample_batch_size, config.em_samples + 1, rank)
    scal_bytes = (3 * chunk * act_bytes + 6 * batch * (n + p + m) * 8 + 3 * m * rank * 8)
    matvec = 2 * product + 2 * n * 8 / FLOPS            # J and Jᵀ per vector
    cg = 40                                              # typical preconditioned CG iterations
    scal_seconds = matvec * (config.em_iterations * (rank + (config.em_samples + 1) * cg)
                             + 1000 * cg)          # 1000 posterior samples
    r = min(config.subspace_rank, n)
    k = min(r, m)
    sub_products = 2 * r + config.subspace_test_probes + 2 * r * config.subspace_power_iterations
    sub_bytes = (r * p * itemsize + 3 * chunk * act_bytes + 2 * chunk * p * 8 + 2 * n * r * 8 + 3 * m * r * 8
                 + 2 * d_total * r * r * 8 + 6 * r * r * 8 + 1000 * n * 8
                 + config.predcp_samples * r * 81 * 8 * len(group_sizes))
    sub_seconds = (sub_products * product
                   + sum(2.0 * d * r * r * pb + 4.0 * d * r * r * k for pb, d in group_sizes) / FLOPS  # pieces
                   + (2 * n * r * r + 2 * m * r * r) / FLOPS                                       # QR, SVD
                   + 60 * (d_total * r * r + r**3 / 3) / FLOPS                                    # evaluations
                   + (2 * r**3 + 2000 * n * r) / FLOPS)                                           # 1000 draws
    return {"exact": PathEstimate("exact", float(exact_bytes), float(exact_seconds)),
            "subspace": PathEstimate("subspace", float(sub_bytes), float(sub_seconds)),
            "scalable": PathEstimate("scalable", float(scal_bytes), float(scal_seconds))}


def choose_path(requested: str, estimates: dict[str, PathEstimate], budget: float,
                exact_allowed: bool = True) -> str:
    """The fastest path whose estimated peak memory fits ``budget`` (or check the requested one).

    Raises
    ------
    ValueError
        Naming ``config.memory_budget``, when no (or not the requested) path fits.
    """
    fits = {k: e for k, e in estimates.items() if e.bytes <= budget and (k != "exact" or exact_allowed)}
    if requested != "auto":
        est = estimates[requested]
        if est.bytes > budget:
            raise ValueError(f"config.memory_budget = {budget / 2**30:.3g} GiB is too small for "
                             f"path={requested!r} ({est.describe()}); raise config.memory_budget or "
                             "choose another path")
        return requested
    if not fits:
        need = min(estimates.values(), key=lambda e: e.bytes)
        raise ValueError(f"config.memory_budget = {budget / 2**30:.3g} GiB fits no path "
                         f"({'; '.join(e.describe() for e in estimates.values())}); the smallest needs "
                         f"{need.bytes / 2**30:.3g} GiB: raise config.memory_budget or reduce "
                         "config.jacobian_chunk / config.sample_batch_size")
    return min(fits.values(), key=lambda e: e.seconds).path


def plan_path(fit, op, prior, config) -> tuple[dict[str, PathEstimate], float, str]:
    """``(estimates, budget, path)`` for a DIP fit, its operator and filter prior under ``config``.

    ``config.memory_budget`` bytes (None: :func:`default_budget`); exact also needs
    ``N · P <= config.max_dense_entries``.
    """
    n, p, m = fit.x.numel(), sum(g.size for g in prior.groups), op.range_size
    m = 2 * m if op.complex_range else m
    act, fwd = network_cost(fit.network, fit.input)
    sizes = [(g.size, len(c[0])) for g, c in zip(prior.groups, prior.classes)]
    estimates = estimate_paths(n, p, m, sizes, act, fwd, fit.x.element_size(), config)
    budget = float(config.memory_budget) if config.memory_budget is not None else default_budget()
    path = choose_path(config.path, estimates, budget, exact_allowed=n * p <= config.max_dense_entries)
    return estimates, budget, path


def default_budget() -> float:
    """``DEFAULT_MEMORY_FRACTION`` of the currently available memory, in bytes."""
    return DEFAULT_MEMORY_FRACTION * available_memory()


def fmt_bytes(b: float) -> str:
    return f"{b / 2**30:.2f} GiB" if b >= 2**28 else f"{b / 2**20:.1f} MiB"

