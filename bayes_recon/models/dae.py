"""Denoising autoencoder (DAE): the denoising baseline of the SUPN paper.

Shares the SUPN-VAE's convolutional :class:`~bayes_recon.models.supn_vae.Encoder`
and :class:`~bayes_recon.models.supn_vae.DecoderTrunk`, with a deterministic
bottleneck (the encoder's location) and a mean head; trained to map
``x + N(0, σ² I)`` back to ``x`` in mean squared error.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from .._validation import check_int, check_positive, check_tensor
from .supn_vae import DecoderTrunk, Encoder, SUPNConfig

__all__ = ["DenoisingAutoencoder", "DAETrainConfig", "train_dae"]


class DenoisingAutoencoder(nn.Module):
    """``x̂ = decoder(encoder(y))``, the SUPN-VAE's networks without the variance.

    Parameters
    ----------
    config : SUPNConfig
        Image size, channels, latent size and widths (``covariance``/``radius``
        are ignored).

    Examples
    --------
    >>> import torch
    >>> from bayes_recon.models.dae import DenoisingAutoencoder
    >>> from bayes_recon.models.supn_vae import SUPNConfig
    >>> dae = DenoisingAutoencoder(SUPNConfig(image_size=8, latent_dim=2, widths=(4,)))
    >>> dae(torch.zeros(3, 1, 8, 8)).shape
    torch.Size([3, 1, 8, 8])
    """

    def __init__(self, config: SUPNConfig):
        super().__init__()
        if not isinstance(config, SUPNConfig):
            raise TypeError(f"config must be a SUPNConfig, got {type(config).__name__}")
        self.config = config
        self.encoder = Encoder(config)
        self.trunk = DecoderTrunk(config)
        self.head = nn.Conv2d(self.trunk.out_channels, config.channels, 3, padding=1)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """Denoise ``(B, C, H, W)`` images."""
        s = self.config.image_size
        check_tensor("y", y, shape=(None, self.config.channels, s, s))
        loc, _ = self.encoder(y)
        return self.head(self.trunk(loc))


@dataclass
class DAETrainConfig:
    """Training settings of :func:`train_dae` (Adam on the MSE of denoised images)."""

    noise_std: float = 0.1
    epochs: int = 20
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0

    def __post_init__(self):
        check_positive("noise_std", self.noise_std)
        check_int("epochs", self.epochs, minimum=1)
        check_int("batch_size", self.batch_size, minimum=1)
        check_positive("lr", self.lr)
        check_int("seed", self.seed, minimum=0)


def train_dae(images: torch.Tensor, model_config: SUPNConfig, config: DAETrainConfig | None = None,
              progress: bool = True) -> DenoisingAutoencoder:
    """Train a :class:`DenoisingAutoencoder` on clean ``images`` ``(N, C, H, W)``.

    Fresh seeded noise every epoch; returns the model in eval mode. The whole
    run is determined by ``config.seed``.
    """
    cfg = DAETrainConfig() if config is None else config
    s = model_config.image_size
    check_tensor("images", images, shape=(None, model_config.channels, s, s))
    with torch.random.fork_rng(devices=[]):  # seeded initial weights, global state untouched
        torch.manual_seed(cfg.seed)
        model = DenoisingAutoencoder(model_config).to(images.dtype)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    n = images.shape[0]
    bar = tqdm(range(cfg.epochs), desc="train DAE", disable=not progress)
    for _ in bar:
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for start in range(0, n, cfg.batch_size):
            x = images[perm[start:start + cfg.batch_size]]
            noise = torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device)
            loss = (model(x + cfg.noise_std * noise) - x).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * x.shape[0]
        bar.set_postfix(mse=f"{total / n:.2e}")
    return model.eval()
