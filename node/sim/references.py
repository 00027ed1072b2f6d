"""Simulator-only reference methods: FedAvg, SCAFFOLD, solo and pooled training.

They need a server (FedAvg, SCAFFOLD) or pooled data (pooled), so they exist only here, never in
the daemon. To make them comparable with the decentralised runs they reuse the same pieces:
`load_data`/`shard` (same partition, same shards), `build_node` (same model initialisation, the
same `LocalTrainer`, same data order and the same gradient privacy policy and calibration), and the
same metrics files (`<out>/<node>/metrics.jsonl`, `<out>/summary.json`).

Privacy: a reference run with a finite ε uses gradient mode (docs/DESIGN.md §2): every local step
is a Poisson-subsampled Gaussian on the clipped gradient sum, so everything a client sends to the
server is post-processing and the transcript is R·K compositions, exactly as for DP-D-PSGD.
Pooled training is run without privacy only (its threat model — one site holds everything — is
different). One round is K local steps on every node followed (FedAvg, SCAFFOLD) by one
aggregation; solo nodes never communicate; pooled takes K steps per round on all the data with a
batch N times larger, so it touches as many examples per round as the whole federation.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from node.config import RunConfig
from node.core.assemble import NodeSetup, build_graph, build_node, load_data, shard
from node.core.data import Dataset, LazyDataset
from node.core.metrics import Evaluation, lead_metric
from node.core.tables import standardise
from node.outputs.files import MetricsWriter, RunDir, write_json_atomic
from node.outputs.records import ExitReason, metrics_record, node_entry, summary
from node.sim.aggregation import ScaffoldState, fedavg, scaffold
from node.sim.simulate import simulation_noise_seed

REFERENCES = ("fedavg", "scaffold", "solo", "pooled")
Reference = Literal["fedavg", "scaffold", "solo", "pooled"]
ProgressFn = Callable[[int, float], None]


def reference_config(cfg: RunConfig) -> RunConfig:
    """The config whose privacy plan the references use: gradient mode, no dual variables."""
    return cfg.replace(algorithm="dpsgd", privacy_mode="gradient", alpha=None, gamma=None)


def _pooled_data(cfg: RunConfig, data: Dataset) -> Dataset:
    """Every node's shard concatenated: exactly the federation's data, on one site (a table
    standardised as that one site would: on all of it)."""
    parts = [shard(cfg, data, i, standardised=False) for i in range(cfg.nodes)]
    pooled = Dataset(torch.cat([p.x_train for p in parts]), torch.cat([p.y_train for p in parts]),
                     parts[0].x_test, parts[0].y_test, parts[0].num_classes, parts[0].in_shape,
                     parts[0].name)
    return standardise(pooled, LazyDataset.of(data).table, private=cfg.private,
                       mode=cfg.standardise)


class _Client:
    """One participant: its trainer, privacy mechanism and budget (from `build_node`)."""

    def __init__(self, setup: NodeSetup, weight_decay: float) -> None:
        self.setup = setup
        self.budget = setup.plan.budget()
        self.weight_decay = weight_decay
        self.w = setup.algorithm.w.clone()
        self.last_loss = math.nan
        self.last: Evaluation | None = None  # the latest evaluation

    @property
    def n(self) -> int:
        return self.setup.trainer.n

    def local_steps(self, w: Tensor, steps: int, lr: float, *, round: int,
                    correction: Tensor | None = None) -> Tensor:
        """Round `round`'s K SGD steps from `w` (optionally with SCAFFOLD's control variate
        correction), their spend committed to the budget."""
        y = w.clone()
        losses = []
        for _ in range(steps):
            g, loss = self.setup.trainer.gradient(y)
            if self.weight_decay:
                g = g + self.weight_decay * y
            if correction is not None:
                g = g + correction
            y = y - lr * g
            losses.append(loss)
        finite = [v for v in losses if not math.isnan(v)]
        self.last_loss = sum(finite) / len(finite) if finite else math.nan
        self.budget.commit(round=round, releases=self.setup.plan.releases(steps))
        return y

    def epsilon(self) -> float | None:
        return self.setup.plan.epsilon(self.budget)

    def evaluate(self, w: Tensor) -> Evaluation:
        self.last = self.setup.trainer.evaluate(w)
        return self.last

    def entry(self, rounds: int) -> dict[str, Any]:
        """The client's entry in summary.json, from its latest evaluation."""
        last = self.last
        return node_entry(accuracy=last.accuracy if last else None,
                          auroc=last.auroc if last else None,
                          balanced_accuracy=last.balanced_accuracy if last else None,
                          loss=self.last_loss, epsilon=self.epsilon(), bytes_sent=0,
                          rounds_completed=rounds, exit=ExitReason.FINISHED)


