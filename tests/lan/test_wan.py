"""Compression over a WAN: six real daemons behind a 10 Mbit/s, 40 ms link (netem on every
node's own interface, inside namespaces this test creates), once with dense messages and once
with `--compress int4`. The compressed rounds must be measurably faster in wall time; both
measured round times are printed (and written to the test's tmp dir as wan.json).

An MLP of about 100k parameters makes a dense dual 400 KB, so a node's two duals need about
0.65 s per round at 10 Mbit/s on top of the 40 ms delay; int4 sends an eighth of that.
Budget on 2 busy cores: about 2 minutes.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lan.netns import Lan, sweep_stale, unavailable
from tests.lan.test_lan import NODES, SITES, Federation, check_finished, make_lan_dir

REASON = unavailable()
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(REASON is not None, reason=f"WAN test skipped: {REASON}")]
ROUNDS = 8
LINK = {"link": "10mbit, 40ms each way (netem)"}
MODEL = ("--dataset", "synthetic", "--model", "mlp", "--width", "128", "--primal-every", "0",
         "--round-timeout", "20")


@pytest.fixture(scope="module")
def wan() -> Iterator[Lan]:
    sweep_stale()
    net = Lan(f"dpn{os.getpid()}w", SITES)
    try:
        net.build()
        for i in range(NODES):  # every packet leaves through some node's eth0: delay each way
            netem = subprocess.run(["tc", "-n", net.ns(i), "qdisc", "add", "dev", "eth0", "root",
                                    "netem", "rate", "10mbit", "delay", "40ms", "limit",
                                    "100000"], capture_output=True, text=True, timeout=20)
            if netem.returncode != 0:  # a kernel without sch_netem: the rate alone, no delay
                subprocess.run(["tc", "-n", net.ns(i), "qdisc", "add", "dev", "eth0", "root",
                                "tbf", "rate", "10mbit", "burst", "32kbit", "latency", "2s"],
                               check=True, capture_output=True, timeout=20)
                LINK["link"] = f"10mbit tbf, no delay (netem: {netem.stderr.strip()})"
        yield net
    finally:
        net.close()
        assert not net.leftovers(), f"namespaces left behind: {net.leftovers()}"


def run_round_seconds(wan: Lan, tmp: Path, *extra: str) -> tuple[float, int]:
    """Median round time after start-up, over every node, and node 0's bytes sent."""
    lan_dir = make_lan_dir(tmp / "lan", ROUNDS, *MODEL, *extra)
    fed = Federation(wan, lan_dir, tmp / "run")
    try:
        fed.wait_ready()
        check_finished(fed, ROUNDS, timeout=240)
    finally:
        fed.stop()
    times = [r["round_seconds"] for i in range(NODES) for r in fed.records(i)[2:]]
    return statistics.median(times), fed.records(0)[-1]["bytes_sent"]


def test_compression_makes_wan_rounds_faster(wan: Lan, tmp_path: Path) -> None:
    dense, dense_bytes = run_round_seconds(wan, tmp_path / "dense")
    packed, packed_bytes = run_round_seconds(wan, tmp_path / "int4", "--compress", "int4")
    result = {**LINK, "rounds": ROUNDS,
              "median_round_seconds": {"none": dense, "int4": packed},
              "bytes_sent_node0": {"none": dense_bytes, "int4": packed_bytes}}
    (tmp_path / "wan.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    assert packed_bytes < dense_bytes / 5
    # Dense rounds carry ≈ 0.65 s of transmission each that int4 does not: a large margin over
    # compute-time noise on a loaded machine.
    assert dense > 0.5, f"the link did not limit the dense rounds ({dense:.3f} s)"
    assert packed < 0.6 * dense, (packed, dense)
