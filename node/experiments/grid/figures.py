"""The report's figures (matplotlib, Agg backend: no display needed).

`plot_panels` is laid out like the talk's figure: (a) no privacy, (b) privacy without
denoising, (c) privacy with denoising; the task's score (accuracy, or AUROC for a two-class
task) on top, dual norm below.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from node.experiments.grid.results import (
    Run,
    eps_name,
    group_runs,
    label,
    mean_curve,
    method_of,
    metric_name,
    metric_of,
    row_order,
)

CONTROL = "ecl-clipped"

PANELS = {
    "a": ("(a) no privacy", ["ecl", "dpsgd", "fedavg", "scaffold", "solo", "pooled",
                             "ecl-clipped", "dpsgd-clipped"]),
    "b": ("(b) privacy, no denoising", ["dp-ecl", "dp-ecl-grad", "dp-dpsgd", "fedavg",
                                        "scaffold", "solo"]),
    "c": ("(c) privacy with denoising", ["dpnorm-msg", "dpnorm-grad", "dp-ecl"]),
}


def plot_panels(runs: Sequence[Run], regime: str, eps: float, path: Path) -> Path | None:
    """One PNG like the talk's figure: columns (a)/(b)/(c), rows score and dual norm."""
    plt = _pyplot()

    groups = group_runs(r for r in runs if r.regime == regime)
    metric = metric_of(r for r in runs if r.regime == regime)
    # one colour per method in every panel and row (a panel's dual-norm row lacks the methods
    # without duals, so the default colour cycle would give one method two colours)
    colors = {k: f"C{i % 10}" for i, k in enumerate(row_order(k for (_, k, _) in groups))}
    fig, axes = plt.subplots(2, 3, figsize=(15, 8), sharex=True)
    drawn = False
    for col, (title, methods) in enumerate(PANELS.values()):
        panel_eps = math.inf if col == 0 else eps
        for (_reg, key, e), group in sorted(groups.items()):
            if e != panel_eps or method_of(key)[0] not in methods:
                continue
            dashed = col == 2 and key == "dp-ecl"  # the no-denoising baseline in panel (c)
            style = "--" if dashed or "clipped" in key else "-"
            drawn |= _plot_curves(axes[:, col], group, metric, style, label(key),
                                  color=colors[key])
        control = groups.get((regime, CONTROL, math.inf))
        if col > 0 and control:  # the noise-free level that privacy is measured against
            _plot_curves(axes[:, col], control, metric, ":", label(CONTROL), color="grey")
        axes[0][col].set_title(f"{title}, ε = {eps_name(panel_eps)}")
    for col in range(3):
        axes[0][col].set_ylabel(f"test {metric_name(metric)} (%)")
        axes[1][col].set_ylabel("dual norm (RMS)")
        axes[1][col].set_xlabel("round")
        axes[1][col].set_yscale("log")
        for row in range(2):
            axes[row][col].grid(alpha=0.3)
            if axes[row][col].lines:
                axes[row][col].legend(fontsize="x-small")
    return _finish(fig, f"regime {regime}: mean over nodes and seeds", path if drawn else None)


def _plot_curves(column: Any, group: Sequence[Run], score: str, style: str, name: str,
                 **kw: Any) -> bool:
    drawn = False
    for row, metric in enumerate((score, "dual_norm")):
        xs, ys = mean_curve(group, metric)
        if xs:
            scale = 100.0 if metric == score else 1.0
            column[row].plot(xs, [scale * y for y in ys], style, label=name, **kw)
            drawn = True
    return drawn


# What the ε-summary figure draws: the score of these methods, dual norm of the ones with duals.
SUMMARY_ACCURACY = ("dpnorm-msg", "dpnorm-grad", "dp-ecl", "dp-ecl-grad", "dp-dpsgd", "fedavg",
                    "solo")
SUMMARY_DUALS = ("dpnorm-msg", "dpnorm-grad", "dp-ecl", "dp-ecl-grad")


def plot_vs_epsilon(runs: Sequence[Run], regime: str, path: Path) -> Path | None:
    """Final score and final dual norm against ε, one line per method (± std over seeds),
    with the clipped noise-free control and pooled training as horizontal references."""
    plt = _pyplot()

    groups = group_runs(r for r in runs if r.regime == regime)
    name = metric_name(metric_of(r for r in runs if r.regime == regime))
    keys = sorted({k for (_, k, e) in groups if math.isfinite(e)})
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 5.5))
    drawn = False
    for key in keys:
        method = method_of(key)[0]
        for ax, wanted, value in ((left, SUMMARY_ACCURACY, _score),
                                  (right, SUMMARY_DUALS, _final_dual_norm)):
            if method not in wanted:
                continue
            points = sorted((e, [value(r) for r in g]) for (_, k, e), g in groups.items()
                            if k == key and math.isfinite(e))
            points = [(e, [v for v in vs if math.isfinite(v)]) for e, vs in points]
            points = [(e, vs) for e, vs in points if vs]
            if not points:
                continue
            xs = [e for e, _ in points]
            means = [statistics.fmean(vs) for _, vs in points]
            stds = [statistics.stdev(vs) if len(vs) > 1 else 0.0 for _, vs in points]
            ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=label(key),
                        linestyle="--" if method in ("dp-ecl", "dp-ecl-grad") else "-")
            drawn = True
    for ax, value, refs in ((left, _score, (CONTROL, "pooled")),
                            (right, _final_dual_norm, (CONTROL,))):
        for ref in refs:
            group = groups.get((regime, ref, math.inf))
            if group:
                ax.axhline(statistics.fmean(value(r) for r in group), color="grey",
                           linestyle=":" if ref == CONTROL else "-.", label=label(ref))
        ax.set_xscale("log")
        ticks = sorted({e for (_, _, e) in groups if math.isfinite(e)})
        if ticks:
            ax.set_xticks(ticks, [eps_name(e) for e in ticks])
            ax.minorticks_off()
        ax.set_xlabel("ε (δ as configured)")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize="x-small")
    left.set_ylabel(f"final test {name} (%), mean over nodes")
    right.set_ylabel("final dual norm (RMS)")
    right.set_yscale("log")
    return _finish(fig, f"regime {regime}: privacy against {name} and dual norm "
                   "(± std over seeds)", path if drawn else None)


def _score(run: Run) -> float:
    return 100 * run.mean_score()


def _final_dual_norm(run: Run) -> float:
    ys = run.curve("dual_norm")[1]
    return ys[-1] if ys else math.nan


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server or in CI
    import matplotlib.pyplot as plt

    return plt


def _finish(fig: Any, title: str, path: Path | None) -> Path | None:
    """Title, lay out, save to `path` (None: nothing was drawn, write no file), free."""
    fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=80)
    _pyplot().close(fig)
    return path
