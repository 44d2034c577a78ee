"""Tests of bayes_recon.data: bundled datasets, phantoms and measurement simulation."""

from __future__ import annotations

import dataclasses
import importlib
import math

import numpy as np
import pytest
import torch

from bayes_recon import data
from bayes_recon.data import (
    NATURAL_TEST_IMAGES,
    NATURAL_TRAIN_IMAGES,
    Measurement,
    ZeroSignalWarning,
    digits,
    ellipses,
    natural_patches,
    shepp_logan,
    simulate,
)
# The function data.ellipses shadows its module, so fetch the module itself.
ellipses_module = importlib.import_module("bayes_recon.data.ellipses")
from bayes_recon.operators import MRI, Identity, LinearOperator


def assert_image_batch(x: torch.Tensor, n: int, size: int) -> None:
    assert isinstance(x, torch.Tensor)
    assert tuple(x.shape) == (n, 1, size, size)
    assert x.dtype == torch.float32
    assert bool(torch.isfinite(x).all())
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


# --------------------------------------------------------------------- digits
class TestDigits:
    def test_shapes_dtype_range_and_fixed_split_sizes(self):
        train, train_labels = digits("train", size=28, return_labels=True)
        test, test_labels = digits("test", size=28, return_labels=True)
        # 20 % of each class, rounded, held out: fixed forever.
        assert_image_batch(train, 1438, 28)
        assert_image_batch(test, 359, 28)
        assert train_labels.dtype == torch.int64 and tuple(train_labels.shape) == (1438,)
        assert torch.bincount(test_labels).tolist() == [36, 36, 35, 37, 36, 36, 36, 36, 35, 36]
        assert torch.bincount(train_labels).tolist() == [
            n - t for n, t in zip([178, 182, 177, 183, 181, 182, 181, 179, 174, 180],
                                  [36, 36, 35, 37, 36, 36, 36, 36, 35, 36])
        ]

    def test_split_is_pinned(self):
        # Regression pin: the split must never change between versions.
        from bayes_recon.data.digits import _split_indices

        test_idx = _split_indices()["test"]
        assert test_idx[:8].tolist() == [4, 6, 8, 17, 18, 29, 32, 35]
        assert int(test_idx.sum()) == 319559

    def test_native_size_is_the_raw_data_scaled(self):
        from sklearn.datasets import load_digits
        from bayes_recon.data.digits import _split_indices

        raw = load_digits().images / 16.0
        x = digits("train", size=8)
        expected = torch.tensor(raw[_split_indices()["train"]], dtype=torch.float32)
        torch.testing.assert_close(x[:, 0], expected, rtol=0, atol=1e-7)

    def test_splits_disjoint_no_identical_image(self):
        train = digits("train", size=8).flatten(1).numpy()
        test = digits("test", size=8).flatten(1).numpy()
        train_rows = {row.tobytes() for row in train}
        assert not any(row.tobytes() in train_rows for row in test)
        assert len(train_rows) == len(train)  # and no duplicate within train

    def test_resize_preserves_content(self):
        # Upsampling by 4 then averaging 4x4 blocks returns (nearly) the 8x8 digit:
        # per-image correlation > 0.98 (observed min 0.987) and the mean intensity
        # kept within 0.03 (observed 0.014; clipping the bicubic overshoot shifts it).
        small = digits("test", size=8)[:, 0].numpy()
        big = digits("test", size=32)[:, 0].numpy()
        blocks = big.reshape(-1, 8, 4, 8, 4).mean(axis=(2, 4))
        corr = [np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(blocks, small)]
        assert min(corr) > 0.98
        assert np.abs(blocks.mean(axis=(1, 2)) - small.mean(axis=(1, 2))).max() < 0.03

    def test_deterministic_and_fresh_tensors(self):
        a = digits("test", size=16)
        a.fill_(7.0)  # must not corrupt the cache
        b = digits("test", size=16)
        c = digits("test", size=16)
        assert float(b.max()) <= 1.0
        assert torch.equal(b, c)

    @pytest.mark.parametrize("split", ["val", "TRAIN", ""])
    def test_bad_split(self, split):
        with pytest.raises(ValueError, match="split"):
            digits(split)

    @pytest.mark.parametrize("size, exc", [(1, ValueError), (0, ValueError), (2.5, TypeError)])
    def test_bad_size(self, size, exc):
        with pytest.raises(exc, match="size"):
            digits("train", size=size)


