"""Which algorithm wins where: the measured winner of every (cell, ε), seed-paired, and the one
line a user near a measured cell gets.

    from node.experiments.studies.winners import winners, winners_table, recommend
    cells = winners(load_runs("runs/het/final"))     # one Winner per (regime, ε)
    save(cells, "docs/results/heterogeneity/winners.json")
    recommend(load(...), partition="classes:2", topology="ring", nodes=12, epsilon=4)

Only the decentralised methods compete (the daemon's code path: DP-Norm, DP-ECL, D-PSGD and their
non-private forms); FedAvg/SCAFFOLD need a server and solo/pooled are references. The margin is
seed-paired: the mean over seeds of (winner − runner-up) at equal seed, which shares data order
and noise draws, with its std over seeds and on how many seeds the winner was ahead.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from node.experiments.grid import METHODS, Run, eps_name, label

__all__ = ["COMMITTED", "Winner", "contrasts_table", "load", "paired", "recommend", "save",
           "summary_table", "winners", "winners_table"]

# The committed measured answer (docs/RESULTS.md); pre-validation reads it when it exists.
COMMITTED = Path(__file__).resolve().parents[2] / "docs/results/heterogeneity/winners.json"


@dataclass(frozen=True)
class Winner:
    regime: str
    epsilon: float
    skew: str
    topology: str
    nodes: int
    local_steps: int
    winner: str
    runner_up: str | None
    margin: float  # seed-paired mean (winner − runner-up), a fraction
    margin_std: float
    ahead: tuple[int, int]  # (seeds with the winner ahead, paired seeds)
    scores: dict[str, tuple[float, float, int]] = field(default_factory=dict)  # mean, std, n
    tuned: dict[str, dict[str, Any]] = field(default_factory=dict)  # key → chosen settings


def _seed_scores(runs: Sequence[Run]) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = defaultdict(dict)
    for r in runs:
        value = r.mean_score()
        if not math.isnan(value):
            out[r.key][r.seed] = value
    return out


def paired(a: dict[int, float], b: dict[int, float]) -> tuple[float, float, int, int]:
    """(mean of a − b over shared seeds, its std, seeds where a is ahead, shared seeds)."""
    seeds = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in seeds]
    if not diffs:
        return math.nan, math.nan, 0, 0
    std = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
    return statistics.fmean(diffs), std, sum(d > 0 for d in diffs), len(diffs)


Cell = tuple[str, float, list[Run], dict[str, dict[int, float]], dict[str, float]]


def _cells(runs: Sequence[Run]) -> list[Cell]:
    """The decentralised final runs (no tuning candidate) per (regime, ε), in table order, with
    each line's score per seed and its mean over seeds."""
    groups: dict[tuple[str, float], list[Run]] = defaultdict(list)
    for r in runs:
        if METHODS[r.method].kind == "sim" and not r.spec.get("tag"):
            groups[(r.regime, r.epsilon)].append(r)
    out = []
    for (regime, eps), group in sorted(groups.items(), key=lambda kv: (kv[0][0], -kv[0][1])):
        seeds = _seed_scores(group)
        means = {k: statistics.fmean(v.values()) for k, v in seeds.items() if v}
        out.append((regime, eps, group, seeds, means))
    return out


def winners(runs: Sequence[Run]) -> list[Winner]:
    """One Winner per (regime, ε) among the decentralised methods, by mean over seeds."""
    out = []
    for regime, eps, group, seeds, means in _cells(runs):
        ranked = sorted(means, key=lambda k: -means[k])
        if not ranked:
            continue
        best, second = ranked[0], ranked[1] if len(ranked) > 1 else None
        margin, std, ahead, n = paired(seeds[best], seeds[second]) if second else (
            math.nan, math.nan, 0, 0)
        cfg = group[0].spec.get("config", {})
        tuned: dict[str, dict[str, Any]] = {}
        for r in group:
            record = r.spec.get("tuned")
            if record:
                tuned.setdefault(r.key, record["chosen"])
        out.append(Winner(
            regime=regime, epsilon=eps, skew=str(cfg.get("partition")),
            topology=str(cfg.get("topology")), nodes=int(cfg.get("nodes", 0)),
            local_steps=int(cfg.get("local_steps", 1)), winner=best, runner_up=second,
            margin=margin, margin_std=std, ahead=(ahead, n),
            scores={k: (means[k], statistics.stdev(v.values()) if len(v) > 1 else 0.0, len(v))
                    for k, v in seeds.items() if v},
            tuned=tuned))
    return out


def _pts(value: float, std: float) -> str:
    return "–" if math.isnan(value) else f"{100 * value:+.1f} ± {100 * std:.1f}"


def _settings(chosen: dict[str, Any] | None) -> str:
    if not chosen:
        return "untuned"
    return ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in sorted(chosen.items()))


def winners_table(runs: Sequence[Run] | Sequence[Winner]) -> str:
    """Markdown: per (cell, ε) every method's accuracy (mean ± std over seeds), the winner and
    its seed-paired margin over the runner-up, and the tuned settings."""
    cells = [c for c in runs if isinstance(c, Winner)] or winners(
        [r for r in runs if isinstance(r, Run)])
    if not cells:
        return "_no finished decentralised runs_"
    lines = ["| cell (skew, graph, K) | ε | accuracy, mean ± std over seeds (n) [tuned] | "
             "winner | margin over runner-up (seed-paired) | ahead |",
             "|---|---|---|---|---|---|"]
    for c in cells:
        scores = "; ".join(f"{label(k)} {100 * m:.1f} ± {100 * s:.1f} ({n}) "
                           f"[{_settings(c.tuned.get(k))}]"
                           for k, (m, s, n) in sorted(c.scores.items(), key=lambda kv: -kv[1][0]))
        lines.append(f"| `{c.regime}` ({c.skew}, {c.nodes}-node {c.topology}, K={c.local_steps})"
                     f" | {eps_name(c.epsilon)} | {scores} | **{label(c.winner)}** | "
                     f"{_pts(c.margin, c.margin_std)} pts vs {label(c.runner_up or '–')} | "
                     f"{c.ahead[0]}/{c.ahead[1]} |")
    return "\n".join(lines)


