#!/usr/bin/env python3
"""Start N node daemons on 127.0.0.1 wired as a topology, show progress, write summary.json.

    python scripts/launch_local.py --topology ring --nodes 6 --rounds 20 --out runs/ring

Same run options and outputs as scripts/simulate.py, but every node is its own process talking
ZeroMQ. A DIR that already holds a run is refused unless --resume continues it or --force moves
it aside into DIR/previous-<UTC time>/ (nothing is ever deleted). Exit status: 0 when every node
finished (also a --resume with nothing left to resume), 1 when one failed or the time limit
passed, 2 for bad options or a node that refused its config, data or files (nothing is started
or changed then; the node and its sentence are named), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from gossip.faults import Cut, FaultConfig
from node.cli import (
    OneSentenceParser,
    add_run_options,
    fail,
    guarded,
    parse_set_overrides,
    run_config_from_args,
)
from node.config import run_config_from_mapping
from node.daemon.settings import WIRE_DTYPES
from node.errors import ConfigError


def build_parser() -> argparse.ArgumentParser:
    parser = OneSentenceParser(description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--quiet", action="store_true", help="no live progress")
    parser.add_argument("--timeout", type=float, default=None,
                        help="overall wall-clock limit in seconds (default: from the rounds)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in DIR from its checkpoints and ledgers "
                             "(checked before anything is touched)")
    parser.add_argument("--force", action="store_true",
                        help="move a run already in DIR aside into DIR/previous-<UTC time>/ "
                             "and start afresh (nothing is deleted)")
    parser.add_argument("--no-fork-server", dest="fork_server", action="store_false",
                        help="start every node as its own `python -m node` (on Linux the "
                             "default forks them from one template that imported torch once: "
                             "faster start-up, shared memory)")
    add_run_options(parser)
    daemon = parser.add_argument_group("daemon")
    daemon.add_argument("--round-timeout", type=float, help="seconds a round waits (default 30)")
    daemon.add_argument("--wire-dtype", choices=WIRE_DTYPES, help="dtype of tensors on the wire")
    daemon.add_argument("--curve", action="store_true",
                        help="encrypt and authenticate with ZMQ CURVE (keys go to DIR/keys)")
    daemon.add_argument("--checkpoint-every", type=int, help="rounds between checkpoints")
    daemon.add_argument("--max-message-rms", "--max-message-norm", dest="max_message_rms",
                        type=float, help="refuse received duals/primals whose RMS per "
                                         "coordinate (‖y‖/√d) is larger")
    daemon.add_argument("--metrics-port", type=int, metavar="BASE",
                        help="serve Prometheus metrics: node i on 127.0.0.1:BASE+i")
    daemon.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="any node setting, passed to every node (e.g. node.log_level=DEBUG)")
    faults = parser.add_argument_group("fault injection")
    faults.add_argument("--drop", type=float, help="probability a message is dropped")
    faults.add_argument("--duplicate", type=float, help="probability a message is sent twice")
    faults.add_argument("--corrupt", type=float, help="probability a byte is flipped")
    faults.add_argument("--reorder", type=float, help="probability a message is held back")
    faults.add_argument("--jitter-ms", type=float, help="uniform extra delay up to this many ms")
    faults.add_argument("--fault-seed", type=int, help="seed of the fault layer")
    faults.add_argument("--cut", action="append", default=[], metavar="START:END:A-B,C-D",
                        help="cut links (or nK: isolate node K) between START and END seconds")
    return parser


def daemon_options(args: argparse.Namespace) -> Any:
    from node.tools.plan import DaemonOptions

    node = {"round_timeout": args.round_timeout, "wire_dtype": args.wire_dtype,
            "checkpoint_every": args.checkpoint_every, "max_message_rms": args.max_message_rms}
    given = {"drop": args.drop, "duplicate": args.duplicate, "corrupt": args.corrupt,
             "reorder": args.reorder, "jitter_ms": args.jitter_ms, "seed": args.fault_seed}
    faults = FaultConfig(**{k: v for k, v in given.items() if v is not None},
                         cuts=Cut.parse(";".join(args.cut)))
    if args.metrics_port is not None and not 1 <= args.metrics_port <= 65535:
        raise ConfigError(f"--metrics-port must be a port between 1 and 65535, got "
                          f"{args.metrics_port}.")
    return DaemonOptions(node={k: v for k, v in node.items() if v is not None}, faults=faults,
                         overrides=parse_set_overrides(args.sets), curve=args.curve,
                         metrics_port=args.metrics_port or 0)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from node.tools.rundir import check_out

    # First, and before torch is imported: a DIR holding a run is refused in a second.
    guarded(lambda: check_out(Path(args.out), resume=args.resume, force=args.force))
    options = daemon_options_or_fail(args)
    # Run-level --set keys (lr=0.05) change what the summary reports too, not only the nodes.
    run_level = {k: v for k, v in options.overrides.items() if "." not in k}
    cfg = guarded(lambda: run_config_from_mapping(run_level, run_config_from_args(args)))
    if args.threads is None and "threads" not in run_level:
        from node.tools.plan import default_threads

        cfg = cfg.replace(threads=default_threads(cfg.nodes))
    if args.timeout is not None and not args.timeout > 0:
        fail(f"--timeout must be a positive number of seconds, got {args.timeout}.")
    from node.tools.live import format_table, launch

    code, summary = launch(cfg, Path(args.out), options, timeout=args.timeout, quiet=args.quiet,
                           fresh=not args.resume, force=args.force,
                           fork_server=None if args.fork_server else False)
    if summary is not None:
        if not args.quiet:
            sys.stderr.write(format_table(summary) + "\n")
        brief = {k: summary[k] for k in ("rounds", "mean_accuracy", "max_epsilon",
                                         "wall_seconds")}
        print(json.dumps(brief), flush=True)
    return code


def daemon_options_or_fail(args: argparse.Namespace) -> Any:
    try:
        return daemon_options(args)
    except (ConfigError, TypeError, ValueError) as exc:
        fail(str(exc))


if __name__ == "__main__":
    raise SystemExit(main())
