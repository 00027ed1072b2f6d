"""The in-process simulator: N nodes, one process, no sockets, the daemon's algorithm code.

Each round every node runs `NodeRunner.step()` on the messages of the previous round; messages
are delivered in full (no faults) and bytes are counted as the wire would carry them. Outputs are
the same files a local launch writes: `<out>/<node>/metrics.jsonl` and `<out>/summary.json`.
Deterministic under the seed: data order, initialisation and (in simulation only, where nothing
is released) the privacy noise all derive from it unless `noise_seed` is given.

Scale (10,000 logreg nodes on one machine): what every node would compute identically is
computed once — one partition for all shards (`assemble.shards`), the graph's maximum degree and
mixing weights and the initial model (`assemble.Federation`, the model shared: trainers only
call it functionally) — and every node still runs its own `NodeRunner`, the daemon's code,
unbatched. The test split is one tensor that every node's shard views. A large federation's
metrics files are opened for each record rather than held open (one descriptor per node would
run into the open-files limit). `scripts/bench_sim.py --nodes N` measures it.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from torch import Tensor

from gossip.codec import encode, header_size
from gossip.messages import Dual, Primal
from node.config import RunConfig
from node.core.algorithm import Outgoing
from node.core.assemble import Federation, build_graph, build_node, load_data, shards
from node.core.data import Dataset
from node.core.metrics import LeadMetric, lead_metric
from node.core.runner import NodeRunner, RoundOutput
from node.core.seeds import noise_seed
from node.outputs.files import MetricsWriter, RunDir, write_json_atomic
from node.outputs.records import ExitReason, summary
from node.outputs.runner_records import Timing, Traffic, round_record, runner_entry

ProgressFn = Callable[[int, list[NodeRunner], float], None]
# Rewrites a round's outputs in place before delivery: simulated Byzantine nodes
# (node.experiments.robustness). Called with the round, the outputs and the runners.
TamperFn = Callable[[int, list["RoundOutput | None"], list[NodeRunner]], None]


def wire_bytes(kind: type[Dual] | type[Primal], sender: int, round: int, seq: int,
               payload: Outgoing) -> int:
    """Bytes the message would occupy on the wire (header frame + float32 tensor frame, or a
    compressed dual's frames as the codec encodes them)."""
    if not isinstance(payload, Tensor):
        return sum(memoryview(f).nbytes for f in encode(Dual(sender, round, seq, payload)))
    array = np.zeros(0, dtype=np.float32)
    header = header_size(kind(sender=sender, round=round, seq=seq, payload=array))
    return header + payload.numel() * 4


# Up to this many nodes, every metrics file stays open for the whole run; above, each record
# opens, appends and closes its file (microseconds, against milliseconds of a node's round).
OPEN_WRITERS_UP_TO = 256


def build_runners(cfg: RunConfig, data: Dataset | None = None) -> list[NodeRunner]:
    """Every node of the federation, each built by `build_node` from its own shard of `data`
    (default: the config's dataset, `load_data(cfg)`)."""
    graph = build_graph(cfg)
    data = load_data(cfg) if data is None else data
    federation = Federation.of(cfg, graph, data)
    return [
        NodeRunner(cfg, build_node(cfg, graph, i, own, noise_seed=simulation_noise_seed(cfg, i),
                                   federation=federation))
        for i, own in enumerate(shards(cfg, data))
    ]


def simulation_noise_seed(cfg: RunConfig, node: int) -> int | None:
    """In simulation nothing is released, so the noise too follows the run's seed (unless a
    noise seed is given): a simulated run is reproducible as a whole."""
    return noise_seed(cfg.seed if cfg.noise_seed is None else cfg.noise_seed, node)


class _Records:
    """Each node's metrics.jsonl: held open for a small federation, else opened per record."""

    def __init__(self, run_dir: RunDir | None, n: int) -> None:
        self.run_dir = run_dir
        self.open = [MetricsWriter(run_dir.node(i)) for i in range(n)] \
            if run_dir and n <= OPEN_WRITERS_UP_TO else None

    def write(self, node: int, record: dict[str, Any]) -> None:
        if self.open is not None:
            self.open[node].write(record)
        elif self.run_dir is not None:
            with MetricsWriter(self.run_dir.node(node)) as writer:
                writer.write(record)

    def close(self) -> None:
        for w in self.open or []:
            w.close()


def simulate(cfg: RunConfig, out: str | Path | None, *, progress: ProgressFn | None = None,
             runners: list[NodeRunner] | None = None,
             tamper: TamperFn | None = None) -> dict[str, Any]:
    """Run the whole federation; returns the summary (also written to `out` when given).
    `runners`: the nodes, fresh from `build_runners(cfg, ...)` (default: built here);
    `tamper`: rewrites each round's messages before they are delivered (attackers)."""
    started = time.time()
    runners = build_runners(cfg) if runners is None else runners
    n = len(runners)
    run_dir = RunDir(Path(out)) if out else None
    records = _Records(run_dir, n)
    sent = [0] * n
    received = [0] * n
    seq = [0] * n
    exits = [ExitReason.FINISHED] * n
    active = [set(r.setup.neighbours) for r in runners]
    try:
        for rnd in range(cfg.rounds):
            round_start = time.perf_counter()
            outputs: list[RoundOutput | None] = []
            for i, runner in enumerate(runners):
                if exits[i] != ExitReason.FINISHED or runner.over_budget():
                    exits[i] = ExitReason.BUDGET
                    outputs.append(None)
                    continue
                t0 = time.perf_counter()
                produced = runner.step(active[i])
                produced.compute_seconds = time.perf_counter() - t0
                outputs.append(produced)
            if tamper is not None:
                tamper(rnd, outputs, runners)
            inbox: list[dict[int, Outgoing]] = [{} for _ in range(n)]
            primals: list[dict[int, Tensor]] = [{} for _ in range(n)]
            for i, result in enumerate(outputs):
                if result is None:
                    continue
                for j, y in result.duals.items():
                    size = wire_bytes(Dual, i, rnd, seq[i], y)
                    seq[i] += 1
                    inbox[j][i] = y
                    sent[i] += size
                    received[j] += size
                if result.primal is not None:
                    for j in runners[i].setup.neighbours:
                        size = wire_bytes(Primal, i, rnd, seq[i], result.primal)
                        seq[i] += 1
                        primals[j][i] = result.primal
                        sent[i] += size
                        received[j] += size
            for i, runner in enumerate(runners):
                result = outputs[i]
                if result is None:
                    continue
                # Absorb at the end of the round, as the daemon does once its round closes, so
                # that evaluation and checkpoints see the same state in both.
                runner.absorb(inbox[i])
                scored = runner.evaluate() if runner.due_for_evaluation(rnd) else None
                if runner.sends_model:  # the message is the primal
                    primals[i] = runner.models_heard(inbox[i])
                record = round_record(
                    runner, rnd, time=time.time(), loss=result.loss, evaluation=scored,
                    primals=primals[i],
                    traffic=Traffic(sent[i], received[i], len(active[i]), len(inbox[i])),
                    timing=Timing(time.perf_counter() - round_start, result.compute_seconds,
                                  0.0))
                records.write(i, record)
                # The node's round is done: dropping its messages now keeps one round's in
                # memory rather than two (10,000 logreg nodes on a ring: about 0.6 GB).
                outputs[i], inbox[i], primals[i] = None, {}, {}
            if progress is not None:
                progress(rnd, runners, time.time() - started)
    finally:
        records.close()
    nodes = {str(r.node): runner_entry(r, bytes_sent=bytes_sent, exit=reason)
             for r, reason, bytes_sent in zip(runners, exits, sent, strict=True)}
    scope: dict[str, Any] = {}
    if (note := pooled_file_scope(cfg)) is not None:
        scope["epsilon_scope"] = note
    report = summary(cfg, nodes, time.time() - started,
                     [r.setup.plan.record() for r in runners], metric=leads_with(runners),
                     **scope)
    if run_dir:
        write_json_atomic(run_dir.summary, report)
    return report


def pooled_file_scope(cfg: RunConfig) -> str | None:
    """What the printed ε covers when the simulator cuts one user file into sites (None for a
    named dataset or no privacy claim). The cut is a convenience: the held-out split and the
    sites are permutations of the whole file's rows, so one added row of the file moves rows of
    every site, which no site's ε covers (a daemon cuts such a file by a keyed hash of each row
    instead, node.core.keyed_rows)."""
    if not (cfg.private and cfg.user_file):
        return None
    return (f"ε is what each site would spend on rows of its own; it does not cover one row of "
            f"the pooled file {cfg.dataset}, whose split into sites here is a permutation of "
            "all its rows")


def leads_with(runners: list[NodeRunner]) -> LeadMetric:
    """The metric the federation's task leads with (node.core.metrics.lead_metric)."""
    return lead_metric(runners[0].cfg.metric, runners[0].setup.trainer.auroc)


def console_progress(stream: TextIO = sys.stderr) -> ProgressFn:
    """A one-line live view: round, mean loss, mean accuracy (or AUROC where the task leads
    with it), max ε, seconds per round."""
    interactive = stream.isatty()

    def show(rnd: int, runners: list[NodeRunner], elapsed: float) -> None:
        cfg = runners[0].cfg
        losses = [r.last_loss for r in runners if not math.isnan(r.last_loss)]
        auroc = leads_with(runners) == "auroc"
        scores = [v for r in runners
                  if (v := r.last_auroc if auroc else r.last_accuracy) is not None]
        score = np.mean(scores) if scores else math.nan
        eps = [e for e in (r.epsilon() for r in runners) if e is not None]
        mean_loss = np.mean(losses) if losses else math.nan
        line = (f"round {rnd + 1:>4}/{cfg.rounds}  loss {mean_loss:.4f}"
                f"  {'auroc' if auroc else 'acc'} {100 * score:5.1f}%"
                f"  eps {max(eps) if eps else math.inf:.3g}"
                f"  {elapsed / (rnd + 1):.2f} s/round")
        if interactive:
            stream.write("\r" + line + ("\n" if rnd + 1 == cfg.rounds else ""))
        elif (rnd + 1) % max(1, cfg.rounds // 20) == 0 or rnd + 1 == cfg.rounds:
            stream.write(line + "\n")
        stream.flush()

    return show
