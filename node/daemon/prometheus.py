"""The node's Prometheus exporter: `node.metrics_port` set, `GET /metrics` on that port.

    dpnorm_rounds_completed            rounds this node has finished (survives a restart)
    dpnorm_epsilon_spent               ε spent so far (absent without DP)
    dpnorm_bytes_sent_total            gossip bytes sent, headers and payloads (monotone across
    dpnorm_bytes_received_total          restarts, as in metrics.jsonl)
    dpnorm_peers_alive                 neighbours heard from recently
    dpnorm_rejected_messages_total     messages refused on receipt, by {peer, reason}
    dpnorm_round_seconds               histogram of round wall time (this process's rounds)
    dpnorm_accuracy                    test accuracy at the last evaluation (absent before one)

The values are those of the last metrics record: the round loop hands each record over
(`observe`, on the event loop) and the HTTP thread reads an immutable snapshot, so a scrape never
touches the protocol's state while it changes. The server starts before the node joins, so a
port already in use is refused (one sentence) before any neighbour hears from this node.
prometheus_client is imported only here, and this module only when the port is set.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from node.daemon.settings import NodeConfig
from node.errors import ConfigError

# Round times from a fraction of a second (logreg on loopback) to minutes (a CNN on a slow link).
ROUND_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class _Snapshot(Collector):
    """The gauges and counters of the last record, read at scrape time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, Any] = {"rounds": 0, "peers": 0, "sent": 0, "received": 0,
                                        "epsilon": None, "accuracy": None, "rejected": {}}

    def update(self, **values: Any) -> None:
        with self._lock:
            self._values = {**self._values, **values}

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            v = self._values
        yield _gauge("dpnorm_rounds_completed", "Rounds this node has completed.", v["rounds"])
        yield _gauge("dpnorm_peers_alive", "Neighbours heard from recently.", v["peers"])
        yield CounterMetricFamily("dpnorm_bytes_sent", "Gossip bytes sent (header and payload).",
                                  value=v["sent"])
        yield CounterMetricFamily("dpnorm_bytes_received", "Gossip bytes received.",
                                  value=v["received"])
        if v["epsilon"] is not None:
            yield _gauge("dpnorm_epsilon_spent", "Privacy loss spent so far (epsilon).",
                         v["epsilon"])
        if v["accuracy"] is not None:
            yield _gauge("dpnorm_accuracy", "Test accuracy at the last evaluation.",
                         v["accuracy"])
        rejected = CounterMetricFamily("dpnorm_rejected_messages",
                                       "Messages refused on receipt, by peer and reason.",
                                       labels=["peer", "reason"])
        for peer, reasons in sorted(v["rejected"].items()):
            for reason, count in sorted(reasons.items()):
                rejected.add_metric([peer, str(reason)], count)
        yield rejected


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


class Exporter:
    """The running exporter; `observe` after every metrics record, `close` at exit."""

    def __init__(self, host: str, port: int) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._snapshot = _Snapshot()
        self.registry.register(self._snapshot)
        self._rounds = Histogram("dpnorm_round_seconds", "Wall time of one round.",
                                 buckets=ROUND_BUCKETS, registry=self.registry)
        try:
            self._server, self._thread = start_http_server(port, addr=host,
                                                           registry=self.registry)
        except OSError as exc:
            raise ConfigError(f"node.metrics_port {port} cannot be used on {host}: "
                              f"{exc.strerror or exc}; free it or choose another port.") from None
        self.port = self._server.server_address[1]

    def observe(self, record: Mapping[str, Any], rounds_completed: int,
                rejected: Mapping[str, Mapping[str, int]]) -> None:
        """Take over one metrics.jsonl record (and the counters the record does not hold)."""
        values: dict[str, Any] = {
            "rounds": rounds_completed, "peers": record["peers_alive"],
            "sent": record["bytes_sent"], "received": record["bytes_received"],
            "epsilon": record["epsilon"],
            "rejected": {p: dict(r) for p, r in rejected.items()}}
        if record.get("accuracy") is not None:
            values["accuracy"] = record["accuracy"]
        self._snapshot.update(**values)
        self._rounds.observe(record["round_seconds"])

    def resume(self, rounds_completed: int, epsilon: float | None,
               accuracy: float | None) -> None:
        """What a restarted node already had, shown before its first new round."""
        self._snapshot.update(rounds=rounds_completed, epsilon=epsilon, accuracy=accuracy)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def metrics_host(cfg: NodeConfig) -> str:
    """Where the exporter listens: node.metrics_host, else the host the node listens on
    (0.0.0.0 in a container, 127.0.0.1 for a local launch)."""
    if cfg.node.metrics_host:
        return cfg.node.metrics_host
    return cfg.node.listen.removeprefix("tcp://").rsplit(":", 1)[0].strip("[]")


def serve(cfg: NodeConfig) -> Exporter:
    """Start the exporter of this node's config (node.metrics_port must be set)."""
    return Exporter(metrics_host(cfg), cfg.node.metrics_port)
