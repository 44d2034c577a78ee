"""MAP reconstruction with a SUPN prior: ``alternating``, ``jpmap``, ``csgm``, ``svi``.

All minimise (over ``x`` and ``z``, or ``z`` alone for ``csgm``) the joint
objective of the program ``z → x → y``,

    J(x, z) = ‖A x − y‖² / (2σ²) − log p(x | z) + ‖z‖² / (2T²),

i.e. the data term plus the generative regulariser of Duff et al.,
``R(x) = min_z −log p(x|z) + ½‖z‖²``. They stop when the relative change of
``J`` between outer iterations falls below ``tol`` (``converged=True``) or at
``max_iterations`` (``converged=False``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pyro
import pyro.optim
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoDelta
from pyro.infer.autoguide.initialization import init_to_value
from tqdm.auto import tqdm

from .._validation import check_choice, check_int, check_positive
from ..models.exact_conditional import GaussianImagePosterior, XSolverConfig
from ..models.marginal import SLQConfig, decode64
from ..models.program import check_reconstruction_inputs, reconstruction_model, squared_residual
from ._rng import pyro_seed
from .latent_map import collapsed_map, gradient_descent, initial_latent, lbfgs

__all__ = ["MAP_METHODS", "MAPConfig", "Reconstruction", "map_estimate", "joint_objective"]

MAP_METHODS = ("alternating", "jpmap", "csgm", "svi")


@dataclass
class MAPConfig:
    """Settings of :func:`map_estimate`.

    Attributes
    ----------
    max_iterations : int
        Outer iterations (x/z alternations; restarts' L-BFGS rounds for
        ``csgm``; ``svi`` runs ``10 × max_iterations`` SVI steps).
    tol : float
        Stop when ``|ΔJ| / max(|J|, 1)`` between outer iterations is below ``tol``.
    z_steps : int
        L-BFGS iterations (strong-Wolfe line search) per z-step.
    x_steps : int
        Gradient steps (Barzilai–Borwein + Armijo backtracking) per x-step of ``alternating``.
    restarts : int
        Starts of ``csgm``: the encoder's guess plus ``restarts − 1`` draws from N(0, I).
    lr : float
        Adam learning rate of ``svi``.
    x_solver : XSolverConfig
        The closed-form x-step of ``jpmap`` (Cholesky or CG, float64;
        ``"condition"`` is refused, it ignores σ).
    temperature : float
        Latent prior scale ``T``.
    evidence : str
        Collapsed-likelihood path (``"auto"``, ``"dense"``, ``"slq"``) used to
        estimate σ when ``noise_std`` is None.
    seed : int
    """

    max_iterations: int = 30
    tol: float = 1e-5
    z_steps: int = 20
    x_steps: int = 20
    restarts: int = 4
    lr: float = 0.02
    x_solver: XSolverConfig = field(default_factory=XSolverConfig)
    temperature: float = 1.0
    evidence: str = "auto"
    slq: SLQConfig = field(default_factory=SLQConfig)
    seed: int = 0

    def __post_init__(self):
        check_int("max_iterations", self.max_iterations, minimum=1)
        check_positive("tol", self.tol)
        check_int("z_steps", self.z_steps, minimum=1)
        check_int("x_steps", self.x_steps, minimum=1)
        check_int("restarts", self.restarts, minimum=1)
        check_positive("lr", self.lr)
        check_positive("temperature", self.temperature)
        check_int("seed", self.seed, minimum=0)


@dataclass
class Reconstruction:
    """A MAP estimate.

    Attributes
    ----------
    x : torch.Tensor
        ``(B, C, H, W)`` image estimate, in the prior's dtype.
    z : torch.Tensor
        ``(B, latent_dim)`` latent estimate.
    objective_history : list of float
        ``J`` (summed over the batch) after each outer iteration (``svi``: its loss).
    converged : bool
        True when the relative-change criterion stopped the run (and every CG
        solve reached its tolerance); False when ``max_iterations`` did.
    method : str
    noise_std : float
        The σ used (the type-II estimate when ``noise_std=None`` was passed).
    """

    x: torch.Tensor
    z: torch.Tensor
    objective_history: list
    converged: bool
    method: str = ""
    noise_std: float = float("nan")

    def __repr__(self) -> str:
        # The dataclass default prints x and z in full: pages of numbers in a notebook.
        def shape(t):
            return tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__

        return (f"Reconstruction(method={self.method!r}, x_shape={shape(self.x)}, "
                f"z_shape={shape(self.z)}, converged={self.converged}, "
                f"iterations={len(self.objective_history)}, noise_std={self.noise_std:.4g})")


def joint_objective(x, z, y, op, prior, noise_std, temperature: float = 1.0) -> torch.Tensor:
    """``J(x, z)`` per measurement, ``(B,)`` float64."""
    x64, z64 = x.to(torch.float64), z.to(torch.float64)
    data = squared_residual(y.to(torch.complex128 if y.is_complex() else torch.float64), op, x64)
    return (0.5 * data / noise_std**2 - decode64(prior, z64).log_prob(x64)
            + 0.5 * z64.square().sum(-1) / temperature**2)


def _rel_change(prev: float, new: float) -> float:
    return abs(prev - new) / max(abs(new), 1.0)


class _Loop:
    """Outer-iteration bookkeeping: history, relative-change stop, progress bar."""

    def __init__(self, cfg: MAPConfig, progress: bool, desc: str):
        self.cfg, self.history, self.converged = cfg, [], False
        self.bar = tqdm(total=cfg.max_iterations, desc=desc, disable=not progress, leave=False)

    def record(self, value: float) -> bool:
        """Append ``value``; True when the run should stop."""
        self.history.append(float(value))
        self.bar.update(1)
        self.bar.set_postfix(J=f"{value:.4g}")
        if len(self.history) > 1 and _rel_change(self.history[-2], self.history[-1]) < self.cfg.tol:
            self.converged = True
        done = self.converged or len(self.history) >= self.cfg.max_iterations
        if done:
            self.bar.close()
        return done


def _alternating(y, op, prior, sigma, cfg, progress, z0):
    t = cfg.temperature
    z = z0.to(torch.float64)
    with torch.no_grad():
        x = decode64(prior, z).loc
    loop = _Loop(cfg, progress, "alternating MAP")
    while True:
        x = gradient_descent(lambda v: joint_objective(v, z, y, op, prior, sigma, t).sum(), x, cfg.x_steps)
        z = lbfgs(lambda v: joint_objective(x, v, y, op, prior, sigma, t).sum(), z, cfg.z_steps)
        with torch.no_grad():
            value = float(joint_objective(x, z, y, op, prior, sigma, t).sum())
        if loop.record(value):
            return x, z, loop.history, loop.converged


def _jpmap(y, op, prior, sigma, cfg, progress, z0):
    t = cfg.temperature
    z = z0.to(torch.float64)
    cg_ok = True

    def x_step(z):
        post = GaussianImagePosterior(decode64(prior, z), y, op, sigma, cfg.x_solver)
        x = post.mean.to(torch.float64)
        return x, post.converged

    with torch.no_grad():
        x, ok = x_step(z)
    cg_ok &= ok
    enc_dtype = next(prior.parameters()).dtype
    loop = _Loop(cfg, progress, "JPMAP")
    with torch.no_grad():
        current = float(joint_objective(x, z, y, op, prior, sigma, t).sum())
    while True:
        def f(v):
            return joint_objective(x, v, y, op, prior, sigma, t).sum()

        # z-step: from the current z and from the encoder of the current x; keep the better.
        with torch.no_grad():
            z_enc = prior.encode(x.to(enc_dtype)).loc.to(torch.float64)
        best, best_val = z, current
        for start in (z, z_enc):
            cand = lbfgs(f, start, cfg.z_steps)
            val = float(f(cand).detach())
            if val < best_val:
                best, best_val = cand, val
        z = best  # accepted only when it lowers J (else z is unchanged)
        with torch.no_grad():
            x, ok = x_step(z)  # exact minimiser in x: never raises J
        cg_ok &= ok
        with torch.no_grad():
            current = float(joint_objective(x, z, y, op, prior, sigma, t).sum())
        if loop.record(current):  # J at (x, z): also the next z-step's baseline
            return x, z, loop.history, loop.converged and cg_ok


def _csgm(y, op, prior, sigma, cfg, progress, z0):
    t = cfg.temperature
    gen = torch.Generator().manual_seed(cfg.seed)
    starts = [z0.to(torch.float64)]
    for _ in range(cfg.restarts - 1):
        starts.append(t * torch.randn(z0.shape, generator=gen, dtype=torch.float64).to(z0.device))
    y64 = y.to(torch.complex128 if y.is_complex() else torch.float64)
    dtype = next(prior.parameters()).dtype

    def f_batch(v):
        data = squared_residual(y64, op, prior.decode_mean(v.to(dtype)).to(torch.float64))
        return 0.5 * data / sigma**2 + 0.5 * v.square().sum(-1) / t**2

    best_z, best_val, best_hist, best_conv = None, None, None, False
    for start in tqdm(starts, desc="CSGM restarts", disable=not progress, leave=False):
        loop, z = _Loop(cfg, False, "CSGM"), start
        while True:
            z = lbfgs(lambda v: f_batch(v).sum(), z, cfg.z_steps)
            with torch.no_grad():
                vals = f_batch(z)
            if loop.record(float(vals.sum())):
                break
        if best_z is None:
            best_z, best_val, best_hist, best_conv = z, vals, loop.history, loop.converged
        else:  # keep the best start per measurement
            better = vals < best_val
            best_z = torch.where(better[:, None], z, best_z)
            best_val = torch.minimum(vals, best_val)
            if bool(better.all()):
                best_hist, best_conv = loop.history, loop.converged
    with torch.no_grad():
        x = prior.decode_mean(best_z.to(dtype))
    return x, best_z, best_hist, best_conv


def _svi(y, op, prior, sigma, cfg, progress, z0):
    dtype = next(prior.parameters()).dtype
    y_model = y.to(torch.complex64 if dtype == torch.float32 and y.is_complex() else
                   (dtype if not y.is_complex() else torch.complex128))
    with torch.no_grad():
        x0 = prior.decode_mean(z0.to(dtype))
    steps = 10 * cfg.max_iterations
    with pyro_seed(cfg.seed), pyro.get_param_store().scope():
        guide = AutoDelta(reconstruction_model,
                          init_loc_fn=init_to_value(values={"z": z0.to(dtype), "x": x0}))
        svi = SVI(reconstruction_model, guide, pyro.optim.Adam({"lr": cfg.lr}), Trace_ELBO())
        losses, converged, window = [], False, 20
        for _ in tqdm(range(steps), desc="SVI MAP", disable=not progress, leave=False):
            losses.append(svi.step(y_model, op, prior, sigma, cfg.temperature))
            if len(losses) >= 2 * window:
                a = sum(losses[-2 * window:-window]) / window
                b = sum(losses[-window:]) / window
                if _rel_change(a, b) < cfg.tol:
                    converged = True
                    break
        with torch.no_grad():
            med = guide.median(y_model, op, prior, sigma, cfg.temperature)
    return med["x"].detach(), med["z"].detach(), losses, converged


_METHODS = {"alternating": _alternating, "jpmap": _jpmap, "csgm": _csgm, "svi": _svi}


def map_estimate(y: torch.Tensor, op, prior, noise_std: float | None, method: str = "jpmap",
                 config: MAPConfig | None = None, progress: bool = True, *,
                 temperature=None) -> Reconstruction:
    """MAP reconstruction of ``x`` (and ``z``) from ``y = A x + N(0, σ² I)`` with a learned prior.

    With a hierarchical VAE prior (``method="pnp-hvae"`` or ``"hvae-adam"``)
    this is :func:`~bayes_recon.inference.hvae.hvae_map_estimate` (``config``
    an ``HVAEMAPConfig``, ``temperature`` τ in (0, 1] or one per group, σ
    required); the rest of this docstring is about SUPN priors.

    Parameters
    ----------
    y : torch.Tensor
        ``(B, *op.range_shape)``, real or complex as the operator.
    op : LinearOperator
    prior : SUPNVAE
        Structured, diagonal or identity covariance.
    noise_std : float or None
        σ > 0; None estimates it first by type-II maximum likelihood of the
        collapsed evidence jointly with the MAP of ``z``.
    method : {"alternating", "jpmap", "csgm", "svi", "pnp-hvae", "hvae-adam"}
        ``"alternating"``: gradient x-steps (Barzilai–Borwein + backtracking)
        and L-BFGS z-steps on ``J``, from the encoder of a rough
        reconstruction. ``"jpmap"``: closed-form x-step
        ``(AᵀA/σ² + Λ(z)) x = Aᵀy/σ² + Λ(z)μ(z)`` (Cholesky or CG, float64)
        and a z-step started from both the current z and the encoder, accepted
        only if it lowers ``J``. ``"csgm"``: range constraint ``x = μ(z)``
        (Bora et al. 2017) with restarts, best kept. ``"svi"``: Pyro ``SVI``
        with ``AutoDelta`` on :func:`~bayes_recon.models.reconstruction_model`.
    config : MAPConfig, optional
    progress : bool
        Show a tqdm progress bar.
    temperature : float, optional
        Overrides ``config.temperature`` (the latent prior scale ``T``).

    Returns
    -------
    Reconstruction

    Examples
    --------
    >>> import torch
    >>> from bayes_recon.models.supn_vae import SUPNVAE
    >>> from bayes_recon.operators import Identity
    >>> vae = SUPNVAE(image_size=8, latent_dim=2, widths=(4,), radius=1)
    >>> rec = map_estimate(torch.zeros(1, 1, 8, 8), Identity((1, 8, 8)), vae, 0.1,
    ...                    method="jpmap", config=MAPConfig(max_iterations=2), progress=False)
    >>> rec.x.shape, rec.z.shape, len(rec.objective_history)
    (torch.Size([1, 1, 8, 8]), torch.Size([1, 2]), 2)
    """
    from .hvae import HVAE_MAP_METHODS, hvae_map_estimate  # hvae builds on this module

    check_choice("method", method, MAP_METHODS + HVAE_MAP_METHODS)
    if method in HVAE_MAP_METHODS:
        if noise_std is None:
            raise ValueError(f"noise_std must be given for method={method!r} (σ is not estimated)")
        return hvae_map_estimate(y, op, prior, noise_std, method, config, temperature, progress)
    check_reconstruction_inputs(y, op, prior, 1.0 if noise_std is None else noise_std)
    cfg = MAPConfig() if config is None else config
    if not isinstance(cfg, MAPConfig):
        raise TypeError(f"config must be a MAPConfig, got {type(cfg).__name__}")
    if temperature is not None:
        cfg = dataclasses.replace(cfg, temperature=check_positive("temperature", temperature))
    if method == "jpmap" and cfg.x_solver.solver == "condition":
        # The σ → 0 conditional is not the minimiser of J at σ > 0: the x-step could raise J.
        raise ValueError(
            "config.x_solver.solver='condition' (the noise-free limit σ → 0) is not the exact "
            "x-step of jpmap at noise_std > 0; use 'auto', 'cholesky' or 'cg'"
        )
    z0 = initial_latent(y, op, prior)
    if noise_std is None:
        fit = collapsed_map(y, op, prior, None, z0=z0, temperature=cfg.temperature,
                            method=cfg.evidence, slq=cfg.slq, steps=5 * cfg.z_steps)
        sigma, z0 = fit.noise_std, fit.z
    else:
        sigma = float(noise_std)
    x, z, history, converged = _METHODS[method](y, op, prior, sigma, cfg, progress, z0)
    dtype = next(prior.parameters()).dtype
    return Reconstruction(x=x.detach().to(dtype), z=z.detach().to(dtype), objective_history=history,
                          converged=bool(converged), method=method, noise_std=sigma)
