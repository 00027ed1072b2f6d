"""A fair tuning protocol: every method gets the same number of tuning runs over its own knobs.

    protocol = Protocol(budget=3)
    tune = tuning_specs(specs, protocol)          # run them: run_grid(tune, "runs/x/tuning")
    final, missing = tuned_specs(specs, protocol, "runs/x/tuning")  # then run_grid(final, …)

For every line of the results (regime, method, ε) the protocol draws `budget` settings from the
method's own search space (`space`) — lr for everyone (as factors of the preset's lr, so clipped
and raw gradients keep their own scale); θ and the η scale (on ECL-ISVR's η for that K) for the
primal-dual family; γ for DP-Norm; local steps for FedAvg/SCAFFOLD — runs each once on the tuning
seed with `validation_fraction` of every node's shard held out, and keeps the one with the best
final validation score (the held-out rows of all nodes; the test split is never read,
node.core.assemble). The final runs then train on the whole shards with the chosen settings, on
every seed, and record the choice and every candidate's score in run.json (`tuned`).

The draw is seeded by the method's name alone, so a method tries the same settings in every cell.

Privacy: tuning on private data costs privacy that the printed ε does not include (the usual
convention in the DP literature; docs/PRIVACY.md). `on="control"` tunes every private line on its
noise-free clipped control instead (ε = ∞, clipping and Poisson sampling, no noise), which reads
no private run's output but trains on the same private rows without noise: its choice is not
covered by ε either (a deployment tunes on public or synthetic data).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from node.core.algorithm import default_eta
from node.experiments.executors import DONE
from node.experiments.grid import METHODS, RunSpec
from topologies import build, max_degree

__all__ = ["Protocol", "candidates", "select", "space", "tuned_specs", "tuning_specs"]

Group = tuple[str, str, float]  # (regime, method, ε)


@dataclass(frozen=True)
class Protocol:
    """How many runs each line gets, and the values each knob may take."""

    budget: int = 3
    # A smoke run (validation scores only) put every method's best at the bottom of (1/3, 1, 3)
    # times the preset's lr at 80 steps, so the grid reaches lower.
    lr_factors: tuple[float, ...] = (0.1, 0.3, 1.0)
    thetas: tuple[float, ...] = (1.0, 0.5)
    eta_scales: tuple[float, ...] = (1.0,)
    gammas: tuple[float, ...] = (0.1, 0.3)
    local_steps: tuple[int, ...] = (1, 4)
    validation_fraction: float = 0.2
    seed: int = 0
    on: Literal["private", "control"] = "private"

    def __post_init__(self) -> None:
        if self.budget < 1:
            raise ValueError(f"the tuning budget must be at least 1 run, got {self.budget}.")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"the validation fraction must be in (0, 1), got "
                             f"{self.validation_fraction}.")


def space(method: str, protocol: Protocol) -> dict[str, tuple[Any, ...]]:
    """The knobs `method` is tuned over, each with the values it may take."""
    m = METHODS[method]
    knobs: dict[str, tuple[Any, ...]] = {"lr_factor": protocol.lr_factors}
    if m.family == "primal-dual" and m.kind != "reference":
        knobs |= {"theta": protocol.thetas, "eta_scale": protocol.eta_scales}
        if m.denoise:
            knobs["gamma"] = protocol.gammas
    if m.algorithm in ("fedavg", "scaffold"):
        knobs["local_steps"] = protocol.local_steps
    return knobs


def candidates(method: str, protocol: Protocol) -> list[dict[str, Any]]:
    """Exactly `budget` settings of `method`'s space: all of them in order when it has that
    many, else a draw seeded by the method's name. A space smaller than the budget is an error:
    that method would get fewer runs than the others."""
    knobs = space(method, protocol)
    grid = [dict(zip(knobs, values, strict=True)) for values in itertools.product(*knobs.values())]
    if len(grid) < protocol.budget:
        raise ValueError(f"{method} has only {len(grid)} settings to try, fewer than the budget "
                         f"of {protocol.budget}; lower the budget or widen its space.")
    if len(grid) == protocol.budget:
        return grid
    draw = random.Random(f"tuning {protocol.seed} {method}")
    return [grid[i] for i in sorted(draw.sample(range(len(grid)), protocol.budget))]


def settings(spec: RunSpec, knobs: dict[str, Any]) -> dict[str, Any]:
    """RunConfig fields for one candidate of `spec`'s line."""
    cfg = spec.config
    out: dict[str, Any] = {"lr": cfg["lr"] * knobs["lr_factor"]}
    for key in ("theta", "gamma", "local_steps"):
        if key in knobs:
            out[key] = knobs[key]
    if knobs.get("eta_scale", 1.0) != 1.0:
        degree = max_degree(build(cfg["topology"], cfg["nodes"], seed=cfg["seed"]))
        steps = out.get("local_steps", cfg["local_steps"])
        out["eta"] = knobs["eta_scale"] * default_eta(out["lr"], steps, degree)
    return out


