"""The DP-Norm evidence grid: methods × ε × denoising × data regime × seed, resumable.

    from node.experiments.grid import build_grid, run_grid
    run_grid(build_grid(preset("quick")), "runs/quick", jobs=2)  # studies.paper.preset

Every run gets its own directory `<out>/<regime>/<method>/eps-<ε>/seed-<s>/` holding the usual
simulator outputs plus `run.json` (what was run) and `DONE` (written last, atomically). A second
invocation skips every run that has `DONE` and restarts the others from scratch, so an interrupted
grid resumes where it stopped. Progress is one line per finished run with an ETA. Runs execute in
a local process pool, or as Ray tasks on a local Ray or a cluster
(`node.experiments.grid.executors`); the files are the same either way.

Pairing: every run of a seed uses `seed = noise_seed = s`, so runs that differ only in the
denoising strength γ see the same data order, the same Poisson batches and the same standard
normal draws (the noise scale σ itself depends on γ through the calibration) — differences
between γ values at equal seed are then due to γ, not to luck.

Methods (see METHODS): primal-dual DP-Norm in message mode (the paper's DP diffusion, K = 1) and
in gradient mode, DP-ECL (= DP-Norm at γ = 0), ECL, D-PSGD and DP-D-PSGD from the daemon's code
path (`node.sim.simulate.simulate`), FedAvg/SCAFFOLD/solo/pooled from `node.sim.references`, and the
clipped noise-free controls: the same decentralised algorithm with Poisson-sampled clipped
gradients and no noise, the baseline against which privacy's cost is measured.

The named grids (presets) are the studies' (node.experiments.studies.paper); a tuning candidate
(node.experiments.grid.tuning) is a RunSpec with a `tag`, a final run records its choice in
`tuned`.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch

import node.sim.simulate
from node.config import RunConfig
from node.experiments.grid.executors import DONE, Executor, LocalExecutor
from node.outputs.files import write_json_atomic
from node.sim.references import run_reference

__all__ = [
    "METHODS",
    "Method",
    "Preset",
    "RunSpec",
    "build_grid",
    "is_done",
    "run_grid",
    "run_one",
]


@dataclass(frozen=True)
class Method:
    """One line of the results table: how a method maps onto a RunConfig."""

    name: str
    label: str
    kind: str                       # "sim" (daemon code path), "reference" or "control"
    algorithm: str = "dpnorm"       # dpnorm | ecl | dpsgd, or a reference name
    privacy_mode: str | None = None
    private: bool = True            # runs at finite ε (False: only at ε = ∞)
    denoise: bool = False           # runs once per denoising strength γ > 0
    family: str = "primal-dual"     # which clipped control measures its privacy cost


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("dpnorm-msg", "DP-Norm (message)", "sim", "dpnorm", "message", denoise=True),
    Method("dpnorm-grad", "DP-Norm (gradient)", "sim", "dpnorm", "gradient", denoise=True),
    Method("dp-ecl", "DP-ECL (message, α=0)", "sim", "ecl", "message"),
    Method("dp-ecl-grad", "DP-ECL (gradient, α=0)", "sim", "ecl", "gradient"),
    Method("ecl", "ECL", "sim", "ecl", private=False),
    Method("dpsgd", "D-PSGD", "sim", "dpsgd", private=False, family="gossip"),
    Method("dp-dpsgd", "DP-D-PSGD", "sim", "dpsgd", "gradient", family="gossip"),
    Method("fedavg", "FedAvg", "reference", "fedavg", family="fedavg"),
    Method("scaffold", "SCAFFOLD", "reference", "scaffold", family="scaffold"),
    Method("solo", "solo (each node alone)", "reference", "solo", family="solo"),
    Method("pooled", "pooled (all data, one site)", "reference", "pooled", private=False,
           family="pooled"),
    Method("ecl-clipped", "ECL clipped, no noise (control)", "control", "ecl", private=False),
    Method("dpsgd-clipped", "D-PSGD clipped, no noise (control)", "control", "dpsgd",
           private=False, family="gossip"),
)}

# The run that measures each family's clipping-only baseline (privacy cost = control − method).
CONTROLS = {"primal-dual": "ecl-clipped", "gossip": "dpsgd-clipped"}


@dataclass(frozen=True)
class Preset:
    """A whole grid: shared RunConfig settings, regimes, methods, ε values, γ values, seeds."""

    name: str
    base: dict[str, Any]
    regimes: dict[str, dict[str, Any]]
    methods: tuple[str, ...]
    epsilons: tuple[float, ...]
    gammas: tuple[float, ...]
    seeds: tuple[int, ...]
    # methods that run only in these regimes / at these ε (to keep a preset within its budget)
    only_regimes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    only_epsilons: dict[str, tuple[float, ...]] = field(default_factory=dict)
    # RunConfig settings for one method only (e.g. FedAvg/SCAFFOLD with K > 1: at K = 1 and
    # full participation SCAFFOLD's correction averages to zero and it equals FedAvg exactly)
    method_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    # RunConfig settings for every run that clips per-sample gradients (finite ε and the
    # clipped controls): clipped gradients are at most C long, so they want a larger step than
    # raw ones. Chosen on the clipped noise-free control, never on the private runs.
    clipped: dict[str, Any] = field(default_factory=dict)
    # What each regime stands for along the preset's axes ({"skew": ..., "graph": ..., "K": ...}),
    # so that command-line filters can name cells (`select_regimes`); empty: no axes.
    axes: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class RunSpec:
    """One run of the grid; `config` holds RunConfig fields (ε = None means ∞)."""

    method: str
    regime: str
    epsilon: float
    gamma: float
    seed: int
    config: dict[str, Any]
    # Where the run sits below the regime: a tuning candidate's "tune-2"
    # (node.experiments.grid.tuning)
    tag: str = ""
    # The tuning that chose this run's settings (node.experiments.grid.tuning), recorded in run.json
    tuned: dict[str, Any] | None = None

    @property
    def path(self) -> str:
        eps = "inf" if math.isinf(self.epsilon) else f"{self.epsilon:g}"
        gamma = f"-g{self.gamma:g}" if METHODS[self.method].denoise else ""
        tag = f"/{self.tag}" if self.tag else ""
        return f"{self.regime}/{self.method}{gamma}/eps-{eps}{tag}/seed-{self.seed}"

    def run_config(self) -> RunConfig:
        return RunConfig(**self.config)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["epsilon"] = None if math.isinf(self.epsilon) else self.epsilon
        out["label"] = METHODS[self.method].label
        out["family"] = METHODS[self.method].family
        out["kind"] = METHODS[self.method].kind
        out["path"] = self.path
        return out


def build_grid(p: Preset, *, seeds: Sequence[int] | None = None,
               overrides: dict[str, Any] | None = None) -> list[RunSpec]:
    """Every run of the preset, seed by seed (a grid stopped early leaves whole seeds done)."""
    specs = []
    for seed in seeds if seeds is not None else p.seeds:
        for regime, regime_cfg in p.regimes.items():
            for name in p.methods:
                m = METHODS[name]
                if regime not in p.only_regimes.get(name, (regime,)):
                    continue
                for eps in p.epsilons:
                    if (math.isfinite(eps) and not m.private) or (
                            eps not in p.only_epsilons.get(name, (eps,))):
                        continue
                    if math.isinf(eps) and m.kind == "sim" and m.privacy_mode is not None:
                        continue  # without DP these are ECL / D-PSGD, which run on their own
                    for gamma in p.gammas if m.denoise else (0.0,):
                        clips = math.isfinite(eps) or m.kind == "control"
                        cfg: dict[str, Any] = {**p.base, **regime_cfg,
                                               **(p.clipped if clips else {}),
                                               **p.method_overrides.get(name, {}),
                                               **(overrides or {})}
                        cfg.update(seed=seed, noise_seed=seed, epsilon=eps)
                        if m.kind != "reference":
                            cfg.update(algorithm=m.algorithm, privacy_mode=m.privacy_mode)
                        else:  # the references' privacy is gradient mode (node.sim.references)
                            cfg.update(algorithm="dpsgd", privacy_mode="gradient")
                        if m.denoise:
                            cfg["gamma"] = gamma
                        specs.append(RunSpec(name, regime, eps, gamma, seed, cfg))
    return specs


# What DONE and a finished run's progress line keep of its summary.
BRIEF = ("wall_seconds", "metric", "mean_accuracy", "mean_auroc", "mean_balanced_accuracy",
         "max_epsilon")


def run_one(spec: RunSpec, directory: str | Path) -> dict[str, Any]:
    """Run one spec into `directory` (wiped first); writes DONE last."""
    target = Path(directory)
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    write_json_atomic(target / "run.json", spec.to_json())
    cfg = spec.run_config()
    m = METHODS[spec.method]
    if m.kind == "control":  # clipping and Poisson sampling, no noise: what clipping costs
        cfg = cfg.replace(clip_only=True)
    if m.kind == "reference":
        summary = run_reference(m.algorithm, cfg, target)  # type: ignore[arg-type]
    else:
        summary = node.sim.simulate.simulate(cfg, target)
    write_json_atomic(target / DONE, {k: summary[k] for k in BRIEF})
    return summary


def _worker(args: tuple[RunSpec, str]) -> tuple[str, dict[str, Any] | None, str]:
    spec, directory = args
    torch.set_num_threads(1)
    try:
        summary = run_one(spec, directory)
        return spec.path, {k: summary[k] for k in BRIEF}, ""
    except Exception:  # one failed run must not lose the others; it is retried next time
        return spec.path, None, traceback.format_exc()


def is_done(out: str | Path, spec: RunSpec) -> bool:
    """Finished, and with the same settings (a changed preset reruns the runs it changed)."""
    d = Path(out) / spec.path
    if not (d / DONE).is_file():
        return False
    try:
        stored = json.loads((d / "run.json").read_text())
    except (OSError, ValueError):
        return False
    wanted = json.loads(json.dumps(spec.to_json(), default=str).replace("Infinity", "null"))
    return bool(stored.get("config") == wanted.get("config"))


def run_grid(specs: Sequence[RunSpec], out: str | Path, *, jobs: int = 1,
             stream: TextIO = sys.stderr, executor: Executor | None = None) -> dict[str, Any]:
    """Run every spec not yet DONE under `out`; returns counts and failures.

    `executor` decides where the runs execute (`node.experiments.grid.executors`): by default this
    machine's process pool of `jobs` workers; a `RayExecutor` for a local Ray or a cluster. It
    is entered before the first run, so one that cannot start (`ExecutorError`) touches nothing.
    """
    root = Path(out)
    pending = [s for s in specs if not is_done(root, s)]
    skipped = len(specs) - len(pending)
    # Absolute: a Ray task may run in another working directory (or on another machine).
    tasks = [(s, str(root.resolve() / s.path)) for s in pending]
    failures: dict[str, str] = {}
    with executor if executor is not None else LocalExecutor(jobs) as ex:
        root.mkdir(parents=True, exist_ok=True)
        stream.write(f"{len(specs)} runs: {skipped} already done, {len(pending)} to run "
                     f"{ex.describe()}\n")
        stream.flush()
        started = time.time()
        for done, (path, brief, error) in enumerate(ex.run(_worker, tasks), start=1):
            elapsed = time.time() - started
            eta = elapsed / done * (len(tasks) - done)
            if brief is None:
                failures[path] = error
                line = f"FAILED {path}: {error.strip().splitlines()[-1]}"
            else:
                auroc = brief.get("metric") == "auroc"
                acc = brief["mean_auroc" if auroc else "mean_accuracy"]
                eps = brief["max_epsilon"]
                line = (f"{path}: {'auroc' if auroc else 'acc'} "
                        f"{100 * acc if acc is not None else math.nan:5.1f}%  "
                        f"eps {'-' if eps is None else f'{eps:.3g}'}  "
                        f"{brief['wall_seconds']:.0f}s")
            stream.write(f"[{done}/{len(tasks)}] {line}  (elapsed {elapsed:.0f}s, "
                         f"eta {eta:.0f}s)\n")
            stream.flush()
    write_json_atomic(root / "grid.json", [s.to_json() for s in specs])
    return {"total": len(specs), "skipped": skipped, "ran": len(pending) - len(failures),
            "failed": failures, "seconds": time.time() - started}
