"""Per-task cost of a preset's methods: test digit 0, a few of its settings, one worker.

The measurement behind the presets' sizes (docs/studies.md, "What the sizes come from"):

    nice -n 19 env OMP_NUM_THREADS=1 python benchmarks/study_costs.py lindip-protocol
        --settings ct28-a20-n5 --skip "Linearised DIP (MLL)" --out /tmp/cost/lindip
    (likewise) mri-spokes --settings mri28-s10-n10 mri28-s60-n5 --out /tmp/cost/mri
    (likewise) denoise --out /tmp/cost/denoise

Prints each task's wall and CPU seconds and the sum; the folder is an ordinary study
folder (``bayes-recon study report`` works on it).
"""

from __future__ import annotations

import argparse
import dataclasses


def main() -> None:
    from bayes_recon.app.studies import PRESETS, preset, run_study

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("preset", choices=sorted(PRESETS))
    parser.add_argument("--settings", nargs="*", default=None,
                        help="setting names to keep (default: all)")
    parser.add_argument("--skip", nargs="*", default=(), help="method labels to leave out")
    parser.add_argument("--out", required=True, help="study folder")
    args = parser.parse_args()

    config = preset(args.preset, images=1)  # test digit 0
    settings = [s for s in config.settings if args.settings is None or s.name in args.settings]
    methods = [m for m in config.methods if m.label not in args.skip]
    if not settings or not methods:
        raise SystemExit(f"nothing to run: settings {args.settings}, skipped {args.skip}")
    config = dataclasses.replace(config, name=f"cost-{args.preset}", settings=tuple(settings),
                                 methods=tuple(methods))
    rows = run_study(config, args.out, workers=1, progress=False).rows
    for r in rows:
        print(f"{r['key']:48s} {r['status']:5s} wall {r['seconds']:7.2f} s  "
              f"cpu {r.get('cpu_seconds', float('nan')):7.2f} s")
    print(f"sum over {len(rows)} tasks: wall {sum(r['seconds'] for r in rows):.1f} s")


if __name__ == "__main__":
    main()
