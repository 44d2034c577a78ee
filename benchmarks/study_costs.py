"""Per-task cost of a preset's methods: test digit 0, a few of its settings, one worker.

The measurement behind the presets' sizes (docs/studies.md, "What the sizes come from"):

    nice -n 19 env OMP_NUM_THREADS=1 python benchmarks/study_costs.py lindip-protocol
        --settings ct28-a20-n5 --skip "Linearised DIP (MLL)" --out /tmp/cost/lindip
    (likewise) mri-spokes --settings mri28-s10-n10 mri28-s60-n5 --out /tmp/cost/mri
    (likewise) denoise --out /tmp/cost/denoise

(run before the methods of issue 24 joined ``mri-spokes`` and ``denoise``; to repeat
them on today's presets, add ``--skip PnP-HVAE "HVAE posterior" DPS DiffPIR``).

``--only LABEL ...`` keeps only those methods (e.g. the ones added to a preset);
``--add LABEL ...`` appends methods of ``presets.CANDIDATE_METHODS`` the preset does not
have, to measure what adding one would cost:

    (likewise) lindip-protocol --settings ct28-a5-n10 ct28-a30-n5
        --only DPS DiffPIR "HVAE posterior" --add DPS DiffPIR "HVAE posterior" --out /tmp/cost/ct-new

``--heldout-fold K`` then also times a truth-free held-out check of each posterior task
(fold 0 of K, ``app.validation.validate_method`` on the task's own data, as in
docs/studies.md "Held-out validation"): what adding one to the rows would cost.

``--profile N`` runs each task under ``cProfile`` and writes its N most expensive
functions (own time) to ``<out>/profiles/<key>.txt``, then prints them: where a task's
time goes (docs/studies.md, "Cheaper tasks"). The profiler slows Python-heavy tasks by a
few per cent; use the figures without it for costs.

Prints each task's wall and CPU seconds, the sums, and the mean per method over the
settings run; the folder is an ordinary study folder (``bayes-recon study report`` works
on it).
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import functools
import io
import pstats
import time
from pathlib import Path


def main() -> None:
    from bayes_recon.app.studies import PRESETS, preset, run_study
    from bayes_recon.app.studies.presets import CANDIDATE_METHODS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("preset", choices=sorted(PRESETS))
    parser.add_argument("--settings", nargs="*", default=None,
                        help="setting names to keep (default: all)")
    parser.add_argument("--skip", nargs="*", default=(), help="method labels to leave out")
    parser.add_argument("--only", nargs="*", default=None,
                        help="method labels to keep (default: all; applied after --add)")
    parser.add_argument("--add", nargs="*", default=(), choices=sorted(CANDIDATE_METHODS),
                        help="methods of presets.CANDIDATE_METHODS to append if missing")
    parser.add_argument("--heldout-fold", type=int, default=None, metavar="K",
                        help="also time a held-out check (fold 0 of K) of each posterior task")
    parser.add_argument("--profile", type=int, default=None, metavar="N",
                        help="profile each task; keep its N most expensive functions (own time)")
    parser.add_argument("--out", required=True, help="study folder")
    args = parser.parse_args()

    config = preset(args.preset, images=1)  # test digit 0
    settings = [s for s in config.settings if args.settings is None or s.name in args.settings]
    labels = [m.label for m in config.methods]
    methods = list(config.methods) + [CANDIDATE_METHODS[a] for a in args.add if a not in labels]
    unknown = sorted(set(args.only or ()) - {m.label for m in methods})
    if unknown:
        raise SystemExit(f"--only: no method labelled {unknown} (have {[m.label for m in methods]})")
    methods = [m for m in methods if m.label not in args.skip
               and (args.only is None or m.label in args.only)]
    if not settings or not methods:
        raise SystemExit(f"nothing to run: settings {args.settings}, skipped {args.skip}, "
                         f"only {args.only}")
    config = dataclasses.replace(config, name=f"cost-{args.preset}", settings=tuple(settings),
                                 methods=tuple(methods)).validate()
    task_fn = None if args.profile is None else functools.partial(profiled_task, top=args.profile)
    rows = run_study(config, args.out, workers=1, progress=False, task_fn=task_fn).rows
    for r in rows:
        print(f"{r['key']:48s} {r['status']:5s} wall {r['seconds']:7.2f} s  "
              f"cpu {r.get('cpu_seconds', float('nan')):7.2f} s")
    print(f"sum over {len(rows)} tasks: wall {sum(r['seconds'] for r in rows):.1f} s, "
          f"cpu {sum(r.get('cpu_seconds', 0.0) for r in rows):.1f} s")
    for m in methods:
        mine = [r for r in rows if r["method"] == m.label]
        print(f"mean of {m.label:32s} over {len(mine)} settings: "
              f"wall {sum(r['seconds'] for r in mine) / len(mine):7.2f} s  "
              f"cpu {sum(r.get('cpu_seconds', 0.0) for r in mine) / len(mine):7.2f} s")
    if args.heldout_fold is not None:
        heldout_costs(config, rows, args.heldout_fold)
    if args.profile is not None:
        for r in rows:
            print((Path(args.out) / "profiles" / f"{r['key']}.txt").read_text())


def profiled_task(task, folder, top: int) -> dict:
    """``run_task`` under cProfile (in the thread that runs it); its top functions to a file."""
    from bayes_recon.app.studies.tasks import run_task

    prof = cProfile.Profile()
    metrics = prof.runcall(run_task, task, folder)
    text = io.StringIO()
    stats = pstats.Stats(prof, stream=text)
    stats.sort_stats("tottime").print_stats(top)
    out = Path(folder) / "profiles"
    out.mkdir(exist_ok=True)
    lines = text.getvalue().splitlines()
    table = lines[next(i for i, ln in enumerate(lines) if ln.strip().startswith("ncalls")):]
    (out / f"{task.key}.txt").write_text(f"== {task.key}: {stats.total_tt:.1f} s profiled\n"
                                         + "\n".join(ln for ln in table if ln.strip()) + "\n")
    return metrics


def heldout_costs(config, rows, folds: int) -> None:
    """Time fold 0 of a ``folds``-fold held-out check of every posterior task of ``rows``."""
    from bayes_recon.app.methods import POSTERIOR_METHODS, load_prior
    from bayes_recon.app.studies import study_tasks, task_problem
    from bayes_recon.app.validation import ValidationSettings, validate_method

    check = ValidationSettings(folds=folds, quick=True)
    by_key = {r["key"]: r for r in rows}
    for task in study_tasks(config):
        m, row = task.method, by_key.get(task.key)
        if m.method not in POSTERIOR_METHODS or row is None or row["status"] != "ok":
            continue
        op, _, meas = task_problem(task)  # the task's data; the truth is not used
        prior = None if m.prior is None else load_prior(m.prior, task.setting.size)
        start, cpu = time.perf_counter(), time.thread_time()
        v = validate_method(m.settings(task.seed), op, meas.y, meas.noise_std, prior, check,
                            progress=False)
        wall = time.perf_counter() - start
        ratio = v.excess_variance_ratio
        print(f"{task.key:48s} held-out fold 0/{folds} ({v.scheme}): wall {wall:7.2f} s  "
              f"cpu {time.thread_time() - cpu:7.2f} s  = {wall / row['seconds']:.2f}x the task; "
              f"coverage 90 % {v.coverage_at(0.9):.3f}, excess variance ratio "
              f"{'n/a' if ratio is None else f'{ratio:.2f}'}")


if __name__ == "__main__":
    main()
