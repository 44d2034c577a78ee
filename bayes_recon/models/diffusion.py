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
(:mod:`bayes_recon.inference.diffusion`) use;
:class:`~bayes_recon.models.diffusion_unet.DiffusionUNet` is the trained network, :class:`GaussianDiffusionPrior` the closed form for a
Gaussian image model (the reference the tests compare against).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .._validation import check_int, check_positive, check_tensor

__all__ = [
    "linear_beta_schedule",
    "check_alphas_cumprod",
    "DiffusionPrior",
    "GaussianDiffusionPrior",
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
