"""Score-based diffusion priors: a DDPM noise schedule, a denoiser ``D(x, σ)`` and a score.

A diffusion prior (Ho et al., 2020; Song et al., ICLR 2021, the VP-SDE) is a
network ``ε_θ(u_t, t)`` that predicts the noise in

    u_t = √ᾱ_t u_0 + √(1 − ᾱ_t) ε,        ε ~ N(0, I),

where ``u = (x − shift) / scale`` is the image in the model's own range
(``[−1, 1]`` for images in ``[0, 1]`` with the default ``shift = scale = 0.5``)
and ``ᾱ_t`` decreases from ≈ 1 to ≈ 0 over ``t = 0 … T − 1``. Dividing by
``√ᾱ_t`` turns ``u_t`` into ``u_0`` plus noise of standard deviation
``σ̄_t = √((1 − ᾱ_t)/ᾱ_t)``, so every prior here is also a Gaussian denoiser
in image space, by Tweedie's formula:

    D(x, σ) = E[x_0 | x_0 + σ n = x],        ∇ log p_σ(x) = (D(x, σ) − x) / σ².

:class:`DiffusionPrior` is the interface the samplers
(:mod:`bayes_recon.inference.diffusion`) use; :class:`DiffusionUNet` is the
trained network, :class:`GaussianDiffusionPrior` the closed form for a
Gaussian image model (the reference the tests compare against).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_int, check_positive, check_tensor

__all__ = [
    "linear_beta_schedule",
    "check_alphas_cumprod",
    "DiffusionPrior",
    "GaussianDiffusionPrior",
    "DiffusionConfig",
    "DiffusionUNet",
]


def check_alphas_cumprod(alphas_cumprod) -> torch.Tensor:
    """Check a noise schedule ``ᾱ_t`` ``(T,)``: finite, in (0, 1), strictly decreasing.

    Returns it as a float64 tensor; ``ValueError`` naming ``alphas_cumprod`` otherwise.
    """
    a = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
    if a.ndim != 1 or a.numel() < 2:
        raise ValueError(f"alphas_cumprod must be a 1-D schedule of at least 2 steps, got shape "
                         f"{tuple(a.shape)}")
    if not torch.isfinite(a).all() or (a <= 0).any() or (a >= 1).any():
        raise ValueError("alphas_cumprod must lie strictly inside (0, 1), got values in "
                         f"[{float(a.min()):.3g}, {float(a.max()):.3g}]")
    if not (a[1:] < a[:-1]).all():
        bad = int(torch.nonzero(a[1:] >= a[:-1])[0]) + 1
        raise ValueError(f"alphas_cumprod must be strictly decreasing (the noise schedule must be "
                         f"monotone), but step {bad} has {float(a[bad]):.6g} >= {float(a[bad - 1]):.6g}")
    return a


def linear_beta_schedule(num_steps: int = 1000, beta_start: float = 1e-4,
                         beta_end: float = 0.02) -> torch.Tensor:
    """``ᾱ_t = ∏_{s ≤ t} (1 − β_s)`` for β linear from ``beta_start`` to ``beta_end`` (Ho et al.).

    Returns
    -------
    torch.Tensor
        ``(num_steps,)`` float64, strictly decreasing.

    Examples
    --------
    >>> a = linear_beta_schedule(1000)
    >>> round(float(a[0]), 6), float(a[-1]) < 1e-4
    (0.9999, True)
    """
    check_int("num_steps", num_steps, minimum=2)
    b0, b1 = check_positive("beta_start", beta_start), check_positive("beta_end", beta_end)
    if not b0 < b1 < 1:
        raise ValueError(f"need 0 < beta_start < beta_end < 1, got {b0}, {b1}")
    betas = torch.linspace(b0, b1, num_steps, dtype=torch.float64)
    return check_alphas_cumprod(torch.cumprod(1 - betas, 0))


class DiffusionPrior(nn.Module):
    """Interface of a diffusion prior over images ``(C, H, W)``.

    Subclasses implement :meth:`predict_noise` in model space; everything else
    (time lookup, Tweedie denoiser, score) is defined here once.

    Parameters
    ----------
    image_shape : tuple of int
        ``(C, H, W)``.
    alphas_cumprod : torch.Tensor
        ``(T,)`` strictly decreasing in (0, 1).
    shift, scale : float
        Model space ``u = (x − shift) / scale``.
    """

    def __init__(self, image_shape: Sequence[int], alphas_cumprod, shift: float = 0.0,
                 scale: float = 1.0):
        super().__init__()
        shape = tuple(int(s) for s in image_shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"image_shape must be (C, H, W) with positive sizes, got {image_shape}")
        self.image_shape = shape
        self.register_buffer("alphas_cumprod", check_alphas_cumprod(alphas_cumprod), persistent=False)
        self.shift = float(shift)
        self.scale = check_positive("scale", scale)

    @property
    def num_steps(self) -> int:
        """``T``, the length of the schedule."""
        return int(self.alphas_cumprod.numel())

    @property
    def event_shape(self) -> torch.Size:
        """``(C, H, W)``."""
        return torch.Size(self.image_shape)

    def predict_noise(self, u_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``ε̂(u_t, t)``: ``u_t`` ``(B, C, H, W)`` in model space, ``t`` ``(B,)`` (float allowed)."""
        raise NotImplementedError

    def _log_snr(self) -> torch.Tensor:
        """``log(ᾱ_t / (1 − ᾱ_t))`` ``(T,)``, strictly decreasing."""
        a = self.alphas_cumprod
        return a.log() - (-a).log1p()

    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        """``ᾱ`` at (fractional) times ``t`` ``(B,)``: log-SNR linear between the integer steps.

        :meth:`time_of_noise` inverts the same interpolation, so
        ``alpha_bar(time_of_noise(σ))`` is exactly ``1 / (1 + σ²/scale²)``.
        """
        lam = self._log_snr()
        t = torch.as_tensor(t).to(lam).clamp(0, self.num_steps - 1)
        lo = t.floor().long().clamp(max=self.num_steps - 2)
        w = t - lo
        return torch.sigmoid((1 - w) * lam[lo] + w * lam[lo + 1])

    def time_of_noise(self, sigma: torch.Tensor) -> torch.Tensor:
        """Fractional ``t`` with ``σ̄_t = σ / scale`` for image-space noise levels ``σ`` ``(B,)``.

        ``σ`` outside the schedule's range is clamped to its ends (t = 0 or T − 1).
        """
        lam = self._log_snr()
        target = -2 * (torch.as_tensor(sigma).to(lam) / self.scale).log()
        # lam decreases in t: search on −lam, which increases.
        idx = torch.searchsorted(-lam, -target).clamp(1, self.num_steps - 1)
        hi_lam, lo_lam = lam[idx - 1], lam[idx]
        w = ((hi_lam - target) / (hi_lam - lo_lam)).clamp(0, 1)
        return (idx - 1).to(lam) + w

    def to_model(self, x: torch.Tensor) -> torch.Tensor:
        """Image ``x`` → model space ``u = (x − shift)/scale``."""
        return (x - self.shift) / self.scale

    def to_image(self, u: torch.Tensor) -> torch.Tensor:
        """Model space ``u`` → image ``x = shift + scale u``."""
        return self.shift + self.scale * u

    def denoise(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """Tweedie denoiser ``D(x, σ) ≈ E[x_0 | x]`` for ``x = x_0 + σ n`` (image space).

        Parameters
        ----------
        x : torch.Tensor
            ``(B, C, H, W)`` noisy images.
        sigma : float or torch.Tensor
            Noise standard deviation > 0 in image units, a scalar or ``(B,)``.

        Returns
        -------
        torch.Tensor
            ``(B, C, H, W)``.
        """
        check_tensor("x", x, shape=(None, *self.image_shape))
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        if sigma.ndim == 0:
            sigma = sigma.expand(x.shape[0])
        if sigma.shape != (x.shape[0],) or not (sigma > 0).all():
            raise ValueError(f"sigma must be > 0, a scalar or shape ({x.shape[0]},), got "
                             f"{tuple(sigma.shape)}")
        t = self.time_of_noise(sigma)
        # ᾱ straight from σ (exact), t only tells the network where on the schedule it is.
        a = (1 / (1 + (sigma / self.scale).square())).view(-1, 1, 1, 1)
        u_t = a.sqrt() * self.to_model(x)
        eps = self.predict_noise(u_t, t)
        u0 = (u_t - (1 - a).sqrt() * eps) / a.sqrt()
        return self.to_image(u0)

    def score(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """``∇_x log p_σ(x) = (D(x, σ) − x) / σ²`` (image space, ``(B, C, H, W)``)."""
        sigma_t = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        return (self.denoise(x, sigma) - x) / sigma_t.reshape(-1, 1, 1, 1).square()


class GaussianDiffusionPrior(DiffusionPrior):
    """Diffusion of a Gaussian image model ``x_0 ~ N(m, C)``: the exact noise predictor.

    ``E[ε | u_t] = √(1 − ᾱ) S⁻¹ (u_t − √ᾱ m_u)`` with ``S = ᾱ C_u + (1 − ᾱ) I``
    (model-space mean and covariance), via one eigendecomposition of ``C``.

    Parameters
    ----------
    mean : torch.Tensor
        ``(C, H, W)``.
    covariance : torch.Tensor
        ``(D, D)`` symmetric positive semi-definite, ``D = C·H·W``.
    alphas_cumprod : torch.Tensor, optional
        Default :func:`linear_beta_schedule` ``(1000)``.
    shift, scale : float

    Examples
    --------
    >>> import torch
    >>> prior = GaussianDiffusionPrior(torch.zeros(1, 2, 2), torch.eye(4))
    >>> x = torch.ones(1, 1, 2, 2, dtype=torch.float64)
    >>> round(float(prior.denoise(x, 1.0)[0, 0, 0, 0]), 4)   # x / (1 + σ²)
    0.5
    """

    def __init__(self, mean: torch.Tensor, covariance: torch.Tensor, alphas_cumprod=None,
                 shift: float = 0.0, scale: float = 1.0):
        if not isinstance(mean, torch.Tensor) or mean.ndim != 3:
            raise ValueError(f"mean must be a (C, H, W) tensor, got "
                             f"{getattr(mean, 'shape', type(mean).__name__)}")
        d = mean.numel()
        if not isinstance(covariance, torch.Tensor) or tuple(covariance.shape) != (d, d):
            raise ValueError(f"covariance must have shape ({d}, {d}), got "
                             f"{getattr(covariance, 'shape', type(covariance).__name__)}")
        super().__init__(mean.shape, linear_beta_schedule() if alphas_cumprod is None
                         else alphas_cumprod, shift, scale)
        cov = covariance.to(torch.float64)
        if not torch.allclose(cov, cov.T, atol=1e-10 * float(cov.abs().max())):
            raise ValueError("covariance must be symmetric")
        evals, evecs = torch.linalg.eigh(cov / self.scale ** 2)
        if float(evals.min()) < -1e-8 * float(evals.max()):
            raise ValueError(f"covariance must be positive semi-definite, smallest eigenvalue "
                             f"{float(evals.min()):.3g}")
        self.register_buffer("mean_u", self.to_model(mean.to(torch.float64)).reshape(-1))
        self.register_buffer("evals", evals.clamp(min=0))
        self.register_buffer("evecs", evecs)

    @classmethod
    def fit(cls, images: torch.Tensor, jitter: float = 1e-6, **kwargs) -> "GaussianDiffusionPrior":
        """The Gaussian of the empirical mean and covariance of ``images`` ``(N, C, H, W)``.

        Its :meth:`denoise` is the Wiener filter (the best linear denoiser)
        ``m + C (C + σ² I)⁻¹ (x − m)`` fitted on ``images``; ``jitter`` is
        added to the covariance's diagonal.
        """
        check_tensor("images", images, shape=(None, None, None, None))
        flat = images.reshape(images.shape[0], -1).to(torch.float64)
        mean = flat.mean(0)
        centred = flat - mean
        cov = centred.T @ centred / max(flat.shape[0] - 1, 1)
        cov = cov + check_positive("jitter", jitter, allow_zero=True) * torch.eye(
            cov.shape[0], dtype=cov.dtype, device=cov.device)
        return cls(mean.reshape(images.shape[1:]), cov, **kwargs)

    def predict_noise(self, u_t, t):
        check_tensor("u_t", u_t, shape=(None, *self.image_shape))
        a = self.alpha_bar(t).to(torch.float64).view(-1, 1)
        r = u_t.reshape(u_t.shape[0], -1).to(torch.float64) - a.sqrt() * self.mean_u
        coef = (1 - a).sqrt() / (a * self.evals + (1 - a))  # (B, D) in the eigenbasis
        eps = ((r @ self.evecs) * coef) @ self.evecs.T
        return eps.reshape(u_t.shape).to(u_t.dtype)


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
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"config has unknown keys {unknown}")
        return cls(**d)


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
