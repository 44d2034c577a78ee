"""Tests of bayes_recon.metrics: closed forms and scikit-image as references.

All metrics take ``(image_true, image_test, *, data_range=...)``, scikit-image's order.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import (
    mean_squared_error,
    peak_signal_noise_ratio,
    structural_similarity,
)

from bayes_recon.metrics import psnr, rmse, ssim


def rand(*shape, seed=0, dtype=torch.float64):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _noisy(truth, seed, amount):
    """An estimate of ``truth``: truth plus uniform noise, clipped to [0, 1]."""
    return (truth + amount * (rand(*truth.shape, seed=seed) - 0.5)).clamp(0, 1)


# ----------------------------------------------------------------------- psnr
class TestPSNR:
    @pytest.mark.parametrize("error, data_range", [(0.1, 1.0), (0.03, 1.0), (2.0, 255.0)])
    def test_constant_error_closed_form(self, error, data_range):
        truth = rand(3, 1, 8, 8) * data_range
        value = psnr(truth, truth + error, data_range=data_range)
        expected = 10 * math.log10(data_range**2 / error**2)
        assert tuple(value.shape) == (3,) and value.dtype == torch.float64
        torch.testing.assert_close(value, torch.full((3,), expected, dtype=torch.float64),
                                   rtol=1e-10, atol=1e-10)

    def test_per_image_values(self):
        truth = torch.zeros(2, 1, 4, 4)
        x = truth.clone()
        x[0] += 0.1
        x[1] += 0.01
        torch.testing.assert_close(psnr(truth, x, data_range=1.0),
                                   torch.tensor([20.0, 40.0], dtype=torch.float64),
                                   rtol=1e-5, atol=1e-4)  # float32 inputs: 0.1 inexact

    @pytest.mark.parametrize("seed", range(5))
    @pytest.mark.parametrize("data_range", [1.0, 2.5])
    def test_matches_skimage_on_random_images(self, seed, data_range):
        # Random truths, estimates and shapes; float64 on both sides, so the same
        # formula agrees to rounding: rtol 1e-12.
        g = np.random.default_rng(seed)
        shape = (3, int(g.integers(1, 4)), int(g.integers(3, 12)), int(g.integers(3, 12)))
        truth = torch.from_numpy(g.uniform(0, data_range, size=shape))
        est = torch.from_numpy(g.uniform(0, data_range, size=shape))
        ours = psnr(truth, est, data_range=data_range)
        ref = [peak_signal_noise_ratio(t.numpy(), e.numpy(), data_range=data_range)
               for t, e in zip(truth, est)]
        np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-12)

    def test_identical_is_inf_not_nan(self):
        x = rand(2, 1, 4, 4)
        value = psnr(x, x.clone(), data_range=1.0)
        assert bool(torch.isinf(value).all()) and bool((value > 0).all())

    def test_deprecated_keywords_and_positional_range_warn_and_agree(self):
        truth = rand(2, 1, 6, 6, seed=20)
        est = _noisy(truth, 21, 0.2)
        ref = psnr(truth, est, data_range=1.0)
        with pytest.warns(DeprecationWarning, match=r"psnr\(image_true, image_test"):
            old = psnr(x=est, truth=truth, data_range=1.0)
        torch.testing.assert_close(old, ref, rtol=0, atol=0)
        with pytest.warns(DeprecationWarning, match="truth="):
            old = psnr(est, truth=truth, data_range=1.0)  # old f(x, truth=...) form
        torch.testing.assert_close(old, ref, rtol=0, atol=0)
        with pytest.warns(DeprecationWarning, match="data_range by keyword"):
            old = psnr(truth, est, 1.0)
        torch.testing.assert_close(old, ref, rtol=0, atol=0)
        with pytest.raises(TypeError, match="mixed"):
            psnr(truth, est, x=est, data_range=1.0)

    def test_bad_input(self):
        x = rand(2, 1, 4, 4)
        with pytest.raises(ValueError,
                           match=r"image_test must have the shape of image_true \(2, 1, 4, 4\)"):
            psnr(x, rand(2, 1, 4, 5), data_range=1.0)
        with pytest.raises(ValueError, match="image_test"):
            psnr(x, x[:1], data_range=1.0)  # no silent broadcasting over the batch
        for bad_range in (0.0, -1.0, float("nan"), float("inf")):
            with pytest.raises(ValueError, match="data_range"):
                psnr(x, x, data_range=bad_range)
        with pytest.raises(TypeError, match="data_range"):
            psnr(x, x, data_range=None)
        with pytest.raises(TypeError, match="data_range"):
            psnr(x, x)  # data_range is required
        nan = x.clone()
        nan[0, 0, 0, 0] = float("nan")
        with pytest.raises(ValueError, match="image_test contains NaN"):
            psnr(x, nan, data_range=1.0)
        with pytest.raises(ValueError, match="image_true contains NaN"):
            psnr(nan, x, data_range=1.0)
        with pytest.raises(TypeError, match="image_true"):  # NumPy is accepted, lists not
            psnr(x.numpy().tolist(), x, data_range=1.0)
        with pytest.raises(ValueError, match="image_test must have shape"):
            psnr(torch.rand(5), torch.rand(5), data_range=1.0)


# ----------------------------------------------------------------------- rmse
class TestRMSE:
    def test_closed_form_and_skimage(self):
        truth = rand(3, 1, 6, 6, seed=3)
        x = rand(3, 1, 6, 6, seed=4)
        ref = [math.sqrt(mean_squared_error(t.numpy(), e.numpy())) for t, e in zip(truth, x)]
        np.testing.assert_allclose(rmse(truth, x).numpy(), ref, rtol=1e-12)
        torch.testing.assert_close(rmse(truth, truth + 0.25),
                                   torch.full((3,), 0.25, dtype=torch.float64))

    def test_consistent_with_psnr(self):
        truth = rand(2, 1, 8, 8, seed=5)
        x = rand(2, 1, 8, 8, seed=6)
        torch.testing.assert_close(psnr(truth, x, data_range=2.0),
                                   20 * torch.log10(2.0 / rmse(truth, x)))

    def test_deprecated_keywords_warn(self):
        truth, x = rand(2, 1, 4, 4, seed=7), rand(2, 1, 4, 4, seed=8)
        with pytest.warns(DeprecationWarning, match=r"rmse\(image_true, image_test\)"):
            old = rmse(x=x, truth=truth)
        torch.testing.assert_close(old, rmse(truth, x), rtol=0, atol=0)

    def test_bad_input(self):
        with pytest.raises(ValueError, match="image_test must have the shape"):
            rmse(rand(1, 1, 4, 4), rand(1, 1, 4, 3))
        with pytest.raises(TypeError, match="image_true"):
            rmse(torch.ones(1, 1, 2, 2, dtype=torch.complex64), torch.ones(1, 1, 2, 2))
        with pytest.raises(TypeError, match="positional"):
            rmse(rand(1, 1, 4, 4), rand(1, 1, 4, 4), 1.0)


# ----------------------------------------------------------------------- ssim
class TestSSIM:
    @pytest.mark.parametrize("size", [8, 16, 28])
    def test_identical_images_give_one(self, size):
        x = rand(3, 1, size, size, seed=size)
        value = ssim(x, x.clone(), data_range=1.0)
        assert tuple(value.shape) == (3,) and value.dtype == torch.float64
        torch.testing.assert_close(value, torch.ones(3, dtype=torch.float64))

    def test_constant_images_closed_form(self):
        # Constant images have zero (co)variance, so SSIM reduces to the luminance
        # term (2 a b + C1) / (a^2 + b^2 + C1) with C1 = (0.01 * data_range)^2.
        a, b, data_range = 0.3, 0.6, 1.0
        c1 = (0.01 * data_range) ** 2
        expected = (2 * a * b + c1) / (a * a + b * b + c1)
        value = ssim(torch.full((1, 1, 10, 10), a), torch.full((1, 1, 10, 10), b),
                     data_range=data_range)
        assert float(value[0]) == pytest.approx(expected, rel=1e-5)  # float32 inputs

    @pytest.mark.parametrize("seed", range(4))
    def test_matches_skimage_on_random_images(self, seed):
        # float64 on both sides, same windowed statistics: rtol 1e-12.
        g = np.random.default_rng(100 + seed)
        h, w = int(g.integers(7, 20)), int(g.integers(7, 20))
        truth = torch.from_numpy(g.uniform(size=(3, 1, h, w)))
        est = torch.from_numpy(np.clip(truth.numpy() + g.normal(0, 0.2, size=truth.shape), 0, 1))
        ours = ssim(truth, est, data_range=1.0)
        ref = [structural_similarity(t[0].numpy(), e[0].numpy(), data_range=1.0)
               for t, e in zip(truth, est)]
        np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-12)
        assert len(set(ours.tolist())) == 3  # genuinely per image

    def test_multichannel_matches_skimage(self):
        truth = rand(2, 3, 12, 12, seed=9)
        x = _noisy(truth, 10, 0.2)
        ours = ssim(truth, x, data_range=1.0)
        ref = [structural_similarity(t.numpy(), a.numpy(), data_range=1.0, channel_axis=0)
               for a, t in zip(x, truth)]
        np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-12)

    def test_small_images_get_a_valid_window(self):
        # 8x8 digits: skimage's default 7x7 window fits; a 5x5 image gets 5x5.
        truth = rand(2, 1, 5, 5, seed=11)
        x = (truth + 0.1).clamp(0, 1)
        ref = [structural_similarity(t[0].numpy(), a[0].numpy(), data_range=1.0, win_size=5)
               for a, t in zip(x, truth)]
        np.testing.assert_allclose(ssim(truth, x, data_range=1.0).numpy(), ref, rtol=1e-12)
        ref3 = structural_similarity(truth[0, 0].numpy(), x[0, 0].numpy(), data_range=1.0,
                                     win_size=3)
        value = ssim(truth, x, data_range=1.0, win_size=3)[0]
        assert float(value) == pytest.approx(ref3, rel=1e-12)

    def test_worse_reconstruction_scores_lower(self):
        truth = rand(1, 1, 16, 16, seed=12)
        noise = rand(1, 1, 16, 16, seed=13) - 0.5
        assert float(ssim(truth, truth + 0.05 * noise, data_range=1.0)) > float(
            ssim(truth, truth + 0.3 * noise, data_range=1.0))

    def test_deprecated_keywords_and_positional_range_warn_and_agree(self):
        truth = rand(2, 1, 9, 9, seed=14)
        est = _noisy(truth, 15, 0.3)
        ref = ssim(truth, est, data_range=1.0)
        with pytest.warns(DeprecationWarning, match=r"ssim\(image_true, image_test"):
            old = ssim(x=est, truth=truth, data_range=1.0)
        torch.testing.assert_close(old, ref, rtol=0, atol=0)
        with pytest.warns(DeprecationWarning, match="data_range by keyword"):
            old = ssim(truth, est, 1.0)
        torch.testing.assert_close(old, ref, rtol=0, atol=0)

    def test_bad_input(self):
        x = rand(1, 1, 8, 8)
        with pytest.raises(ValueError, match="image_test must have the shape"):
            ssim(x, rand(1, 1, 8, 9), data_range=1.0)
        with pytest.raises(ValueError, match=r"image_test must have shape \(H, W\) or \(C, H, W\)"):
            ssim(x[None], x[None], data_range=1.0)  # (C, H, W) is one image; 5-D is refused
        with pytest.raises(ValueError, match=">= 3"):
            ssim(rand(1, 1, 2, 8), rand(1, 1, 2, 8), data_range=1.0)
        with pytest.raises(ValueError, match="win_size"):
            ssim(x, x, data_range=1.0, win_size=4)
        with pytest.raises(ValueError, match="win_size"):
            ssim(x, x, data_range=1.0, win_size=9)
        with pytest.raises(ValueError, match="data_range"):
            ssim(x, x, data_range=-1.0)
        nan = x.clone()
        nan[..., 0, 0] = float("inf")
        with pytest.raises(ValueError, match="image_test contains NaN or inf"):
            ssim(x, nan, data_range=1.0)
