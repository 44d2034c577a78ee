"""Training of diffusion priors (DDPM ε-prediction), with checkpoints that resume.

The loss is Ho et al.'s simple objective ``E_{t, ε} ‖ε − ε_θ(√ᾱ_t u_0 + √(1−ᾱ_t) ε, t)‖²``
(``t`` uniform); the returned model holds an exponential moving average of the
weights, as DDPM samplers use. Validation is the same loss on held-out images
with a fixed seed (so it is comparable between evaluations).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .._validation import check_positive, check_tensor
from .diffusion import DiffusionPrior
from .diffusion_unet import DiffusionUNet
from .step_training import (StepTrainConfig, save_step_checkpoint, set_warmup_lr,
                            start_or_resume)

__all__ = ["DiffusionTrainConfig", "DiffusionTrainResult", "train_diffusion", "diffusion_loss",
           "evaluate_diffusion_loss", "denoising_mse"]


@dataclass
class DiffusionTrainConfig(StepTrainConfig):
    """Settings of :func:`train_diffusion`: :class:`~.step_training.StepTrainConfig` and

    Attributes
    ----------
    ema_decay : float
        Decay of the weight average that is returned, in [0, 1).
    """

    ema_decay: float = 0.999

    def __post_init__(self):
        super().__post_init__()
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")


@dataclass
class DiffusionTrainResult:
    """The trained (weight-averaged) model and the validation history."""

    model: DiffusionUNet
    history: list[dict] = field(default_factory=list)


def diffusion_loss(model: DiffusionPrior, x0: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per-image mean ``‖ε − ε̂‖²`` ``(B,)`` at uniform random steps, images ``x0`` ``(B, C, H, W)``."""
    b = x0.shape[0]
    t = torch.randint(0, model.num_steps, (b,), generator=generator).to(x0.device)
    eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
    a = model.alphas_cumprod[t].to(x0.dtype).view(-1, 1, 1, 1)
    u_t = a.sqrt() * model.to_model(x0) + (1 - a).sqrt() * eps
    return (model.predict_noise(u_t, t) - eps).square().flatten(1).mean(1)


@torch.no_grad()
def evaluate_diffusion_loss(model: DiffusionPrior, data: torch.Tensor, seed: int = 0,
                            batch_size: int = 256) -> float:
    """Mean :func:`diffusion_loss` on ``data`` ``(N, C, H, W)`` with a fixed seed."""
    check_tensor("data", data, shape=(None, *model.image_shape))
    gen = torch.Generator().manual_seed(seed)
    total = 0.0
    for i in range(0, data.shape[0], batch_size):
        total += float(diffusion_loss(model, data[i:i + batch_size], gen).sum())
    return total / data.shape[0]


@torch.no_grad()
def denoising_mse(denoiser, images: torch.Tensor, sigmas, seed: int = 0,
                  batch_size: int = 256) -> dict[float, float]:
    """Mean squared error per pixel of ``denoiser(images + σ n, σ)`` for each ``σ``.

    Parameters
    ----------
    denoiser : DiffusionPrior or callable
        ``(x, σ) → x̂``, e.g. :meth:`DiffusionPrior.denoise`.
    images : torch.Tensor
        ``(N, C, H, W)`` clean images.
    sigmas : sequence of float
    seed : int
        The noise is drawn from this seed (same noise for every ``σ``, scaled).

    Returns
    -------
    dict of float to float
    """
    fn = denoiser.denoise if isinstance(denoiser, DiffusionPrior) else denoiser
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(images.shape, generator=gen, dtype=images.dtype).to(images.device)
    out = {}
    for s in sigmas:
        s = check_positive("sigmas", s)
        err = 0.0
        for i in range(0, images.shape[0], batch_size):
            x = images[i:i + batch_size]
            err += float((fn(x + s * noise[i:i + batch_size], s) - x).square().sum())
        out[s] = err / images.numel()
    return out


def train_diffusion(model: DiffusionUNet, train_data: torch.Tensor, val_data: torch.Tensor,
                    config: DiffusionTrainConfig | None = None, checkpoint_dir=None,
                    progress: bool = True) -> DiffusionTrainResult:
    """Fit ``model`` on images in [0, 1]; returns the weight average (EMA), in eval mode.

    Parameters
    ----------
    model : DiffusionUNet
    train_data, val_data : torch.Tensor
        ``(N, C, H, W)``.
    config : DiffusionTrainConfig, optional
    checkpoint_dir : path, optional
        A checkpoint (weights, average, optimiser, generator, history) is
        written atomically every ``val_every`` steps, and an existing one is resumed.
    progress : bool

    Returns
    -------
    DiffusionTrainResult
    """
    if not isinstance(model, DiffusionUNet):
        raise TypeError(f"model must be a DiffusionUNet, got {type(model).__name__}")
    cfg = DiffusionTrainConfig() if config is None else config
    check_tensor("train_data", train_data, shape=(None, *model.image_shape))
    check_tensor("val_data", val_data, shape=(None, *model.image_shape))
    gen = torch.Generator().manual_seed(cfg.seed)
    ema = copy.deepcopy(model)
    for p in ema.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    history: list[dict] = []
    step = 0
    ckpt = Path(checkpoint_dir) / "checkpoint" if checkpoint_dir is not None else None
    stream, tensors, meta = start_or_resume(ckpt, model, opt, gen, train_data, cfg)
    if meta is not None:  # the epoch's order continues where it stopped
        ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
        history, step = meta["history"], meta["step"]
    bar = tqdm(range(step, cfg.steps), desc="train diffusion", disable=not progress,
               initial=step, total=cfg.steps)
    running = math.nan
    for step in bar:
        model.train()
        x = stream.next()
        set_warmup_lr(opt, cfg, step)
        loss = diffusion_loss(model, x, gen).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            # Short runs average over fewer steps: the usual warm-up of the decay.
            decay = min(cfg.ema_decay, (1 + step) / (10 + step))
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - decay)
        lv = float(loss.detach())
        running = lv if math.isnan(running) else 0.98 * running + 0.02 * lv
        done = step + 1
        if done % cfg.val_every == 0 or done == cfg.steps:
            ema.eval()
            val = evaluate_diffusion_loss(ema, val_data, seed=cfg.seed)
            history.append({"step": done, "train_loss": running, "val_loss": val})
            bar.set_postfix(train=f"{running:.4f}", val=f"{val:.4f}")
            if ckpt is not None:
                save_step_checkpoint(ckpt, model, opt, stream, cfg, done, history,
                                     {f"ema.{k}": v for k, v in ema.state_dict().items()})
    ema.eval()
    ema.metadata = {}
    return DiffusionTrainResult(model=ema, history=history)
