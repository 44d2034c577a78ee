"""The end-to-end demo that ``make demo`` runs (``bayes-recon demo``).

A held-out test digit, 28×28 parallel-beam CT at 20 angles with 5% noise,
reconstructed by every method that exists; each point estimate is scored, each
posterior is exported to ArviZ (``.nc``) and calibrated, and a ``report.md``
with a summary table and figures is written to the output folder.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import __version__
from ..data import digits, simulate
from ..metrics import psnr, ssim
from ..operators import ParallelBeamCT
from ._io import write_json, write_netcdf, write_npy, write_png, write_text
from .methods import ClassicalSettings, MethodResult, MethodSettings, load_prior, run_method
from .validation import ValidationSettings, validate_method

# Settings are fixed here (chosen on *training* digits or taken from the papers), so the
# held-out test digit plays no part in tuning.
TIKHONOV_WEIGHT = 0.01  # units of ||A||²
TV_WEIGHT = 0.2  # units of σ·||A||
# DIP: TV weight γ = 3σ as in the linearised-DIP papers; the library's defaults for the rest:
# Adam lr 1e-3 rather than their 1e-4, which needs thousands of iterations to converge here
# (with lr 1e-3 longer runs than 300 iterations start fitting the noise: 1000 gave 30.2 vs
# 34.0 dB), and TV-PredCP rate κ = 20, chosen on training digits for calibrated intervals.
DIP_TV_SCALE = 3.0
MC_DROPOUT_RATE = 0.05
DEMO_PRIOR = "digits-supn"
DEMO_DIFFUSION_PRIOR = "digits-diffusion"
DEMO_HVAE_PRIOR = "digits-hvae"


@dataclass
class DemoConfig:
    """Settings of the demo; ``quick`` shortens every iterative method."""

    out: Path = Path("demo_output")
    quick: bool = False
    progress: bool = True
    size: int = 28
    angles: int = 20
    relative_noise: float = 0.05
    index: int = 0
    seed: int = 0
    methods: tuple | None = None  # labels from ``demo_methods(config)``; None runs all
    # Held-out check of every posterior, no truth: fold 0 of 5 (every 5th angle held out).
    validate: bool = True


@dataclass
class DemoProblem:
    """What every method is given."""

    config: DemoConfig
    op: ParallelBeamCT
    truth: torch.Tensor
    y: torch.Tensor
    noise_std: float
    cache: dict = field(default_factory=dict)  # shared between methods (prior, DIP fit)


def demo_methods(config: DemoConfig) -> dict[str, MethodSettings]:
    """The demo's methods: display label -> settings for :func:`~.methods.run_method`.

    The same registry as ``bayes-recon reconstruct``; ``quick`` shortens every
    iterative method (and samples z by a PSIS-checked Laplace approximation instead of NUTS).
    """
    from ..inference import (DPSConfig, HVAEMAPConfig, HVAEPosteriorConfig, LinearisedDIPConfig,
                             MAPConfig, SamplingConfig)
    from ..models import UNetConfig

    quick, seed, progress = config.quick, config.seed, config.progress
    classical = ClassicalSettings(tikhonov_weight=TIKHONOV_WEIGHT, tv_weight=TV_WEIGHT,
                                  tv_iterations=300 if quick else 1000)
    samples = 200 if quick else 1000
    dip = LinearisedDIPConfig(tv_scale=DIP_TV_SCALE, network=UNetConfig(channels=32),
                              num_samples=samples)  # library defaults: 300 steps, lr 1e-3, κ = 20
    # NUTS with the Hessian mass matrix takes ~7 leapfrog steps per draw at ~40 ms each; the
    # mass matrix needs no warm-up windows, only the step size (issue 11). The full demo runs
    # 2 chains x (100 warm-up + 1000 transitions, every 2nd kept: 500 draws) at once, one per
    # core: thinning brings the folded R-hat of 500 draws to its i.i.d. noise level
    # (docs/supn_posterior.md). Quick mode keeps the PSIS-checked Laplace.
    z_draws = 100 if quick else 500
    common = dict(seed=seed, progress=progress)
    return {
        "FBP": MethodSettings("fbp", classical=classical, **common),
        "Tikhonov": MethodSettings("tikhonov", classical=classical, **common),
        "TV": MethodSettings("tv", classical=classical, **common),
        "SUPN MAP (JPMAP)": MethodSettings(
            "jpmap", prior=DEMO_PRIOR, map=MAPConfig(max_iterations=10 if quick else 30,
                                                     seed=seed), **common),
        "SUPN posterior": MethodSettings(
            "laplace" if quick else "nuts", prior=DEMO_PRIOR, num_samples=z_draws,
            num_chains=2, sampling=SamplingConfig(warmup=100, thin=2, parallel_chains=True), **common),
        "Linearised DIP (TV-PredCP)": MethodSettings("linearised-dip", dip=dip,
                                                     num_samples=samples, **common),
        # Shares the linearised DIP's fit (same DIP settings and seed, see run_method's cache).
        "DIP + fixed σ": MethodSettings("fixed-sigma-dip", dip=dip, num_samples=samples,
                                        **common),
        "DIP + MC dropout": MethodSettings("mc-dropout-dip", dip=dip, num_samples=samples,
                                           dropout=MC_DROPOUT_RATE, **common),
        # DPS with the library's defaults (chosen on training images, docs/diffusion.md);
        # quick mode takes half the reverse steps and runs.
        "Diffusion posterior (DPS)": MethodSettings(
            "dps", prior=DEMO_DIFFUSION_PRIOR, num_samples=8 if quick else 16, num_chains=2,
            dps=DPSConfig(steps=50) if quick else DPSConfig(), **common),
        # PnP-HVAE and the SVI posterior with the library's defaults (docs/hvae.md).
        "Hierarchical VAE MAP (PnP-HVAE)": MethodSettings("pnp-hvae", prior=DEMO_HVAE_PRIOR,
                                                           **common),
        "Hierarchical VAE posterior (SVI)": MethodSettings(
            "hvae-svi", prior=DEMO_HVAE_PRIOR, num_samples=50 if quick else 100, num_chains=2,
            hvae_posterior=HVAEPosteriorConfig(steps=100) if quick else HVAEPosteriorConfig(),
            hvae=HVAEMAPConfig(), **common),
    }


def _summary(settings: MethodSettings) -> dict:
    """A few settings worth a line in the report."""
    m = settings.method
    if m in ("tikhonov", "tv"):
        c = settings.classical
        return ({"weight": f"{c.tikhonov_weight} ||A||²"} if m == "tikhonov" else
                {"weight": f"{c.tv_weight} σ ||A||", "iterations": c.tv_iterations})
    if m == "jpmap":
        return {"prior": settings.prior, "max_iterations": settings.map.max_iterations}
    if m in ("nuts", "laplace", "laplace-is"):
        return {"z_sampler": m, "chains": settings.num_chains,
                "draws_per_chain": settings.supn_samples,
                "warmup": settings.sampling.warmup if m == "nuts" else 0,
                **({"thin": settings.sampling.thin, "parallel_chains": settings.sampling.parallel_chains}
                   if m == "nuts" else {}),
                "x": "exact sample of x | z, y per z draw"}
    if m in ("dps", "diffpir"):
        c = settings.diffusion_config
        knobs = ({"guidance": c.guidance} if m == "dps" else
                 {"regularisation": c.regularisation, "zeta": c.zeta})
        return {"prior": settings.prior, "steps": c.steps, **knobs, "chains": settings.num_chains,
                "runs_per_chain": settings.diffusion_samples}
    if m == "pnp-hvae":
        c = settings.hvae
        return {"prior": settings.prior, "temperature": c.temperature,
                "max_iterations": c.max_iterations}
    if m == "hvae-svi":
        return {"prior": settings.prior, "svi_steps": settings.hvae_posterior.steps,
                "chains": settings.num_chains, "draws_per_chain": settings.hvae_samples,
                "x": "exact sample of x | z, y per z draw"}
    if m.endswith("dip"):
        d = settings.dip
        info = {"dip_iterations": d.iterations, "dip_lr": d.lr, "samples": settings.dip_samples}
        if m == "linearised-dip":
            info["predcp_scale"] = d.predcp_scale
            info["calibration"] = {
                "bootstrap": f"bootstrap ({d.bootstrap_fits} DIP refits, factor >= {d.bootstrap_min_scale:g})",
                "heldout": f"heldout (image-space discrepancy fitted on 1/{d.heldout_folds} of the measurements)",
            }.get(d.calibration, d.calibration)
        if m == "mc-dropout-dip":
            info["dropout"] = settings.dropout
        return info
    return {}


def make_problem(config: DemoConfig) -> DemoProblem:
    """The demo's measurement of a held-out test digit."""
    truth = digits("test", size=config.size)[config.index : config.index + 1]
    op = ParallelBeamCT(config.size, config.angles)
    meas = simulate(op, truth, relative_noise=config.relative_noise, seed=config.seed)
    return DemoProblem(config, op, truth, meas.y, meas.noise_std)


