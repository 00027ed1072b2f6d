"""Pre-validation on your own data: simulate N sites from one file before asking partners in.

    from node.experiments.prevalidate import Question, plan, write_prevalidation
    specs = plan(Question(data="table.csv", sites=4, epsilons=(4.0,)))
    run_grid(specs, "runs/pv"); write_prevalidation("runs/pv")   # → runs/pv/REPORT.md

One file (e.g. one hospital's table) is split into plausible sites by a partition; every site
trains alone (solo), with the others (DP-Norm, DP-D-PSGD, and without privacy ECL and D-PSGD),
or all data sits on one site (pooled). The report answers, one line each and from the run's own
numbers: does federating beat training alone (per site), how far is it from pooling, what does
privacy cost per ε, which algorithm to use, and what a round would cost a real deployment of that
model (bytes per round and an estimate of its time on a LAN and a WAN link).

The metric is the one the task uses: AUROC for a two-class task, accuracy otherwise (summary.json
`metric`). Runs go through the experiment grid (`node.experiments.grid`), so they resume, run in
parallel and land in the usual files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.config import RunConfig
from node.core.assemble import Federation, build_graph, load_data, shards
from node.errors import ConfigError
from node.experiments.grid import Preset, RunSpec, build_grid
from node.experiments.prevalidation_answers import (
    answers,
    deployment,
    measured_recommendation,
    per_site_table,
    plot,
)
from node.experiments.results import load_runs, metric_name

INF = math.inf


@dataclass(frozen=True)
class Question:
    """What the user asks: their file, how to cut it into sites, the model and the ε values."""

    data: str
    sites: int = 4
    partition: str = "iid"
    model: str = "logreg"
    epsilons: tuple[float, ...] = (8.0, 4.0, 1.0)
    quick: bool = False
    seeds: tuple[int, ...] | None = None
    rounds: int | None = None
    label_column: str = "label"
    topology: str = "ring"
    lr: float = 0.1

    def preset(self) -> Preset:
        if any(not (e > 0 and math.isfinite(e)) for e in self.epsilons):
            raise ConfigError("every --epsilon must be a positive finite number (ε = ∞ runs "
                              "anyway, as the no-privacy reference).")
        if self.sites < 2:
            raise ConfigError(f"--sites must be at least 2, got {self.sites}.")
        rounds = self.rounds or (40 if self.quick else 150)
        base = dict(topology=self.topology, nodes=self.sites, model=self.model,
                    dataset=self.data, label_column=self.label_column, standardise="public",
                    partition=self.partition, rounds=rounds, lr=self.lr, batch_size=32,
                    clip=1.0, delta=1e-5, test_examples=None, eval_every=max(rounds // 10, 1),
                    primal_every=0)
        epsilons = tuple(sorted(set(self.epsilons), reverse=True))
        return Preset(
            name="prevalidate", base=base, regimes={"sites": {}},
            methods=("solo", "ecl", "dpsgd", "pooled", "ecl-clipped", "dpsgd-clipped",
                     "dpnorm-msg", "dp-dpsgd"),
            epsilons=(INF, *epsilons), gammas=(0.1,),
            seeds=self.seeds or ((0,) if self.quick else (0, 1, 2)),
            # Clipped gradients are at most C long, so private and control runs take a larger
            # step (the experiment grid's choice, made on the noise-free control).
            clipped={"lr": 10 * self.lr})


def plan(question: Question) -> list[RunSpec]:
    """Every run the question needs, each config checked before anything starts."""
    specs = build_grid(question.preset())
    for spec in specs:
        spec.run_config()
    return specs


def write_prevalidation(root: str | Path, out: str | Path | None = None) -> Path:
    """REPORT.md (+ one PNG) from the finished runs under `root`; returns the Markdown file."""
    runs = load_runs(root)
    target = Path(out) if out is not None else Path(root)
    target.mkdir(parents=True, exist_ok=True)
    metric, lines = answers(runs)
    cfg: dict[str, Any] = runs[0].summary.get("config", {}) if runs else {}
    name = metric_name(metric)
    seeds = sorted({r.seed for r in runs})
    png = plot(runs, metric, target / "prevalidation.png")
    doc = ["# Pre-validation report", "",
           f"Data `{cfg.get('dataset')}` split into {cfg.get('nodes')} sites by "
           f"`{cfg.get('partition')}` on a {cfg.get('topology')}; model `{cfg.get('model')}`, "
           f"{cfg.get('rounds')} rounds, seeds {', '.join(map(str, seeds))}; "
           f"{len(runs)} finished runs. Metric: final test {name} (the task's: "
           f"{'two classes' if metric == 'auroc' else 'accuracy unless two classes'}), mean "
           "over sites and seeds; differences are in points (× 100).", "",
           "## Answers", "", *lines, *measured_recommendation(runs), "",
           "## What a deployment would pay per round", "",
           *deployment(runs), "", "## Per site", "", per_site_table(runs, metric), ""]
    if png is not None:
        doc += [f"![{name} per site and against ε]({png.name})", ""]
    doc += ["## Caveats", "",
            "- Sites here are cut from one file by a partition; real sites differ in ways a "
            "partition only imitates. The ε is what each site of a real deployment with these "
            "settings would spend on rows of its own; it does not cover one row of the pooled "
            "file, whose split into sites (and scaling) here depends on all its rows. The runs "
            "themselves read the file directly and released nothing.",
            "- Features are scaled in every run by the whole file's mean and std "
            "(`standardise = public`), standing for constants published with your data's "
            "schema: a private site must not fit its scaling on its own rows (the ε would not "
            "cover it), so ε = ∞ and private runs are scaled alike and differ by privacy only.",
            "- Choosing settings by looking at results on private data has a privacy cost the "
            "reported ε does not include; tune on public data or on the noise-free controls.",
            ""]
    path = target / "REPORT.md"
    path.write_text("\n".join(doc), encoding="utf-8")
    return path


def check(question: Question) -> RunConfig:
    """Read the file, cut it into sites and build the model once, so that a bad file, model
    or partition is one sentence before any run starts; returns the first run's config."""
    cfg = plan(question)[0].run_config()
    data = load_data(cfg)
    shards(cfg, data)
    Federation.of(cfg, build_graph(cfg), data)
    return cfg
