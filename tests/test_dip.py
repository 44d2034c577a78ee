"""U-Net and deep-image-prior fitting: shapes, blocks, TV, the fit loop, educated DIP, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bayes_recon.inference.dip import DIPFit, dip_input, fit_dip, pretrain_dip, total_variation
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
    assert torch.allclose(total_variation(x), torch.tensor([10.0, 25.0], dtype=torch.float64))
    iso = total_variation(x, isotropic=True, eps=0.0)
    # Isotropic over the (4, 5) interior: 4 rows see the edge / ramp in every column.
    assert torch.allclose(iso, torch.tensor([8.0, 20.0], dtype=torch.float64))
    # The isotropic version has finite gradients on a flat image (eps > 0).
    flat = torch.zeros(1, 1, 4, 4, requires_grad=True)
    total_variation(flat, isotropic=True).sum().backward()
    assert torch.isfinite(flat.grad).all()


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
        loss = ((fit.network(fit.input) - y) ** 2).sum() + 1e-3 * total_variation(fit.x).sum()
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
