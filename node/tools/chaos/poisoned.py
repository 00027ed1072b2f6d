"""A label-flipping node: the real, unmodified daemon trained on poisoned labels.

`LocalLaunch(..., node_commands={3: [python, -m, node.tools.chaos.poisoned, --poisoned, 3]})`
runs this for node 3 (any other id simply becomes the real daemon, `python -m node`, exec'd in
place). For the poisoned id it computes the training shard the daemon would have computed
from the run (same dataset, partition, seed and cap: `node.core.assemble.shard`), flips its
labels (`node.core.attacks.flipped_labels`: class k becomes C − 1 − k), writes it and the
shared test split to NPZ files in the node's out directory, and execs the daemon on a copy of
its config that reads them as the node's own files (`node.data_file`, `node.test_file`).

Label flipping is data poisoning, not a message attack: from then on the process is the
project's own daemon code, speaking the real protocol and honest in every message, so no check
on what it sends can tell it apart — only what it learnt is wrong. The copy of the config
changes only what an own-file run must declare, set to the values the shard itself would give:
`classes` (the dataset's), `standardise = none` (the shard is already scaled as the daemon
scales it), no `examples_per_node` (the shard is already capped; a cap on an own file is
refused under DP), and in a private run `public_examples` = the shard's size (q unchanged).
The test split keeps its true labels, so the node's reported accuracy shows what it learnt.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

import numpy as np

from node.cli import fail, parse_set_overrides
from node.daemon.settings import NodeConfig, load_node_config
from node.errors import USER_ERRORS, ConfigError
from node.tools.plan import config_text

TRAIN, TEST, CONFIG = "poisoned-train.npz", "poisoned-test.npz", "poisoned.toml"


def poisoned_config(cfg: NodeConfig) -> NodeConfig:
    """Write the node's flipped shard and true test split; the config that trains on them."""
    from node.core.assemble import load_data, shard
    from node.core.attacks import flipped_labels
    from node.core.keyed_rows import shared_shard

    # Exactly the daemon's own call (node.daemon.main.daemon_data), so the rows match.
    data = (shared_shard(cfg.run, cfg.node.id) if cfg.shared_file
            else shard(cfg.run, load_data(cfg.run, resident=False), cfg.node.id))
    out = Path(cfg.node.out)
    out.mkdir(parents=True, exist_ok=True)
    y = flipped_labels(data.y_train, data.num_classes)
    # Plain numeric arrays: np.savez pickles nothing, and the daemon reads with allow_pickle=False.
    np.savez(out / TRAIN, x=data.x_train.numpy(), y=y.numpy())
    np.savez(out / TEST, x=data.x_test.numpy(), y=data.y_test.numpy())
    run = cfg.run.replace(classes=data.num_classes, standardise="none", examples_per_node=None)
    if run.private and run.sample_rate is None and run.public_examples is None:
        run = run.replace(public_examples=len(y))  # the q the shard's public size gave
    node = dataclasses.replace(cfg.node, data_file=str(out / TRAIN), test_file=str(out / TEST))
    return dataclasses.replace(cfg, node=node, run=run)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--poisoned", type=int, required=True, help="the node id to poison")
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()
    config = args.config
    sets = [x for pair in args.set for x in ("--set", pair)]
    try:
        cfg = load_node_config(args.config, parse_set_overrides(args.set))
        if cfg.node.id == args.poisoned:
            if cfg.node.data_file:
                raise ConfigError(f"node {cfg.node.id} reads its own file {cfg.node.data_file}; "
                                  "the poisoned node needs a shard of the run's dataset.")
            poisoned = poisoned_config(cfg)
            path = Path(cfg.node.out) / CONFIG
            # The overrides are applied in the file: the daemon reads exactly this config.
            path.write_text(config_text(poisoned, "# node.tools.chaos.poisoned: flipped "
                                        "labels\n"), encoding="utf-8")
            config, sets = str(path), []
    except USER_ERRORS as exc:
        fail(str(exc))  # one sentence and status 2, as the daemon refuses a bad config
    # Become the real daemon (same process, so the launcher's signals reach it).
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, "-m", "node", "--config", config, *sets])


if __name__ == "__main__":
    raise SystemExit(main())
