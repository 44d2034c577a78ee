"""Is the held-out `τ`'s overshoot at 28² a flaw of the discrepancy's form? Two variants, training images (issue 21).

Usage: python benchmarks/linearised_discrepancy_structure.py {correlated,exact,prior-scale} SPLIT SIZE INDICES [--json PATH]

Same problems as ``benchmarks/linearised_calibration.py`` (5 % noise, σ known, seeds = image
index, library defaults, ``calibration="none"``). Per image: the full fit's Laplace, then
for each of the 4 folds a DIP + Laplace without it, as ``benchmarks/linearised_heldout_folds.py``.
The truth only scores (Gaussian 90 % coverage and mean per-pixel log density of the full
model, and the "oracle" `τ` that would give 0.90). Use it on training images only.

``correlated``
    The library's model (``δ`` projected with its exact per-measurement variance, the data
    not narrowing ``δ``) with a *spatially correlated* discrepancy ``δ = τ G_ℓ η``,
    ``G_ℓ`` a Gaussian smoothing of std ``ℓ`` pixels with unit ℓ2 norm (so ``τ²`` stays the
    per-pixel variance away from the border), ``ℓ`` in 0 (today's white ``δ``), 0.35, 0.5,
    0.7, 1.0: ``diag(A Aᵀ)`` becomes ``diag(A G Gᵀ Aᵀ)``. A correlated error sends more
    variance into a projection than white error of the same per-pixel variance
    (docs/scaling.md, "ray ratio"), so a white ``δ`` fitted on projections over-states the
    per-pixel variance; this measures by how much.
``exact``
    The white nugget treated exactly: prior ``x ~ N(x*, F Fᵀ + τ² I)``, so the data narrow
    ``δ`` in the posterior, and the held-out evidence uses the full ``A (F Fᵀ + τ² I) Aᵀ``
    (dense, from the SVD of each fold's operator; fine at 28²). Compared with today's
    diagonal approximation in the same run.
``prior-scale``
    A scale ``c`` of the Laplace's prior factor (``F → c F``, i.e. ``K → c² K``) fitted
    by the same summed conditional evidence, alone and jointly with ``τ`` (the library's
    diagonal model). The hypothesis: a fold's Laplace under-predicts its held-out
    projections because its *prior* is too narrow in the directions those projections
    see, which the full fit's data then narrow anyway — so a larger prior would explain
    the held-out data without widening the full posterior where ``τ`` does (28²), while
    at 64² the error outside the prior's range still needs ``τ``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import time

import torch

from bayes_recon.data import simulate
from bayes_recon.inference.linearised import DiscrepancyModel, fit_discrepancy
from bayes_recon.inference.linearised.pipeline import LinearisedDIPConfig, linearised_dip
from bayes_recon.operators import Blur
from bayes_recon.operators.base import LinearOperator
from linearised_calibration import problem, write_rows  # benchmarks/ is the script's directory
from linearised_heldout_folds import fold_models

Z90 = 1.6448536269514722
LOG_2PI = math.log(2 * math.pi)
LENGTHS = (0.0, 0.35, 0.5, 0.7, 1.0)


def score(err: torch.Tensor, var: torch.Tensor) -> tuple[float, float]:
    """Gaussian 90 % coverage and mean log density of ``err`` under per-pixel variances ``var``."""
    return (float((err.abs() <= Z90 * var.sqrt()).double().mean()),
            float((-0.5 * (err**2 / var + var.log() + LOG_2PI)).mean()))


def fits(op, meas, index):
    """The full fit's Laplace and, per fold, ``(split, fold DiscrepancyModel)``."""
    cfg = LinearisedDIPConfig(calibration="none", heldout_folds=4)
    res = linearised_dip(meas.y, op, meas.noise_std, cfg, seed=index, progress=False)
    return res, [(split, model) for _, split, model in fold_models(op, meas, index, cfg, res, 4)]


# ------------------------------------------------------------------ correlated δ

def smoothing(n: int, length: float) -> Blur | None:
    """``G_ℓ``: Gaussian kernel of std ``length`` pixels, unit ℓ2 norm (None for white)."""
    if length == 0:
        return None
    r = max(1, math.ceil(3 * length))
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (t / length) ** 2)
    k = g[:, None] * g[None, :]
    return Blur(n, k / k.norm())