def _slug(name: str) -> str:
    """ASCII file stem of a method name: ``"DIP + fixed σ"`` → ``"dip_fixed_sigma"``."""
    text = name.lower().replace("σ", "sigma")
    text = "".join(c if c.isascii() and c.isalnum() else "_" for c in text)
    return "_".join(part for part in text.split("_") if part)


def run_demo(config: DemoConfig) -> dict:
    """Run every method, write outputs to ``config.out``; returns the results table."""
    from ..diagnostics import (
        calibration,
        plot_calibration_curve,
        plot_reconstruction,
        to_arviz,
    )

    plan = demo_methods(config)
    names = list(plan) if config.methods is None else list(config.methods)
    for name in names:
        if name not in plan:
            raise ValueError(f"methods must name entries of {list(plan)}, got {name!r}")
    problem = make_problem(config)
    out = Path(config.out)
    rows, reports = [], {}
    write_png(out / "truth.png", problem.truth[0, 0].numpy(), vmin=0.0, vmax=1.0)
    for name in names:
        settings = plan[name]
        prior = None
        if settings.prior is not None:
            key = ("prior", settings.prior)
            if key not in problem.cache:
                problem.cache[key] = load_prior(settings.prior, config.size)
            prior = problem.cache[key]
        start = time.perf_counter()
        result = run_method(settings, problem.op, problem.y, problem.noise_std, prior,
                            cache=problem.cache)
        elapsed = time.perf_counter() - start
        info = _summary(settings)
        for key in ("converged", "log_evidence", "bootstrap_factor", "std_scale", "discrepancy_std",
                    "dip_fit_shared"):
            if result.info.get(key) is not None:
                value = result.info[key]
                numeric = key in ("log_evidence", "bootstrap_factor", "std_scale", "discrepancy_std")
                info[key] = round(float(value), 4 if key == "discrepancy_std" else 2) if numeric else value
        slug = _slug(name)
        x = result.x.detach().float()
        write_npy(out / f"{slug}.npy", x[0].numpy())
        write_png(out / f"{slug}.png", x[0, 0].numpy(), vmin=0.0, vmax=1.0)
        row = {
            "method": name,
            "psnr": float(psnr(problem.truth, x, data_range=1.0)[0]),
            "ssim": float(ssim(problem.truth, x, data_range=1.0)[0]),
            "coverage_90": None,
            "heldout_coverage_90": None,
            "calibration_error": None,
            "test_log_likelihood": None,
            "wall_time_s": elapsed,
            **{f"info_{k}": v for k, v in info.items()},
        }
        if result.posterior is not None:
            post = result.posterior
            idata = to_arviz(post, truth=problem.truth[0], y=problem.y[0], op=problem.op,
                             noise_std=result.noise_std or problem.noise_std, predictive=True,
                             seed=config.seed)
            write_netcdf(out / f"{slug}.nc", idata)
            report = calibration(post, problem.truth[0])
            reports[name] = report
            write_json(out / f"{slug}_calibration.json", report.to_dict(include_pit=False))
            row.update(coverage_90=report.coverage_at(0.9),
                       calibration_error=report.calibration_error,
                       test_log_likelihood=report.test_log_likelihood)
            if config.validate:
                heldout = validate_method(settings, problem.op, problem.y, problem.noise_std,
                                          prior, ValidationSettings(folds=5, quick=True),
                                          progress=False)
                write_json(out / f"{slug}_validation.json", heldout.to_dict())
                row.update(heldout_coverage_90=heldout.coverage_at(0.9),
                           heldout_excess_variance_ratio=heldout.excess_variance_ratio,
                           heldout_seconds=sum(f["seconds"] for f in heldout.per_fold))
            fig = plot_reconstruction(post, truth=problem.truth[0],
                                      back_projection=problem.op.fbp(problem.y)[0])
            fig.savefig(out / f"{slug}_panel.png", dpi=90)
        rows.append(row)
        if config.progress:
            print(f"{name:>24}: PSNR {row['psnr']:6.2f} dB  SSIM {row['ssim']:.3f}  "
                  f"({elapsed:.1f} s)")
    summary = {
        "problem": {"size": config.size, "angles": config.angles,
                    "relative_noise": config.relative_noise, "noise_std": problem.noise_std,
                    "test_digit_index": config.index, "seed": config.seed},
        "results": rows,
        "bayes_recon_version": __version__,
    }
    if reports:
        plot_calibration_curve(reports).savefig(out / "calibration_curves.png", dpi=90)
    write_json(out / "results.json", summary)
    write_text(out / "report.md", _report(summary, sorted(reports), _slug))
    return summary


