"""The in-process simulator: N nodes, one process, no sockets, the daemon's algorithm code.

Each round every node runs `NodeRunner.step()` on the messages of the previous round; messages
are delivered in full (no faults) and bytes are counted as the wire would carry them. Outputs are
the same files a local launch writes: `<out>/<node>/metrics.jsonl` and `<out>/summary.json`.
Deterministic under the seed: data order, initialisation and (in simulation only, where nothing
is released) the privacy noise all derive from it unless `noise_seed` is given.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from torch import Tensor

from gossip.codec import header_size
from gossip.messages import Dual, Primal
from node.config import RunConfig
from node.federation import build_graph, build_node, load_data, shard
from node.metrics import MetricsWriter, write_json_atomic
from node.runner import NodeRunner, RoundOutput

ProgressFn = Callable[[int, list[NodeRunner], float], None]


def wire_bytes(kind: type[Dual] | type[Primal], sender: int, round: int, seq: int,
               payload: Tensor) -> int:
    """Bytes the message would occupy on the wire (header frame + float32 tensor frame)."""
    array = np.zeros(0, dtype=np.float32)
    header = header_size(kind(sender=sender, round=round, seq=seq, payload=array))
    return header + payload.numel() * 4


def build_runners(cfg: RunConfig) -> list[NodeRunner]:
    graph = build_graph(cfg)
    data = load_data(cfg)
    seed = cfg.seed if cfg.noise_seed is None else cfg.noise_seed
    return [
        NodeRunner(cfg, build_node(cfg, graph, i, shard(cfg, data, i),
                                   noise_seed=seed * 1_000_003 + i))
        for i in range(cfg.nodes)
    ]


def simulate(cfg: RunConfig, out: str | Path | None, *,
             progress: ProgressFn | None = None) -> dict[str, Any]:
    """Run the whole federation; returns the summary (also written to `out` when given)."""
    started = time.time()
    runners = build_runners(cfg)
    n = len(runners)
    writers = [MetricsWriter(Path(out) / str(i)) for i in range(n)] if out else []
    inbox: list[dict[int, Tensor]] = [{} for _ in range(n)]
    sent = [0] * n
    received = [0] * n
    seq = [0] * n
    exits = ["finished"] * n
    active = [set(r.setup.neighbours) for r in runners]
    try:
        for rnd in range(cfg.rounds):
            round_start = time.perf_counter()
            outputs: list[RoundOutput | None] = []
            for i, runner in enumerate(runners):
                if exits[i] != "finished" or runner.over_budget(active[i]):
                    exits[i] = "budget"
                    outputs.append(None)
                    continue
                t0 = time.perf_counter()
                produced = runner.step({}, active[i])
                produced.compute_seconds = time.perf_counter() - t0
                outputs.append(produced)
            inbox = [{} for _ in range(n)]
            primals: list[dict[int, Tensor]] = [{} for _ in range(n)]
            for i, result in enumerate(outputs):
                if result is None:
                    continue
                for j, y in result.duals.items():
                    size = wire_bytes(Dual, i, rnd, seq[i], y)
                    seq[i] += 1
                    inbox[j][i] = y
                    sent[i] += size
                    received[j] += size
                if result.primal is not None:
                    for j in runners[i].setup.neighbours:
                        size = wire_bytes(Primal, i, rnd, seq[i], result.primal)
                        seq[i] += 1
                        primals[j][i] = result.primal
                        sent[i] += size
                        received[j] += size
            for i, (runner, result) in enumerate(zip(runners, outputs, strict=True)):
                if result is None:
                    continue
                # Absorb at the end of the round, as the daemon does once its round closes, so
                # that evaluation and checkpoints see the same state in both.
                runner.setup.algorithm.absorb(inbox[i])
                accuracy = runner.evaluate() if runner.due_for_evaluation(rnd) else None
                if cfg.algorithm == "dpsgd":  # the message is the primal
                    primals[i] = {j: inbox[i][j] for j in inbox[i]}
                record = runner.metrics_record(
                    rnd, time=time.time(), accuracy=accuracy,
                    consensus=runner.consensus_distance(primals[i]),
                    epsilon=runner.epsilon(), bytes_sent=sent[i], bytes_received=received[i],
                    peers_alive=len(active[i]), round_seconds=time.perf_counter() - round_start,
                    compute_seconds=result.compute_seconds, wait_seconds=0.0, loss=result.loss,
                )
                if writers:
                    writers[i].write(record)
            if progress is not None:
                progress(rnd, runners, time.time() - started)
    finally:
        for w in writers:
            w.close()
    summary = build_summary(cfg, runners, exits, sent, time.time() - started)
    if out:
        write_json_atomic(Path(out) / "summary.json", summary)
    return summary


def build_summary(cfg: RunConfig, runners: list[NodeRunner], exits: list[str],
                  bytes_sent: list[int], wall: float) -> dict[str, Any]:
    """summary.json as CONTRACTS.md fixes it, plus the privacy numbers needed to recompute ε."""
    nodes: dict[str, Any] = {}
    for runner, exit_reason, sent in zip(runners, exits, bytes_sent, strict=True):
        nodes[str(runner.node)] = {
            "accuracy": runner.last_accuracy,
            "loss": runner.last_loss,
            "epsilon": runner.epsilon(),
            "bytes_sent": sent,
            "rounds_completed": runner.round,
            "exit": exit_reason,
        }
    return summary_from_nodes(cfg, nodes, wall, [r.setup.plan for r in runners])


def summary_from_nodes(cfg: RunConfig, nodes: dict[str, Any], wall: float,
                       plans: list[Any]) -> dict[str, Any]:
    accuracies = [v["accuracy"] for v in nodes.values() if v.get("accuracy") is not None]
    epsilons = [v["epsilon"] for v in nodes.values() if v.get("epsilon") is not None]
    config = cfg.to_dict()
    config.update(privacy_config(plans))
    return {
        "rounds": cfg.rounds,
        "nodes": nodes,
        "mean_accuracy": float(np.mean(accuracies)) if accuracies else None,
        "max_epsilon": max(epsilons) if epsilons else None,
        "wall_seconds": wall,
        "config": config,
    }


def privacy_config(plans: list[Any]) -> dict[str, Any]:
    """Per-node noise multiplier and sampling rate, so anyone can recompute ε (DESIGN.md §2)."""
    if not plans or plans[0].mode == "none":
        return {"noise_multiplier": None, "sample_rate": None, "steps_per_node": None,
                "sigma": None, "formal_guarantee": None}
    return {
        "noise_multiplier": {str(i): p.noise_multiplier for i, p in enumerate(plans)},
        "sample_rate": {str(i): p.sample_rate for i, p in enumerate(plans)},
        "steps_per_node": plans[0].steps_per_node,
        "sigma": {str(i): p.sigma for i, p in enumerate(plans)} if plans[0].sigma else None,
        "formal_guarantee": all(p.formal for p in plans),
        "privacy_mode_used": plans[0].mode,
    }


def console_progress(stream: TextIO = sys.stderr) -> ProgressFn:
    """A one-line live view: round, mean loss, mean accuracy, max ε, seconds per round."""
    interactive = stream.isatty()

    def show(rnd: int, runners: list[NodeRunner], elapsed: float) -> None:
        cfg = runners[0].cfg
        losses = [r.last_loss for r in runners if not math.isnan(r.last_loss)]
        accs = [r.last_accuracy for r in runners if r.last_accuracy is not None]
        eps = [e for e in (r.epsilon() for r in runners) if e is not None]
        mean_loss = np.mean(losses) if losses else math.nan
        line = (f"round {rnd + 1:>4}/{cfg.rounds}  loss {mean_loss:.4f}"
                f"  acc {100 * np.mean(accs) if accs else math.nan:5.1f}%"
                f"  eps {max(eps) if eps else math.inf:.3g}"
                f"  {elapsed / (rnd + 1):.2f} s/round")
        if interactive:
            stream.write("\r" + line + ("\n" if rnd + 1 == cfg.rounds else ""))
        elif (rnd + 1) % max(1, cfg.rounds // 20) == 0 or rnd + 1 == cfg.rounds:
            stream.write(line + "\n")
        stream.flush()

    return show
