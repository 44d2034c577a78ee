"""SUPN inference benchmark: MAP methods, posterior samplers over z, exact x samples, dense vs SLQ evidence.

Usage::

    python benchmarks/supn_inference.py [--images 8] [--nuts-draws 50] [--json out.json]
                                        [--patches PATH] [--skip-nuts] [--sizes 28 64 128]
                                        [--posterior-only] [--draws 500] [--old-nuts-budget 1800]
    python benchmarks/supn_inference.py --preconditioned64 [--draws 50] [--problems CT]
                                        [--samplers none] [--json out.json]

``--preconditioned64`` (issue 25): ``patches64-supn`` on one 64² natural test crop with
parallel-beam CT (60 angles), radial MRI (40 spokes) and a Gaussian deblur (σ = 1.5 px):
seconds per value + gradient of the collapsed log-likelihood on the dense path (the
reference), plain SLQ and the preconditioned path, with each path's error against the
dense value; then the library-default samplers (preconditioned surrogate, exact check per
draw): Laplace, Laplace-IS and NUTS — wall time, PSIS k̂, importance ESS, the surrogate's
measured error, min ESS and ESS/s, R-hat, 90 % coverage and PSNR. ``--samplers`` picks
methods by name (``none``: gradients only); ``--nuts-probes``, ``--nuts-warmup``,
``--parallel-chains`` and ``--nuts-problems`` set up the NUTS rows. 128² is not run: no 128² SUPN prior ships (a SUPN prior has one image
size), and the exact check would be a 16,384² Cholesky (2 GB, about a minute) per draw.

Posterior table (issue 11): one test image per problem — CT 28² (10, 20
angles) and MRI 28² (30 spokes) with ``digits-supn``, CT 32² natural crops
with ``patches-supn``, CT 64² with ``patches64-supn`` when shipped — and the
samplers of ``z``: issue 9's NUTS (diagonal mass, MAP + jitter start; stopped
after ``--old-nuts-budget`` seconds, reported as "> budget"), the
Hessian-preconditioned NUTS (library defaults; with ``thin=2``; with ``thin=2``
and the two chains in parallel processes, one core each), Laplace and
Laplace-IS (``--samplers`` selects by substring), each 2 chains ×
``--draws`` draws (issue 9's NUTS warm-up = draws, the new one the library
default). Columns: wall time, min/mean bulk ESS, min tail ESS and
min ESS/s over the latent coordinates (ArviZ), divergences, max R-hat, PSIS
k̂, 90 % interval coverage of the true pixels, PSNR of the posterior mean.

Problems: 28×28 test digits with radial MRI (30 spokes, σ = 5 % of mean |Ax|)
and the ``digits-*`` priors; 32×32 held-out natural patches with parallel-beam
CT (30 angles) and ``patches-supn`` (``load_pretrained`` if shipped, else the
checkpoint given by ``--patches``). References measured in the same run: the
zero-filled / FBP reconstruction for PSNR, the dense evidence for SLQ timing,
the Cholesky solver for CG x-sampling.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
import json
import math
import sys
import time
from pathlib import Path

import arviz as az
import numpy as np
import torch

from bayes_recon import operators as ops
from bayes_recon.data import digits, natural_patches, simulate
from bayes_recon.models.marginal import SLQConfig, collapsed_log_likelihood, decode64
from bayes_recon.models.exact_conditional import GaussianImagePosterior, XSolverConfig
from bayes_recon.inference.map import MAP_METHODS, MAPConfig, map_estimate
from bayes_recon.inference.sampling import HESSIAN_WARMUP, NUTS_SLQ, SamplingConfig, sample_posterior
from bayes_recon.metrics import psnr
from bayes_recon.models.pretrained import available_priors, load_pretrained
from bayes_recon.models.supn_vae import SUPNVAE


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def map_rows(problem, x, op, priors, rough_name):
    m = simulate(op, x, 0.05, seed=0)
    rough = ops.rough_reconstruction(op, m.y)
    rows = [{"problem": problem, "prior": "-", "method": rough_name,
             "psnr": float(psnr(x, rough.clamp(0, 1), data_range=1.0).mean()), "seconds_per_image": 0.0}]
    for name, prior in priors.items():
        for method in MAP_METHODS:
            seconds, values = 0.0, []
            for i in range(x.shape[0]):  # one image at a time: the per-image wall time users see
                rec, dt = _timed(lambda: map_estimate(m.y[i:i + 1], op, prior, m.noise_std, method=method,
                                                      config=MAPConfig(), progress=False))
                seconds += dt
                values.append(float(psnr(x[i:i + 1], rec.x.clamp(0, 1), data_range=1.0)))
            rows.append({"problem": problem, "prior": name, "method": method,
                         "psnr": float(np.mean(values)), "seconds_per_image": seconds / x.shape[0]})
            print(f"  {problem} {name} {method}: {rows[-1]['psnr']:.2f} dB, {rows[-1]['seconds_per_image']:.2f} s",
                  file=sys.stderr)
    return rows, m


def nuts_row(problem, x, op, prior, m, draws, chains):
    cfg = SamplingConfig(warmup=draws, max_tree_depth=6)
    post, dt = _timed(lambda: sample_posterior(m.y[:1], op, prior, m.noise_std, method="nuts",
                                               num_samples=draws, num_chains=chains, seed=0,
                                               config=cfg, progress=False))
    idata = az.from_dict(posterior={"z": post.z.double().numpy()})
    ess = az.ess(idata)["z"].values
    stats = post.sample_stats
    return {"problem": problem, "chains": chains, "draws": draws, "warmup": draws, "max_tree_depth": 6,
            "seconds": dt, "ess_min": float(ess.min()), "ess_mean": float(ess.mean()),
            "ess_min_per_s": float(ess.min()) / dt, "ess_mean_per_s": float(ess.mean()) / dt,
            "mean_tree_depth": float(stats["tree_depth"].mean()),
            "divergences": int(stats["diverging"].sum()),
            "psnr_mean": float(psnr(x[:1], post.mean[None].clamp(0, 1), data_range=1.0))}


def x_sample_rows(problem, op, prior, m, batch=16, reps=3):
    z = torch.randn(batch, prior.config.latent_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        dist = decode64(prior, z)
    y = m.y[:1].expand(batch, *m.y.shape[1:])
    rows = []
    for solver in ("cholesky", "cg"):
        best = math.inf
        for _ in range(reps):
            post = GaussianImagePosterior(dist, y, op, m.noise_std, XSolverConfig(solver=solver, cg_tol=1e-6))
            _, dt = _timed(lambda: post.sample(1, seed=0))
            best = min(best, dt)
        rows.append({"problem": problem, "solver": solver, "ms_per_sample": 1e3 * best / batch,
                     "cg_iterations": None if post.last_cg is None else post.last_cg.iterations})
    ref = rows[0]["ms_per_sample"]
    for r in rows:
        r["ratio_to_cholesky"] = r["ms_per_sample"] / ref
    return rows


def evidence_rows(sizes, reps=2):
    rows = []
    for size in sizes:
        torch.manual_seed(0)
        prior = SUPNVAE(image_size=size, latent_dim=16, widths=(32, 64), radius=2).eval()
        with torch.no_grad():  # untrained heads give a diagonal precision: make it structured
            prior.off_diag_head.bias.normal_(0.0, 0.3)
        op = ops.MRI(size, ops.radial_mask(size, 30))
        x = prior.decode(torch.randn(1, 16)).sample()
        m = simulate(op, x, 0.05, seed=0)
        z = torch.zeros(1, 16, dtype=torch.float64)
        timings, values = {}, {}
        for method in ("dense", "slq"):
            if method == "dense" and size * size > 4096:
                timings[method] = None  # P would be N² float64 = 2 GB at 128²: not run
                continue
            best = math.inf
            for rep in range(reps + 1):  # first call warms caches (AᵀA for dense)
                zz = z.clone().requires_grad_(True)
                def run():
                    v = collapsed_log_likelihood(zz, m.y, op, prior, m.noise_std, method=method, slq=SLQConfig())
                    v.sum().backward()
                    return float(v.detach().sum())

                values[method], dt = _timed(run)
                if rep:
                    best = min(best, dt)
            timings[method] = best
        err = None if timings["dense"] is None else abs(values["slq"] - values["dense"])
        rows.append({"pixels": size * size, "size": size, "dense_s": timings["dense"], "slq_s": timings["slq"],
                     "log_lik": values.get("dense", values["slq"]), "slq_abs_error": err,
                     "slq_over_dense": None if timings["dense"] is None else timings["slq"] / timings["dense"]})
        print(f"  evidence {size}²: {timings}", file=sys.stderr)
    return rows


class _Budget(Exception):
    pass


def _alarm(signum, frame):
    raise _Budget()


def posterior_rows(problem, x, op, prior, draws, old_budget, seed=0, nuts_budget=None, evidence="auto",
                   samplers=None):
    """The four samplers on one image ``x`` ``(1, C, H, W)``; σ = 5 % of mean |Ax|."""
    import signal
    import warnings

    m = simulate(op, x, 0.05, seed=seed)
    settings = {
        "NUTS (issue 9: diagonal mass)": ("nuts", SamplingConfig(warmup=draws, mass="diagonal", init="map",
                                                                  adapt_mass_matrix=True, evidence=evidence)),
        "NUTS (Hessian mass, Laplace starts)": ("nuts", SamplingConfig(evidence=evidence)),  # library defaults
        # the same, keeping every second transition (2 × draws transitions per chain)
        "NUTS (Hessian mass, Laplace starts, thin 2)": ("nuts", SamplingConfig(evidence=evidence, thin=2)),
        # ... with the two chains at once, one core each
        "NUTS (Hessian mass, Laplace starts, thin 2, parallel chains)": (
            "nuts", SamplingConfig(evidence=evidence, thin=2, parallel_chains=True)),
        "Laplace": ("laplace", SamplingConfig(evidence=evidence)),
        "Laplace-IS": ("laplace-is", SamplingConfig(evidence=evidence)),
    }
    rows = []
    for name, (method, cfg) in settings.items():
        if samplers and not any(s in name for s in samplers):
            continue
        row = {"problem": problem, "sampler": name, "draws": draws}
        budget = old_budget if name.startswith("NUTS (issue 9") else (
            nuts_budget if name.startswith("NUTS") else None)
        if budget is not None and budget <= 0:  # not run: reported as such
            row.update(seconds=None, over_budget=None)
            rows.append(row)
            continue
        if budget is not None:
            signal.signal(signal.SIGALRM, _alarm)
            signal.alarm(int(budget))
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                post, dt = _timed(lambda: sample_posterior(m.y, op, prior, m.noise_std, method=method,
                                                           num_samples=draws, num_chains=2, seed=seed,
                                                           config=cfg, progress=False))
        except _Budget:
            row.update(seconds=None, over_budget=budget)
            rows.append(row)
            print(f"  {problem} {name}: > {budget} s", file=sys.stderr)
            continue
        finally:
            if budget is not None:
                signal.alarm(0)
        z = post.z.double().numpy()
        idata = az.from_dict(posterior={"z": z})
        ess = az.ess(idata)["z"].values
        ess_tail = az.ess(idata, method="tail")["z"].values
        lo, hi = post.quantile(0.05), post.quantile(0.95)
        truth = x[0].to(lo.dtype)
        stats = post.sample_stats
        row.update(
            seconds=dt, ess_min=float(ess.min()), ess_mean=float(ess.mean()), ess_min_per_s=float(ess.min()) / dt,
            ess_tail_min=float(ess_tail.min()),
            warmup=(cfg.warmup if cfg.warmup is not None else min(draws, HESSIAN_WARMUP)) if method == "nuts" else None,
            divergences=int(stats["diverging"].sum()) if "diverging" in stats else None,
            rhat=float(az.rhat(idata)["z"].values.max()) if method == "nuts" else None,
            rhat_bulk=float(az.rhat(idata, method="split")["z"].values.max()) if method == "nuts" else None,
            rhat_folded=float(az.rhat(idata, method="folded")["z"].values.max()) if method == "nuts" else None,
            khat=post.extras.get("psis_khat"),
            coverage90=float(((truth >= lo) & (truth <= hi)).double().mean()),
            psnr=float(psnr(x[:1], post.mean[None].clamp(0, 1).to(x.dtype), data_range=1.0)),
            warnings=sorted({w.category.__name__ for w in caught}),
            mean_steps=float(stats["num_steps"].mean()) if "num_steps" in stats else None,
        )
        rows.append(row)
        print(f"  {problem} {name}: {row}", file=sys.stderr)
    return rows


def problems64():
    """The 64² problems of the preconditioned table: one natural test crop, three operators."""
    x = natural_patches("test", 64, 1, seed=1)
    return [("CT 64² (60 angles)", x, ops.ParallelBeamCT(64, 60)),
            ("MRI 64² (radial, 40 spokes)", x, ops.MRI(64, ops.radial_mask(64, 40))),
            ("deblur 64² (Gaussian σ = 1.5 px)", x, ops.Blur(64, ops.gaussian_kernel(1.5, 9)))]


def gradient_rows(problem, x, op, prior, reps=2):
    """Seconds per value + gradient of the collapsed log-likelihood: dense, plain SLQ, preconditioned.

    At ``z = z₀ + 0.1·ε`` (``z₀`` the encoder's latent, ``ε`` standard normal; the reference of the
    preconditioned path built at ``z₀``), with each path's error against the dense value.
    """
    from bayes_recon.inference.latent_map import initial_latent
    from bayes_recon.models.marginal import gram_matrix
    from bayes_recon.models.preconditioned import PrecisionReference

    m = simulate(op, x, 0.05, seed=0)
    z0 = initial_latent(m.y, op, prior).double()
    gram_matrix(op)  # cached once per operator, as the samplers do
    ref, ref_s = _timed(lambda: PrecisionReference.from_distribution(decode64(prior, z0), op, m.noise_std))
    z = z0 + 0.1 * torch.randn(z0.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    paths = {"dense": ("dense", None), "plain SLQ": ("slq", SLQConfig()),
             "preconditioned": ("slq", SLQConfig(preconditioner=ref)),
             "preconditioned NUTS": ("slq", replace(NUTS_SLQ, preconditioner=ref, solve_dtype="float64")),
             "preconditioned NUTS float32": ("slq", replace(NUTS_SLQ, preconditioner=ref, solve_dtype="float32"))}
    out = {"problem": problem, "reference_s": ref_s}
    for name, (method, slq) in paths.items():
        best = math.inf
        for _ in range(reps):
            zz = z.clone().requires_grad_(True)

            def run():
                v = collapsed_log_likelihood(zz, m.y, op, prior, m.noise_std, method=method, slq=slq)
                v.sum().backward()
                return float(v.detach().sum())

            value, dt = _timed(run)
            best = min(best, dt)
        out[f"{name}_s"] = best
        out[f"{name}_value"] = value
    for name in ("plain SLQ", "preconditioned", "preconditioned NUTS", "preconditioned NUTS float32"):
        out[f"{name}_error"] = out[f"{name}_value"] - out["dense_value"]
    print(f"  {problem} gradients: {out}", file=sys.stderr)
    return out


def mixing_diagnostics(post, max_tree_depth: int) -> dict:
    """Why a NUTS run mixes badly: each chain's adapted step size and mean tree depth, the share of
    draws at the depth bound, and how far apart the chains' means are (in posterior sds, max over z)."""
    st, z = post.sample_stats, post.z.double()
    chain_means = z.mean(1)
    gap = (chain_means.max(0).values - chain_means.min(0).values) / z.reshape(-1, z.shape[-1]).std(0)
    return {"step_size": [float(s) for s in st["step_size"][:, -1]],
            "mean_tree_depth": [float(t) for t in st["tree_depth"].mean(1)],
            "max_tree_depth_hits": float((st["tree_depth"] >= max_tree_depth).mean()),
            "chain_mean_gap_sd": float(gap.max())}


