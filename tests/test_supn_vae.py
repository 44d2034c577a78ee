"""SUPN-VAE: shapes, checkpoints (safetensors + JSON), two-stage training."""

from __future__ import annotations

import json
import math

import pytest
import torch

from bayes_recon.data import digits
from bayes_recon.distributions import StructuredGaussian
from bayes_recon.models import SUPNVAE, SUPNConfig, TrainConfig, evaluate_nll, train_prior
from bayes_recon.models.checkpoint import load_tensors


def _tiny(covariance="structured", **kw):
    torch.manual_seed(0)
    cfg = dict(image_size=12, latent_dim=3, widths=(8,), radius=1, covariance=covariance)
    cfg.update(kw)
    return SUPNVAE(SUPNConfig(**cfg))


@pytest.mark.parametrize("covariance", ["structured", "diagonal", "identity"])
def test_decode_gives_structured_gaussian(covariance):
    vae = _tiny(covariance)
    d = vae.decode(torch.randn(5, 3))
    assert isinstance(d, StructuredGaussian)
    assert d.batch_shape == (5,) and d.event_shape == (1, 12, 12)
    x = torch.rand(5, 1, 12, 12)
    lp = d.log_prob(x)
    assert lp.shape == (5,)
    # Reference: a dense MultivariateNormal with the decoder's mean and precision
    # (float64, so only the float32 of log_prob itself matters: rtol 1e-4).
    with torch.no_grad():
        loc = d.loc.reshape(5, -1).double()
        prec = d.to_dense_precision().double()
        ref = torch.distributions.MultivariateNormal(loc, precision_matrix=prec).log_prob(
            x.reshape(5, -1).double())
    torch.testing.assert_close(lp.detach().double(), ref, rtol=1e-4, atol=1e-3)
    q = vae.encode(x)
    assert q.loc.shape == (5, 3) and bool((q.scale > 0).all())


def test_diagonal_and_identity_have_no_offdiagonal_weights():
    x = torch.rand(2, 1, 12, 12)
    for cov in ("diagonal", "identity"):
        d = _tiny(cov).decode(torch.randn(2, 3))
        dense = d.to_dense_precision().detach()
        off = dense - torch.diag_embed(torch.diagonal(dense, dim1=-2, dim2=-1))
        assert float(off.abs().max()) == 0.0
    ident = _tiny("identity").decode(torch.randn(2, 3))
    assert float((ident.log_diag.max() - ident.log_diag.min()).detach()) == 0.0  # one global variance
    # Identity covariance: log N(x; mu, s^2 I) with s = exp(-log_diag), per-pixel Normal.
    with torch.no_grad():
        s = torch.exp(-ident.log_diag.double())
        ref = torch.distributions.Normal(ident.loc.double(), s).log_prob(x.double()).flatten(1).sum(1)
        torch.testing.assert_close(ident.log_prob(x).double(), ref, rtol=1e-4, atol=1e-3)


def test_negative_elbo_stage1_closed_form():
    vae = _tiny()
    x = torch.rand(3, 1, 12, 12)
    gen = torch.Generator().manual_seed(1)
    nelbo = vae.negative_elbo(x, stage=1, generator=gen)
    gen = torch.Generator().manual_seed(1)
    q = vae.encode(x)
    z = q.loc + q.scale * torch.randn(q.loc.shape, generator=gen)
    mu = vae.decode_mean(z)
    s = vae.config.stage1_std
    nll = torch.distributions.Normal(mu, s).log_prob(x).flatten(1).sum(1).neg()
    kl = 0.5 * (q.loc**2 + q.scale**2 - 1 - 2 * q.scale.log()).sum(1)
    torch.testing.assert_close(nelbo, nll + kl, rtol=1e-5, atol=1e-3)


def test_save_load_roundtrip(tmp_path):
    vae = _tiny()
    vae.save(tmp_path / "m.safetensors")
    meta = json.loads((tmp_path / "m.json").read_text())
    assert meta["class"] == "SUPNVAE" and meta["config"]["radius"] == 1
    loaded = SUPNVAE.load(tmp_path / "m.safetensors")
    z = torch.randn(2, 3)
    x = torch.full((2, 1, 12, 12), 0.3)
    torch.testing.assert_close(loaded.decode(z).log_prob(x), vae.decode(z).log_prob(x))


def test_load_rejects_corrupt_and_mismatched(tmp_path):
    vae = _tiny()
    vae.save(tmp_path / "m.safetensors")
    (tmp_path / "m.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="corrupt"):
        SUPNVAE.load(tmp_path / "m.safetensors")
    vae.save(tmp_path / "m.safetensors")
    meta = json.loads((tmp_path / "m.json").read_text())
    meta["config"]["latent_dim"] = 5
    (tmp_path / "m.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="does not match its config"):
        SUPNVAE.load(tmp_path / "m.safetensors")
    (tmp_path / "m.json").write_text("{broken")
    with pytest.raises(ValueError, match="not valid JSON"):
        SUPNVAE.load(tmp_path / "m.safetensors")
    with pytest.raises(ValueError, match="missing"):
        SUPNVAE.load(tmp_path / "absent.safetensors")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(covariance="full"), "covariance must be one of"),
        (dict(latent_dim=0), "latent_dim must be >= 1"),
        (dict(widths=()), "widths"),
        (dict(radius=-1), "radius must be >= 0"),
    ],
)
def test_config_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SUPNConfig(**kwargs)


