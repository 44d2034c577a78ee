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


# ------------------------------------------------------------ educated DIP: init
def test_unet_checkpoint_round_trip(tmp_path):
    torch.manual_seed(1)
    net = UNet(TINY)
    path = net.save(tmp_path / "net", {"note": "test"})
    back = UNet.load(path)
    z = torch.rand(1, 1, 12, 12)
    assert back.config == TINY or back.config.to_dict() == TINY.to_dict()
    assert torch.equal(net.eval()(z), back.eval()(z))
    assert back.metadata == {"note": "test"}
    # A config that does not match the tensors is refused.
    other = UNet(UNetConfig(channels=8, skip_channels=(0, 4, 4)))
    other.save(tmp_path / "other")
    (tmp_path / "other.json").write_text((tmp_path / "net.json").read_text())
    with pytest.raises(ValueError, match="does not match its config"):
        UNet.load(tmp_path / "other")


def test_load_dip_init_resolves_each_kind(tmp_path):
    from bayes_recon.inference.dip import load_dip_init
    from bayes_recon.models import available_dip_networks

    assert load_dip_init(None) is None
    net = UNet(TINY)
    assert load_dip_init(net) is net
    net.save(tmp_path / "mine")
    loaded = load_dip_init(str(tmp_path / "mine.safetensors"))
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), loaded.state_dict().values()))
    for name in available_dip_networks():
        assert isinstance(load_dip_init(name), UNet)
    with pytest.raises(ValueError, match="shipped networks"):
        load_dip_init("no-such-network")
    with pytest.raises(TypeError, match="init must be"):
        load_dip_init(3)


def test_fit_dip_starts_from_the_init_network():
    # The first recorded loss is the loss of the init network itself (before any Adam step):
    # ||A f(z) − y||² + γ TV(f(z)) with the pretrained weights, computed here independently.
    op = ParallelBeamCT(12, 6)
    torch.manual_seed(3)
    init = UNet(TINY).eval()
    y = op(torch.rand(1, 1, 12, 12))
    fit = fit_dip(y, op, 1e-2, 2, init=init, progress=False)
    z = dip_input(y, op, "fbp")
    with torch.no_grad():
        x0 = init(z)
        expected = float((op(x0) - y).pow(2).sum() + 1e-2 * total_variation(x0, isotropic=False).sum())
    assert fit.loss_history[0] == pytest.approx(expected, rel=1e-5)
    # A random start with another seed gives a different first loss.
    other = fit_dip(y, op, 1e-2, 2, seed=5, network_config=TINY, progress=False)
    assert other.loss_history[0] != pytest.approx(expected, rel=1e-3)


def test_pretrain_dip_with_several_operators_and_noise_levels_learns():
    from bayes_recon.data import ellipses, simulate
    from bayes_recon.metrics import psnr

    ops = [ParallelBeamCT(16, 8), ParallelBeamCT(16, 12)]
    net = pretrain_dip(ops, num_images=64, epochs=20, batch_size=8, relative_noise=(0.02, 0.05),
                       network_config=TINY, lr=3e-3, progress=False)
    untrained = UNet(TINY).eval()
    x = ellipses(16, 16, seed=99)  # held-out phantoms
    op = ParallelBeamCT(16, 10)  # an angle count it was not trained on
    fbp = op.fbp(simulate(op, x, 0.05, seed=1).y)
    with torch.no_grad():
        trained_err = float(psnr(x, net(fbp), data_range=1.0).mean())
        untrained_err = float(psnr(x, untrained(fbp), data_range=1.0).mean())
    assert trained_err > untrained_err + 3.0  # dB
    with pytest.raises(ValueError, match="one domain_shape"):
        pretrain_dip([ParallelBeamCT(16, 8), ParallelBeamCT(12, 8)], num_images=4, progress=False)
    with pytest.raises(TypeError, match="op must be"):
        pretrain_dip([], num_images=4, progress=False)
    with pytest.raises(ValueError, match="relative_noise"):
        pretrain_dip(ops, num_images=4, relative_noise=(0.1, -1.0), progress=False)


def test_linearised_dip_takes_an_init_network():
    from bayes_recon.inference import LinearisedDIPConfig, linearised_dip

    op = ParallelBeamCT(12, 8)
    torch.manual_seed(4)
    init = UNet(TINY).eval()
    y = op(torch.rand(1, 1, 12, 12))
    cfg = LinearisedDIPConfig(iterations=3, num_samples=20, evidence_iterations=5, calibration="none",
                              init=init)
    res = linearised_dip(y, op, 0.1, cfg, progress=False)
    z = dip_input(y, op, "fbp")
    with torch.no_grad():
        x0 = init(z)
    first = float((op(x0) - y).pow(2).sum() + res.fit.tv_weight * total_variation(x0, isotropic=False).sum())
    assert res.fit.loss_history[0] == pytest.approx(first, rel=1e-5)
    assert res.fit.network.config.to_dict() == TINY.to_dict()  # the init's architecture, not the default


def test_shipped_educated_network_beats_fbp_on_held_out_phantoms():
    # ellipses-ct-dip (trained at 32² on ellipses seed 0) at 64², an angle count and phantoms it
    # was not trained on: its output is closer to the truth than the FBP it starts from.
    from bayes_recon.data import ellipses, simulate
    from bayes_recon.metrics import psnr
    from bayes_recon.models import load_pretrained_dip

    net = load_pretrained_dip("ellipses-ct-dip")
    assert net.config.to_dict() == UNetConfig().to_dict()  # the DIP's default architecture
    x = ellipses(8, 64, seed=4321)
    op = ParallelBeamCT(64, 50)
    fbp = op.fbp(simulate(op, x, 0.05, seed=2).y)
    with torch.no_grad():
        gain = psnr(x, net(fbp), data_range=1.0) - psnr(x, fbp.clamp(0, 1), data_range=1.0)
    assert float(gain.mean()) > 1.5 and float(gain.min()) > 0.0  # dB
