"""The `heterogeneity` preset: which algorithm wins where, over skew × graph × K × ε.

    python scripts/experiment.py --preset heterogeneity --out runs/het --tune 3 \\
        --skews iid classes:2 --graphs ring-6 ring-16 --ks 1 4 --epsilons inf 4 --seeds 0 1

Each regime is one cell of (label skew, graph, local steps K): its name reads back as the three
(`c2_ring-16_k4`). Every cell takes the same number of gradient steps per node (`STEPS`): at K = 4 a
node exchanges messages a quarter as often, so K compares communication at equal compute and equal
privacy spending (gradient-mode DP charges every local step). Message mode runs at K = 1 only (its
proof needs it). The sizes (logistic regression on Fashion-MNIST shards of 1000 examples, 1000 test
examples) are chosen for a tuned, seed-paired comparison on two cores, not for the best accuracy.

Filters name the axes' values; an unknown value, or a combination that names no cell, is one
sentence (`select_regimes` raises ValueError) before any run starts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["AXES", "GRAPHS", "K_VALUES", "SKEWS", "STEPS", "estimate_seconds",
           "heterogeneity_fields", "regime_name", "select_regimes"]

SKEWS: dict[str, str] = {"iid": "iid", "classes:4": "c4", "classes:2": "c2",
                         "dirichlet:0.1": "dir0.1"}
# name → (topology, nodes); 16 nodes on a ring mix slowly, the torus and exponential graph fast.
GRAPHS: dict[str, tuple[str, int]] = {"ring-6": ("ring", 6), "ring-16": ("ring", 16),
                                      "torus-16": ("torus", 16), "exp-16": ("exponential", 16)}
K_VALUES: tuple[int, ...] = (1, 4)
STEPS = 80  # gradient steps per node in every cell: rounds = STEPS / K
AXES = ("skew", "graph", "K")
MESSAGE_METHODS = ("dpnorm-msg", "dp-ecl")


def regime_name(skew: str, graph: str, k: int) -> str:
    return f"{SKEWS[skew]}_{graph}_k{k}"


def heterogeneity_fields() -> dict[str, Any]:
    """The preset's fields (node.experiments.grid.engine.Preset takes them as keywords)."""
    regimes: dict[str, dict[str, Any]] = {}
    axes: dict[str, dict[str, str]] = {}
    for skew in SKEWS:
        for graph, (topology, nodes) in GRAPHS.items():
            for k in K_VALUES:
                name = regime_name(skew, graph, k)
                regimes[name] = dict(partition=skew, topology=topology, nodes=nodes,
                                     local_steps=k, rounds=STEPS // k,
                                     eval_every=STEPS // k)
                axes[name] = {"skew": skew, "graph": graph, "K": str(k)}
    k1 = tuple(n for n, a in axes.items() if a["K"] == "1")
    methods = ("dpnorm-msg", "dpnorm-grad", "dp-ecl", "dp-ecl-grad", "ecl", "dpsgd", "dp-dpsgd",
               "fedavg", "scaffold", "solo", "pooled")
    return dict(
        name="heterogeneity",
        base=dict(model="logreg", dataset="fashion-mnist", examples_per_node=1000, lr=0.1,
                  batch_size=32, clip=1.0, delta=1e-5, test_examples=1000, primal_every=0),
        regimes=regimes, methods=methods, epsilons=(math.inf, 4.0, 1.0),
        # γ is tuned (node.experiments.grid.tuning); 0.1 is the untuned default
        gammas=(0.1,), seeds=(0, 1, 2),
        only_regimes={m: k1 for m in MESSAGE_METHODS},
        clipped={"lr": 1.0}, axes=axes)


def select_regimes(axes: dict[str, dict[str, str]], wanted: dict[str, Sequence[str]]) -> list[str]:
    """The regimes whose axis values are among `wanted`'s (an absent or empty axis: any).

    Raises ValueError, one sentence, for a value no regime has on that axis or a combination
    that leaves no regime."""
    for axis, values in wanted.items():
        known = sorted({a[axis] for a in axes.values() if axis in a})
        if not known and values:
            raise ValueError(f"this preset has no {axis} axis; drop the --{axis.lower()}s "
                             "filter.")
        for v in values:
            if v not in known:
                raise ValueError(f"unknown {axis} {v!r} for this preset; choose from "
                                 f"{', '.join(known)}.")
    chosen = [name for name, a in axes.items()
              if all(not values or a.get(axis) in values for axis, values in wanted.items())]
    if not chosen:
        asked = ", ".join(f"{axis} {'/'.join(v)}" for axis, v in wanted.items() if v)
        raise ValueError(f"no cell of this preset has {asked}; see --list for its cells.")
    return chosen


# Seconds of one core per node-step (logreg, batch 32, 1000 examples) and per run (loading the
# data, building the federation, evaluating), measured on this project's 2-core machine under
# load from the runs of docs/RESULTS.md's heterogeneity section.
CLIPPED_STEP_S = 0.0071
PLAIN_STEP_S = 0.00085
RUN_S = 1.7


def estimate_seconds(specs: Sequence[Any]) -> float:
    """One core's seconds for `specs` (RunSpecs) by the measured per-step costs above; a rough
    plan for sizing a grid, not a promise (other load on the machine changes it)."""
    total = 0.0
    for s in specs:
        cfg = s.config
        clipped = math.isfinite(cfg.get("epsilon", math.inf)) or cfg.get("clip_only", False)
        steps = cfg.get("rounds", 50) * cfg.get("local_steps", 1) * cfg.get("nodes", 6)
        total += RUN_S + steps * (CLIPPED_STEP_S if clipped else PLAIN_STEP_S)
    return total