class Composed(LinearOperator):
    """``A G``: the forward model after the smoothing."""

    def __init__(self, op, g):
        super().__init__(op.domain_shape, op.range_shape, op.complex_range)
        self.op, self.g = op, g

    def _forward(self, x):
        return self.op.forward(self.g.forward(x))

    def _adjoint(self, y):
        return self.g.adjoint(self.op.adjoint(y))

    def _buffer_device(self):
        return self.op._buffer_device()


def gram(op, g) -> torch.Tensor:
    return op.gram_diagonal() if g is None else Composed(op, g).gram_diagonal()


def pixel_variance(g, n: int) -> torch.Tensor:
    """``diag(G Gᵀ) (N,)`` (1 for white; below 1 near the border)."""
    if g is None:
        return torch.ones(n * n, dtype=torch.float64)
    e = torch.eye(n * n, dtype=torch.float64).reshape(n * n, 1, n, n)
    return g.forward(e).pow(2).sum((1, 2, 3))


def run_correlated(size, index, x, op) -> dict:
    meas = simulate(op, x, 0.05, seed=index)
    res, folds = fits(op, meas, index)
    full = DiscrepancyModel(res.laplace)
    err = x.reshape(-1).double() - full.x_star
    row = {"size": size, "image": index, "lengths": {}}
    for ell in LENGTHS:
        g = smoothing(size, ell)
        c = pixel_variance(g, size)
        evs = [dataclasses.replace(dm.heldout_evidence(sp.held_op, sp.held_measurement(meas.y)),
                                   gram_diagonal=gram(sp.fit_op, g), held_gram_diagonal=gram(sp.held_op, g))
               for sp, dm in folds]
        full.gram_diagonal = gram(op, g)    # the data term of the full model's posterior, with this δ

        def var_at(tau):
            return full.variance(tau) - tau**2 + tau**2 * c
        f0, fs = fit_discrepancy(evs[0]), fit_discrepancy(evs)
        grid = [0.0] + [float(full.x_star.pow(2).mean().sqrt()) * 10 ** e for e in torch.linspace(-3, 0, 61).tolist()]
        oracle = min(grid, key=lambda t: abs(score(err, var_at(t))[0] - 0.9))
        row["lengths"][str(ell)] = {"each": [fit_discrepancy(e).std for e in evs], "fold0": f0.std, "sum": fs.std,
                                    "oracle": oracle, "none": score(err, var_at(0.0)),
                                    "at_fold0": score(err, var_at(f0.std)), "at_sum": score(err, var_at(fs.std))}
        r = row["lengths"][str(ell)]
        print(f"{size}² image {index} ℓ = {ell}: folds {[round(t, 4) for t in r['each']]}, τ sum {fs.std:.4f}, "
              f"oracle {oracle:.4f} | cov., LL: none {r['none'][0]:.3f}, {r['none'][1]:.3f}; fold 0 "
              f"{r['at_fold0'][0]:.3f}, {r['at_fold0'][1]:.3f}; sum {r['at_sum'][0]:.3f}, {r['at_sum'][1]:.3f}",
              flush=True)
    return row


# ------------------------------------------------------------------ exact nugget

class Marginal:
    """``log N(y; B x*, B (F Fᵀ + τ² I) Bᵀ + σ² I)`` as a function of ``τ``, from the SVD of ``B``."""

    def __init__(self, B, y, x_star, F, noise_variance):
        self.m = B.shape[0]
        U, S, Vh = torch.linalg.svd(B, full_matrices=False)
        keep = S > S.max() * 1e-12
        U, S, Vh = U[:, keep], S[keep], Vh[keep]
        r = y - B @ x_star
        self.a = U.T @ r
        self.rho = float(r @ r - self.a @ self.a)      # the part of r outside range(B): noise only
        self.G = S[:, None] * (Vh @ F)
        self.S2, self.s2, self.rank = S**2, noise_variance, int(keep.sum())

    def __call__(self, tau: float) -> float:
        d = tau**2 * self.S2 + self.s2
        Gd = self.G / d[:, None]
        M = self.G.T @ Gd
        M.diagonal().add_(1.0)
        L = torch.linalg.cholesky(M)
        u = torch.linalg.solve_triangular(L, (Gd.T @ self.a)[:, None], upper=False)[:, 0]
        quad = float((self.a**2 / d).sum() - u @ u) + self.rho / self.s2
        logdet = float(d.log().sum() + 2 * L.diagonal().log().sum()) + (self.m - self.rank) * math.log(self.s2)
        return -0.5 * (quad + logdet + self.m * LOG_2PI)


