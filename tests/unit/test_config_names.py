"""One meaning per setting name: the label column of the run's `dataset` file is `label_column`,
that of a daemon's own file `node.data_label_column`; `node.label_column`, the own file's
earlier name, is still read as it."""

from __future__ import annotations

from typing import Any

import pytest

from node.daemon.settings import NodeConfig, NodeSettings, node_config_from_mapping

RUN = {"topology": "ring", "nodes": 3, "rounds": 2, "dataset": "synthetic", "model": "logreg"}
NEIGHBOURS = {"1": "tcp://127.0.0.1:9", "2": "tcp://127.0.0.1:10"}


def config(node: dict[str, Any], overrides: dict[str, str] | None = None,
           **run: Any) -> NodeConfig:
    raw = {**RUN, **run, "node": {"id": 0, **node}, "neighbours": NEIGHBOURS}
    return node_config_from_mapping(raw, overrides or {})


@pytest.mark.parametrize(("node", "overrides"), [
    ({"data_label_column": "outcome"}, {}),
    ({"label_column": "outcome"}, {}),                        # the earlier name, in the file
    ({}, {"node.label_column": "outcome"}),                   # ... and from --set
    ({"label_column": "outcome"}, {"node.data_label_column": "outcome"}),
])
def test_the_own_files_label_column_is_the_nodes(node: dict[str, Any],
                                                 overrides: dict[str, str]) -> None:
    cfg = config(node, overrides)
    assert cfg.node.data_label_column == "outcome"
    assert cfg.run.label_column == "label"  # the dataset file's is untouched


def test_the_runs_label_column_names_the_dataset_files_only() -> None:
    cfg = config({}, label_column="malignant")
    assert cfg.run.label_column == "malignant"
    assert cfg.node.data_label_column == NodeSettings().data_label_column == "label"


def test_no_setting_of_a_node_shares_a_name_with_a_run_setting() -> None:
    from dataclasses import fields

    from node.config import RunConfig

    # `--set node.X` and `--set X` must never both exist with different meanings.
    shared = {f.name for f in fields(NodeSettings)} & {f.name for f in fields(RunConfig)}
    assert shared == set()