def _groups(specs: Sequence[RunSpec]) -> dict[Group, RunSpec]:
    groups: dict[Group, RunSpec] = {}
    for s in specs:
        groups.setdefault((s.regime, s.method, s.epsilon), s)
    return groups


def tuning_specs(specs: Sequence[RunSpec], protocol: Protocol) -> list[RunSpec]:
    """The tuning runs for every line of `specs` (candidates numbered `tune-0`, `tune-1`, …);
    lines that share a tuning run under `on="control"` share its directory."""
    out: dict[str, RunSpec] = {}
    for spec in _groups(specs).values():
        for i, knobs in enumerate(candidates(spec.method, protocol)):
            t = _tuning_spec(spec, knobs, i, protocol)
            out.setdefault(t.path, t)
    return list(out.values())


def _tuning_spec(spec: RunSpec, knobs: dict[str, Any], index: int,
                 protocol: Protocol) -> RunSpec:
    cfg = {**spec.config, **settings(spec, knobs), "seed": protocol.seed,
           "noise_seed": protocol.seed, "validation_fraction": protocol.validation_fraction}
    eps = spec.epsilon
    if protocol.on == "control" and math.isfinite(eps):
        cfg.update(epsilon=math.inf, clip_only=True)
        eps = math.inf
    gamma = knobs.get("gamma", spec.gamma)
    return dataclasses.replace(spec, epsilon=eps, gamma=gamma, seed=protocol.seed, config=cfg,
                               tag=f"tune-{index}", tuned=None)


def _score(directory: Path) -> float | None:
    """The candidate's final validation score (its lead metric, mean over nodes), or None."""
    try:
        brief = json.loads((directory / DONE).read_text())
    except (OSError, ValueError):
        return None
    value = brief.get("mean_auroc" if brief.get("metric") == "auroc" else "mean_accuracy")
    return None if value is None or math.isnan(value) else float(value)


def select(spec: RunSpec, protocol: Protocol, root: str | Path) -> dict[str, Any] | None:
    """The tuning record of `spec`'s line: every candidate's validation score and the chosen
    settings (the best score; the earlier candidate on a tie), or None while any is missing."""
    scored = []
    for i, knobs in enumerate(candidates(spec.method, protocol)):
        t = _tuning_spec(spec, knobs, i, protocol)
        value = _score(Path(root) / t.path)
        if value is None:
            return None
        scored.append({"knobs": knobs, "settings": settings(spec, knobs), "validation": value})
    best = max(range(len(scored)), key=lambda i: (scored[i]["validation"], -i))
    return {"budget": protocol.budget, "on": protocol.on, "seed": protocol.seed,
            "validation_fraction": protocol.validation_fraction,
            "chosen": scored[best]["settings"], "candidates": scored}


def tuned_specs(specs: Sequence[RunSpec], protocol: Protocol,
                root: str | Path) -> tuple[list[RunSpec], list[str]]:
    """`specs` with each line's chosen settings (and its record in `tuned`), and the lines
    whose tuning is not complete (their runs are left out)."""
    records = {g: select(s, protocol, root) for g, s in _groups(specs).items()}
    out, missing = [], []
    for s in specs:
        record = records[(s.regime, s.method, s.epsilon)]
        if record is None:
            missing.append(s.path)
            continue
        chosen = record["chosen"]
        gamma = chosen.get("gamma", s.gamma)
        out.append(dataclasses.replace(s, config={**s.config, **chosen}, gamma=gamma,
                                       tuned=record))
    return out, missing
