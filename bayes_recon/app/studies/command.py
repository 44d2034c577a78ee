"""The ``bayes-recon study run|report|claims`` subcommands (see docs/studies.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..argtypes import NONNEG_INT, POS_INT, positive_float

__all__ = ["add_study_parser", "cmd_study_run", "cmd_study_report", "cmd_study_claims"]


def cmd_study_run(args: argparse.Namespace) -> int:
    from . import load_config, preset, run_study

    if (args.preset is None) == (args.config is None):
        raise ValueError("study run needs exactly one of --preset NAME or --config FILE")
    config = preset(args.preset) if args.preset else load_config(args.config)
    run = run_study(config.with_images(args.images), args.out, workers=args.workers,
                    scheduler=args.scheduler, progress=not args.no_progress,
                    retries=args.retries, connect_timeout=args.connect_timeout,
                    save_posteriors=args.save_posteriors)
    print(f"study {config.name}: {run.total} tasks, {run.skipped} already done, "
          f"{run.executed} run ({run.errors} errors), {run.seconds:.0f} s -> "
          f"{run.folder / 'summary.md'}")
    return 1 if run.errors else 0


def cmd_study_report(args: argparse.Namespace) -> int:
    from . import write_report

    written = write_report(args.study_dir)
    print(f"{len(written['cells'])} cells -> {Path(args.study_dir) / 'summary.md'}")
    return 0


def cmd_study_claims(args: argparse.Namespace) -> int:
    from collections import Counter

    from .._io import write_text
    from .verdicts import claims_table, evaluate_claims

    results = evaluate_claims(args.claims_file, resamples=args.resamples, seed=args.seed)
    table = claims_table(results, per_setting=args.per_setting)
    verdicts = Counter(r.verdict.split(" at N=")[0] for r in results)
    tally = ", ".join(f"{k}: {verdicts[k]}" for k in ("holds", "does not hold", "inconclusive",
                                                      "not run") if verdicts[k])
    if args.out is None:
        print(table, end="")
    else:
        write_text(args.out, table)
        print(f"{len(results)} claims ({tally}) -> {args.out}")
    return 0


def add_study_parser(sub) -> None:
    """``study run``, ``study report`` and ``study claims`` (docs/studies.md)."""
    from .presets import PRESETS

    study = sub.add_parser("study", help="calibration studies over test sets on Dask",
                           description="Run a grid of settings x methods x test images on a "
                           "Dask cluster into a resumable folder, and aggregate it.")
    ssub = study.add_subparsers(dest="study_command", required=True)
    run = ssub.add_parser("run", help="run or resume a study",
                          description="One Dask task per (setting, method, image); a rerun "
                          "skips finished tasks. Writes results.csv and summary.md at the end.")
    run.add_argument("--preset", choices=sorted(PRESETS), default=None, help="a preset study")
    run.add_argument("--config", default=None, help="a study TOML file (instead of --preset)")
    run.add_argument("--out", required=True, help="study folder (resumed if it exists)")
    run.add_argument("--workers", type=POS_INT, default=None,
                     help="local workers (default: one per core); 1 runs the tasks in this process")
    run.add_argument("--scheduler", default=None,
                     help="address of an existing Dask scheduler, e.g. tcp://host:8786")
    run.add_argument("--images", type=POS_INT, default=None,
                     help="number of test images (default: the preset's)")
    run.add_argument("--retries", type=NONNEG_INT, default=2, help="Dask retries per task")
    run.add_argument("--connect-timeout", type=positive_float, default=10.0,
                     help="seconds to wait for --scheduler")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    run.add_argument("--save-posteriors", action=argparse.BooleanOptionalAction, default=False,
                     help="also write each posterior's samples to posteriors/<key>.nc "
                     "(megabytes per task; the report does not need them; default: no)")
    run.set_defaults(func=cmd_study_run)
    rep = ssub.add_parser("report", help="aggregate a study folder",
                          description="Write results.csv, summary.csv, summary.md and figures "
                          "from the study folder alone.")
    rep.add_argument("study_dir", help="folder written by bayes-recon study run")
    rep.set_defaults(func=cmd_study_report)
    cl = ssub.add_parser("claims", help="check claims against study folders",
                         description="Evaluate the claims of a TOML file (docs/studies.md, "
                         "\"Claims\") on their study folders, paths relative to the file: "
                         "mean paired difference over images, bootstrap 95% interval, verdict. "
                         "Prints a Markdown table, or writes it to --out.")
    cl.add_argument("claims_file", metavar="CLAIMS.toml",
                    help="claims TOML file ([[claims]] tables)")
    cl.add_argument("--out", default=None, help="write the table to this file instead of printing")
    cl.add_argument("--resamples", type=POS_INT, default=2000, help="bootstrap resamples")
    cl.add_argument("--seed", type=NONNEG_INT, default=0, help="bootstrap seed")
    cl.add_argument("--per-setting", action="store_true",
                    help="add a table of the estimate in each setting")
    cl.set_defaults(func=cmd_study_claims)
