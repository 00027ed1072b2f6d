"""The node's Prometheus exporter: `node.metrics_port` set, `GET /metrics` on that port, bound to
`node.metrics_host` (127.0.0.1 unless told otherwise: the endpoint is plain HTTP).

    dpnorm_rounds_completed            rounds this node has finished (survives a restart)
    dpnorm_epsilon_spent               ε spent so far (absent without DP)
    dpnorm_bytes_sent_total            gossip bytes sent, headers and payloads (monotone across
    dpnorm_bytes_received_total          restarts, as in metrics.jsonl)
    dpnorm_peers_alive                 neighbours heard from recently
    dpnorm_rejected_messages_total     messages refused on receipt, by {peer, reason}
    dpnorm_accuracy                    test accuracy at the last evaluation, only where the test
                                       rows are public (`Releases`)
    dpnorm_round_seconds               histogram of round wall time, only in a run without a
                                       privacy claim (`Releases`)

Everything above but the last two is a function of what the node sends, of its public config or
of what it received, so serving it to anyone adds nothing to what the messages show. The last
two are not: accuracy on a node's private held-out rows moves when one held-out row is added
(training does not see it, so ε does not cover it), and a round's compute time grows with the
secret Poisson batch. docs/PRIVACY.md lists what the endpoint releases.

The values are those of the last metrics record: the round loop hands each record over
(`observe`, on the event loop) and the HTTP thread reads an immutable snapshot, so a scrape never
touches the protocol's state while it changes. The server starts before the node joins, so a
port already in use is refused (one sentence) before any neighbour hears from this node.
prometheus_client is imported only here, and this module only when the port is set.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from node.daemon.settings import NodeConfig
from node.errors import ConfigError

LOOPBACK = "127.0.0.1"
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


@dataclass(frozen=True)
class Releases:
    """What the endpoint may serve beyond the series every node serves. The defaults serve
    neither: a caller must know that the test rows are public, or that no privacy is claimed."""

    evaluation: bool = False  # dpnorm_accuracy: the test rows are public data
    timing: bool = False  # dpnorm_round_seconds: no privacy claim (compute time follows the batch)

    @classmethod
    def of(cls, cfg: NodeConfig) -> Releases:
        """A node's test rows are public when they are a named public dataset's test split, or
        its own test file declared public (`node.test_file_public`); a node's own held-out rows,
        the held-out rows of a user's `dataset` file and rows held out of the shards for
        validation are private, with or without ε."""
        own = bool(cfg.node.data_file)
        public_test = (cfg.node.test_file_public if own else not cfg.run.user_file)
        # validation_fraction evaluates on rows held out of the nodes' own shards instead.
        public_test = public_test and not cfg.run.validation_fraction
        return cls(evaluation=public_test, timing=not cfg.run.private)


class Published:
    """The registry a scrape reads, fed from metrics records, holding only what `releases`
    allows (no socket: `text` renders what a scrape would get)."""

    def __init__(self, releases: Releases) -> None:
        self.releases = releases
        self.registry = CollectorRegistry(auto_describe=True)
        self._snapshot = _Snapshot()
        self.registry.register(self._snapshot)
        self._rounds = Histogram("dpnorm_round_seconds", "Wall time of one round.",
                                 buckets=ROUND_BUCKETS, registry=self.registry) \
            if releases.timing else None

    def observe(self, record: Mapping[str, Any], rounds_completed: int,
                rejected: Mapping[str, Mapping[str, int]]) -> None:
        """Take over one metrics.jsonl record (and the counters the record does not hold)."""
        values: dict[str, Any] = {
            "rounds": rounds_completed, "peers": record["peers_alive"],
            "sent": record["bytes_sent"], "received": record["bytes_received"],
            "epsilon": record["epsilon"],
            "rejected": {p: dict(r) for p, r in rejected.items()}}
        if self.releases.evaluation and record.get("accuracy") is not None:
            values["accuracy"] = record["accuracy"]
        self._snapshot.update(**values)
        if self._rounds is not None:
            self._rounds.observe(record["round_seconds"])

    def resume(self, rounds_completed: int, epsilon: float | None,
               accuracy: float | None) -> None:
        """What a restarted node already had, shown before its first new round."""
        self._snapshot.update(rounds=rounds_completed, epsilon=epsilon,
                              accuracy=accuracy if self.releases.evaluation else None)

    def text(self) -> str:
        """The Prometheus text format, as a scrape gets it."""
        return generate_latest(self.registry).decode()


class Exporter(Published):
    """The running exporter; `observe` after every metrics record, `close` at exit."""

    def __init__(self, host: str, port: int, releases: Releases | None = None) -> None:
        super().__init__(releases or Releases())
        try:
            self._server, self._thread = start_http_server(port, addr=host,
                                                           registry=self.registry)
        except OSError as exc:
            raise ConfigError(f"node.metrics_port {port} cannot be used on {host}: "
                              f"{exc.strerror or exc}; free it or choose another port.") from None
        self.port = self._server.server_address[1]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def metrics_host(cfg: NodeConfig) -> str:
    """Where the exporter listens: node.metrics_host, else loopback. Not the host the node
    gossips on (0.0.0.0 in a container): the endpoint is plain HTTP and unauthenticated, so
    serving it beyond this machine is a choice the config must state (make_compose.py
    --prometheus states 0.0.0.0 for the Prometheus on the nodes' network)."""
    return cfg.node.metrics_host or LOOPBACK


def serve(cfg: NodeConfig) -> Exporter:
    """Start the exporter of this node's config (node.metrics_port must be set)."""
    return Exporter(metrics_host(cfg), cfg.node.metrics_port, Releases.of(cfg))
