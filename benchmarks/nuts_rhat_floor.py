"""How low can R-hat go? Pyro's NUTS on an exact standard Gaussian, 2 chains × 500 draws.

Usage: python benchmarks/nuts_rhat_floor.py [--dim 16] [--seeds 20] [--draws 500] [--thin 1 2]

The collapsed SUPN posterior over ``z`` (16 latent dimensions for the digit
priors) is close to Gaussian and the Hessian mass matrix whitens it, so the
ideal case of the preconditioned sampler is NUTS on ``N(0, I_d)`` with a
perfect mass matrix. This script measures, over ``--seeds`` independent
repetitions, the distribution of ArviZ's max R-hat (rank-normalised split
R-hat, the larger of bulk and folded) and of the minimum bulk and tail ESS for:

- NUTS with ``thin=1`` and ``thin=2`` (``--thin``), warm-up 200 (step size only),
  ``max_tree_depth=6``, ``target_accept=0.8`` — the library's defaults;
- i.i.d. draws of the same shape, the reference no sampler can beat.

It prints a markdown table. The numbers show how often a perfect NUTS meets a
"max R-hat < 1.01" criterion at a given number of draws.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import arviz as az
import numpy as np
import pyro
import torch
from pyro.infer import MCMC, NUTS


def _summary(z: np.ndarray) -> tuple[float, float, float]:
    idata = az.from_dict(posterior={"z": z})
    return (float(az.rhat(idata)["z"].values.max()), float(az.ess(idata)["z"].values.min()),
            float(az.ess(idata, method="tail")["z"].values.min()))


def nuts_draws(dim: int, draws: int, thin: int, seed: int, warmup: int = 200) -> np.ndarray:
    """``(2, draws, dim)`` NUTS draws of ``N(0, I)`` (every ``thin``-th transition kept)."""
    chains = []
    for chain in range(2):
        pyro.set_rng_seed(10_000 * seed + chain)
        kernel = NUTS(potential_fn=lambda p: 0.5 * p["z"].square().sum(), max_tree_depth=6,
                      target_accept_prob=0.8)
        mcmc = MCMC(kernel, num_samples=draws * thin, warmup_steps=warmup, disable_progbar=True,
                    initial_params={"z": torch.randn(dim, dtype=torch.float64)})
        mcmc.run()
        chains.append(mcmc.get_samples()["z"].numpy()[thin - 1::thin])
    return np.stack(chains)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--draws", type=int, default=500)
    ap.add_argument("--thin", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    variants = [("i.i.d. draws", None)] + [(f"NUTS, thin {t}", t) for t in args.thin]
    for name, thin in variants:
        stats, start = [], time.perf_counter()
        for seed in range(args.seeds):
            if thin is None:
                z = np.random.default_rng(seed).standard_normal((2, args.draws, args.dim))
            else:
                z = nuts_draws(args.dim, args.draws, thin, seed)
            stats.append(_summary(z))
        s = np.asarray(stats)
        rows.append({"variant": name, "thin": thin, "seeds": args.seeds, "draws": args.draws, "dim": args.dim,
                     "rhat_max_median": float(np.median(s[:, 0])), "rhat_max_p90": float(np.quantile(s[:, 0], 0.9)),
                     "fraction_below_1.01": float(np.mean(s[:, 0] < 1.01)),
                     "ess_bulk_min_median": float(np.median(s[:, 1])), "ess_tail_min_median": float(np.median(s[:, 2])),
                     "seconds": time.perf_counter() - start})
        print(f"  {rows[-1]}", file=sys.stderr)
    print(f"\nN(0, I_{args.dim}), 2 chains × {args.draws} kept draws, {args.seeds} seeds; "
          "max over dimensions of ArviZ's R-hat (rank, bulk and folded) and min ESS\n")
    print("| draws from | median max R-hat | 90th pct. max R-hat | seeds with max R-hat < 1.01 "
          "| median min bulk ESS | median min tail ESS |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['rhat_max_median']:.4f} | {r['rhat_max_p90']:.4f} "
              f"| {r['fraction_below_1.01'] * r['seeds']:.0f} / {r['seeds']} | {r['ess_bulk_min_median']:.0f} "
              f"| {r['ess_tail_min_median']:.0f} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
