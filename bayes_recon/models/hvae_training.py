"""Training of hierarchical VAE priors on the negative ELBO, with checkpoints that resume.

The loss is the negative ELBO in bits per pixel with one reparameterised draw
per image. Validation is the same quantity on held-out images with a fixed seed
(comparable between evaluations, and with :func:`~bayes_recon.models.evaluate_nll`
of the single-level priors); the best-validation weights are returned.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .._validation import check_int, check_positive, check_tensor
from .hvae import HierarchicalVAE
from .step_training import (StepTrainConfig, save_step_checkpoint, set_warmup_lr,
                            start_or_resume)
from .training import bits_per_pixel

__all__ = ["HVAETrainConfig", "HVAETrainResult", "train_hvae", "evaluate_hvae_nll"]


@dataclass
class HVAETrainConfig(StepTrainConfig):
    """Settings of :func:`train_hvae`: :class:`~.step_training.StepTrainConfig` (here with
    ``batch_size=32``, ``lr=1e-3``, ``warmup_steps=200``) and

    Attributes
    ----------
    kl_warmup_steps : int
        The KL terms' weight rises linearly from 0 to 1 over these steps (keeps
        the groups from collapsing onto the prior early); 0 disables.
    grad_clip : float
        Gradient-norm clip.
    """

    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 200
    kl_warmup_steps: int = 1000
    grad_clip: float = 50.0

    def __post_init__(self):
        super().__post_init__()
        check_int("kl_warmup_steps", self.kl_warmup_steps, minimum=0)
        check_positive("grad_clip", self.grad_clip)


@dataclass
class HVAETrainResult:
    """The best-validation model and the validation history (bits per pixel)."""

    model: HierarchicalVAE
    history: list[dict] = field(default_factory=list)
    best_val_bpp: float = math.inf


@torch.no_grad()
def evaluate_hvae_nll(model: HierarchicalVAE, data: torch.Tensor, seed: int = 0,
                      batch_size: int = 256) -> float:
    """Mean negative ELBO of ``data`` ``(N, C, H, W)`` in bits per pixel, one seeded draw per image."""
    if not isinstance(model, HierarchicalVAE):
        raise TypeError(f"model must be a HierarchicalVAE, got {type(model).__name__}")
    check_tensor("data", data, shape=(None, model.config.channels, None, None))
    gen = torch.Generator(device=data.device).manual_seed(seed)
    was_training = model.training
    model.eval()
    total = 0.0
    for i in range(0, data.shape[0], batch_size):
        total += float(model.negative_elbo(data[i:i + batch_size], gen).sum())
    model.train(was_training)
    return float(bits_per_pixel(torch.tensor(total / data.shape[0]), data[0].numel()))


def _kl_weighted_loss(model, x, gen, kl_weight):
    kls, _, h = model.kl_divergences(x, gen)
    nll = -model.output(h).log_prob(x.to(model.stem.weight.dtype))
    return (nll + kl_weight * torch.stack(kls).sum(0)).mean() / x[0].numel()


def train_hvae(model: HierarchicalVAE, train_data: torch.Tensor, val_data: torch.Tensor,
               config: HVAETrainConfig | None = None, checkpoint_dir=None,
               progress: bool = True) -> HVAETrainResult:
    """Fit ``model`` on images in [0, 1]; returns the best-validation weights, in eval mode.

    Parameters
    ----------
    model : HierarchicalVAE
    train_data, val_data : torch.Tensor
        ``(N, C, S, S)`` at the model's ``image_size``.
    config : HVAETrainConfig, optional
    checkpoint_dir : path, optional
        A checkpoint (weights, best weights, optimiser, generator, history) is
        written atomically every ``val_every`` steps, and an existing one is
        resumed exactly (same batches as an uninterrupted run).
    progress : bool

    Returns
    -------
    HVAETrainResult
    """
    if not isinstance(model, HierarchicalVAE):
        raise TypeError(f"model must be a HierarchicalVAE, got {type(model).__name__}")
    cfg = HVAETrainConfig() if config is None else config
    if not isinstance(cfg, HVAETrainConfig):
        raise TypeError(f"config must be an HVAETrainConfig, got {type(cfg).__name__}")
    check_tensor("train_data", train_data, shape=(None, *model.event_shape))
    check_tensor("val_data", val_data, shape=(None, *model.event_shape))
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    history: list[dict] = []
    best_state, best_val = copy.deepcopy(model.state_dict()), math.inf
    step = 0
    ckpt = Path(checkpoint_dir) / "checkpoint" if checkpoint_dir is not None else None
    stream, tensors, meta = start_or_resume(ckpt, model, opt, gen, train_data, cfg)
    if meta is not None:
        best_state = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
        history, step, best_val = meta["history"], meta["step"], meta["best_val_bpp"]
    bar = tqdm(range(step, cfg.steps), desc="train hvae", disable=not progress,
               initial=step, total=cfg.steps)
    running = math.nan
    for step in bar:
        model.train()
        x = stream.next()
        set_warmup_lr(opt, cfg, step)
        kl_weight = min(1.0, (step + 1) / cfg.kl_warmup_steps) if cfg.kl_warmup_steps else 1.0
        loss = _kl_weighted_loss(model, x, gen, kl_weight)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        lv = float(loss.detach()) / math.log(2.0)
        running = lv if math.isnan(running) else 0.98 * running + 0.02 * lv
        done = step + 1
        if done % cfg.val_every == 0 or done == cfg.steps:
            val = evaluate_hvae_nll(model, val_data, seed=cfg.seed)
            history.append({"step": done, "train_bpp": running, "val_bpp": val,
                            "kl_weight": kl_weight})
            # Only full-KL losses are ELBOs: the best is chosen among those.
            if kl_weight == 1.0 and val < best_val:
                best_val, best_state = val, copy.deepcopy(model.state_dict())
            bar.set_postfix(train=f"{running:.3f}", val=f"{val:.3f}")
            if ckpt is not None:
                save_step_checkpoint(ckpt, model, opt, stream, cfg, done, history,
                                     {f"best.{k}": v for k, v in best_state.items()},
                                     {"best_val_bpp": best_val})
    if math.isfinite(best_val):
        model.load_state_dict(best_state)
    model.eval()
    model.metadata = {}
    return HVAETrainResult(model=model, history=history, best_val_bpp=best_val)
