"""Tests for the Posterior container (bayes_recon.posterior)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bayes_recon.posterior import Posterior


def _samples(chains=3, draws=7, shape=(2, 4, 5), seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(chains, draws, *shape, generator=g, dtype=dtype)


def test_properties_match_numpy():
    s = _samples()
    post = Posterior(s)
    ref = s.numpy().reshape(21, 2, 4, 5)
    assert post.num_chains == 3 and post.num_draws == 7 and post.num_samples == 21
    assert post.image_shape == (2, 4, 5)
    assert post.flat_samples.shape == (21, 2, 4, 5)
    # chain-major flattening: draw d of chain c is row c * draws + d
    assert torch.equal(post.flat_samples[7 + 3], s[1, 3])
    np.testing.assert_allclose(post.mean.numpy(), ref.mean(0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(post.std.numpy(), ref.std(0, ddof=1), rtol=1e-5, atol=1e-6)


def test_quantile_matches_numpy_linear():
    s = _samples(dtype=torch.float64)
    post = Posterior(s)
    ref = np.quantile(s.numpy().reshape(21, 2, 4, 5), [0.05, 0.5, 0.97], axis=0)
    # float64 interpolation of the same order statistics: exact up to rounding
    np.testing.assert_allclose(post.quantile([0.05, 0.5, 0.97]).numpy(), ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(post.quantile(0.5).numpy(), ref[1], rtol=0, atol=1e-12)
    assert post.quantile(0.0).shape == (2, 4, 5)
    with pytest.raises(ValueError, match="q"):
        post.quantile(1.5)
    with pytest.raises(ValueError, match="q"):
        post.quantile([])


def test_follows_dtype_and_accepts_numpy():
    post = Posterior(_samples(dtype=torch.float64))
    assert post.mean.dtype == torch.float64 and post.std.dtype == torch.float64
    post_np = Posterior(np.zeros((1, 3, 1, 2, 2), dtype=np.float32))
    assert isinstance(post_np.samples, torch.Tensor) and post_np.samples.dtype == torch.float32


def test_extras_are_kept():
    g = torch.Generator().manual_seed(1)
    post = Posterior(
        _samples(),
        z=torch.randn(3, 7, 4, generator=g),
        sample_stats={"diverging": np.zeros((3, 7), bool), "step_size": torch.full((3, 7), 0.1)},
        method="nuts",
        operator="ParallelBeamCT",
        noise_std=0.05,
        seed=3,
        evidence_trace=[1.0, 2.0, 2.5],
        hyperparameters={"lengthscale": 1.2},
        note="free-form",
    )
    assert post.z.shape == (3, 7, 4)
    assert set(post.sample_stats) == {"diverging", "step_size"}
    assert isinstance(post.sample_stats["step_size"], np.ndarray)
    assert post.method == "nuts" and post.operator == "ParallelBeamCT"
    assert post.noise_std == 0.05 and post.seed == 3
    np.testing.assert_array_equal(post.evidence_trace, [1.0, 2.0, 2.5])
    assert post.hyperparameters == {"lengthscale": 1.2}
    assert post.extras == {"note": "free-form"}
    assert "nuts" in repr(post)


def test_operator_object_recorded_by_class_name():
    class FakeOp:
        pass

    assert Posterior(_samples(), operator=FakeOp()).operator == "FakeOp"


def test_from_flat():
    s = _samples(chains=1, draws=12).reshape(12, 2, 4, 5)
    post = Posterior.from_flat(s, num_chains=3, method="laplace")
    assert post.num_chains == 3 and post.num_draws == 4 and post.method == "laplace"
    assert torch.equal(post.flat_samples, s)
    with pytest.raises(ValueError, match="num_chains"):
        Posterior.from_flat(s, num_chains=5)


def test_std_needs_two_samples():
    post = Posterior(_samples(chains=1, draws=1))
    assert post.mean.shape == (2, 4, 5)
    with pytest.raises(ValueError, match="at least 2"):
        post.std


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(samples=torch.zeros(3, 1, 4, 4)), ValueError, "samples"),
        (dict(samples=torch.full((1, 2, 1, 2, 2), float("nan"))), ValueError, "samples"),
        (dict(samples=torch.full((1, 2, 1, 2, 2), float("inf"))), ValueError, "samples"),
        (dict(samples=[[1.0]]), TypeError, "samples"),
        (dict(samples=torch.zeros(1, 2, 1, 2, 2, dtype=torch.int64)), TypeError, "samples"),
        (dict(samples=torch.zeros(1, 2, 1, 2, 2), z=torch.zeros(1, 3, 4)), ValueError, "z"),
        (dict(samples=torch.zeros(1, 2, 1, 2, 2), z=torch.zeros(1, 2)), ValueError, "z"),
        (dict(samples=torch.zeros(1, 2, 1, 2, 2), sample_stats={"step_size": np.ones(3)}), ValueError, "step_size"),
        (dict(samples=torch.zeros(1, 2, 1, 2, 2), sample_stats=[1]), TypeError, "sample_stats"),
        (dict(samples=torch.zeros(1, 2, 1, 2, 2), noise_std=-1.0), ValueError, "noise_std"),
        (dict(samples=torch.zeros(1, 2, 1, 2, 2), noise_std="a"), TypeError, "noise_std"),
        (dict(samples=torch.zeros(1, 2, 1, 2, 2), seed=1.5), TypeError, "seed"),
        (dict(samples=torch.zeros(1, 2, 1, 2, 2), method=3), TypeError, "method"),
        (dict(samples=torch.zeros(1, 2, 1, 2, 2), evidence_trace=np.ones((2, 2))), ValueError, "evidence_trace"),
        (dict(samples=torch.zeros(1, 2, 1, 2, 2), evidence_trace=[1.0, float("nan")]), ValueError, "evidence_trace"),
        (dict(samples=torch.zeros(1, 2, 1, 2, 2), hyperparameters=[1]), TypeError, "hyperparameters"),
    ],
)
def test_bad_input(kwargs, exc, match):
    samples = kwargs.pop("samples")
    with pytest.raises(exc, match=match):
        Posterior(samples, **kwargs)


def test_to_arviz_delegates():
    post = Posterior(_samples(), method="toy")
    idata = post.to_arviz(truth=torch.zeros(2, 4, 5))
    assert idata.posterior["x"].dims == ("chain", "draw", "channel", "row", "col")
    np.testing.assert_array_equal(idata.posterior["x"].values, post.samples.numpy())
    assert "x_true" in idata.constant_data