def exact_posterior_variance(A, F, noise_variance, tau) -> torch.Tensor:
    """``diag`` of the posterior covariance with prior ``F Fᵀ + τ² I`` (dense)."""
    prior = F @ F.T
    prior.diagonal().add_(tau**2)
    pa = prior @ A.T
    c = A @ pa
    c.diagonal().add_(noise_variance)
    w = torch.linalg.solve_triangular(torch.linalg.cholesky(c), pa.T, upper=False)
    return prior.diagonal() - w.pow(2).sum(0)


def grid_max(fn, top: float):
    taus = [0.0] + [top * 10 ** e for e in torch.linspace(-2.5, 0, 51).tolist()]
    vals = [fn(t) for t in taus]
    j = max(range(len(taus)), key=lambda i: vals[i])
    return taus[j], vals[j] - vals[0]


def run_exact(size, index, x, op) -> dict:
    meas = simulate(op, x, 0.05, seed=index)
    res, folds = fits(op, meas, index)
    full = DiscrepancyModel(res.laplace)
    err = x.reshape(-1).double() - full.x_star
    A, s2 = op.to_dense(), full.noise_variance
    top = float(full.x_star.pow(2).mean().sqrt())
    approx, exact = [], []
    for sp, dm in folds:
        approx.append(dm.heldout_evidence(sp.held_op, sp.held_measurement(meas.y)))
        a_fit, a_held = sp.fit_op.to_dense(), sp.held_op.to_dense()
        y_fit = sp.fit_measurement(meas.y).reshape(-1).double()
        y_held = sp.held_measurement(meas.y).reshape(-1).double()
        joint = Marginal(torch.cat([a_fit, a_held]), torch.cat([y_fit, y_held]), dm.x_star, dm.factor,
                         dm.noise_variance)
        alone = Marginal(a_fit, y_fit, dm.x_star, dm.factor, dm.noise_variance)
        exact.append(lambda t, j=joint, f=alone: j(t) - f(t))    # log p(y_held | y_fit, τ)
    ap0, aps = fit_discrepancy(approx[0]).std, fit_discrepancy(approx).std
    ex0, _ = grid_max(exact[0], top)
    exs, gain = grid_max(lambda t: sum(f(t) for f in exact), top)
    taus = [0.0] + [top * 10 ** e for e in torch.linspace(-2.5, 0, 26).tolist()]
    grid = [(t, *score(err, exact_posterior_variance(A, full.factor, s2, t))) for t in taus]
    oracle = min(grid, key=lambda s: abs(s[1] - 0.9))
    row = {"size": size, "image": index,
           "approx": {"fold0": ap0, "sum": aps, "none": score(err, full.variance(0.0)),
                      "at_fold0": score(err, full.variance(ap0)), "at_sum": score(err, full.variance(aps))},
           "exact": {"each": [grid_max(f, top)[0] for f in exact], "fold0": ex0, "sum": exs, "gain_sum": gain,
                     "at_fold0": score(err, exact_posterior_variance(A, full.factor, s2, ex0)),
                     "at_sum": score(err, exact_posterior_variance(A, full.factor, s2, exs)),
                     "oracle": oracle[0], "grid": grid}}
    a, e = row["approx"], row["exact"]
    print(f"{size}² image {index}: none {a['none'][0]:.3f}, {a['none'][1]:.3f} | diagonal approx.: τ fold 0 {ap0:.4f} "
          f"({a['at_fold0'][0]:.3f}, {a['at_fold0'][1]:.3f}), τ sum {aps:.4f} ({a['at_sum'][0]:.3f}, "
          f"{a['at_sum'][1]:.3f}) | exact: folds {[round(t, 4) for t in e['each']]}, τ sum {exs:.4f} "
          f"(gain {gain:.2f} nats; {e['at_sum'][0]:.3f}, {e['at_sum'][1]:.3f}), oracle {oracle[0]:.4f}", flush=True)
    return row


# ------------------------------------------------------------------ prior scale c (F → c F)

SCALES = [10 ** e for e in torch.linspace(-0.5, 1.25, 15).tolist()]    # c from 0.32 to 18


