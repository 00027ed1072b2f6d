"""The records a run reports, defined once: a metrics.jsonl line, a node's entry (final.json
and summary.json), final.json itself (with the mechanism's record, the privacy numbers that
make ε recomputable), and summary.json.

The simulator, the server-based references, the daemon and the launcher all build their
outputs here, so the keys docs/CONTRACTS.md fixes cannot drift between them.
"""

from __future__ import annotations

import math
import resource
import sys
from collections.abc import Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from node.config import RunConfig
from node.core.mechanism import Mechanism, claims_privacy
from node.core.metrics import Evaluation, LeadMetric, auroc_kind, lead_metric
from node.outputs.files import FINAL, LEDGER, METRICS, read_json, read_metrics
from privacy.ledger import read_spend


class ExitReason(StrEnum):
    """Why a node stopped, as final.json and summary.json say it."""

    FINISHED = "finished"   # ran every round
    BUDGET = "budget"       # the next round would have exceeded its privacy budget
    STOPPED = "stopped"     # asked to stop (SIGTERM/SIGINT)
    CRASHED = "crashed"     # died without writing final.json (the launcher's verdict)


GOOD_EXITS = frozenset({ExitReason.FINISHED, ExitReason.BUDGET})
NODE_KEYS = ("accuracy", "auroc", "balanced_accuracy", "loss", "epsilon", "lifetime_epsilon",
             "bytes_sent", "rounds_completed", "exit")


def metrics_record(*, round: int, node: int, time: float, loss: float,
                   evaluation: Evaluation | None, dual_norm: float | None,
                   consensus_distance: float | None,
                   epsilon: float | None, bytes_sent: int, bytes_received: int,
                   peers_alive: int, neighbours_heard: int, round_seconds: float,
                   compute_seconds: float, wait_seconds: float,
                   suspects: Sequence[int] = (),
                   lifetime_epsilon: float | None = None) -> dict[str, Any]:
    """One line of metrics.jsonl with exactly the contract's keys, in its order. `accuracy`,
    `auroc` and `balanced_accuracy` are null on rounds without an `evaluation`, and the last two
    also where the task computes no AUROC (node.core.metrics) or it is undefined. `suspects`:
    the neighbours `--robust clip+screen` marks suspicious (node.core.robust).
    `neighbours_heard`: how many neighbours' messages for this round arrived in time and were
    used (`peers_alive` counts those believed up, who may still have sent nothing).
    `lifetime_epsilon`: ε of every release ever made from the node's data, over all its runs
    (a daemon's lifetime ledger; null in the simulator and where no ε is proven)."""
    return {
        "round": round, "node": node, "time": time,
        "loss": None if math.isnan(loss) else loss,
        "accuracy": evaluation.accuracy if evaluation else None,
        "auroc": evaluation.auroc if evaluation else None,
        "balanced_accuracy": evaluation.balanced_accuracy if evaluation else None,
        "dual_norm": dual_norm, "consensus_distance": consensus_distance,
        "epsilon": epsilon, "lifetime_epsilon": lifetime_epsilon,
        "bytes_sent": bytes_sent, "bytes_received": bytes_received,
        "peers_alive": peers_alive, "neighbours_heard": neighbours_heard,
        "round_seconds": round_seconds,
        "compute_seconds": compute_seconds, "wait_seconds": wait_seconds,
        "suspects": list(suspects),
    }


def node_entry(*, accuracy: float | None, auroc: float | None, balanced_accuracy: float | None,
               loss: float, epsilon: float | None, bytes_sent: int, rounds_completed: int,
               exit: ExitReason, lifetime_epsilon: float | None = None) -> dict[str, Any]:
    """One node's entry in summary.json (and the first keys of its final.json): `epsilon`
    this run's, `lifetime_epsilon` that of every run on the node's data (a daemon's)."""
    return {"accuracy": accuracy, "auroc": auroc, "balanced_accuracy": balanced_accuracy,
            "loss": loss, "epsilon": epsilon, "lifetime_epsilon": lifetime_epsilon,
            "bytes_sent": bytes_sent,
            "rounds_completed": rounds_completed, "exit": str(exit)}


