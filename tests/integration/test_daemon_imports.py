"""What a fresh process imports. A daemon imports only what a node needs: nothing of the
experiments, the simulator, the adversary or the plots before READY, and — without DP — neither
dp-accounting/scipy nor torch._dynamo/sympy (the first torch.func transform's ~70 MB) in its
first round either. scikit-learn is loaded only by a task that scores with it.

Run in a fresh interpreter, since the test process has imported everything already.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# node.adversary: the attacks live outside what honest code may import (test_layering.py).
NEVER = ["matplotlib", "node.adversary", "node.experiments", "node.sim"]
NOT_WITHOUT_DP = ["dp_accounting", "scipy", "sympy", "torch._dynamo"]

PROBE = """
import json, sys
from pathlib import Path
from node.config import RunConfig
from node.tools.plan import DaemonOptions, node_configs
from node.daemon.main import build_daemon_node
from node.core.runner import NodeRunner
import node.daemon.loop, uvloop

out = Path(sys.argv[1])
cfg = RunConfig(nodes=4, model="logreg", dataset="synthetic", examples_per_node=100,
                test_examples=50)
place = {"listen": "tcp://127.0.0.1:0", "out": str(out / "0"),
         "endpoints_file": str(out / "endpoints.json")}
config = node_configs(cfg, DaemonOptions(), lambda i: {"id": i, **place}, lambda j: "")[0]
runner = NodeRunner(config.run, build_daemon_node(config))
ready = sorted(sys.modules)
runner.step(set(runner.setup.neighbours))
print(json.dumps({"ready": ready, "after_round": sorted(sys.modules)}))
"""


def loaded(names: list[str], modules: list[str]) -> list[str]:
    return [n for n in names if any(m == n or m.startswith(n + ".") for m in modules)]


def test_a_daemon_without_dp_imports_only_what_it_needs(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path)], capture_output=True,
                          text=True, timeout=180, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    modules = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "torch" in modules["ready"]  # the probe really built a node
    assert loaded(NEVER + NOT_WITHOUT_DP, modules["ready"]) == []
    assert loaded(NEVER + NOT_WITHOUT_DP, modules["after_round"]) == []


SKLEARN_PROBE = """
import sys, torch
from torch import nn
from node.core.data import synthetic
from node.core.model.trainer import GradientPolicy, LocalTrainer
for classes, kind in ((10, "none"), (2, "binary")):
    data = synthetic(20, 30, num_classes=classes, dim=4)
    t = LocalTrainer(nn.Linear(4, classes), data.x_train, data.y_train, data.x_test, data.y_test,
                     batch_size=4, policy=GradientPolicy("plain"),
                     data_generator=torch.Generator(), auroc=kind)
    loaded = "sklearn" in sys.modules
    t.evaluate(t.layout.flatten(t.model))
    print(kind, loaded, "sklearn" in sys.modules, "scipy" in sys.modules)
"""



def test_scikit_learn_is_imported_only_by_a_task_that_scores_with_it() -> None:
    proc = subprocess.run([sys.executable, "-c", SKLEARN_PROBE], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr
    # Evaluating a ten-class task loads neither; a two-class trainer loads it when built.
    assert proc.stdout.split("\n")[:2] == ["none False False False", "binary True True True"]
