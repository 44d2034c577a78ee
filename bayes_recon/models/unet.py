"""The deep-image-prior U-Net (Ulyanov et al.; Baguer et al.'s CT variant), with named blocks.

Architecture (``scales = S``, channels ``c_0 .. c_{S-1}``)::

    inc       conv3x3(in -> c_0), GroupNorm, LeakyReLU(0.2)
    down_i    conv3x3 stride 2 (c_i -> c_{i+1}), GN, LReLU, conv3x3, GN, LReLU   i = 0 .. S-2
    skip_i    conv1x1 (c_s -> k), GN, LReLU   on the features of scale s, if k > 0
    up_i      bilinear upsample, concat skip, conv3x3 -> c, GN, LReLU, conv3x3, GN, LReLU
    outc      conv1x1 (c_0 -> out), optional sigmoid

``up_i`` goes from scale ``S-1-i`` to ``S-2-i`` and takes the skip from scale
``S-2-i`` with ``skip_channels[S-1-i]`` channels: the published indexing
(``skip_channels=[0, 4, 4]`` means 4-channel skips into both up blocks and
``skip_channels[0]`` unused), kept so that published configurations carry over.

Blocks are identified by their attribute names (``inc``, ``down_0``, ``up_1``,
``skip_0``, ``outc``); :func:`conv_weights_by_block` lists the convolution
weights of each block, which is how the linearised Laplace prior assigns one
set of hyperparameters per block.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_int, check_positive
from .checkpoint import config_from_dict

__all__ = ["UNetConfig", "UNet", "conv_weights_by_block"]


@dataclass
class UNetConfig:
    """Configuration of :class:`UNet`.

    Attributes
    ----------
    in_channels, out_channels : int
    scales : int
        Number of resolutions (>= 1); ``scales - 1`` down and up blocks.
    channels : int or sequence of int
        Feature channels per scale (an int is used at every scale).
    skip_channels : sequence of int
        Length ``scales``; see the module docstring for the indexing.
    groups : int
        GroupNorm groups (channels are divided by it; 0 disables the norm).
    negative_slope : float
        LeakyReLU slope.
    sigmoid_output : bool
        Squash the output to (0, 1), for images in [0, 1].
    dropout : float
        Channel dropout (``Dropout2d``) probability after every activation, for
        MC-dropout; 0 disables it.
    """

    in_channels: int = 1
    out_channels: int = 1
    scales: int = 3
    channels: int | Sequence[int] = 32
    skip_channels: Sequence[int] = field(default_factory=lambda: (0, 4, 4))
    groups: int = 4
    negative_slope: float = 0.2
    sigmoid_output: bool = True
    dropout: float = 0.0

    def channel_list(self) -> list[int]:
        """Channels per scale as a list of length ``scales``."""
        if isinstance(self.channels, int) and not isinstance(self.channels, bool):
            return [self.channels] * self.scales
        return [int(c) for c in self.channels]

    def validate(self) -> "UNetConfig":
        """Raise ``ValueError``/``TypeError`` naming the bad field; returns self."""
        check_int("in_channels", self.in_channels, minimum=1)
        check_int("out_channels", self.out_channels, minimum=1)
        check_int("scales", self.scales, minimum=1)
        chans = self.channels if isinstance(self.channels, int) else list(self.channels)
        if isinstance(chans, list):
            if len(chans) != self.scales:
                raise ValueError(f"channels must have length scales={self.scales}, got {chans}")
            for c in chans:
                check_int("channels[i]", c, minimum=1)
        else:
            check_int("channels", chans, minimum=1)
        skips = list(self.skip_channels)
        if len(skips) != self.scales:
            raise ValueError(f"skip_channels must have length scales={self.scales}, got {skips}")
        for k in skips:
            check_int("skip_channels[i]", k, minimum=0)
        check_int("groups", self.groups, minimum=0)
        if self.groups:
            for c in self.channel_list() + [k for k in skips[1:] if k > 0]:
                if c % self.groups:
                    raise ValueError(
                        f"groups={self.groups} must divide every channel count, got {c}")
        check_positive("negative_slope", self.negative_slope, allow_zero=True)
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = self.channel_list() if not isinstance(self.channels, int) else self.channels
        d["skip_channels"] = list(self.skip_channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        return config_from_dict(cls, d)


def _conv_unit(cfg: UNetConfig, c_in: int, c_out: int, kernel: int, stride: int = 1) -> list:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2)]
    if cfg.groups:
        layers.append(nn.GroupNorm(cfg.groups, c_out))
    layers.append(nn.LeakyReLU(cfg.negative_slope))
    if cfg.dropout > 0:
        layers.append(nn.Dropout2d(cfg.dropout))
    return layers


class UNet(nn.Module):
    """Deep-image-prior U-Net ``(B, in, H, W) -> (B, out, H, W)`` for any ``H, W``.

    Parameters
    ----------
    config : UNetConfig, optional
        Defaults to the papers' CT setting (3 scales, 32 channels, skips
        ``[0, 4, 4]``, GroupNorm, sigmoid output).

    Examples
    --------
    >>> import torch
    >>> from bayes_recon.models.unet import UNet, UNetConfig, conv_weights_by_block
    >>> net = UNet(UNetConfig(channels=8, groups=4))
    >>> net(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 1, 28, 28])
    >>> sorted(conv_weights_by_block(net))
    ['down_0', 'down_1', 'inc', 'up_0', 'up_1']
    """

    def __init__(self, config: UNetConfig | None = None):
        super().__init__()
        cfg = (config or UNetConfig()).validate()
        self.config = cfg
        ch = cfg.channel_list()
        skips = list(cfg.skip_channels)
        s = cfg.scales
        self.inc = nn.Sequential(*_conv_unit(cfg, cfg.in_channels, ch[0], 3))
        for i in range(s - 1):
            setattr(self, f"down_{i}", nn.Sequential(
                *_conv_unit(cfg, ch[i], ch[i + 1], 3, stride=2), *_conv_unit(cfg, ch[i + 1], ch[i + 1], 3)))
        for i in range(s - 1):
            src = s - 2 - i                       # scale the skip comes from
            k = skips[s - 1 - i]
            if k > 0:
                setattr(self, f"skip_{i}", nn.Sequential(*_conv_unit(cfg, ch[src], k, 1)))
            setattr(self, f"up_{i}", nn.Sequential(
                *_conv_unit(cfg, ch[src + 1] + k, ch[src], 3), *_conv_unit(cfg, ch[src], ch[src], 3)))
        self.outc = nn.Conv2d(ch[0], cfg.out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.config.scales
        feats = [self.inc(x)]
        for i in range(s - 1):
            feats.append(getattr(self, f"down_{i}")(feats[-1]))
        h = feats[-1]
        for i in range(s - 1):
            skip_src = feats[s - 2 - i]
            h = F.interpolate(h, size=skip_src.shape[-2:], mode="bilinear", align_corners=True)
            skip = getattr(self, f"skip_{i}", None)
            if skip is not None:
                h = torch.cat([h, skip(skip_src)], dim=1)
            h = getattr(self, f"up_{i}")(h)
        out = self.outc(h)
        return torch.sigmoid(out) if self.config.sigmoid_output else out

    def block_names(self) -> list[str]:
        """Top-level block names in forward order."""
        return [name for name, _ in self.named_children()]

    def save(self, path, metadata: dict | None = None):
        """Write ``path.safetensors`` + ``path.json`` atomically (:func:`~.checkpoint.save_model`)."""
        from .checkpoint import save_model

        return save_model(self, path, metadata)

    @classmethod
    def load(cls, path, map_location=None) -> "UNet":
        """Read a checkpoint written by :meth:`save` (a config that does not match its tensors is refused)."""
        from .checkpoint import load_model

        return load_model(cls, UNetConfig, path, map_location)


def conv_weights_by_block(network: nn.Module, kernel_size: int = 3) -> dict[str, list[str]]:
    """Names of the ``kernel_size x kernel_size`` conv weights, grouped by top-level block.

    Works for any ``nn.Module``: a block is the first component of the
    parameter name (``"down_0.3.weight"`` -> ``"down_0"``); a conv directly on
    the root module is its own block.

    Parameters
    ----------
    network : torch.nn.Module
    kernel_size : int
        3 for the filters that get the Matérn prior, 1 for pointwise convs.

    Returns
    -------
    dict of str to list of str
        ``block -> [parameter name, ...]`` in registration order; blocks with
        no such conv are absent.
    """
    if not isinstance(network, nn.Module):
        raise TypeError(f"network must be a torch.nn.Module, got {type(network).__name__}")
    check_int("kernel_size", kernel_size, minimum=1)
    groups: dict[str, list[str]] = {}
    for mod_name, mod in network.named_modules():
        if isinstance(mod, nn.Conv2d) and tuple(mod.kernel_size) == (kernel_size, kernel_size):
            pname = f"{mod_name}.weight" if mod_name else "weight"
            block = mod_name.split(".")[0] if mod_name else "root"
            groups.setdefault(block, []).append(pname)
    return groups
