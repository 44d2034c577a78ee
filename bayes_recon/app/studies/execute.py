"""Running a study on ``dask.distributed``: one task per (setting, method, image), resumable.

Without ``scheduler`` a :class:`distributed.LocalCluster` is started (one
single-threaded worker process per core, torch limited to one thread; with
``workers=1`` the one worker is a thread of this process, so no process is
started and nothing is imported twice) and shut down afterwards; with
``scheduler`` an existing cluster is used, whose workers must see the study
folder (a shared file system) and have ``bayes_recon`` installed.
"""

from __future__ import annotations

import functools
import logging
import os
import time
import traceback
import uuid
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .config import StudyConfig
from .provenance import machine, source_commit
from .tasks import TASKS_DIR, Task, run_task, study_tasks, task_is_done, versions

__all__ = ["StudyRun", "run_study", "execute_task", "prepare_folder", "read_study",
           "STUDY_FILE", "FOLDER_FORMAT"]

STUDY_FILE = "study.json"
#: Dask settings of a one-worker, in-process cluster: no statistical profiling, slower
#: housekeeping (see :func:`_connect`), no work stealing (one worker has no one to steal from).
IN_PROCESS_DASK_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "5s",
    "distributed.worker.memory.monitor-interval": "1s",
    "distributed.scheduler.work-stealing": False,
}
#: Layout version of a study folder; bump when files change meaning.
FOLDER_FORMAT = 1


@dataclass
class StudyRun:
    """What :func:`run_study` did.

    Attributes
    ----------
    folder : Path
    total, skipped, executed, errors : int
        Tasks in the study, found done (skipped), run now, and run now with
        status ``error``.
    seconds : float
        Wall time of the run, including cluster start-up.
    rows : list of dict
        The rows of the tasks run now.
    """

    folder: Path
    total: int
    skipped: int
    executed: int
    errors: int
    seconds: float
    rows: list = field(default_factory=list)


def read_study(folder) -> dict:
    """The parsed ``study.json`` of ``folder``.

    Raises
    ------
    ValueError
        No such folder or file, unreadable JSON, or a folder format this
        version does not know.
    """
    import json

    path = Path(folder) / STUDY_FILE
    if not path.is_file():
        raise ValueError(f"folder {folder} is not a study folder (no {STUDY_FILE})")
    try:
        meta = json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(meta, dict) or meta.get("format") != FOLDER_FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else None
        raise ValueError(f"{path} has folder format {got!r}; this bayes_recon reads format "
                         f"{FOLDER_FORMAT}")
    return meta


def _same_study(recorded: dict, config: StudyConfig) -> bool:
    """Whether a recorded config is ``config`` up to the number of images.

    Task keys and seeds do not depend on ``images``, so a folder can be resumed with
    more images (scaling up a committed study) or fewer (finishing the first ones).
    """
    import json

    wanted = json.loads(json.dumps(config.to_dict()))
    return ({k: v for k, v in recorded.items() if k != "images"}
            == {k: v for k, v in wanted.items() if k != "images"})


def _check_folder(config: StudyConfig, out) -> bool:
    """Whether ``out`` already holds this study; raises if it holds another one."""
    from ... import __version__

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out {out} exists and is not a folder")
    if not (out / STUDY_FILE).exists():
        return False
    meta = read_study(out)
    if meta.get("bayes_recon_version") != __version__:
        raise ValueError(
            f"out {out} holds a study written by bayes_recon "
            f"{meta.get('bayes_recon_version')!r}, this is {__version__!r}; use a new "
            "folder (results of different versions are not comparable)")
    if not isinstance(meta.get("config"), dict) or not _same_study(meta["config"], config):
        raise ValueError(f"out {out} holds a study with another config "
                         f"(name {meta.get('config', {}).get('name')!r}); use a new folder "
                         "or the same config to resume")
    return True


def prepare_folder(config: StudyConfig, out) -> Path:
    """Create ``out`` with ``study.json``, or check an existing one matches.

    A folder resumed with more images than it records has its ``images`` raised to
    the new number (the report then covers them all); with fewer, it keeps its own.

    Raises
    ------
    ValueError
        ``out`` holds a study of another ``bayes_recon`` version or another
        config (resuming it would mix incomparable results).
    """
    from ... import __version__
    from .._io import write_json

    out = Path(out)
    if not _check_folder(config, out):
        write_json(out / STUDY_FILE, {"format": FOLDER_FORMAT, "bayes_recon_version": __version__,
                                      "versions": versions(), **_source_and_machine(),
                                      "config": config.to_dict(),
                                      "created": datetime.now(timezone.utc).isoformat()})
        return out
    meta = read_study(out)
    if config.images > meta["config"].get("images", 0):
        meta["config"]["images"] = config.images
        write_json(out / STUDY_FILE, meta)
    return out


