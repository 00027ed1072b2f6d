"""Simulator-only reference methods: FedAvg, SCAFFOLD, solo and pooled training.

They need a server (FedAvg, SCAFFOLD) or pooled data (pooled), so they exist only here, never in
the daemon. To make them comparable with the decentralised runs they reuse the same pieces:
`load_data`/`shard` (same partition, same shards), `build_node` (same model initialisation, the
same `LocalTrainer`, same data order and the same gradient privacy policy and calibration), and the
same metrics files (`<out>/<node>/metrics.jsonl`, `<out>/summary.json`).

Privacy: a reference run with a finite ε uses gradient mode (DESIGN.md §2): every local step is a
Poisson-subsampled Gaussian on the clipped gradient sum, so everything a client sends to the
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
from node.data import Dataset
from node.federation import NodeSetup, build_graph, build_node, load_data, reported_epsilon, shard
from node.metrics import MetricsWriter, write_json_atomic
from node.simulation import privacy_config
from privacy.accountant import Accountant

REFERENCES = ("fedavg", "scaffold", "solo", "pooled")
Reference = Literal["fedavg", "scaffold", "solo", "pooled"]
ProgressFn = Callable[[int, float], None]


def reference_config(cfg: RunConfig) -> RunConfig:
    """The config whose privacy plan the references use: gradient mode, no dual variables."""
    return cfg.replace(algorithm="dpsgd", privacy_mode="gradient", alpha=None, gamma=None)


def _noise_seed(cfg: RunConfig, node: int) -> int:
    seed = cfg.seed if cfg.noise_seed is None else cfg.noise_seed
    return seed * 1_000_003 + node


def _pooled_data(cfg: RunConfig, data: Dataset) -> Dataset:
    """Every node's shard concatenated: exactly the federation's data, on one site."""
    parts = [shard(cfg, data, i) for i in range(cfg.nodes)]
    return Dataset(torch.cat([p.x_train for p in parts]), torch.cat([p.y_train for p in parts]),
                   parts[0].x_test, parts[0].y_test, parts[0].num_classes, parts[0].in_shape,
                   parts[0].name)


class _Client:
    """One participant: its trainer, privacy plan and accountant (from `build_node`)."""

    def __init__(self, setup: NodeSetup, weight_decay: float) -> None:
        self.setup = setup
        self.accountant = Accountant()
        self.weight_decay = weight_decay
        self.w = setup.algorithm.w.clone()
        self.last_loss = math.nan
        self.last_accuracy: float | None = None

    @property
    def n(self) -> int:
        return self.setup.trainer.n

    def local_steps(self, w: Tensor, steps: int, lr: float,
                    correction: Tensor | None = None) -> Tensor:
        """K SGD steps from `w` (optionally with SCAFFOLD's control variate correction)."""
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
        for z, q, count in self.setup.plan.round_events(1, steps):
            self.accountant.spend(z, q, count)
        return y

    def epsilon(self) -> float | None:
        plan = self.setup.plan
        if plan.mode == "none":
            return None
        return reported_epsilon(plan, self.accountant.epsilon(plan.delta))

    def evaluate(self, w: Tensor) -> float:
        _, accuracy = self.setup.trainer.evaluate(w)
        self.last_accuracy = accuracy
        return accuracy


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
        clients = [_Client(build_node(pcfg, graph, 0, pooled, noise_seed=_noise_seed(cfg, 0)),
                           cfg.weight_decay)]
    else:
        clients = [_Client(build_node(rcfg, graph, i, shard(rcfg, data, i),
                                      noise_seed=_noise_seed(cfg, i)), cfg.weight_decay)
                   for i in range(cfg.nodes)]
    writers = [MetricsWriter(Path(out) / str(i)) for i in range(len(clients))] if out else []
    total = sum(c.n for c in clients)
    weights = [c.n / total for c in clients]
    w_global = clients[0].w.clone()
    c_global = torch.zeros_like(w_global)
    c_local = [torch.zeros_like(w_global) for _ in clients]
    k, lr = cfg.local_steps, cfg.lr
    try:
        for rnd in range(cfg.rounds):
            round_start = time.perf_counter()
            computes = []
            if method in ("solo", "pooled"):
                for c in clients:
                    t0 = time.perf_counter()
                    c.w = c.local_steps(c.w, k, lr)
                    computes.append(time.perf_counter() - t0)
            elif method == "fedavg":
                new = []
                for c in clients:
                    t0 = time.perf_counter()
                    new.append(c.local_steps(w_global, k, lr))
                    computes.append(time.perf_counter() - t0)
                w_global = sum((a * y for a, y in zip(weights, new, strict=True)),
                               torch.zeros_like(w_global))
            else:  # scaffold (Karimireddy et al. 2020), option II control variates, γ_g = 1
                deltas, dc = [], []
                for i, c in enumerate(clients):
                    t0 = time.perf_counter()
                    y = c.local_steps(w_global, k, lr, correction=c_global - c_local[i])
                    c_new = c_local[i] - c_global + (w_global - y) / (k * lr)
                    deltas.append(y - w_global)
                    dc.append(c_new - c_local[i])
                    c_local[i] = c_new
                    computes.append(time.perf_counter() - t0)
                w_global = w_global + torch.stack(deltas).mean(dim=0)
                c_global = c_global + torch.stack(dc).mean(dim=0)
            if method in ("fedavg", "scaffold"):
                for c in clients:
                    c.w = w_global
            due = rnd % cfg.eval_every == 0 or rnd == cfg.rounds - 1
            shared_accuracy: float | None = None
            for i, c in enumerate(clients):
                accuracy = None
                if due:
                    # One global model: the shared test split gives every client the same score.
                    if method in ("fedavg", "scaffold") and shared_accuracy is not None:
                        c.last_accuracy = accuracy = shared_accuracy
                    else:
                        accuracy = shared_accuracy = c.evaluate(c.w)
                if writers:
                    writers[i].write({
                        "round": rnd, "node": i, "time": time.time(),
                        "loss": None if math.isnan(c.last_loss) else c.last_loss,
                        "accuracy": accuracy, "dual_norm": None, "consensus_distance": None,
                        "epsilon": c.epsilon(), "bytes_sent": 0, "bytes_received": 0,
                        "peers_alive": 0, "round_seconds": time.perf_counter() - round_start,
                        "compute_seconds": computes[i], "wait_seconds": 0.0,
                    })
            if progress is not None:
                progress(rnd, time.time() - started)
    finally:
        for wr in writers:
            wr.close()
    nodes: dict[str, dict[str, Any]] = {
        str(i): {"accuracy": c.last_accuracy, "loss": c.last_loss, "epsilon": c.epsilon(),
                 "bytes_sent": 0, "rounds_completed": cfg.rounds, "exit": "finished"}
        for i, c in enumerate(clients)}
    accuracies = [v["accuracy"] for v in nodes.values() if v["accuracy"] is not None]
    epsilons = [v["epsilon"] for v in nodes.values() if v["epsilon"] is not None]
    config = cfg.to_dict()
    config.update(privacy_config([c.setup.plan for c in clients]))
    config["reference"] = method
    summary = {
        "rounds": cfg.rounds, "nodes": nodes,
        "mean_accuracy": sum(accuracies) / len(accuracies) if accuracies else None,
        "max_epsilon": max(epsilons) if epsilons else None,
        "wall_seconds": time.time() - started, "config": config,
    }
    if out:
        write_json_atomic(Path(out) / "summary.json", summary)
    return summary
