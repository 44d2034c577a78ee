"""Seeding Pyro without leaking global random state; generators that follow the data's device.

The generator checks live in :mod:`bayes_recon.models._generators` (the exact
``x | z, y`` sampler moved to ``models``) and are re-exported here.
"""

from __future__ import annotations

from contextlib import contextmanager

import pyro
import pyro.util

from ..models._generators import check_generator, cpu_generator_from

__all__ = ["pyro_seed", "check_generator", "cpu_generator_from"]


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