# ------------------------------------------------------------------- ellipses
class TestEllipses:
    def test_shape_dtype_range(self):
        x = ellipses(6, 32, seed=0)
        assert_image_batch(x, 6, 32)
        # Every image is normalised to a maximum of 1 (a blank image is possible
        # in principle, but not for this seed).
        torch.testing.assert_close(x.amax(dim=(1, 2, 3)), torch.ones(6))

    def test_deterministic_and_seeds_differ(self):
        a = ellipses(4, 24, seed=3)
        b = ellipses(4, 24, seed=3)
        c = ellipses(4, 24, seed=4)
        assert torch.equal(a, b)
        assert not torch.equal(a, c)
        # images within a batch differ too
        assert not torch.equal(a[0], a[1])

    def test_blocking_does_not_change_the_result(self, monkeypatch):
        reference = ellipses(5, 16, seed=1)
        monkeypatch.setattr(ellipses_module, "_BLOCK_ELEMENTS", 1)  # one image per block
        assert torch.equal(ellipses(5, 16, seed=1), reference)

    def test_geometry_of_one_ellipse(self):
        # A single centred ellipse, half-axes 0.5 (x) and 0.25 (y): its pixel area is
        # pi * a * b * (size/2)^2 up to boundary pixels, its extent 2a x 2b.
        size = 128

        def one(rotation):
            params = {
                "intensity": torch.tensor([[0.7]], dtype=torch.float64),
                "active": torch.tensor([[True]]),
                "a": torch.tensor([[0.5]], dtype=torch.float64),
                "b": torch.tensor([[0.25]], dtype=torch.float64),
                "cx": torch.tensor([[0.0]], dtype=torch.float64),
                "cy": torch.tensor([[0.0]], dtype=torch.float64),
                "cos": torch.tensor([[math.cos(rotation)]], dtype=torch.float64),
                "sin": torch.tensor([[math.sin(rotation)]], dtype=torch.float64),
            }
            return ellipses_module._render(params, size)[0]

        image = one(0.0)
        assert set(image.unique().tolist()) == {0.0, 1.0}  # normalised indicator
        area = float(image.sum())
        expected = math.pi * 0.5 * 0.25 * (size / 2) ** 2
        # boundary pixels: perimeter (~310 px here) is a hard upper bound on the error
        assert abs(area - expected) < 0.05 * expected
        cols = torch.nonzero(image.any(dim=0)).squeeze(1)
        rows = torch.nonzero(image.any(dim=1)).squeeze(1)
        assert len(cols) == 64 and len(rows) == 32  # 2a * size/2, 2b * size/2
        rotated = one(math.pi / 2)
        torch.testing.assert_close(rotated, image.T)
        # Convention: the a-axis points along (cos t, sin t) in (column, row)
        # coordinates, so at t = pi/4 the ellipse lies along the main diagonal.
        diagonal = one(math.pi / 4)
        assert torch.equal(diagonal, diagonal.T)
        assert float(diagonal.diagonal().sum()) > 2 * float(diagonal.flip(1).diagonal().sum())

    def test_parameter_distribution(self):
        gen = torch.Generator().manual_seed(0)
        p = ellipses_module._ellipse_parameters(2000, 70, 40.0, gen)
        counts = p["active"].sum(dim=1).double()
        # Poisson(40): mean 40, sd of the mean 40^0.5/2000^0.5 = 0.14 -> 5 sd tolerance
        assert abs(float(counts.mean()) - 40.0) < 0.7
        radius = (p["cx"] ** 2 + p["cy"] ** 2).sqrt()
        assert float(radius.max()) <= 0.9 + 1e-12
        assert bool((p["intensity"][~p["active"]] == 0).all())

    @pytest.mark.parametrize(
        "kwargs, exc, name",
        [
            (dict(n=0, size=8, seed=0), ValueError, "n"),
            (dict(n=2, size=0, seed=0), ValueError, "size"),
            (dict(n=2, size=8, seed=-1), ValueError, "seed"),
            (dict(n=2, size=8, seed=1.5), TypeError, "seed"),
            (dict(n=2, size=8, seed=0, max_ellipses=0), ValueError, "max_ellipses"),
            (dict(n=2, size=8, seed=0, mean_ellipses=-1.0), ValueError, "mean_ellipses"),
        ],
    )
    def test_bad_input(self, kwargs, exc, name):
        with pytest.raises(exc, match=name):
            ellipses(**kwargs)


