"""What the step-based trainers (diffusion, hierarchical VAE) share.

Settings (:class:`StepTrainConfig`), seeded epochs of augmented batches whose
position is part of a checkpoint (:class:`BatchStream`), the learning-rate
warm-up, and atomic safetensors + JSON checkpoints that resume a run exactly
(:func:`save_step_checkpoint`, :func:`load_step_checkpoint`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .._validation import check_int, check_positive
from .checkpoint import load_tensors, save_tensors
from .training import _load_optimizer, _optimizer_tensors, augment

__all__ = ["StepTrainConfig", "BatchStream", "random_flips", "set_warmup_lr",
           "save_step_checkpoint", "load_step_checkpoint", "start_or_resume"]


@dataclass
class StepTrainConfig:
    """Settings every step-based trainer takes.

    Attributes
    ----------
    steps : int
        Optimiser steps in all (the run can be resumed up to it).
    batch_size : int
    lr : float
        Adam learning rate after a linear warm-up of ``warmup_steps``.
    warmup_steps : int
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
        check_int("max_shift", self.max_shift, minimum=0)
        check_positive("max_rotation", self.max_rotation, allow_zero=True)
        check_int("val_every", self.val_every, minimum=1)
        check_int("seed", self.seed, minimum=0)


def random_flips(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each image of ``x`` ``(B, C, H, W)`` flipped left–right and up–down with probability ½ each."""
    b = x.shape[0]
    h = torch.rand(b, generator=gen) < 0.5
    v = torch.rand(b, generator=gen) < 0.5
    x = torch.where(h.view(-1, 1, 1, 1).to(x.device), x.flip(-1), x)
    return torch.where(v.view(-1, 1, 1, 1).to(x.device), x.flip(-2), x)


class BatchStream:
    """Shuffled epochs of ``data`` ``(N, C, H, W)``, augmented as ``config`` says.

    A new permutation is drawn from ``generator`` whenever the next batch would
    run past the end of the current one; ``perm`` and ``pos`` are saved with a
    checkpoint so that a resumed run draws the batches an uninterrupted one would.
    """

    def __init__(self, data: torch.Tensor, config: StepTrainConfig, generator: torch.Generator,
                 perm: torch.Tensor | None = None, pos: int = 0):
        self.data, self.config, self.generator = data, config, generator
        n = data.shape[0]
        self.perm = torch.randperm(n, generator=generator) if perm is None else perm
        self.pos = int(pos)

    def next(self) -> torch.Tensor:
        cfg, n = self.config, self.data.shape[0]
        if self.pos + cfg.batch_size > n:
            self.perm, self.pos = torch.randperm(n, generator=self.generator), 0
        x = self.data[self.perm[self.pos:self.pos + cfg.batch_size]]
        self.pos += cfg.batch_size
        x = augment(x, cfg.max_shift, cfg.max_rotation, self.generator)
        return random_flips(x, self.generator) if cfg.flips else x


def set_warmup_lr(opt: torch.optim.Optimizer, config: StepTrainConfig, step: int) -> None:
    """The learning rate of (0-based) ``step``: linear warm-up to ``config.lr``."""
    for group in opt.param_groups:
        group["lr"] = config.lr * min(1.0, (step + 1) / max(config.warmup_steps, 1))


def save_step_checkpoint(path: Path, model, opt, stream: BatchStream, config: StepTrainConfig,
                         step: int, history: list, tensors: dict | None = None,
                         meta: dict | None = None) -> None:
    """Write weights, optimiser, generator, batch position and ``tensors``/``meta`` extras atomically."""
    opt_t, opt_meta = _optimizer_tensors(opt)
    out = {f"model.{k}": v for k, v in model.state_dict().items()}
    out.update(tensors or {})
    out.update(opt_t)
    out["generator_state"] = stream.generator.get_state()
    out["perm"] = stream.perm
    save_tensors(path, out, {"model_config": model.config.to_dict(), "train_config": asdict(config),
                             "step": step, "pos": stream.pos, "history": history,
                             "optimizer": opt_meta, **(meta or {})})


def load_step_checkpoint(path: Path, model, opt, generator: torch.Generator):
    """Resume from ``path`` if it holds a checkpoint: ``(tensors, meta)``, else None.

    Loads the model's weights, the optimiser and the generator state in place;
    ``ValueError`` if the checkpoint was made with another model config.
    """
    if not Path(path).with_suffix(".json").is_file():
        return None
    tensors, meta = load_tensors(path)
    if meta.get("model_config") != model.config.to_dict():
        raise ValueError(f"checkpoint in {Path(path).parent} was made with another model config")
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    _load_optimizer(opt, tensors, meta["optimizer"])
    generator.set_state(tensors["generator_state"])
    return tensors, meta


def start_or_resume(path, model, opt, generator: torch.Generator, train_data: torch.Tensor,
                    config: StepTrainConfig):
    """``(stream, tensors, meta)``: resumed from the checkpoint at ``path`` if there is one
    (``tensors``/``meta`` then hold its extras and history), else a fresh stream and
    ``({}, None)``. ``path`` None never resumes."""
    resumed = load_step_checkpoint(path, model, opt, generator) if path is not None else None
    if resumed is None:
        return BatchStream(train_data, config, generator), {}, None
    tensors, meta = resumed
    return BatchStream(train_data, config, generator, tensors["perm"], meta["pos"]), tensors, meta
