"""Independent MCMC chains, one after another or at once in worker processes.

Chains share nothing, so on a machine with several cores they can run at the
same time. Python threads cannot do this for Pyro (its effect-handler stack is
one per process), so each chain runs in its own process (``spawn``: safe with
torch's thread pools and with CUDA); torch's intra-op threads are divided
between the workers. A chain's warnings are recorded in its worker and raised
again in the caller, so none is lost.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ProcessPoolExecutor

import torch

__all__ = ["available_cores", "run_chains"]


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS reports it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _init_worker(threads: int) -> None:
    """Set up a chain worker (a process this module owns): torch threads, and quiet torch's
    notices about rebuilding sparse CSR operators from shared memory (not numerical warnings:
    they say that sparse CSR support is beta and unchecked by default)."""
    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore", message="Sparse (CSR tensor support is in beta|invariant checks)",
                            category=UserWarning)


def _recording(fn, args):
    """``fn(*args)`` and the warnings it raised as picklable tuples."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(*args)
    return out, [(w.category, str(w.message), w.filename, w.lineno) for w in caught]


def run_chains(fn, chain_args: list[tuple], workers: int = 1) -> list:
    """``[fn(*args) for args in chain_args]``, with up to ``workers`` chains at once.

    Parameters
    ----------
    fn : callable
        A module-level function (it is pickled by reference for the workers).
    chain_args : list of tuple
        One argument tuple per chain; tensors are shared with the workers.
    workers : int
        1: one after another in this process. ``k > 1``: ``min(k, len(chain_args))``
        worker processes, each with ``max(1, torch.get_num_threads() // k)`` torch threads.

    Returns
    -------
    list
        The chains' results, in the order of ``chain_args`` (the same values as
        running them one after another: each chain seeds its own generators).
    """
    workers = min(int(workers), len(chain_args))
    if workers <= 1:
        return [fn(*args) for args in chain_args]
    threads = max(1, torch.get_num_threads() // workers)
    ctx = torch.multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(threads,)) as pool:
        results = [f.result() for f in [pool.submit(_recording, fn, args) for args in chain_args]]
    for _, caught in results:
        for category, message, filename, lineno in caught:
            warnings.warn_explicit(message, category, filename, lineno)
    return [out for out, _ in results]
