"""Figures and tables from an experiment directory written by `node.experiments.grid`.

    from node.experiments.studies.report import write_report
    write_report("runs/quick")                 # → runs/quick/report/REPORT.md + PNGs

Reads only finished runs (`DONE`), so it can be run on a grid that is still going. A score is
the final test value of each node of the metric its task leads with (accuracy, or AUROC for a
two-class task: summary.json's `metric`), in %; "mean ± std" is over nodes and seeds together.
ε spent is the largest ε any node of any seed reported (the accountant's PLD value, a proven
upper bound).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from node.experiments.grid import (
    CONTROLS,
    METHODS,
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
    plot_panels,
    plot_vs_epsilon,
    pooled_scores,
    row_order,
    score_of,
)
from node.experiments.studies.answers import answers
from node.experiments.studies.winners import contrasts_table, winners_table
from node.outputs.files import RunDir, read_metrics


def _pct(metric: str) -> str:
    """The unit after a score in prose: "61.0%", or "91.2% AUROC"."""
    return "%" if metric == "accuracy" else f"% {metric_name(metric)}"


def _regime_metric(runs: Sequence[Run], regime: str) -> str:
    return metric_of(r for r in runs if r.regime == regime)


def score_table(runs: Sequence[Run], regime: str) -> str:
    """Markdown: method × ε → final score (mean ± std over nodes and seeds) and ε spent."""
    groups = group_runs(r for r in runs if r.regime == regime)
    epsilons = sorted({e for (_, _, e) in groups}, key=lambda e: -e)
    keys = row_order(k for (_, k, _) in groups)
    head = "| method | " + " | ".join(f"ε = {eps_name(e)}" for e in epsilons) + " |"
    lines = [head, "|---|" + "---|" * len(epsilons)]
    for key in keys:
        cells = []
        for eps in epsilons:
            group = groups.get((regime, key, eps), [])
            if not group:
                cells.append("")
                continue
            spent = max_eps(group)
            cell = mean_std(pooled_scores(group))
            cell += f" (n={len(group)}, ε̂={spent:.2f})" if spent is not None else \
                f" (n={len(group)})"
            cells.append(cell)
        lines.append(f"| {label(key)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)



def denoising_pairs(runs: Sequence[Run], regime: str) -> str:
    """Seed-paired Δ score and dual-norm ratio of γ > 0 against γ = 0 (same seeds)."""
    metric = _regime_metric(runs, regime)
    short = "acc" if metric == "accuracy" else metric_name(metric)
    base_of = {"dpnorm-msg": "dp-ecl", "dpnorm-grad": "dp-ecl-grad"}
    by: dict[tuple[str, float, int], Run] = {}
    for r in runs:
        if r.regime == regime:
            by[(r.key, r.epsilon, r.seed)] = r
    lines = [f"| method | ε | seeds | Δ {short} (pts, mean ± std over seeds) | seeds improved | "
             "final dual norm γ / γ=0 |", "|---|---|---|---|---|---|"]
    rows = 0
    for (key, eps, _seed) in sorted({(k, e, 0) for (k, e, _) in by}):
        method = method_of(key)[0]
        if method not in base_of:
            continue
        pairs = [(r, by[(base_of[method], eps, s)]) for (k, e, s), r in by.items()
                 if k == key and e == eps and (base_of[method], eps, s) in by]
        if not pairs:
            continue
        deltas = [100 * (a.mean_score() - b.mean_score()) for a, b in pairs]
        ratios = []
        for a, b in pairs:
            da, db = a.curve("dual_norm")[1], b.curve("dual_norm")[1]
            if da and db and db[-1] > 0:
                ratios.append(da[-1] / db[-1])
        spread = statistics.stdev(deltas) if len(deltas) > 1 else 0.0
        ratio = f"{statistics.fmean(ratios):.3g}" if ratios else "–"
        lines.append(f"| {label(key)} | {eps_name(eps)} | {len(pairs)} | "
                     f"{statistics.fmean(deltas):+.2f} ± {spread:.2f} | "
                     f"{sum(d > 0 for d in deltas)}/{len(deltas)} | {ratio} |")
        rows += 1
    return "\n".join(lines) if rows else "_no paired runs (need dp-ecl and dpnorm at equal ε)_"


def federation_vs_solo(runs: Sequence[Run], regime: str) -> str:
    groups = group_runs(r for r in runs if r.regime == regime)
    solo = groups.get((regime, "solo", math.inf), [])
    if not solo:
        return "_no solo run at ε = ∞_"
    methods = [k for k in ("ecl", "dpsgd", "fedavg", "scaffold", "pooled")
               if groups.get((regime, k, math.inf))]

    def per_node(group: Sequence[Run]) -> dict[int, float]:
        acc: dict[int, list[float]] = defaultdict(list)
        for r in group:
            for node, a in r.final_scores().items():
                acc[node].append(a)
        return {n: statistics.fmean(v) for n, v in acc.items()}

    solo_nodes = per_node(solo)
    others = {k: per_node(groups[(regime, k, math.inf)]) for k in methods}
    head = "| node | solo | " + " | ".join(label(k) for k in methods) + " | ECL − solo |"
    lines = [head, "|---|---|" + "---|" * len(methods) + "---|"]
    for node in sorted(solo_nodes):
        cells = []
        for k in methods:
            value = others[k].get(node, others[k].get(0))  # pooled has one site, node 0
            cells.append(f"{100 * value:.1f}" if value is not None else "")
        ecl = others.get("ecl", {}).get(node)
        gain = f"{100 * (ecl - solo_nodes[node]):+.1f}" if ecl is not None else ""
        lines.append(f"| {node} | {100 * solo_nodes[node]:.1f} | " + " | ".join(cells) +
                     f" | {gain} |")
    return "\n".join(lines)


def gap_to_pooled(runs: Sequence[Run], regime: str) -> str:
    groups = group_runs(r for r in runs if r.regime == regime)
    pooled = groups.get((regime, "pooled", math.inf))
    if not pooled:
        return "_no pooled run_"
    metric = _regime_metric(runs, regime)
    ref = score_of(pooled)
    lines = [f"Pooled (ε = ∞): {100 * ref:.1f}{_pct(metric)}.", "",
             f"| method | ε | {metric_name(metric)} | gap to pooled (pts) |", "|---|---|---|---|"]
    for (_, key, eps), group in sorted(groups.items(), key=lambda kv: (-kv[0][2], kv[0][1])):
        if key == "pooled":
            continue
        acc = score_of(group)
        lines.append(f"| {label(key)} | {eps_name(eps)} | {100 * acc:.1f} | "
                     f"{100 * (acc - ref):+.1f} |")
    return "\n".join(lines)


def privacy_cost(runs: Sequence[Run], regime: str) -> str:
    """Score lost to privacy at each ε, against the same family's clipped noise-free run."""
    groups = group_runs(r for r in runs if r.regime == regime)
    score = metric_name(_regime_metric(runs, regime))
    lines = [f"| method | ε | {score} | control | control {score} | cost (pts) |",
             "|---|---|---|---|---|---|"]
    for (_, key, eps), group in sorted(groups.items(), key=lambda kv: (kv[0][1], -kv[0][2])):
        method = METHODS.get(method_of(key)[0])
        if method is None or math.isinf(eps):
            continue
        control_key = CONTROLS.get(method.family)
        # references have no decentralised control: their own non-private run, which also
        # differs by clipping (say so in the column)
        control_key = control_key or method.name
        control = groups.get((regime, control_key, math.inf))
        if not control:
            continue
        acc = score_of(group)
        ref = score_of(control)
        name = label(control_key) + ("" if control_key in CONTROLS.values() else " (unclipped)")
        lines.append(f"| {label(key)} | {eps_name(eps)} | {100 * acc:.1f} | {name} | "
                     f"{100 * ref:.1f} | {100 * (ref - acc):+.1f} |")
    return "\n".join(lines)


