"""Priors that ship with the package (``bayes_recon/pretrained``)."""

from __future__ import annotations

from importlib import resources

from .supn_vae import SUPNVAE


def available_priors() -> list[str]:
    """Names accepted by :func:`load_pretrained`, e.g. ``"digits-supn"``."""
    folder = resources.files("bayes_recon.pretrained")
    return sorted(p.name[: -len(".safetensors")] for p in folder.iterdir()
                  if p.name.endswith(".safetensors"))


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
    names = available_priors()
    if name not in names:
        raise ValueError(f"name must be one of {names}, got {name!r}")
    path = resources.files("bayes_recon.pretrained") / f"{name}.safetensors"
    with resources.as_file(path) as p:
        model = SUPNVAE.load(p)
    return model.eval()
