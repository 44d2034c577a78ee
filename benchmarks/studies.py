"""Study execution: the ``quick`` preset on 1 and 2 Dask workers against a plain loop.

Usage: python benchmarks/studies.py [--preset quick] [--images K] [--repeats 1]
                                    [--workers 1 2] [--json PATH|-]

Each variant runs in a fresh Python process into a fresh folder, so every one
pays the same imports and starts from nothing:

- ``loop``: the study's tasks one after another in that process
  (:func:`bayes_recon.app.studies.execute_task`, one torch thread), then the report;
- ``dask N``: :func:`bayes_recon.app.studies.run_study` on a new ``LocalCluster``
  with N single-threaded workers (cluster start-up included).

Prints a markdown table: wall time (median over repeats), speed-up against
Dask with 1 worker, and the overhead of Dask with 1 worker against the loop
(the reference measured in the same run). On a shared machine the numbers move
with the load: compare ratios from one run only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _variant(kind: str, preset_name: str, images: int | None, workers: int, out: str) -> None:
    """Run one variant in this process (called in a child process)."""
    from bayes_recon.app.studies import execute_task, preset, run_study, study_tasks, write_report
    from bayes_recon.app.studies.execute import prepare_folder

    config = preset(preset_name, images=images)
    if kind == "loop":
        config.validate()
        prepare_folder(config, out)
        for task in study_tasks(config):
            execute_task(task, out, torch_threads=1)
        write_report(out)
    else:
        run_study(config, out, workers=workers, progress=False)


def _timed_child(kind: str, preset_name: str, images, workers: int) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "study")
        cmd = [sys.executable, __file__, "--child", kind, "--preset", preset_name,
               "--child-workers", str(workers), "--child-out", out]
        if images is not None:
            cmd += ["--images", str(images)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        start = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        ok = sum(json.loads(p.read_text())["status"] == "ok"
                 for p in (Path(out) / "tasks").glob("*.json"))
        return wall, ok


def _hardware() -> str:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        info = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        model = info.get("Model name", "?").strip()
    except OSError:
        model = platform.processor() or "?"
    return f"{model}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--json", default=None, help="also write the numbers here (- stdout)")
    parser.add_argument("--child", choices=("loop", "dask"), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-workers", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        _variant(args.child, args.preset, args.images, args.child_workers, args.child_out)
        return 0

    variants = [("loop", 1)] + [("dask", n) for n in args.workers]
    load_before = os.getloadavg()[0]
    runs = {v: [] for v in variants}
    for _ in range(args.repeats):  # interleaved, so a change of machine load hits every variant
        for kind, n in variants:
            runs[(kind, n)].append(_timed_child(kind, args.preset, args.images, n))
    results = {v: {"wall_s": statistics.median(r[0] for r in rs), "ok_tasks": min(r[1] for r in rs)}
               for v, rs in runs.items()}
    loop = results[("loop", 1)]["wall_s"]
    one = results.get(("dask", 1), {}).get("wall_s")
    print(f"Study `{args.preset}`" + (f" ({args.images} images)" if args.images else "")
          + f", median of {args.repeats}; {_hardware()}; 1-min load average "
          f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after\n")
    print("| variant | workers | tasks ok | wall time (s) | speed-up vs Dask 1 worker "
          "| vs plain loop |")
    print("|---|---|---|---|---|---|")
    for (kind, n), r in results.items():
        speed = f"{one / r['wall_s']:.2f}×" if one and kind == "dask" else "–"
        over = f"{100 * (r['wall_s'] / loop - 1):+.1f} %" if kind == "dask" else "reference"
        name = "plain loop" if kind == "loop" else "Dask LocalCluster"
        print(f"| {name} | {n} | {r['ok_tasks']} | {r['wall_s']:.1f} | {speed} | {over} |")
    if args.json:
        data = {f"{k}-{n}": v for (k, n), v in results.items()}
        text = json.dumps(data, indent=2)
        print(text) if args.json == "-" else Path(args.json).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
