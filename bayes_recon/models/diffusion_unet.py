"""The trained diffusion prior: a small DDPM ε-prediction U-Net and its configuration."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_int, check_positive, check_tensor
from .checkpoint import config_from_dict
from .diffusion import DiffusionPrior, linear_beta_schedule

__all__ = ["DiffusionConfig", "DiffusionUNet", "timestep_embedding"]


@dataclass
class DiffusionConfig:
    """Architecture and schedule of :class:`DiffusionUNet`.

    Attributes
    ----------
    image_size : int
        Square images; must be divisible by ``2 ** (len(widths) − 1)``.
    channels : int
    widths : sequence of int
        Feature channels per resolution (each a multiple of ``groups``).
    groups : int
        GroupNorm groups.
    num_steps, beta_start, beta_end
        The linear-β DDPM schedule (:func:`linear_beta_schedule`).
    shift, scale : float
        Model space ``u = (x − shift)/scale`` (``[0, 1]`` images → ``[−1, 1]``).
    """

    image_size: int = 28
    channels: int = 1
    widths: Sequence[int] = field(default_factory=lambda: (32, 64, 64))
    groups: int = 8
    num_steps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    shift: float = 0.5
    scale: float = 0.5

    def __post_init__(self):
        check_int("image_size", self.image_size, minimum=4)
        check_int("channels", self.channels, minimum=1)
        self.widths = tuple(int(w) for w in self.widths)
        if not self.widths:
            raise ValueError("widths must name at least one resolution")
        check_int("groups", self.groups, minimum=1)
        for w in self.widths:
            if w < 1 or w % self.groups:
                raise ValueError(f"widths must be positive multiples of groups={self.groups}, got "
                                 f"{list(self.widths)}")
        factor = 2 ** (len(self.widths) - 1)
        if self.image_size % factor:
            raise ValueError(f"image_size must be divisible by 2**(len(widths) - 1) = {factor}, got "
                             f"{self.image_size}")
        check_int("num_steps", self.num_steps, minimum=2)
        check_positive("scale", self.scale)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DiffusionConfig":
        return config_from_dict(cls, d)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding ``(B, dim)`` of (fractional) steps ``t`` ``(B,)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32,
                                                        device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class _ResBlock(nn.Module):
    """GroupNorm–SiLU–conv twice, the time embedding added in between, residual skip."""

    def __init__(self, c_in: int, c_out: int, t_dim: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(math.gcd(groups, c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time = nn.Linear(t_dim, c_out)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, h, temb):
        out = self.conv1(F.silu(self.norm1(h)))
        out = out + self.time(temb)[:, :, None, None]
        out = self.conv2(F.silu(self.norm2(out)))
        return self.skip(h) + out


class DiffusionUNet(DiffusionPrior):
    """A small DDPM ε-prediction U-Net (one residual block per resolution and direction).

    Architecture (``widths = (c_0, …, c_{L−1})``)::

        time   sinusoid(t) → Linear → SiLU → Linear               (4 c_0)
        inc    conv3x3 (C → c_0)
        down_i ResBlock (c_{i−1} → c_i), then conv3x3 stride 2 unless i = L − 1
        mid    ResBlock (c_{L−1} → c_{L−1})
        up_i   ResBlock (concat with down_i's output → c_i), then ×2 nearest + conv3x3
        out    GroupNorm, SiLU, conv3x3 (c_0 → C), zero-initialised

    Parameters
    ----------
    config : DiffusionConfig

    Examples
    --------
    >>> import torch
    >>> net = DiffusionUNet(DiffusionConfig(image_size=8, widths=(8, 8)))
    >>> net.predict_noise(torch.zeros(2, 1, 8, 8), torch.tensor([0, 999])).shape
    torch.Size([2, 1, 8, 8])
    """

    def __init__(self, config: DiffusionConfig):
        if not isinstance(config, DiffusionConfig):
            raise TypeError(f"config must be a DiffusionConfig, got {type(config).__name__}")
        s = config.image_size
        super().__init__((config.channels, s, s),
                         linear_beta_schedule(config.num_steps, config.beta_start, config.beta_end),
                         config.shift, config.scale)
        self.config = config
        w, g = config.widths, config.groups
        t_dim = 4 * w[0]
        self.time_dim = w[0] if w[0] % 2 == 0 else w[0] + 1
        self.time_mlp = nn.Sequential(nn.Linear(self.time_dim, t_dim), nn.SiLU(),
                                      nn.Linear(t_dim, t_dim))
        self.inc = nn.Conv2d(config.channels, w[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        c = w[0]
        for i, wi in enumerate(w):
            self.down.append(_ResBlock(c, wi, t_dim, g))
            c = wi
            if i < len(w) - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        self.mid = _ResBlock(c, c, t_dim, g)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i in reversed(range(len(w))):
            self.up.append(_ResBlock(c + w[i], w[i], t_dim, g))
            c = w[i]
            if i > 0:
                self.upsample.append(nn.Conv2d(c, w[i - 1], 3, padding=1))
                c = w[i - 1]
        self.out_norm = nn.GroupNorm(g, w[0])
        self.out_conv = nn.Conv2d(w[0], config.channels, 3, padding=1)
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)

    def predict_noise(self, u_t, t):
        check_tensor("u_t", u_t, shape=(None, *self.image_shape))
        t = torch.as_tensor(t, device=u_t.device)
        if t.ndim == 0:
            t = t.expand(u_t.shape[0])
        if t.shape != (u_t.shape[0],):
            raise ValueError(f"t must have shape ({u_t.shape[0]},), got {tuple(t.shape)}")
        dtype = self.inc.weight.dtype
        temb = self.time_mlp(timestep_embedding(t, self.time_dim).to(dtype))
        h = self.inc(u_t.to(dtype))
        skips = []
        for i, block in enumerate(self.down):
            h = block(h, temb)
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        h = self.mid(h, temb)
        for j, block in enumerate(self.up):
            skip = skips.pop()
            h = block(torch.cat([h, skip], dim=1), temb)
            if j < len(self.upsample):
                h = self.upsample[j](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.out_conv(F.silu(self.out_norm(h))).to(u_t.dtype)

    def save(self, path, metadata: dict | None = None):
        """Write ``path.safetensors`` + ``path.json`` atomically (:func:`~.checkpoint.save_model`)."""
        from .checkpoint import save_model

        return save_model(self, path, metadata)

    @classmethod
    def load(cls, path, map_location=None) -> "DiffusionUNet":
        """Read a checkpoint written by :meth:`save`."""
        from .checkpoint import load_model

        return load_model(cls, DiffusionConfig, path, map_location)
