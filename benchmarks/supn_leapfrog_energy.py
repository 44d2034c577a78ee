"""Leapfrog energy errors of the 64² SUPN posterior over z: what limits NUTS's step size.

Usage::

    python benchmarks/supn_leapfrog_energy.py [--starts 4] [--exact-starts 2] [--json out.json]

The CT 64² problem of ``benchmarks/supn_inference.py --preconditioned64`` (one natural test
crop, 60 angles, 5 % noise, seed 0): the collapsed MAP and the Laplace Hessian ``H`` on the
preconditioned surrogate (library defaults for NUTS), then 8 leapfrog steps with NUTS's mass
matrix ``M⁻¹ = H⁻¹`` from Laplace draws with momenta ``p ~ N(0, M)``, for several step
sizes; prints the energy error ``ΔH`` after each step, on the surrogate NUTS samples (chain
0's probes) and on the exact dense density. A trajectory stops when ``|ΔH|`` exceeds 1000
(Pyro's divergence threshold). For a Gaussian target the errors at step size ``ε`` would
be ``O(ε²)`` and bounded up to ``ε = 2``; large errors at moderate ``ε`` mean curvature
that ``H`` does not describe.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
import json
from pathlib import Path
import sys

import torch

from bayes_recon import operators as ops
from bayes_recon.data import natural_patches, simulate
from bayes_recon.inference.exact_check import chain_slq, preconditioned_fit
from bayes_recon.inference.latent_laplace import laplace_fit
from bayes_recon.inference.latent_map import initial_latent
from bayes_recon.inference.sampling import NUTS_SLQ, SamplingConfig
from bayes_recon.models.marginal import collapsed_log_posterior
from bayes_recon.models.pretrained import load_pretrained

DIVERGENCE = 1000.0


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--starts", type=int, default=4, help="Laplace starts on the surrogate")
    ap.add_argument("--exact-starts", type=int, default=2, help="Laplace starts on the exact density")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    prior = load_pretrained("patches64-supn")
    x = natural_patches("test", 64, 1, seed=1)
    op = ops.ParallelBeamCT(64, 60)
    m = simulate(op, x, 0.05, seed=0)
    cfg = SamplingConfig(slq=replace(NUTS_SLQ))
    z0 = initial_latent(m.y, op, prior).double()
    fit, ref = preconditioned_fit(m.y, op, prior, m.noise_std, z0, cfg, True)
    cfg = replace(cfg, evidence="slq", slq=replace(cfg.slq, preconditioner=ref))
    _, root, _ = laplace_fit(fit.z, m.y, op, prior, fit.noise_std, cfg)
    inv_mass, zhat, d = root @ root.T, fit.z[0].double(), root.shape[0]

    def potential(z, path):
        z = z.detach().clone().requires_grad_(True)
        if path == "exact":
            lp = collapsed_log_posterior(z[None], m.y, op, prior, fit.noise_std, 1.0, "dense", None)
        else:
            lp = collapsed_log_posterior(z[None], m.y, op, prior, fit.noise_std, 1.0, "slq", chain_slq(cfg.slq, 0))
        grad, = torch.autograd.grad(-lp.sum(), z)
        return float(-lp.sum().detach()), grad

    gen = torch.Generator().manual_seed(5)
    rows = []
    for path, sizes, starts in (("surrogate", (0.3, 0.6, 0.9, 1.2), args.starts),
                                ("exact", (0.6, 1.2), args.exact_starts)):
        for s in range(starts):
            start = zhat + root @ torch.randn(d, generator=gen, dtype=torch.float64)
            # p ~ N(0, M) with M = H = R⁻ᵀR⁻¹: p = R⁻ᵀ ξ.
            p0 = torch.linalg.solve(root.T, torch.randn(d, generator=gen, dtype=torch.float64))
            for eps in sizes:
                z, p = start.clone(), p0.clone()
                u, g = potential(z, path)
                h0 = u + 0.5 * float(p @ inv_mass @ p)
                errors = []
                for _ in range(args.steps):
                    p = p - 0.5 * eps * g
                    z = z + eps * inv_mass @ p
                    u, g = potential(z, path)
                    p = p - 0.5 * eps * g
                    errors.append(u + 0.5 * float(p @ inv_mass @ p) - h0)
                    if not abs(errors[-1]) <= DIVERGENCE:
                        break
                row = {"path": path, "start": s, "step_size": eps, "energy_errors": errors,
                       "max_abs_error": max(abs(e) for e in errors), "diverged": len(errors) < args.steps}
                rows.append(row)
                print(f"{path} start {s} ε={eps}: " + " ".join(f"{e:+.3f}" for e in errors), file=sys.stderr)
    print("\n| density | step size | starts | median max \\|ΔH\\| over 8 steps | largest | diverged |")
    print("|---|---|---|---|---|---|")
    for path in ("surrogate", "exact"):
        for eps in sorted({r["step_size"] for r in rows if r["path"] == path}):
            sel = [r for r in rows if r["path"] == path and r["step_size"] == eps]
            errs = sorted(r["max_abs_error"] for r in sel)
            print(f"| {path} | {eps} | {len(sel)} | {errs[len(errs) // 2]:.3g} | {errs[-1]:.3g} "
                  f"| {sum(r['diverged'] for r in sel)} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