def summary_table(cells: Sequence[Winner]) -> str:
    """Markdown, one row per cell and one column per ε: the winner, its seed-paired margin over
    the runner-up and on how many seeds it was ahead (the long table has every line)."""
    epsilons = sorted({c.epsilon for c in cells}, key=lambda e: -e)
    by = {(c.regime, c.epsilon): c for c in cells}
    regimes = sorted({c.regime for c in cells})
    lines = ["| cell | " + " | ".join(f"ε = {eps_name(e)}" for e in epsilons) + " |",
             "|---|" + "---|" * len(epsilons)]
    for regime in regimes:
        row = []
        for e in epsilons:
            c = by.get((regime, e))
            row.append("–" if c is None else f"{label(c.winner)} {_pts(c.margin, c.margin_std)} "
                       f"({c.ahead[0]}/{c.ahead[1]})")
        lines.append(f"| `{regime}` | " + " | ".join(row) + " |")
    return "\n".join(lines)


# The contrasts the heterogeneity issue asks about: (name, better side, worse side), each side
# a set of table keys whose best mean in the cell stands for it.
CONTRASTS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("primal-dual − gossip", ("dpnorm-msg-g0.1", "dpnorm-grad-g0.1", "dp-ecl", "dp-ecl-grad",
                              "ecl"), ("dp-dpsgd", "dpsgd")),
    ("denoising, gradient (γ 0.1 − 0)", ("dpnorm-grad-g0.1",), ("dp-ecl-grad",)),
    ("denoising, message (γ 0.1 − 0)", ("dpnorm-msg-g0.1",), ("dp-ecl",)),
)


def contrasts_table(runs: Sequence[Run]) -> str:
    """Markdown: per (cell, ε) each contrast's seed-paired difference of the two sides' best
    lines (mean ± std over seeds, seeds ahead), e.g. the best primal-dual line minus the best
    gossip line; "–" where a side has no finished run."""
    lines = ["| cell | ε | " + " | ".join(name for name, _, _ in CONTRASTS) + " |",
             "|---|---|" + "---|" * len(CONTRASTS)]
    for regime, eps, _, seeds, means in _cells(runs):
        cells = []
        for _, better, worse in CONTRASTS:
            a = max((k for k in better if k in means), key=means.__getitem__, default=None)
            b = max((k for k in worse if k in means), key=means.__getitem__, default=None)
            if a is None or b is None:
                cells.append("–")
                continue
            diff, std, ahead, n = paired(seeds[a], seeds[b])
            cells.append(f"{_pts(diff, std)} ({label(a)} vs {label(b)}, {ahead}/{n})")
        lines.append(f"| `{regime}` | {eps_name(eps)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def save(cells: Sequence[Winner], path: str | Path) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    rows = [asdict(c) | {"epsilon": None if math.isinf(c.epsilon) else c.epsilon} for c in cells]
    target.write_text(json.dumps(rows, indent=1, default=float) + "\n", encoding="utf-8")
    return target


def load(path: str | Path = COMMITTED) -> list[Winner]:
    """The saved cells, or [] when the file is missing or unreadable."""
    try:
        rows = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    out = []
    for row in rows:
        row["epsilon"] = math.inf if row["epsilon"] is None else float(row["epsilon"])
        row["ahead"] = tuple(row["ahead"])
        row["scores"] = {k: tuple(v) for k, v in row["scores"].items()}
        out.append(Winner(**row))
    return out


def _distance(c: Winner, partition: str, topology: str, nodes: int, epsilon: float,
              local_steps: int) -> float:
    def log_eps(e: float) -> float:
        return 3.0 if math.isinf(e) else math.log10(e)

    return ((c.skew != partition) * 4 + (c.topology != topology) * 2
            + abs(math.log2(max(c.nodes, 1) / max(nodes, 1))) + abs(log_eps(c.epsilon)
                                                                   - log_eps(epsilon))
            + (c.local_steps != local_steps))


def recommend(cells: Sequence[Winner], *, partition: str, topology: str, nodes: int,
              epsilon: float, local_steps: int = 1) -> str | None:
    """One line for a setting near a measured cell (same skew, similar graph and ε), or None
    when no measured cell is near (another skew, or ε off by more than a factor of ten)."""
    near = [c for c in cells if _distance(c, partition, topology, nodes, epsilon,
                                          local_steps) < 4.0]
    if not near:
        return None
    c = min(near, key=lambda c: _distance(c, partition, topology, nodes, epsilon, local_steps))
    where = (f"the nearest measured cell is `{c.regime}` ({c.skew}, {c.nodes}-node "
             f"{c.topology}, K = {c.local_steps}) at ε = {eps_name(c.epsilon)}")
    if c.runner_up is None or math.isnan(c.margin):
        return f"{where}: only {label(c.winner)} was measured there."
    clear = c.ahead[0] == c.ahead[1] and c.margin > c.margin_std
    verdict = (f"use {label(c.winner)}" if clear else
               f"{label(c.winner)} and {label(c.runner_up)} are within the seed spread there; "
               "either will do")
    return (f"{where}: {verdict} ({label(c.winner)} {_pts(c.margin, c.margin_std)} points "
            f"ahead of {label(c.runner_up)}, seed-paired, on {c.ahead[0]}/{c.ahead[1]} seeds).")
