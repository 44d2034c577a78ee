"""Calibration studies: grids of problem settings × methods × test images on Dask.

:func:`run_study` runs (or resumes) a :class:`StudyConfig` — a preset
(:func:`preset`) or a TOML file (:func:`load_config`) — one task per
(setting, method, image) on a ``dask.distributed`` cluster, writing each
result atomically into a study folder; :func:`write_report` aggregates the
folder into ``results.csv``, ``summary.md`` and figures; :func:`evaluate_claims`
checks claims (a TOML file of :class:`Claim`) against study folders. Command line:
``bayes-recon study run`` / ``report`` / ``claims``; see ``docs/studies.md``.
"""

from .config import MethodSpec, Setting, StudyConfig, load_config
from .presets import PRESETS, preset
from .execute import StudyRun, execute_task, read_study, run_study
from .report import aggregate, bootstrap_interval, load_results, write_report
from .claims import Claim, load_claims
from .verdicts import ClaimResult, Estimate, claims_table, evaluate_claim, evaluate_claims
from .tasks import Task, run_task, study_tasks, task_is_done, task_problem

__all__ = [
    "PRESETS", "MethodSpec", "Setting", "StudyConfig", "load_config", "preset",
    "StudyRun", "execute_task", "read_study", "run_study",
    "aggregate", "bootstrap_interval", "load_results", "write_report",
    "Task", "run_task", "study_tasks", "task_is_done", "task_problem",
    "Claim", "ClaimResult", "Estimate", "claims_table", "evaluate_claim", "evaluate_claims",
    "load_claims",
]
