"""Two-stage training of SUPN-VAE priors, with checkpoints that resume.

Stage 1 fits the encoder and the mean decoder as a VAE with a fixed isotropic
likelihood; stage 2 freezes them and fits the precision decoder on the negative
log-likelihood of the structured (or diagonal / identity) Gaussian. Each stage
stops early on the validation loss. Losses are reported in bits per pixel.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .._validation import check_int, check_tensor
from .checkpoint import load_tensors, save_tensors
from .supn_vae import SUPNVAE


@dataclass
class TrainConfig:
    """Optimisation settings for :func:`train_prior`.

    Attributes
    ----------
    stage1_epochs, stage2_epochs : int
        Upper bounds on epochs per stage.
    batch_size : int
    lr : float
        Adam learning rate.
    patience : int
        Epochs without validation improvement before a stage stops.
    max_shift : int
        Augmentation: random integer shifts in pixels (0 disables).
    max_rotation : float
        Augmentation: random rotations in degrees (0 disables).
    seed : int
    """

    stage1_epochs: int = 100
    stage2_epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    patience: int = 10
    max_shift: int = 2
    max_rotation: float = 10.0
    seed: int = 0

    def __post_init__(self):
        for name in ("stage1_epochs", "stage2_epochs", "patience"):
            check_int(name, getattr(self, name), minimum=0)
        check_int("batch_size", self.batch_size, minimum=1)
        check_int("max_shift", self.max_shift, minimum=0)
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


@dataclass
class TrainResult:
    """History of a training run (bits per pixel, per epoch and stage)."""

    model: SUPNVAE
    history: list[dict] = field(default_factory=list)
    best_val_bpp: dict = field(default_factory=dict)


def bits_per_pixel(nats: torch.Tensor, num_pixels: int) -> torch.Tensor:
    """Convert a negative log-likelihood in nats per image to bits per pixel."""
    return nats / (num_pixels * math.log(2.0))


def augment(x: torch.Tensor, max_shift: int, max_rotation: float,
            generator: torch.Generator) -> torch.Tensor:
    """Random small shifts and rotations (bilinear, zero fill): ``(B, C, H, W)``."""
    if max_shift == 0 and max_rotation == 0:
        return x
    b, _, h, w = x.shape
    angle = (torch.rand(b, generator=generator) * 2 - 1) * math.radians(max_rotation)
    shift = torch.randint(-max_shift, max_shift + 1, (b, 2), generator=generator).float()
    cos, sin = angle.cos(), angle.sin()
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    theta[:, 0, 2] = 2 * shift[:, 0] / w
    theta[:, 1, 2] = 2 * shift[:, 1] / h
    theta = theta.to(dtype=x.dtype, device=x.device)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False).clamp(0.0, 1.0)


@torch.no_grad()
def evaluate_nll(model: SUPNVAE, data: torch.Tensor, stage: int = 2, seed: int = 0,
                 batch_size: int = 256) -> float:
    """Mean negative ELBO on ``data`` in bits per pixel (fixed seed: reproducible).

    Parameters
    ----------
    model : SUPNVAE
    data : torch.Tensor
        ``(N, C, H, W)``.
    stage : int
        1 for the stage-1 isotropic likelihood, 2 for the decoder's own.
    """
    check_tensor("data", data, shape=(None, *model.event_shape))
    gen = torch.Generator().manual_seed(seed)
    model.eval()
    total = 0.0
    for i in range(0, data.shape[0], batch_size):
        total += float(model.negative_elbo(data[i : i + batch_size], stage, gen).sum())
    return float(bits_per_pixel(torch.tensor(total / data.shape[0]), data[0].numel()))


#: Modules fitted in stage 1 (and frozen in stage 2): what :func:`copy_mean_network` copies.
MEAN_NETWORK = ("encoder", "mean_trunk", "mean_head")


def copy_mean_network(model: SUPNVAE, source) -> SUPNVAE:
    """Give ``model`` the stage-1 networks (encoder, mean decoder) of ``source``, in place.

    A diagonal prior trained from a structured prior's stage-1 weights differs
    from it only in the covariance head: the controlled comparison of held-out
    likelihoods. Train the result with ``stage1_epochs=0``.

    Parameters
    ----------
    model : SUPNVAE
        Receives the weights.
    source : SUPNVAE or dict of str to torch.Tensor
        A trained prior, or a state dict holding ``encoder.*``, ``mean_trunk.*``
        and ``mean_head.*`` (a stage-2 training checkpoint's ``model.*`` entries).

    Returns
    -------
    SUPNVAE
        ``model``.

    Raises
    ------
    ValueError
        If the two networks' image size, channels, latent dimension or widths differ.
    """
    if not isinstance(model, SUPNVAE):
        raise TypeError(f"model must be a SUPNVAE, got {type(model).__name__}")
    if isinstance(source, SUPNVAE):
        for key in ("image_size", "channels", "latent_dim", "widths"):
            a, b = getattr(model.config, key), getattr(source.config, key)
            if a != b:
                raise ValueError(f"source prior has {key}={b}, model has {key}={a}: "
                                 "the mean networks must have the same shape")
        state = source.state_dict()
    elif isinstance(source, dict):
        state = source
    else:
        raise TypeError(f"source must be a SUPNVAE or a state dict, got {type(source).__name__}")
    for name in MEAN_NETWORK:
        module = getattr(model, name)
        sub = {k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + ".")}
        own = module.state_dict()
        if set(sub) != set(own) or any(sub[k].shape != own[k].shape for k in own):
            raise ValueError(f"source has no matching {name!r} weights for this model "
                             "(image size, channels, latent dimension and widths must agree)")
        module.load_state_dict(sub)
    return model


def mean_network_state(path) -> dict:
    """Stage-1 weights for :func:`copy_mean_network`, read from ``path``.

    Parameters
    ----------
    path : path
        A saved prior (``.safetensors`` with its ``.json``), or a training
        folder whose checkpoint is past stage 1 (stage 2 leaves the encoder and
        mean decoder frozen at their best stage-1 weights).

    Returns
    -------
    dict of str to torch.Tensor
        A state dict with at least the ``encoder.*``, ``mean_trunk.*`` and
        ``mean_head.*`` entries.
    """
    path = Path(path)
    if path.is_dir():
        ckpt = path / "checkpoint"
        if not ckpt.with_suffix(".json").is_file():
            raise ValueError(f"mean_from: {path} holds no training checkpoint (checkpoint.json)")
        tensors, meta = load_tensors(ckpt)
        if meta.get("stage") != 2:
            raise ValueError(f"mean_from: the training in {path} has not finished stage 1 yet")
        return {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    return SUPNVAE.load(path).state_dict()


def _stage_parameters(model: SUPNVAE, stage: int):
    if stage == 1:
        mods = [model.encoder, model.mean_trunk, model.mean_head]
        return [p for m in mods for p in m.parameters()]
    if model.config.covariance == "identity":
        return [model.log_std]
    mods = [model.precision_trunk, model.log_diag_head]
    if model.num_offdiag:
        mods.append(model.off_diag_head)
    return [p for m in mods for p in m.parameters()]


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{idx}.{key}"] = value
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    state: dict = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    for name, value in meta["scalars"].items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def train_prior(
    model: SUPNVAE,
    train_data: torch.Tensor,
    val_data: torch.Tensor,
    config: TrainConfig | None = None,
    checkpoint_dir=None,
    progress: bool = True,
) -> TrainResult:
    """Fit ``model`` in two stages; returns the best-validation weights.

    Parameters
    ----------
    model : SUPNVAE
    train_data, val_data : torch.Tensor
        ``(N, C, H, W)`` images in [0, 1].
    config : TrainConfig, optional
    checkpoint_dir : path, optional
        If given, a checkpoint (weights, optimiser, generator state, history) is
        written atomically after every epoch, and an existing one is resumed.
    progress : bool
        Show a progress bar with the validation loss.

    Returns
    -------
    TrainResult
    """
    if not isinstance(model, SUPNVAE):
        raise TypeError(f"model must be a SUPNVAE, got {type(model).__name__}")
    config = config or TrainConfig()
    check_tensor("train_data", train_data, shape=(None, *model.event_shape))
    check_tensor("val_data", val_data, shape=(None, *model.event_shape))
    gen = torch.Generator().manual_seed(config.seed)
    n_pix = train_data[0].numel()
    history: list[dict] = []
    best: dict = {}
    start_stage, start_epoch = 1, 0
    ckpt = Path(checkpoint_dir) / "checkpoint" if checkpoint_dir is not None else None
    resume = None
    if ckpt is not None and ckpt.with_suffix(".json").is_file():
        resume = load_tensors(ckpt)
        tensors, meta = resume
        if meta.get("model_config") != model.config.to_dict():
            raise ValueError(f"checkpoint in {checkpoint_dir} was made with another model config")
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        gen.set_state(tensors["generator_state"])
        history, best = meta["history"], meta["best"]
        start_stage, start_epoch = meta["stage"], meta["epoch"] + 1

    for stage in (1, 2):
        if stage < start_stage:
            continue
        epochs = config.stage1_epochs if stage == 1 else config.stage2_epochs
        for p in model.parameters():
            p.requires_grad_(False)
        params = _stage_parameters(model, stage)
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.Adam(params, lr=config.lr)
        key = f"stage{stage}"
        best_state = copy.deepcopy(model.state_dict())
        epoch0 = 0
        if resume is not None and stage == start_stage:
            tensors, meta = resume
            if meta.get("optimizer") is not None:
                _load_optimizer(opt, tensors, meta["optimizer"])
            best_state = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
            epoch0 = start_epoch
        stale = best.get(f"{key}_stale", 0)
        bar = tqdm(range(epoch0, epochs), desc=f"train {model.config.covariance} stage {stage}",
                   disable=not progress, leave=False)
        for epoch in bar:
            if stale >= config.patience:
                break
            model.train()
            perm = torch.randperm(train_data.shape[0], generator=gen)
            total = 0.0
            for i in range(0, len(perm), config.batch_size):
                x = augment(train_data[perm[i : i + config.batch_size]], config.max_shift,
                            config.max_rotation, gen)
                loss = model.negative_elbo(x, stage, gen).mean() / n_pix
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 10.0)
                opt.step()
                total += float(loss.detach()) * x.shape[0]
            train_bpp = total / train_data.shape[0] / math.log(2.0)
            val_bpp = evaluate_nll(model, val_data, stage=stage, seed=config.seed)
            history.append({"stage": stage, "epoch": epoch, "train_bpp": train_bpp,
                            "val_bpp": val_bpp})
            if val_bpp < best.get(key, math.inf):
                best[key] = val_bpp
                best_state = copy.deepcopy(model.state_dict())
                stale = 0
            else:
                stale += 1
            best[f"{key}_stale"] = stale
            bar.set_postfix(train=f"{train_bpp:.3f}", val=f"{val_bpp:.3f}")
            if ckpt is not None:
                opt_t, opt_meta = _optimizer_tensors(opt)
                tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
                tensors.update({f"best.{k}": v for k, v in best_state.items()})
                tensors.update(opt_t)
                tensors["generator_state"] = gen.get_state()
                save_tensors(ckpt, tensors, {
                    "model_config": model.config.to_dict(), "train_config": asdict(config),
                    "stage": stage, "epoch": epoch, "history": history, "best": best,
                    "optimizer": opt_meta,
                })
        model.load_state_dict(best_state)
        if stage == 1 and ckpt is not None:
            # Stage 2 starts from the best stage-1 weights with a fresh optimiser.
            tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
            tensors.update({f"best.{k}": v for k, v in model.state_dict().items()})
            tensors["generator_state"] = gen.get_state()
            save_tensors(ckpt, tensors, {
                "model_config": model.config.to_dict(), "train_config": asdict(config),
                "stage": 2, "epoch": -1, "history": history, "best": best, "optimizer": None,
            })
        resume = None if stage == start_stage else resume
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    return TrainResult(model=model, history=history,
                       best_val_bpp={k: v for k, v in best.items() if not k.endswith("_stale")})
