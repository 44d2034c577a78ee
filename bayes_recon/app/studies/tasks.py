"""One study task: (setting, method, test image) → a row of metrics (and optionally a ``.nc``).

Study folder layout::

    study.json            config, package version, folder format
    tasks/<key>.json      one row per finished task (written last, atomically)
    posteriors/<key>.nc   optional: ArviZ InferenceData of a posterior (truth in constant_data)
    results.csv, summary.md, summary.csv, figures/*.png   written by the report

``study.json`` and ``tasks/`` are everything a report or a resumed run needs. A
task is *done* when ``tasks/<key>.json`` parses, names the task and has status
``ok``; its ``.nc``, if one was written (before the row), is an extra that may be
absent, e.g. in a folder committed to git without its samples.
"""

from __future__ import annotations

import functools
import json
import platform
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

from .config import MethodSpec, Setting, StudyConfig

__all__ = ["Task", "study_tasks", "task_problem", "run_task", "task_is_done", "read_row", "versions",
           "ROW_METRICS", "TASKS_DIR", "POSTERIORS_DIR"]

TASKS_DIR = "tasks"
POSTERIORS_DIR = "posteriors"
#: Metric columns of a row (NaN where a method has no posterior).
ROW_METRICS = ("psnr", "ssim", "mse", "coverage_50", "coverage_90", "coverage_95",
               "calibration_error", "test_log_likelihood", "ause")


def _slug(text: str) -> str:
    text = text.lower().replace("σ", "sigma")
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")


@dataclass(frozen=True)
class Task:
    """One cell entry: ``method`` on test digit ``image`` under ``setting``.

    Attributes
    ----------
    setting : Setting
    method : MethodSpec
    image : int
        Index into ``digits("test", size=setting.size)``.
    seed : int
        Seeds the measurement noise and the method; equal for all methods of
        one (setting, image), so methods are compared on the same data.
    """

    setting: Setting
    method: MethodSpec
    image: int
    seed: int

    @property
    def key(self) -> str:
        """File stem, unique within a study: ``ct28-a20-n5__tv__0003``."""
        return f"{self.setting.name}__{_slug(self.method.label)}__{self.image:04d}"


def _task_seed(base: int, setting: Setting, image: int) -> int:
    # A stable hash (not Python's salted hash()) so reruns and other machines agree.
    return zlib.crc32(f"{base}/{setting.name}/{image}".encode()) % (2 ** 31)


def study_tasks(config: StudyConfig) -> list[Task]:
    """Every task of ``config``, ordered image → setting → method.

    Image-major, so that a study stopped part-way (and resumed later) has the
    same first images in every cell: its partial report is a fair comparison.
    """
    if not isinstance(config, StudyConfig):
        raise TypeError(f"config must be a StudyConfig, got {type(config).__name__}")
    return [Task(s, m, i, _task_seed(config.seed, s, i))
            for i in range(config.images) for s in config.settings for m in config.methods]


def versions() -> dict:
    """Versions recorded in every row and in ``study.json``."""
    import dask
    import distributed
    import torch

    from ... import __version__

    return {"bayes_recon": __version__, "torch": torch.__version__, "dask": dask.__version__,
            "distributed": distributed.__version__, "python": platform.python_version()}


def read_row(folder, task: Task) -> dict | None:
    """The stored row of ``task``, or None if it is absent or unreadable."""
    path = Path(folder) / TASKS_DIR / f"{task.key}.json"
    try:
        row = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return row if isinstance(row, dict) and row.get("key") == task.key else None


def task_is_done(folder, task: Task) -> bool:
    """True when ``task``'s row exists and has status ``ok`` (a ``.nc`` is not needed)."""
    row = read_row(folder, task)
    return row is not None and row.get("status") == "ok"


@functools.lru_cache(maxsize=8)
def _prior(spec: str, size: int):
    from ..methods import load_prior

    return load_prior(spec, size)  # one load per worker process and prior