# ---------------------------------------------------------------- shepp_logan
class TestSheppLogan:
    def test_shape_range_and_native_size_exact(self):
        from skimage.data import shepp_logan_phantom

        x = shepp_logan(64)
        assert_image_batch(x, 1, 64)
        native = shepp_logan(400)
        np.testing.assert_allclose(native[0, 0].numpy(), shepp_logan_phantom(), atol=1e-7)

    def test_downscaled_matches_block_average(self):
        # 400 -> 100 is a factor 4: the anti-aliased resize is close to 4x4 averaging.
        full = shepp_logan(400)[0, 0].double()
        block = full.reshape(100, 4, 100, 4).mean(dim=(1, 3))
        small = shepp_logan(100)[0, 0].double()
        assert float((small - block).abs().mean()) < 0.02

    def test_fresh_tensor(self):
        shepp_logan(32).fill_(5.0)
        assert float(shepp_logan(32).max()) <= 1.0

    def test_bad_size(self):
        with pytest.raises(ValueError, match="size"):
            shepp_logan(1)
        with pytest.raises(TypeError, match="size"):
            shepp_logan(32.0)


# ------------------------------------------------------------ natural_patches
class TestNaturalPatches:
    def test_split_lists_are_as_specified_and_disjoint(self):
        assert set(NATURAL_TRAIN_IMAGES) == {
            "camera", "moon", "coins", "text", "page", "clock", "horse", "brick",
            "grass", "gravel", "astronaut", "chelsea", "coffee", "rocket",
        }
        assert set(NATURAL_TEST_IMAGES) == {
            "cell", "microaneurysms", "immunohistochemistry", "hubble_deep_field",
        }
        assert not set(NATURAL_TRAIN_IMAGES) & set(NATURAL_TEST_IMAGES)

    @pytest.mark.parametrize("split", ["train", "test"])
    def test_shape_range_sources(self, split):
        x, sources = natural_patches(split, 24, 200, seed=0, return_sources=True)
        assert_image_batch(x, 200, 24)
        allowed = set(NATURAL_TRAIN_IMAGES if split == "train" else NATURAL_TEST_IMAGES)
        assert set(sources) <= allowed
        # uniform choice of source: with 200 draws every image appears (P(miss) < 1e-5)
        assert set(sources) == allowed
        # patches carry structure: most are not flat
        assert float((x.flatten(1).std(dim=1) > 0.01).float().mean()) > 0.5

    def test_sources_disjoint_across_splits(self):
        _, train_src = natural_patches("train", 16, 300, seed=1, return_sources=True)
        _, test_src = natural_patches("test", 16, 300, seed=1, return_sources=True)
        assert not set(train_src) & set(test_src)

    def test_deterministic_and_seeds_differ(self):
        a = natural_patches("train", 16, 10, seed=5)
        b = natural_patches("train", 16, 10, seed=5)
        c = natural_patches("train", 16, 10, seed=6)
        assert torch.equal(a, b)
        assert not torch.equal(a, c)

    def test_patch_is_a_crop_of_its_source(self):
        # At scale 1 a patch is an exact crop of the grayscale photograph.
        from numpy.lib.stride_tricks import sliding_window_view
        from skimage.data import microaneurysms

        x, sources = natural_patches("test", 12, 40, seed=2, scale=1.0, return_sources=True)
        source = microaneurysms().astype(np.float64) / 255.0
        windows = sliding_window_view(source.astype(np.float32), (12, 12))
        found = 0
        for patch, name in zip(x[:, 0].numpy(), sources):
            if name != "microaneurysms":
                continue
            match = np.abs(windows - patch).max(axis=(-2, -1)) < 1e-6
            assert match.any()
            found += 1
        assert found > 0

    def test_small_images_skipped_for_large_patches(self):
        # microaneurysms is 102x102: a 110-pixel patch cannot come from it.
        _, sources = natural_patches("test", 110, 60, seed=0, return_sources=True)
        assert "microaneurysms" not in sources
        assert len(set(sources)) == 3

    @pytest.mark.parametrize(
        "args, kwargs, exc, name",
        [
            (("validation", 16, 4, 0), {}, ValueError, "split"),
            (("train", 0, 4, 0), {}, ValueError, "size"),
            (("train", 16, 0, 0), {}, ValueError, "n"),
            (("train", 16, 4, -2), {}, ValueError, "seed"),
            (("train", 16, 4, 0), {"scale": 1.5}, ValueError, "scale"),
            (("train", 16, 4, 0), {"scale": 0.0}, ValueError, "scale"),
            (("test", 5000, 4, 0), {}, ValueError, "size"),
        ],
    )
    def test_bad_input(self, args, kwargs, exc, name):
        with pytest.raises(exc, match=name):
            natural_patches(*args, **kwargs)