def sampler64_rows(problem, x, op, prior, draws, methods, nuts_config, nuts_draws, seed=0, laplace_config=None):
    """At 64²: ``evidence="auto"`` → preconditioned surrogate, exact check per draw.

    The Laplace methods with ``laplace_config`` (None: library defaults); NUTS with ``nuts_config``.
    """
    import warnings

    m = simulate(op, x, 0.05, seed=seed)
    rows = []
    for method in methods:
        cfg = nuts_config if method == "nuts" else laplace_config
        n = nuts_draws if method == "nuts" else draws
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            post, dt = _timed(lambda: sample_posterior(m.y, op, prior, m.noise_std, method=method,
                                                       num_samples=n, num_chains=2, seed=seed,
                                                       config=cfg, progress=False))
        e = post.extras
        lo, hi = post.quantile(0.05), post.quantile(0.95)
        truth = x[0].to(lo.dtype)
        row = {"problem": problem, "method": method, "draws": n, "seconds": dt,
               "khat": e.get("psis_khat"), "importance_ess": e.get("importance_ess"),
               "surrogate_error_std": e.get("surrogate_error_std"),
               "map_newton_decrement": e.get("map_newton_decrement"),
               "coverage90": float(((truth >= lo) & (truth <= hi)).double().mean()),
               "psnr": float(psnr(x[:1], post.mean[None].clamp(0, 1).to(x.dtype), data_range=1.0)),
               "warnings": sorted({w.category.__name__ for w in caught})}
        if method == "nuts":
            idata = az.from_dict(posterior={"z": post.z.double().numpy()})
            ess = az.ess(idata)["z"].values
            row.update(ess_min=float(ess.min()), ess_min_per_s=float(ess.min()) / dt, ess_mean=float(ess.mean()),
                       acceptance_rate=[float(a) for a in e["acceptance_rate"]],
                       rhat=float(az.rhat(idata)["z"].values.max()),
                       mean_steps=float(post.sample_stats["num_steps"].mean()),
                       divergences=int(post.sample_stats["diverging"].sum()),
                       **mixing_diagnostics(post, nuts_config.max_tree_depth))
        rows.append(row)
        print(f"  {problem} {method}: {row}", file=sys.stderr)
    return rows


