"""Where and from what a study's tasks ran: source commit, machine, dates (for the report).

Every task row records the ``bayes_recon`` commit it ran at (:func:`source_commit`)
and the machine (:func:`machine`); :func:`provenance` summarises the rows of a
folder and :func:`provenance_lines` writes that summary as Markdown. Nothing here
reads the clock or the current machine when summarising, so a report regenerated
later, elsewhere, from the same files is the same text.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from collections import Counter
from pathlib import Path

__all__ = ["source_commit", "machine", "provenance", "provenance_lines"]

#: The ``bayes_recon`` directory (this file is ``bayes_recon/app/studies/provenance.py``).
_PACKAGE_DIR = Path(__file__).resolve().parents[2]
#: Seconds a ``git`` call may take before the commit is recorded as unknown.
_GIT_TIMEOUT = 10.0


def _git(package_dir: Path, *args: str) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(["git", "-C", str(package_dir), *args], capture_output=True,
                              text=True, timeout=_GIT_TIMEOUT, check=False)
    except (OSError, subprocess.SubprocessError):  # no git, or it hung: the commit is unknown
        return None


def source_commit(package_dir=None) -> dict:
    """The git commit of the ``bayes_recon`` code that runs, if it is a git checkout.

    Parameters
    ----------
    package_dir : str or Path, optional
        The package's directory (default: that of the imported ``bayes_recon``).

    Returns
    -------
    dict
        ``commit`` (40 hex digits, or None when the package is not a tracked file of
        a git checkout, e.g. an installed wheel, or git is missing) and ``dirty``
        (True when tracked package files differ from that commit; None if unknown).
    """
    package_dir = _PACKAGE_DIR if package_dir is None else Path(package_dir)
    unknown = {"commit": None, "dirty": None}
    # A package installed into a virtualenv that sits inside some other checkout is not that
    # checkout's code: only a tracked __init__.py makes the commit the package's own.
    tracked = _git(package_dir, "ls-files", "--error-unmatch", "__init__.py")
    if tracked is None or tracked.returncode != 0:
        return unknown
    head = _git(package_dir, "rev-parse", "HEAD")
    if head is None or head.returncode != 0:
        return unknown
    diff = _git(package_dir, "diff", "--quiet", "HEAD", "--", ".")
    dirty = None if diff is None or diff.returncode not in (0, 1) else diff.returncode == 1
    return {"commit": head.stdout.strip(), "dirty": dirty}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


@functools.lru_cache(maxsize=1)
def machine() -> dict:
    """The machine this process runs on (recorded in every task row).

    Returns
    -------
    dict
        ``platform`` (``platform.platform()``), ``cpu`` (model name from
        ``/proc/cpuinfo``, else ``platform.processor()``), ``cpus`` (logical CPUs
        of the machine), ``ram_gib`` (total memory, 0.1 GiB).
    """
    import psutil

    return {"platform": platform.platform(), "cpu": _cpu_model(), "cpus": os.cpu_count(),
            "ram_gib": round(psutil.virtual_memory().total / 2 ** 30, 1)}


def _commit_label(row: dict) -> str:
    commit = row.get("commit")
    if "commit" not in row:
        return "not recorded"
    if commit is None:
        return "not a git checkout"
    return commit[:10] + (" + uncommitted changes" if row.get("commit_dirty") else "")


def _machine_label(row: dict) -> str:
    m = row.get("machine")
    if not isinstance(m, dict):
        return "not recorded"
    return f"{m.get('cpu')}, {m.get('cpus')} CPUs, {m.get('ram_gib')} GiB RAM, {m.get('platform')}"


def provenance(meta: dict, rows: list[dict]) -> dict:
    """What the finished rows (status ``ok`` or ``error``) of a study record.

    Parameters
    ----------
    meta : dict
        The folder's ``study.json``.
    rows : list of dict
        Task rows (pending ones are ignored).

    Returns
    -------
    dict
        ``versions`` (``bayes_recon`` version → number of rows), ``commits`` and
        ``machines`` (label → rows), ``first``/``last`` (the earliest and latest
        ``finished`` time, ISO 8601 UTC, or None), ``method_seconds`` and
        ``cpu_seconds`` (sums over ``ok`` rows; CPU only where recorded) and
        ``created`` (from ``study.json``). Counters are sorted by label.
    """
    done = [r for r in rows if r.get("status") in ("ok", "error")]
    ok = [r for r in done if r.get("status") == "ok"]

    def count(labels):
        return dict(sorted(Counter(labels).items()))

    finished = sorted(str(r["finished"]) for r in done if r.get("finished"))
    return {
        "versions": count(str((r.get("versions") or {}).get("bayes_recon", "not recorded"))
                          for r in done),
        "commits": count(_commit_label(r) for r in done),
        "machines": count(_machine_label(r) for r in done),
        "first": finished[0] if finished else None,
        "last": finished[-1] if finished else None,
        "method_seconds": sum(float(r.get("seconds") or 0.0) for r in ok),
        "cpu_seconds": sum(float(r["cpu_seconds"]) for r in ok if r.get("cpu_seconds") is not None),
        "cpu_rows": sum(r.get("cpu_seconds") is not None for r in ok),
        "created": meta.get("created"),
    }


def _when(iso) -> str:
    """An ISO 8601 time as ``YYYY-MM-DD HH:MM:SS UTC`` (as given if it does not parse)."""
    from datetime import datetime, timezone

    try:
        return datetime.fromisoformat(str(iso)).astimezone(timezone.utc).strftime(
            "%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return str(iso)


def _counted(counter: dict) -> str:
    return "; ".join(f"{label} ({n} tasks)" for label, n in counter.items()) or "–"


def provenance_lines(prov: dict) -> list[str]:
    """Markdown bullet lines of :func:`provenance` (the top of ``summary.md``)."""
    dates = (f"tasks finished from {_when(prov['first'])} to {_when(prov['last'])}"
             if prov["first"] else "no task finished yet")
    cpu = (f", CPU {prov['cpu_seconds']:.0f} s over the {prov['cpu_rows']} tasks that record it"
           if prov["cpu_rows"] else "")
    return [
        f"- bayes_recon: {_counted(prov['versions'])}",
        f"- Commit: {_counted(prov['commits'])}",
        f"- Machine: {_counted(prov['machines'])}",
        f"- Dates: {dates}; folder created {_when(prov['created'])}",
        f"- Compute: {prov['method_seconds']:.0f} s of method wall time over the ok tasks{cpu}",
    ]
