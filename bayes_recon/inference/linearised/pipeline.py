"""One call from a measurement to linearised-DIP posterior samples (the CLI's entry point)."""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import torch

from ..._validation import check_choice, check_int, check_positive, check_probability
from ...models.unet import UNetConfig
from ...operators.base import LinearOperator
from ...operators.classical import rough_noise_std
from ...operators.holdout import HOLDOUT_SCHEMES, split_measurements
from ..bootstrap_scale import BootstrapScale, bootstrap_std_scale
from ..dip import DIPFit, fit_dip, load_dip_init
from ...posterior import Posterior
from .config import EvidenceResult, LaplaceConfig
from .discrepancy import DiscrepancyFit, DiscrepancyModel, fit_discrepancy
from .laplace import LinearisedLaplace

__all__ = ["LinearisedDIPConfig", "LinearisedDIPResult", "dip_tv_weight", "linearised_dip"]

CALIBRATIONS = ("heldout", "bootstrap", "none")


@dataclass
class LinearisedDIPConfig:
    """Settings of :func:`linearised_dip` (defaults: the 28x28 sparse-view CT protocol).

    Attributes
    ----------
    tv_weight : float or None
        TV weight ``γ`` of the DIP loss; None uses ``tv_scale · σ_y`` with
        ``σ_y`` the noise level (given, or estimated from the FBP residual).
    tv_scale : float
    iterations, lr, input, network
        DIP settings (see :func:`fit_dip`). 300 Adam steps at ``lr=1e-3``
        converge on 28² digits (the papers' 1000 steps at ``1e-4`` did not);
        larger images may want more steps.
    predcp_scale : float
        TV-PredCP rate ``κ`` (the "TV-MAP" hyperparameters); 0 gives plain
        MLL (type-II) hyperparameters. ``κ = 20`` was chosen on training digits
        (28², 20 angles, 5 % noise). It sets the *shape* of the error bars;
        their level is set by ``calibration``. It is a rate on the expected TV
        summed over pixels (``laplace.predcp_normalisation="sum"``); with
        ``"mean"`` the same prior at 28² is ``κ = 20 · 784`` and stays the same
        per pixel at other sizes (docs/scaling.md, "Toward a size-invariant model").
    calibration : {"heldout", "bootstrap", "none"}
        "heldout" (default): the model gets an image-space discrepancy
        ``δ ~ N(0, τ² I)`` whose ``τ`` is fitted by the conditional evidence of
        held-out measurements (:mod:`.discrepancy`): fold ``k`` of
        ``heldout_folds`` (scheme ``heldout_scheme``) is held out, a second DIP
        and Laplace are fitted to the rest, and ``τ`` maximises the summed
        predictive density of what the folds fitted so far held out; folds
        ``0, 1, …`` are fitted until ``τ`` is determined (see
        ``heldout_tolerance``) or ``heldout_max_fits`` is reached. The returned
        posterior is that of the full fit with ``τ``
        (``hyperparameters["discrepancy_std"]``, ``extras["discrepancy"]``). No
        factor is applied to any spread. Costs one DIP fit and Laplace per fold
        fitted. Chosen on training images (docs/scaling.md, "An image-space
        discrepancy").
        "bootstrap" multiplies the posterior spread by
        ``max(bootstrap_min_scale, c)`` (by scaling the prior's block variances and the
        noise variance by its square, so ``laplace.hyperparameters`` and the evidence
        describe the returned posterior), with ``c`` the factor
        :func:`~bayes_recon.inference.bootstrap_scale.bootstrap_std_scale`
        finds from ``bootstrap_fits`` DIP refits on measurements simulated
        from the DIP's own reconstruction (no ground truth), matched at
        ``calibration_level`` (docs/scaling.md, "Calibration: the bootstrap").
        "none" returns the Laplace posterior as it is: its 90 % intervals cover
        0.38–0.54 of the pixels on 64² and 0.21–0.26 on 128² natural-image crops.
    heldout_folds : int
        Each fold holds out ``1/heldout_folds`` of the measurements.
    heldout_max_fits : int or None
        At most this many folds are fitted (None: all ``heldout_folds``).
    heldout_tolerance : float
        Folds are added until the likelihood-ratio 95 % interval
        ``[τ_lo, τ_hi]`` of the summed evidence is narrow on the scale of the
        posterior: ``τ_hi² − τ_lo² ≤ heldout_tolerance · (v̄ + τ²)`` with ``v̄``
        the Laplace's mean pixel variance, i.e. the per-pixel variance is known
        to about ``± heldout_tolerance / 2``. ``inf`` fits one fold, ``0`` all
        ``heldout_max_fits``. One fold's ``τ`` is noisy (on six 28² training
        digits the four folds' own maximisers spread over 0–0.03, the scale of
        the Laplace's std). 0.5, chosen on training images, lifted four 64² test
        crops from 0.839 to 0.884 mean 90 % coverage (worst 0.629 → 0.804) but
        over-widened 28² test digits 0 and 1 (0.994, 0.960), so the default
        stays one fold (docs/scaling.md, "Summing folds").
    heldout_nested_correction : bool
        Fit the *full* fit's ``τ``: each fold's discrepancy variance is
        ``τ² + e_k``, ``e_k`` the fold's squared distance to the full
        reconstruction beyond what the two Laplaces predict
        (:meth:`~.discrepancy.DiscrepancyModel.heldout_evidence` with ``full``).
        A fold saw fewer data, so without it ``τ`` is the fold's, larger than
        the full fit's.
    heldout_prefer_zero : bool
        ``τ = 0`` unless the summed held-out evidence rejects ``τ = 0`` by a
        likelihood-ratio test at 5 % (:func:`~.discrepancy.fit_discrepancy`
        with ``prefer_zero``): the discrepancy is added only when the held-out
        data ask for it.
    heldout_scheme : str or None
        How measurements are held out
        (:data:`~bayes_recon.operators.holdout.HOLDOUT_SCHEMES`); None: the
        operator's physical default (every K-th projection for CT).
    bootstrap_fits : int
        DIP refits for the bootstrap (each costs one DIP fit).
    bootstrap_min_scale : float
        Lower bound of the applied factor. The default 1 lets the bootstrap
        widen the intervals but not narrow them: its simulated truth is the
        DIP's own output, which the DIP reconstructs more easily than a real
        image, so its errors understate the real ones (on 10 held-out 28²
        digits it asked for 0.72–0.97 where the intervals were already
        calibrated, which would have lowered 90 % coverage from 0.905 to 0.844).
        0 applies the bootstrap's factor as it is.
    calibration_level : float
        Central-interval probability the bootstrap matches.
    evidence_iterations : int
    num_samples : int
    laplace : LaplaceConfig
    init : None, torch.nn.Module, str or os.PathLike
        Starting network of the DIP fit and of the bootstrap refits: None (a
        random initialisation seeded by ``seed``, architecture ``network``), a
        pretrained U-Net ("educated DIP", e.g. from
        :func:`~bayes_recon.inference.pretrain_dip`), the name of a shipped one
        (``"ellipses-ct-dip"``, :func:`~bayes_recon.models.available_dip_networks`)
        or a U-Net checkpoint path. Its architecture replaces ``network``.
    """

    tv_weight: float | None = None
    tv_scale: float = 3.0
    iterations: int = 300
    lr: float = 1e-3
    input: str = "fbp"
    network: UNetConfig = field(default_factory=UNetConfig)
    predcp_scale: float = 20.0
    calibration: str = "heldout"
    heldout_folds: int = 4
    heldout_max_fits: int | None = None
    heldout_tolerance: float = math.inf
    heldout_nested_correction: bool = False
    heldout_prefer_zero: bool = False
    heldout_scheme: str | None = None
    bootstrap_fits: int = 4
    bootstrap_min_scale: float = 1.0
    calibration_level: float = 0.9
    evidence_iterations: int = 200
    num_samples: int = 1000
    laplace: LaplaceConfig = field(default_factory=LaplaceConfig)
    init: object = None


