"""Full posterior with a SUPN prior: ``z`` sampled on the collapsed program, ``x`` exact.

``sample_posterior(..., method="nuts")`` runs ``pyro.infer.MCMC(NUTS(collapsed_model))``
(:func:`~bayes_recon.models.collapsed_model`: ``z → y`` with ``x``
marginalised exactly). By default NUTS is preconditioned by the Laplace
approximation at the collapsed MAP ``ẑ``: a dense inverse mass matrix ``H⁻¹``
(``H`` the Hessian of ``−log p(z | y)`` at ``ẑ``, then adapted in Pyro's
warm-up windows) and chains started at ``ẑ`` plus one draw of ``N(0, H⁻¹)``
each. ``method="laplace"`` uses the draws of ``N(ẑ, H⁻¹)`` themselves and
reports the PSIS ``k̂`` of the importance ratios ``p(z | y) / q(z)``;
``method="laplace-is"`` resamples those draws by their PSIS weights. Every
``z`` draw is followed by one exact draw of ``x | z, y``
(:class:`~bayes_recon.models.exact_conditional.GaussianImagePosterior`), so
the image samples are draws from the joint posterior.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from .._validation import check_choice, check_int, check_positive
from ..models.collapsed import collapsed_model
from ..models.exact_conditional import XSolverConfig
from ..models.marginal import DENSE_MAX_PIXELS, SLQConfig
from ..models.program import check_reconstruction_inputs
from ..posterior import Posterior
from .chains import available_cores, run_chains
from .diffusion import DIFFUSION_METHODS, diffusion_posterior
from .exact_check import (
    chain_slq,
    correct_surrogate_draws,
    exact_x_samples,
    log_posterior_values,
    merge_solve_records,
    preconditioned_fit,
)
from .hvae_posterior import hvae_posterior
from .latent_laplace import (
    ImportanceSamplingWarning,
    LaplaceWarning,
    laplace_draws,
    laplace_fit,
    laplace_importance,
    latent_hessian,
    map_stationarity,
)
from .latent_map import collapsed_map, initial_latent
from .nuts import MAX_TREE_DEPTH, NUTS_STATS, _run_nuts

__all__ = ["SAMPLING_METHODS", "SAMPLING_EVIDENCE", "NUTS_SLQ", "LAPLACE_SLQ", "NUTS_STATS", "MAX_TREE_DEPTH", "SamplingConfig",
           "sample_posterior", "LaplaceWarning", "ImportanceSamplingWarning", "latent_hessian"]

SAMPLING_METHODS = ("nuts", "laplace", "laplace-is", "hvae-svi") + DIFFUSION_METHODS
#: Evidence paths of :class:`SamplingConfig` (``models.marginal``'s and ``"preconditioned"``).
SAMPLING_EVIDENCE = ("auto", "dense", "slq", "preconditioned")


#: NUTS's default probes on the SLQ paths: on the preconditioned path at 64² (CT, 60 angles)
#: 4 Lanczos probes plus 64 quadratic probes gave a 2–3× narrower log-determinant than 16
#: Lanczos probes alone at about the same cost, and NUTS chains that agree (R-hat 1.01).
#: The Laplace's: 16 probes (its surrogate only steers the MAP and the Hessian). Both solve
#: with the reference factor in float32 (64² CT: a quarter off a gradient, value within 1e-4 nats).
NUTS_SLQ = SLQConfig(num_probes=4, quadratic_probes=64, solve_dtype="float32")
LAPLACE_SLQ = SLQConfig(solve_dtype="float32")

#: Default NUTS warm-up with the Hessian mass matrix: dual averaging of the step size
#: settles within ~100 steps there (CT 28², 10 angles: step size 0.70–0.71 after 150;
#: CT 64², 60 angles: 0.39–0.41 after 50 steps and 0.44 after 100 on one noise draw,
#: 0.57–0.59 and 0.58–0.60 on another), so longer chains do not pay for more warm-up.
HESSIAN_WARMUP = 100


@dataclass
class SamplingConfig:
    """Settings of :func:`sample_posterior`.

    Attributes
    ----------
    warmup : int or None
        NUTS warm-up (adaptation) steps per chain. None: ``min(num_samples,
        HESSIAN_WARMUP)`` with ``mass="hessian"`` and no mass adaptation (only
        the step size adapts, and the chains start from Laplace draws, already
        in the typical set), else ``num_samples``.
    max_tree_depth : int
        NUTS tree-depth bound, 1 to :data:`MAX_TREE_DEPTH` (at most
        ``2^depth − 1`` gradient evaluations per draw).
    target_accept : float
        Dual-averaging target acceptance probability.
    parallel_chains : bool
        Run the NUTS chains at the same time, one worker process each (up to
        the number of cores; :func:`~bayes_recon.inference.chains.run_chains`),
        with the same draws as one after another. Off by default: starting a
        worker costs a few seconds of imports, more than a short chain.
    thin : int
        NUTS keeps every ``thin``-th transition (``num_samples · thin``
        transitions per chain after warm-up). NUTS draws on a near-Gaussian
        posterior are antithetic in ``z`` but correlated at lag 1 in ``|z −
        median|``: ``thin=2`` costs twice the transitions and brings the folded
        R-hat of 2 × 500 draws to its i.i.d. noise level (docs/supn_posterior.md).
    mass : {"hessian", "diagonal"}
        ``"hessian"``: dense mass matrix with ``M⁻¹ = H⁻¹`` from the Laplace
        fit at the collapsed MAP; ``"diagonal"``: Pyro's default (identity,
        diagonal adaptation) — the sampler of issue 9.
    adapt_mass_matrix : bool
        Let Pyro's warm-up windows re-estimate the mass matrix from the draws
        (step-size adaptation is always on). Off by default with
        ``mass="hessian"``: re-estimating a dense matrix from a few dozen
        correlated warm-up draws made it worse than ``H⁻¹`` (CT 28², 10
        angles: 21 instead of 7 gradients per draw). Always on for
        ``mass="diagonal"`` (issue 9's sampler).
    init : {"laplace", "map", "encoder"}
        Chain starts: ``ẑ`` plus one seeded draw of ``N(0, H⁻¹)`` per chain;
        ``ẑ`` plus ``init_jitter`` isotropic noise; or the encoder's guess.
    init_jitter : float
    map_steps : int
        L-BFGS iterations of the collapsed MAP.
    evidence : {"auto", "dense", "slq", "preconditioned"}
        Collapsed-likelihood path. ``"preconditioned"``: SLQ preconditioned by,
        and with the first-order control variate of, a dense factor of ``P``
        at the collapsed MAP (:class:`~bayes_recon.models.preconditioned.PrecisionReference`,
        built twice: at the encoder's latent for a first MAP, then at that
        MAP for a second); ``"auto"``: dense up to
        :data:`~bayes_recon.models.marginal.DENSE_MAX_PIXELS` pixels,
        ``"preconditioned"`` beyond.
    slq : SLQConfig or None
        Probe settings of the SLQ paths; NUTS chain ``c`` uses probe seed
        ``slq.seed + c``, so chains differ in the estimator's noise too (and
        R-hat sees it). None (default): for NUTS :data:`NUTS_SLQ` (4 Lanczos
        and 64 quadratic probes: a surrogate tight enough that the chains agree;
        float32 solves with the reference factor),
        for the Laplace methods :data:`LAPLACE_SLQ` (16 Lanczos probes: there the
        surrogate only steers the MAP and the Hessian, the exact check does the
        rest, and it is the faster of the two; float32 solves too);
        docs/supn_posterior.md.
    exact_check : bool
        On the SLQ paths, evaluate the exact dense log-density at every kept
        ``z`` draw (one dense factorisation of ``P`` per draw, which then also
        draws its ``x``) and correct: the Laplace's PSIS weights are taken
        against it; NUTS draws of the surrogate are PSIS re-weighted and
        systematically resampled within each chain. Off: the surrogate is
        sampled as it is (its error unmeasured).
    x_solver : XSolverConfig
        How the exact ``x | z, y`` samples are solved.
    x_batch : int
        ``z`` draws whose ``x`` samples (and Laplace importance ratios) are
        computed together; dense factorisations above
        :data:`~bayes_recon.models.marginal.DENSE_MAX_PIXELS` pixels in
        smaller batches (``x_batch·(1024/N)²``, at least one: their memory is
        ``batch·N²`` float64 numbers).
    temperature : float
        Latent prior scale.
    hessian_step : float
        Finite-difference step of the Laplace Hessian on the SLQ path (the
        dense path uses exact autograd Hessians).
    """

    warmup: int | None = None
    max_tree_depth: int = 6
    target_accept: float = 0.8
    thin: int = 1
    parallel_chains: bool = False
    mass: str = "hessian"
    adapt_mass_matrix: bool = False
    init: str = "laplace"
    init_jitter: float = 0.1
    map_steps: int = 50
    evidence: str = "auto"
    slq: SLQConfig | None = None
    exact_check: bool = True
    x_solver: XSolverConfig = field(default_factory=XSolverConfig)
    x_batch: int = 16
    temperature: float = 1.0
    hessian_step: float = 1e-3

    def __post_init__(self):
        if self.warmup is not None:
            check_int("warmup", self.warmup, minimum=0)
        check_int("max_tree_depth", self.max_tree_depth, minimum=1)
        if self.max_tree_depth > MAX_TREE_DEPTH:
            raise ValueError(f"max_tree_depth must be <= {MAX_TREE_DEPTH} (up to 2^depth − 1 gradient "
                             f"evaluations per draw), got {self.max_tree_depth}")
        if not 0 < self.target_accept < 1:
            raise ValueError(f"target_accept must lie in (0, 1), got {self.target_accept}")
        check_int("thin", self.thin, minimum=1)
        if not isinstance(self.parallel_chains, bool):
            raise TypeError(f"parallel_chains must be a bool, got {self.parallel_chains!r}")
        check_choice("mass", self.mass, ("hessian", "diagonal"))
        check_choice("init", self.init, ("laplace", "map", "encoder"))
        check_positive("init_jitter", self.init_jitter, allow_zero=True)
        check_int("map_steps", self.map_steps, minimum=1)
        check_choice("evidence", self.evidence, SAMPLING_EVIDENCE)
        if self.slq is not None and not isinstance(self.slq, SLQConfig):
            raise TypeError(f"slq must be an SLQConfig or None, got {type(self.slq).__name__}")
        if not isinstance(self.exact_check, bool):
            raise TypeError(f"exact_check must be a bool, got {self.exact_check!r}")
        check_int("x_batch", self.x_batch, minimum=1)
        check_positive("temperature", self.temperature)
        check_positive("hessian_step", self.hessian_step)


def with_default_slq(cfg: SamplingConfig, method: str) -> SamplingConfig:
    """``cfg`` with ``slq=None`` resolved for ``method``: :data:`NUTS_SLQ` for NUTS, else :data:`LAPLACE_SLQ`."""
    if cfg.slq is not None:
        return cfg
    return replace(cfg, slq=replace(NUTS_SLQ if method == "nuts" else LAPLACE_SLQ))


def _nuts_chain(chain, y, op, prior, sigma, num_samples, warmup, seed, cfg, progress, z_init, cov_root,
                inv_mass):
    """One NUTS chain of :func:`_nuts_latents` (module level: it may run in a worker process)."""
    d = z_init.shape[-1]
    # Start draws on the latent's own device, seeded per chain.
    gen = torch.Generator(device=z_init.device).manual_seed(seed + 1000 + chain)
    eps = torch.randn(d, generator=gen, dtype=torch.float64, device=z_init.device)
    start = z_init[0].to(torch.float64)
    if cfg.init == "laplace":
        start = start + cov_root @ eps
    elif cfg.init == "map":
        start = start + cfg.init_jitter * eps
    kwargs = {"temperature": cfg.temperature, "method": cfg.evidence, "slq": chain_slq(cfg.slq, chain)}
    z, st, info = _run_nuts(None, [0], start.reshape(1, d), num_samples, warmup, seed + chain,
                            cfg.max_tree_depth, cfg.target_accept, progress, model=collapsed_model,
                            model_args=(y, op, prior, sigma), model_kwargs=kwargs,
                            inverse_mass_matrix=inv_mass,
                            adapt_mass_matrix=cfg.adapt_mass_matrix or inv_mass is None, thin=cfg.thin)
    z = z.reshape(num_samples, d)
    checked = None
    if cfg.evidence == "slq" and cfg.exact_check:
        # The chain's exact check where the chain ran (in parallel with the other chains):
        # exact and surrogate log densities of its draws, and their x from the same factor.
        x, log_exact, record = exact_x_samples(z[None].to(torch.float64), y, op, prior, sigma, seed + chain, cfg,
                                          progress, exact_log_density=True)
        log_sur = log_posterior_values(z.to(torch.float64), y, op, prior, sigma, cfg, kwargs["slq"])
        checked = (x[0], log_exact, log_sur, record)
    return z, st, info, checked


def _nuts_latents(y, op, prior, sigma, num_samples, num_chains, seed, cfg, progress, z_init,
                  cov_root=None):
    """NUTS chains over ``z`` on :func:`collapsed_model` (in parallel with ``cfg.parallel_chains``).

    ``cov_root`` ``R`` (``R Rᵀ = H⁻¹``, from the Laplace fit) sets the dense
    initial inverse mass matrix (``cfg.mass="hessian"``) and the starts
    (``cfg.init="laplace"``). Returns ``(chains, draws, d)``, stats, acceptance
    rates ``(chains,)``, the number of divergent transitions (all, kept or thinned away)
    and, on an SLQ path with ``cfg.exact_check``, each chain's exact check
    ``(x, log p, log p̃, solve record)`` (else None).
    """
    cfg = with_default_slq(cfg, "nuts")
    warmup = cfg.warmup
    if warmup is None:
        step_size_only = cfg.mass == "hessian" and not cfg.adapt_mass_matrix
        warmup = min(num_samples, HESSIAN_WARMUP) if step_size_only else num_samples
    inv_mass = None if cfg.mass == "diagonal" else cov_root @ cov_root.T
    workers = min(num_chains, available_cores()) if cfg.parallel_chains else 1
    chain_progress = progress and workers == 1  # worker processes would interleave their bars
    runs = run_chains(_nuts_chain, [(chain, y, op, prior, sigma, num_samples, warmup, seed, cfg,
                                     chain_progress, z_init, cov_root, inv_mass)
                                    for chain in range(num_chains)], workers)
    z = torch.stack([r[0] for r in runs])  # (chains, draws, d)
    stats = {k: np.stack([r[1][k] for r in runs]) for k in NUTS_STATS}
    rates = np.asarray([r[2]["acceptance_rate"] for r in runs])
    checked = None
    if runs[0][3] is not None:
        checks = [r[3] for r in runs]
        checked = (*(torch.stack([c[k] for c in checks]) for k in range(3)),
                   merge_solve_records([c[3] for c in checks]))
    return z, stats, rates, sum(len(r[2]["divergences"]) for r in runs), checked


def sample_posterior(y: torch.Tensor, op, prior, noise_std: float | None, method: str = "nuts",
                     num_samples: int = 200, num_chains: int = 2, seed: int = 0,
                     config: SamplingConfig | None = None, progress: bool = True) -> Posterior:
    """Posterior samples of the image ``x`` (and latent ``z``) for one measurement.

    Parameters
    ----------
    y : torch.Tensor
        ``(1, *op.range_shape)``: a single measurement.
    op : LinearOperator
    prior : SUPNVAE, DiffusionPrior or HierarchicalVAE
        A diffusion prior for ``method="dps" | "diffpir"``
        (:func:`~bayes_recon.inference.diffusion.diffusion_posterior`, which
        documents their output), a hierarchical VAE for ``method="hvae-svi"``
        (:func:`~bayes_recon.inference.hvae_posterior.hvae_posterior`), a SUPN
        prior otherwise.
    noise_std : float or None
        σ > 0; None estimates it (type-II maximum likelihood of the collapsed
        evidence jointly with the MAP of ``z``) and then keeps it fixed.
    method : {"nuts", "laplace", "laplace-is", "hvae-svi", "dps", "diffpir"}
        ``"nuts"``: ``pyro.infer.MCMC(NUTS(collapsed_model))``, chains run one
        after the other with seeds ``seed + chain``, preconditioned as set in
        ``config`` (default: dense ``M⁻¹ = H⁻¹`` and Laplace starts).
        ``"laplace"``: ``z ~ q = N(ẑ, H⁻¹)`` at the collapsed MAP ``ẑ``, with
        the PSIS check of ``p(z | y)/q(z)``. ``"laplace-is"``: those draws
        resampled (multinomially, with replacement) by their PSIS weights.
        Above :data:`~bayes_recon.models.marginal.DENSE_MAX_PIXELS` pixels
        (``evidence="auto"``) every method runs on the preconditioned SLQ
        surrogate and is then made exact by one dense factorisation per draw
        (``config.exact_check``): the Laplace's importance ratios use the exact
        density, NUTS draws are re-weighted from the surrogate to it.
    num_samples : int
        Draws per chain (after warm-up).
    num_chains : int
    seed : int
    config : SamplingConfig, optional
        ``DPSConfig`` / ``DiffPIRConfig`` for the diffusion samplers,
        ``HVAEPosteriorConfig`` for ``"hvae-svi"``.
    progress : bool

    Returns
    -------
    Posterior
        ``samples`` ``(chains, draws, C, H, W)`` (in the prior's dtype), ``z``
        ``(chains, draws, d)``. ``sample_stats``, each ``(chains, draws)``: for
        NUTS ``diverging``, ``accepted`` (the transition moved), ``step_size``,
        ``num_steps`` (gradient evaluations), ``tree_depth``; for Laplace
        ``importance_weight`` (PSIS-smoothed, normalised over all draws).
        Extras: ``noise_std``; ``evidence`` (the resolved path); the
        ``x | z, y`` solves: ``x_solver``, ``x_converged``,
        ``x_cg_iterations`` / ``x_cg_residuals`` (per CG solve),
        ``x_cg_max_iterations``, ``x_cg_max_residual``; ``z_map`` when a MAP
        was computed; whenever the Laplace fit was made: ``hessian``
        ``(d, d)``, ``hessian_method``, ``hessian_asymmetry``,
        ``hessian_min_eigenvalue``, ``hessian_eigenvalue_floor``,
        ``hessian_num_clipped``, ``hessian_repaired`` (True when eigenvalues
        were clipped, which also warns :class:`LaplaceWarning`), and the MAP's
        stationarity ``map_gradient_norm`` ``‖∇‖`` and
        ``map_newton_decrement`` ``gᵀH⁻¹g`` (above
        :data:`~bayes_recon.inference.latent_laplace.MAP_NEWTON_DECREMENT_LIMIT` warns :class:`LaplaceWarning`);
        NUTS: ``max_tree_depth``, ``mass``, ``acceptance_rate``
        ``(chains,)``, ``num_divergences`` (every divergent transition,
        thinned away or not), ``thin``; the SLQ paths: ``slq_seeds`` (probe
        seed per chain) and ``exact_check``; Laplace, and NUTS on an SLQ path
        with ``exact_check``: ``psis_khat``, ``psis_warning`` (True when
        ``k̂`` exceeds :func:`~bayes_recon.inference.latent_laplace.psis_khat_threshold`
        of the number of draws, which also warns
        :class:`ImportanceSamplingWarning`), ``importance_ess``,
        ``num_nonfinite_log_ratios``, ``log_ratio`` ``(chains, draws)``
        (Laplace: ``log p − log q``; NUTS: exact minus surrogate log density
        at the draws, before resampling); ``laplace-is`` and corrected NUTS:
        ``resampled_unique``; corrected NUTS: ``surrogate_error_std`` and
        ``surrogate_error_max`` (nats: spread and largest centred deviation
        of the surrogate from the exact log density at the draws), and
        ``importance_weight`` in ``sample_stats``.

    Raises
    ------
    ValueError
        Bad input; ``config.x_solver.solver == "condition"`` (that solver
        samples the noise-free limit ``σ → 0`` while ``z`` is drawn at σ, an
        inconsistent joint); importance weights all zero or NaN.

    Examples
    --------
    >>> import torch
    >>> from bayes_recon.models.supn_vae import SUPNVAE
    >>> from bayes_recon.operators import Identity
    >>> vae = SUPNVAE(image_size=6, latent_dim=2, widths=(4,), radius=1)
    >>> post = sample_posterior(torch.zeros(1, 1, 6, 6), Identity((1, 6, 6)), vae, 0.1,
    ...                         method="laplace", num_samples=10, num_chains=1, progress=False)
    >>> post.samples.shape, sorted(k for k in post.extras if k.startswith("psis"))
    (torch.Size([1, 10, 1, 6, 6]), ['psis_khat', 'psis_warning'])
    """
    check_choice("method", method, SAMPLING_METHODS)
    if method == "hvae-svi":
        if noise_std is None:
            raise ValueError("noise_std must be given for method='hvae-svi' (σ is not estimated)")
        return hvae_posterior(y, op, prior, noise_std, num_samples, num_chains, seed, config, progress)
    if method in DIFFUSION_METHODS:
        return diffusion_posterior(y, op, prior, noise_std, method, num_samples, num_chains, seed,
                                   config, progress)
    check_reconstruction_inputs(y, op, prior, 1.0 if noise_std is None else noise_std)
    check_int("num_samples", num_samples, minimum=1)
    check_int("num_chains", num_chains, minimum=1)
    check_int("seed", seed, minimum=0)
    if y.shape[0] != 1:
        raise ValueError(f"y must hold a single measurement, shape (1, *range_shape), got {tuple(y.shape)}")
    cfg = SamplingConfig() if config is None else config
    if not isinstance(cfg, SamplingConfig):
        raise TypeError(f"config must be a SamplingConfig, got {type(cfg).__name__}")
    if cfg.x_solver.solver == "condition":
        raise ValueError(
            "config.x_solver.solver='condition' samples x | z, y in the noise-free limit σ → 0, "
            f"while z is sampled at noise_std={noise_std}; that joint is inconsistent. Use "
            "'auto', 'cholesky' or 'cg' (exact at the given σ)"
        )
    nuts = method == "nuts"
    cfg = with_default_slq(cfg, method)
    z0 = initial_latent(y, op, prior).to(torch.float64)
    need_laplace = not nuts or cfg.mass == "hessian" or cfg.init == "laplace"
    need_map = noise_std is None or need_laplace or cfg.init == "map"
    evidence = cfg.evidence
    if evidence == "auto":
        evidence = "dense" if op.domain_size <= DENSE_MAX_PIXELS else "preconditioned"
    extras = {"evidence": evidence}
    if evidence == "preconditioned":
        fit, ref = preconditioned_fit(y, op, prior, noise_std, z0, cfg, need_map)
        cfg = replace(cfg, evidence="slq", slq=replace(cfg.slq, preconditioner=ref))
    else:
        cfg = replace(cfg, evidence=evidence)
        fit = collapsed_map(y, op, prior, noise_std, z0=z0, temperature=cfg.temperature, method=evidence,
                            slq=cfg.slq, steps=cfg.map_steps) if need_map else None
    if fit is not None:
        sigma, z_start = fit.noise_std, fit.z
        extras["z_map"] = fit.z[0].to(next(prior.parameters()).dtype)
    else:
        sigma, z_start = float(noise_std), z0
    cov_root = None
    if need_laplace:
        h, cov_root, info = laplace_fit(z_start, y, op, prior, sigma, cfg)
        extras["hessian"] = h.cpu().numpy()
        extras.update(info)
        extras.update(map_stationarity(z_start, y, op, prior, sigma, cfg, h))
    if cfg.init == "encoder" and nuts:
        z_start = z0
    stats = None
    checked = None
    if nuts:
        z, stats, rates, divergent, checked = _nuts_latents(y, op, prior, sigma, num_samples, num_chains, seed,
                                                            cfg, progress, z_start, cov_root)
        extras.update(max_tree_depth=cfg.max_tree_depth, mass=cfg.mass, acceptance_rate=rates,
                      num_divergences=divergent, thin=cfg.thin)
    else:
        z = laplace_draws(z_start, cov_root, num_samples, num_chains, seed)
    surrogate = cfg.evidence == "slq"
    exact = surrogate and cfg.exact_check
    # On the dense path the Laplace's own log densities come from the same factor as x.
    if checked is not None:  # NUTS chains did their own exact checks
        x, log_exact, log_sur, x_record = checked
    else:
        x, log_exact, x_record = exact_x_samples(z, y, op, prior, sigma, seed, cfg, progress,
                                            exact_log_density=exact or (not nuts and not surrogate))
    extras.update(x_record, exact_check=exact)
    if surrogate:
        extras["slq_seeds"] = ([cfg.slq.seed + c for c in range(num_chains)] if nuts else [cfg.slq.seed])
    if nuts and exact:
        z, x, stats, more = correct_surrogate_draws(z, x, log_exact, log_sur, seed, stats)
        extras.update(more)
    elif not nuts:
        flat = z.reshape(-1, z.shape[-1])
        log_p = log_exact if log_exact is not None else log_posterior_values(flat, y, op, prior, sigma, cfg,
                                                                               cfg.slq)
        stats, idx, more = laplace_importance(z, log_p, z_start, cov_root, info, seed, method)
        extras.update(more)
        if idx is not None:
            z = flat[idx].reshape(z.shape)
            x = x.reshape(-1, *x.shape[2:])[idx.to(x.device)].reshape(x.shape)
    dtype = next(prior.parameters()).dtype
    return Posterior(x.to(dtype), z=z.to(dtype), sample_stats=stats, method=method, operator=op,
                     noise_std=sigma, seed=seed, **extras)