def _fmt(v, spec):
    return "–" if v is None else format(v, spec)


def _report(summary: dict, posterior_methods: list, slug) -> str:
    p = summary["problem"]
    lines = [
        "# bayes_recon demo",
        "",
        f"Held-out test digit {p['test_digit_index']}, {p['size']}×{p['size']} parallel-beam "
        f"CT at {p['angles']} angles, noise {100 * p['relative_noise']:.0f}% of mean |Ax| "
        f"(σ = {p['noise_std']:.4g}).",
        "",
        "| method | PSNR (dB) | SSIM | coverage at 90% | held-out coverage at 90% (no truth) "
        "| calibration error | test log-lik. / pixel | wall time (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["results"]:
        lines.append(
            f"| {r['method']} | {_fmt(r['psnr'], '.2f')} | {_fmt(r['ssim'], '.3f')} "
            f"| {_fmt(r['coverage_90'], '.3f')} | {_fmt(r.get('heldout_coverage_90'), '.3f')} "
            f"| {_fmt(r['calibration_error'], '.3f')} "
            f"| {_fmt(r['test_log_likelihood'], '.3f')} | {_fmt(r['wall_time_s'], '.2f')} |")
    notes = [(r["method"], {k[5:]: v for k, v in r.items() if k.startswith("info_")})
             for r in summary["results"]]
    notes = [(name, info) for name, info in notes if info]
    if notes:
        lines += ["", "Settings:", ""]
        lines += [f"- {name}: " + ", ".join(f"{k} = {v}" for k, v in info.items())
                  for name, info in notes]
    if any(r.get("heldout_coverage_90") is not None for r in summary["results"]):
        lines += ["", "Held-out coverage: every 5th projection angle held out, the method rerun "
                  "on the rest, and the share of held-out measurements inside the posterior "
                  "predictive's 90% interval (no ground truth; docs/validation.md). Coverage is "
                  "measured on the truth image, held-out coverage on measurements, where the noise "
                  "adds to every interval."]
    lines += ["", "Truth:", "", "![truth](truth.png)", ""]
    if posterior_methods:
        lines += ["## Calibration", "", "![calibration curves](calibration_curves.png)", ""]
        for name in posterior_methods:
            lines += [f"### {name}", "", f"![{name}]({slug(name)}_panel.png)", "",
                      f"ArviZ: `{slug(name)}.nc`, report: `{slug(name)}_calibration.json`", ""]
    else:
        lines += ["Point estimates: " + ", ".join(
            f"![{r['method']}]({slug(r['method'])}.png)" for r in summary["results"])]
    return "\n".join(lines) + "\n"
