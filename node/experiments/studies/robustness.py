"""The robustness grid (`scripts/robustness.py`): every attack x {defence off, on} on a 6-node
ring with 1 Byzantine node and a 16-node torus with 2, with and without DP, in the simulator.

With DP the runs use gradient-mode privacy at the clipped step size (lr 1): in message mode at
this size (40 rounds, lr 0.05) the fault-free federation itself reaches only 48 %, too close to
chance for an attack's damage to be read off; gradient mode reaches 72 % at ε = 8.

Attackers are simulated in-process: each runs the honest node code and its outgoing messages
are rewritten before delivery (`Tamper`, the simulator's `tamper` hook) by the same attack
functions the hostile daemons use (node.adversary.attacks); label flipping poisons its shard
instead.
Attackers are omniscient (they read the models of the nodes they talk to), which is the strong
threat model. Each row is one run; `fault_free_accuracy` is the run with the same seed and the
same defence setting but no attacker, `honest_accuracy` the mean final accuracy of the honest
nodes. Attackers are placed (seeded) so that the honest subgraph stays connected.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np
import torch
from torch import Tensor

from node.adversary import ATTACKS, View, attack_message, fake_model, flipped_labels
from node.config import RunConfig
from node.core.algorithm import Gossip, PrimalDual
from node.core.assemble import build_graph
from node.core.data import Dataset, load_data
from node.core.runner import NodeRunner, RoundOutput
from node.sim.simulate import build_runners, simulate

# What the receivers accept (node.max_message_rms in the chaos runs): far above any honest
# message, so the attacks below are exactly what today's validation lets through.
BOUND = 10.0
DEFENCE = "clip+screen"


@dataclass(frozen=True)
class Setting:
    topology: str
    nodes: int
    byzantine: int


SETTINGS = (Setting("ring", 6, 1), Setting("torus", 16, 2))


def base_config(quick: bool, **changes: Any) -> RunConfig:
    rounds = 40 if quick else 80
    cfg = RunConfig(dataset="fashion-mnist", model="logreg", algorithm="dpnorm", lr=0.05,
                    batch_size=64, examples_per_node=600, test_examples=1000, rounds=rounds,
                    eval_every=rounds, primal_every=0, seed=0)
    return cfg.replace(**changes)


def place_attackers(graph: nx.Graph, count: int, seed: int) -> list[int]:
    """`count` nodes whose removal leaves the honest nodes connected (seeded choice)."""
    rng = random.Random(seed)
    nodes = sorted(graph.nodes)
    for _ in range(1000):
        chosen = sorted(rng.sample(nodes, count))
        rest = graph.subgraph(n for n in nodes if n not in chosen)
        if nx.is_connected(rest):
            return chosen
    raise ValueError("no placement keeps the honest nodes connected")


class Tamper:
    """Rewrites the attackers' outgoing messages each round (the simulator's `tamper`)."""

    def __init__(self, attack: str, attackers: Sequence[int], graph: nx.Graph, rounds: int):
        self.attack = attack
        self.attackers = set(attackers)
        self.graph = graph
        self.sleep_rounds = rounds // 2

    def __call__(self, rnd: int, outputs: list[RoundOutput | None],
                 runners: list[NodeRunner]) -> None:
        models = [r.setup.algorithm.w for r in runners]
        for a in self.attackers:
            out = outputs[a]
            if out is None:
                continue
            algorithm = runners[a].setup.algorithm
            heard = [models[k] for k in self.graph[a] if k not in self.attackers]
            for i, honest in list(out.duals.items()):
                if not isinstance(honest, Tensor) or i in self.attackers:
                    continue
                peers = [k for k in self.graph[i] if k not in self.attackers]
                bad = sum(1 for k in self.graph[i] if k in self.attackers)
                pull = sum((models[k] - models[i] for k in peers), models[i] * 0) / max(1, bad)
                view = View(rnd, algorithm.w, models[i], heard, pull)
                fake = fake_model(self.attack, view, sleep_rounds=self.sleep_rounds)
                if fake is None:
                    continue
                coefficient = 1.0
                if isinstance(algorithm, PrimalDual):
                    coefficient = -2.0 * algorithm.params.beta * algorithm.signs[i]
                assert isinstance(algorithm, PrimalDual | Gossip)
                out.duals[i] = attack_message(honest, fake, algorithm.w, coefficient, BOUND)


def one_run(cfg: RunConfig, data: Dataset, attack: str | None,
            attackers: Sequence[int]) -> dict[str, Any]:
    """One simulated federation; the honest nodes' mean accuracy and the screen's verdicts."""
    runners = build_runners(cfg, data)
    graph = build_graph(cfg)
    tamper = None
    if attack is not None:
        if attack == "label_flip":
            classes = int(data.num_classes)
            for a in attackers:
                trainer = runners[a].setup.trainer
                trainer.y = flipped_labels(trainer.y, classes)
        tamper = Tamper(attack, attackers, graph, cfg.rounds)
    simulate(cfg, None, runners=runners, tamper=tamper)
    bad = set(attackers) if attack is not None else set()
    honest = [r for r in runners if r.node not in bad]
    accuracies = [r.last_accuracy for r in honest if r.last_accuracy is not None]
    flagged = {j for r in honest for j in r.suspects()}
    return {"honest_accuracy": float(np.mean(accuracies)) if accuracies else math.nan,
            "flagged_attackers": len(flagged & bad),
            "flagged_honest": len(flagged - bad)}


def setting_config(quick: bool, algorithm: str, setting: Setting, epsilon: float,
                   **changes: Any) -> RunConfig:
    cfg = base_config(quick, algorithm=algorithm, topology=setting.topology,
                      nodes=setting.nodes, epsilon=epsilon, **changes)
    if math.isfinite(epsilon):  # gradient-mode DP at the clipped step size (module doc)
        return cfg.replace(lr=1.0, privacy_mode="gradient")
    return cfg.replace(lr=0.1) if algorithm == "dpsgd" else cfg


def one_block(quick: bool, algorithm: str, setting: Setting, epsilon: float, defence: str,
              attacks: Sequence[str], changes: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """The fault-free run and every attack for one (algorithm, setting, ε, defence)."""
    torch.set_num_threads(1)  # one core per worker: the pool is the parallelism
    started = time.perf_counter()
    cfg = setting_config(quick, algorithm, setting, epsilon, **changes).replace(robust=defence)
    data = load_data(cfg)
    attackers = place_attackers(build_graph(cfg), setting.byzantine, cfg.seed)
    clean = one_run(cfg, data, None, attackers)
    base = {"algorithm": algorithm, "topology": f"{setting.topology}-{setting.nodes}",
            "epsilon": None if math.isinf(epsilon) else epsilon, "defence": defence,
            "seed": cfg.seed,
            "attackers": attackers, "fault_free_accuracy": clean["honest_accuracy"]}
    rows = [{**base, "attack": "none", "byzantine": 0, **clean}]
    for attack in attacks:
        rows.append({**base, "attack": attack, "byzantine": setting.byzantine,
                     **one_run(cfg, data, attack, attackers)})
    line = (f"{algorithm} {setting.topology}-{setting.nodes} eps={epsilon} defence={defence} "
            f"seed={cfg.seed}: {time.perf_counter() - started:.0f} s")
    return rows, line


def grid(quick: bool, *, epsilons: Sequence[float] = (math.inf, 8.0),
         algorithms: Sequence[str] = ("dpnorm",), attacks: Sequence[str] = ATTACKS,
         seeds: Sequence[int] = (0,), jobs: int = 1, log: Callable[[str], None] = print,
         **changes: Any) -> list[dict[str, Any]]:
    """Every row of robustness.json (see the module doc), `jobs` blocks at a time."""
    blocks = [(quick, algorithm, setting, epsilon, defence, tuple(attacks),
               {**changes, "seed": seed})
              for seed in seeds for algorithm in algorithms for setting in SETTINGS
              for epsilon in epsilons for defence in ("off", DEFENCE)]
    # The torus blocks are the long ones: start them first so the pool ends together.
    order = sorted(range(len(blocks)), key=lambda k: -blocks[k][2].nodes)
    results: dict[int, list[dict[str, Any]]] = {}
    if jobs <= 1:
        for k in order:
            results[k], line = one_block(*blocks[k])
            log(line)
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = {k: pool.submit(one_block, *blocks[k]) for k in order}
            for k in order:
                results[k], line = futures[k].result()
                log(line)
    return [row for k in range(len(blocks)) for row in results[k]]


def _group(row: dict[str, Any]) -> tuple[str, str, float]:
    """(algorithm, topology, ε): one column pair of the table, one panel of the plot."""
    return row["algorithm"], row["topology"], row["epsilon"] or math.inf


def table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: honest accuracy (%, mean over seeds) per attack, defence off | on, one column
    pair per (algorithm, topology, ε); the first line is the fault-free accuracy."""
    keys = sorted({_group(r) for r in rows})
    attacks = ["none", *[a for a in ATTACKS if any(r["attack"] == a for r in rows)]]
    head = ["attack"] + [f"{alg} {top} ε={'∞' if math.isinf(e) else f'{e:g}'} off / on"
                         for alg, top, e in keys]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for attack in attacks:
        cells = [attack]
        for alg, top, e in keys:
            pair = []
            for defence in ("off", DEFENCE):
                match = [r["honest_accuracy"] for r in rows if _group(r) == (alg, top, e)
                         and r["attack"] == attack and r["defence"] == defence]
                pair.append(f"{100 * float(np.mean(match)):.1f}" if match else "–")
            cells.append(" / ".join(pair))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: Sequence[dict[str, Any]], path: Any) -> None:
    """One figure: honest accuracy minus fault-free, per attack, defence off vs on."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({_group(r) for r in rows})
    cols = min(4, len(groups))
    rows_n = math.ceil(len(groups) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(4 * cols, 3.6 * rows_n), sharey=True,
                             squeeze=False)
    for ax in axes.flat[len(groups):]:
        ax.set_visible(False)
    for ax, key in zip(axes.flat, groups, strict=False):
        mine = [r for r in rows if _group(r) == key]
        attacks = [a for a in ("none", *ATTACKS) if any(r["attack"] == a for r in mine)]
        for k, defence in enumerate(("off", DEFENCE)):
            gaps = [float(np.mean([100 * (r["honest_accuracy"] - r["fault_free_accuracy"])
                                   for r in mine if r["attack"] == a and r["defence"] == defence]
                                  or [math.nan]))
                    for a in attacks]
            ax.bar(np.arange(len(attacks)) + 0.4 * k - 0.2, gaps, 0.4, label=f"defence {defence}")
        ax.axhline(-2, color="grey", lw=0.8, ls="--")
        ax.set_xticks(range(len(attacks)), attacks, rotation=60, fontsize=7)
        eps = "∞" if math.isinf(key[2]) else f"{key[2]:g}"
        ax.set_title(f"{key[0]} {key[1]} ε={eps}", fontsize=9)
    for row in axes:
        row[0].set_ylabel("honest − fault-free (points)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