@functools.lru_cache(maxsize=1)
def _process_source() -> dict:
    # Once per process: a worker keeps running the code it imported first.
    return source_commit()


def _source_and_machine() -> dict:
    source = _process_source()
    return {"commit": source["commit"], "commit_dirty": source["dirty"], "machine": machine()}


def execute_task(task: Task, folder, task_fn=None, torch_threads: int | None = 1,
                 save_posteriors: bool = False) -> dict:
    """Run one task and write its row to ``tasks/<key>.json`` (atomically); returns the row.

    An exception in the task is caught and recorded (status ``error`` with the
    traceback), so one failing task does not stop a study. Warnings raised by
    the method are recorded in the row.

    Parameters
    ----------
    task : Task
    folder : str or Path
        The study folder.
    task_fn : callable, optional
        ``task_fn(task, folder) -> dict`` of metrics; default :func:`run_task`.
    torch_threads : int or None
        Intra-op threads of torch in this process (None leaves it alone). One
        per task: the problems are small and workers already fill the cores.
    save_posteriors : bool
        Passed to :func:`run_task` (ignored with ``task_fn``): also write the
        posterior's samples to ``posteriors/<key>.nc``.
    """
    import torch

    from .._io import write_json

    if task_fn is None:
        task_fn = functools.partial(run_task, save_posterior=save_posteriors)
    if torch_threads is not None:
        torch.set_num_threads(torch_threads)
    start = time.perf_counter()
    metrics, error = {}, None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # each task sees its own warnings
        try:
            metrics = dict(task_fn(task, folder))
        except Exception:  # recorded and reported; the study goes on
            error = traceback.format_exc()
    elapsed = time.perf_counter() - start
    row = {
        "key": task.key, "setting": task.setting.name, "method": task.method.label,
        "registry_method": task.method.method, "image": task.image, "seed": task.seed,
        "status": "error" if error else "ok", "error": error,
        # ``seconds`` is the method's own time when the task reports it (no imports, I/O)
        "seconds": elapsed, **metrics, "task_seconds": elapsed,
        "warnings": sorted({f"{w.category.__name__}: {str(w.message)[:200]}" for w in caught}),
        "versions": versions(), **_source_and_machine(), "pid": os.getpid(),
        "torch_threads": torch.get_num_threads(),
        "finished": datetime.now(timezone.utc).isoformat(),
    }
    write_json(Path(folder) / TASKS_DIR / f"{task.key}.json", row)
    return row


def _error_row(task: Task, folder, err: BaseException) -> dict:
    """Record a task Dask gave up on (e.g. its worker died too often)."""
    from .._io import write_json

    row = {"key": task.key, "setting": task.setting.name, "method": task.method.label,
           "registry_method": task.method.method, "image": task.image, "seed": task.seed,
           "status": "error", "seconds": float("nan"),
           "error": "".join(traceback.format_exception(type(err), err, err.__traceback__)),
           "versions": versions(), "finished": datetime.now(timezone.utc).isoformat()}
    write_json(Path(folder) / TASKS_DIR / f"{task.key}.json", row)
    return row


def _connect(scheduler, workers, timeout):
    import dask
    from distributed import Client, LocalCluster

    from ...inference.chains import available_cores

    if scheduler is not None:
        if workers is not None:
            raise ValueError("workers must be None with scheduler (the cluster has its own), "
                             f"got workers={workers}")
        if not isinstance(scheduler, str) or not scheduler:
            raise TypeError(f"scheduler must be an address string, got {scheduler!r}")
        try:
            return Client(scheduler, timeout=timeout, set_as_default=False), None
        except (OSError, TimeoutError) as err:
            raise ValueError(f"scheduler {scheduler!r} is unreachable within {timeout} s: "
                             f"{err}") from None
    n = workers if workers is not None else available_cores()
    # One worker runs as a thread of this process: a worker process would only add its start-up
    # and a second import of torch and the methods (seconds) to a study that cannot run faster.
    processes = n > 1
    extra = {"env": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}} if processes else {}
    # In-process, Dask's periodic housekeeping competes for the GIL with the task itself: the
    # statistical profiler samples every thread each 10 ms, the event-loop health check ticks every
    # 20 ms, psutil monitors poll this process. Measured on the quick preset (5 runs each, median):
    # loop 8.96 s, in-process Dask 11.08 s with the defaults, 9.56 s with these (benchmarks/studies.py).
    quiet = {} if processes else IN_PROCESS_DASK_CONFIG
    with dask.config.set(quiet):  # read when the cluster is built; scoped to this call
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=processes,
                               dashboard_address=None, silence_logs=logging.ERROR, **extra)
    try:
        return Client(cluster, set_as_default=False), cluster
    except BaseException:
        cluster.close()
        raise