@functools.lru_cache(maxsize=4)
def _test_digits(size: int):
    from ...data import digits

    return digits("test", size=size)


def task_problem(task: Task):
    """The operator, truth and measurement of ``task``, exactly as :func:`run_task` makes them.

    For work on a study's data outside the study, e.g. a held-out check of a task's
    method (docs/studies.md, "Held-out validation").

    Returns
    -------
    op : LinearOperator
    truth : torch.Tensor
        ``(1, 1, size, size)``: test digit ``task.image``.
    measurement : Measurement
        ``y`` and ``noise_std``, simulated with ``task.seed``.
    """
    from ...data import simulate
    from ...data.problems import ProblemConfig, build_operator

    s = task.setting
    op = build_operator(ProblemConfig(s.problem, size=s.size, angles=s.angles, spokes=s.spokes,
                                      seed=task.seed))
    truth = _test_digits(s.size)[task.image : task.image + 1]
    return op, truth, simulate(op, truth, relative_noise=s.relative_noise, seed=task.seed)


def run_task(task: Task, folder, save_posterior: bool = False) -> dict:
    """Run one task and return its metrics (and write ``posteriors/<key>.nc`` if asked).

    Parameters
    ----------
    task : Task
    folder : str or Path
        The study folder.
    save_posterior : bool
        For a posterior, also write its samples, the measurement and the truth to
        ``posteriors/<key>.nc`` (ArviZ). The metrics do not need it.

    Returns
    -------
    dict
        :data:`ROW_METRICS` (NaN where not applicable), ``coverage_levels`` and
        ``coverage`` (all levels, for pooled calibration curves),
        ``noise_std``, ``seconds`` (wall time of the method alone), ``cpu_seconds``
        (CPU time of the thread that ran it), ``posterior_file`` (relative path, or
        None when none was written) and the method's ``info``.
    """
    import time

    from ...metrics import psnr, ssim
    from .._io import write_netcdf
    from ..methods import run_method

    s, m = task.setting, task.method
    op, truth, meas = task_problem(task)
    prior = _prior(m.prior, s.size) if m.prior is not None else None
    start, cpu_start = time.perf_counter(), time.thread_time()
    result = run_method(m.settings(task.seed), op, meas.y, meas.noise_std, prior)
    seconds = time.perf_counter() - start
    # CPU time of this thread (torch runs one intra-op thread per task): the task's cost
    # also on a machine shared with other jobs, where the wall time is inflated.
    cpu_seconds = time.thread_time() - cpu_start
    x = result.x.detach().to(truth.dtype)
    nan = float("nan")
    out = {k: nan for k in ROW_METRICS}
    out.update(psnr=float(psnr(truth, x, data_range=1.0)[0]),
               ssim=float(ssim(truth, x, data_range=1.0)[0]),
               mse=float((truth - x).square().mean()),
               noise_std=meas.noise_std, seconds=seconds, cpu_seconds=cpu_seconds,
               posterior_file=None, coverage_levels=None, coverage=None,
               info=_jsonable(result.info))
    if result.posterior is not None:
        from ...diagnostics import DEFAULT_LEVELS, calibration, to_arviz

        post = result.posterior
        report = calibration(post, truth[0], levels=DEFAULT_LEVELS)
        out.update(coverage_50=report.coverage_at(0.5), coverage_90=report.coverage_at(0.9),
                   coverage_95=report.coverage_at(0.95),
                   calibration_error=report.calibration_error,
                   test_log_likelihood=report.test_log_likelihood, ause=report.ause,
                   coverage_levels=list(report.levels), coverage=list(report.coverage))
        if save_posterior:
            rel = f"{POSTERIORS_DIR}/{task.key}.nc"
            write_netcdf(Path(folder) / rel, to_arviz(post, truth=truth[0], y=meas.y[0]))
            out["posterior_file"] = rel
    return out


def _jsonable(value):
    """Method info as plain JSON (numbers, strings, lists, dicts); others as ``repr``."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return repr(value)