# ------------------------------------------------------------------- simulate
class _Scale2(LinearOperator):
    """A tiny operator written here, independent of the package's operators."""

    def __init__(self):
        super().__init__((1, 3, 3), (9,))

    def _forward(self, x):
        return 2.0 * x.reshape(x.shape[0], 9)

    def _adjoint(self, y):
        return 2.0 * y.reshape(y.shape[0], 1, 3, 3)


class TestSimulate:
    def test_noise_level_matches_on_large_identity(self):
        gen = torch.Generator().manual_seed(0)
        x = torch.rand(4, 1, 64, 64, generator=gen, dtype=torch.float64)
        op = Identity((1, 64, 64))
        m = simulate(op, x, relative_noise=0.1, seed=0)
        assert isinstance(m, Measurement) and isinstance(m.noise_std, float)
        assert m.noise_std == pytest.approx(0.1 * float(x.abs().mean()), rel=1e-12)
        noise = (m.y - x).flatten()
        n = noise.numel()  # 16384
        # Sample std of N Gaussians has relative sd 1/sqrt(2N) = 0.55 %: 3 % is > 5 sd.
        assert float(noise.std()) == pytest.approx(m.noise_std, rel=0.03)
        # Mean within 5 sd of its standard error sigma/sqrt(N).
        assert abs(float(noise.mean())) < 5 * m.noise_std / math.sqrt(n)

    def test_noise_level_is_over_the_whole_batch(self):
        x = torch.ones(2, 1, 3, 3)
        x[1] *= 3.0
        m = simulate(_Scale2(), x, relative_noise=0.5, seed=0)
        # mean |A x| = mean(2 * 1, 2 * 3) = 4
        assert m.noise_std == pytest.approx(0.5 * 4.0)
        assert tuple(m.y.shape) == (2, 9)

    def test_complex_range_has_noise_in_both_parts(self):
        n = 32
        op = MRI(n, torch.ones(n, n, dtype=torch.bool))
        gen = torch.Generator().manual_seed(1)
        x = torch.rand(8, 1, n, n, generator=gen, dtype=torch.float64)
        m = simulate(op, x, relative_noise=0.05, seed=0)
        clean = op(x)
        assert m.y.is_complex() and m.y.dtype == torch.complex128
        assert m.noise_std == pytest.approx(0.05 * float(clean.abs().mean()), rel=1e-12)
        noise = m.y - clean
        # 8192 samples per part: relative sd of the sample std is 0.8 %, 4 % is 5 sd.
        assert float(noise.real.std()) == pytest.approx(m.noise_std, rel=0.04)
        assert float(noise.imag.std()) == pytest.approx(m.noise_std, rel=0.04)
        # Real and imaginary parts independent: |corr| < 5 / sqrt(8192) = 0.055
        corr = torch.corrcoef(torch.stack([noise.real.flatten(), noise.imag.flatten()]))[0, 1]
        assert abs(float(corr)) < 0.055

    def test_same_seed_same_y_different_seed_different(self):
        x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
        op = Identity((1, 8, 8))
        a = simulate(op, x, 0.05, seed=3)
        b = simulate(op, x, 0.05, seed=3)
        c = simulate(op, x, 0.05, seed=4)
        assert torch.equal(a.y, b.y) and a.noise_std == b.noise_std
        assert not torch.equal(a.y, c.y)

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    def test_follows_dtype_and_detaches(self, dtype):
        x = torch.rand(1, 1, 8, 8, dtype=dtype, requires_grad=True)
        m = simulate(Identity((1, 8, 8)), x, 0.05, seed=0)
        assert m.y.dtype == dtype and m.y.device == x.device
        assert not m.y.requires_grad

    def test_zero_noise_is_exact(self):
        x = torch.rand(2, 1, 3, 3)
        m = simulate(_Scale2(), x, relative_noise=0.0, seed=0)
        assert m.noise_std == 0.0
        assert torch.equal(m.y, 2.0 * x.reshape(2, 9))

    def test_zero_signal_warns(self):
        with pytest.warns(ZeroSignalWarning):
            m = simulate(_Scale2(), torch.zeros(1, 1, 3, 3), relative_noise=0.1)
        assert m.noise_std == 0.0 and not bool(m.y.isnan().any())

    def test_measurement_is_frozen(self):
        m = simulate(_Scale2(), torch.ones(1, 1, 3, 3))
        with pytest.raises(dataclasses.FrozenInstanceError):
            m.noise_std = 1.0

    @pytest.mark.parametrize("value", [-0.1, float("nan"), float("inf")])
    def test_bad_relative_noise(self, value):
        with pytest.raises(ValueError, match="relative_noise"):
            simulate(_Scale2(), torch.ones(1, 1, 3, 3), relative_noise=value)

    def test_bad_x(self):
        op = _Scale2()
        bad = torch.ones(1, 1, 3, 3)
        bad[0, 0, 1, 1] = float("nan")
        with pytest.raises(ValueError, match="x.*NaN"):
            simulate(op, bad)
        with pytest.raises(ValueError, match=r"x must have shape \(B, 1, 3, 3\)"):
            simulate(op, torch.ones(1, 1, 4, 4))
        with pytest.raises(ValueError, match="x must have shape"):
            simulate(op, torch.ones(1, 3, 3))  # no silent broadcasting of a missing batch
        with pytest.raises(TypeError, match="x"):
            simulate(op, np.ones((1, 1, 3, 3)))

    def test_bad_op_and_seed(self):
        with pytest.raises(TypeError, match="op must be a LinearOperator"):
            simulate(lambda x: x, torch.ones(1, 1, 3, 3))
        with pytest.raises(TypeError, match="seed"):
            simulate(_Scale2(), torch.ones(1, 1, 3, 3), seed=0.5)


def test_public_names():
    for name in ["digits", "ellipses", "shepp_logan", "natural_patches", "simulate", "Measurement"]:
        assert name in data.__all__ and hasattr(data, name)