def scaled(obj, c: float):
    """A copy of a ``DiscrepancyModel`` or ``HeldoutEvidence`` with the prior factor ``F`` times ``c``."""
    if isinstance(obj, DiscrepancyModel):
        out = copy.copy(obj)
        out.factor, out.data_factor = obj.factor * c, obj.data_factor * c
        return out
    return dataclasses.replace(obj, data_factor=obj.data_factor * c, held_factor=obj.held_factor * c)


def joint_fit(evs, allow_tau=True):
    """``(c, τ, summed log evidence)`` maximising the summed conditional evidence on the ``c`` grid."""
    best = None
    for c in SCALES:
        sc = [scaled(e, c) for e in evs]
        if allow_tau:
            f = fit_discrepancy(sc, tolerance=1e-2)
            tau, val = f.std, f.log_conditional_evidence
        else:
            tau, val = 0.0, sum(e.log_prob(0.0) for e in sc)
        if best is None or val > best[2]:
            best = (c, tau, val)
    return best


def run_prior_scale(size, index, x, op) -> dict:
    meas = simulate(op, x, 0.05, seed=index)
    res, folds = fits(op, meas, index)
    full = DiscrepancyModel(res.laplace)
    err = x.reshape(-1).double() - full.x_star
    evs = [dm.heldout_evidence(sp.held_op, sp.held_measurement(meas.y)) for sp, dm in folds]
    del folds
    at = lambda c, t: score(err, scaled(full, c).variance(t))      # noqa: E731
    tau_sum, tau0 = fit_discrepancy(evs).std, fit_discrepancy(evs[0]).std
    c_only, _, v_c = joint_fit(evs, allow_tau=False)
    cj, tj, v_j = joint_fit(evs)
    cj0, tj0, _ = joint_fit(evs[:1])
    v_none = sum(e.log_prob(0.0) for e in evs)
    v_tau = sum(e.log_prob(tau_sum) for e in evs)
    oracle_c = min(SCALES, key=lambda c: abs(at(c, 0.0)[0] - 0.9))
    row = {"size": size, "image": index, "none": at(1.0, 0.0),
           "tau_sum": tau_sum, "at_tau_sum": at(1.0, tau_sum), "tau_fold0": tau0, "at_tau_fold0": at(1.0, tau0),
           "c_only": c_only, "at_c_only": at(c_only, 0.0),
           "joint": [cj, tj], "at_joint": at(cj, tj), "joint_fold0": [cj0, tj0], "at_joint_fold0": at(cj0, tj0),
           "evidence": {"none": v_none, "tau": v_tau, "c": v_c, "joint": v_j}, "oracle_c": oracle_c,
           "each_fold_joint": [joint_fit([e])[:2] for e in evs]}
    r = row
    print(f"{size}² image {index}: none {r['none'][0]:.3f}, {r['none'][1]:.3f} | τ sum {tau_sum:.4f} "
          f"({r['at_tau_sum'][0]:.3f}, {r['at_tau_sum'][1]:.3f}) | c only {c_only:.2f} ({r['at_c_only'][0]:.3f}, "
          f"{r['at_c_only'][1]:.3f}) | joint c {cj:.2f} τ {tj:.4f} ({r['at_joint'][0]:.3f}, {r['at_joint'][1]:.3f}) "
          f"| joint fold 0 c {cj0:.2f} τ {tj0:.4f} ({r['at_joint_fold0'][0]:.3f}, {r['at_joint_fold0'][1]:.3f}) | "
          f"evidence gain over none: τ {v_tau - v_none:.2f}, c {v_c - v_none:.2f}, joint {v_j - v_none:.2f} | "
          f"oracle c {oracle_c:.2f} | folds (c, τ) {[(round(a, 2), round(b, 4)) for a, b in r['each_fold_joint']]}",
          flush=True)
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variant", choices=("correlated", "exact", "prior-scale"))
    ap.add_argument("split", choices=("train", "test"))
    ap.add_argument("size", type=int, choices=(28, 64))
    ap.add_argument("indices")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    indices, op, truths = problem(args.split, args.size, args.indices)
    run = {"correlated": run_correlated, "exact": run_exact, "prior-scale": run_prior_scale}[args.variant]
    rows = []
    for i in indices:
        t0 = time.perf_counter()
        rows.append({**run(args.size, i, truths[i:i + 1], op), "seconds": time.perf_counter() - t0})
        if args.json:
            write_rows(args.json, vars(args), rows)


if __name__ == "__main__":
    main()
