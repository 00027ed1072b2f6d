"""`python -m node` refuses a bad config with one sentence and exit status 2, before it listens."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from node.config import RunConfig
from node.daemon.settings import NodeSettings, load_node_config, render_toml
from node.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def write_config(tmp_path: Path, extra: str = "", **node: object) -> Path:
    run = RunConfig(topology="ring", nodes=3, rounds=2, dataset="synthetic", model="logreg")
    settings = NodeSettings(id=0, out=str(tmp_path / "0"), **node)  # type: ignore[arg-type]
    path = tmp_path / "node.toml"
    text = render_toml(run, settings, {1: "tcp://127.0.0.1:9", 2: "tcp://127.0.0.1:10"})
    path.write_text(extra + text)
    return path


def run_node(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "node", *args], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


def test_rendered_config_reads_back_to_the_same_values(tmp_path: Path) -> None:
    cfg = load_node_config(write_config(tmp_path, round_timeout=2.5))
    assert cfg.node.id == 0 and cfg.node.round_timeout == 2.5
    assert cfg.neighbours == {1: "tcp://127.0.0.1:9", 2: "tcp://127.0.0.1:10"}
    assert cfg.run.rounds == 2 and cfg.run.model == "logreg"


@pytest.mark.parametrize(
    ("extra", "overrides", "fragment"),
    [
        ("learning_rate = 0.1\n", [], "unknown setting 'learning_rate'"),
        ("", ["rounds=many"], "rounds must be an integer"),
        ("", ["node.round_timeout=soon"], "round_timeout must be a number"),
        ("", ["node.colour=blue"], "unknown setting node.colour"),
        ("", ["dataset=fashion-mnist", "data_dir=/nonexistent/fmnist"], "dataset-fashion-mnist"),
        ("", ["node.data_file=/nonexistent/mine.npz"], "/nonexistent/mine.npz"),
        ("", ["node.id=7"], "node.id"),
        ("", ["topology=mesh", "nodes=4"], "do not match topology"),
        ("", ["node.curve_keys=/nonexistent/keys"], "/nonexistent/keys"),
        ("", ["node.listen=tcp://256.1.1.1:99999"], "listen"),
        ("", ["lr=-1"], "lr must be"),
        ("", ["epsilon=0"], "epsilon"),
        ("", ["clip=0"], "clip"),
    ],
)
def test_bad_config_exits_2_with_one_sentence(tmp_path: Path, extra: str, overrides: list[str],
                                              fragment: str) -> None:
    path = write_config(tmp_path, extra)
    args = ["--config", str(path)]
    for o in overrides:
        args += ["--set", o]
    proc = run_node(*args)
    assert proc.returncode == 2, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert fragment in errors[0], errors[0]
    assert "READY" not in proc.stdout or "listen" not in fragment


def test_missing_and_malformed_config_files(tmp_path: Path) -> None:
    proc = run_node("--config", str(tmp_path / "absent.toml"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("rounds = [\n")
    proc = run_node("--config", str(bad))
    assert proc.returncode == 2 and "not valid TOML" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("table", ["node", "neighbours", "faults"])
def test_a_section_written_as_a_value_is_refused_with_one_sentence(tmp_path: Path,
                                                                   table: str) -> None:
    """`node = "x"` used to reach dict("x") and end in a bare ValueError traceback."""
    path = tmp_path / "node.toml"
    path.write_text(f'rounds = 2\n{table} = "x"\n')
    proc = run_node("--config", str(path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert errors == [f"error: [{table}] must be a table, got 'x'; write it as a [{table}] "
                      "section."]


def test_the_message_bound_is_rms_and_its_earlier_name_still_reads(tmp_path: Path) -> None:
    old = load_node_config(write_config(tmp_path), {"node.max_message_norm": "10"})
    new = load_node_config(write_config(tmp_path), {"node.max_message_rms": "10"})
    assert old.node.max_message_rms == new.node.max_message_rms == 10.0
    helptext = subprocess.run([sys.executable, "scripts/launch_local.py", "--help"], cwd=ROOT,
                              capture_output=True, text=True, timeout=60).stdout
    flat = " ".join(helptext.split())
    option = flat[flat.index("--max-message-rms MAX_MESSAGE_RMS,"):][:200]
    assert "RMS per coordinate" in option and "L2" not in option, option


def test_faults_load_straight_into_the_fault_layer_and_render_back(tmp_path: Path) -> None:
    from gossip.faults import Cut, FaultConfig

    extra = ""  # the [faults] table comes from --set, as the launcher passes it
    cfg = load_node_config(write_config(tmp_path, extra),
                           {"faults.drop": "0.25", "faults.cuts": "1:2.5:0-1,n2;3:4:1-2"})
    assert cfg.faults == FaultConfig(drop=0.25, cuts=Cut.parse("1:2.5:0-1,n2;3:4:1-2"))
    assert cfg.faults.cuts[0] == Cut.between(1.0, 2.5, nodes=[2], edges=[(0, 1)])
    text = render_toml(cfg.run, cfg.node, cfg.neighbours, cfg.faults)
    (tmp_path / "again.toml").write_text(text)
    assert load_node_config(tmp_path / "again.toml").faults == cfg.faults
    for bad, fragment in [("5:1:0-1", "0 <= start < end"), ("x:1:0-1", "cannot read the cut"),
                          ("0:1:0-9", "outside 0..2")]:
        with pytest.raises(ConfigError, match=fragment):
            load_node_config(write_config(tmp_path), {"faults.cuts": bad})
