"""A small hierarchical VAE (VDVAE-style, top-down) with a Gaussian decoder.

Latent groups ``z_1 … z_L`` live on grids from coarse to fine (one group per
entry of ``HVAEConfig.factors``: the grid of group ``l`` is the image
downsampled by ``factors[l]``). The prior is top-down,

    p(z) = Π_l p(z_l | z_<l),   p(z_l | z_<l) = N(μ_p,l(h_l), σ_p,l(h_l)²),

where ``h_l`` is the decoder state after the groups above; the posterior
``q(z_l | z_<l, x) = N(μ_q,l(h_l, e_l), σ_q,l(h_l, e_l)²)`` also reads the
encoder's bottom-up activation ``e_l`` of ``x`` at the same grid (Child 2021;
Vahdat & Kautz 2020). The decoder is a Gaussian with a learned per-pixel
variance, ``p(x | z) = N(μ(z), diag(s(z))²)``: PnP-HVAE's x-step needs it.

Everything is convolutional and the top state is a learned constant broadcast
over the coarsest grid, so a prior trained on ``S × S`` images runs on any image
whose sides are multiples of every factor (``supports_shape``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_int, check_positive, check_tensor
from .checkpoint import config_from_dict
from ..distributions import StructuredGaussian

__all__ = ["HVAEConfig", "HierarchicalVAE", "LatentGroup"]

# Prior and posterior standard deviations are softplus(raw) + this floor: a group
# can switch itself off (σ_q = σ_p), never collapse to a point mass.
_MIN_LATENT_STD = 1e-3


@dataclass
class HVAEConfig:
    """Architecture of a :class:`HierarchicalVAE`.

    Attributes
    ----------
    image_size : int
        Side of the square training images.
    channels : int
        Image channels.
    factors : tuple of int
        Downsampling factor of each latent group's grid, top (coarsest) first,
        each dividing ``image_size``; e.g. ``(28, 7, 4, 2, 1)`` gives the grids
        1, 4, 7, 14, 28 of a 28² image.
    width : int
        Channels of the encoder and decoder states.
    latent_channels : int
        Channels of every latent group.
    blocks : int
        Residual blocks per group (encoder and decoder).
    min_std : float
        Floor of the decoder's per-pixel standard deviation (image units).
    """

    image_size: int = 28
    channels: int = 1
    factors: tuple[int, ...] = field(default=(28, 7, 4, 2, 1))
    width: int = 32
    latent_channels: int = 4
    blocks: int = 1
    min_std: float = 0.005

    def __post_init__(self):
        check_int("image_size", self.image_size, minimum=1)
        check_int("channels", self.channels, minimum=1)
        check_int("width", self.width, minimum=1)
        check_int("latent_channels", self.latent_channels, minimum=1)
        check_int("blocks", self.blocks, minimum=1)
        check_positive("min_std", self.min_std)
        self.factors = tuple(int(f) for f in self.factors)
        if not self.factors or min(self.factors) < 1:
            raise ValueError(f"factors must be a non-empty tuple of positive ints, got {self.factors}")
        if list(self.factors) != sorted(self.factors, reverse=True):
            raise ValueError(f"factors must be non-increasing (top, coarsest, first), got {self.factors}")
        bad = [f for f in self.factors if self.image_size % f]
        if bad:
            raise ValueError(f"every factor must divide image_size={self.image_size}, got {bad}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["factors"] = list(self.factors)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "HVAEConfig":
        return config_from_dict(cls, d)


@dataclass
class LatentGroup:
    """One latent group's Gaussians, each ``(B, latent_channels, h_l, w_l)``.

    ``prior_*`` parametrise ``p(z_l | z_<l)``; ``post_*`` parametrise
    ``q(z_l | z_<l, x)`` (None when no image was encoded); ``z`` is the value
    that was used for the groups below.
    """

    prior_loc: torch.Tensor
    prior_scale: torch.Tensor
    z: torch.Tensor
    post_loc: torch.Tensor | None = None
    post_scale: torch.Tensor | None = None

    def kl(self) -> torch.Tensor:
        """``KL(q(z_l | z_<l, x) ‖ p(z_l | z_<l))`` per image ``(B,)`` (closed form)."""
        if self.post_loc is None:
            raise ValueError("kl needs the posterior: run the top-down pass with an encoded image")
        ratio = (self.post_scale / self.prior_scale).square()
        diff = ((self.post_loc - self.prior_loc) / self.prior_scale).square()
        return 0.5 * (ratio + diff - 1 - ratio.log()).flatten(1).sum(1)


def _std(raw: torch.Tensor) -> torch.Tensor:
    return F.softplus(raw) + _MIN_LATENT_STD


class _ResBlock(nn.Module):
    """``h + conv(gelu(conv(gelu(h))))`` with a half-width bottleneck; last conv starts small."""

    def __init__(self, width: int, in_extra: int = 0, out: int | None = None):
        super().__init__()
        mid = max(width // 2, 1)
        out = width if out is None else out
        self.skip = in_extra == 0 and out == width
        self.c1 = nn.Conv2d(width + in_extra, mid, 3, padding=1)
        self.c2 = nn.Conv2d(mid, out, 3, padding=1)
        nn.init.normal_(self.c2.weight, std=1e-3 if self.skip else 0.02)
        nn.init.zeros_(self.c2.bias)

    def forward(self, h):
        out = self.c2(F.gelu(self.c1(F.gelu(h))))
        return h + out if self.skip else out


class _TopDownBlock(nn.Module):
    """Prior, posterior and latent projection of one group, then residual blocks."""

    def __init__(self, width: int, latent: int, blocks: int):
        super().__init__()
        self.prior = _ResBlock(width, out=2 * latent)
        # Zero-initialised prior head: p(z_l | z_<l) = N(0, softplus(0) + floor) at the start.
        nn.init.zeros_(self.prior.c2.weight)
        self.posterior = _ResBlock(width, in_extra=width, out=2 * latent)
        self.project = nn.Conv2d(latent, width, 1)
        nn.init.normal_(self.project.weight, std=0.02)
        nn.init.zeros_(self.project.bias)
        self.res = nn.Sequential(*[_ResBlock(width) for _ in range(blocks)])
        self._prior_offset = math.log(math.expm1(1.0 - _MIN_LATENT_STD))  # σ_p = 1 at init

    def prior_params(self, h):
        loc, raw = self.prior(h).chunk(2, dim=1)
        return loc, _std(raw + self._prior_offset)

    def posterior_params(self, h, e):
        loc, raw = self.posterior(torch.cat([h, e], dim=1)).chunk(2, dim=1)
        return loc, _std(raw + self._prior_offset)

    def update(self, h, z):
        return self.res(h + self.project(z))


class HierarchicalVAE(nn.Module):
    """Top-down hierarchical VAE over ``(C, S, S)`` images in [0, 1].

    Parameters
    ----------
    config : HVAEConfig, optional
        Or the same fields as keywords.

    Examples
    --------
    >>> import torch
    >>> from bayes_recon.models.hvae import HierarchicalVAE
    >>> hvae = HierarchicalVAE(image_size=8, factors=(4, 2, 1), width=8, latent_channels=2)
    >>> [tuple(s) for s in hvae.latent_shapes((8, 8))]
    [(2, 2, 2), (2, 4, 4), (2, 8, 8)]
    >>> x = torch.rand(3, 1, 8, 8)
    >>> hvae.negative_elbo(x, torch.Generator().manual_seed(0)).shape
    torch.Size([3])
    >>> hvae.decode(hvae.sample_latents(3, generator=torch.Generator().manual_seed(0))).loc.shape
    torch.Size([3, 1, 8, 8])
    """

    def __init__(self, config: HVAEConfig | None = None, **kwargs):
        super().__init__()
        if config is None:
            config = HVAEConfig(**kwargs)
        elif kwargs:
            raise TypeError("give a config or keyword arguments, not both")
        if not isinstance(config, HVAEConfig):
            raise TypeError(f"config must be an HVAEConfig, got {type(config).__name__}")
        self.config = config
        w, c = config.width, config.channels
        n = len(config.factors)
        self.stem = nn.Conv2d(c, w, 3, padding=1)
        self.encoder_blocks = nn.ModuleList(
            nn.Sequential(*[_ResBlock(w) for _ in range(config.blocks)]) for _ in range(n))
        self.top = nn.Parameter(torch.zeros(1, w, 1, 1))
        self.decoder_blocks = nn.ModuleList(
            _TopDownBlock(w, config.latent_channels, config.blocks) for _ in range(n))
        self.out_res = _ResBlock(w)
        self.out = nn.Conv2d(w, 2 * c, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        with torch.no_grad():  # start at mean 0.5, std 0.2
            self.out.bias.zero_()
            self.out.bias[:c] = 0.5
            self.out.bias[c:] = math.log(math.expm1(0.2 - config.min_std))
        self.metadata: dict = {}

    # ------------------------------------------------------------ shapes
    @property
    def event_shape(self) -> tuple[int, int, int]:
        """Shape ``(C, S, S)`` of the training images."""
        s = self.config.image_size
        return (self.config.channels, s, s)

    @property
    def num_groups(self) -> int:
        return len(self.config.factors)

    def supports_shape(self, shape) -> bool:
        """True if images ``(C, H, W)`` tile: the channels match and every factor divides H and W."""
        c, h, w = (int(s) for s in shape)
        return c == self.config.channels and all(h % f == 0 and w % f == 0 for f in self.config.factors)

    def check_image_shape(self, shape, name: str = "image") -> tuple[int, int, int]:
        """``shape`` as a tuple; ``ValueError`` naming ``name`` unless it tiles (:meth:`supports_shape`)."""
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3 or not self.supports_shape(shape):
            raise ValueError(
                f"{name} shape {shape} does not tile for this prior: expected "
                f"({self.config.channels}, H, W) with H and W multiples of every factor "
                f"{list(self.config.factors)} (trained on {self.event_shape})")
        return shape

    def latent_shapes(self, image_hw=None) -> list[torch.Size]:
        """``(latent_channels, H/f_l, W/f_l)`` of every group, top first."""
        h, w = (self.config.image_size,) * 2 if image_hw is None else image_hw
        self.check_image_shape((self.config.channels, h, w))
        k = self.config.latent_channels
        return [torch.Size((k, h // f, w // f)) for f in self.config.factors]

    # ------------------------------------------------------------ passes
    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Bottom-up activations of ``x`` ``(B, C, H, W)``: one ``(B, width, h_l, w_l)`` per group, top first."""
        check_tensor("x", x, shape=(None, self.config.channels, None, None))
        self.check_image_shape(x.shape[1:], "x")
        dtype = self.stem.weight.dtype
        h = self.stem(x.to(dtype) - 0.5)
        acts = [None] * self.num_groups
        hh, ww = x.shape[-2:]
        for i in reversed(range(self.num_groups)):  # finest first
            size = (hh // self.config.factors[i], ww // self.config.factors[i])
            if tuple(h.shape[-2:]) != size:
                h = F.adaptive_avg_pool2d(h, size)
            h = self.encoder_blocks[i](h)
            acts[i] = h
        return acts

    def top_down(self, batch: int, image_hw, activations=None, latents=None, *,
                 temperature=1.0, generator: torch.Generator | None = None,
                 use_posterior_mean: bool = False, group_step=None):
        """Run the decoder's top-down pass; returns ``(groups, h)`` with the final state.

        For each group, in order: ``z_l`` is ``latents[l]`` if given, else, with
        ``activations`` (from :meth:`encode`), a draw from (or with
        ``use_posterior_mean`` the mean of) ``q(z_l | z_<l, x)``, else a draw
        from ``p(z_l | z_<l)`` with its std scaled by ``temperature`` (a float or
        one per group). ``group_step(l, prior_loc, prior_scale, post_loc,
        post_scale) → z_l`` overrides the choice (PnP-HVAE's z-step).
        """
        n = self.num_groups
        temps = _per_group("temperature", temperature, n)
        if latents is not None and len(latents) != n:
            raise ValueError(f"latents must hold {n} groups, got {len(latents)}")
        hh, ww = image_hw
        dtype = self.top.dtype
        h = self.top.expand(batch, -1, hh // self.config.factors[0], ww // self.config.factors[0])
        groups = []
        for i, block in enumerate(self.decoder_blocks):
            size = (hh // self.config.factors[i], ww // self.config.factors[i])
            if tuple(h.shape[-2:]) != size:
                h = F.interpolate(h, size=size, mode="nearest")
            p_loc, p_scale = block.prior_params(h)
            q_loc = q_scale = None
            if activations is not None:
                q_loc, q_scale = block.posterior_params(h, activations[i])
            if group_step is not None:
                z = group_step(i, p_loc, p_scale, q_loc, q_scale)
            elif latents is not None:
                z = latents[i].to(dtype)
                if tuple(z.shape) != (batch, *p_loc.shape[1:]):
                    raise ValueError(f"latents[{i}] must have shape {(batch, *p_loc.shape[1:])}, "
                                     f"got {tuple(z.shape)}")
            elif q_loc is not None:
                z = q_loc if use_posterior_mean else q_loc + q_scale * _randn_like(q_loc, generator)
            else:
                z = p_loc + temps[i] * p_scale * _randn_like(p_loc, generator)
            groups.append(LatentGroup(p_loc, p_scale, z, q_loc, q_scale))
            h = block.update(h, z)
        return groups, h

    def output(self, h: torch.Tensor, decoder_scale: float = 1.0) -> StructuredGaussian:
        """``p(x | z)`` from the final state: a diagonal :class:`StructuredGaussian` (radius 0).

        ``decoder_scale`` γ multiplies the standard deviation (PnP-HVAE's ``D/γ²``).
        """
        c = self.config.channels
        f = self.config.factors[-1]
        if f > 1:  # the finest group's grid is coarser than the image: upsample the state
            h = F.interpolate(h, scale_factor=float(f), mode="nearest")
        out = self.out(self.out_res(h))
        loc, raw = out[:, :c], out[:, c:]
        std = F.softplus(raw) + self.config.min_std
        log_diag = -(std * decoder_scale).log()  # log of the precision's Cholesky diagonal
        off = loc.new_zeros(loc.shape[0], 0, *loc.shape[-2:])
        return StructuredGaussian(loc, log_diag, off, 0, validate_args=False)

    def decode(self, latents, decoder_scale: float = 1.0) -> StructuredGaussian:
        """``p(x | z_1 … z_L)`` for latents ``[(B, k, h_l, w_l)]`` (top first).

        Returns
        -------
        StructuredGaussian
            Batch shape ``(B,)``, event ``(C, H, W)``, radius 0: precision ``diag(s)⁻²``.
        """
        latents = list(latents)
        if not latents:
            raise ValueError("latents must hold one tensor per group")
        b = latents[0].shape[0]
        f0 = self.config.factors[0]
        hw = (latents[0].shape[-2] * f0, latents[0].shape[-1] * f0)
        self.check_image_shape((self.config.channels, *hw), "latents")
        _, h = self.top_down(b, hw, latents=latents)
        return self.output(h, decoder_scale)

    def decode_mean(self, latents) -> torch.Tensor:
        """``μ(z)`` ``(B, C, H, W)``."""
        return self.decode(latents).loc

    def sample_latents(self, num: int, image_hw=None, temperature=1.0,
                       generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Ancestral draws of ``z_1 … z_L`` from the prior (std scaled by ``temperature``)."""
        hw = (self.config.image_size,) * 2 if image_hw is None else tuple(image_hw)
        self.check_image_shape((self.config.channels, *hw))
        groups, _ = self.top_down(check_int("num", num, minimum=1), hw, temperature=temperature,
                                  generator=generator)
        return [g.z for g in groups]

    def kl_divergences(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """Per-group ``KL(q(z_l | z_<l, x) ‖ p(z_l | z_<l))`` ``[(B,)]`` and the groups used.

        The groups below ``l`` are conditioned on a reparameterised draw of the
        ones above (the ELBO's Monte Carlo estimate; ``generator`` seeds it).
        """
        acts = self.encode(x)
        groups, h = self.top_down(x.shape[0], x.shape[-2:], activations=acts, generator=generator)
        return [g.kl() for g in groups], groups, h

    def negative_elbo(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``−log p(x | z) + Σ_l KL_l`` in nats per image ``(B,)``, one reparameterised draw."""
        kls, _, h = self.kl_divergences(x, generator)
        dtype = self.stem.weight.dtype
        nll = -self.output(h).log_prob(x.to(dtype))
        return nll + torch.stack(kls).sum(0)

    # ------------------------------------------------------------ files
    def save(self, path, metadata: dict | None = None):
        """Write ``path.safetensors`` + ``path.json`` atomically."""
        from .checkpoint import save_model

        return save_model(self, path, metadata)

    @classmethod
    def load(cls, path, map_location=None) -> "HierarchicalVAE":
        """Read a checkpoint written by :meth:`save` (its config must match its tensors)."""
        from .checkpoint import load_model

        return load_model(cls, HVAEConfig, path, map_location)


def _per_group(name: str, value, n: int) -> list[float]:
    """``value`` (a positive float, or one per group) as a list of ``n`` floats."""
    if isinstance(value, (int, float)):
        values = [float(value)] * n
    else:
        values = [float(v) for v in value]
        if len(values) != n:
            raise ValueError(f"{name} must be a float or one value per group ({n}), got {len(values)}")
    for v in values:
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be > 0, got {v}")
    return values


def _randn_like(t: torch.Tensor, generator) -> torch.Tensor:
    if generator is None:
        return torch.randn_like(t)
    return torch.randn(t.shape, generator=generator, dtype=t.dtype, device=generator.device).to(t.device)
