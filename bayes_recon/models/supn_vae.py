"""The SUPN-VAE: a VAE whose decoder outputs a :class:`StructuredGaussian`.

``encode(x) -> q(z|x)``; ``decode(z) -> N(μ(z), (UᵀU)⁻¹)`` with ``U`` a sparse
upper-triangular factor of the precision on a radius-``r`` stencil (Dorta et
al. 2018). The mean and the precision come from two separate decoder trunks so
that the second training stage can fit the precision with the mean frozen.

The baselines the papers compare against share this code:
``covariance="diagonal"`` (per-pixel variance, no off-diagonal weights) and
``covariance="identity"`` (one global standard deviation).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_choice, check_int, check_tensor
from .checkpoint import config_from_dict
from ..distributions import StructuredGaussian, num_offdiag, soft_clip_log_diag

COVARIANCES = ("structured", "diagonal", "identity")


@dataclass
class SUPNConfig:
    """Architecture of a SUPN-VAE.

    Attributes
    ----------
    image_size : int
        Side of the square images.
    channels : int
        Image channels (1 for grayscale).
    latent_dim : int
    radius : int
        Stencil radius of the precision factor (``structured`` only).
    widths : tuple of int
        Channel widths of the encoder (and, reversed, of each decoder trunk);
        each width halves the resolution once.
    covariance : str
        ``"structured"``, ``"diagonal"`` or ``"identity"``.
    stage1_std : float
        Fixed isotropic standard deviation of the stage-1 likelihood.
    """

    image_size: int = 28
    channels: int = 1
    latent_dim: int = 16
    radius: int = 2
    widths: tuple[int, ...] = field(default=(32, 64))
    covariance: str = "structured"
    stage1_std: float = 0.1

    def __post_init__(self):
        check_int("image_size", self.image_size, minimum=4)
        check_int("channels", self.channels, minimum=1)
        check_int("latent_dim", self.latent_dim, minimum=1)
        check_int("radius", self.radius, minimum=0)
        check_choice("covariance", self.covariance, COVARIANCES)
        self.widths = tuple(int(w) for w in self.widths)
        if not self.widths or min(self.widths) < 1:
            raise ValueError(f"widths must be a non-empty tuple of positive ints, got {self.widths}")
        if not self.stage1_std > 0:
            raise ValueError(f"stage1_std must be > 0, got {self.stage1_std}")

    @property
    def stencil_radius(self) -> int:
        """Radius actually used: 0 for the diagonal and identity baselines."""
        return self.radius if self.covariance == "structured" else 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SUPNConfig":
        return config_from_dict(cls, d)


def _coarse_size(size: int, levels: int) -> int:
    for _ in range(levels):
        size = math.ceil(size / 2)
    return size


class Encoder(nn.Module):
    """Strided convolutions: ``(B, C, H, W) -> (loc, scale)`` each ``(B, latent_dim)``."""

    def __init__(self, config: SUPNConfig):
        super().__init__()
        layers, c_in = [], config.channels
        for w in config.widths:
            layers += [nn.Conv2d(c_in, w, 3, stride=2, padding=1), nn.GELU(),
                       nn.Conv2d(w, w, 3, padding=1), nn.GELU()]
            c_in = w
        self.features = nn.Sequential(*layers)
        s = _coarse_size(config.image_size, len(config.widths))
        self.head = nn.Linear(c_in * s * s, 2 * config.latent_dim)

    def forward(self, x):
        h = self.features(x).flatten(1)
        loc, raw = self.head(h).chunk(2, dim=-1)
        return loc, F.softplus(raw) + 1e-4


class DecoderTrunk(nn.Module):
    """``(B, latent_dim) -> (B, widths[0], H, W)`` features at full resolution."""

    def __init__(self, config: SUPNConfig):
        super().__init__()
        widths = list(config.widths)[::-1]
        self.size = config.image_size
        self.coarse = _coarse_size(config.image_size, len(widths))
        self.fc = nn.Linear(config.latent_dim, widths[0] * self.coarse**2)
        self.c0 = widths[0]
        blocks = []
        for i, w in enumerate(widths):
            w_out = widths[i + 1] if i + 1 < len(widths) else widths[-1]
            blocks.append(nn.Sequential(nn.Conv2d(w, w_out, 3, padding=1), nn.GELU(),
                                        nn.Conv2d(w_out, w_out, 3, padding=1), nn.GELU()))
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = widths[-1]

    def forward(self, z):
        h = F.gelu(self.fc(z)).reshape(z.shape[0], self.c0, self.coarse, self.coarse)
        n = len(self.blocks)
        for i, block in enumerate(self.blocks):
            # Upsample to the exact sizes the encoder saw, so odd sizes round-trip.
            target = _coarse_size(self.size, n - i - 1)
            h = block(F.interpolate(h, size=(target, target), mode="nearest"))
        return h


class SUPNVAE(nn.Module):
    """VAE with a structured-Gaussian decoder (SUPN) or one of its baselines.

    Parameters
    ----------
    config : SUPNConfig, optional
        Keyword arguments build one if ``config`` is not given.

    Examples
    --------
    >>> import torch
    >>> from bayes_recon.models import SUPNVAE
    >>> vae = SUPNVAE(image_size=8, latent_dim=2, widths=(4,), radius=1)
    >>> dist = vae.decode(torch.zeros(3, 2))
    >>> dist.event_shape, dist.batch_shape
    (torch.Size([1, 8, 8]), torch.Size([3]))
    """

    def __init__(self, config: SUPNConfig | None = None, **kwargs):
        super().__init__()
        if config is None:
            config = SUPNConfig(**kwargs)
        elif kwargs:
            raise TypeError("give either config or keyword arguments, not both")
        if not isinstance(config, SUPNConfig):
            raise TypeError(f"config must be a SUPNConfig, got {type(config).__name__}")
        self.config = config
        c = config.channels
        self.encoder = Encoder(config)
        self.mean_trunk = DecoderTrunk(config)
        self.mean_head = nn.Conv2d(self.mean_trunk.out_channels, c, 3, padding=1)
        self.num_offdiag = num_offdiag(config.stencil_radius, c)
        if config.covariance == "identity":
            self.log_std = nn.Parameter(torch.tensor(math.log(config.stage1_std)))
        else:
            self.precision_trunk = DecoderTrunk(config)
            self.log_diag_head = nn.Conv2d(self.precision_trunk.out_channels, c, 3, padding=1)
            if self.num_offdiag:
                self.off_diag_head = nn.Conv2d(self.precision_trunk.out_channels,
                                               self.num_offdiag, 3, padding=1)
                # Start at a diagonal precision: off-diagonal weights grow only if they help.
                nn.init.zeros_(self.off_diag_head.weight)
                nn.init.zeros_(self.off_diag_head.bias)
            nn.init.zeros_(self.log_diag_head.weight)
            nn.init.constant_(self.log_diag_head.bias, -math.log(config.stage1_std))

    # ------------------------------------------------------------------ parts
    @property
    def event_shape(self) -> tuple[int, int, int]:
        s = self.config.image_size
        return (self.config.channels, s, s)

    def encode(self, x: torch.Tensor) -> torch.distributions.Normal:
        """``q(z | x)`` as a diagonal Normal with batch shape ``(B, latent_dim)``."""
        check_tensor("x", x, shape=(None, *self.event_shape))
        loc, scale = self.encoder(x)
        return torch.distributions.Normal(loc, scale)

    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        """``μ(z)``: ``(B, latent_dim) -> (B, C, H, W)``."""
        return self.mean_head(self.mean_trunk(z))

    def decode_precision(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log_diag (B, C, H, W), off_diag (B, F, H, W))`` of the precision factor."""
        b = z.shape[0]
        c, h, w = self.event_shape
        if self.config.covariance == "identity":
            log_diag = (-self.log_std).expand(b, c, h, w)
            return log_diag, z.new_zeros(b, 0, h, w)
        feats = self.precision_trunk(z)
        log_diag = soft_clip_log_diag(self.log_diag_head(feats))
        if self.num_offdiag:
            off_diag = self.off_diag_head(feats)
        else:
            off_diag = z.new_zeros(b, 0, h, w)
        return log_diag, off_diag

    def decode(self, z: torch.Tensor) -> StructuredGaussian:
        """``p(x | z)``: a :class:`StructuredGaussian` with batch shape ``(B,)``.

        Parameters
        ----------
        z : torch.Tensor
            ``(B, latent_dim)``.
        """
        check_tensor("z", z, shape=(None, self.config.latent_dim))
        loc = self.decode_mean(z)
        log_diag, off_diag = self.decode_precision(z)
        return StructuredGaussian(loc, log_diag, off_diag, radius=self.config.stencil_radius)

    def forward(self, x: torch.Tensor) -> StructuredGaussian:
        """Decode the posterior mean of ``z``: a quick "reconstruct x" pass."""
        return self.decode(self.encode(x).loc)

    # ------------------------------------------------------------- objectives
    def negative_elbo(self, x: torch.Tensor, stage: int = 2, generator=None) -> torch.Tensor:
        """Per-image negative ELBO in nats, ``(B,)``; one reparameterised z sample.

        ``stage=1`` uses the fixed isotropic likelihood ``N(μ(z), stage1_std² I)``;
        ``stage=2`` the decoder's full (structured / diagonal / identity) likelihood.
        """
        q = self.encode(x)
        eps = torch.randn(q.loc.shape, generator=generator, dtype=x.dtype, device=x.device)
        z = q.loc + q.scale * eps
        kl = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(-1)
        if stage == 1:
            sigma = self.config.stage1_std
            mu = self.decode_mean(z)
            n = mu[0].numel()
            nll = 0.5 * ((x - mu) / sigma).pow(2).flatten(1).sum(1) + n * (
                math.log(sigma) + 0.5 * math.log(2 * math.pi))
        else:
            nll = -self.decode(z).log_prob(x)
        return nll + kl

    def save(self, path) -> None:
        """Write ``path`` (``.safetensors``) and ``path`` with ``.json`` (config), atomically."""
        from .checkpoint import save_model

        save_model(self, path)

    @classmethod
    def load(cls, path) -> "SUPNVAE":
        """Load a model written by :meth:`save` (no pickle involved)."""
        from .checkpoint import load_model

        return load_model(cls, SUPNConfig, path)