def print_table64(grads, samplers):
    print("\n### 64² with patches64-supn: seconds per value + gradient (z = z₀ + 0.1ε)\n")
    print("| problem | dense (s) | plain SLQ (s) | preconditioned (s) | dense / preconditioned "
          "| preconditioned, NUTS's 4 + 64 probes (s) | dense / that | same, float32 solves (s) "
          "| float64 / float32 | reference (s) | plain SLQ error (nats) | preconditioned error (nats) "
          "| NUTS's, float32 − float64 (nats) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in grads:
        nuts_s, f32_s = r.get("preconditioned NUTS_s"), r.get("preconditioned NUTS float32_s")
        f32_diff = (None if f32_s is None else
                    r["preconditioned NUTS float32_value"] - r["preconditioned NUTS_value"])
        print(f"| {r['problem']} | {r['dense_s']:.2f} | {r['plain SLQ_s']:.2f} | {r['preconditioned_s']:.2f} "
              f"| {r['dense_s'] / r['preconditioned_s']:.1f} | {_fmt(nuts_s)} "
              f"| {_fmt(None if nuts_s is None else r['dense_s'] / nuts_s, '.1f')} | {_fmt(f32_s)} "
              f"| {_fmt(None if f32_s is None else nuts_s / f32_s)} | {r['reference_s']:.1f} "
              f"| {r['plain SLQ_error']:+.1f} | {r['preconditioned_error']:+.3f} | {_fmt(f32_diff, '+.4f')} |")
    print("\n### 64² samplers (library defaults: preconditioned surrogate + exact check; 2 chains)\n")
    print("| problem | method | draws/chain | s | k̂ | importance ESS | surrogate error sd (nats) | min ESS "
          "| mean ESS | min ESS/s | max R-hat | coverage 90 % | PSNR of mean |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in samplers:
        print(f"| {r['problem']} | {r['method']} | {r['draws']} | {r['seconds']:.0f} | {_fmt(r['khat'])} "
              f"| {_fmt(r['importance_ess'], '.0f')} | {_fmt(r['surrogate_error_std'], '.3f')} "
              f"| {_fmt(r.get('ess_min'), '.0f')} | {_fmt(r.get('ess_mean'), '.0f')} "
              f"| {_fmt(r.get('ess_min_per_s'), '.3f')} "
              f"| {_fmt(r.get('rhat'), '.3f')} | {r['coverage90']:.3f} | {r['psnr']:.2f} |")


def posterior_problems(shipped):
    out = []
    if "digits-supn" in shipped:
        prior, x = load_pretrained("digits-supn"), digits("test", 28)[:1]
        out += [("CT 28² (10 angles)", x, ops.ParallelBeamCT(28, 10), prior),
                ("CT 28² (20 angles)", x, ops.ParallelBeamCT(28, 20), prior),
                ("MRI 28² (30 spokes)", x, ops.MRI(28, ops.radial_mask(28, 30)), prior)]
    if "patches-supn" in shipped:
        out.append(("CT 32² natural crop (30 angles)", natural_patches("test", 32, 1, seed=1),
                    ops.ParallelBeamCT(32, 30), load_pretrained("patches-supn")))
    if "patches64-supn" in shipped:
        out.append(("CT 64² natural crop (60 angles)", natural_patches("test", 64, 1, seed=1),
                    ops.ParallelBeamCT(64, 60), load_pretrained("patches64-supn")))
    return out


def print_posterior_table(rows):
    print("\n### Posterior over z (2 chains; warm-up: issue 9's NUTS = draws, Hessian NUTS = library default "
          f"min(draws, {HESSIAN_WARMUP}); σ = 5 % of mean |Ax|)\n")
    print("| problem | sampler | draws/chain | s | min ESS | mean ESS | min tail ESS | min ESS/s | divergences "
          "| max R-hat | k̂ | coverage 90 % | PSNR of mean | mean steps/draw |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r.get("seconds") is None:
            wall = "not run" if r["over_budget"] is None else f"> {r['over_budget'] / 60:.0f} min"
            print(f"| {r['problem']} | {r['sampler']} | {r['draws']} | {wall} | | | | | | | | | | |")
            continue
        print(f"| {r['problem']} | {r['sampler']} | {r['draws']} | {r['seconds']:.0f} | {r['ess_min']:.0f} "
              f"| {r['ess_mean']:.0f} | {r['ess_tail_min']:.0f} | {r['ess_min_per_s']:.2f} | {_fmt(r['divergences'], 'd')} "
              f"| {_fmt(r['rhat'], '.3f')} | {_fmt(r['khat'], '.2f')} | {r['coverage90']:.3f} "
              f"| {r['psnr']:.2f} | {_fmt(r['mean_steps'], '.1f')} |")


def _fmt(v, spec=".2f"):
    return "n/a" if v is None else format(v, spec)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--nuts-draws", type=int, default=50)
    ap.add_argument("--nuts-chains", type=int, default=2)
    ap.add_argument("--skip-nuts", action="store_true")
    ap.add_argument("--sizes", type=int, nargs="*", default=[28, 64, 128])
    ap.add_argument("--patches", type=Path, default=None, help="patches-supn checkpoint if not shipped")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--posterior-only", action="store_true", help="only the posterior-sampler table")
    ap.add_argument("--draws", type=int, default=500, help="draws per chain of the posterior table")
    ap.add_argument("--old-nuts-budget", type=float, default=1800.0,
                    help="seconds after which issue 9's NUTS is stopped and reported as '> budget' "
                         "(0: not run)")
    ap.add_argument("--problems", nargs="*", default=None, help="substrings selecting posterior problems")
    ap.add_argument("--samplers", nargs="*", default=None, help="substrings selecting samplers")
    ap.add_argument("--evidence", choices=("auto", "dense", "slq"), default="auto",
                    help="collapsed-likelihood path of the posterior table (auto: dense up to 1024 pixels)")
    ap.add_argument("--nuts-budget", type=float, default=None,
                    help="seconds after which the preconditioned NUTS is stopped (for the 64² row; 0: not run)")
    ap.add_argument("--preconditioned64", action="store_true",
                    help="only the 64² table of the preconditioned surrogate (issue 25)")
    ap.add_argument("--nuts-probes", type=int, default=None,
                    help="--preconditioned64: SLQ Lanczos probes of NUTS (default: the library's)")
    ap.add_argument("--nuts-warmup", type=int, default=None, help="--preconditioned64: NUTS warm-up")
    ap.add_argument("--nuts-quadratic-probes", type=int, default=None,
                    help="--preconditioned64: SLQConfig.quadratic_probes of NUTS (default: the library's)")
    ap.add_argument("--nuts-solve-dtype", choices=("float64", "float32"), default=None,
                    help="--preconditioned64: SLQConfig.solve_dtype of NUTS (default: the library's)")
    ap.add_argument("--laplace-solve-dtype", choices=("float64", "float32"), default=None,
                    help="--preconditioned64: SLQConfig.solve_dtype of the Laplace (default: the library's)")
    ap.add_argument("--nuts-problems", nargs="*", default=None,
                    help="--preconditioned64: substrings of the problems NUTS runs on (default all)")
    ap.add_argument("--parallel-chains", action="store_true", help="--preconditioned64: NUTS chains at once")
    ap.add_argument("--seed", type=int, default=0, help="--preconditioned64: noise and sampler seed")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    shipped = available_priors()
    if args.preconditioned64:
        prior = load_pretrained("patches64-supn")
        out = {"gradients": [], "samplers": []}
        for problem, x, op in problems64():
            if args.problems and not any(p in problem for p in args.problems):
                continue
            out["gradients"].append(gradient_rows(problem, x, op, prior))
            methods = [mth for mth in ("laplace", "laplace-is", "nuts")
                       if args.samplers is None or mth in args.samplers]
            if methods and args.nuts_problems and not any(p in problem for p in args.nuts_problems):
                methods = [mth for mth in methods if mth != "nuts"]
            probes = {k: v for k, v in (("num_probes", args.nuts_probes),
                                        ("quadratic_probes", args.nuts_quadratic_probes),
                                        ("solve_dtype", args.nuts_solve_dtype)) if v is not None}
            nuts_cfg = SamplingConfig(slq=replace(NUTS_SLQ, **probes),
                                      warmup=args.nuts_warmup,
                                      parallel_chains=args.parallel_chains)
            laplace_cfg = (None if args.laplace_solve_dtype is None else
                           SamplingConfig(slq=SLQConfig(solve_dtype=args.laplace_solve_dtype)))
            out["samplers"] += sampler64_rows(problem, x, op, prior, args.draws, methods, nuts_cfg,
                                              args.nuts_draws, seed=args.seed, laplace_config=laplace_cfg)
            if args.json:
                args.json.write_text(json.dumps(out, indent=2))
        print_table64(out["gradients"], out["samplers"])
        return
    rows = []
    for problem, x, op, prior in posterior_problems(shipped):
        if args.problems and not any(p in problem for p in args.problems):
            continue
        rows += posterior_rows(problem, x, op, prior, args.draws, args.old_nuts_budget,
                               nuts_budget=args.nuts_budget, evidence=args.evidence, samplers=args.samplers)
        if args.json:  # written after every problem: a long run keeps what it has measured
            args.json.write_text(json.dumps({"posterior": rows}, indent=2))
    print_posterior_table(rows)
    if args.posterior_only:
        if args.json:
            args.json.write_text(json.dumps({"posterior": rows}, indent=2))
        return
    result = {"posterior": rows, "map": [], "nuts": [], "x_samples": [], "evidence": []}

    digit_priors = {n: load_pretrained(n) for n in ("digits-supn", "digits-diagonal", "digits-identity")
                    if n in shipped}
    if digit_priors:
        x = digits("test", 28)[: args.images]
        op = ops.MRI(28, ops.radial_mask(28, 30))
        rows, m = map_rows("MRI 28² (30 spokes)", x, op, digit_priors, "zero-filled")
        result["map"] += rows
        prior = digit_priors.get("digits-supn")
        if prior is not None:
            result["x_samples"] += x_sample_rows("MRI 28²", op, prior, m)
            if not args.skip_nuts:
                result["nuts"].append(nuts_row("MRI 28² digits-supn", x, op, prior, m,
                                               args.nuts_draws, args.nuts_chains))
    patches = load_pretrained("patches-supn") if "patches-supn" in shipped else (
        SUPNVAE.load(args.patches).eval() if args.patches else None)
    if patches is not None:
        x = natural_patches("test", 32, args.images, seed=1)
        op = ops.ParallelBeamCT(32, 30)
        rows, m = map_rows("CT 32² (30 angles)", x, op, {"patches-supn": patches}, "FBP")
        result["map"] += rows
        result["x_samples"] += x_sample_rows("CT 32²", op, patches, m)
        if not args.skip_nuts:
            result["nuts"].append(nuts_row("CT 32² patches-supn", x, op, patches, m,
                                           args.nuts_draws, args.nuts_chains))
    result["evidence"] = evidence_rows(args.sizes)

    print("### MAP reconstruction (mean over test images, σ = 5 % of mean |Ax|)\n")
    print("| problem | prior | method | PSNR (dB) | s / image |")
    print("|---|---|---|---|---|")
    for r in result["map"]:
        print(f"| {r['problem']} | {r['prior']} | {r['method']} | {r['psnr']:.2f} | {r['seconds_per_image']:.2f} |")
    if result["nuts"]:
        print("\n### NUTS over z (collapsed likelihood, dense path)\n")
        print("| problem | chains × draws (+ warm-up) | max depth | mean depth | divergences | s | "
              "min ESS | mean ESS | min ESS/s | mean ESS/s | PSNR of mean |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in result["nuts"]:
            print(f"| {r['problem']} | {r['chains']} × {r['draws']} (+{r['warmup']}) | {r['max_tree_depth']} "
                  f"| {r['mean_tree_depth']:.2f} | {r['divergences']} | {r['seconds']:.1f} | {r['ess_min']:.1f} "
                  f"| {r['ess_mean']:.1f} | {r['ess_min_per_s']:.3f} | {r['ess_mean_per_s']:.3f} | {r['psnr_mean']:.2f} |")
    if result["x_samples"]:
        print("\n### Exact x | z, y samples (batch of 16 latents, one sample each)\n")
        print("| problem | solver | ms / sample | ratio to Cholesky | CG iterations |")
        print("|---|---|---|---|---|")
        for r in result["x_samples"]:
            print(f"| {r['problem']} | {r['solver']} | {r['ms_per_sample']:.2f} | {r['ratio_to_cholesky']:.2f} "
                  f"| {_fmt(r['cg_iterations'], 'd')} |")
    print("\n### Collapsed log-likelihood + gradient: dense Cholesky vs SLQ (untrained prior, MRI 30 spokes)\n")
    print("| image | pixels | dense (s) | SLQ (s) | SLQ / dense | log-likelihood (nats) | SLQ abs. error (nats) |")
    print("|---|---|---|---|---|---|---|")
    for r in result["evidence"]:
        print(f"| {r['size']}² | {r['pixels']} | {_fmt(r['dense_s'], '.3f')} | {_fmt(r['slq_s'], '.3f')} "
              f"| {_fmt(r['slq_over_dense'])} | {r['log_lik']:.1f} | {_fmt(r['slq_abs_error'], '.2f')} |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
