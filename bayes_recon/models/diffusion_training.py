"""Training of diffusion priors (DDPM ε-prediction), with checkpoints that resume.

The loss is Ho et al.'s simple objective ``E_{t, ε} ‖ε − ε_θ(√ᾱ_t u_0 + √(1−ᾱ_t) ε, t)‖²``
(``t`` uniform); the returned model holds an exponential moving average of the
weights, as DDPM samplers use. Validation is the same loss on held-out images
with a fixed seed (so it is comparable between evaluations).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .._validation import check_int, check_positive, check_tensor
from .checkpoint import load_tensors, save_tensors
from .diffusion import DiffusionPrior
from .diffusion_unet import DiffusionUNet
from .training import _load_optimizer, _optimizer_tensors, augment

__all__ = ["DiffusionTrainConfig", "DiffusionTrainResult", "train_diffusion", "diffusion_loss",
           "evaluate_diffusion_loss", "denoising_mse"]


@dataclass
class DiffusionTrainConfig:
    """Settings of :func:`train_diffusion`.

    Attributes
    ----------
    steps : int
        Optimiser steps in all (the run can be resumed up to it).
    batch_size : int
    lr : float
        Adam learning rate after a linear warm-up of ``warmup_steps``.
    warmup_steps : int
    ema_decay : float
        Decay of the weight average that is returned, in [0, 1).
    max_shift, max_rotation : int, float
        Augmentation as in :func:`~bayes_recon.models.training.augment`.
    flips : bool
        Random horizontal and vertical flips (natural patches; not for digits).
    val_every : int
        Steps between validation losses (and checkpoints).
    seed : int
    """

    steps: int = 20000
    batch_size: int = 64
    lr: float = 5e-4
    warmup_steps: int = 500
    ema_decay: float = 0.999
    max_shift: int = 2
    max_rotation: float = 0.0
    flips: bool = False
    val_every: int = 500
    seed: int = 0

    def __post_init__(self):
        check_int("steps", self.steps, minimum=1)
        check_int("batch_size", self.batch_size, minimum=1)
        check_positive("lr", self.lr)
        check_int("warmup_steps", self.warmup_steps, minimum=0)
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        check_int("max_shift", self.max_shift, minimum=0)
        check_positive("max_rotation", self.max_rotation, allow_zero=True)
        check_int("val_every", self.val_every, minimum=1)
        check_int("seed", self.seed, minimum=0)


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


def _flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    b = x.shape[0]
    h = torch.rand(b, generator=gen) < 0.5
    v = torch.rand(b, generator=gen) < 0.5
    x = torch.where(h.view(-1, 1, 1, 1).to(x.device), x.flip(-1), x)
    return torch.where(v.view(-1, 1, 1, 1).to(x.device), x.flip(-2), x)


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
    if ckpt is not None and ckpt.with_suffix(".json").is_file():
        tensors, meta = load_tensors(ckpt)
        if meta.get("model_config") != model.config.to_dict():
            raise ValueError(f"checkpoint in {checkpoint_dir} was made with another model config")
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
        _load_optimizer(opt, tensors, meta["optimizer"])
        gen.set_state(tensors["generator_state"])
        history, step = meta["history"], meta["step"]
    n = train_data.shape[0]
    if step > 0:  # resume the epoch's order where it stopped: the same run as without a stop
        perm, pos = tensors["perm"], meta["pos"]
    else:
        perm, pos = torch.randperm(n, generator=gen), 0
    bar = tqdm(range(step, cfg.steps), desc="train diffusion", disable=not progress,
               initial=step, total=cfg.steps)
    running = math.nan
    for step in bar:
        model.train()
        if pos + cfg.batch_size > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        x = train_data[perm[pos:pos + cfg.batch_size]]
        pos += cfg.batch_size
        x = augment(x, cfg.max_shift, cfg.max_rotation, gen)
        if cfg.flips:
            x = _flip(x, gen)
        for group in opt.param_groups:
            group["lr"] = cfg.lr * min(1.0, (step + 1) / max(cfg.warmup_steps, 1))
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
                opt_t, opt_meta = _optimizer_tensors(opt)
                tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
                tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
                tensors.update(opt_t)
                tensors["generator_state"] = gen.get_state()
                tensors["perm"] = perm
                save_tensors(ckpt, tensors, {
                    "model_config": model.config.to_dict(), "train_config": asdict(cfg),
                    "step": done, "pos": pos, "history": history, "optimizer": opt_meta})
    ema.eval()
    ema.metadata = {}
    return DiffusionTrainResult(model=ema, history=history)
