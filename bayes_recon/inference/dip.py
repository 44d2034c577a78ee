"""Deep image prior: fit a U-Net ``f_θ(z)`` to one measurement with a TV penalty.

``fit_dip`` minimises ``||A f_θ(z) - y||² + γ TV(f_θ(z))`` over the network
weights ``θ`` by Adam with gradient-norm clipping and returns the iterate with
the lowest loss. ``pretrain_dip`` trains the same U-Net supervised from FBP to
ground truth on synthetic ellipses ("educated DIP"); passing it as ``init``
makes ``fit_dip`` fine-tune it.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .._validation import check_choice, check_int, check_positive, check_tensor
from ..models.unet import UNet, UNetConfig
from ..operators.base import LinearOperator
from ..metrics import psnr
from ..operators.classical import rough_reconstruction, total_variation

__all__ = ["DIPFit", "fit_dip", "pretrain_dip", "dip_input", "load_dip_init", "check_dip_init"]

INPUTS = ("fbp", "noise")


@dataclass
class DIPFit:
    """Result of :func:`fit_dip`.

    Attributes
    ----------
    network : UNet
        The network at the best iterate, in eval mode, weights without grad.
    input : torch.Tensor
        The fixed network input ``z``, ``(1, C, H, W)``.
    x : torch.Tensor
        ``f_θ*(z)``, ``(1, C, H, W)``, detached.
    loss_history : numpy.ndarray
        Loss per iteration, ``(iterations,)``.
    y : torch.Tensor
        The measurement, ``(1, *op.range_shape)``.
    tv_weight : float
    best_iteration : int
    best_loss : float
    psnr_history : numpy.ndarray or None
        PSNR (dB, data range 1) per iteration if ``truth`` was given.
    seconds : float
        Wall time of the optimisation loop.
    """

    network: torch.nn.Module
    input: torch.Tensor
    x: torch.Tensor
    loss_history: np.ndarray
    y: torch.Tensor
    tv_weight: float
    best_iteration: int
    best_loss: float
    psnr_history: np.ndarray | None = None
    seconds: float = 0.0

    def iterations_to_psnr(self, target: float) -> int | None:
        """First iteration (1-based) whose PSNR reaches ``target``, or None."""
        if self.psnr_history is None:
            raise ValueError("psnr_history is None: pass truth= to fit_dip to record it")
        hit = np.flatnonzero(self.psnr_history >= target)
        return int(hit[0]) + 1 if hit.size else None


def _check_measurement(y, op) -> torch.Tensor:
    if not isinstance(op, LinearOperator):
        raise TypeError(f"op must be a LinearOperator, got {type(op).__name__}")
    y = check_tensor("y", y, allow_complex=op.complex_range)
    if y.dim() == len(op.range_shape):
        y = y[None]
    if tuple(y.shape) != (1, *op.range_shape):
        raise ValueError(
            f"y must have shape (1, *op.range_shape) = {(1, *op.range_shape)}, got {tuple(y.shape)}")
    return y


def dip_input(y: torch.Tensor, op: LinearOperator, input: str = "fbp", seed: int = 0,
              noise_std: float = 0.1) -> torch.Tensor:
    """The fixed network input: FBP (or ``Aᵀy/||A||²``) of ``y``, or seeded noise.

    Returns ``(1, *op.domain_shape)`` in the real dtype of ``y``.
    """
    check_choice("input", input, INPUTS)
    y = _check_measurement(y, op)
    if input == "fbp":
        return rough_reconstruction(op, y).detach()
    dtype = y.real.dtype if y.is_complex() else y.dtype
    gen = torch.Generator(device=y.device).manual_seed(seed)
    return noise_std * torch.randn((1, *op.domain_shape), generator=gen, dtype=dtype, device=y.device)


def load_dip_init(init) -> torch.nn.Module | None:
    """The starting network named by ``init``: None, a module, a shipped name or a checkpoint path.

    Parameters
    ----------
    init : None, torch.nn.Module, str or os.PathLike
        A module is returned as it is; a string that names a shipped network
        (:func:`~bayes_recon.models.available_dip_networks`, e.g.
        ``"ellipses-ct-dip"``) loads it; any other string or path is read as a
        :class:`~bayes_recon.models.unet.UNet` checkpoint (``.safetensors`` +
        ``.json``, as :meth:`UNet.save` writes).

    Raises
    ------
    TypeError
        ``init`` is none of these.
    ValueError
        The path does not exist or does not hold a U-Net checkpoint.
    """
    from ..models.pretrained import load_pretrained_dip

    kind = check_dip_init(init)
    if kind == "module":
        return init
    if kind == "shipped":
        return load_pretrained_dip(init)
    return None if kind is None else UNet.load(Path(init)).eval()


def check_dip_init(init) -> str | None:
    """What ``init`` names, without loading it: None, ``"module"``, ``"shipped"`` or ``"file"``.

    Raises the ``TypeError``/``ValueError`` of :func:`load_dip_init` (a missing
    checkpoint is found here, before any work).
    """
    from ..models.pretrained import available_dip_networks

    if init is None:
        return None
    if isinstance(init, torch.nn.Module):
        return "module"
    if not isinstance(init, (str, os.PathLike)):
        raise TypeError(f"init must be None, a torch.nn.Module, a shipped network name or a checkpoint "
                        f"path, got {type(init).__name__}")
    shipped = available_dip_networks()
    if isinstance(init, str) and init in shipped:
        return "shipped"
    if not Path(init).with_suffix(".safetensors").exists():
        raise ValueError(f"init must be one of the shipped networks {shipped} or an "
                         f"existing U-Net checkpoint (.safetensors + .json), got {str(init)!r}")
    return "file"


def _network_for(op, init, network_config, seed, dtype, device) -> UNet:
    channels = op.domain_shape[0]
    if init is not None:
        net = copy.deepcopy(load_dip_init(init))
    else:
        cfg = network_config or UNetConfig(in_channels=channels, out_channels=channels)
        if not isinstance(cfg, UNetConfig):
            raise TypeError(f"network_config must be a UNetConfig, got {type(cfg).__name__}")
        torch.manual_seed(seed)  # nn.Module init draws from the global generator
        net = UNet(cfg)
    cfg = getattr(net, "config", None)
    if cfg is not None and (cfg.in_channels, cfg.out_channels) != (channels, channels):
        raise ValueError(
            f"network channels (in, out) must match the operator's image channels {channels}, got "
            f"({cfg.in_channels}, {cfg.out_channels})")
    net = net.to(device=device, dtype=dtype)
    for p in net.parameters():
        p.requires_grad_(True)
    return net


def fit_dip(y: torch.Tensor, op: LinearOperator, tv_weight: float, iterations: int,
            lr: float = 1e-3, input: str = "fbp", init=None,
            seed: int = 0, network_config: UNetConfig | None = None, clip_norm: float = 1.0,
            progress: bool = True, truth: torch.Tensor | None = None) -> DIPFit:
    """Fit a deep image prior to one measurement.

    Minimises ``||A f_θ(z) - y||² + tv_weight · TV(f_θ(z))`` (sum of squares,
    anisotropic TV) by Adam with the gradient norm clipped to ``clip_norm``,
    keeping the weights of the iteration with the lowest loss.

    Parameters
    ----------
    y : torch.Tensor
        ``(1, *op.range_shape)`` (or without the batch dimension), finite.
    op : LinearOperator
        Real-range forward model (complex ranges use ``|.|²`` of the residual).
    tv_weight : float
        ``γ > 0``.
    iterations : int
        Adam steps, >= 1.
    lr : float
        Adam learning rate.
    input : {"fbp", "noise"}
        Network input: FBP (``op.fbp`` or ``Aᵀ y / ||A||²``) or seeded noise.
    init : torch.nn.Module, str or os.PathLike, optional
        Starting network ("educated DIP"): a module (e.g. from
        :func:`pretrain_dip`; copied, not modified), a shipped network name
        (``"ellipses-ct-dip"``) or a U-Net checkpoint path
        (:func:`load_dip_init`). Its architecture replaces ``network_config``.
    seed : int
        Seeds the network initialisation and a noise input.
    network_config : UNetConfig, optional
        Architecture when ``init`` is None (default: the papers' U-Net).
    clip_norm : float
        Maximum gradient norm.
    progress : bool
        tqdm progress bar.
    truth : torch.Tensor, optional
        ``(1, *op.domain_shape)``; only used to record ``psnr_history``.

    Returns
    -------
    DIPFit

    Examples
    --------
    >>> import torch
    >>> from bayes_recon.operators import Identity
    >>> from bayes_recon.models.unet import UNetConfig
    >>> y = torch.zeros(1, 1, 8, 8); y[..., 2:6, 2:6] = 1.0
    >>> fit = fit_dip(y, Identity((1, 8, 8)), tv_weight=1e-3, iterations=20,
    ...               network_config=UNetConfig(scales=2, channels=4, skip_channels=(0, 4)),
    ...               progress=False)
    >>> fit.x.shape, len(fit.loss_history)
    (torch.Size([1, 1, 8, 8]), 20)
    """
    y = _check_measurement(y, op)
    tv_weight = check_positive("tv_weight", tv_weight)
    check_int("iterations", iterations, minimum=1)
    lr = check_positive("lr", lr)
    clip_norm = check_positive("clip_norm", clip_norm)
    check_int("seed", seed, minimum=0)
    dtype = y.real.dtype if y.is_complex() else y.dtype
    if truth is not None:
        truth = check_tensor("truth", truth, shape=(1, *op.domain_shape)).to(dtype)
    z = dip_input(y, op, input, seed)
    # Initialisation and dropout draw from the global generator: seed them for the
    # run and restore the caller's state afterwards.
    with torch.random.fork_rng(devices=[y.device] if y.device.type == "cuda" else []):
        net = _network_for(op, init, network_config, seed, dtype, y.device)
        net.train()
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        losses = np.empty(iterations)
        psnrs = np.empty(iterations) if truth is not None else None
        best_loss, best_it, best_state = float("inf"), 0, None
        start = time.perf_counter()
        bar = tqdm(range(iterations), desc="DIP", disable=not progress, leave=False)
        for it in bar:
            opt.zero_grad(set_to_none=True)
            x = net(z)
            loss = (op(x) - y).abs().pow(2).sum() + tv_weight * total_variation(x, isotropic=False).sum()
            loss.backward()
            value = float(loss.detach())
            if not np.isfinite(value):
                raise FloatingPointError(f"DIP loss became {value} at iteration {it}; lower lr={lr}")
            losses[it] = value
            if psnrs is not None:
                psnrs[it] = float(psnr(truth, x.detach(), data_range=1.0)[0])
            if value < best_loss:
                # The state that produced this loss is the one before the step.
                best_loss, best_it = value, it
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            torch.nn.utils.clip_grad_norm_(net.parameters(), clip_norm)
            opt.step()
            if progress and it % 50 == 0:
                bar.set_postfix(loss=f"{value:.4g}")
    seconds = time.perf_counter() - start
    net.load_state_dict(best_state)
    net.eval()
    net.requires_grad_(False)
    with torch.no_grad():
        x = net(z)
    return DIPFit(network=net, input=z, x=x.detach(), loss_history=losses, y=y.detach(),
                  tv_weight=tv_weight, best_iteration=best_it, best_loss=best_loss,
                  psnr_history=psnrs, seconds=seconds)


def pretrain_dip(op, dataset: str = "ellipses", num_images: int = 2000,
                 epochs: int = 5, batch_size: int = 32, lr: float = 1e-3,
                 relative_noise=0.05, seed: int = 0,
                 network_config: UNetConfig | None = None, progress: bool = True) -> UNet:
    """Train the DIP U-Net supervised from FBP to ground truth ("educated DIP").

    Images come from ``bayes_recon.data.ellipses``; image ``i`` is measured
    with operator ``ops[i mod len(ops)]`` and Gaussian noise of standard
    deviation ``ρ · mean|A x|`` (``ρ`` the relative noise level
    ``levels[(i div len(ops)) mod len(levels)]``, the mean over that image's
    measurement), and the network learns ``FBP(y) -> x`` by Adam on the mean
    squared error with a cosine learning-rate schedule. Several operators and
    noise levels give one network that starts DIP fits on geometries it was
    not trained on (it is fully convolutional).

    Parameters
    ----------
    op : LinearOperator or sequence of LinearOperator
        The forward model(s) of the later DIP fits; all with one square
        ``domain_shape``.
    dataset : {"ellipses"}
    num_images, epochs, batch_size : int
    lr : float
    relative_noise : float or sequence of float
        Noise level(s) ``ρ >= 0``.
    seed : int
        Seeds the phantoms, the noise, the initialisation and the batch order.
    network_config : UNetConfig, optional
    progress : bool

    Returns
    -------
    UNet
        In eval mode, on the device of the generated images; pass it to
        ``fit_dip(..., init=net)`` or ``LinearisedDIPConfig(init=net)``.

    Examples
    --------
    >>> from bayes_recon.operators import ParallelBeamCT
    >>> from bayes_recon.models.unet import UNetConfig
    >>> net = pretrain_dip([ParallelBeamCT(16, 8), ParallelBeamCT(16, 12)], num_images=8,
    ...                    epochs=1, batch_size=4, relative_noise=(0.02, 0.05),
    ...                    network_config=UNetConfig(channels=4, skip_channels=(0, 4, 4)),
    ...                    progress=False)
    >>> net(torch.zeros(1, 1, 16, 16)).shape
    torch.Size([1, 1, 16, 16])
    """
    from ..data.ellipses import ellipses  # data sits below inference; imported lazily

    ops = [op] if isinstance(op, LinearOperator) else list(op) if isinstance(op, (list, tuple)) else None
    if not ops or not all(isinstance(o, LinearOperator) for o in ops):
        raise TypeError(f"op must be a LinearOperator or a non-empty list/tuple of them, got {op!r}")
    if any(o.domain_shape != ops[0].domain_shape for o in ops):
        raise ValueError(f"every op must have one domain_shape, got {[o.domain_shape for o in ops]}")
    check_choice("dataset", dataset, ("ellipses",))
    for name, v in (("num_images", num_images), ("epochs", epochs), ("batch_size", batch_size)):
        check_int(name, v, minimum=1)
    lr = check_positive("lr", lr)
    levels = [relative_noise] if isinstance(relative_noise, (int, float)) else list(relative_noise)
    if not levels:
        raise ValueError("relative_noise must be a float or a non-empty sequence of floats")
    levels = [check_positive("relative_noise", float(r), allow_zero=True) for r in levels]
    c, h, w = ops[0].domain_shape
    if h != w:
        raise ValueError(f"pretrain_dip needs square images, got op.domain_shape {ops[0].domain_shape}")
    x_all = ellipses(num_images, h, seed)
    if c != 1:
        x_all = x_all.expand(-1, c, -1, -1).contiguous()
    gen = torch.Generator(device=x_all.device).manual_seed(seed)
    with torch.no_grad():
        inputs = torch.empty_like(x_all)
        for k, o in enumerate(ops):
            for j, rho in enumerate(levels):
                # Images k, k + len(ops), ... ; within them every len(levels)-th has level j.
                sel = torch.arange(k, num_images, len(ops), device=x_all.device)
                sel = sel[(sel // len(ops)) % len(levels) == j]
                if sel.numel() == 0:
                    continue
                ax = o(x_all[sel])
                scale = ax.abs().flatten(1).mean(1).reshape(-1, *([1] * (ax.dim() - 1)))
                noise = torch.randn(ax.shape, generator=gen, dtype=ax.dtype, device=ax.device)
                inputs[sel] = rough_reconstruction(o, ax + rho * scale * noise).to(inputs.dtype)
        z_all = inputs
    # Initialisation and dropout draw from the global generator: seed them for the
    # run and restore the caller's state afterwards.
    with torch.random.fork_rng(devices=[x_all.device] if x_all.device.type == "cuda" else []):
        net = _network_for(ops[0], None, network_config, seed, x_all.dtype, x_all.device)
        net.train()
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        steps = epochs * ((num_images + batch_size - 1) // batch_size)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        bar = tqdm(total=steps, desc="pretrain DIP", disable=not progress, leave=False)
        for _ in range(epochs):
            perm = torch.randperm(num_images, generator=gen, device=x_all.device)
            for start in range(0, num_images, batch_size):
                idx = perm[start:start + batch_size]
                opt.zero_grad(set_to_none=True)
                loss = (net(z_all[idx]) - x_all[idx]).pow(2).mean()
                loss.backward()
                opt.step()
                sched.step()
                bar.update(1)
                if progress:
                    bar.set_postfix(loss=f"{float(loss.detach()):.3g}")
    bar.close()
    net.eval()
    return net
