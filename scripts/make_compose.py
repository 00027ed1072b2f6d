#!/usr/bin/env python3
"""Write a docker-compose file, one config per node and CURVE keys for N nodes.

    python scripts/make_compose.py --topology ring --nodes 6 --out lan \\
        --model logreg --rounds 50 [--metrics-port 9100 --prometheus]
    docker build -t dpnorm . && docker compose -f lan/docker-compose.yml up

Traffic is encrypted and authenticated with CURVE unless --plaintext is given (with a warning).

Each node is a service (node0, node1, ...) on one user-defined bridge network and reaches its
neighbours by service name on --port. The same lan/configs/<id>.toml files run on N separate
hosts when --hosts gives each node's real address. Exit status: 0 when written, 2 for bad input
(one sentence on stderr; nothing is written then).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

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

DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "dpnorm.json"


def build_parser() -> argparse.ArgumentParser:
    parser = OneSentenceParser(description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--force", action="store_true",
                        help="replace existing CURVE keys in DIR/keys")
    add_run_options(parser)
    lan = parser.add_argument_group("LAN")
    lan.add_argument("--curve", action="store_true",
                     help="the default: one CURVE key pair per node (DIR/keys); each container "
                          "mounts only its own pair and its neighbours' public keys")
    lan.add_argument("--plaintext", action="store_true",
                     help="no CURVE: unencrypted, unauthenticated traffic (trusted networks only)")
    lan.add_argument("--port", type=int, default=7000, help="port every node listens on (7000)")
    lan.add_argument("--hosts", default="",
                     help="comma-separated address of each node, in node order, for separate "
                          "hosts (default: the compose service names node0, node1, ...)")
    lan.add_argument("--image", default="dpnorm:latest", help="image name (dpnorm:latest)")
    lan.add_argument("--round-timeout", type=float, help="seconds a round waits (default 30)")
    lan.add_argument("--wire-dtype", choices=WIRE_DTYPES, help="dtype of tensors on the wire")
    lan.add_argument("--subnet", default="",
                     help="IPv4 subnet of the compose network, e.g. 10.203.0.0/24 (default: the "
                          "engine picks one)")
    lan.add_argument("--metrics-port", type=int,
                     help="every node serves Prometheus metrics on this port (default: off)")
    lan.add_argument("--metrics-host",
                     help="address the metrics are served on inside each container (default "
                          "127.0.0.1; with --prometheus 0.0.0.0, so that the Prometheus on the "
                          "nodes' network can scrape them: plain HTTP to that whole network)")
    mon = parser.add_argument_group("monitoring")
    mon.add_argument("--prometheus", action="store_true",
                     help="add Prometheus and Grafana services (needs --metrics-port)")
    mon.add_argument("--prometheus-port", type=int, default=9090,
                     help="host port of Prometheus, on 127.0.0.1 (9090)")
    mon.add_argument("--grafana-port", type=int, default=3000,
                     help="host port of Grafana, on 127.0.0.1 (3000)")
    lan.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                     help="any setting, written into every config (e.g. node.min_round_seconds=1)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.curve and args.plaintext:
        fail("--curve and --plaintext contradict each other; give one (CURVE is the default).")
    if args.metrics_port is not None and args.metrics_port == args.port:
        fail(f"--metrics-port {args.metrics_port} is the nodes' gossip --port; choose another.")
    from gossip.errors import KeyFileError
    from node.tools.compose import LanPlan, write_lan
    from node.tools.monitoring import Monitoring
    from node.tools.plan import DaemonOptions
    from topologies import TopologyError

    try:
        overrides = parse_set_overrides(args.sets)
        run_level = {k: v for k, v in overrides.items() if "." not in k}
        if args.prometheus and not (args.metrics_port or overrides.get("node.metrics_port")):
            fail("--prometheus needs the port the nodes serve metrics on; add --metrics-port "
                 "PORT (for example 9100).")
        cfg = run_config_from_mapping(run_level, run_config_from_args(args))
        # The Prometheus service scrapes from another container: loopback would not reach it.
        metrics_host = args.metrics_host or ("0.0.0.0" if args.prometheus else None)
        node = {"round_timeout": args.round_timeout, "wire_dtype": args.wire_dtype,
                "metrics_port": args.metrics_port, "metrics_host": metrics_host}
        hosts = [h.strip() for h in args.hosts.split(",")] if args.hosts.strip() else []
        options = DaemonOptions(node={k: v for k, v in node.items() if v is not None},
                                overrides={k: v for k, v in overrides.items() if "." in k},
                                curve=not args.plaintext)
        monitoring = Monitoring(DASHBOARD, prometheus_port=args.prometheus_port,
                                grafana_port=args.grafana_port) if args.prometheus else None
        plan = LanPlan(cfg, hosts=hosts, port=args.port, image=args.image, options=options,
                       subnet=args.subnet, monitoring=monitoring)
        path = write_lan(plan, args.out, force=args.force)
    except (ConfigError, TopologyError, KeyFileError) as exc:
        fail(str(exc))
    if args.plaintext:
        sys.stderr.write("warning: --plaintext: traffic between the nodes is neither encrypted "
                         "nor authenticated, so use it only on a network you fully control.\n")
    port = overrides.get("node.metrics_port") or args.metrics_port
    host = overrides.get("node.metrics_host") or metrics_host or "127.0.0.1"
    if port and host not in ("127.0.0.1", "::1", "localhost"):
        sys.stderr.write(f"note: every node serves its metrics over plain HTTP on {host}:{port} "
                         "to anyone who can reach its container; docs/PRIVACY.md lists what "
                         "they release.\n")
    keys = "" if args.plaintext else f"; keys in {Path(args.out) / 'keys'}"
    print(f"wrote {path} for {cfg.nodes} nodes ({cfg.topology}), configs in "
          f"{Path(args.out) / 'configs'}{keys}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
