"""node.core.mechanism: the config's name picks one type, and the type decides what the node
does (its gradient policy, dual noise, releases, whether it moves alone, its ε and record)."""

from __future__ import annotations

import math

import pytest
import torch

from node.config import RunConfig
from node.core.algorithm import NoNoise, PrimalDual
from node.core.assemble import build_graph, build_node
from node.core.data import load_data, shard
from node.core.mechanism import (
    MECHANISMS,
    ClipOnly,
    GaussianDualNoise,
    GradientDP,
    MessageDP,
    NoDP,
    claims_privacy,
    mechanism_type,
)
from node.core.runner import NodeRunner

BASE = dict(topology="ring", nodes=3, rounds=4, dataset="synthetic", model="logreg", lr=0.5,
            batch_size=16, examples_per_node=100, test_examples=50)


def _cfg(**changes: object) -> RunConfig:
    return RunConfig(**{**BASE, **changes})  # type: ignore[arg-type]


def _runner(cfg: RunConfig) -> NodeRunner:
    return NodeRunner(cfg, build_node(cfg, build_graph(cfg), 0, shard(cfg, load_data(cfg), 0),
                                      noise_seed=1))


@pytest.mark.parametrize(("changes", "kind"), [
    ({}, NoDP),
    ({"clip_only": True}, ClipOnly),
    ({"epsilon": 4.0}, MessageDP),
    ({"epsilon": 4.0, "privacy_mode": "gradient"}, GradientDP),
    ({"epsilon": 4.0, "algorithm": "dpsgd"}, GradientDP),
])
def test_the_config_names_one_mechanism_type(changes: dict[str, object],
                                             kind: type[object]) -> None:
    assert mechanism_type(_cfg(**changes)) is kind
    assert MECHANISMS[kind.name] is kind  # type: ignore[attr-defined]


def test_each_type_decides_what_the_node_does() -> None:
    plain, clipped = _runner(_cfg()), _runner(_cfg(clip_only=True))
    grad = _runner(_cfg(epsilon=4.0, privacy_mode="gradient"))
    message = _runner(_cfg(epsilon=4.0))
    kinds = [r.setup.trainer.policy.kind for r in (plain, clipped, grad, message)]
    assert kinds == ["plain", "clipped", "noisy", "clipped"]
    assert [type(r.setup.noise) for r in (plain, grad, message)] == [
        NoNoise, NoNoise, GaussianDualNoise]
    assert plain.next_releases() == [] and clipped.next_releases() == []
    assert len(grad.next_releases()) == 1 and len(message.next_releases()) == 1
    # No claim: nothing printed, nothing to stop at; the control records mode "none" too.
    assert plain.epsilon() is None and not plain.over_budget()
    assert clipped.setup.plan.record()["mode"] == "none"
    assert not claims_privacy(clipped.setup.plan.record())
    assert claims_privacy(message.setup.plan.record())
    # Message mode: the noise is sized from the algorithm's own parameters, and a node with
    # nobody to send to does not move (the round is charged all the same).
    plan, algorithm = message.setup.plan, message.setup.algorithm
    assert isinstance(plan, MessageDP) and isinstance(algorithm, PrimalDual)
    assert plan.params is algorithm.params
    w = algorithm.w.clone()
    out = message.step(set())
    assert torch.equal(algorithm.w, w) and out.duals == {} and math.isnan(out.loss)
    assert message.accountant.steps == 1 and message.epsilon() is not None
    grad.step(set())
    assert not torch.equal(grad.setup.algorithm.w, w)  # gradient mode moves alone
