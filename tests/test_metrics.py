"""Tests of bayes_recon.metrics: closed forms and scikit-image as references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from bayes_recon.metrics import psnr, rmse, ssim


def rand(*shape, seed=0, dtype=torch.float64):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ----------------------------------------------------------------------- psnr
class TestPSNR:
    @pytest.mark.parametrize("error, data_range", [(0.1, 1.0), (0.03, 1.0), (2.0, 255.0)])
    def test_constant_error_closed_form(self, error, data_range):
        truth = rand(3, 1, 8, 8) * data_range
        value = psnr(truth + error, truth, data_range=data_range)
        expected = 10 * math.log10(data_range**2 / error**2)
        assert tuple(value.shape) == (3,) and value.dtype == torch.float64
        torch.testing.assert_close(value, torch.full((3,), expected, dtype=torch.float64),
                                   rtol=1e-10, atol=1e-10)

    def test_per_image_values(self):
        truth = torch.zeros(2, 1, 4, 4)
        x = truth.clone()
        x[0] += 0.1
        x[1] += 0.01
        torch.testing.assert_close(psnr(x, truth, 1.0),
                                   torch.tensor([20.0, 40.0], dtype=torch.float64),
                                   rtol=1e-5, atol=1e-4)  # float32 inputs: 0.1 inexact

    def test_matches_skimage(self):
        truth = rand(4, 2, 9, 7, seed=1)
        x = (truth + 0.1 * rand(4, 2, 9, 7, seed=2) - 0.05).clamp(0, 1)
        ours = psnr(x, truth, data_range=1.0)
        ref = [peak_signal_noise_ratio(t.numpy(), a.numpy(), data_range=1.0)
               for a, t in zip(x, truth)]
        np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-12)

    def test_identical_is_inf_not_nan(self):
        x = rand(2, 1, 4, 4)
        value = psnr(x, x.clone(), 1.0)
        assert bool(torch.isinf(value).all()) and bool((value > 0).all())

    def test_bad_input(self):
        x = rand(2, 1, 4, 4)
        with pytest.raises(ValueError, match=r"truth must have the shape of x \(2, 1, 4, 4\)"):
            psnr(x, rand(2, 1, 4, 5), 1.0)
        with pytest.raises(ValueError, match="truth"):
            psnr(x, x[:1], 1.0)  # no silent broadcasting over the batch
        for bad_range in (0.0, -1.0, float("nan"), float("inf")):
            with pytest.raises(ValueError, match="data_range"):
                psnr(x, x, bad_range)
        with pytest.raises(TypeError, match="data_range"):
            psnr(x, x, None)
        with pytest.raises(TypeError):
            psnr(x, x)  # data_range is required
        nan = x.clone()
        nan[0, 0, 0, 0] = float("nan")
        with pytest.raises(ValueError, match="x contains NaN"):
            psnr(nan, x, 1.0)
        with pytest.raises(ValueError, match="truth contains NaN"):
            psnr(x, nan, 1.0)
        with pytest.raises(TypeError, match="x"):
            psnr(x.numpy(), x, 1.0)
        with pytest.raises(ValueError, match="x must have shape"):
            psnr(torch.rand(5), torch.rand(5), 1.0)


# ----------------------------------------------------------------------- rmse
class TestRMSE:
    def test_closed_form_and_numpy(self):
        truth = rand(3, 1, 6, 6, seed=3)
        x = rand(3, 1, 6, 6, seed=4)
        ref = np.sqrt(((x - truth).numpy() ** 2).reshape(3, -1).mean(axis=1))
        np.testing.assert_allclose(rmse(x, truth).numpy(), ref, rtol=1e-12)
        torch.testing.assert_close(rmse(truth + 0.25, truth),
                                   torch.full((3,), 0.25, dtype=torch.float64))

    def test_consistent_with_psnr(self):
        truth = rand(2, 1, 8, 8, seed=5)
        x = rand(2, 1, 8, 8, seed=6)
        torch.testing.assert_close(psnr(x, truth, 2.0), 20 * torch.log10(2.0 / rmse(x, truth)))

    def test_bad_input(self):
        with pytest.raises(ValueError, match="truth must have the shape"):
            rmse(rand(1, 1, 4, 4), rand(1, 1, 4, 3))
        with pytest.raises(TypeError, match="x"):
            rmse(torch.ones(1, 1, 2, 2, dtype=torch.complex64), torch.ones(1, 1, 2, 2))


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
        value = ssim(torch.full((1, 1, 10, 10), a), torch.full((1, 1, 10, 10), b), data_range)
        assert float(value[0]) == pytest.approx(expected, rel=1e-5)  # float32 inputs

    def test_matches_skimage_per_image(self):
        truth = rand(3, 1, 16, 16, seed=7)
        x = (truth + 0.2 * rand(3, 1, 16, 16, seed=8)).clamp(0, 1)
        ours = ssim(x, truth, data_range=1.0)
        ref = [structural_similarity(a[0].numpy(), t[0].numpy(), data_range=1.0)
               for a, t in zip(x, truth)]
        np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-12)
        assert len(set(ours.tolist())) == 3  # genuinely per image

    def test_multichannel_matches_skimage(self):
        truth = rand(2, 3, 12, 12, seed=9)
        x = (truth + 0.1 * rand(2, 3, 12, 12, seed=10)).clamp(0, 1)
        ours = ssim(x, truth, data_range=1.0)
        ref = [structural_similarity(a.numpy(), t.numpy(), data_range=1.0, channel_axis=0)
               for a, t in zip(x, truth)]
        np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-12)

    def test_small_images_get_a_valid_window(self):
        # 8x8 digits: skimage's default 7x7 window fits; a 5x5 image gets 5x5.
        truth = rand(2, 1, 5, 5, seed=11)
        x = (truth + 0.1).clamp(0, 1)
        ref = [structural_similarity(a[0].numpy(), t[0].numpy(), data_range=1.0, win_size=5)
               for a, t in zip(x, truth)]
        np.testing.assert_allclose(ssim(x, truth, 1.0).numpy(), ref, rtol=1e-12)
        ref3 = structural_similarity(x[0, 0].numpy(), truth[0, 0].numpy(), data_range=1.0,
                                     win_size=3)
        assert float(ssim(x, truth, 1.0, win_size=3)[0]) == pytest.approx(ref3, rel=1e-12)

    def test_worse_reconstruction_scores_lower(self):
        truth = rand(1, 1, 16, 16, seed=12)
        noise = rand(1, 1, 16, 16, seed=13) - 0.5
        assert float(ssim(truth + 0.05 * noise, truth, 1.0)) > float(
            ssim(truth + 0.3 * noise, truth, 1.0))

    def test_bad_input(self):
        x = rand(1, 1, 8, 8)
        with pytest.raises(ValueError, match="truth must have the shape"):
            ssim(x, rand(1, 1, 8, 9), 1.0)
        with pytest.raises(ValueError, match=r"x must have 4 dimensions"):
            ssim(x[0], x[0], 1.0)
        with pytest.raises(ValueError, match=">= 3"):
            ssim(rand(1, 1, 2, 8), rand(1, 1, 2, 8), 1.0)
        with pytest.raises(ValueError, match="win_size"):
            ssim(x, x, 1.0, win_size=4)
        with pytest.raises(ValueError, match="win_size"):
            ssim(x, x, 1.0, win_size=9)
        with pytest.raises(ValueError, match="data_range"):
            ssim(x, x, -1.0)
        nan = x.clone()
        nan[..., 0, 0] = float("inf")
        with pytest.raises(ValueError, match="x contains NaN or inf"):
            ssim(nan, x, 1.0)