def time_breakdown(daemon_run: str | Path) -> str:
    """Compute / communication & overhead / waiting per node of a launch_local.py run."""
    root = Path(daemon_run)
    lines = ["| node | rounds | compute s/round | communication & overhead s/round | "
             "waiting s/round | round s | compute % | comm % | wait % |",
             "|---|---|---|---|---|---|---|---|---|"]
    found = 0
    for _, path in sorted(RunDir(root).metrics_files().items(), key=lambda kv: str(kv[0])):
        records = [r for r in read_metrics(path) if r.get("round_seconds") is not None]
        if not records:
            continue
        found += 1
        n = len(records)
        compute = sum(float(r.get("compute_seconds") or 0.0) for r in records) / n
        wait = sum(float(r.get("wait_seconds") or 0.0) for r in records) / n
        total = sum(float(r["round_seconds"]) for r in records) / n
        comm = max(total - compute - wait, 0.0)
        shares = [100 * x / total if total > 0 else math.nan for x in (compute, comm, wait)]
        lines.append(f"| {path.parent.name} | {n} | {compute:.4f} | {comm:.4f} | {wait:.4f} | "
                     f"{total:.4f} | " + " | ".join(f"{s:.0f}" for s in shares) + " |")
    if not found:
        return f"_no `<node>/metrics.jsonl` with round timings under {root}_"
    return "\n".join(lines) + (
        "\n\nCompute is the local training step(s); waiting is the time a node spent waiting "
        "for its neighbours' messages after sending its own; communication & overhead is the "
        "rest of the round (encoding and sending, absorbing, evaluation, metrics, checkpoints).")


