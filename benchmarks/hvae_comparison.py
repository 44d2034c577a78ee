"""PnP-HVAE against Adam on the same objective, JPMAP, SUPN MAP and TV (issue 22, docs/hvae.md).

Usage::

    python benchmarks/hvae_comparison.py sweep [--images 3]       # training images: pick τ
    python benchmarks/hvae_comparison.py eval DATASET [--images 4] [--methods ...]
    python benchmarks/hvae_comparison.py calibrate DATASET [--images 3]   # hvae-svi coverage
    python benchmarks/hvae_comparison.py table                    # markdown for docs/hvae.md

Rows (``simulate(op, x, 0.05, seed=index)``, 5 % relative noise, σ known to every method):

    gauss    Gaussian blur, σ = 1 pixel          motion   motion blur, 9 pixels at 30°
    sr2      ×2 super-resolution (2×2 means)     sr4      ×4 super-resolution
    inpaint  50 % of the pixels observed (mask seeded by the image index)

on held-out 32² natural crops (``patches-*`` priors) and 28² digits (``digits-*``).
Methods: ``pnp-hvae`` (the library default τ, chosen by ``sweep`` on *training* images:
best mean PSNR over the five rows of both datasets), ``hvae-adam`` (Adam on the same J, same
τ, same start), ``jpmap`` with the single-level diagonal VAE (``*-diagonal``), SUPN MAP
(``jpmap`` with ``*-supn``), ``tv`` (the registry's default weight). One JSON per run under
``benchmarks/results/hvae/`` (existing files are skipped: runs resume). Seconds are wall
time on this machine, two runs sharing its two cores.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

ROWS = ("gauss", "motion", "sr2", "sr4", "inpaint")
DATASETS = ("patches", "digits")
METHODS = ("pnp-hvae", "hvae-adam", "jpmap-diagonal", "supn-map", "tv")
TEMPERATURES = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
NOISE = 0.05
ADAM_STEPS = 500
OUT = Path(__file__).resolve().parent / "results" / "hvae"


def build(dataset: str, row: str, split: str, index: int):
    """``(truth, op, y, noise_std)`` of one row."""
    from bayes_recon.data import digits, natural_patches, simulate
    from bayes_recon.operators import Blur, Downsampling, Inpainting, gaussian_kernel, motion_kernel

    if dataset == "patches":
        truth, size = natural_patches(split, 32, index + 1, seed=0)[index:index + 1], 32
    else:
        truth, size = digits(split, 28)[index:index + 1], 28
    if row == "gauss":
        op = Blur(size, gaussian_kernel(1.0))
    elif row == "motion":
        op = Blur(size, motion_kernel(9, 30))
    elif row in ("sr2", "sr4"):
        op = Downsampling(size, int(row[-1]))
    else:
        g = torch.Generator().manual_seed(1000 + index)
        op = Inpainting(torch.rand(1, size, size, generator=g) < 0.5)
    meas = simulate(op, truth, relative_noise=NOISE, seed=index)
    return truth, op, meas.y, meas.noise_std


def run(method: str, dataset: str, truth, op, y, sigma, temperature=None, seed: int = 0) -> dict:
    from bayes_recon.app.methods import MethodSettings, run_method
    from bayes_recon.inference import HVAEMAPConfig, MAPConfig, map_estimate
    from bayes_recon.metrics import psnr, ssim
    from bayes_recon.models import load_pretrained, load_pretrained_hvae

    info = {}
    start = time.perf_counter()
    if method in ("pnp-hvae", "hvae-adam"):
        prior = load_pretrained_hvae(f"{dataset}-hvae")
        cfg = (HVAEMAPConfig() if method == "pnp-hvae" else
               HVAEMAPConfig(max_iterations=ADAM_STEPS, tol=1e-5))
        if temperature is not None:
            cfg.temperature = temperature
        rec = map_estimate(y, op, prior, sigma, method=method, config=cfg, progress=False)
        x = rec.x
        info = {"iterations": len(rec.objective_history), "converged": rec.converged,
                "final_objective": rec.objective_history[-1], "group_temperatures": list(rec.temperature),
                "contraction": rec.contraction, "cg_converged": rec.cg_converged}
    elif method in ("jpmap-diagonal", "supn-map"):
        kind = "diagonal" if method == "jpmap-diagonal" else "supn"
        prior = load_pretrained(f"{dataset}-{kind}")
        rec = map_estimate(y, op, prior, sigma, method="jpmap", config=MAPConfig(seed=seed),
                           progress=False)
        x = rec.x
        info = {"iterations": len(rec.objective_history), "converged": rec.converged}
    else:
        x = run_method(MethodSettings("tv", progress=False, seed=seed), op, y, sigma).x
    seconds = time.perf_counter() - start
    x = x.detach().to(torch.float64)
    return {"psnr": float(psnr(truth.double(), x, data_range=1.0)[0]),
            "ssim": float(ssim(truth.double(), x, data_range=1.0)[0]),
            "seconds": seconds, **info}


def _save(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))


def cmd_sweep(args) -> None:
    for dataset in args.datasets.split(","):
        for row in ROWS:
            for index in range(args.images):
                truth, op, y, sigma = build(dataset, row, "train", index)
                for t in TEMPERATURES:
                    path = OUT / "sweep" / f"{dataset}-{row}-{index}-t{t}.json"
                    if path.exists():
                        continue
                    r = run("pnp-hvae", dataset, truth, op, y, sigma, temperature=t)
                    _save(path, {"dataset": dataset, "row": row, "index": index, "split": "train",
                                 "temperature": t, **r})
                    print(path.name, f"{r['psnr']:.2f}", flush=True)


def cmd_eval(args) -> None:
    methods = args.methods.split(",") if args.methods else METHODS
    for row in ROWS:
        for index in range(args.images):
            truth, op, y, sigma = build(args.dataset, row, "test", index)
            for method in methods:
                path = OUT / "eval" / f"{args.dataset}-{row}-{index}-{method}.json"
                if not path.exists():
                    r = run(method, args.dataset, truth, op, y, sigma, seed=index)
                    _save(path, {"dataset": args.dataset, "row": row, "index": index,
                                 "split": "test", "method": method, **r})
                    print(path.name, f"{r['psnr']:.2f} {r['seconds']:.1f}s", flush=True)
            if args.temperatures:
                for t in TEMPERATURES:
                    path = OUT / "test-sweep" / f"{args.dataset}-{row}-{index}-t{t}.json"
                    if not path.exists():
                        r = run("pnp-hvae", args.dataset, truth, op, y, sigma, temperature=t)
                        _save(path, {"dataset": args.dataset, "row": row, "index": index,
                                     "split": "test", "temperature": t, **r})


def cmd_calibrate(args) -> None:
    from bayes_recon.diagnostics import calibration
    from bayes_recon.inference import sample_posterior
    from bayes_recon.models import load_pretrained_hvae

    prior = load_pretrained_hvae(f"{args.dataset}-hvae")
    for row in args.rows.split(","):
        for index in range(args.images):
            path = OUT / "calibration" / f"{args.dataset}-{row}-{index}.json"
            if path.exists():
                continue
            truth, op, y, sigma = build(args.dataset, row, "test", index)
            start = time.perf_counter()
            post = sample_posterior(y, op, prior, sigma, method="hvae-svi", num_samples=100,
                                    num_chains=2, seed=index, progress=False)
            seconds = time.perf_counter() - start
            rep = calibration(post, truth, patch_sizes=()).to_dict()
            from bayes_recon.metrics import psnr
            rec = {"dataset": args.dataset, "row": row, "index": index, "seconds": seconds,
                   "psnr_mean": float(psnr(truth.double(), post.mean[None].double(), data_range=1.0)[0]),
                   **{k: rep[k] for k in ("levels", "coverage", "calibration_error",
                                          "test_log_likelihood")}}
            _save(path, rec)
            print(path.name, rec["coverage"], flush=True)


def _load(folder: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((OUT / folder).glob("*.json"))]


def cmd_table(args) -> None:
    sweep = _load("sweep")
    if sweep:
        print("Training images (`sweep`), PnP-HVAE mean PSNR over the rows and images:\n")
        print("| τ | " + " | ".join(DATASETS) + " | both |")
        print("|---|" + "---|" * (len(DATASETS) + 1))
        for t in TEMPERATURES:
            vals = [np.mean([r["psnr"] for r in sweep if r["temperature"] == t and r["dataset"] == d])
                    for d in DATASETS]
            both = np.mean([r["psnr"] for r in sweep if r["temperature"] == t])
            print(f"| {t} | " + " | ".join(f"{v:.2f}" for v in vals) + f" | {both:.2f} |")
        print()
    ev = _load("eval")
    for dataset in DATASETS:
        rows = [r for r in ev if r["dataset"] == dataset]
        if not rows:
            continue
        n = len({r["index"] for r in rows})
        print(f"Held-out {dataset} ({n} test images per row), PSNR / SSIM / seconds:\n")
        print("| row | " + " | ".join(METHODS) + " |")
        print("|---|" + "---|" * len(METHODS))
        for row in ROWS:
            cells = []
            for m in METHODS:
                rs = [r for r in rows if r["row"] == row and r["method"] == m]
                cells.append("—" if not rs else
                             f"{np.mean([r['psnr'] for r in rs]):.2f} / "
                             f"{np.mean([r['ssim'] for r in rs]):.3f} / "
                             f"{np.mean([r['seconds'] for r in rs]):.1f}")
            print(f"| {row} | " + " | ".join(cells) + " |")
        print()
    ts = _load("test-sweep")
    if ts:
        print("Held-out temperature sweep, PnP-HVAE mean PSNR (information only; the default "
              "was fixed on training images):\n")
        print("| dataset | row | " + " | ".join(f"τ={t}" for t in TEMPERATURES) + " |")
        print("|---|---|" + "---|" * len(TEMPERATURES))
        for dataset in DATASETS:
            for row in ROWS:
                vals = [[r["psnr"] for r in ts if r["dataset"] == dataset and r["row"] == row
                         and r["temperature"] == t] for t in TEMPERATURES]
                if any(vals):
                    print(f"| {dataset} | {row} | " + " | ".join(
                        f"{np.mean(v):.2f}" if v else "—" for v in vals) + " |")
        print()
    cal = _load("calibration")
    if cal:
        print("hvae-svi on held-out images (2 × 100 draws), coverage at 50 / 90 / 95 %:\n")
        print("| dataset | row | images | cov. 50 / 90 / 95 % | min cov. 90 % | test LL | PSNR (mean) | s |")
        print("|---|---|---|---|---|---|---|---|")
        keys = sorted({(r["dataset"], r["row"]) for r in cal})
        for dataset, row in keys:
            rs = [r for r in cal if r["dataset"] == dataset and r["row"] == row]
            lv = rs[0]["levels"]
            cov = np.mean([r["coverage"] for r in rs], axis=0)
            i90 = lv.index(0.9)
            pick = [cov[lv.index(a)] for a in (0.5, 0.9, 0.95)]
            print(f"| {dataset} | {row} | {len(rs)} | " + " / ".join(f"{c:.3f}" for c in pick)
                  + f" | {min(r['coverage'][i90] for r in rs):.3f} | "
                  f"{np.mean([r['test_log_likelihood'] for r in rs]):.3f} | "
                  f"{np.mean([r['psnr_mean'] for r in rs]):.2f} | "
                  f"{np.mean([r['seconds'] for r in rs]):.1f} |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("sweep")
    p.add_argument("--images", type=int, default=3)
    p.add_argument("--datasets", default=",".join(DATASETS))
    p = sub.add_parser("eval")
    p.add_argument("dataset", choices=DATASETS)
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--methods", default=None)
    p.add_argument("--temperatures", action="store_true", help="also the held-out τ sweep")
    p = sub.add_parser("calibrate")
    p.add_argument("dataset", choices=DATASETS)
    p.add_argument("--images", type=int, default=3)
    p.add_argument("--rows", default="gauss,sr4,inpaint")
    sub.add_parser("table")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    {"sweep": cmd_sweep, "eval": cmd_eval, "calibrate": cmd_calibrate, "table": cmd_table}[args.cmd](args)


if __name__ == "__main__":
    main()
