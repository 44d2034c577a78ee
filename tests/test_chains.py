"""bayes_recon.inference.chains: chains in worker processes give what they give in-process."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from bayes_recon.inference.chains import available_cores, run_chains


class ChainWarning(RuntimeWarning):
    """A named warning raised inside a chain."""


def noisy_square(x, seed):
    """Module level (picklable): a seeded draw, a warning naming the input, and ``x²``."""
    warnings.warn(f"chain input {x}", ChainWarning)
    gen = torch.Generator().manual_seed(seed)
    return x * x + torch.rand(1, generator=gen, dtype=torch.float64).item(), torch.get_num_threads()


@pytest.mark.parametrize("workers", [1, 2])
def test_run_chains_keeps_order_results_and_warnings(workers):
    args = [(3.0, 0), (-2.0, 1), (5.0, 2)]
    with pytest.warns(ChainWarning) as record:
        out = run_chains(noisy_square, args, workers=workers)
    expected = [x * x + torch.rand(1, generator=torch.Generator().manual_seed(s), dtype=torch.float64).item()
                for x, s in args]
    np.testing.assert_array_equal([o[0] for o in out], expected)
    assert sorted(str(w.message) for w in record if w.category is ChainWarning) == \
        ["chain input -2.0", "chain input 3.0", "chain input 5.0"]
    if workers > 1:  # torch threads divided between the workers
        assert all(o[1] == max(1, torch.get_num_threads() // 2) for o in out)


def test_available_cores_is_positive():
    assert available_cores() >= 1
