"""Aggregating a study folder: ``results.csv``, ``summary.csv``, ``summary.md`` and figures.

Everything is computed from the folder alone (``study.json`` and the task
rows; never the optional ``posteriors/*.nc``), so ``bayes-recon study report DIR``
regenerates it at any time, also for a study that is still running or was
interrupted (missing tasks are ``pending``), and on another machine: the text
files are the same bytes whenever the rows are the same (no clock, no local
machine facts; the provenance is what the rows record).

Intervals are percentile bootstrap intervals of the mean over images: for every
cell (setting, method) and metric, with ``rng = numpy.random.default_rng(seed)``
(the study's seed, fresh for each cell and metric) and the ``n`` finite values
of the cell's ``ok`` rows in image order,
``means = values[rng.integers(0, n, size=(resamples, n))].mean(axis=1)`` and the
interval is ``numpy.percentile(means, [2.5, 97.5])``.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from .config import StudyConfig
from .execute import read_study
from .provenance import provenance, provenance_lines
from .tasks import ROW_METRICS, read_row, study_tasks

__all__ = ["load_results", "bootstrap_interval", "aggregate", "write_report",
           "RESULT_COLUMNS", "SUMMARY_METRICS"]

RESULT_COLUMNS = ("setting", "method", "image", "status", "psnr", "ssim", "coverage_50",
                  "coverage_90", "coverage_95", "calibration_error", "test_log_likelihood",
                  "ause", "seconds", "cpu_seconds", "mse", "seed", "key")
SUMMARY_METRICS = ("psnr", "ssim", "coverage_50", "coverage_90", "coverage_95",
                   "calibration_error", "test_log_likelihood", "ause", "seconds")
_HEADERS = {"psnr": "PSNR (dB)", "ssim": "SSIM", "coverage_50": "cov. 50%",
            "coverage_90": "cov. 90%", "coverage_95": "cov. 95%",
            "calibration_error": "calib. error", "test_log_likelihood": "test log-lik.",
            "ause": "AUSE", "seconds": "seconds"}


def _number(value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return math.nan
    return v


def load_results(folder) -> tuple[StudyConfig, list[dict]]:
    """The study's config and one row per task in task order (``pending`` if not run).

    Raises
    ------
    ValueError
        ``folder`` is not a study folder (see :func:`~.execute.read_study`).
    """
    meta = read_study(folder)
    config = StudyConfig.from_dict(meta["config"])
    rows = []
    for task in study_tasks(config):
        row = read_row(folder, task) or {"status": "pending"}
        row.update(key=task.key, setting=task.setting.name, method=task.method.label,
                   image=task.image, seed=task.seed)
        rows.append(row)
    return config, rows


def bootstrap_interval(values, seed: int, resamples: int, level: float = 0.95, groups=None):
    """Percentile bootstrap interval of the mean of ``values`` (see the module docstring).

    Returns ``(nan, nan)`` for no values and ``(v, v)`` for one. With ``groups`` (one
    label per value, e.g. the image of each value) the ``m`` distinct groups are
    resampled instead, each drawn group bringing all its values (a cluster
    bootstrap): ``rng.integers(0, m, size=(resamples, m))``, so with one value per
    group (sorted by group) the interval is the plain one.
    """
    values = np.asarray(values, dtype=float)
    n = values.size
    if n == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    if groups is None:
        means = values[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
    else:
        ids, index = np.unique(np.asarray(groups), return_inverse=True)
        if index.size != n:
            raise ValueError(f"groups must have one label per value ({n}), got {index.size}")
        sums = np.bincount(index, weights=values, minlength=ids.size)
        counts = np.bincount(index, minlength=ids.size).astype(float)
        draw = rng.integers(0, ids.size, size=(resamples, ids.size))
        means = sums[draw].sum(axis=1) / counts[draw].sum(axis=1)
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


def aggregate(config: StudyConfig, rows: list[dict]) -> list[dict]:
    """Per cell (setting × method, in config order): counts, and mean/interval per metric.

    Each cell dict has ``setting``, ``method``, ``n_tasks``, ``n_ok``,
    ``n_error`` and, per metric of :data:`SUMMARY_METRICS`, ``<metric>_n``,
    ``<metric>_mean``, ``<metric>_lo`` and ``<metric>_hi`` over the finite values
    of the cell's ``ok`` rows.
    """
    cells = []
    for s in config.settings:
        for m in config.methods:
            mine = [r for r in rows if r["setting"] == s.name and r["method"] == m.label]
            ok = [r for r in mine if r["status"] == "ok"]
            cell = {"setting": s.name, "method": m.label, "n_tasks": len(mine),
                    "n_ok": len(ok), "n_error": sum(r["status"] == "error" for r in mine)}
            for metric in SUMMARY_METRICS:
                vals = np.array([_number(r.get(metric)) for r in ok], dtype=float)
                vals = vals[np.isfinite(vals)]
                lo, hi = bootstrap_interval(vals, config.seed, config.bootstrap_resamples)
                cell.update({f"{metric}_n": int(vals.size),
                             f"{metric}_mean": float(vals.mean()) if vals.size else math.nan,
                             f"{metric}_lo": lo, f"{metric}_hi": hi})
            cells.append(cell)
    return cells


def _csv_text(columns, records) -> str:
    def cell(v):
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            return ""  # pandas and spreadsheets read an empty field as missing
        return repr(v) if isinstance(v, float) else str(v)

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for rec in records:
        writer.writerow([cell(rec.get(c)) for c in columns])
    return buf.getvalue()


def _fmt(cell: dict, metric: str) -> str:
    if cell[f"{metric}_n"] == 0:
        return "–"
    spec = ".3f" if metric not in ("psnr", "seconds") else ".2f"
    mean, lo, hi = (cell[f"{metric}_{k}"] for k in ("mean", "lo", "hi"))
    return f"{mean:{spec}} [{lo:{spec}}, {hi:{spec}}]"


def _pooled_coverage(rows: list[dict]):
    """Mean coverage curve over rows with one (equal pixel counts: the pooled curve)."""
    curves = [(tuple(r["coverage_levels"]), r["coverage"]) for r in rows
              if r["status"] == "ok" and r.get("coverage")]
    if not curves:
        return None
    levels = curves[0][0]
    return levels, np.mean([c for lv, c in curves if lv == levels], axis=0)


def _calibration_figure(curves: dict, title: str, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.5, 4.5), layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="0.5", ls="--", lw=1, label="ideal")
    for name, (levels, cov) in curves.items():
        ax.plot(levels, cov, marker="o", label=name)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="nominal coverage", ylabel="observed coverage",
           title=title)
    ax.legend(loc="lower right", fontsize="small")
    _save(fig, path)


def _save(fig, path: Path) -> None:
    from ..._atomic import atomic_write

    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=100))


def _psnr_figure(config: StudyConfig, cells: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure

    names = [s.name for s in config.settings]
    fig = Figure(figsize=(max(5.0, 0.8 * len(names) + 2), 4), layout="constrained")
    ax = fig.subplots()
    for m in config.methods:
        mine = [c for c in cells if c["method"] == m.label]
        mean = np.array([c["psnr_mean"] for c in mine])
        err = np.array([[c["psnr_mean"] - c["psnr_lo"] for c in mine],
                        [c["psnr_hi"] - c["psnr_mean"] for c in mine]])
        ax.errorbar(range(len(names)), mean, yerr=err, marker="o", capsize=3, label=m.label)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set(ylabel="PSNR (dB)", title=f"{config.name}: mean, bootstrap 95% interval")
    ax.legend(fontsize="small")
    _save(fig, path)


def _figures(folder: Path, config: StudyConfig, rows: list[dict], cells: list[dict]) -> list:
    figs = folder / "figures"
    written = []
    by_method = {m.label: _pooled_coverage([r for r in rows if r["method"] == m.label])
                 for m in config.methods}
    by_method = {k: v for k, v in by_method.items() if v is not None}
    if by_method:
        _calibration_figure(by_method, "pooled over settings and images",
                            figs / "calibration_by_method.png")
        written.append("figures/calibration_by_method.png")
    for s in config.settings:
        curves = {m.label: _pooled_coverage([r for r in rows if r["setting"] == s.name
                                             and r["method"] == m.label])
                  for m in config.methods}
        curves = {k: v for k, v in curves.items() if v is not None}
        if curves:
            _calibration_figure(curves, s.name, figs / f"calibration_{s.name}.png")
            written.append(f"figures/calibration_{s.name}.png")
    _psnr_figure(config, cells, figs / "psnr.png")
    written.append("figures/psnr.png")
    return written


def _markdown(meta: dict, config: StudyConfig, rows: list, cells: list, figures: list) -> str:
    counts = {k: sum(r["status"] == k for r in rows) for k in ("ok", "error", "pending")}
    lines = [
        f"# Study `{config.name}`",
        "",
        f"{len(config.settings)} settings × {len(config.methods)} methods × {config.images} "
        f"test digits = {len(rows)} tasks: {counts['ok']} ok, {counts['error']} error, "
        f"{counts['pending']} pending. Written by bayes_recon "
        f"{meta.get('bayes_recon_version')}; regenerate with `bayes-recon study report DIR`.",
        "",
        *provenance_lines(provenance(meta, rows)),
        "",
        f"Cells: mean over images [bootstrap 95% interval, {config.bootstrap_resamples} "
        f"resamples, seed {config.seed}]; coverage and calibration only for posteriors. "
        "Per-task rows: `results.csv`; machine-readable cells: `summary.csv`.",
        "",
        "| setting | method | ok / tasks | " + " | ".join(_HEADERS[m] for m in SUMMARY_METRICS)
        + " |",
        "|---|---|---|" + "---|" * len(SUMMARY_METRICS),
    ]
    for c in cells:
        lines.append(f"| {c['setting']} | {c['method']} | {c['n_ok']} / {c['n_tasks']} | "
                     + " | ".join(_fmt(c, m) for m in SUMMARY_METRICS) + " |")
    failed = [r for r in rows if r["status"] == "error"]
    if failed:
        lines += ["", "## Failed tasks", "", "Traceback in `tasks/<key>.json`; a rerun of "
                  "`study run` retries them.", ""]
        for r in failed:
            last = (r.get("error") or "").strip().splitlines()[-1:] or ["?"]
            lines.append(f"- `{r['key']}`: {last[0]}")
    lines += ["", "## Figures", ""] + [f"![{Path(f).stem}]({f})" for f in figures]
    return "\n".join(lines) + "\n"


def write_report(folder) -> dict:
    """Write ``results.csv``, ``summary.csv``, ``summary.md`` and ``figures/*.png``.

    Parameters
    ----------
    folder : str or Path
        A study folder (as written by :func:`~.execute.run_study`).

    Returns
    -------
    dict
        ``cells`` (see :func:`aggregate`), ``provenance`` (see
        :func:`~.provenance.provenance`) and ``files`` (paths relative to ``folder``).
    """
    from .._io import write_text

    folder = Path(folder)
    meta = read_study(folder)
    config, rows = load_results(folder)
    cells = aggregate(config, rows)
    write_text(folder / "results.csv", _csv_text(RESULT_COLUMNS, rows))
    summary_cols = ["setting", "method", "n_tasks", "n_ok", "n_error"] + [
        f"{m}_{k}" for m in SUMMARY_METRICS for k in ("n", "mean", "lo", "hi")]
    write_text(folder / "summary.csv", _csv_text(summary_cols, cells))
    figures = _figures(folder, config, rows, cells)
    write_text(folder / "summary.md", _markdown(meta, config, rows, cells, figures))
    return {"cells": cells, "provenance": provenance(meta, rows),
            "files": ["results.csv", "summary.csv", "summary.md", *figures]}