def final_record(entry: Mapping[str, Any], plan: Mechanism,
                 rejected: Mapping[str, Mapping[str, int]], *,
                 peak_rss_bytes: int | None = None,
                 suspects: Sequence[int] = (), rounds_skipped: int = 0) -> dict[str, Any]:
    """final.json: the node's entry, the messages it refused by peer and kind, its privacy,
    the process's peak resident memory (`peak_rss`), null where unknown, the neighbours
    its robust screen marked suspicious at the end, and how many of its `rounds_completed`
    it did not run, over all its restarts: skipped to rejoin its neighbours after a restart,
    freeze or partition (nothing trained or released in them), or lost with a crash (the
    round in flight, whose release the ledger holds)."""
    return {**entry, "rejected_messages": {k: dict(v) for k, v in rejected.items()},
            "privacy": plan.record(), "peak_rss_bytes": peak_rss_bytes,
            "suspects": list(suspects), "rounds_skipped": rounds_skipped}


def peak_rss() -> int:
    """This process's peak resident set size in bytes so far (the kernel's VmHWM)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # KiB on Linux, bytes on macOS


def summary(cfg: RunConfig, nodes: Mapping[str, Mapping[str, Any]], wall: float,
            privacy: Sequence[Mapping[str, Any]], *, startup_seconds: float | None = None,
            metric: LeadMetric | None = None, notes: Mapping[str, str] | None = None,
            **extra_config: Any) -> dict[str, Any]:
    """summary.json as docs/CONTRACTS.md fixes it, plus per-node noise so anyone can recompute ε.
    `privacy` holds one mechanism's `record()` per node in id order (empty when not all are known);
    `startup_seconds` is a launch's time from starting the first node to every node READY
    (null for a run that starts no processes, or whose start failed); `metric` the one the
    task leads with (`lead_metric`; default: told by the config and the nodes' entries);
    `notes` one sentence per node whose ε is null for want of proof (`proven_spend`)."""
    accuracies = [v["accuracy"] for v in nodes.values() if v.get("accuracy") is not None]
    epsilons = [v["epsilon"] for v in nodes.values() if v.get("epsilon") is not None]
    config = cfg.to_dict()
    config.update(_privacy_config(privacy))
    config.update(extra_config)
    return {
        "rounds": cfg.rounds,
        "nodes": {k: dict(v) for k, v in nodes.items()},
        "mean_accuracy": float(np.mean(accuracies)) if accuracies else None,
        "mean_auroc": _mean(nodes, "auroc"),
        "mean_balanced_accuracy": _mean(nodes, "balanced_accuracy"),
        "metric": metric if metric is not None else _lead(cfg, nodes),
        "max_epsilon": max(epsilons) if epsilons else None,
        "wall_seconds": wall,
        "startup_seconds": startup_seconds,
        "notes": dict(notes or {}),
        "config": config,
    }


def _mean(nodes: Mapping[str, Mapping[str, Any]], key: str) -> float | None:
    values = [v[key] for v in nodes.values() if v.get(key) is not None]
    return float(np.mean(values)) if values else None


def _lead(cfg: RunConfig, nodes: Mapping[str, Mapping[str, Any]]) -> LeadMetric:
    """The lead metric of a run whose number of classes the caller did not say (a launch,
    which reads no data): "auto" computes an AUROC for two-class tasks only, so any node
    reporting one shows the task has two classes."""
    if cfg.metric == "accuracy" or cfg.metric == "auroc":
        return cfg.metric
    if cfg.classes is not None:
        return lead_metric(cfg.metric, auroc_kind(cfg.metric, cfg.classes))
    return "auroc" if any(v.get("auroc") is not None for v in nodes.values()) else "accuracy"


def _privacy_config(privacy: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    if not privacy or not claims_privacy(privacy[0]):
        return {"noise_multiplier": None, "sample_rate": None, "steps_per_node": None,
                "sigma": None, "formal_guarantee": None}
    return {
        "noise_multiplier": {str(i): p["noise_multiplier"] for i, p in enumerate(privacy)},
        "sample_rate": {str(i): p["sample_rate"] for i, p in enumerate(privacy)},
        "steps_per_node": privacy[0]["steps_per_node"],
        "sigma": ({str(i): p["sigma"] for i, p in enumerate(privacy)}
                  if privacy[0]["sigma"] else None),
        "formal_guarantee": all(p["formal"] for p in privacy),
        "privacy_mode_used": privacy[0]["mode"],
    }


def node_result(node_dir: Path, *, formal: bool = True,
                notes: dict[str, str] | None = None) -> dict[str, Any]:
    """A daemon's entry from what it left: its final.json, or — killed or refused before
    writing one — what its metrics show, with exit "crashed". A crashed node's ε comes from its
    privacy ledger, which is written before each round's messages leave (metrics.jsonl is
    written after the round, so it can lag one release behind); `formal` False: no ε is
    printed. Where the files do not prove an upper bound (`proven_spend`) ε is null and the
    reason goes into `notes` under the node's directory name; the lifetime ε of a crashed node
    is null (its lifetime ledger is in its state directory, which the launcher does not read)."""
    final = read_json(node_dir / FINAL)
    if final is not None:
        return {k: final.get(k) for k in NODE_KEYS}
    path = node_dir / METRICS
    records = read_metrics(path) if path.exists() else []
    last = records[-1] if records else {}
    evaluated = [r for r in records if r.get("accuracy") is not None]
    scored = evaluated[-1] if evaluated else {}
    epsilon, note = proven_spend(node_dir, records) if formal else (None, None)
    if note is not None and notes is not None:
        notes[node_dir.name] = note
    return {"accuracy": scored.get("accuracy"), "auroc": scored.get("auroc"),
            "balanced_accuracy": scored.get("balanced_accuracy"), "loss": last.get("loss"),
            "epsilon": epsilon, "lifetime_epsilon": None,
            "bytes_sent": last.get("bytes_sent", 0),
            "rounds_completed": max((r["round"] + 1 for r in records), default=0),
            "exit": str(ExitReason.CRASHED)}


def kept_result(previous: Mapping[str, Any] | None,
                entry: Mapping[str, Any]) -> dict[str, Any] | None:
    """The entry a node's earlier final.json gave, where this launch left it crashed without
    having changed anything (the same rounds, the same ε its ledger proves) and the earlier one
    finished: a finished node stopped or killed while its neighbours were refused keeps its
    results instead of being rewritten as crashed or stopped."""
    if previous is None or entry.get("exit") != ExitReason.CRASHED or \
            previous.get("exit") not in GOOD_EXITS:
        return None
    same = all(previous.get(k) == entry.get(k) for k in ("rounds_completed", "epsilon"))
    return {k: previous.get(k) for k in NODE_KEYS} if same else None


def proven_spend(node_dir: Path, records: Sequence[Mapping[str, Any]]) -> tuple[float | None,
                                                                            str | None]:
    """(ε, why it is null) of a node that wrote no final.json: its ledger's ε, unless the
    ledger is missing or unreadable, or proves less than the node's own metrics recorded it
    had spent (the ledger was deleted, replaced or restored from an older copy) — then the
    spend is unknown, never a smaller number than the files show."""
    seen = max((float(r["epsilon"]) for r in records if r.get("epsilon") is not None),
               default=None)
    spend = read_spend(node_dir / LEDGER)
    if spend is None:
        if seen is None:
            return None, None   # no DP, or nothing recorded anywhere
        return None, (f"node {node_dir.name}'s privacy ledger is missing or unreadable but its "
                      f"metrics show ε = {seen:.4g} spent; its spend is unknown (at least that).")
    identity, accountant = spend
    epsilon = accountant.epsilon(float(identity["delta"]))
    if seen is not None and epsilon < seen:
        return None, (f"node {node_dir.name}'s privacy ledger proves ε = {epsilon:.4g}, less "
                      f"than the {seen:.4g} its metrics show spent; its spend is unknown.")
    return epsilon, None


def ledger_epsilon(node_dir: Path) -> float | None:
    """ε of everything a node's ledger records, at the δ it was started with; None without a
    (readable) ledger, i.e. without DP."""
    spend = read_spend(node_dir / LEDGER)
    if spend is None:
        return None
    identity, accountant = spend
    return accountant.epsilon(float(identity["delta"]))
