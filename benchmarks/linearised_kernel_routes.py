"""The exact linearised model's kernel pieces: built from ``A J`` against from ``K``, same run.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/linearised_kernel_routes.py --angles 5 10 20 30 --repeats 3

For each angle count, one ``lindip-protocol`` problem (28² test digit 0, 5 % noise, the
library-default DIP of 300 steps) is fitted once; on its dense Jacobian
``ExactKernel`` is built by both routes (``route="image"``: the ``N x N`` pieces
``K_{b,δ}`` then ``A K_{b,δ} Aᵀ``, what every task did before; ``route="data"``:
``B_b (I ⊗ M_δ) B_bᵀ`` from ``B_b = A J_b``), plus ``K`` at the initial
hyperparameters on the data route (formed once, as a fitted model needs it). Prints
the median seconds of each, the ratio (the reference is the image route, measured in
the same process) and the largest relative difference between the two routes' data
kernels. ``"auto"`` takes the data route when ``m < N``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bayes_recon.data import digits, simulate
from bayes_recon.inference.dip import fit_dip
from bayes_recon.inference.linearised.evidence import ExactKernel, direct_image_kernel
from bayes_recon.inference.linearised.jacobian import NetworkJacobian, linearised_groups
from bayes_recon.inference.linearised.pipeline import LinearisedDIPConfig, dip_tv_weight
from bayes_recon.inference.linearised.weight_prior import MaternFilterPrior
from bayes_recon.operators import ParallelBeamCT


def _median_seconds(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--angles", type=int, nargs="+", default=[5, 10, 20, 30])
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = LinearisedDIPConfig()
    x = digits("test", args.size)[:1]
    print(f"| angles | m | N | image route (s) | data route (s) | + K once (s) | data / image | "
          f"max rel. diff |")
    print("|---|---|---|---|---|---|---|---|")
    for angles in args.angles:
        op = ParallelBeamCT(args.size, angles)
        meas = simulate(op, x, 0.05, seed=0)
        fit = fit_dip(meas.y, op, dip_tv_weight(cfg, op, meas.y, meas.noise_std), cfg.iterations,
                      lr=cfg.lr, input=cfg.input, seed=0, network_config=cfg.network, progress=False)
        groups = linearised_groups(fit.network, include_1x1=cfg.laplace.include_1x1)
        jac = NetworkJacobian(fit.network, fit.input, groups, dense=True)
        prior = MaternFilterPrior(groups)
        ls = torch.zeros(len(prior.matern_groups), dtype=torch.float64)
        var = torch.zeros(len(groups), dtype=torch.float64)
        t_img, by_image = _median_seconds(lambda: ExactKernel(jac, prior, op, route="image"), args.repeats)
        t_dat, by_data = _median_seconds(lambda: ExactKernel(jac, prior, op, route="data"), args.repeats)
        # What the data route's image_kernel does once per fitted hyperparameters.
        t_k, _ = _median_seconds(lambda: direct_image_kernel(jac, prior, ls, var), args.repeats)
        a, b = by_image.data_kernel(ls, var), by_data.data_kernel(ls, var)
        diff = float((a - b).abs().max() / a.abs().max())
        print(f"| {angles} | {op.range_size} | {jac.num_pixels} | {t_img:.2f} | {t_dat:.2f} | {t_k:.2f} | "
              f"{(t_dat + t_k) / t_img:.2f} | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
