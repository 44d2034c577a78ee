"""U-Net and deep-image-prior fitting: shapes, blocks, TV, the fit loop, educated DIP, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bayes_recon.inference.dip import DIPFit, dip_input, fit_dip, pretrain_dip
from bayes_recon.operators import total_variation
from bayes_recon.models.unet import UNet, UNetConfig, conv_weights_by_block
from bayes_recon.operators import Identity, ParallelBeamCT

TINY = UNetConfig(channels=4, skip_channels=(0, 4, 4))


@pytest.mark.parametrize("size", [(28, 28), (16, 16), (13, 9)])
def test_unet_shapes_and_range(size):
    torch.manual_seed(0)
    net = UNet(TINY)
    out = net(torch.randn(2, 1, *size))
    assert out.shape == (2, 1, *size)
    assert bool((out > 0).all() and (out < 1).all())  # sigmoid output


def test_unet_blocks_and_weight_groups():
    net = UNet(UNetConfig(channels=[4, 8, 8], skip_channels=(0, 4, 4)))
    assert net.block_names() == ["inc", "down_0", "down_1", "skip_0", "up_0", "skip_1", "up_1", "outc"]
    g3 = conv_weights_by_block(net, 3)
    assert list(g3) == ["inc", "down_0", "down_1", "up_0", "up_1"]
    assert len(g3["down_0"]) == 2 and all(n.startswith("down_0.") for n in g3["down_0"])
    g1 = conv_weights_by_block(net, 1)
    assert set(g1) == {"skip_0", "skip_1", "outc"}
    # up_0 goes 8 -> 8 channels at scale 1 with a 4-channel skip: 12 input channels.
    assert dict(net.named_parameters())[g3["up_0"][0]].shape == (8, 12, 3, 3)
    # No skip at full resolution when skip_channels[1] == 0.
    net0 = UNet(UNetConfig(channels=4, skip_channels=(0, 0, 4)))
    assert not hasattr(net0, "skip_1") and hasattr(net0, "skip_0")


def test_unet_config_validation():
    with pytest.raises(ValueError, match="skip_channels"):
        UNet(UNetConfig(skip_channels=(0, 4)))
    with pytest.raises(ValueError, match="groups"):
        UNet(UNetConfig(channels=6, groups=4))
    with pytest.raises(ValueError, match="dropout"):
        UNet(UNetConfig(dropout=1.0))
    with pytest.raises(ValueError, match="channels"):
        UNet(UNetConfig(channels=[4, 4]))


def test_total_variation_closed_forms():
    x = torch.zeros(2, 1, 5, 6, dtype=torch.float64)
    x[0, :, :, 3:] = 2.0                     # one vertical edge of height 2 over 5 rows
    x[1] = torch.arange(6.0)                 # unit ramp along columns: 5 steps x 5 rows
    aniso = total_variation(x, isotropic=False)
    assert torch.allclose(aniso, torch.tensor([10.0, 25.0], dtype=torch.float64))
    # Gradients that point along one axis only: isotropic equals anisotropic.
    assert torch.allclose(total_variation(x), aniso)
    # A diagonal ramp x_ij = i + j: every interior pixel has (1, 1), isotropic sqrt(2) each;
    # the Neumann border keeps one of the two differences in the last row and column.
    ramp = (torch.arange(5.0)[:, None] + torch.arange(6.0)[None, :]).expand(1, 1, 5, 6)
    expected_iso = 4 * 5 * 2 ** 0.5 + 4 + 5   # interior (4x5) + last column (4) + last row (5)
    assert total_variation(ramp).item() == pytest.approx(expected_iso, rel=1e-6)
    assert total_variation(ramp, isotropic=False).item() == pytest.approx(2 * 4 * 5 + 4 + 5)
    # The isotropic version has finite gradients on a flat image (eps > 0): with all
    # differences 0, d sqrt(dx^2 + dy^2 + eps) / d dx = dx / sqrt(...) = 0 exactly.
    flat = torch.zeros(1, 1, 4, 4, requires_grad=True)
    total_variation(flat, isotropic=True, eps=1e-12).sum().backward()
    assert torch.equal(flat.grad, torch.zeros_like(flat))


def _square_problem(size=8):
    y = torch.zeros(1, 1, size, size)
    y[..., 2:6, 2:6] = 1.0
    return y, Identity((1, size, size))


def test_fit_dip_reduces_loss_and_keeps_best():
    y, op = _square_problem()
    fit = fit_dip(y, op, 1e-3, 150, lr=1e-2, network_config=UNetConfig(scales=2, channels=4,
                  skip_channels=(0, 4)), progress=False, truth=y)
    assert isinstance(fit, DIPFit) and fit.loss_history.shape == (150,)
    assert fit.best_loss == pytest.approx(fit.loss_history.min())
    assert fit.loss_history[-10:].mean() < 0.2 * fit.loss_history[0]
    # The returned network reproduces the best iterate's loss.
    with torch.no_grad():
        loss = ((fit.network(fit.input) - y) ** 2).sum() + 1e-3 * total_variation(fit.x, isotropic=False).sum()
    assert float(loss) == pytest.approx(fit.best_loss, rel=1e-5)
    assert fit.psnr_history.shape == (150,) and fit.iterations_to_psnr(-1e9) == 1
    # Same seed, same result.
    fit2 = fit_dip(y, op, 1e-3, 150, lr=1e-2, network_config=UNetConfig(scales=2, channels=4,
                   skip_channels=(0, 4)), progress=False)
    assert np.array_equal(fit.loss_history, fit2.loss_history)


def test_dip_inputs():
    op = ParallelBeamCT(12, 6)
    y = op(torch.rand(1, 1, 12, 12))
    assert torch.allclose(dip_input(y, op, "fbp"), op.fbp(y))
    a, b = dip_input(y, op, "noise", seed=3), dip_input(y, op, "noise", seed=3)
    assert torch.equal(a, b) and a.shape == (1, 1, 12, 12)


def test_educated_dip_runs_and_fine_tunes():
    op = ParallelBeamCT(12, 6)
    net = pretrain_dip(op, num_images=16, epochs=1, batch_size=8, network_config=TINY, progress=False)
    assert isinstance(net, UNet) and not net.training
    y = op(torch.rand(1, 1, 12, 12))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fit = fit_dip(y, op, 1e-2, 5, init=net, progress=False)
    assert fit.x.shape == (1, 1, 12, 12)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # init not modified


def test_fit_dip_bad_input():
    y, op = _square_problem()
    cfg = UNetConfig(scales=2, channels=4, skip_channels=(0, 4))
    with pytest.raises(ValueError, match="y must have shape"):
        fit_dip(torch.zeros(1, 1, 9, 9), op, 1e-3, 5, network_config=cfg, progress=False)
    with pytest.raises(ValueError, match="iterations"):
        fit_dip(y, op, 1e-3, 0, network_config=cfg, progress=False)
    with pytest.raises(ValueError, match="tv_weight"):
        fit_dip(y, op, 0.0, 5, network_config=cfg, progress=False)
    with pytest.raises(ValueError, match="tv_weight"):
        fit_dip(y, op, -1.0, 5, network_config=cfg, progress=False)
    with pytest.raises(ValueError, match="input"):
        fit_dip(y, op, 1e-3, 5, input="zeros", network_config=cfg, progress=False)
    with pytest.raises(ValueError, match="network channels"):
        fit_dip(y, op, 1e-3, 5, init=UNet(UNetConfig(in_channels=2, channels=4, skip_channels=(0, 4, 4))),
                progress=False)
    with pytest.raises(ValueError, match="NaN"):
        fit_dip(torch.full_like(y, float("nan")), op, 1e-3, 5, network_config=cfg, progress=False)
    with pytest.raises(TypeError, match="op"):
        fit_dip(y, "identity", 1e-3, 5, progress=False)


def test_fixed_noise_posterior_follows_the_residual_rule():
    # The documented rule, computed independently with a dense CT matrix:
    # sigma^2 = ||y - A x*||^2 / ||A||_F^2, samples x* + sigma * N(0, I).
    from scipy import stats

    from bayes_recon.inference import fixed_noise_posterior

    size = 8
    op = ParallelBeamCT(size, 6)
    y0, _ = _square_problem(size)
    y = op(y0.double()).float()
    fit = fit_dip(y, op, 1e-3, 30, lr=1e-2, network_config=UNetConfig(scales=2, channels=4,
                  skip_channels=(0, 4)), progress=False)
    A = op.to_dense().numpy().astype(np.float64).reshape(-1, size * size)
    x_star = fit.x.double().numpy().reshape(-1)
    resid = y.double().numpy().reshape(-1) - A @ x_star
    sigma_rule = np.sqrt((resid @ resid) / (A ** 2).sum())
    post = fixed_noise_posterior(fit, op, 4000, seed=0, probes=4000)
    # ||A||_F^2 is estimated from Gaussian probes: relative sd ~ sqrt(2 / (probes * rank))
    # is below 1 % here; the square root halves it.
    assert post.extras["image_std"] == pytest.approx(sigma_rule, rel=0.02)
    # Samples: centred on x* and with that variance (chi-square bound on the pooled variance).
    dev = (post.samples[0].double().numpy().reshape(4000, -1) - x_star) / post.extras["image_std"]
    assert abs(dev.mean()) < 4 / np.sqrt(dev.size)
    dof = dev.size
    lo, hi = stats.chi2.ppf([1e-4, 1 - 1e-4], dof) / dof
    assert lo < (dev ** 2).mean() < hi
