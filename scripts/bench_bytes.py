"""Bytes to accuracy with compressed messages: each compressor against none, on the same seeds.

    python scripts/bench_bytes.py [--quick] --out DIR

For each family (DP-Norm/ECL, D-PSGD), without DP and with ε = 4, and each compressor, one
simulated run (6-node ring, logistic regression on Fashion-MNIST shards). Writes
`DIR/bytes.json`, one row per run:

    family, epsilon, compress, final_accuracy (mean over nodes), bytes_per_node (bytes a node
    sent in the whole run, encoded frames with headers), bytes_to_target (bytes a node had sent
    when the mean accuracy first reached the uncompressed run's final accuracy minus 1 point;
    null if never), curve ([[bytes_per_node, accuracy], ...] at every evaluation)

and `DIR/bytes.png`, accuracy against bytes per node. `--quick` stays under 10 minutes on two
cores. Compression happens after the DP noise, so every run of one family and ε prints the same
ε (checked here too).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from node.cli import guarded
from node.config import RunConfig
from node.outputs.files import read_metrics
from node.sim.simulate import simulate

FAMILIES = {"dpnorm/ecl": ("ecl", "dpnorm"), "dpsgd": ("dpsgd", "dpsgd")}  # (no DP, DP)
QUICK = ["none", "int8", "int4", "topk:0.05:float16", "topk:0.02:float16", "randk:0.1:float16"]
FULL = [*QUICK, "topk:0.1", "randk:0.05"]
EPSILONS = (math.inf, 4.0)


def base_config(quick: bool, data_dir: str | None) -> dict[str, Any]:
    cfg: dict[str, Any] = dict(
        topology="ring", nodes=6, dataset="fashion-mnist", model="logreg", lr=0.1,
        batch_size=32, rounds=80 if quick else 200, examples_per_node=1000 if quick else 2000,
        test_examples=1000 if quick else 2000, eval_every=5, primal_every=0, seed=0)
    if data_dir:
        cfg["data_dir"] = data_dir
    return cfg


def run_one(cfg: RunConfig) -> dict[str, Any]:
    """Final accuracy, bytes per node and the (bytes, accuracy) curve of one simulated run."""
    with tempfile.TemporaryDirectory() as tmp:
        report = simulate(cfg, tmp)
        per_node = [read_metrics(Path(tmp) / str(i) / "metrics.jsonl") for i in range(cfg.nodes)]
    curve = []
    for records in zip(*per_node, strict=True):
        accs = [r["accuracy"] for r in records]
        if all(a is not None for a in accs):
            sent = sum(r["bytes_sent"] for r in records) / len(records)
            curve.append([sent, sum(accs) / len(accs)])
    sent = sum(n["bytes_sent"] for n in report["nodes"].values()) / cfg.nodes
    return {"final_accuracy": report["mean_accuracy"], "bytes_per_node": sent, "curve": curve,
            "epsilon_printed": report["max_epsilon"]}


def bytes_to(curve: list[list[float]], target: float) -> float | None:
    return next((b for b, acc in curve if acc >= target), None)


def bench(quick: bool, data_dir: str | None, compressors: list[str]) -> list[dict[str, Any]]:
    rows = []
    base = base_config(quick, data_dir)
    for family, algorithms in FAMILIES.items():
        for eps, algorithm in zip(EPSILONS, algorithms, strict=True):
            runs: dict[str, dict[str, Any]] = {}
            for comp in compressors:
                t0 = time.time()
                cfg = RunConfig(**base, algorithm=algorithm, epsilon=eps, compress=comp)
                runs[comp] = run_one(cfg)
                print(f"{family:10s} eps={eps:<4} {comp:18s} acc {runs[comp]['final_accuracy']:.4f}"
                      f"  {runs[comp]['bytes_per_node'] / 1e6:7.3f} MB/node "
                      f"({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
            target = runs["none"]["final_accuracy"] - 0.01
            printed = {json.dumps(r["epsilon_printed"]) for r in runs.values()}
            assert len(printed) == 1, f"compression changed the printed epsilon: {printed}"
            for comp, r in runs.items():
                rows.append({"family": family, "algorithm": algorithm,
                             "epsilon": None if math.isinf(eps) else eps, "compress": comp,
                             "final_accuracy": r["final_accuracy"],
                             "bytes_per_node": r["bytes_per_node"],
                             "bytes_to_target": bytes_to(r["curve"], target),
                             "target_accuracy": target, "epsilon_printed": r["epsilon_printed"],
                             "curve": r["curve"]})
    return rows


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["family"], r["epsilon"] or math.inf) for r in rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (family, eps) in zip(axes[0], panels, strict=True):
        for r in rows:
            if (r["family"], r["epsilon"] or math.inf) == (family, eps) and r["curve"]:
                xs, ys = zip(*r["curve"], strict=True)
                ax.plot([x / 1e6 for x in xs], ys, marker=".", label=r["compress"])
        ax.set_xscale("log")
        ax.set_title(f"{family}, ε = {eps:g}")
        ax.set_xlabel("MB sent per node")
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small runs, under 10 minutes")
    parser.add_argument("--out", required=True, help="directory for bytes.json and bytes.png")
    parser.add_argument("--data-dir", default=None, help="Fashion-MNIST directory")
    parser.add_argument("--compress", nargs="*", default=None,
                        help="compressors to compare with none (default: a fixed set)")
    args = parser.parse_args()
    compressors = ["none", *[c for c in (args.compress or []) if c != "none"]] \
        if args.compress else (QUICK if args.quick else FULL)
    for c in compressors:
        guarded(lambda c=c: RunConfig(compress=c))  # a bad compressor: one sentence, exit 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    rows = guarded(lambda: bench(args.quick, args.data_dir, compressors))
    (out / "bytes.json").write_text(json.dumps(
        {"quick": args.quick, "seconds": round(time.time() - started), "rows": rows}, indent=1))
    plot(rows, out / "bytes.png")
    for r in rows:
        ratio = None
        none = next(x for x in rows if (x["family"], x["epsilon"], x["compress"]) ==
                    (r["family"], r["epsilon"], "none"))
        if r["bytes_to_target"] and none["bytes_to_target"]:
            ratio = none["bytes_to_target"] / r["bytes_to_target"]
        print(json.dumps({k: r[k] for k in ("family", "epsilon", "compress", "final_accuracy",
                                            "bytes_per_node", "bytes_to_target")}
                         | {"bytes_to_target_ratio": ratio}))


if __name__ == "__main__":
    main()
