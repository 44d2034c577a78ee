"""Every reconstruction method of ``bayes-recon reconstruct``, behind one call.

Method names are the library's own, so the command line reads like the API:

========================  =======================================================
family                    ``--method``
========================  =======================================================
classical                 ``fbp``, ``adjoint``, ``tikhonov``, ``tv``
SUPN prior, MAP           ``alternating``, ``jpmap``, ``csgm``, ``svi`` (needs ``--prior``)
SUPN prior, posterior     ``nuts``, ``laplace``, ``laplace-is`` (needs ``--prior``)
diffusion prior           ``dps``, ``diffpir`` (needs a diffusion ``--prior``,
                          e.g. ``digits-diffusion``)
hierarchical VAE prior    ``pnp-hvae`` (MAP), ``hvae-svi`` (posterior) (needs a
                          hierarchical ``--prior``, e.g. ``digits-hvae``)
learned denoiser          ``dae`` (``--problem denoise``; the shipped ``digits-dae``)
deep image prior          ``dip`` (point estimate), ``linearised-dip``,
                          ``mc-dropout-dip``, ``fixed-sigma-dip``
GMRF prior, posterior     ``gmrf`` (exact Gaussian posterior, evidence-fitted)
========================  =======================================================

:func:`run_method` takes a :class:`MethodSettings` (typed, validated) and
returns a :class:`MethodResult`: a point estimate and, for Bayesian methods, a
:class:`~bayes_recon.inference.Posterior`. This is the one registry of the
applications: ``bayes-recon reconstruct``, the demo (a list of named
``MethodSettings``, see :mod:`bayes_recon.app.demo`) and studies all run methods
through :func:`run_method`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .._validation import check_int, check_positive
from ..inference import (
    DIFFUSION_METHODS,
    MAP_METHODS,
    DiffPIRConfig,
    DPSConfig,
    SAMPLING_METHODS,
    GMRFConfig,
    HVAEMAPConfig,
    HVAEPosteriorConfig,
    LinearisedDIPConfig,
    MAPConfig,
    SamplingConfig,
    fit_dip,
    fixed_noise_posterior,
    gmrf_posterior,
    linearised_dip,
    map_estimate,
    mc_dropout_posterior,
    sample_posterior,
)
from ..models import UNetConfig
from ..operators import tikhonov, tv_reconstruction
from ..inference.dip import check_dip_init
from ..inference.linearised.pipeline import dip_tv_weight
from ..operators.classical import rough_noise_std

__all__ = [
    "CLASSICAL_METHODS", "SUPN_MAP_METHODS", "SUPN_POSTERIOR_METHODS", "DIP_METHODS",
    "PRIOR_METHODS", "POSTERIOR_METHODS", "DIFFUSION_METHODS", "HVAE_METHODS", "DENOISER_METHODS",
    "GMRF_METHODS", "ALL_METHODS",
    "NOISE_MODES",
    "ClassicalSettings", "MethodSettings", "MethodResult",
    "classical_reconstruction", "load_prior", "run_method",
]

CLASSICAL_METHODS = ("fbp", "adjoint", "tikhonov", "tv")
SUPN_MAP_METHODS = tuple(MAP_METHODS)
#: The hierarchical VAE's registry methods: PnP-HVAE's MAP and the SVI posterior.
HVAE_METHODS = ("pnp-hvae", "hvae-svi")
SUPN_POSTERIOR_METHODS = tuple(m for m in SAMPLING_METHODS
                               if m not in DIFFUSION_METHODS + HVAE_METHODS)
DIP_METHODS = ("dip", "linearised-dip", "mc-dropout-dip", "fixed-sigma-dip")
#: The SUPN paper's denoising baseline: a shipped denoising autoencoder.
DENOISER_METHODS = ("dae",)
#: The exact Gaussian posterior of a GMRF (Tikhonov-type) prior: no network, no checkpoint.
GMRF_METHODS = ("gmrf",)
#: Draws of a GMRF posterior when ``num_samples`` is None (as the DIP posteriors).
GMRF_DEFAULT_SAMPLES = 1000
#: Draws per chain of the diffusion samplers when ``num_samples`` is None.
DIFFUSION_DEFAULT_SAMPLES = 8
#: Draws per chain of ``hvae-svi`` when ``num_samples`` is None.
HVAE_DEFAULT_SAMPLES = 100
#: Methods that need ``--prior``: SUPN priors, a diffusion prior for DPS / DiffPIR, a
#: hierarchical VAE for PnP-HVAE / hvae-svi.
PRIOR_METHODS = SUPN_MAP_METHODS + SUPN_POSTERIOR_METHODS + DIFFUSION_METHODS + HVAE_METHODS
POSTERIOR_METHODS = (SUPN_POSTERIOR_METHODS + DIP_METHODS[1:] + GMRF_METHODS + DIFFUSION_METHODS
                     + HVAE_METHODS[1:])
ALL_METHODS = CLASSICAL_METHODS + PRIOR_METHODS + DIP_METHODS + GMRF_METHODS + DENOISER_METHODS
NOISE_MODES = ("known", "estimate")


@dataclass
class ClassicalSettings:
    """Relative weights of the classical baselines.

    Attributes
    ----------
    tikhonov_weight : float
        In units of ``||A||²``.
    tv_weight : float
        In units of ``σ · ||A||`` (data term ``½||Ax − y||²``).
    tv_iterations : int
    """

    tikhonov_weight: float = 0.01
    tv_weight: float = 0.05
    tv_iterations: int = 1000


@dataclass
class MethodSettings:
    """Everything ``reconstruct`` needs to run one method.

    Attributes
    ----------
    method : str
        One of :data:`ALL_METHODS`.
    noise : {"known", "estimate"}
        ``known``: the simulated σ is given to the method; ``estimate``: the
        method estimates it (SUPN: type-II ML of the collapsed evidence;
        linearised DIP and gmrf: the evidence; other methods: the RMS of the FBP
        residual, see :func:`bayes_recon.operators.rough_noise_std`).
    seed : int
        Seeds the inference (network initialisation, chains, restarts, draws).
    progress : bool
    classical : ClassicalSettings
    prior : str or None
        Shipped prior name or ``.safetensors`` path; required exactly for
        :data:`PRIOR_METHODS` (a diffusion prior for ``dps``/``diffpir``, a
        hierarchical VAE for ``pnp-hvae``/``hvae-svi``).
    map : MAPConfig
    sampling : SamplingConfig
    num_samples : int or None
        Draws per chain (SUPN posterior, diffusion samplers) or in total (DIP
        posteriors, gmrf); None takes 200 (SUPN), 8 (dps, diffpir), 100 (hvae-svi),
        ``dip.num_samples`` (DIP) or 1000 (gmrf).
    num_chains : int
        Chains of ``nuts``/``laplace``, independent runs groups of ``dps``/``diffpir``,
        independent SVI fits of ``hvae-svi``.
    dip : LinearisedDIPConfig
        DIP fit settings shared by every DIP method (``tv_weight``,
        ``tv_scale``, ``iterations``, ``lr``, ``input``, ``network``) and the
        linearised-DIP evidence settings.
    dropout : float
        Dropout probability of ``mc-dropout-dip``, in (0, 1).
    gmrf : GMRFConfig
        Evidence-search settings of ``gmrf`` (ridge, bounds, tolerance, pixel limit).
    dps, diffpir : DPSConfig, DiffPIRConfig
        Steps and guidance / regularisation of the diffusion samplers.
    hvae : HVAEMAPConfig
        PnP-HVAE's temperature, decoder scale, iterations and CG settings.
    hvae_posterior : HVAEPosteriorConfig
        ``hvae-svi``'s SVI settings (its ``start`` is replaced by ``hvae``).
    """

    method: str
    noise: str = "known"
    seed: int = 0
    progress: bool = True
    classical: ClassicalSettings = field(default_factory=ClassicalSettings)
    prior: str | None = None
    map: MAPConfig = field(default_factory=MAPConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    num_samples: int | None = None
    num_chains: int = 2
    dip: LinearisedDIPConfig = field(default_factory=LinearisedDIPConfig)
    dropout: float = 0.1
    gmrf: GMRFConfig = field(default_factory=GMRFConfig)
    dps: DPSConfig = field(default_factory=DPSConfig)
    diffpir: DiffPIRConfig = field(default_factory=DiffPIRConfig)
    hvae: HVAEMAPConfig = field(default_factory=HVAEMAPConfig)
    hvae_posterior: HVAEPosteriorConfig = field(default_factory=HVAEPosteriorConfig)

    def __post_init__(self):
        if self.method not in ALL_METHODS:
            raise ValueError(f"--method must be one of {list(ALL_METHODS)}, got {self.method!r}")
        if self.noise not in NOISE_MODES:
            raise ValueError(f"--noise-std must be one of {list(NOISE_MODES)}, got {self.noise!r}")
        check_int("--seed", self.seed, minimum=0)
        if self.method in PRIOR_METHODS and self.prior is None:
            raise ValueError(f"--prior is required for method {self.method!r}: a shipped prior "
                             "name or a .safetensors checkpoint")
        if self.method not in PRIOR_METHODS and self.prior is not None:
            raise ValueError(f"--prior is only used by the prior methods {list(PRIOR_METHODS)}, "
                             f"not by method {self.method!r}")
        self._check_dip_init()
        check_int("--num-chains", self.num_chains, minimum=1)
        if self.num_samples is not None:
            check_int("--num-samples", self.num_samples, minimum=1)
            # Posteriors need two draws for a standard deviation.
            chains = (self.num_chains if self.method in SUPN_POSTERIOR_METHODS + DIFFUSION_METHODS
                      + HVAE_METHODS else 1)
            if self.method in POSTERIOR_METHODS and self.num_samples * chains < 2:
                raise ValueError(f"--num-samples must give at least 2 draws in total for "
                                 f"{self.method!r}, got {self.num_samples} x {chains} chain(s)")
        if not 0 < self.dropout < 1:
            raise ValueError(f"--dropout must lie in (0, 1), got {self.dropout}")

    def record(self) -> dict:
        """The settings that matter for ``method``, JSON-ready (for ``metrics.json``)."""
        rec = {"method": self.method, "noise_std_mode": self.noise, "seed": self.seed}
        if self.method in CLASSICAL_METHODS:
            rec["classical"] = dataclasses.asdict(self.classical)
        elif self.method in PRIOR_METHODS:
            rec["prior"] = self.prior
            if self.method in SUPN_MAP_METHODS:
                rec["map_config"] = dataclasses.asdict(self.map)
            elif self.method in DIFFUSION_METHODS:
                rec.update(num_samples=self.diffusion_samples, num_chains=self.num_chains,
                           **{f"{self.method}_config": dataclasses.asdict(self.diffusion_config)})
            elif self.method == "pnp-hvae":
                rec["hvae_config"] = dataclasses.asdict(self.hvae)
            elif self.method == "hvae-svi":
                rec.update(num_samples=self.hvae_samples, num_chains=self.num_chains,
                           hvae_posterior_config=dataclasses.asdict(self.hvae_svi_config))
            else:
                rec.update(num_samples=self.supn_samples, num_chains=self.num_chains,
                           sampling_config=dataclasses.asdict(self.sampling))
        elif self.method in DENOISER_METHODS:
            rec["denoiser"] = "digits-dae"
        elif self.method in GMRF_METHODS:
            rec.update(num_samples=self.gmrf_samples, gmrf_config=dataclasses.asdict(self.gmrf))
        else:
            rec["dip_config"] = dataclasses.asdict(dataclasses.replace(self.dip, init=None))
            init = self.dip.init  # a module is recorded by its class name (a record is JSON)
            rec["dip_config"]["init"] = (None if init is None else str(init)
                                         if isinstance(init, (str, os.PathLike)) else type(init).__name__)
            if self.method != "dip":
                rec["num_samples"] = self.dip_samples
            if self.method == "mc-dropout-dip":
                rec["dropout"] = self.dropout
        return rec

    def _check_dip_init(self):
        init = self.dip.init
        if init is None:
            return
        if self.method not in DIP_METHODS or self.method == "mc-dropout-dip":
            # mc-dropout-dip trains its own network with dropout layers; a pretrained one has none.
            raise ValueError(f"--dip-init is only used by the methods dip, linearised-dip and "
                             f"fixed-sigma-dip, not by method {self.method!r}")
        try:
            check_dip_init(init)
        except (TypeError, ValueError) as err:
            raise type(err)(f"--dip-init: {err}") from None

    @property
    def supn_samples(self) -> int:
        return 200 if self.num_samples is None else self.num_samples

    @property
    def diffusion_samples(self) -> int:
        return DIFFUSION_DEFAULT_SAMPLES if self.num_samples is None else self.num_samples

    @property
    def diffusion_config(self):
        """The :class:`DPSConfig` or :class:`DiffPIRConfig` of ``method``."""
        return self.dps if self.method == "dps" else self.diffpir

    @property
    def hvae_samples(self) -> int:
        return HVAE_DEFAULT_SAMPLES if self.num_samples is None else self.num_samples

    @property
    def hvae_svi_config(self) -> HVAEPosteriorConfig:
        """``hvae_posterior`` started from the PnP-HVAE run of ``hvae``."""
        return dataclasses.replace(self.hvae_posterior, start=self.hvae)

    @property
    def dip_samples(self) -> int:
        return self.dip.num_samples if self.num_samples is None else self.num_samples

    @property
    def gmrf_samples(self) -> int:
        return GMRF_DEFAULT_SAMPLES if self.num_samples is None else self.num_samples


@dataclass
class MethodResult:
    """Output of :func:`run_method`.

    Attributes
    ----------
    x : torch.Tensor
        ``(1, C, H, W)``: the point estimate, or the posterior mean.
    posterior : Posterior or None
    point_estimate : torch.Tensor or None
        ``(1, C, H, W)`` fit/MAP a posterior is built around (DIP methods).
    noise_std : float or None
        The σ the method used (given or estimated); None if it used none.
    info : dict
        Method diagnostics (convergence, timings, evidence), JSON-ready.
    """

    x: torch.Tensor
    posterior: object | None = None
    point_estimate: torch.Tensor | None = None
    noise_std: float | None = None
    info: dict = field(default_factory=dict)


def classical_reconstruction(method: str, op, y: torch.Tensor, noise_std: float,
                             tikhonov_weight: float, tv_weight: float, tv_iterations: int,
                             progress: bool):
    """Run one classical method; returns ``(B, C, H, W)``.

    Weights are relative: Tikhonov ``weight · ||A||²``, TV ``weight · σ · ||A||``,
    so one default works across problem sizes and noise levels.
    """
    if method == "fbp":
        if not hasattr(op, "fbp"):
            raise ValueError(f"method 'fbp' needs a CT problem, got {type(op).__name__}")
        return op.fbp(y)
    if method == "adjoint":
        return op.adjoint(y)
    if method == "tikhonov":
        return tikhonov(op, y, weight=tikhonov_weight * op.norm() ** 2)
    if method == "tv":
        return tv_reconstruction(op, y, weight=tv_weight * noise_std * op.norm(),
                                 iterations=tv_iterations, progress=progress)
    raise ValueError(f"method must be one of {list(CLASSICAL_METHODS)}, got {method!r}")


def load_prior(spec: str, size: int | None = None):
    """A SUPN, diffusion or hierarchical VAE prior from a shipped name or a ``.safetensors`` path.

    The kind is read from the checkpoint (its JSON names the class). Raises
    ``ValueError`` naming ``--prior`` when the name is unknown, the file is
    missing or corrupt, or the prior's ``image_size`` differs from ``size``.
    """
    import json

    from ..models import (SUPNVAE, DiffusionUNet, HierarchicalVAE, available_diffusion_priors,
                          available_hvae_priors, available_priors, load_pretrained,
                          load_pretrained_diffusion, load_pretrained_hvae)

    names = available_priors() + available_diffusion_priors() + available_hvae_priors()
    if spec in available_priors():
        prior = load_pretrained(spec)
    elif spec in available_diffusion_priors():
        prior = load_pretrained_diffusion(spec)
    elif spec in available_hvae_priors():
        prior = load_pretrained_hvae(spec)
    elif spec.endswith(".safetensors"):
        if not Path(spec).is_file():
            raise ValueError(f"--prior checkpoint {spec} does not exist")
        try:
            meta_path = Path(spec).with_suffix(".json")
            kind = json.loads(meta_path.read_text()).get("class") if meta_path.is_file() else None
            cls = {"DiffusionUNet": DiffusionUNet, "HierarchicalVAE": HierarchicalVAE}.get(kind, SUPNVAE)
            prior = cls.load(spec).eval()
        except (ValueError, AttributeError) as err:
            raise ValueError(f"--prior {spec}: {err}") from None
    else:
        raise ValueError(f"--prior must be one of {names} or a path to a .safetensors "
                         f"checkpoint saved with save_model, got {spec!r}")
    if isinstance(prior, HierarchicalVAE):  # fully convolutional: any size that tiles
        if size is not None and not prior.supports_shape((prior.config.channels, size, size)):
            raise ValueError(f"--prior {spec} runs on images whose sides are multiples of "
                             f"{list(prior.config.factors)}, but --size is {size}")
    elif size is not None and prior.config.image_size != size:
        raise ValueError(f"--prior {spec} models {prior.config.image_size}x"
                         f"{prior.config.image_size} images but --size is {size}; pass "
                         f"--size {prior.config.image_size}")
    return prior


def _run_diffusion(s: MethodSettings, op, y, noise_std, prior) -> MethodResult:
    from ..models import DiffusionPrior

    if not isinstance(prior, DiffusionPrior):
        raise ValueError(f"method {s.method!r} needs a diffusion prior (e.g. --prior "
                         f"digits-diffusion), got a {type(prior).__name__}")
    post = sample_posterior(y, op, prior, noise_std, method=s.method,
                            num_samples=s.diffusion_samples, num_chains=s.num_chains, seed=s.seed,
                            config=s.diffusion_config, progress=s.progress)
    info = {"steps": post.extras["steps"], "seconds_per_sample": post.extras["seconds_per_sample"],
            "mean_data_misfit": float(post.sample_stats["data_misfit"].mean())}
    if s.method == "diffpir":
        info.update(cg_converged=post.extras["cg_converged"],
                    cg_max_residual=post.extras["cg_max_residual"])
    return MethodResult(post.mean[None], posterior=post, noise_std=post.noise_std, info=info)


def _run_hvae(s: MethodSettings, op, y, noise_std, prior) -> MethodResult:
    from ..models import HierarchicalVAE

    if not isinstance(prior, HierarchicalVAE):
        raise ValueError(f"method {s.method!r} needs a hierarchical VAE prior (e.g. --prior "
                         f"digits-hvae), got a {type(prior).__name__}")
    if s.method == "pnp-hvae":
        rec = map_estimate(y, op, prior, noise_std, method="pnp-hvae", config=s.hvae,
                           progress=s.progress)
        info = {"converged": rec.converged, "iterations": len(rec.objective_history),
                "final_objective": rec.objective_history[-1], "contraction": rec.contraction,
                "cg_converged": rec.cg_converged, "temperature": list(rec.temperature)}
        return MethodResult(rec.x.detach(), noise_std=rec.noise_std, info=info)
    post = sample_posterior(y, op, prior, noise_std, method="hvae-svi", num_samples=s.hvae_samples,
                            num_chains=s.num_chains, seed=s.seed, config=s.hvae_svi_config,
                            progress=s.progress)
    info = {"final_elbo": [h[-1] for h in post.extras["elbo_history"]],
            "x_converged": post.extras["x_converged"],
            "mean_data_misfit": float(post.sample_stats["data_misfit"].mean())}
    return MethodResult(post.mean[None], posterior=post, noise_std=post.noise_std, info=info)


def _run_supn(s: MethodSettings, op, y, noise_std, prior) -> MethodResult:
    from ..models import DiffusionPrior, HierarchicalVAE

    if isinstance(prior, (DiffusionPrior, HierarchicalVAE)):
        kind, methods = (("diffusion", "dps or diffpir") if isinstance(prior, DiffusionPrior)
                         else ("hierarchical VAE", "pnp-hvae or hvae-svi"))
        raise ValueError(f"method {s.method!r} needs a SUPN prior (e.g. --prior digits-supn), "
                         f"got a {kind} prior; {kind} priors run with {methods}")
    if s.method in SUPN_MAP_METHODS:
        cfg = dataclasses.replace(s.map, seed=s.seed)
        rec = map_estimate(y, op, prior, noise_std, method=s.method, config=cfg,
                           progress=s.progress)
        info = {"converged": rec.converged, "outer_iterations": len(rec.objective_history),
                "final_objective": rec.objective_history[-1] if rec.objective_history else None}
        return MethodResult(rec.x.detach(), noise_std=rec.noise_std, info=info)
    post = sample_posterior(y, op, prior, noise_std, method=s.method,
                            num_samples=s.supn_samples, num_chains=s.num_chains, seed=s.seed,
                            config=s.sampling, progress=s.progress)
    info = {"x_converged": bool(post.extras.get("x_converged", True))}
    return MethodResult(post.mean[None], posterior=post, noise_std=post.noise_std, info=info)


def _dip_fit_key(s: MethodSettings, network: UNetConfig, noise_std) -> tuple:
    """What determines a DIP fit: methods with equal keys may share one fit."""
    cfg = s.dip
    init = cfg.init if cfg.init is None or isinstance(cfg.init, str) else id(cfg.init)
    return ("dip_fit", cfg.tv_weight, cfg.tv_scale, cfg.iterations, cfg.lr, cfg.input,
            repr(network), init, s.seed, noise_std)


def _dip_fit(s: MethodSettings, op, y, noise_std, network: UNetConfig, cache: dict | None):
    key = _dip_fit_key(s, network, noise_std)
    if cache is not None and key in cache:
        return cache[key], True
    cfg = s.dip
    weight = dip_tv_weight(cfg, op, y, noise_std)  # the rule linearised_dip uses
    fit = fit_dip(y, op, weight, cfg.iterations, lr=cfg.lr, input=cfg.input, seed=s.seed,
                  init=cfg.init, network_config=network, progress=s.progress)
    if cache is not None:
        cache[key] = fit
    return fit, False


def _run_dip(s: MethodSettings, op, y, noise_std, cache: dict | None) -> MethodResult:
    if s.method == "linearised-dip":
        cfg = dataclasses.replace(s.dip, num_samples=s.dip_samples)
        res = linearised_dip(y, op, noise_std, cfg, seed=s.seed, progress=s.progress)
        if cache is not None:  # the DIP baselines with the same settings reuse this fit
            cache[_dip_fit_key(s, s.dip.network, noise_std)] = res.fit
        post = res.posterior
        info = {"log_evidence": res.evidence.log_evidence,
                "evidence_converged": res.evidence.converged,
                "evidence_iterations": res.evidence.iterations,
                "evidence_stop_reason": res.evidence.stop_reason,
                "dip_best_iteration": res.fit.best_iteration,
                # The bootstrap's factor, and the one applied (max(bootstrap_min_scale, factor)).
                "bootstrap_factor": None if res.bootstrap is None else res.bootstrap.scale,
                "std_scale": res.posterior.extras.get("std_scale"),
                # The image-space discrepancy τ fitted on held-out measurements ("heldout").
                "discrepancy_std": None if res.discrepancy is None else res.discrepancy.std,
                "timings_s": dict(res.timings)}
        return MethodResult(post.mean[None], posterior=post, point_estimate=res.fit.x,
                            noise_std=post.noise_std, info=info)
    network = s.dip.network
    if s.method == "mc-dropout-dip":
        network = dataclasses.replace(network, dropout=s.dropout)
    fit, shared = _dip_fit(s, op, y, noise_std, network, cache)
    info = {"dip_best_iteration": fit.best_iteration, "dip_best_loss": fit.best_loss,
            "tv_weight": fit.tv_weight, "dip_seconds": 0.0 if shared else fit.seconds,
            "dip_fit_shared": shared}
    if s.method == "dip":
        return MethodResult(fit.x, noise_std=noise_std, info=info)
    if s.method == "mc-dropout-dip":
        post = mc_dropout_posterior(fit, s.dip_samples, seed=s.seed)
    else:
        post = fixed_noise_posterior(fit, op, s.dip_samples, seed=s.seed)
        info["image_std"] = float(post.extras["image_std"])
    return MethodResult(post.mean[None], posterior=post, point_estimate=fit.x,
                        noise_std=noise_std, info=info)


def _run_gmrf(s: MethodSettings, op, y, noise_std) -> MethodResult:
    res = gmrf_posterior(y, op, noise_std, s.gmrf, num_samples=s.gmrf_samples, seed=s.seed,
                         progress=s.progress)
    post = res.posterior
    info = {"log_evidence": res.log_evidence, "evidence_converged": res.converged,
            "evidence_stop_reason": res.stop_reason, "evidence_iterations": res.iterations,
            "alpha": res.alpha, "prior_mean": res.prior_mean, "jitter": res.jitter,
            "seconds": res.seconds}
    return MethodResult(post.mean[None], posterior=post, noise_std=res.noise_std, info=info)


def _run_dae(op, y, name: str = "digits-dae") -> MethodResult:
    """The shipped DAE applied to ``y``: defined for denoising (``A = I``) at its image size."""
    from ..models import load_pretrained_dae
    from ..operators import Identity

    if not isinstance(op, Identity):
        raise ValueError(f"method 'dae' is a denoiser: it needs --problem denoise (an Identity "
                         f"operator), got {type(op).__name__}")
    dae = load_pretrained_dae(name)
    c = dae.config
    if tuple(op.domain_shape) != (c.channels, c.image_size, c.image_size):
        raise ValueError(f"method 'dae' ({name}) denoises {c.image_size}x{c.image_size} images "
                         f"but the problem's images are {tuple(op.domain_shape)}; pass --size "
                         f"{c.image_size}")
    dtype = next(dae.parameters()).dtype
    with torch.no_grad():
        x = dae(y.to(dtype)).to(y.dtype)
    return MethodResult(x, info={"denoiser": name, **{k: dae.metadata.get(k) for k in
                                                      ("epochs", "noise_std")}})


def run_method(settings: MethodSettings, op, y: torch.Tensor, noise_std: float,
               prior=None, cache: dict | None = None) -> MethodResult:
    """Run ``settings.method`` on one measurement.

    Parameters
    ----------
    settings : MethodSettings
    op : LinearOperator
    y : torch.Tensor
        ``(1, *op.range_shape)``.
    noise_std : float
        The simulated σ; passed on when ``settings.noise == "known"``.
    prior : SUPNVAE, optional
        Required for :data:`PRIOR_METHODS` (see :func:`load_prior`).
    cache : dict, optional
        Shared between calls on the *same* measurement: a DIP fit made by one
        DIP method (e.g. ``linearised-dip``) is reused by another with the same
        DIP settings and seed (``fixed-sigma-dip``), as in the papers' tables.

    Returns
    -------
    MethodResult
    """
    if not isinstance(settings, MethodSettings):
        raise TypeError(f"settings must be a MethodSettings, got {type(settings).__name__}")
    s = settings
    given = float(noise_std) if s.noise == "known" else None
    if s.method in CLASSICAL_METHODS:
        sigma = given if given is not None else check_positive("estimated noise_std",
                                                                rough_noise_std(op, y))
        c = s.classical
        x = classical_reconstruction(s.method, op, y, sigma, c.tikhonov_weight, c.tv_weight,
                                     c.tv_iterations, s.progress)
        return MethodResult(x.detach(), noise_std=sigma if s.method == "tv" else None)
    if s.method in DENOISER_METHODS:
        return _run_dae(op, y)
    if s.method in PRIOR_METHODS:
        if prior is None:
            raise ValueError(f"prior is required for method {s.method!r} (see load_prior)")
        if s.method in DIFFUSION_METHODS:
            sigma = given if given is not None else check_positive("estimated noise_std",
                                                                    rough_noise_std(op, y))
            return _run_diffusion(s, op, y, sigma, prior)
        if s.method in HVAE_METHODS:
            sigma = given if given is not None else check_positive("estimated noise_std",
                                                                    rough_noise_std(op, y))
            return _run_hvae(s, op, y, sigma, prior)
        return _run_supn(s, op, y, given, prior)
    if s.method in GMRF_METHODS:
        return _run_gmrf(s, op, y, given)
    return _run_dip(s, op, y, given, cache)
