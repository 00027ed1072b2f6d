"""PNG plots of a run directory (launch_local, simulate or the demo): one line per node.

    from node.experiments.grid.plots import plot_run
    plot_run("runs/demo")        # writes runs/demo/accuracy.png, dual_norm.png, loss.png

Reads only `<dir>/<id>/metrics.jsonl`, so it works on any run, finished or not. Rounds where a
metric is null (accuracy on rounds that were not evaluated, dual norm of D-PSGD, AUROC of a task
that computes none) are skipped; a metric null everywhere gets no file, so auroc.png and
balanced_accuracy.png appear for two-class tasks (or metric = auroc) only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from node.outputs.files import RunDir, read_metrics

PLOTS = {
    "accuracy": ("test accuracy", 100.0, "accuracy (%)"),
    "auroc": ("test AUROC", 100.0, "AUROC (%)"),
    "balanced_accuracy": ("test balanced accuracy", 100.0, "balanced accuracy (%)"),
    "dual_norm": ("dual norm (RMS per coordinate)", 1.0, "dual norm"),
    "loss": ("local training loss", 1.0, "loss"),
}


def load_run(run_dir: str | Path) -> dict[int, list[dict[str, Any]]]:
    """Every node's metrics records, by node id."""
    files = RunDir(Path(run_dir)).metrics_files()
    return {i: read_metrics(path) for i, path in sorted(files.items())}


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None,
             metrics: tuple[str, ...] = tuple(PLOTS)) -> list[Path]:
    """Write one PNG per metric that has any values; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed (CI, ssh, containers)
    import matplotlib.pyplot as plt

    runs = load_run(run_dir)
    target = Path(out_dir) if out_dir is not None else Path(run_dir)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for key in metrics:
        title, scale, label = PLOTS[key]
        fig, ax = plt.subplots(figsize=(7, 4.5))
        drawn, low, high = False, float("inf"), 0.0
        for node, records in runs.items():
            points = [(r["round"] + 1, r[key] * scale) for r in records if r.get(key) is not None]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="." if len(points) < 40 else None, label=f"node {node}")
                drawn, low, high = True, min(low, *ys), max(high, *ys)
        if drawn:
            ax.set(title=title, xlabel="round", ylabel=label)
            if key == "dual_norm" and low > 0 and high / low > 20:
                ax.set_yscale("log")  # an exploding dual norm spans orders of magnitude
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small", ncol=2)
            fig.tight_layout()
            path = target / f"{key}.png"
            fig.savefig(path, dpi=110)
            written.append(path)
        plt.close(fig)
    return written
