"""``calibration``: are the error bars right? Coverage, PIT, log-likelihood, sparsification.

Pixel-level metrics (coverage, PIT, z-scores, test log-likelihood) pool all
pixels of all images; image-level metrics (AUSE, AURG, sparsification curves)
are averaged over images. Per-image reports are kept when a list is given.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, fields
from typing import Sequence

import numpy as np
from scipy import stats

from ..posterior import Posterior
from ._inputs import az, samples_array, truth_array
from .calibration_metrics import (
    CalibrationWarning,
    gaussian_log_likelihood,
    interval_coverage,
    patch_log_likelihood,
    pit_values,
    sparsification_curves,
    zscore_summary,
    floor_std,
)

__all__ = ["CalibrationReport", "CalibrationWarning", "calibration", "DEFAULT_LEVELS"]

DEFAULT_LEVELS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
_DEFAULT_PATCH_SIZES = (1, 2, 4)


@dataclass
class CalibrationReport:
    """Calibration of posterior samples against the truth.

    Attributes
    ----------
    levels : list of float
        Nominal central-interval probabilities.
    coverage : list of float
        Observed fraction of truth pixels inside each interval (same order).
    calibration_error : float
        ``mean |coverage - levels|``.
    pit : ndarray, shape (num_pixels,)
        PIT value of every truth pixel in its posterior marginal (all images).
    pit_ks_statistic, pit_ks_pvalue : float
        Kolmogorov-Smirnov test of ``pit`` against U(0, 1). Pixels of one image
        are correlated in real posteriors, so read the p-value as a heuristic.
    test_log_likelihood : float
        Mean per-pixel ``log N(truth; mean, std^2)`` with sample mean and std.
    patch_log_likelihood : dict of int to float
        Per-pixel log-likelihood under Gaussian patch marginals with sample
        covariance (see ``metrics.patch_log_likelihood``), keyed by patch size.
    ause, aurg : float
        Area under the sparsification error / random gain of RMSE (normalised
        RMSE versus fraction of pixels removed; lower AUSE, higher AURG better).
    sparsification : dict of str to list of float
        ``fractions``, ``uncertainty``, ``oracle``, ``random`` curves.
    rmse : float
        Root mean squared error of the posterior mean.
    mean_std : float
        Mean posterior standard deviation (sharpness).
    z_beyond_2, z_beyond_3 : float
        Fraction of ``|truth - mean| / std`` above 2 and 3.
    z_mean, z_std : float
        Mean and standard deviation of the z-scores.
    qq_theoretical, qq_observed : list of float
        Standard-normal versus empirical z-score quantiles (QQ plot data).
    num_images, num_pixels, num_samples : int
        ``num_samples`` is the smallest sample count among the images.
    per_image : list of CalibrationReport
        One report per image when a list was analysed, else empty.
    """

    levels: list
    coverage: list
    calibration_error: float
    pit: np.ndarray
    pit_ks_statistic: float
    pit_ks_pvalue: float
    test_log_likelihood: float
    patch_log_likelihood: dict
    ause: float
    aurg: float
    sparsification: dict
    rmse: float
    mean_std: float
    z_beyond_2: float
    z_beyond_3: float
    z_mean: float
    z_std: float
    qq_theoretical: list
    qq_observed: list
    num_images: int
    num_pixels: int
    num_samples: int
    per_image: list = field(default_factory=list)

    def coverage_at(self, level: float) -> float:
        """Observed coverage at a nominal level that was evaluated."""
        for lv, cov in zip(self.levels, self.coverage):
            if abs(lv - level) < 1e-12:
                return cov
        raise ValueError(f"level must be one of the evaluated levels {self.levels}, got {level}")

    def to_dict(self, include_pit: bool = True) -> dict:
        """Plain-Python (JSON-serialisable) dict with the field names as keys.

        ``patch_log_likelihood`` keys become strings (JSON object keys);
        ``include_pit=False`` replaces the per-pixel ``pit`` by ``None``.
        """
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "pit":
                value = value.tolist() if include_pit else None
            elif f.name == "patch_log_likelihood":
                value = {str(k): float(v) for k, v in value.items()}
            elif f.name == "sparsification":
                value = {k: [float(x) for x in v] for k, v in value.items()}
            elif f.name == "per_image":
                value = [r.to_dict(include_pit=include_pit) for r in value]
            elif isinstance(value, list):
                value = [float(x) for x in value]
            elif isinstance(value, (bool, np.bool_)):
                value = bool(value)
            elif isinstance(value, numbers.Integral):
                value = int(value)
            elif isinstance(value, numbers.Real):
                value = float(value)
            out[f.name] = value
        return out

    def to_markdown(self) -> str:
        """Markdown tables: summary metrics and coverage per level."""
        rows = [
            ("images / pixels / samples", f"{self.num_images} / {self.num_pixels} / {self.num_samples}"),
            ("calibration error", f"{self.calibration_error:.4f}"),
            ("RMSE of mean", f"{self.rmse:.4g}"),
            ("mean std", f"{self.mean_std:.4g}"),
            ("test log-likelihood (per pixel)", f"{self.test_log_likelihood:.4f}"),
        ]
        rows += [
            (f"patch log-likelihood {k}x{k}", f"{v:.4f}")
            for k, v in sorted(self.patch_log_likelihood.items())
        ]
        rows += [
            ("AUSE (RMSE)", f"{self.ause:.4f}"),
            ("AURG (RMSE)", f"{self.aurg:.4f}"),
            ("PIT KS statistic (p-value)", f"{self.pit_ks_statistic:.4f} ({self.pit_ks_pvalue:.3g})"),
            ("fraction |z| > 2 (N(0,1): 0.0455)", f"{self.z_beyond_2:.4f}"),
            ("fraction |z| > 3 (N(0,1): 0.0027)", f"{self.z_beyond_3:.4f}"),
            ("z mean / std", f"{self.z_mean:.3f} / {self.z_std:.3f}"),
        ]
        lines = ["| metric | value |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows]
        lines += ["", "| nominal | observed coverage |", "|---|---|"]
        lines += [f"| {lv:.2f} | {cov:.4f} |" for lv, cov in zip(self.levels, self.coverage)]
        return "\n".join(lines)


def _check_levels(levels) -> list:
    if isinstance(levels, (str, bytes)) or not hasattr(levels, "__iter__"):
        raise TypeError(f"levels must be a sequence of floats in (0, 1), got {levels!r}")
    out = []
    for lv in levels:
        if isinstance(lv, bool) or not isinstance(lv, numbers.Real):
            raise TypeError(f"levels must be a sequence of floats in (0, 1), got element {lv!r}")
        if not 0 < float(lv) < 1:
            raise ValueError(f"levels must lie strictly inside (0, 1), got {float(lv)}")
        out.append(float(lv))
    if not out:
        raise ValueError("levels must be non-empty, got an empty sequence")
    return out


def _truth_from_idata(idata, var_name: str):
    key = f"{var_name}_true"
    if "constant_data" in idata.groups() and key in idata.constant_data:
        return np.asarray(idata.constant_data[key].values)
    raise ValueError(
        f"truth is None and the InferenceData has no constant_data[{key!r}]; pass truth explicitly"
    )


def _image_raw(
    source, truth, levels, patch_sizes, patch_jitter, min_std, var_name, num_fractions, argname, truthname
):
    """Everything one image contributes, before pooling."""
    arr = samples_array(source, var_name, argname=argname)
    c, h, w = arr.shape[2:]
    s = arr.shape[0] * arr.shape[1]
    if s < 2:
        raise ValueError(
            f"{argname} must hold at least 2 samples for intervals and a std, got shape {arr.shape}"
        )
    if truth is None:
        if not isinstance(source, az.InferenceData):
            raise ValueError("truth is required for a Posterior (only InferenceData can carry it)")
        truth = _truth_from_idata(source, var_name)
    t_img = truth_array(truth, (c, h, w), argname=truthname)
    samples = arr.reshape(s, c, h, w)
    flat = samples.reshape(s, -1)
    t = t_img.reshape(-1)
    mean = flat.mean(axis=0)
    std = floor_std(flat.std(axis=0, ddof=1), min_std)
    err = t - mean
    if patch_sizes is None:
        sizes = [p for p in _DEFAULT_PATCH_SIZES if p <= min(h, w)]
    else:
        sizes = list(patch_sizes)
        for p in sizes:
            if isinstance(p, bool) or not isinstance(p, numbers.Integral) or not 1 <= p <= min(h, w):
                raise ValueError(f"patch_sizes entries must be ints in [1, {min(h, w)}], got {p!r}")
    return {
        "coverage": interval_coverage(flat, t, levels),
        "pit": pit_values(flat, t),
        "z": err / std,
        "sq_err": err * err,
        "loglik": gaussian_log_likelihood(mean, std, t),
        "std": std,
        "patch": {int(p): patch_log_likelihood(samples, t_img, int(p), patch_jitter) for p in sizes},
        "sparse": sparsification_curves(np.abs(err), std, num_fractions),
        "num_samples": s,
    }


def _report(raws: list, levels: list, per_image: list) -> CalibrationReport:
    """Pool per-image raw metrics into one report."""
    npix = np.array([r["pit"].size for r in raws], dtype=np.float64)
    weights = npix / npix.sum()
    coverage = sum(wt * r["coverage"] for wt, r in zip(weights, raws))
    pit = np.concatenate([r["pit"] for r in raws])
    ks = stats.kstest(pit, "uniform")
    z = np.concatenate([r["z"] for r in raws])
    zs = zscore_summary(z)
    common_sizes = set.intersection(*(set(r["patch"]) for r in raws))
    patch = {}
    for p in sorted(common_sizes):
        tot = sum(r["patch"][p][0] * r["patch"][p][1] for r in raws)
        patch[p] = tot / sum(r["patch"][p][1] for r in raws)
    sparse_keys = ("fractions", "uncertainty", "oracle", "random")
    sparse = {k: np.mean([r["sparse"][k] for r in raws], axis=0).tolist() for k in sparse_keys}
    cov_list = [float(c) for c in coverage]
    return CalibrationReport(
        levels=list(levels),
        coverage=cov_list,
        calibration_error=float(np.mean(np.abs(np.array(cov_list) - np.array(levels)))),
        pit=pit,
        pit_ks_statistic=float(ks.statistic),
        pit_ks_pvalue=float(ks.pvalue),
        test_log_likelihood=float(np.concatenate([r["loglik"] for r in raws]).mean()),
        patch_log_likelihood=patch,
        ause=float(np.mean([r["sparse"]["ause"] for r in raws])),
        aurg=float(np.mean([r["sparse"]["aurg"] for r in raws])),
        sparsification=sparse,
        rmse=float(math.sqrt(np.concatenate([r["sq_err"] for r in raws]).mean())),
        mean_std=float(np.concatenate([r["std"] for r in raws]).mean()),
        z_beyond_2=zs["z_beyond_2"],
        z_beyond_3=zs["z_beyond_3"],
        z_mean=zs["z_mean"],
        z_std=zs["z_std"],
        qq_theoretical=zs["qq_theoretical"].tolist(),
        qq_observed=zs["qq_observed"].tolist(),
        num_images=len(raws),
        num_pixels=int(npix.sum()),
        num_samples=int(min(r["num_samples"] for r in raws)),
        per_image=per_image,
    )


def calibration(
    posterior_or_idata,
    truth=None,
    levels: Sequence[float] = DEFAULT_LEVELS,
    patch_sizes: Sequence[int] | None = None,
    *,
    var_name: str = "x",
    patch_jitter: float = 1e-6,
    min_std: float = 1e-8,
    num_fractions: int = 100,
) -> CalibrationReport:
    """Calibration of posterior image samples against the truth.

    Parameters
    ----------
    posterior_or_idata : Posterior, arviz.InferenceData, or a list of them
        Samples ``(chains, draws, C, H, W)`` (from ``posterior[var_name]`` for
        InferenceData). A list is analysed image by image and pooled.
    truth : tensor or ndarray of shape (C, H, W), (1, C, H, W) or, when C = 1, (H, W); or a list of them
        One truth per posterior (a list, or an array with a leading image
        axis, for a list of posteriors). May be ``None`` for InferenceData
        that carries ``constant_data[f"{var_name}_true"]``.
    levels : sequence of float in (0, 1)
        Nominal probabilities of the central intervals (sample quantiles).
    patch_sizes : sequence of int, optional
        Patch sizes for the patch-wise log-likelihood; ``None`` means
        ``(1, 2, 4)`` limited to sizes that fit the image, ``()`` skips it.
    var_name : str
        Image variable name in InferenceData.
    patch_jitter : float
        Relative diagonal jitter of the patch covariances.
    min_std : float
        Floor for the pixel std in z-scores and log-likelihoods; pixels below
        it trigger a ``CalibrationWarning``.
    num_fractions : int
        Number of removal fractions on the sparsification curves.

    Returns
    -------
    CalibrationReport

    Examples
    --------
    >>> import torch
    >>> from bayes_recon.posterior import Posterior
    >>> from bayes_recon.diagnostics import calibration
    >>> g = torch.Generator().manual_seed(0)
    >>> post = Posterior(torch.randn(2, 200, 1, 16, 16, generator=g))
    >>> truth = torch.randn(1, 16, 16, generator=g)
    >>> report = calibration(post, truth, levels=(0.5, 0.9))
    >>> abs(report.coverage_at(0.9) - 0.9) < 0.1
    True
    """
    levels = _check_levels(levels)
    if isinstance(patch_jitter, bool) or not isinstance(patch_jitter, numbers.Real) or not patch_jitter >= 0:
        raise ValueError(f"patch_jitter must be a float >= 0, got {patch_jitter!r}")
    if isinstance(min_std, bool) or not isinstance(min_std, numbers.Real) or not min_std > 0:
        raise ValueError(f"min_std must be a float > 0, got {min_std!r}")
    if isinstance(num_fractions, bool) or not isinstance(num_fractions, int) or num_fractions < 2:
        raise ValueError(f"num_fractions must be an int >= 2, got {num_fractions!r}")
    if patch_sizes is not None and (isinstance(patch_sizes, (str, bytes)) or not hasattr(patch_sizes, "__iter__")):
        raise TypeError(f"patch_sizes must be a sequence of ints or None, got {patch_sizes!r}")
    opts = dict(
        levels=levels,
        patch_sizes=patch_sizes,
        patch_jitter=float(patch_jitter),
        min_std=float(min_std),
        var_name=var_name,
        num_fractions=num_fractions,
    )

    if isinstance(posterior_or_idata, (Posterior, az.InferenceData)):
        raw = _image_raw(posterior_or_idata, truth, argname="posterior_or_idata", truthname="truth", **opts)
        return _report([raw], levels, [])

    if not isinstance(posterior_or_idata, (list, tuple)) or not posterior_or_idata:
        raise TypeError(
            "posterior_or_idata must be a Posterior, an InferenceData or a non-empty list of them, "
            f"got {type(posterior_or_idata).__name__}"
        )
    n = len(posterior_or_idata)
    if truth is None:
        truths = [None] * n
    else:
        try:
            truths = list(truth)
        except TypeError:
            raise TypeError(f"truth must be a list of {n} images for a list of posteriors") from None
        if len(truths) != n:
            raise ValueError(
                f"truth must hold one image per posterior: expected {n}, got {len(truths)}"
            )
    raws = [
        _image_raw(p, t, argname=f"posterior_or_idata[{i}]", truthname=f"truth[{i}]", **opts)
        for i, (p, t) in enumerate(zip(posterior_or_idata, truths))
    ]
    per_image = [_report([r], levels, []) for r in raws]
    return _report(raws, levels, per_image)
