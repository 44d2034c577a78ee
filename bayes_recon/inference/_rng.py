"""Seeding Pyro without leaking global random state."""

from __future__ import annotations

from contextlib import contextmanager

import pyro
import pyro.util


@contextmanager
def pyro_seed(seed: int):
    """``pyro.set_rng_seed(seed)`` inside the block; torch, random and numpy states restored after.

    Pyro's samplers draw from the global generators, so seeding them is the only way to
    make a run reproducible; restoring keeps library calls free of global side effects.
    """
    state = pyro.util.get_rng_state()
    try:
        pyro.set_rng_seed(seed)
        yield
    finally:
        pyro.util.set_rng_state(state)
