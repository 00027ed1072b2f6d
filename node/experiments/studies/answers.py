"""The answers to the pre-validation questions (does federating beat training alone, how far
from pooling, what privacy costs, which algorithm), with their tables and figure, from the
finished runs: the one `answers` both the pre-validation report
(`node.experiments.studies.prevalidate`) and the experiment report
(`node.experiments.studies.report`, per regime) print.

Scores are the task's metric per site (`Run.metric`: AUROC for two classes, else accuracy),
grouped per (method, ε) and seed, so that methods compare seed by seed.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from node.experiments.grid import Run, _finish, _pyplot, eps_name, label, metric_name, metric_of
from node.experiments.studies.winners import paired

INF = math.inf
# Federated methods compared per ε (the daemon's two families), and what each is measured
# against: its own family's clipped noise-free control.
FEDERATED = ("dpnorm-msg-g0.1", "dp-dpsgd")
CONTROL_OF = {"dpnorm-msg-g0.1": "ecl-clipped", "dp-dpsgd": "dpsgd-clipped"}
# Links for the deployment estimate: (name, bits per second, one-way latency in seconds).
LINKS = (("1 Gbit/s LAN, 0.5 ms", 1e9, 0.0005), ("10 Mbit/s WAN, 40 ms", 1e7, 0.040))


# ---------------------------------------------------------------------------------------------
# Reading the runs


def site_scores(run: Run, metric: str) -> dict[int, float]:
    out = {}
    for node, entry in run.summary["nodes"].items():
        value = entry.get(metric)
        if value is not None:
            out[int(node)] = float(value)
    return out


@dataclass(frozen=True)
class Cell:
    """One method at one ε: per seed, the per-site scores."""

    key: str
    epsilon: float
    by_seed: dict[int, dict[int, float]]

    def mean(self) -> float:
        values = [v for sites in self.by_seed.values() for v in sites.values()]
        return statistics.fmean(values) if values else math.nan

    def seed_means(self) -> dict[int, float]:
        return {s: statistics.fmean(v.values()) for s, v in self.by_seed.items() if v}

    def per_site(self) -> dict[int, float]:
        acc: dict[int, list[float]] = defaultdict(list)
        for sites in self.by_seed.values():
            for site, v in sites.items():
                acc[site].append(v)
        return {s: statistics.fmean(v) for s, v in sorted(acc.items())}


def cells(runs: Sequence[Run], metric: str) -> dict[tuple[str, float], Cell]:
    by: dict[tuple[str, float], dict[int, dict[int, float]]] = defaultdict(dict)
    for r in runs:
        by[(r.key, r.epsilon)][r.seed] = site_scores(r, metric)
    return {k: Cell(k[0], k[1], v) for k, v in by.items()}


# ---------------------------------------------------------------------------------------------
# The answers


def _pts(value: float) -> str:
    """A difference in points of the metric in % (AUROC too, as every report shows it)."""
    return f"{100 * value:+.1f} pts"


def _val(value: float) -> str:
    return f"{100 * value:.1f}%"


def _size(count: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.3g} {unit}"
    return f"{count:.0f} B"


def answers(runs: Sequence[Run]) -> tuple[str, list[str]]:
    """(metric, one line per question) from the finished runs."""
    metric = metric_of(runs)
    c = cells(runs, metric)
    name = metric_name(metric)
    epsilons = sorted({e for (_, e) in c if math.isfinite(e)}, reverse=True)
    out = []
    solo_inf = c.get(("solo", INF))
    # 1. federate or not, per site
    bits = []
    for eps in [INF, *epsilons]:
        fed, solo = c.get(("dpnorm-msg-g0.1" if math.isfinite(eps) else "ecl", eps)), \
            c.get(("solo", eps))
        if fed is None or solo is None:
            continue
        fs, ss = fed.per_site(), solo.per_site()
        wins = sum(fs[s] > ss[s] for s in fs if s in ss)
        bits.append(f"ε = {eps_name(eps)}: {label(fed.key)} beats training alone on "
                    f"{wins}/{len(ss)} sites ({_pts(fed.mean() - solo.mean())} on "
                    "average)")
    if bits:
        out.append(f"- **Does federating beat training alone?** {'; '.join(bits)}.")
    # 2. distance to pooling
    pooled = c.get(("pooled", INF))
    if pooled is not None:
        gaps = [f"{label(k)} at ε = {eps_name(e)} {_pts(cell.mean() - pooled.mean())}"
                for (k, e), cell in sorted(c.items(), key=lambda kv: (-kv[0][1], kv[0][0]))
                if k in ("ecl", "dpsgd", *FEDERATED)]
        out.append(f"- **How far from pooling all data?** Pooled {name} "
                   f"{_val(pooled.mean())}; " + ", ".join(gaps) + ".")
    # 3. privacy cost
    costs = []
    for key in FEDERATED:
        control = c.get((CONTROL_OF[key], INF))
        if control is None:
            continue
        per = [f"ε = {eps_name(e)} {_pts(cell.mean() - control.mean())}"
               for e in epsilons if (cell := c.get((key, e))) is not None]
        if per:
            costs.append(f"{label(key)} against its clipped noise-free control "
                         f"({_val(control.mean())}): " + ", ".join(per))
    if costs:
        out.append(f"- **What does privacy cost?** {'; '.join(costs)}.")
    # 4. which algorithm
    picks = []
    for eps in epsilons:
        a, b = c.get((FEDERATED[0], eps)), c.get((FEDERATED[1], eps))
        if a is None or b is None:
            continue
        mean, spread, wins, n = paired(a.seed_means(), b.seed_means())
        best, other = (a, b) if mean >= 0 else (b, a)
        solo = c.get(("solo", eps))
        note = ""
        if solo is not None and best.mean() <= solo.mean():
            note = " — but neither beats training alone here"
        picks.append(f"ε = {eps_name(eps)}: {label(best.key)} "
                     f"({_val(best.mean())} vs {_val(other.mean())}, "
                     f"{_pts(abs(mean))} ± {100 * spread:.1f} over {n} seed"
                     f"{'s' if n != 1 else ''}, ahead on "
                     f"{wins if mean >= 0 else n - wins}/{n}){note}")
    if picks:
        out.append(f"- **Which algorithm?** {'; '.join(picks)}.")
    if solo_inf is None and not out:
        out.append("- _no finished runs to answer from_")
    return metric, out


def measured_recommendation(runs: Sequence[Run], path: Path | None = None) -> list[str]:
    """One line per private ε from the committed heterogeneity answer (docs/RESULTS.md) when
    the user's setting is near one of its measured cells; nothing when none is, or when no
    answer has been committed."""
    from node.experiments.studies.winners import COMMITTED, load, recommend

    cells = load(path or COMMITTED)
    if not cells or not runs:
        return []
    cfg = runs[0].summary.get("config", {})
    out = []
    for eps in sorted({r.epsilon for r in runs}, reverse=True):
        line = recommend(cells, partition=str(cfg.get("partition")),
                         topology=str(cfg.get("topology")), nodes=int(cfg.get("nodes") or 0),
                         epsilon=eps, local_steps=int(cfg.get("local_steps") or 1))
        if line is not None:
            out.append(f"- **Near a measured cell (ε = {eps_name(eps)})?** {line[0].upper()}"
                       f"{line[1:]}")
    return out


def deployment(runs: Sequence[Run]) -> list[str]:
    """Bytes per round from the model's size and the codec, and a round-time estimate: the
    measured compute per node and round, plus sending every message over one uplink."""
    lines = []
    for key in ("dpnorm-msg-g0.1", "dp-dpsgd"):
        group = [r for r in runs if r.key == key]
        if not group:
            continue
        r = group[0]
        records = [m for ms in r.metrics.values() for m in ms]
        compute = [float(m["compute_seconds"]) for m in records
                   if m.get("compute_seconds") is not None]
        sent = [float(m["bytes_sent"]) for m in records if m.get("bytes_sent") is not None]
        rounds = max(int(r.summary.get("rounds", 1)), 1)
        per_node = [float(v.get("bytes_sent") or 0) / rounds for v in r.summary["nodes"].values()]
        per_round = statistics.fmean(per_node) if per_node else (max(sent) if sent else 0.0)
        step = statistics.fmean(compute) if compute else math.nan
        times = []
        for name, rate, latency in LINKS:
            times.append(f"{name}: ≈ {step + per_round * 8 / rate + latency:.3g} s")
        lines.append(f"- **{label(key)}**: {_size(per_round)} sent per node and round "
                     f"(its messages to {_degree(r)} neighbours, headers included); compute "
                     f"{step:.3g} s per round here; a round would take " + ", ".join(times) +
                     " (compute + one uplink carrying every message + latency; waiting for the "
                     "slowest neighbour comes on top).")
    return lines


def _degree(run: Run) -> str:
    topology, nodes = run.summary.get("config", {}).get("topology"), \
        run.summary.get("config", {}).get("nodes")
    return f"its {topology} neighbours ({nodes} sites)" if topology != "ring" else "2"


# ---------------------------------------------------------------------------------------------
# The report


def per_site_table(runs: Sequence[Run], metric: str) -> str:
    c = cells(runs, metric)
    cols = [(k, e) for (k, e) in sorted(c, key=lambda ke: (-ke[1], ke[0]))
            if k in ("solo", "ecl", "dpsgd", *FEDERATED)]
    pooled = c.get(("pooled", INF))
    head = (f"| site ({metric_name(metric)}, %) | " +
            " | ".join(f"{label(k)} ε={eps_name(e)}" for k, e in cols) + " |")
    lines = [head, "|---|" + "---|" * len(cols)]
    sites = sorted({s for cell in c.values() for s in cell.per_site()})
    for s in sites:
        row = [c[col].per_site().get(s) for col in cols]
        lines.append(f"| {s} | " + " | ".join("" if v is None else _val(v)
                                              for v in row) + " |")
    if pooled is not None:
        lines += ["", f"Pooled (all sites' data on one site, ε = ∞): "
                      f"{_val(pooled.mean())}."]
    return "\n".join(lines)


def plot(runs: Sequence[Run], metric: str, path: Path) -> Path | None:
    """Left: per-site score, solo vs federated at each ε; right: score against ε."""
    c = cells(runs, metric)
    if not c:
        return None
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    cols = [(k, e) for (k, e) in sorted(c, key=lambda ke: (-ke[1], ke[0]))
            if k in ("solo", *FEDERATED, "ecl")]
    sites = sorted({s for cell in c.values() for s in cell.per_site()})
    width = 0.8 / max(len(cols), 1)
    shown: list[float] = []
    for j, (k, e) in enumerate(cols):
        values = [100 * c[(k, e)].per_site().get(s, math.nan) for s in sites]
        shown += [v for v in values if math.isfinite(v)]
        left.bar([s + j * width for s in sites], values, width,
                 label=f"{label(k)}, ε={eps_name(e)}")
    if (pooled := c.get(("pooled", INF))) is not None:
        left.axhline(100 * pooled.mean(), color="k", linestyle="--", label="pooled")
        shown.append(100 * pooled.mean())
    if shown:  # the differences are what matters: zoom onto the range of the bars
        left.set_ylim(max(min(shown) - 5, 0), min(max(shown) + 2, 100))
    left.set_xticks([s + width * (len(cols) - 1) / 2 for s in sites], [str(s) for s in sites])
    name = metric_name(metric)
    left.set_xlabel("site")
    left.set_ylabel(f"final test {name} (%)")
    left.legend(fontsize=6)
    epsilons = sorted({e for (_, e) in c if math.isfinite(e)})
    for key in ("solo", *FEDERATED):
        xs = [e for e in epsilons if (key, e) in c]
        if xs:
            right.plot(xs, [100 * c[(key, e)].mean() for e in xs], marker="o", label=label(key))
    for key, colour in (("ecl", "C3"), ("dpsgd", "C4"), ("pooled", "k")):
        if (key, INF) in c:
            right.axhline(100 * c[(key, INF)].mean(), linestyle=":", color=colour,
                          label=f"{label(key)} (ε = ∞)")
    right.set_xscale("log")
    right.set_xlabel("ε")
    right.set_ylabel(f"mean {name} over sites (%)")
    right.legend(fontsize=6)
    return _finish(fig, f"pre-validation: {name} per site and against ε", path)


