"""How noisy is the held-out discrepancy fit? Every fold's conditional evidence, on training images (issue 21).

Usage: python benchmarks/linearised_heldout_folds.py SPLIT SIZE INDICES [--folds 4]
       [--predcp-normalisation sum|mean] [--json PATH]

Same problems as ``benchmarks/linearised_calibration.py`` (5 % noise, σ known, seeds =
image index, library defaults). Per image: the full fit's Laplace (``calibration="none"``),
then, for *every* fold ``k`` of ``--folds`` (the library uses fold 0 only), a DIP + Laplace
on the other folds and its conditional evidence ``log p(y_k | y_-k, τ)`` on a grid of ``τ``.
Reported: each fold's ``τ_k``, the ``τ`` that maximises the sum over folds, and — from the
truth, which only scores — the full model's Gaussian 90 % coverage and mean per-pixel log
density at each ``τ`` on the grid, with the ``τ`` that would give 0.90 ("oracle"). This says
whether fold 0's ``τ`` misses the oracle by noise (folds disagree; their sum is closer) or
by bias (folds agree). Use it on training images only.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time

import torch

from bayes_recon.data import simulate
from bayes_recon.inference.dip import fit_dip
from bayes_recon.inference.linearised import DiscrepancyModel, fit_discrepancy
from bayes_recon.inference.linearised.laplace import LinearisedLaplace
from bayes_recon.inference.linearised.pipeline import LinearisedDIPConfig, dip_tv_weight, linearised_dip
from bayes_recon.operators.holdout import split_measurements
from linearised_calibration import ANGLES, problem, write_rows  # benchmarks/ is the script's directory

Z90 = 1.6448536269514722


def gaussian_scores(model: DiscrepancyModel, truth: torch.Tensor, taus) -> list[dict]:
    err = truth.reshape(-1).to(torch.float64) - model.x_star
    out = []
    for tau in taus:
        var = model.variance(tau)
        cov = float((err.abs() <= Z90 * var.sqrt()).double().mean())
        ll = float((-0.5 * (err**2 / var + var.log() + math.log(2 * math.pi))).mean())
        out.append({"tau": tau, "coverage90": cov, "log_density": ll, "mean_std": float(var.sqrt().mean())})
    return out


def fold_models(op, meas, index, cfg, res, folds):
    """Per fold ``k``: ``(k, split, DiscrepancyModel)`` of a DIP + Laplace fitted without fold ``k``.

    Same settings, seed and path as the full fit ``res``; a generator, so one fold's Laplace
    is held at a time unless the caller keeps it.
    """
    gamma = dip_tv_weight(cfg, op, meas.y, meas.noise_std)
    fcfg = dataclasses.replace(cfg.laplace, path=res.laplace.path, memory_budget=res.laplace.memory_budget)
    for k in range(folds):
        split = split_measurements(op, k, folds, None, seed=index)
        fit = fit_dip(split.fit_measurement(meas.y), split.fit_op, gamma, cfg.iterations, lr=cfg.lr,
                      input=cfg.input, seed=index, network_config=cfg.network, progress=False)
        fold = LinearisedLaplace(fit, split.fit_op, noise_std=meas.noise_std, config=fcfg, progress=False)
        fold.optimise_evidence(cfg.evidence_iterations, predcp_scale=cfg.predcp_scale, progress=False)
        yield k, split, DiscrepancyModel(fold)


def run_image(size, index, x, op, folds, normalisation="sum"):
    meas = simulate(op, x, 0.05, seed=index)
    cfg = LinearisedDIPConfig(calibration="none", heldout_folds=folds)
    if normalisation == "mean":   # the same prior at 28² (κ = 20 · 784), the same per pixel at every size
        cfg = dataclasses.replace(cfg, predcp_scale=cfg.predcp_scale * 784,
                                  laplace=dataclasses.replace(cfg.laplace, predcp_normalisation="mean"))
    t0 = time.perf_counter()
    res = linearised_dip(meas.y, op, meas.noise_std, cfg, seed=index, progress=False)
    full = DiscrepancyModel(res.laplace)
    scale = float(full.x_star.pow(2).mean().sqrt())
    taus = [0.0] + [scale * 10 ** e for e in torch.linspace(-3, 0, 31).tolist()]
    fold_rows, curves, nested_fits = [], [], []
    for k, split, model in fold_models(op, meas, index, cfg, res, folds):
        y_held = split.held_measurement(meas.y)
        nested = model.heldout_evidence(split.held_op, y_held, full=full)
        evidence = dataclasses.replace(nested, excess_variance=0.0)
        curve = [evidence.log_prob(t) for t in taus]
        fitk = fit_discrepancy(evidence)
        fitc = fit_discrepancy(nested)
        fold_rows.append({"fold": k, **fitk.to_dict(), "excess_variance": nested.excess_variance,
                          "std_nested": fitc.std, "interval_nested": list(fitc.interval)})
        curves.append(curve)
        nested_fits.append(nested)
        del model, evidence
        print(f"  image {index} fold {k}: τ = {fitk.std:.4f}, gain {fitk.log_conditional_evidence - fitk.log_conditional_evidence_without:.2f} nats; "
              f"e = {nested.excess_variance:.3g}, nested τ = {fitc.std:.4f}", flush=True)
    total = [sum(c[i] for c in curves) for i in range(len(taus))]
    best = max(range(len(taus)), key=lambda i: total[i])
    grid = gaussian_scores(full, x[0], taus)
    oracle = min(grid, key=lambda g: abs(g["coverage90"] - 0.9))
    best_ll = max(grid, key=lambda g: g["log_density"])
    fold0 = fold_rows[0]["std"]
    nested0, nested_sum = fold_rows[0]["std_nested"], fit_discrepancy(nested_fits).std
    return {"tau_nested_fold0": nested0, "tau_nested_sum": nested_sum,
            "coverage_nested_fold0": gaussian_scores(full, x[0], [nested0])[0],
            "coverage_nested_sum": gaussian_scores(full, x[0], [nested_sum])[0],
            "coverage_sum_exact": gaussian_scores(full, x[0], [fit_discrepancy(
                [dataclasses.replace(f, excess_variance=0.0) for f in nested_fits]).std])[0],"size": size, "image": index, "folds": fold_rows, "taus": taus, "curves": curves, "grid": grid,
            "tau_sum": taus[best], "tau_fold0": fold0, "tau_oracle90": oracle["tau"], "tau_best_ll": best_ll["tau"],
            "coverage_fold0": gaussian_scores(full, x[0], [fold0])[0],
            "coverage_sum": grid[best], "seconds": time.perf_counter() - t0}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("split", choices=("train", "test"))
    ap.add_argument("size", type=int, choices=sorted(ANGLES))
    ap.add_argument("indices")
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--predcp-normalisation", choices=("sum", "mean"), default="sum",
                    help="'mean': the TV-PredCP per pixel with κ = 20·784 (the default prior at 28²)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    indices, op, truths = problem(args.split, args.size, args.indices)
    rows = []
    for i in indices:
        row = run_image(args.size, i, truths[i:i + 1], op, args.folds, args.predcp_normalisation)
        rows.append(row)
        print(f"{args.split} {args.size}² image {i}: τ fold0 {row['tau_fold0']:.4f} "
              f"(cov {row['coverage_fold0']['coverage90']:.3f}), folds "
              f"{[round(f['std'], 4) for f in row['folds']]}, τ sum {row['tau_sum']:.4f} "
              f"(cov {row['coverage_sum']['coverage90']:.3f}), oracle {row['tau_oracle90']:.4f}, "
              f"best LL {row['tau_best_ll']:.4f}, {row['seconds']:.0f} s; nested τ fold0 "
              f"{row['tau_nested_fold0']:.4f} (cov {row['coverage_nested_fold0']['coverage90']:.3f}, "
              f"LL {row['coverage_nested_fold0']['log_density']:.3f}), sum {row['tau_nested_sum']:.4f} "
              f"(cov {row['coverage_nested_sum']['coverage90']:.3f}, LL {row['coverage_nested_sum']['log_density']:.3f})",
              flush=True)
        if args.json:
            write_rows(args.json, vars(args), rows)


if __name__ == "__main__":
    main()
