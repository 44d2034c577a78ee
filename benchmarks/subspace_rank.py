"""How much prior variance a rank-r Jacobian subspace misses, and what the network products cost.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/subspace_rank.py --size 64 --angles 60 --ranks 64 256 512 1024 1500

Fits the library-default DIP (300 Adam steps at lr 1e-3, γ = 3σ) to one problem of
``benchmarks/linearised_dip.py --sizes`` (28² test digit 0; 64²/128² natural crops),
times batched JVPs and VJPs of the linearised Jacobian at chunk sizes 16 and 64, then
draws ``max(ranks)`` prior samples ``J Σ₀^{1/2} ε`` at the initial hyperparameters and
64 fresh ones, and prints, per rank ``r``, the fraction of the fresh draws' energy outside
the span of the first ``r`` sketch draws (the quantity ``jacobian_subspace`` estimates
and warns about). Used for docs/scaling.md ("Rank needed").
"""

from __future__ import annotations

import argparse
import time

import torch

from bayes_recon.data import digits, natural_patches, simulate
from bayes_recon.inference.dip import fit_dip
from bayes_recon.inference.linearised.jacobian import NetworkJacobian, linearised_groups
from bayes_recon.inference.linearised.weight_prior import MaternFilterPrior
from bayes_recon.operators import ParallelBeamCT


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--angles", type=int, default=60)
    p.add_argument("--ranks", type=int, nargs="+", default=[64, 256, 512, 1024])
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    x = digits("test", 28)[:1] if args.size == 28 else natural_patches("test", args.size, 1, seed=0)
    op = ParallelBeamCT(args.size, args.angles)
    meas = simulate(op, x, 0.05, seed=0)
    t0 = time.perf_counter()
    fit = fit_dip(meas.y, op, 3 * meas.noise_std, 300, lr=1e-3, seed=0, progress=False)
    print(f"DIP fit: {time.perf_counter() - t0:.1f} s")
    groups = linearised_groups(fit.network)
    prior = MaternFilterPrior(groups)
    gen = torch.Generator().manual_seed(0)
    for chunk in (16, 64):
        jac = NetworkJacobian(fit.network, fit.input, groups, dense=False, chunk_size=chunk)
        v = torch.randn(64, jac.num_params, generator=gen)
        t0 = time.perf_counter()
        jac.jvp(v)
        t_jvp = (time.perf_counter() - t0) / 64
        u = torch.randn(64, jac.num_pixels, generator=gen)
        t0 = time.perf_counter()
        jac.vjp(u)
        t_vjp = (time.perf_counter() - t0) / 64
        print(f"chunk {chunk}: JVP {1e3 * t_jvp:.1f} ms/vector, VJP {1e3 * t_vjp:.1f} ms/vector")
    jac = NetworkJacobian(fit.network, fit.input, groups, dense=False, chunk_size=16)
    theta = jac.theta.double()
    log_ls = torch.zeros(len(prior.matern_groups), dtype=torch.float64)
    log_var = torch.stack([theta[g.slice].pow(2).mean() for g in groups]).log()
    r_max = max(args.ranks)
    eps = torch.randn(r_max + 64, jac.num_params, generator=gen, dtype=torch.float64)
    t0 = time.perf_counter()
    draws = jac.jvp(prior.apply_sqrt(eps, log_ls, log_var).float()).double()
    print(f"{r_max + 64} prior draws: {time.perf_counter() - t0:.1f} s")
    sketch, fresh = draws[:r_max], draws[r_max:]
    print("| rank | missed fraction of the prior variance |\n|---|---|")
    for r in sorted(args.ranks):
        q = torch.linalg.qr(sketch[:r].T).Q
        outside = fresh.T - q @ (q.T @ fresh.T)
        print(f"| {r} | {float(outside.pow(2).sum() / fresh.pow(2).sum()):.2e} |")


if __name__ == "__main__":
    main()
