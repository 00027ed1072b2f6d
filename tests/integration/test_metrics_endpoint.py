"""The metrics endpoint as the daemon starts it (`serve`), scraped over HTTP (issue 26, item 2).

A node on its own file in a container (gossip on 0.0.0.0): its exporter listens on 127.0.0.1
only, and a scrape after a record with an evaluation and a round time shows neither. Ports
are bound to 0 (the kernel picks), on loopback.
"""

from __future__ import annotations

import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from node.config import RunConfig
from node.daemon.prometheus import serve
from node.daemon.settings import NodeConfig, NodeSettings


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {sample.name: sample.value for family in text_string_to_metric_families(text)
            for sample in family.samples}


def record(**values: Any) -> dict[str, Any]:
    return {"round": 0, "accuracy": 0.5435, "epsilon": 0.7, "bytes_sent": 100,
            "bytes_received": 90, "peers_alive": 1, "round_seconds": 0.3, **values}


def test_a_private_node_on_its_own_file_serves_no_evaluation_and_only_on_loopback() -> None:
    node = NodeSettings(id=0, listen="tcp://0.0.0.0:7000", data_file="mine.npz")
    run = RunConfig(nodes=2, epsilon=2.0, classes=3, public_examples=100)
    # metrics_port stays 0 in the config: `serve` binds whatever it names, here a free port.
    exporter = serve(NodeConfig(node, {1: "tcp://10.0.0.2:7000"}, run))
    try:
        assert exporter._server.server_address[0] == "127.0.0.1"
        exporter.resume(2, 0.5, 0.5532)
        exporter.observe(record(), 3, {})
        got = scrape(exporter.port)
    finally:
        exporter.close()
    assert got["dpnorm_rounds_completed"] == 3 and got["dpnorm_epsilon_spent"] == 0.7
    assert not any(name.startswith(("dpnorm_accuracy", "dpnorm_round_seconds"))
                   for name in got), got