def claims(runs: Sequence[Run], regime: str) -> list[str]:
    """The issue's four claims, checked against the measured numbers (whatever they say)."""
    groups = group_runs(r for r in runs if r.regime == regime)
    metric = _regime_metric(runs, regime)
    pct = _pct(metric)

    def acc(key: str, eps: float) -> float | None:
        return cell_score(groups, regime, key, eps)

    def duals(key: str, eps: float) -> str | None:
        """Final dual norm and its growth from the quarter-way round to the end."""
        g = groups.get((regime, key, eps))
        ys = mean_curve(g, "dual_norm")[1] if g else []
        if len(ys) < 4 or ys[len(ys) // 4] <= 0:
            return None
        return f"{label(key)} {ys[-1]:.3g} ({ys[-1] / ys[len(ys) // 4]:.2f}×)"

    out = []
    eps_private = sorted({e for (_, _, e) in groups if math.isfinite(e)}, reverse=True)
    gammas = sorted({k for (_, k, _) in groups if k.startswith("dpnorm-msg")})
    control = duals("ecl-clipped", math.inf)
    for eps in eps_private:
        keys = ["dp-ecl", *gammas, "dp-ecl-grad",
                *sorted(k for (_, k, e) in groups if e == eps and k.startswith("dpnorm-grad"))]
        parts = [text for k in keys if (text := duals(k, eps)) is not None]
        out.append(f"1. ε = {eps_name(eps)}: final dual norm (last / quarter-way round): " +
                   ", ".join(parts) + (f"; noise-free control {control}" if control else ""))
    for eps in eps_private:
        d = acc("dp-dpsgd", eps)
        pd = {k: a for k in ["dp-ecl", *gammas] if (a := acc(k, eps)) is not None}
        if d is None or not pd:
            continue
        verdict = all(a > d for a in pd.values())
        out.append(f"2. ε = {eps_name(eps)}: DP-D-PSGD {100 * d:.1f}{pct} vs " +
                   ", ".join(f"{label(k)} {100 * a:.1f}{pct}" for k, a in pd.items()) +
                   f" → primal-dual {'better' if verdict else 'NOT all better'}")
    ecl, dps, solo, pooled = (acc(k, math.inf) for k in ("ecl", "dpsgd", "solo", "pooled"))
    if ecl is not None:
        bits = [f"ECL {100 * ecl:.1f}{pct}"]
        for name, v in (("D-PSGD", dps), ("solo", solo), ("pooled", pooled)):
            if v is not None:
                bits.append(f"{name} {100 * v:.1f}{pct}")
        verdicts = []
        if dps is not None:
            verdicts.append("beats D-PSGD" if ecl > dps else "does NOT beat D-PSGD")
        if solo is not None:
            verdicts.append("beats solo" if ecl > solo else "does NOT beat solo")
        if pooled is not None:
            verdicts.append("within 3 pts of pooled" if pooled - ecl <= 0.03
                            else f"{100 * (pooled - ecl):.1f} pts below pooled")
        out.append("3. no DP: " + ", ".join(bits) + " → ECL " + "; ".join(verdicts))
    out.append(f"4. denoising: see the seed-paired table (Δ {metric_name(metric)} of γ > 0 vs "
               "γ = 0).")
    return out


def _auroc_note(runs: Sequence[Run]) -> str:
    """The intro's word on the regimes that lead with AUROC (none: nothing)."""
    regimes = sorted({r.regime for r in runs if r.metric == "auroc"})
    if not regimes:
        return ""
    return (f" Regime{'s' if len(regimes) > 1 else ''} {', '.join(f'`{g}`' for g in regimes)} "
            f"lead{'' if len(regimes) > 1 else 's'} with AUROC instead (a two-class task, or "
            "metric = auroc): final test AUROC in %, macro one-vs-rest beyond two classes.")


def write_report(root: str | Path | Sequence[str | Path], out: str | Path | None = None,
                 daemon_run: str | Path | None = None) -> Path:
    """Write REPORT.md and one PNG per (regime, private ε); returns the Markdown file.

    Several roots are read as one experiment (e.g. a grid plus extra seeds of a few cells);
    the table's n says how many seeds each cell has.
    """
    roots = [Path(root)] if isinstance(root, str | Path) else [Path(r) for r in root]
    runs = [run for r in roots for run in load_runs(r)]
    target = Path(out) if out is not None else roots[0] / "report"
    target.mkdir(parents=True, exist_ok=True)
    regimes = sorted({r.regime for r in runs})
    doc = [f"# Experiment report: {', '.join(str(r) for r in roots)}", "",
           f"{len(runs)} finished runs. Accuracy: final test accuracy in %, mean ± std over "
           "nodes and seeds; n = number of seeds; ε̂ = the largest ε any node spent (PLD "
           "accountant, δ as configured)." + _auroc_note(runs), ""]
    for regime in regimes:
        regime_runs = [r for r in runs if r.regime == regime]
        name = metric_name(metric_of(regime_runs))
        cfg = regime_runs[0].summary.get("config", {})
        doc += [f"## Regime `{regime}`", "",
                f"model {cfg.get('model')}, dataset {cfg.get('dataset')}, partition "
                f"{cfg.get('partition')}, {cfg.get('nodes')} nodes on a {cfg.get('topology')}, "
                f"{cfg.get('rounds')} rounds, examples per node "
                f"{cfg.get('examples_per_node') or 'all'}, δ = {cfg.get('delta')}.", "",
                f"### Final {name} (method × ε)", "", score_table(runs, regime), "",
                "### Figures", ""]
        private = sorted({r.epsilon for r in regime_runs if math.isfinite(r.epsilon)},
                         reverse=True) or [math.inf]
        summary_png = plot_vs_epsilon(runs, regime, target / f"{regime}_vs-eps.png")
        if summary_png is not None:
            doc += [f"![{regime}: {name} and dual norm against ε]({summary_png.name})", ""]
        for eps in private:
            png = plot_panels(runs, regime, eps, target / f"{regime}_eps-{eps_name(eps)}.png")
            if png is not None:
                doc += [f"![{regime}, ε = {eps_name(eps)}]({png.name})", ""]
        doc += ["### Denoising, seed-paired (same seed and noise seed)", "",
                denoising_pairs(runs, regime), "",
                "### Claims, as measured", "", *claims(runs, regime), "",
                "### Pre-validation", "", *answers(regime_runs)[1], "",
                "#### Federation vs solo, per node (ε = ∞)"
                + ("" if name == "accuracy" else f", {name} (%)"), "",
                federation_vs_solo(runs, regime), "", "#### Gap to pooled", "",
                gap_to_pooled(runs, regime), "", "#### Privacy cost per ε (against the clipped, "
                "noise-free control)", "", privacy_cost(runs, regime), ""]
    if any(r.spec.get("tuned") for r in runs):  # a tuned grid (node.experiments.grid.tuning)
        doc += ["## Which algorithm: winners per cell (decentralised methods, tuned on a "
                "validation split, seed-paired margins)", "", winners_table(runs), "",
                "Seed-paired contrasts (points; best line of each side):", "",
                contrasts_table(runs), ""]
    doc += ["## Time breakdown (daemon run)", ""]
    doc += [time_breakdown(daemon_run) if daemon_run is not None else
            "_not given: pass `--daemon-run DIR` (a `scripts/launch_local.py` output "
            "directory)._", ""]
    path = target / "REPORT.md"
    path.write_text("\n".join(doc), encoding="utf-8")
    return path
