"""Small DIP fits with random weights, shared by the linearised-Laplace tests.

No fitting: the linearised model's algebra does not need a trained network, only
a fixed one; weights and data come from seeded generators.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from bayes_recon.inference.dip import DIPFit
from bayes_recon.models.unet import UNet, UNetConfig

#: A 4-channel U-Net: every layer kind of the default network, a few hundred weights.
TINY = UNetConfig(channels=4, skip_channels=(0, 4, 4))


def _fit_of(net, op, size, gen):
    z = torch.rand(1, 1, size, size, generator=gen, dtype=torch.float64)
    y = op(torch.rand(1, 1, size, size, generator=gen, dtype=torch.float64))
    with torch.no_grad():
        xs = net(z)
    return DIPFit(net, z, xs, np.zeros(1), y, 1.0, 0, 0.0)


def random_unet_fit(op, size=8, seed=0):
    """A DIPFit of the float64 :data:`TINY` U-Net with random weights; ``y = op(x)`` for a random ``x``."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = UNet(TINY).double().eval().requires_grad_(False)
    return _fit_of(net, op, size, gen)


def small_conv_fit(op, size=8, seed=0):
    """A two-layer tanh conv net (two 3x3 groups; nonlinear, but cheap forward-mode products)."""
    gen = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(), nn.Conv2d(3, 1, 3, padding=1))
    net = net.double().requires_grad_(False)
    for p in net.parameters():
        p.copy_(0.5 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
    return _fit_of(net, op, size, gen)
