"""Finished runs of an experiment directory, and the few ways the report groups them.

    from node.experiments.grid.results import load_runs
    runs = load_runs("runs/paper")             # only runs that wrote DONE

A run's *key* is its method plus its denoising strength where it has one ("dpnorm-msg-g0.1"):
one row of a table, one line of a plot. A run's *score* is each node's final value of the
metric its task leads with (summary.json's `metric`): test accuracy, or AUROC for two-class
tasks (node.core.model.metrics).
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.experiments.grid.engine import METHODS
from node.outputs.files import RunDir, read_metrics


@dataclass
class Run:
    spec: dict[str, Any]
    summary: dict[str, Any]
    metrics: dict[int, list[dict[str, Any]]]

    @property
    def method(self) -> str:
        return str(self.spec["method"])

    @property
    def key(self) -> str:
        """Method plus denoising strength where it has one: one row of the table."""
        return f"{self.method}-g{self.gamma:g}" if METHODS[self.method].denoise else self.method

    @property
    def regime(self) -> str:
        return str(self.spec["regime"])

    @property
    def epsilon(self) -> float:
        eps = self.spec["epsilon"]
        return math.inf if eps is None else float(eps)

    @property
    def gamma(self) -> float:
        return float(self.spec["gamma"])

    @property
    def seed(self) -> int:
        return int(self.spec["seed"])

    @property
    def metric(self) -> str:
        """The metric the run's task leads with, also its key in metrics.jsonl ("accuracy" in
        summaries written before there was a choice)."""
        return str(self.summary.get("metric") or "accuracy")

    def final_scores(self) -> dict[int, float]:
        """Each node's final value of the lead metric (nodes without one left out)."""
        key = self.metric
        return {int(k): float(v[key]) for k, v in self.summary["nodes"].items()
                if v.get(key) is not None}

    def mean_score(self) -> float:
        values = list(self.final_scores().values())
        return sum(values) / len(values) if values else math.nan

    def curve(self, metric: str) -> tuple[list[int], list[float]]:
        """The metric averaged over nodes at every round where any node reported it."""
        by_round: dict[int, list[float]] = defaultdict(list)
        for records in self.metrics.values():
            for r in records:
                if r.get(metric) is not None:
                    by_round[int(r["round"])].append(float(r[metric]))
        rounds = sorted(by_round)
        return [r + 1 for r in rounds], [sum(by_round[r]) / len(by_round[r]) for r in rounds]


def metric_of(runs: Iterable[Run]) -> str:
    """The metric a set of runs (one regime: one task) leads with; accuracy, which every run
    has, if they disagree."""
    metrics = {r.metric for r in runs}
    return metrics.pop() if len(metrics) == 1 else "accuracy"


def metric_name(metric: str) -> str:
    """How tables and axes name a metric (both are shown in %)."""
    return {"auroc": "AUROC", "balanced_accuracy": "balanced accuracy"}.get(metric, metric)


def load_runs(root: str | Path) -> list[Run]:
    runs = []
    for done in sorted(Path(root).glob("**/DONE")):
        d = done.parent
        try:
            spec = json.loads((d / "run.json").read_text())
            summary = json.loads(RunDir(d).summary.read_text())
        except (OSError, ValueError):
            continue
        metrics = {i: read_metrics(p) for i, p in RunDir(d).metrics_files().items()}
        runs.append(Run(spec, summary, metrics))
    return runs


def method_of(key: str) -> tuple[str, str]:
    """Split a row key such as "dpnorm-grad-g0.1" into ("dpnorm-grad", "0.1")."""
    method, sep, gamma = key.rpartition("-g")
    try:
        float(gamma)
    except ValueError:
        return key, ""
    return (method, gamma) if sep and method in METHODS else (key, "")


def label(key: str) -> str:
    method, gamma = method_of(key)
    if method not in METHODS:
        return key
    return METHODS[method].label + (f", γ={gamma}" if gamma else "")


def eps_name(eps: float) -> str:
    return "∞" if math.isinf(eps) else f"{eps:g}"


def mean_std(values: Sequence[float]) -> str:
    if not values:
        return "–"
    mean = 100 * statistics.fmean(values)
    std = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.1f} ± {std:.1f}"


def row_order(keys: Iterable[str]) -> list[str]:
    order = list(METHODS)
    return sorted(set(keys), key=lambda k: (order.index(method_of(k)[0])
                                            if method_of(k)[0] in order else 99, k))


def group_runs(runs: Iterable[Run]) -> dict[tuple[str, str, float], list[Run]]:
    groups: dict[tuple[str, str, float], list[Run]] = defaultdict(list)
    for r in runs:
        groups[(r.regime, r.key, r.epsilon)].append(r)
    return groups


def pooled_scores(runs: Sequence[Run]) -> list[float]:
    return [a for r in runs for a in r.final_scores().values()]


def score_of(group: Sequence[Run]) -> float:
    """Mean final score over every node of every run in `group` (a fraction); NaN when no
    node has one (an AUROC undefined on a one-class test split)."""
    scores = pooled_scores(group)
    return statistics.fmean(scores) if scores else math.nan


def cell_score(groups: dict[tuple[str, str, float], list[Run]], regime: str, key: str,
               eps: float) -> float | None:
    """`score_of` one table cell, or None when the cell has no runs (or no scores)."""
    group = groups.get((regime, key, eps))
    value = score_of(group) if group else math.nan
    return None if math.isnan(value) else value


def max_eps(runs: Sequence[Run]) -> float | None:
    values = [r.summary.get("max_epsilon") for r in runs]
    finite = [float(v) for v in values if v is not None]
    return max(finite) if finite else None


def mean_curve(group: Sequence[Run], metric: str) -> tuple[list[int], list[float]]:
    acc: dict[int, list[float]] = defaultdict(list)
    for r in group:
        for x, y in zip(*r.curve(metric), strict=True):
            acc[x].append(y)
    xs = sorted(acc)
    return xs, [sum(acc[x]) / len(acc[x]) for x in xs]
