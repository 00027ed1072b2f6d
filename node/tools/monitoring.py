"""Prometheus and Grafana next to a federation: `make_compose.py --prometheus`.

What it adds under DIR (the compose file gets two more services on the nodes' network):

    DIR/prometheus/prometheus.yml              scrapes every node's node.metrics_port, with a
                                               `node` label per target
    DIR/grafana/provisioning/datasources/      that Prometheus as Grafana's data source
    DIR/grafana/provisioning/dashboards/       and a provider for ...
    DIR/grafana/dashboards/dpnorm.json         ... the dashboard (deploy/grafana/dpnorm.json)

Both publish their port on 127.0.0.1 of the host only. `prometheus_config` is also what the
tests hand a real Prometheus server scraping daemons on loopback.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.errors import ConfigError

DATASOURCE_UID = "dpnorm-prometheus"  # the dashboard JSON names its data source by this uid
SCRAPE_SECONDS = 5


@dataclass(frozen=True)
class Monitoring:
    """The two services and where they are published on the host."""

    dashboard: Path  # the dashboard JSON to provision
    prometheus_port: int = 9090
    grafana_port: int = 3000
    prometheus_image: str = "prom/prometheus:latest"
    grafana_image: str = "grafana/grafana:latest"

    def check(self) -> None:
        for name, port in (("--prometheus-port", self.prometheus_port),
                           ("--grafana-port", self.grafana_port)):
            if not 1 <= port <= 65535:
                raise ConfigError(f"{name} must be between 1 and 65535, got {port}.")
            if port_in_use(port):
                raise ConfigError(f"port {port} ({name}) is already in use on this host; stop "
                                  f"what holds it or choose another {name}.")
        if self.prometheus_port == self.grafana_port:
            raise ConfigError(f"--prometheus-port and --grafana-port are both "
                              f"{self.grafana_port}; give them different ports.")
        if not self.dashboard.is_file():
            raise ConfigError(f"the Grafana dashboard {self.dashboard} does not exist.")


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether binding `host:port` fails because something holds it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def prometheus_config(targets: Mapping[int, str]) -> dict[str, Any]:
    """prometheus.yml scraping node i at targets[i] ("host:port"), labelled node="i"."""
    return {
        "global": {"scrape_interval": f"{SCRAPE_SECONDS}s",
                   "evaluation_interval": f"{SCRAPE_SECONDS}s"},
        "scrape_configs": [{
            "job_name": "dpnorm",
            "static_configs": [{"targets": [target], "labels": {"node": str(i)}}
                               for i, target in sorted(targets.items())],
        }],
    }


def grafana_files(prometheus_url: str) -> dict[str, dict[str, Any]]:
    """The provisioning files (relative path -> YAML document) for Grafana."""
    return {
        "provisioning/datasources/dpnorm.yml": {
            "apiVersion": 1,
            "datasources": [{"name": "Prometheus", "type": "prometheus", "uid": DATASOURCE_UID,
                             "access": "proxy", "url": prometheus_url, "isDefault": True}]},
        "provisioning/dashboards/dpnorm.yml": {
            "apiVersion": 1,
            "providers": [{"name": "dpnorm", "type": "file", "disableDeletion": True,
                           "options": {"path": "/var/lib/grafana/dashboards"}}]},
    }


def services(m: Monitoring, network: str) -> dict[str, Any]:
    """The compose services `prometheus` and `grafana`."""
    def bind(source: str, target: str) -> dict[str, Any]:
        return {"type": "bind", "source": source, "target": target, "read_only": True}

    return {
        "prometheus": {
            "image": m.prometheus_image,
            "command": ["--config.file=/etc/prometheus/prometheus.yml",
                        "--storage.tsdb.path=/prometheus"],
            "networks": [network],
            "ports": [f"127.0.0.1:{m.prometheus_port}:9090"],
            "volumes": [bind("./prometheus/prometheus.yml", "/etc/prometheus/prometheus.yml")],
        },
        "grafana": {
            "image": m.grafana_image,
            "environment": {"GF_AUTH_ANONYMOUS_ENABLED": "true",
                            "GF_AUTH_ANONYMOUS_ORG_ROLE": "Viewer"},
            "networks": [network],
            "ports": [f"127.0.0.1:{m.grafana_port}:3000"],
            "depends_on": ["prometheus"],
            "volumes": [bind("./grafana/provisioning", "/etc/grafana/provisioning"),
                        bind("./grafana/dashboards", "/var/lib/grafana/dashboards")],
        },
    }


def targets(hosts: Sequence[str], port: int) -> dict[int, str]:
    """Each node's metrics address, bracketing IPv6 literals."""
    return {i: (f"[{h}]:{port}" if ":" in h else f"{h}:{port}") for i, h in enumerate(hosts)}
