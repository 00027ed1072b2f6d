"""node.daemon.prometheus on its own: the text format a scrape gets, from metrics records.

No root needed: the exporter listens on 127.0.0.1 on a port the kernel picks. The fixture serves
everything a node may serve (a public test split, no privacy claim); what a private node holds
back is tests/unit/test_metrics_release.py and tests/integration/test_metrics_endpoint.py.
"""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from node.config import RunConfig
from node.daemon.prometheus import Exporter, Releases, metrics_host
from node.daemon.settings import NodeConfig, NodeSettings
from node.errors import ConfigError


@pytest.fixture
def exporter() -> Iterator[Exporter]:
    started = Exporter("127.0.0.1", 0, Releases(evaluation=True, timing=True))
    try:
        yield started
    finally:
        started.close()


def scrape(exporter: Exporter) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{exporter.port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def record(**values: Any) -> dict[str, Any]:
    base = {"round": 0, "accuracy": None, "epsilon": None, "bytes_sent": 0,
            "bytes_received": 0, "peers_alive": 0, "round_seconds": 0.0}
    return {**base, **values}


def test_a_scrape_shows_the_last_record(exporter: Exporter) -> None:
    before = scrape(exporter)
    assert before["dpnorm_rounds_completed"] == [({}, 0.0)]
    assert "dpnorm_accuracy" not in before and "dpnorm_epsilon_spent" not in before
    exporter.observe(record(round=0, accuracy=0.5, epsilon=0.7, bytes_sent=100,
                            bytes_received=90, peers_alive=2, round_seconds=0.3), 1, {})
    exporter.observe(record(round=1, epsilon=0.9, bytes_sent=250, bytes_received=200,
                            peers_alive=1, round_seconds=7.0), 2,
                     {"3": {"DecodeError": 2}, "stranger": {"PeerError": 1}})
    got = scrape(exporter)
    assert got["dpnorm_rounds_completed"] == [({}, 2.0)]
    assert got["dpnorm_accuracy"] == [({}, 0.5)]  # a round without evaluation keeps the last
    assert got["dpnorm_epsilon_spent"] == [({}, 0.9)]
    assert got["dpnorm_bytes_sent_total"] == [({}, 250.0)]
    assert got["dpnorm_bytes_received_total"] == [({}, 200.0)]
    assert got["dpnorm_peers_alive"] == [({}, 1.0)]
    assert sorted(got["dpnorm_rejected_messages_total"], key=str) == sorted(
        [({"peer": "3", "reason": "DecodeError"}, 2.0),
         ({"peer": "stranger", "reason": "PeerError"}, 1.0)], key=str)
    assert got["dpnorm_round_seconds_count"] == [({}, 2.0)]
    assert got["dpnorm_round_seconds_sum"] == [({}, 7.3)]
    buckets = {labels["le"]: value for labels, value in got["dpnorm_round_seconds_bucket"]}
    assert (buckets["0.25"], buckets["0.5"], buckets["5.0"], buckets["10.0"]) == (0, 1, 1, 2)


def test_a_restarted_node_shows_what_it_resumed(exporter: Exporter) -> None:
    exporter.resume(17, 3.5, 0.8)
    got = scrape(exporter)
    assert got["dpnorm_rounds_completed"] == [({}, 17.0)]
    assert got["dpnorm_epsilon_spent"] == [({}, 3.5)]
    assert got["dpnorm_accuracy"] == [({}, 0.8)]


def test_a_port_in_use_is_one_sentence(exporter: Exporter) -> None:
    with pytest.raises(ConfigError, match=rf"node.metrics_port {exporter.port} cannot be used"):
        Exporter("127.0.0.1", exporter.port)
    with socket.create_connection(("127.0.0.1", exporter.port), timeout=5):
        pass  # the first one still serves


def config(**node: Any) -> NodeConfig:
    return NodeConfig(NodeSettings(id=0, **node), {1: "tcp://127.0.0.1:7001"},
                      RunConfig(nodes=2))


def test_metrics_host_is_loopback_unless_set_and_ports_are_checked() -> None:
    # Not the gossip host: plain HTTP leaves the machine only when the config says so.
    assert metrics_host(config(listen="tcp://0.0.0.0:7000", metrics_port=9100)) == "127.0.0.1"
    assert metrics_host(config(listen="tcp://127.0.0.1:0", metrics_port=9100)) == "127.0.0.1"
    assert metrics_host(config(listen="tcp://[::1]:7000", metrics_port=9100)) == "127.0.0.1"
    assert metrics_host(config(metrics_port=9100, metrics_host="10.0.0.5")) == "10.0.0.5"
    with pytest.raises(ConfigError, match="between 1 and 65535"):
        config(metrics_port=70000)
    with pytest.raises(ConfigError, match="gossip port"):
        config(listen="tcp://0.0.0.0:7000", metrics_port=7000)
