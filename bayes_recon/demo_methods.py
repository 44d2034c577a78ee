"""The methods the demo runs, each a function ``DemoProblem -> MethodResult``.

Settings are fixed here (chosen on *training* digits or taken from the papers), so the
held-out test digit plays no part in tuning. ``quick`` shortens every iterative method.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from .cli_methods import MethodResult, classical_reconstruction

if TYPE_CHECKING:  # pragma: no cover
    from .demo import DemoProblem

# Relative weights (Tikhonov: units of ||A||²; TV: units of σ·||A||).
TIKHONOV_WEIGHT = 0.01
TV_WEIGHT = 0.2
# DIP: TV weight γ = 3σ and TV-PredCP rate κ = 0.05 as in the linearised-DIP papers; Adam
# lr 1e-3 rather than their 1e-4, which needs thousands of iterations to converge here.
DIP_TV_SCALE = 3.0
DIP_LR = 1e-3
PREDCP_SCALE = 0.05
MC_DROPOUT_RATE = 0.05


def _fbp(p: "DemoProblem") -> MethodResult:
    return MethodResult(p.op.fbp(p.y))


def _tikhonov(p: "DemoProblem") -> MethodResult:
    return MethodResult(classical_reconstruction("tikhonov", p.op, p.y, p.noise_std,
                                                 TIKHONOV_WEIGHT, TV_WEIGHT, 0, False))


def _tv(p: "DemoProblem") -> MethodResult:
    iterations = 300 if p.config.quick else 1000
    x = classical_reconstruction("tv", p.op, p.y, p.noise_std, TIKHONOV_WEIGHT, TV_WEIGHT,
                                 iterations, p.config.progress)
    return MethodResult(x, info={"iterations": iterations, "weight": f"{TV_WEIGHT} σ ||A||"})


def _prior(p: "DemoProblem"):
    if "prior" not in p.cache:
        from .models import load_pretrained
        p.cache["prior"] = load_pretrained("digits-supn")
    return p.cache["prior"]


def _supn_map(p: "DemoProblem") -> MethodResult:
    from .inference import MAPConfig, map_estimate

    cfg = MAPConfig(max_iterations=10 if p.config.quick else 30, seed=p.config.seed)
    rec = map_estimate(p.y, p.op, _prior(p), p.noise_std, method="jpmap", config=cfg,
                       progress=p.config.progress)
    return MethodResult(rec.x.float(), info={"max_iterations": cfg.max_iterations,
                                             "converged": rec.converged})


def _supn_posterior(p: "DemoProblem") -> MethodResult:
    """Latent z sampled (NUTS; Laplace in quick mode), x drawn exactly given z."""
    from .inference import SamplingConfig, sample_posterior

    quick = p.config.quick
    method = "laplace" if quick else "nuts"
    # NUTS costs 1-3 s per transition here (~10 leapfrog steps through the dense float64
    # evidence at 784 pixels), so the full demo keeps to 2 chains x (30 warm-up + 30 draws).
    draws = 100 if quick else 30
    post = sample_posterior(p.y, p.op, _prior(p), p.noise_std, method=method,
                            num_samples=draws, num_chains=2, seed=p.config.seed,
                            config=SamplingConfig(warmup=draws), progress=p.config.progress)
    return MethodResult(post.mean[None].float(), post,
                        info={"z_sampler": method, "chains": 2, "draws_per_chain": draws,
                              "warmup": draws if method == "nuts" else 0,
                              "x": "exact sample of x | z, y per z draw"})


def _dip_network(p: "DemoProblem", dropout: float = 0.0):
    from .models import UNetConfig

    return UNetConfig(channels=32, dropout=dropout)  # the papers' U-Net


def _dip_iterations(p: "DemoProblem") -> int:
    return 300  # with lr 1e-3 longer runs start fitting the noise (1000: 30.2 dB vs 34.0 dB)


def _linearised_dip(p: "DemoProblem") -> MethodResult:
    from .inference import LinearisedDIPConfig, linearised_dip

    cfg = LinearisedDIPConfig(tv_scale=DIP_TV_SCALE, iterations=_dip_iterations(p), lr=DIP_LR,
                              network=_dip_network(p), predcp_scale=PREDCP_SCALE,
                              num_samples=200 if p.config.quick else 1000)
    res = linearised_dip(p.y, p.op, p.noise_std, cfg, seed=p.config.seed,
                         progress=p.config.progress)
    p.cache["dip_fit"] = res.fit  # the fixed-σ baseline reuses the same DIP
    return MethodResult(res.fit.x.detach().float(), res.posterior,
                        info={"dip_iterations": cfg.iterations, "dip_lr": cfg.lr,
                              "predcp_scale": cfg.predcp_scale, "samples": cfg.num_samples,
                              "log_evidence": round(float(res.evidence.log_evidence), 2)})


def _fixed_sigma_dip(p: "DemoProblem") -> MethodResult:
    from .inference import fit_dip, fixed_noise_posterior

    fit = p.cache.get("dip_fit")
    shared = fit is not None  # then its wall time excludes the DIP fit
    if fit is None:
        fit = fit_dip(p.y, p.op, DIP_TV_SCALE * p.noise_std, _dip_iterations(p), lr=DIP_LR,
                      seed=p.config.seed, network_config=_dip_network(p),
                      progress=p.config.progress)
    samples = 200 if p.config.quick else 1000
    post = fixed_noise_posterior(fit, p.op, samples, seed=p.config.seed)
    return MethodResult(fit.x.detach().float(), post,
                        info={"samples": samples, "sigma²": "||y - A x*||² / ||A||_F² (residual)",
                              "dip_fit": "shared with the linearised DIP" if shared else "own"})


def _mc_dropout_dip(p: "DemoProblem") -> MethodResult:
    from .inference import fit_dip, mc_dropout_posterior

    fit = fit_dip(p.y, p.op, DIP_TV_SCALE * p.noise_std, _dip_iterations(p), lr=DIP_LR,
                  seed=p.config.seed, network_config=_dip_network(p, MC_DROPOUT_RATE),
                  progress=p.config.progress)
    samples = 200 if p.config.quick else 1000
    post = mc_dropout_posterior(fit, samples, seed=p.config.seed)
    return MethodResult(post.mean[None].float(), post,
                        info={"dropout": MC_DROPOUT_RATE, "samples": samples})


METHODS: dict[str, Callable[["DemoProblem"], MethodResult]] = {
    "FBP": _fbp,
    "Tikhonov": _tikhonov,
    "TV": _tv,
    "SUPN MAP (JPMAP)": _supn_map,
    "SUPN posterior": _supn_posterior,
    "Linearised DIP (TV-PredCP)": _linearised_dip,
    "DIP + fixed σ": _fixed_sigma_dip,
    "DIP + MC dropout": _mc_dropout_dip,
}
