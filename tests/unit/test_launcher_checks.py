"""Issue 29 item 2: the launcher checks what it can before any node starts, one sentence, exit 2.

scripts/launch_local.py's main() runs in this process; every command here is refused before a
process starts or a socket is bound, and leaves no --out behind.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch

from node.config import RunConfig
from node.tools.plan import LOCAL_LISTEN, DaemonOptions, node_configs

ROOT = Path(__file__).resolve().parents[2]
RING = ["--topology", "ring", "--nodes", "3", "--rounds", "3", "--dataset", "synthetic",
        "--model", "logreg", "--threads", "1", "--quiet"]


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("launch_local", ROOT / "scripts" /
                                                  "launch_local.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def refused(capsys: pytest.CaptureFixture[str], out: Path, *args: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        _script().main([*RING, *args, "--out", str(out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    assert not out.exists(), "nothing may be started or written"
    return err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_device_cuda_without_cuda_is_refused_before_any_node_starts(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = refused(capsys, tmp_path / "run", "--device", "cuda")
    assert "device cuda was asked for, but torch finds no CUDA GPU" in err


def test_one_metrics_port_for_several_local_nodes_points_at_metrics_port(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Every node would bind the same port: the second one was refused "Address already in use",
    # blaming a port that was free.
    err = refused(capsys, tmp_path / "run", "--set", "node.metrics_port=9156")
    assert "nodes 0 and 1 would both serve metrics on port 9156" in err
    assert "--metrics-port BASE" in err


def test_metrics_port_base_gives_node_i_base_plus_i() -> None:
    cfg = RunConfig(topology="ring", nodes=4, rounds=1, dataset="synthetic", model="logreg")

    def place(i: int) -> dict[str, Any]:
        return {"id": i, "listen": LOCAL_LISTEN, "out": f"/tmp/unused/{i}",
                "endpoints_file": "/tmp/unused/endpoints.json"}

    configs = node_configs(cfg, DaemonOptions(metrics_port=9156), place, lambda j: "")
    assert [c.node.metrics_port for c in configs] == [9156, 9157, 9158, 9159]
    assert [c.node.metrics_port for c in node_configs(cfg, DaemonOptions(), place,
                                                      lambda j: "")] == [0, 0, 0, 0]


def test_a_nodes_own_file_is_checked_before_any_node_starts(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Each daemon used to find this out itself, after the others had started: exit 1.
    data = tmp_path / "own.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.normal(size=(60, 4)).astype(np.float32), y=np.arange(60) % 3)
    err = refused(capsys, tmp_path / "run", "--epsilon", "2", "--sample-rate", "0.1",
                  "--set", f"node.data_file={data}")
    assert "declare classes = K in the config" in err
    err = refused(capsys, tmp_path / "run", "--epsilon", "2", "--sample-rate", "0.1",
                  "--classes", "2", "--set", f"node.data_file={data}")
    assert "has a label 2, outside the declared classes 0..1" in err
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    err = refused(capsys, tmp_path / "run", "--set", f"node.data_file={empty}")
    assert "empty.csv is empty" in err
