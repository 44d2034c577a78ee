"""The hyperparameter fit maximises the function the gradient tests check (issue 21, item 3).

L-BFGS evaluates :meth:`LinearisedLaplace.optimisation_objective` (evidence plus the
registered priors); :meth:`~LinearisedLaplace.objective` is the same function in
``log ℓ``. Checked here: the optimiser's evaluations are calls of that function, it
equals an independent sum of the evidence and the TV-PredCP log-density at the same
point, and its autograd gradient matches central finite differences (16² exact path,
float64). Also: each path is served by its own backend.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bayes_recon.inference.linearised.backends import ExactBackend, MatrixFreeBackend, SubspaceBackend
from bayes_recon.inference.linearised.laplace import (EvidenceConvergenceWarning, LaplaceConfig,
                                                      LinearisedLaplace)
from bayes_recon.operators import ParallelBeamCT
from linearised_fits import random_unet_fit

KAPPA = 0.5


@pytest.fixture(scope="module")
def la16():
    op = ParallelBeamCT(16, 4)
    la = LinearisedLaplace(random_unet_fit(op, 16), op, config=LaplaceConfig(path="exact", predcp_samples=8),
                           progress=False)
    la.set_prior(la.predcp_prior(KAPPA))
    return la


def _raw(la):
    return [la.raw_lengthscale, la.log_variance, la.log_noise_variance]


def test_lbfgs_evaluates_optimisation_objective(la16, monkeypatch):
    la = la16
    calls = []
    method = la.optimisation_objective

    def recorded(*args, **kwargs):
        value = method(*args, **kwargs)
        calls.append((args, kwargs, float(value.detach())))
        return value

    monkeypatch.setattr(la, "optimisation_objective", recorded)
    start = [t.clone() for t in _raw(la)]
    with pytest.warns(EvidenceConvergenceWarning, match="max_iter"):
        res = la.optimise_evidence(iterations=2, progress=False)
    monkeypatch.undo()
    # Every L-BFGS evaluation is one call, with the registered priors (no predcp_scale given).
    assert len(calls) == res.evaluations >= 2
    assert all(kwargs == {} and len(args) == 3 for args, kwargs, _ in calls)
    np.testing.assert_array_equal(res.trace, [v for _, _, v in calls])
    # Re-evaluating the first point outside the optimiser gives the first trace entry (deterministic).
    with torch.no_grad():
        first = float(la.optimisation_objective(*start))
    assert first == res.trace[0]


def test_optimisation_objective_is_objective_and_evidence_plus_prior(la16):
    la = la16
    raw, log_var, log_nv = _raw(la)
    log_ls = la.log_lengthscale
    with torch.no_grad():
        registered = float(la.optimisation_objective(raw, log_var, log_nv))          # what L-BFGS runs
        explicit = float(la.objective(log_ls, log_var, log_nv, predcp_scale=KAPPA))  # what the tests check
        prior = float(la.log_prior(raw, log_var))                                     # what EM's steps use
        direct = la.log_evidence() + float(la.predcp().log_prob(log_ls, log_var, KAPPA))
    # Same float64 terms, summed in the same or another order: 1e-12 relative.
    assert registered == pytest.approx(explicit, rel=1e-12)
    assert registered == pytest.approx(direct, rel=1e-12)
    assert registered == pytest.approx(la.log_evidence() + prior, rel=1e-12)
    # Without priors it is the evidence.
    with torch.no_grad():
        assert float(la.optimisation_objective(raw, log_var, log_nv, predcp_scale=0.0)) == pytest.approx(
            la.log_evidence(), rel=1e-12)


def test_optimisation_objective_gradient_matches_finite_differences(la16):
    la = la16
    params = [t.clone().requires_grad_(True) for t in _raw(la)]
    la.optimisation_objective(*params).backward()
    h = 1e-5
    for k, p in enumerate(params):
        for i in range(p.numel()):
            def at(delta):
                q = [t.detach().clone() for t in params]
                q[k].reshape(-1)[i] += delta
                with torch.no_grad():
                    return float(la.optimisation_objective(*q))

            fd = (at(h) - at(-h)) / (2 * h)
            # Central differences of a smooth float64 function: ~1e-8 relative (the TV of the
            # fixed probes is smooth in φ almost everywhere).
            assert float(p.grad.reshape(-1)[i]) == pytest.approx(fd, rel=1e-4, abs=1e-6 * max(1.0, abs(fd)))


@pytest.mark.parametrize("path,cls", [("exact", ExactBackend), ("subspace", SubspaceBackend),
                                      ("scalable", MatrixFreeBackend)])
def test_each_path_has_its_backend_and_keeps_its_coordinates(path, cls):
    op = ParallelBeamCT(8, 5)
    fit = random_unet_fit(op, 8)
    la = LinearisedLaplace(fit, op, config=LaplaceConfig(path=path, subspace_rank=64), progress=False)
    assert type(la.backend) is cls and la.path == path == la.backend.path
    assert la.jac is la.backend.jac and la.y is la.backend.y and la.kernel_op is la.backend.op
    with pytest.raises(AttributeError):
        la.y = la.y                           # the backend's coordinates are read-only views
    assert (la.subspace is not None) == (path == "subspace")
    assert (la.kernel is not None) == (path != "scalable")
