"""Models that ship with the package (``bayes_recon/pretrained``): SUPN, hierarchical VAE and diffusion priors, baselines."""

from __future__ import annotations

import json
from importlib import resources

from .supn_vae import SUPNVAE


def _shipped(cls_name: str) -> list[str]:
    """Names of the shipped checkpoints whose JSON says they hold a ``cls_name``."""
    folder = resources.files("bayes_recon.pretrained")
    names = []
    for p in folder.iterdir():
        if p.name.endswith(".json"):
            if json.loads(p.read_text()).get("class") == cls_name:
                names.append(p.name[: -len(".json")])
    return sorted(names)


def _load_shipped(name: str, names: list[str], load):
    """``load(path)`` of the shipped checkpoint ``name`` (one of ``names``), in eval mode."""
    if name not in names:
        raise ValueError(f"name must be one of {names}, got {name!r}")
    path = resources.files("bayes_recon.pretrained") / f"{name}.safetensors"
    with resources.as_file(path) as p:
        model = load(p)
    return model.eval()


def available_priors() -> list[str]:
    """Names accepted by :func:`load_pretrained`, e.g. ``"digits-supn"``."""
    return _shipped("SUPNVAE")


def available_denoisers() -> list[str]:
    """Names accepted by :func:`load_pretrained_dae`, e.g. ``"digits-dae"``."""
    return _shipped("DenoisingAutoencoder")


def available_diffusion_priors() -> list[str]:
    """Names accepted by :func:`load_pretrained_diffusion`, e.g. ``"digits-diffusion"``."""
    return _shipped("DiffusionUNet")


def load_pretrained_diffusion(name: str = "digits-diffusion"):
    """Load a shipped diffusion prior (:class:`~bayes_recon.models.diffusion.DiffusionUNet`), in eval mode.

    Its training record (command, split, held-out denoising MSE beside the
    Wiener filter) is in ``model.metadata``; ``docs/diffusion.md`` has the table.

    Examples
    --------
    >>> from bayes_recon.models import load_pretrained_diffusion
    >>> load_pretrained_diffusion("digits-diffusion").image_shape
    (1, 28, 28)
    """
    from .diffusion_unet import DiffusionUNet

    return _load_shipped(name, available_diffusion_priors(), DiffusionUNet.load)


def available_hvae_priors() -> list[str]:
    """Names accepted by :func:`load_pretrained_hvae`, e.g. ``"digits-hvae"``."""
    return _shipped("HierarchicalVAE")


def load_pretrained_hvae(name: str = "digits-hvae"):
    """Load a shipped hierarchical VAE prior (:class:`~bayes_recon.models.hvae.HierarchicalVAE`), in eval mode.

    Its training record (command, split, negative ELBO in bits per pixel on
    the training, validation and test images) is in ``model.metadata``;
    ``docs/hvae.md`` has the table.

    Examples
    --------
    >>> from bayes_recon.models import load_pretrained_hvae
    >>> load_pretrained_hvae("digits-hvae").event_shape
    (1, 28, 28)
    """
    from .hvae import HierarchicalVAE

    return _load_shipped(name, available_hvae_priors(), HierarchicalVAE.load)


def available_dip_networks() -> list[str]:
    """Names accepted by :func:`load_pretrained_dip`, e.g. ``"ellipses-ct-dip"``."""
    return _shipped("UNet")


def load_pretrained_dip(name: str = "ellipses-ct-dip"):
    """Load a shipped pretrained deep-image-prior U-Net ("educated DIP"), in eval mode.

    ``ellipses-ct-dip`` was trained by :func:`~bayes_recon.inference.pretrain_dip`
    from filtered back-projections to synthetic ellipse phantoms (parallel-beam
    CT, several angle counts and noise levels); it is fully convolutional, so
    it starts a DIP fit at any image size (``linearised_dip`` with
    ``LinearisedDIPConfig(init="ellipses-ct-dip")``). Its training record is in
    ``model.metadata``.

    Examples
    --------
    >>> from bayes_recon.models import load_pretrained_dip
    >>> net = load_pretrained_dip("ellipses-ct-dip")
    >>> net.config.in_channels, net.config.out_channels
    (1, 1)
    """
    from .unet import UNet

    return _load_shipped(name, available_dip_networks(), UNet.load)


def load_pretrained_dae(name: str = "digits-dae"):
    """Load a shipped denoising autoencoder (the SUPN paper's DAE baseline), in eval mode.

    ``digits-dae`` has the encoder/decoder trunk of ``digits-supn`` and was trained
    for 40 epochs at noise σ = 0.1 on the training digits; its record is in
    ``model.metadata``.

    Examples
    --------
    >>> from bayes_recon.models import load_pretrained_dae
    >>> load_pretrained_dae("digits-dae").config.image_size
    28
    """
    from .checkpoint import load_model
    from .dae import DenoisingAutoencoder
    from .supn_vae import SUPNConfig

    return _load_shipped(name, available_denoisers(),
                         lambda p: load_model(DenoisingAutoencoder, SUPNConfig, p))


def load_pretrained(name: str) -> SUPNVAE:
    """Load a shipped prior by name, in eval mode.

    Its training record (command, NLL in bits per pixel, data split) is in
    ``model.metadata``.

    Examples
    --------
    >>> from bayes_recon.models import load_pretrained
    >>> vae = load_pretrained("digits-supn")
    >>> vae.config.image_size
    28
    """
    return _load_shipped(name, available_priors(), SUPNVAE.load)