def run_reference(method: Reference, cfg: RunConfig, out: str | Path | None, *,
                  progress: ProgressFn | None = None) -> dict[str, Any]:
    """Run one reference method under `cfg`; returns (and writes) a summary like `simulate`."""
    if method not in REFERENCES:
        raise ValueError(f"unknown reference {method!r}; choose one of {', '.join(REFERENCES)}")
    if method == "pooled" and cfg.private:
        raise ValueError("pooled training is a no-privacy reference; run it with epsilon = inf")
    started = time.time()
    rcfg = reference_config(cfg)
    graph = build_graph(rcfg)
    data = load_data(rcfg)
    if method == "pooled":
        pooled = _pooled_data(rcfg, data)
        pcfg = rcfg.replace(batch_size=rcfg.batch_size * rcfg.nodes)
        setup = build_node(pcfg, graph, 0, pooled, noise_seed=simulation_noise_seed(cfg, 0))
        clients = [_Client(setup, cfg.weight_decay)]
    else:
        clients = [_Client(build_node(rcfg, graph, i, shard(rcfg, data, i),
                                      noise_seed=simulation_noise_seed(cfg, i)), cfg.weight_decay)
                   for i in range(cfg.nodes)]
    run_dir = RunDir(Path(out)) if out else None
    writers = [MetricsWriter(run_dir.node(i)) for i in range(len(clients))] if run_dir else []
    total = sum(c.n for c in clients)
    weights = [c.n / total for c in clients]
    w_global = clients[0].w.clone()
    server = ScaffoldState.start(w_global, len(clients))
    k, lr = cfg.local_steps, cfg.lr
    try:
        for rnd in range(cfg.rounds):
            round_start = time.perf_counter()
            computes = []
            local = []
            for i, c in enumerate(clients):
                t0 = time.perf_counter()
                if method in ("solo", "pooled"):
                    c.w = c.local_steps(c.w, k, lr, round=rnd)
                elif method == "fedavg":
                    local.append(c.local_steps(w_global, k, lr, round=rnd))
                else:
                    local.append(c.local_steps(server.model, k, lr, round=rnd,
                                               correction=server.correction(i)))
                computes.append(time.perf_counter() - t0)
            if method == "fedavg":
                w_global = fedavg(local, weights)
            elif method == "scaffold":
                server = scaffold(server, local, k, lr)
                w_global = server.model
            if method in ("fedavg", "scaffold"):
                for c in clients:
                    c.w = w_global
            due = rnd % cfg.eval_every == 0 or rnd == cfg.rounds - 1
            shared: Evaluation | None = None
            for i, c in enumerate(clients):
                scored = None
                if due:
                    # One global model: the shared test split gives every client the same score
                    # (not so for a table, which each client standardises by itself).
                    if (method in ("fedavg", "scaffold") and shared is not None
                            and c.setup.trainer.x_test is clients[0].setup.trainer.x_test):
                        c.last = scored = shared
                    else:
                        scored = shared = c.evaluate(c.w)
                if writers:
                    writers[i].write(metrics_record(
                        round=rnd, node=i, time=time.time(), loss=c.last_loss,
                        evaluation=scored, dual_norm=None, consensus_distance=None,
                        epsilon=c.epsilon(), bytes_sent=0, bytes_received=0, peers_alive=0,
                        neighbours_heard=0, round_seconds=time.perf_counter() - round_start,
                        compute_seconds=computes[i], wait_seconds=0.0))
            if progress is not None:
                progress(rnd, time.time() - started)
    finally:
        for wr in writers:
            wr.close()
    nodes = {str(i): c.entry(cfg.rounds) for i, c in enumerate(clients)}
    lead = lead_metric(cfg.metric, clients[0].setup.trainer.auroc)
    result = summary(cfg, nodes, time.time() - started,
                     [c.setup.plan.record() for c in clients], metric=lead,
                     reference=method)
    if run_dir:
        write_json_atomic(run_dir.summary, result)
    return result
