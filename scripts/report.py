#!/usr/bin/env python3
"""Figures and tables of an experiment directory (scripts/experiment.py output).

    python scripts/report.py runs/quick                       # → runs/quick/report/REPORT.md
    python scripts/report.py runs/paper --daemon-run runs/ring --out docs/results
    python scripts/report.py runs/paper runs/more-seeds --out /tmp/merged    # read as one

Writes one PNG per (data regime, ε) laid out like the talk's figure — (a) no privacy,
(b) privacy without denoising, (c) privacy with denoising; accuracy and dual norm vs round —
and REPORT.md with the method × ε table, the seed-paired denoising comparison, the claims as
measured and the pre-validation section (federation vs solo, gap to pooled, privacy cost against
the clipped control, and the compute/communication/waiting split of a launch_local.py run).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", nargs="+", help="experiment directory (several: read as one)")
    parser.add_argument("--out", help="where to write REPORT.md and the PNGs (DIR/report)")
    parser.add_argument("--daemon-run", help="a launch_local.py run directory, for timings")
    args = parser.parse_args(argv)
    for d in args.dir:
        if not Path(d).is_dir():
            parser.error(f"{d} is not a directory")

    from node.experiments.studies.report import write_report

    path = write_report(args.dir, args.out, args.daemon_run)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
