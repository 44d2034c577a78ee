"""Random-ellipse phantoms, the usual synthetic pretraining data for CT networks.

Each image is a sum of a random number of ellipses with random centres (inside
the inscribed circle), half-axes, rotations and additive intensities, in the
style of DIVal's ``EllipsesDataset``; the covered region is shifted to be
non-negative and the image scaled to a maximum of 1, the background stays 0.
"""

from __future__ import annotations

import math

import torch

from .._validation import check_int, check_positive

# Elements of one (images, ellipses, H, W) evaluation block: bounds memory (~16 MB
# per float32 intermediate) whatever n and size are.
_BLOCK_ELEMENTS = 1 << 22


def _ellipse_parameters(n: int, max_ellipses: int, mean_ellipses: float,
                        gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Draw all parameters up front, so the result does not depend on blocking."""
    shape = (n, max_ellipses)
    counts = torch.poisson(torch.full((n,), float(mean_ellipses), dtype=torch.float64),
                           generator=gen)
    counts = counts.clamp(1, max_ellipses).to(torch.int64)
    active = torch.arange(max_ellipses)[None, :] < counts[:, None]
    intensity = torch.empty(shape, dtype=torch.float64).uniform_(-0.4, 1.0, generator=gen)
    # Half-axes 0.2 * Exp(1) in units of the half image width: mostly small
    # features with the occasional large structure.
    axis_a = 0.2 * torch.empty(shape, dtype=torch.float64).exponential_(1.0, generator=gen)
    axis_b = 0.2 * torch.empty(shape, dtype=torch.float64).exponential_(1.0, generator=gen)
    # Centres uniform over the disc of radius 0.9 (inside the inscribed circle).
    radius = 0.9 * torch.rand(shape, dtype=torch.float64, generator=gen).sqrt()
    phi = 2 * math.pi * torch.rand(shape, dtype=torch.float64, generator=gen)
    rotation = math.pi * torch.rand(shape, dtype=torch.float64, generator=gen)
    return {
        "intensity": torch.where(active, intensity, torch.zeros_like(intensity)),
        "active": active,
        "a": axis_a.clamp_min(1e-6),
        "b": axis_b.clamp_min(1e-6),
        "cx": radius * phi.cos(),
        "cy": radius * phi.sin(),
        "cos": rotation.cos(),
        "sin": rotation.sin(),
    }


def _render(params: dict[str, torch.Tensor], size: int) -> torch.Tensor:
    """Evaluate the ellipses of a block of images: ``(n, size, size)`` float32.

    float32 suffices for the inside test (pixel spacing >> float32 resolution)
    and halves time and memory.
    """
    coords = -1.0 + (2.0 * torch.arange(size, dtype=torch.float64) + 1.0) / size
    coords = coords.to(torch.float32)
    gy = coords[None, None, :, None]  # rows: the vertical coordinate
    gx = coords[None, None, None, :]
    p = {k: (v if v.dtype == torch.bool else v.to(torch.float32))[:, :, None, None]
         for k, v in params.items()}
    dx = gx - p["cx"]
    dy = gy - p["cy"]
    u = (dx * p["cos"] + dy * p["sin"]) / p["a"]
    v = (-dx * p["sin"] + dy * p["cos"]) / p["b"]
    inside = (u * u + v * v <= 1.0) & p["active"]
    image = (inside * p["intensity"]).sum(dim=1)
    covered = inside.any(dim=1)
    # Negative intensities may push the covered region below the background:
    # shift it so the minimum is 0, keeping the uncovered background at exactly 0.
    low = image.amin(dim=(-2, -1), keepdim=True).clamp_max(0.0)
    image = torch.where(covered, image - low, torch.zeros_like(image))
    high = image.amax(dim=(-2, -1), keepdim=True)
    image = torch.where(high > 0, image / high.clamp_min(1e-30), image)
    return image.clamp(0.0, 1.0)


def ellipses(n: int, size: int, seed: int, *, max_ellipses: int = 70,
             mean_ellipses: float = 40.0) -> torch.Tensor:
    """Random-ellipse phantoms, as used to pretrain CT reconstruction networks.

    Each image holds ``min(max(Poisson(mean_ellipses), 1), max_ellipses)``
    ellipses on the square ``[-1, 1]^2`` with centres uniform over the disc of
    radius 0.9, half-axes ``0.2 * Exp(1)``, rotations uniform in ``[0, pi)`` and
    additive intensities uniform in ``[-0.4, 1]``. The covered region is shifted
    to be non-negative and the image divided by its maximum; the background is 0.

    Parameters
    ----------
    n : int
        Number of images, >= 1.
    size : int
        Side length in pixels, >= 1.
    seed : int
        Same seed, same images (the parameters are drawn on the CPU with a
        seeded ``torch.Generator``).
    max_ellipses : int
        Upper bound on the number of ellipses per image.
    mean_ellipses : float
        Poisson mean of the number of ellipses per image.

    Returns
    -------
    torch.Tensor
        float32 ``(n, 1, size, size)`` in [0, 1].

    Examples
    --------
    >>> from bayes_recon.data import ellipses
    >>> x = ellipses(4, 32, seed=0)
    >>> tuple(x.shape), x.dtype
    ((4, 1, 32, 32), torch.float32)
    >>> bool(x.min() >= 0) and bool(x.max() <= 1)
    True
    >>> bool((ellipses(4, 32, seed=0) == x).all())
    True
    """
    check_int("n", n, minimum=1)
    check_int("size", size, minimum=1)
    check_int("seed", seed, minimum=0)
    check_int("max_ellipses", max_ellipses, minimum=1)
    mean_ellipses = check_positive("mean_ellipses", mean_ellipses)
    gen = torch.Generator().manual_seed(seed)
    params = _ellipse_parameters(n, max_ellipses, mean_ellipses, gen)
    block = max(1, _BLOCK_ELEMENTS // (max_ellipses * size * size))
    out = torch.empty((n, 1, size, size), dtype=torch.float32)
    for start in range(0, n, block):
        part = {k: v[start:start + block] for k, v in params.items()}
        out[start:start + block, 0] = _render(part, size)
    return out