def test_decode_and_encode_reject_wrong_shapes():
    vae = _tiny()
    with pytest.raises(ValueError, match="z must have shape"):
        vae.decode(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="x must have shape"):
        vae.encode(torch.zeros(2, 1, 10, 10))


def _digit_data():
    data = digits("train", size=12)
    return data[:200], data[200:300]


def test_structured_beats_diagonal_in_a_few_epochs():
    # The tiny structured model must reach a lower validation NLL than the
    # diagonal one from the same stage-1 weights (same seed, same data).
    train, val = _digit_data()
    cfg = TrainConfig(stage1_epochs=8, stage2_epochs=8, batch_size=32, lr=3e-3,
                      patience=100, max_shift=1, max_rotation=5.0, seed=0)
    results = {}
    for cov in ("structured", "diagonal"):
        result = train_prior(_tiny(cov, radius=2), train, val, cfg, progress=False)
        results[cov] = evaluate_nll(result.model, val)
    assert results["structured"] < results["diagonal"] - 0.05, results


def test_training_resumes_from_checkpoint(tmp_path):
    train, val = _digit_data()
    cfg = TrainConfig(stage1_epochs=2, stage2_epochs=2, batch_size=50, patience=100, seed=0)
    full = train_prior(_tiny(), train, val, cfg, progress=False)
    # Run the first stage only, then resume the whole schedule from its checkpoint.
    part_cfg = TrainConfig(stage1_epochs=2, stage2_epochs=0, batch_size=50, patience=100, seed=0)
    train_prior(_tiny(), train, val, part_cfg, checkpoint_dir=tmp_path, progress=False)
    tensors, meta = load_tensors(tmp_path / "checkpoint")
    assert meta["stage"] == 2 and meta["optimizer"] is None
    resumed = train_prior(_tiny(), train, val, cfg, checkpoint_dir=tmp_path, progress=False)
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)
    assert [h["val_bpp"] for h in resumed.history] == pytest.approx(
        [h["val_bpp"] for h in full.history])


def test_bits_per_pixel_of_standard_normal_data():
    # With an identity-covariance model whose sigma is 1 and a mean of 0, the NLL
    # part is the closed form 0.5*log(2 pi e) per pixel on N(0,1) data.
    from bayes_recon.models.training import bits_per_pixel

    n = 100
    nats = torch.tensor(n * 0.5 * math.log(2 * math.pi * math.e))
    assert float(bits_per_pixel(nats, n)) == pytest.approx(2.047, abs=1e-3)


def test_copy_mean_network_from_a_stage2_checkpoint_and_a_saved_prior(tmp_path):
    from bayes_recon.models import copy_mean_network
    from bayes_recon.models.training import MEAN_NETWORK, mean_network_state

    train, val = _digit_data()
    stage1 = TrainConfig(stage1_epochs=2, stage2_epochs=0, batch_size=50, patience=100, seed=0)
    structured = train_prior(_tiny(radius=2), train, val, stage1, checkpoint_dir=tmp_path / "s",
                             progress=False).model
    structured.save(tmp_path / "s.safetensors")
    for source in (tmp_path / "s", tmp_path / "s.safetensors"):
        diagonal = copy_mean_network(_tiny("diagonal"), mean_network_state(source))
        for name in MEAN_NETWORK:
            for (k, a), b in zip(getattr(structured, name).state_dict().items(),
                                 getattr(diagonal, name).state_dict().values()):
                torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
    # Stage 2 alone changes the covariance head and leaves the copied networks frozen.
    before = {k: v.clone() for k, v in diagonal.state_dict().items()}
    cfg = TrainConfig(stage1_epochs=0, stage2_epochs=2, batch_size=50, patience=100, seed=0)
    trained = train_prior(diagonal, train, val, cfg, progress=False)
    after = trained.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.split(".")[0] in MEAN_NETWORK)
    assert not torch.equal(before["log_diag_head.weight"], after["log_diag_head.weight"])
    assert [h["stage"] for h in trained.history] == [2, 2]


def test_copy_mean_network_bad_input(tmp_path):
    from bayes_recon.models import copy_mean_network
    from bayes_recon.models.training import mean_network_state

    with pytest.raises(ValueError, match="widths"):
        copy_mean_network(_tiny("diagonal"), _tiny(widths=(4,)))
    with pytest.raises(ValueError, match="'encoder'"):
        copy_mean_network(_tiny("diagonal"), {"mean_head.weight": torch.zeros(1)})
    with pytest.raises(TypeError, match="source"):
        copy_mean_network(_tiny("diagonal"), "not a prior")
    from bayes_recon.models.checkpoint import save_tensors

    with pytest.raises(ValueError, match="no training checkpoint"):
        mean_network_state(tmp_path)
    # A checkpoint written during stage 1 holds a mean network still being fitted.
    save_tensors(tmp_path / "checkpoint", {"model.mean_head.bias": torch.zeros(1)}, {"stage": 1, "epoch": 3})
    with pytest.raises(ValueError, match="not finished stage 1"):
        mean_network_state(tmp_path)