@dataclass
class LinearisedDIPResult:
    """Posterior, the fitted DIP, the Laplace model, the evidence run, the calibration and wall times (s).

    ``discrepancy`` (``calibration="heldout"``) is the fitted ``τ`` with its conditional
    evidence; ``bootstrap`` (``calibration="bootstrap"``) has the bootstrap's factor
    ``bootstrap.scale``, and ``posterior.extras["std_scale"]`` the one applied
    (``max(config.bootstrap_min_scale, bootstrap.scale)``). ``laplace.sample``
    gives the Laplace posterior without either.
    """

    posterior: Posterior
    fit: DIPFit
    laplace: LinearisedLaplace
    evidence: EvidenceResult
    timings: dict
    bootstrap: BootstrapScale | None = None
    discrepancy: DiscrepancyFit | None = None


def dip_tv_weight(config: LinearisedDIPConfig, op: LinearOperator, y: torch.Tensor,
                  noise_std: float | None) -> float:
    """The DIP's TV weight ``γ``: ``config.tv_weight``, else ``tv_scale · σ``.

    Without a known ``noise_std``, σ is :func:`~bayes_recon.operators.rough_noise_std`
    (an overestimate only makes γ somewhat stronger).
    """
    if config.tv_weight is not None:
        return config.tv_weight
    sigma = rough_noise_std(op, y) if noise_std is None else noise_std
    return check_positive("tv_scale * noise_std", config.tv_scale * sigma)