def run_study(config: StudyConfig, out, *, workers: int | None = None,
              scheduler: str | None = None, progress: bool = True, retries: int = 2,
              connect_timeout: float = 10.0, task_fn=None, report: bool = True,
              save_posteriors: bool = False) -> StudyRun:
    """Run (or resume) a study into the folder ``out`` and write its report.

    Tasks already done (see :func:`~.tasks.task_is_done`: an ``ok`` row) are
    skipped; tasks that ended in ``error`` are run again. ``config`` may differ from
    the folder's in ``images`` only (see :func:`prepare_folder`).

    Parameters
    ----------
    config : StudyConfig
    out : str or Path
        Study folder; created, or resumed if it holds the same study.
    workers : int, optional
        Workers of the local cluster (default: one per core): single-threaded
        processes, or with ``workers=1`` a thread of this process.
    scheduler : str, optional
        Address of an existing Dask scheduler (``tcp://host:8786``) instead of
        a local cluster.
    progress : bool
        A tqdm bar over tasks.
    retries : int
        Dask retries of a task whose execution raised outside the task body
        (a task on a worker that dies is rescheduled by Dask itself).
    connect_timeout : float
        Seconds to wait for ``scheduler``.
    task_fn : callable, optional
        ``task_fn(task, folder) -> dict``; default :func:`~.tasks.run_task`
        (a hook for tests and custom experiments; must be importable on workers).
    report : bool
        Write ``results.csv``, ``summary.md`` and figures at the end.
    save_posteriors : bool
        Also write each posterior's samples to ``posteriors/<key>.nc`` (ArviZ;
        megabytes per task). Off by default: the rows hold every metric and
        coverage curve the report needs, and a folder of rows alone is small
        enough to commit; a task is complete without its ``.nc``.

    Returns
    -------
    StudyRun

    Raises
    ------
    ValueError
        Invalid config (see :meth:`StudyConfig.validate`), a folder of another
        study or version, an unreachable ``scheduler``.
    """
    from distributed import as_completed
    from tqdm.auto import tqdm

    if not isinstance(config, StudyConfig):
        raise TypeError(f"config must be a StudyConfig, got {type(config).__name__}")
    if workers is not None:
        from ..._validation import check_int

        check_int("workers", workers, minimum=1)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be an int >= 0, got {retries!r}")
    if not connect_timeout > 0:
        raise ValueError(f"connect_timeout must be > 0, got {connect_timeout!r}")
    if not isinstance(save_posteriors, bool):
        raise TypeError(f"save_posteriors must be a bool, got {save_posteriors!r}")
    start = time.perf_counter()
    config.validate()
    folder = Path(out)
    exists = _check_folder(config, folder)
    tasks = study_tasks(config)
    pending = [t for t in tasks if not (exists and task_is_done(folder, t))]
    rows = []
    if pending:
        import torch

        threads = torch.get_num_threads()  # an in-process worker sets torch's threads per task
        # Connect before writing anything: an unreachable scheduler leaves no folder behind.
        client, cluster = _connect(scheduler, workers, connect_timeout)
        try:
            prepare_folder(config, folder)
            futures = {}
            for rank, t in enumerate(pending):
                # Priorities keep the tasks' order (image-major) on the workers too.
                fut = client.submit(execute_task, t, str(folder), task_fn, 1, save_posteriors,
                                    key=f"study-{t.key}-{uuid.uuid4().hex[:8]}", pure=False,
                                    retries=retries, priority=len(pending) - rank)
                futures[fut] = t
            bar = tqdm(total=len(pending), desc=f"study {config.name}", disable=not progress)
            for fut in as_completed(futures, loop=client.loop):
                try:
                    row = fut.result()
                except Exception as err:  # e.g. KilledWorker after repeated worker deaths
                    row = _error_row(futures[fut], folder, err)
                rows.append(row)
                bar.update(1)
            bar.close()
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
            torch.set_num_threads(threads)
    if report:
        from .report import write_report

        write_report(folder)
    return StudyRun(folder=folder, total=len(tasks), skipped=len(tasks) - len(pending),
                    executed=len(rows), errors=sum(r["status"] == "error" for r in rows),
                    seconds=time.perf_counter() - start, rows=rows)
