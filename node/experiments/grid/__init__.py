"""The grid engine: specifications of simulated runs and their resumable execution (`engine`),
where they execute (`executors`), the fair tuning protocol (`tuning`), loading finished runs
(`results`) and drawing them (`figures`, `plots`).

Rule 1: this `__init__` is the sub-room's door; the studies (`node.experiments.studies`),
scripts and tests import what they need from `node.experiments.grid`, never from a module
inside it.
Rule 2: it drives `node.sim` and reads `outputs`; it knows no study.
"""

from __future__ import annotations

from node.experiments.grid.engine import (
    CONTROLS,
    METHODS,
    Preset,
    RunSpec,
    build_grid,
    is_done,
    run_grid,
)
from node.experiments.grid.executors import ExecutorError, LocalExecutor, RayExecutor
from node.experiments.grid.figures import _finish, _pyplot, plot_panels, plot_vs_epsilon
from node.experiments.grid.plots import plot_run
from node.experiments.grid.results import (
    Run,
    cell_score,
    eps_name,
    group_runs,
    label,
    load_runs,
    max_eps,
    mean_curve,
    mean_std,
    method_of,
    metric_name,
    metric_of,
    pooled_scores,
    row_order,
    score_of,
)
from node.experiments.grid.tuning import Protocol, tuned_specs, tuning_specs

__all__ = [
    "CONTROLS",
    "METHODS",
    "ExecutorError",
    "LocalExecutor",
    "Preset",
    "Protocol",
    "RayExecutor",
    "Run",
    "RunSpec",
    "_finish",
    "_pyplot",
    "build_grid",
    "cell_score",
    "eps_name",
    "group_runs",
    "is_done",
    "label",
    "load_runs",
    "max_eps",
    "mean_curve",
    "mean_std",
    "method_of",
    "metric_name",
    "metric_of",
    "plot_panels",
    "plot_run",
    "plot_vs_epsilon",
    "pooled_scores",
    "row_order",
    "run_grid",
    "score_of",
    "tuned_specs",
    "tuning_specs",
]
