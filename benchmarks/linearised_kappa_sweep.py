"""Calibration of the linearised DIP against the TV-PredCP rate κ (issue 10).

Usage: python benchmarks/linearised_kappa_sweep.py SPLIT DIGITS KAPPAS [--size 28] [--expansion fit]
       [--g-prior] [--rank 1024] [--bootstrap] [--json PATH]

    SPLIT   train | test (``bayes_recon.data.digits``; choose κ on train, check on test)
    DIGITS  comma-separated indices, e.g. 0,1,2 (of the natural-image crops with --size > 28)
    KAPPAS  comma-separated TV-PredCP rates, e.g. 0,5,20; each is warm-started
            from the previous one's hyperparameters (a single value = a fresh start,
            i.e. what ``linearised_dip`` does)

Problem: 28² digit, ``ParallelBeamCT(28, 20)``, 5 % noise (``simulate(..., seed=digit)``),
σ known; DIP with the library defaults (γ = 3σ, 300 Adam steps at lr 1e-3, 32-channel
U-Net, seed = digit); exact path; hyperparameters by L-BFGS on evidence + κ·TV-PredCP;
1000 posterior draws; ``diagnostics.calibration`` against the truth (which plays no part
in any fit). With ``--size 64`` or ``128``: crop ``i`` of ``natural_patches(SPLIT, size, ·,
seed=0)`` with ``ParallelBeamCT(size, 60)`` or ``(size, 90)`` (the scaling benchmark's
problems), path chosen by the library (the subspace path). Prints one line per (digit, κ): coverage at 50/90/95 %, calibration error,
test log-likelihood, mean posterior std, RMSE of the mean, seconds. With ``--bootstrap`` each
line also gives the same after the library's default level calibration
(``LinearisedDIPConfig.calibration="bootstrap"``: ``bootstrap_fits`` DIP refits on data simulated
from the DIP's reconstruction, done once per image and shared by every κ).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import torch

from bayes_recon.data import digits, natural_patches, simulate
from bayes_recon.diagnostics import calibration
from bayes_recon.inference.bootstrap_scale import bootstrap_std_scale, scale_spread
from bayes_recon.inference.dip import fit_dip
from bayes_recon.inference.linearised.laplace import LaplaceConfig, LinearisedLaplace
from bayes_recon.inference.linearised.pipeline import LinearisedDIPConfig
from bayes_recon.operators import ParallelBeamCT


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("split", choices=("train", "test"))
    ap.add_argument("digits", help="comma-separated indices")
    ap.add_argument("kappas", help="comma-separated TV-PredCP rates")
    ap.add_argument("--expansion", choices=("fit", "linearised"), default="fit")
    ap.add_argument("--g-prior", action="store_true", help="LaplaceConfig(g_prior=True)")
    ap.add_argument("--size", type=int, default=28, help="28: digits; larger: natural-image crops")
    ap.add_argument("--rank", type=int, default=LaplaceConfig.subspace_rank, help="LaplaceConfig.subspace_rank")
    ap.add_argument("--bootstrap", action="store_true", help="also report the bootstrap-calibrated posterior")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    indices = [int(a) for a in args.digits.split(",")]
    kappas = [float(k) for k in args.kappas.split(",")]
    defaults = LinearisedDIPConfig()
    if args.size == 28:
        op, truths, path = ParallelBeamCT(28, 20), digits(args.split, 28), "exact"
    else:
        op = ParallelBeamCT(args.size, 60 if args.size <= 64 else 90)
        truths, path = natural_patches(args.split, args.size, max(indices) + 1, seed=0), "auto"
    rows = []
    for i in indices:
        x = truths[i:i + 1]
        meas = simulate(op, x, 0.05, seed=i)
        t0 = time.perf_counter()
        fit = fit_dip(meas.y, op, defaults.tv_scale * meas.noise_std, defaults.iterations, lr=defaults.lr,
                      seed=i, network_config=defaults.network, progress=False)
        la = LinearisedLaplace(fit, op, noise_std=meas.noise_std,
                               config=LaplaceConfig(path=path, expansion=args.expansion, g_prior=args.g_prior,
                                                    subspace_rank=args.rank),
                               progress=False)
        print(f"{args.split} digit {i}: DIP and Laplace set-up {time.perf_counter() - t0:.1f} s", flush=True)
        refits = {}

        def refit(y_k, k, i=i, refits=refits):
            # The refits do not depend on κ (same simulated data for the same seed): computed once.
            if k not in refits:
                refits[k] = fit_dip(y_k, op, defaults.tv_scale * meas.noise_std, defaults.iterations,
                                    lr=defaults.lr, seed=i + 7919 * (k + 1), network_config=defaults.network,
                                    progress=False).x
            return refits[k]
        for kappa in kappas:
            t0 = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                evidence = la.optimise_evidence(predcp_scale=kappa, method="lbfgs")
                post = la.sample(1000, seed=i)
            rep = calibration(post, x[0], levels=(0.5, 0.9, 0.95), patch_sizes=())
            row = dict(split=args.split, size=args.size, digit=i, path=la.path, g_prior=args.g_prior, kappa=kappa, coverage=list(rep.coverage),
                       calibration_error=rep.calibration_error, test_log_likelihood=rep.test_log_likelihood,
                       mean_std=rep.mean_std, rmse=rep.rmse, seconds=time.perf_counter() - t0,
                       converged=evidence.converged, warnings=sorted({w.category.__name__ for w in caught}))
            if args.bootstrap:
                t1 = time.perf_counter()
                boot = bootstrap_std_scale(refit, op, fit.x, post.std, meas.noise_std,
                                           fits=defaults.bootstrap_fits, level=defaults.calibration_level,
                                           seed=i, progress=False)
                applied = max(defaults.bootstrap_min_scale, boot.scale)
                cal = calibration(scale_spread(post, applied), x[0], levels=(0.5, 0.9, 0.95), patch_sizes=())
                row["bootstrap"] = dict(factor=boot.scale, scale=applied, coverage=list(cal.coverage),
                                        calibration_error=cal.calibration_error,
                                        test_log_likelihood=cal.test_log_likelihood,
                                        seconds=time.perf_counter() - t1)
            rows.append(row)
            print(f"  kappa={kappa:<6g} coverage {[round(c, 3) for c in rep.coverage]} "
                  f"cal.err. {rep.calibration_error:.3f} test LL {rep.test_log_likelihood:.3f} "
                  f"std {rep.mean_std:.4f} rmse {rep.rmse:.4f} {row['seconds']:.1f} s "
                  f"converged={evidence.converged} {row['warnings']}", flush=True)
            if args.bootstrap:
                b = row["bootstrap"]
                print(f"    bootstrap factor {b['factor']:.3f}, applied x{b['scale']:.3f}: coverage {[round(c, 3) for c in b['coverage']]} "
                      f"cal.err. {b['calibration_error']:.3f} test LL {b['test_log_likelihood']:.3f} "
                      f"{b['seconds']:.1f} s", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