def linearised_dip(y: torch.Tensor, op: LinearOperator, noise_std: float | None = None,
                   config: LinearisedDIPConfig | None = None, seed: int = 0,
                   progress: bool = True, truth: torch.Tensor | None = None) -> LinearisedDIPResult:
    """DIP fit -> Jacobian -> evidence optimisation -> posterior samples.

    Parameters
    ----------
    y : torch.Tensor
        ``(1, *op.range_shape)``.
    op : LinearOperator
    noise_std : float, optional
        Known ``σ_y``: fixes the noise in the evidence and sets the TV weight;
        None estimates both.
    config : LinearisedDIPConfig, optional
    seed : int
        Seeds the network initialisation and the posterior draws.
    progress : bool
    truth : torch.Tensor, optional
        Only recorded in the DIP's PSNR trace.

    Returns
    -------
    LinearisedDIPResult
        ``posterior.method == "linearised-dip"``; ``timings`` has ``dip``,
        ``jacobian``, ``kernel_pieces``, ``evidence``, ``sampling`` and
        ``calibration``.

    Examples
    --------
    >>> import torch
    >>> from bayes_recon.operators import ParallelBeamCT
    >>> from bayes_recon.data import digits, simulate
    >>> from bayes_recon.models.unet import UNetConfig
    >>> op = ParallelBeamCT(12, 8)
    >>> x = torch.nn.functional.interpolate(digits("test", 28)[:1], size=12, mode="bilinear")
    >>> meas = simulate(op, x, 0.05, seed=0)
    >>> cfg = LinearisedDIPConfig(iterations=100, lr=1e-3, num_samples=50, bootstrap_fits=2,
    ...                           network=UNetConfig(channels=4, skip_channels=(0, 4, 4)))
    >>> res = linearised_dip(meas.y, op, meas.noise_std, cfg, progress=False)
    >>> res.posterior.samples.shape
    torch.Size([1, 50, 1, 12, 12])
    """
    cfg = config or LinearisedDIPConfig()
    if not isinstance(cfg, LinearisedDIPConfig):
        raise TypeError(f"config must be a LinearisedDIPConfig, got {type(cfg).__name__}")
    check_int("seed", seed, minimum=0)
    check_choice("config.calibration", cfg.calibration, CALIBRATIONS)
    check_int("config.bootstrap_fits", cfg.bootstrap_fits, minimum=1)
    check_int("config.heldout_folds", cfg.heldout_folds, minimum=2)
    if cfg.heldout_max_fits is not None:
        check_int("config.heldout_max_fits", cfg.heldout_max_fits, minimum=1)
        if cfg.heldout_max_fits > cfg.heldout_folds:
            raise ValueError(f"config.heldout_max_fits must be at most config.heldout_folds = {cfg.heldout_folds}, "
                             f"got {cfg.heldout_max_fits}")
    tol = cfg.heldout_tolerance
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol >= 0:   # inf allowed: one fold
        raise ValueError(f"config.heldout_tolerance must be a number >= 0 (inf: one fold), got {tol!r}")
    for name in ("heldout_nested_correction", "heldout_prefer_zero"):
        if not isinstance(getattr(cfg, name), bool):
            raise TypeError(f"config.{name} must be a bool, got {type(getattr(cfg, name)).__name__}")
    if cfg.heldout_scheme is not None:
        check_choice("config.heldout_scheme", cfg.heldout_scheme, HOLDOUT_SCHEMES)
    check_positive("config.bootstrap_min_scale", cfg.bootstrap_min_scale, allow_zero=True)
    check_probability("config.calibration_level", cfg.calibration_level)
    if noise_std is not None:
        noise_std = check_positive("noise_std", noise_std)
    tv_weight = dip_tv_weight(cfg, op, y, noise_std)
    timings = {}
    t0 = time.perf_counter()
    net_cfg = cfg.network
    channels = op.domain_shape[0]
    if (net_cfg.in_channels, net_cfg.out_channels) != (channels, channels):
        net_cfg = UNetConfig(**{**net_cfg.__dict__, "in_channels": channels, "out_channels": channels})
    init = load_dip_init(cfg.init)  # read a checkpoint once for the fit and the refits
    fit = fit_dip(y, op, tv_weight, cfg.iterations, lr=cfg.lr, input=cfg.input, seed=seed, init=init,
                  network_config=net_cfg, progress=progress, truth=truth)
    timings["dip"] = time.perf_counter() - t0
    la = LinearisedLaplace(fit, op, noise_std=noise_std, config=cfg.laplace, progress=progress)
    if cfg.calibration == "heldout" and la.path == "scalable":
        raise ValueError("config.calibration='heldout' needs the exact or subspace path (a dense prior "
                         "factor); the Laplace chose 'scalable' (raise config.laplace.memory_budget, "
                         "set config.laplace.path='subspace', or use calibration='bootstrap')")
    timings.update(la.timings)
    evidence = la.optimise_evidence(cfg.evidence_iterations, predcp_scale=cfg.predcp_scale,
                                    progress=progress)
    timings["evidence"] = evidence.seconds
    t0 = time.perf_counter()
    posterior = la.sample(cfg.num_samples, seed=seed)
    timings["sampling"] = time.perf_counter() - t0
    boot = disc = None
    if cfg.calibration == "heldout":
        t0 = time.perf_counter()
        mean_variance = float(posterior.std.double().pow(2).mean())
        # The fold takes the full fit's path and budget: "auto" would re-decide from the memory
        # free *now*, and the discrepancy needs a dense prior factor (exact or subspace).
        fold_cfg = dataclasses.replace(cfg.laplace, path=la.path, memory_budget=la.memory_budget)
        full = DiscrepancyModel(la) if cfg.heldout_nested_correction else None
        evidences = []
        for k in range(cfg.heldout_max_fits or cfg.heldout_folds):
            split = split_measurements(op, k, cfg.heldout_folds, cfg.heldout_scheme, seed=seed)
            fold_fit = fit_dip(split.fit_measurement(y), split.fit_op, tv_weight, cfg.iterations, lr=cfg.lr,
                               input=cfg.input, seed=seed, init=init, network_config=net_cfg, progress=progress)
            fold = LinearisedLaplace(fold_fit, split.fit_op, noise_std=noise_std, config=fold_cfg,
                                     progress=progress)
            fold.optimise_evidence(cfg.evidence_iterations, predcp_scale=cfg.predcp_scale, progress=progress)
            evidences.append(DiscrepancyModel(fold).heldout_evidence(split.held_op, split.held_measurement(y),
                                                                     full=full))
            del fold, fold_fit  # the fold's Jacobian basis is as large as the full fit's: free it first
            disc = fit_discrepancy(evidences, prefer_zero=cfg.heldout_prefer_zero)
            lower, upper = disc.interval
            if (cfg.heldout_tolerance == math.inf
                    or upper**2 - lower**2 <= cfg.heldout_tolerance * (mean_variance + disc.std**2)):
                break
        disc.seconds = time.perf_counter() - t0
        posterior = (full or DiscrepancyModel(la)).posterior(disc.std, cfg.num_samples, seed=seed, base=posterior, fit=disc)
    elif cfg.calibration == "bootstrap":
        def refit(y_k, k):
            # A fresh seed per refit: a random initialisation is part of the DIP's error.
            return fit_dip(y_k, op, tv_weight, cfg.iterations, lr=cfg.lr, input=cfg.input,
                           seed=seed + 7919 * (k + 1), init=init, network_config=net_cfg,
                           progress=False).x
        sigma = noise_std if noise_std is not None else la.hyperparameters["noise_std"]
        boot = bootstrap_std_scale(refit, op, fit.x, posterior.std, sigma, fits=cfg.bootstrap_fits,
                                   level=cfg.calibration_level, seed=seed, progress=progress)
        c = max(cfg.bootstrap_min_scale, boot.scale)
        # Prior and noise variances both × c²: the linear-Gaussian posterior's covariance is
        # then exactly c² times the old one with the same mean, and the Laplace's stored
        # hyperparameters and evidence describe the posterior returned.
        hyper = la.hyperparameters
        la.set_hyperparameters(variance={name.split("/", 1)[1]: v * c**2 for name, v in hyper.items()
                                         if name.startswith("variance/")},
                               noise_std=hyper["noise_std"] * c)
        posterior = la.sample(cfg.num_samples, seed=seed)
        posterior.extras["std_scale"] = c
    timings["calibration"] = boot.seconds if boot is not None else disc.seconds if disc is not None else 0.0
    return LinearisedDIPResult(posterior=posterior, fit=fit, laplace=la, evidence=evidence,
                               timings=timings, bootstrap=boot, discrepancy=disc)
