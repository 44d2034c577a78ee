"""Held-out-measurement validation: are the error bars right, without the truth?

Split the measurements by a physical scheme (:mod:`bayes_recon.operators.holdout`:
every K-th projection, spoke or k-space line, or a random subset of entries),
reconstruct from the rest with the same method, and ask the posterior to predict
what was held out. The posterior predictive of a held-out real measurement
``y_i`` is the mixture ``(1/S) Σ_s N((A x_s)_i, σ²)`` over the posterior draws
``x_s``; everything below is computed from that mixture exactly (no simulated
noise):

* ``PIT_i = (1/S) Σ_s Φ((y_i − (A x_s)_i) / σ)``, uniform when the predictive is right;
* coverage at level ``p``: the fraction with ``|PIT_i − ½| ≤ p/2`` (``y_i`` inside
  the mixture's central ``p`` interval);
* held-out log-likelihood: the mean of ``log (1/S) Σ_s N(y_i; (A x_s)_i, σ²)``;
* ``excess_variance_ratio``: ``(mean (y_i − ȳ_i)² − σ²) / mean Var_s (A x_s)_i``,
  the measured over the predicted *reconstruction* error in measurement space,
  with the noise taken out (1 when right, > 1 when the error bars are too narrow).
  Coverage alone is dominated by the noise wherever ``σ²`` exceeds the
  posterior's spread ``Var_s (A x_s)_i``; this ratio is not.

Complex measurements (k-space) count as two real measurements, real and imaginary
part, each with noise ``σ`` (as :func:`bayes_recon.data.simulate` draws it).
What no measurement-space check can see: errors in the null space of the full
operator (directions no projection, spoke or pixel measures) — see
``docs/validation.md``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from scipy import special

from .._validation import check_int, check_positive, check_tensor
from ..operators.base import LinearOperator
from ..operators.holdout import default_scheme, split_measurements
from ..posterior import Posterior
from .calibration import DEFAULT_LEVELS

__all__ = ["HeldoutFold", "HeldoutValidation", "heldout_predictive", "heldout_validation",
           "VALIDATION_LEVELS"]

#: Levels of the reported coverage (``validation.json``'s keys).
VALIDATION_LEVELS = (0.5, 0.9, 0.95)


def _real_entries(y: torch.Tensor) -> torch.Tensor:
    """``(B, ...)`` real or complex -> ``(B, n)`` float64, real then imaginary parts."""
    flat = y.reshape(y.shape[0], -1)
    if flat.is_complex():
        flat = torch.cat([flat.real, flat.imag], dim=1)
    return flat.to(torch.float64)


@dataclass
class HeldoutFold:
    """The posterior predictive of one fold's held-out measurements.

    Attributes
    ----------
    pit : ndarray, shape (n,)
        PIT of each held-out real measurement in its predictive mixture.
    log_likelihood : ndarray, shape (n,)
        ``log p(y_i | kept measurements)`` per held-out real measurement.
    squared_residual : ndarray, shape (n,)
        ``(y_i − ȳ_i)²`` with ``ȳ_i`` the predictive mean.
    signal_variance : ndarray, shape (n,)
        ``Var_s (A x_s)_i``: the posterior's own spread in measurement space.
    noise_std : float
    num_samples : int
    seconds : float
        Time of the fold's reconstruction (0 when not timed here).
    """

    pit: np.ndarray
    log_likelihood: np.ndarray
    squared_residual: np.ndarray
    signal_variance: np.ndarray
    noise_std: float
    num_samples: int
    seconds: float = 0.0
    fold: int = 0


def heldout_predictive(posterior: Posterior, held_op: LinearOperator, y_held: torch.Tensor,
                       noise_std: float | None = None, batch_size: int = 64) -> HeldoutFold:
    """The predictive of held-out measurements under posterior draws.

    Parameters
    ----------
    posterior : Posterior
        Draws ``(chains, draws, C, H, W)`` given the kept measurements.
    held_op : LinearOperator
        Forward model of the held-out measurements, on ``(C, H, W)`` images.
    y_held : torch.Tensor
        ``(1, *held_op.range_shape)``, real or complex as ``held_op``.
    noise_std : float, optional
        σ of the held-out measurements; default ``posterior.noise_std``.
    batch_size : int
        Draws pushed through ``held_op`` at once.

    Returns
    -------
    HeldoutFold

    Examples
    --------
    >>> import torch
    >>> from bayes_recon.operators import Identity
    >>> from bayes_recon.posterior import Posterior
    >>> g = torch.Generator().manual_seed(0)
    >>> post = Posterior(torch.randn(1, 4000, 1, 8, 8, generator=g), noise_std=1.0)
    >>> y = (torch.randn(1, 1, 8, 8, generator=g) + torch.randn(1, 1, 8, 8, generator=g))
    >>> fold = heldout_predictive(post, Identity((1, 8, 8)), y)
    >>> fold.pit.shape, bool(abs(fold.signal_variance.mean() - 1) < 0.1)
    ((64,), True)
    """
    if not isinstance(posterior, Posterior):
        raise TypeError(f"posterior must be a Posterior, got {type(posterior).__name__}")
    if not isinstance(held_op, LinearOperator):
        raise TypeError(f"held_op must be a LinearOperator, got {type(held_op).__name__}")
    if tuple(held_op.domain_shape) != tuple(posterior.image_shape):
        raise ValueError(f"held_op acts on images {tuple(held_op.domain_shape)}, the posterior's "
                         f"are {tuple(posterior.image_shape)}")
    check_tensor("y_held", y_held, shape=(1, *held_op.range_shape),
                 allow_complex=held_op.complex_range)
    if y_held.is_complex() != held_op.complex_range:
        raise TypeError(f"y_held must be {'complex' if held_op.complex_range else 'real'} for "
                        f"{type(held_op).__name__}, got dtype {y_held.dtype}")
    if noise_std is None:
        noise_std = posterior.noise_std
    if noise_std is None:
        raise ValueError("noise_std is required: the posterior carries no noise level "
                         "(posterior.noise_std is None); pass the measurement noise std")
    sigma = check_positive("noise_std", float(noise_std))
    check_int("batch_size", batch_size, minimum=1)

    target = _real_entries(y_held)[0]  # (n,)
    flat = posterior.flat_samples  # (S, C, H, W)
    num = flat.shape[0]
    log_norm = -0.5 * math.log(2 * math.pi) - math.log(sigma)
    # Running sums over draws, so memory stays O(batch · n) for any number of draws.
    cdf_sum = torch.zeros_like(target)
    mean_sum = torch.zeros_like(target)
    sq_sum = torch.zeros_like(target)
    log_terms = []
    with torch.no_grad():
        for start in range(0, num, batch_size):
            mu = _real_entries(held_op(flat[start:start + batch_size].to(y_held.real.dtype)))
            z = (target[None] - mu) / sigma
            cdf_sum += torch.special.ndtr(z).sum(0)
            mean_sum += mu.sum(0)
            sq_sum += (mu * mu).sum(0)
            # log-sum-exp per batch keeps one (n,) row per batch, not per draw.
            log_terms.append(torch.logsumexp(-0.5 * z * z, dim=0))
    log_lik = torch.logsumexp(torch.stack(log_terms), dim=0) - math.log(num) + log_norm
    mean = mean_sum / num
    var = (sq_sum / num - mean * mean).clamp_min(0.0)
    return HeldoutFold(pit=(cdf_sum / num).cpu().numpy(), log_likelihood=log_lik.cpu().numpy(),
                       squared_residual=((target - mean) ** 2).cpu().numpy(),
                       signal_variance=var.cpu().numpy(), noise_std=sigma, num_samples=num)


@dataclass
class HeldoutValidation:
    """Held-out-measurement validation of a method's error bars (no truth involved).

    Attributes
    ----------
    scheme : str
        How measurements were held out (:data:`bayes_recon.operators.holdout.HOLDOUT_SCHEMES`).
    folds : int
        ``K``: each fold holds out about ``1/K`` of the hold-out units.
    folds_run : list of int
        The folds reconstructed (all ``K``, or one for a quick check).
    levels, coverage : list of float
        Nominal and observed predictive coverage of the held-out measurements.
    calibration_error : float
        ``mean |coverage − levels|``.
    noise_only_coverage : list of float
        The coverage if the image were known exactly (the posterior mean, σ only):
        how much of ``coverage`` the noise alone accounts for.
    pit : ndarray
        PIT of every held-out real measurement (all folds).
    heldout_log_likelihood : float
        Mean held-out log predictive density per real measurement.
    excess_variance_ratio : float or None
        Measured / predicted reconstruction error in measurement space (noise
        removed): ~1 right, > 1 too narrow, < 1 too wide. None when the
        posterior's spread is negligible against the noise (nothing to measure).
    residual_variance_ratio : float
        ``mean (y − ȳ)² / mean (Var_s (A x_s) + σ²)``.
    num_heldout : int
        Held-out real measurements, all folds.
    per_fold : list of dict
        Per fold: ``fold``, ``num_heldout``, ``coverage``, ``heldout_log_likelihood``,
        ``excess_variance_ratio``, ``noise_std``, ``seconds``.
    """

    scheme: str
    folds: int
    folds_run: list
    levels: list
    coverage: list
    calibration_error: float
    noise_only_coverage: list
    pit: np.ndarray
    heldout_log_likelihood: float
    excess_variance_ratio: float | None
    residual_variance_ratio: float
    num_heldout: int
    per_fold: list = field(default_factory=list)

    def coverage_at(self, level: float) -> float:
        """Observed coverage at one of :attr:`levels`."""
        for lev, cov in zip(self.levels, self.coverage):
            if math.isclose(lev, level):
                return cov
        raise ValueError(f"level must be one of {self.levels}, got {level}")

    def to_dict(self, include_pit: bool = False) -> dict:
        """JSON-ready: keys ``scheme``, ``folds``, ``coverage`` (``{"0.5": ...}``),
        ``heldout_log_likelihood`` and the rest of the attributes."""
        out = {
            "scheme": self.scheme, "folds": self.folds, "folds_run": list(self.folds_run),
            "coverage": {_key(lev): cov for lev, cov in zip(self.levels, self.coverage)},
            "calibration_error": self.calibration_error,
            "noise_only_coverage": {_key(lev): cov for lev, cov in
                                    zip(self.levels, self.noise_only_coverage)},
            "heldout_log_likelihood": self.heldout_log_likelihood,
            "excess_variance_ratio": self.excess_variance_ratio,
            "residual_variance_ratio": self.residual_variance_ratio,
            "num_heldout": self.num_heldout, "per_fold": self.per_fold,
        }
        if include_pit:
            out["pit"] = self.pit.tolist()
        return out

    def to_markdown(self) -> str:
        """A short report: coverage table, log-likelihood, variance ratio, per fold."""
        ratio = ("n/a (posterior spread negligible against the noise)"
                 if self.excess_variance_ratio is None else f"{self.excess_variance_ratio:.3f}")
        lines = [
            f"Held-out measurements: scheme `{self.scheme}`, {len(self.folds_run)} of "
            f"{self.folds} folds, {self.num_heldout} real measurements held out in all.",
            "",
            "| nominal | held-out coverage | noise only (image known) |",
            "|---|---|---|",
        ]
        for lev, cov, noise in zip(self.levels, self.coverage, self.noise_only_coverage):
            lines.append(f"| {lev:.2f} | {cov:.3f} | {noise:.3f} |")
        lines += [
            "",
            f"- calibration error (mean |coverage - nominal|): {self.calibration_error:.3f}",
            f"- held-out log-likelihood per measurement: {self.heldout_log_likelihood:.4f}",
            f"- excess variance ratio (measured / predicted reconstruction error, noise "
            f"removed; 1 is right, > 1 too narrow): {ratio}",
            f"- residual variance ratio (with noise): {self.residual_variance_ratio:.3f}",
            "",
            "| fold | held out | coverage 90 % | log-lik. | excess var. ratio | σ | seconds |",
            "|---|---|---|---|---|---|---|",
        ]
        for f in self.per_fold:
            r = f["excess_variance_ratio"]
            lines.append(f"| {f['fold']} | {f['num_heldout']} | {f['coverage'].get('0.9', float('nan')):.3f} "
                         f"| {f['heldout_log_likelihood']:.4f} | "
                         f"{'n/a' if r is None else f'{r:.3f}'} | {f['noise_std']:.4g} | "
                         f"{f['seconds']:.1f} |")
        return "\n".join(lines) + "\n"


def _key(level: float) -> str:
    return f"{level:g}"


def _coverage(pit: np.ndarray, levels) -> list:
    return [float(np.mean(np.abs(pit - 0.5) <= lev / 2 + 1e-12)) for lev in levels]


def _excess_ratio(sq: np.ndarray, signal: np.ndarray, sigma2: np.ndarray) -> float | None:
    predicted = float(signal.mean())
    # Below 1 % of the noise variance the estimate is noise over nearly nothing.
    if predicted <= 1e-2 * float(sigma2.mean()):
        return None
    return float((sq.mean() - sigma2.mean()) / predicted)


def summarise_folds(fold_results: Sequence[HeldoutFold], scheme: str, folds: int,
                    levels=DEFAULT_LEVELS) -> HeldoutValidation:
    """Pool per-fold predictives into one :class:`HeldoutValidation`."""
    levels = sorted(set(float(v) for v in levels) | set(VALIDATION_LEVELS))
    pit = np.concatenate([f.pit for f in fold_results])
    sq = np.concatenate([f.squared_residual for f in fold_results])
    signal = np.concatenate([f.signal_variance for f in fold_results])
    sigma2 = np.concatenate([np.full(f.pit.size, f.noise_std ** 2) for f in fold_results])
    noise_pit = special.ndtr(np.sqrt(sq / sigma2))  # |y − ȳ| against the noise alone
    noise_cov = [float(np.mean(noise_pit - 0.5 <= lev / 2 + 1e-12)) for lev in levels]
    coverage = _coverage(pit, levels)
    per_fold = []
    for f in fold_results:
        per_fold.append({
            "fold": f.fold, "num_heldout": int(f.pit.size),
            "coverage": {_key(lev): c for lev, c in zip(levels, _coverage(f.pit, levels))},
            "heldout_log_likelihood": float(f.log_likelihood.mean()),
            "excess_variance_ratio": _excess_ratio(f.squared_residual, f.signal_variance,
                                                   np.full(f.pit.size, f.noise_std ** 2)),
            "noise_std": f.noise_std, "num_samples": f.num_samples, "seconds": f.seconds,
        })
    return HeldoutValidation(
        scheme=scheme, folds=folds, folds_run=[f.fold for f in fold_results], levels=levels,
        coverage=coverage,
        calibration_error=float(np.mean(np.abs(np.asarray(coverage) - np.asarray(levels)))),
        noise_only_coverage=noise_cov, pit=pit,
        heldout_log_likelihood=float(np.concatenate([f.log_likelihood for f in fold_results]).mean()),
        excess_variance_ratio=_excess_ratio(sq, signal, sigma2),
        residual_variance_ratio=float(sq.mean() / (signal + sigma2).mean()),
        num_heldout=int(pit.size), per_fold=per_fold)


def heldout_validation(reconstruct: Callable[[LinearOperator, torch.Tensor], Posterior],
                       op: LinearOperator, y: torch.Tensor, *, folds: int = 5,
                       fold_indices: Sequence[int] | None = None, scheme: str | None = None,
                       noise_std: float | None = None, seed: int = 0, levels=DEFAULT_LEVELS,
                       progress: bool = True) -> HeldoutValidation:
    """K-fold held-out-measurement validation of a reconstruction method.

    Parameters
    ----------
    reconstruct : callable
        ``reconstruct(fit_op, y_fit) -> Posterior``: the method, run with the
        same settings on the kept measurements only.
    op : LinearOperator
        The full forward model.
    y : torch.Tensor
        ``(1, *op.range_shape)``: the whole measurement.
    folds : int
        ``K >= 2`` (default 5).
    fold_indices : sequence of int, optional
        Which folds to run (default all ``K``; ``[0]`` is a quick check at
        ``1/K`` of the cost).
    scheme : str, optional
        Default :func:`bayes_recon.operators.holdout.default_scheme` of ``op``.
    noise_std : float, optional
        σ of the held-out measurements; default each fold's ``posterior.noise_std``
        (the given or the method's own estimate).
    seed : int
        Seeds the random schemes.
    levels : sequence of float
        Coverage levels (0.5, 0.9 and 0.95 are always included).
    progress : bool
        A tqdm bar over the folds.

    Returns
    -------
    HeldoutValidation

    Examples
    --------
    A posterior that knows the truth up to noise-level jitter (a stand-in method):

    >>> import torch
    >>> from bayes_recon.operators import ParallelBeamCT
    >>> from bayes_recon.posterior import Posterior
    >>> op = ParallelBeamCT(8, n_angles=10)
    >>> x = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    >>> y = op(x) + 0.1 * torch.randn(op(x).shape, generator=torch.Generator().manual_seed(1))
    >>> def method(fit_op, y_fit):
    ...     return Posterior(x.expand(1, 50, 1, 8, 8).clone(), noise_std=0.1)
    >>> res = heldout_validation(method, op, y, folds=5, progress=False)
    >>> res.scheme, res.folds_run, res.num_heldout
    ('projection', [0, 1, 2, 3, 4], 120)
    """
    if not callable(reconstruct):
        raise TypeError(f"reconstruct must be callable (fit_op, y_fit) -> Posterior, got "
                        f"{type(reconstruct).__name__}")
    if not isinstance(op, LinearOperator):
        raise TypeError(f"op must be a LinearOperator, got {type(op).__name__}")
    check_tensor("y", y, shape=(1, *op.range_shape), allow_complex=op.complex_range)
    check_int("folds", folds, minimum=2)
    scheme = default_scheme(op) if scheme is None else scheme
    indices = list(range(folds)) if fold_indices is None else [int(i) for i in fold_indices]
    if not indices or len(set(indices)) != len(indices) or not all(0 <= i < folds for i in indices):
        raise ValueError(f"fold_indices must be distinct folds in [0, {folds}), got {fold_indices!r}")
    splits = [split_measurements(op, i, folds, scheme, seed) for i in indices]  # fail early
    from tqdm.auto import tqdm

    results = []
    for split in tqdm(splits, desc=f"held-out folds ({scheme})", disable=not progress):
        start = time.perf_counter()
        post = reconstruct(split.fit_op, split.fit_measurement(y))
        seconds = time.perf_counter() - start
        if not isinstance(post, Posterior):
            raise TypeError(f"reconstruct must return a Posterior, got {type(post).__name__}")
        fold = heldout_predictive(post, split.held_op, split.held_measurement(y), noise_std)
        fold.seconds, fold.fold = seconds, split.fold
        results.append(fold)
    return summarise_folds(results, scheme, folds, levels)
