#!/usr/bin/env python3
"""Write a docker-compose file, one config per node and (with --curve) CURVE keys for N nodes.

    python scripts/make_compose.py --topology ring --nodes 6 --out lan --curve \\
        --model logreg --rounds 50
    docker build -t dpnorm . && docker compose -f lan/docker-compose.yml up

Each node is a service (node0, node1, ...) on one user-defined bridge network and reaches its
neighbours by service name on --port. The same lan/configs/<id>.toml files run on N separate
hosts when --hosts gives each node's real address. Exit status: 0 when written, 2 for bad input
(one sentence on stderr; nothing is written then).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node.cli import (
    OneSentenceParser,
    add_run_options,
    fail,
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
    parser.add_argument("--force", action="store_true",
                        help="replace existing CURVE keys in DIR/keys")
    add_run_options(parser)
    lan = parser.add_argument_group("LAN")
    lan.add_argument("--curve", action="store_true",
                     help="one CURVE key pair per node (DIR/keys); each container mounts only its "
                          "own pair and its neighbours' public keys")
    lan.add_argument("--port", type=int, default=7000, help="port every node listens on (7000)")
    lan.add_argument("--hosts", default="",
                     help="comma-separated address of each node, in node order, for separate "
                          "hosts (default: the compose service names node0, node1, ...)")
    lan.add_argument("--image", default="dpnorm:latest", help="image name (dpnorm:latest)")
    lan.add_argument("--round-timeout", type=float, help="seconds a round waits (default 30)")
    lan.add_argument("--wire-dtype", choices=WIRE_DTYPES, help="dtype of tensors on the wire")
    lan.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                     help="any setting, written into every config (e.g. node.min_round_seconds=1)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from gossip.errors import KeyFileError
    from node.tools.compose import LanPlan, write_lan
    from node.tools.plan import DaemonOptions
    from topologies import TopologyError

    try:
        overrides = parse_set_overrides(args.sets)
        run_level = {k: v for k, v in overrides.items() if "." not in k}
        cfg = run_config_from_mapping(run_level, run_config_from_args(args))
        node = {"round_timeout": args.round_timeout, "wire_dtype": args.wire_dtype}
        hosts = [h.strip() for h in args.hosts.split(",")] if args.hosts.strip() else []
        options = DaemonOptions(node={k: v for k, v in node.items() if v is not None},
                                overrides={k: v for k, v in overrides.items() if "." in k},
                                curve=args.curve)
        plan = LanPlan(cfg, hosts=hosts, port=args.port, image=args.image, options=options)
        path = write_lan(plan, args.out, force=args.force)
    except (ConfigError, TopologyError, KeyFileError) as exc:
        fail(str(exc))
    keys = f"; keys in {Path(args.out) / 'keys'}" if args.curve else ""
    print(f"wrote {path} for {cfg.nodes} nodes ({cfg.topology}), configs in "
          f"{Path(args.out) / 'configs'}{keys}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
