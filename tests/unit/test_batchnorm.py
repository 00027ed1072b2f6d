"""BatchNorm in a user's model (node.core.model.batchnorm): refused under per-sample clipping
with the flag named, kept without clipping with running statistics that stay on the node
(outside the flat parameter vector, a copy per trainer, untouched by evaluation), and swapped
for GroupNorm by --fix-batchnorm with one line saying so."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from node.config import RunConfig
from node.core.mechanism import ClipOnly, NoDP, mechanism_type
from node.core.model import FlatParams, GradientPolicy, LocalTrainer, batchnorm_use, build_model
from node.core.model.batchnorm import batchnorms, groups
from node.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
BAD = f"{ROOT / 'examples/bad_models.py'}:batchnorm_cnn"
IMAGE = (1, 12, 12)
NET = """
import torch
from torch import nn

def build(in_shape, num_classes):
    c, h, w = in_shape
    return nn.Sequential(nn.Conv2d(c, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Flatten(), nn.Linear(8 * h * w, 6), nn.BatchNorm1d(6),
                         nn.Linear(6, num_classes))
"""


@pytest.fixture
def net(tmp_path: Path) -> str:
    path = tmp_path / "net.py"
    path.write_text(NET, encoding="utf-8")
    return f"{path}:build"


def build(spec: str, cfg: RunConfig) -> nn.Module:
    return build_model(spec, in_shape=IMAGE, num_classes=3, seed=1,
                       batchnorm=batchnorm_use(cfg))


def test_only_a_run_without_per_sample_clipping_keeps_batchnorm() -> None:
    runs = [RunConfig(), RunConfig(clip_only=True), RunConfig(epsilon=4.0),
            RunConfig(epsilon=4.0, privacy_mode="gradient"), RunConfig(epsilon=4.0, local_steps=2,
                                                                       privacy_mode="gradient")]
    for cfg in runs:
        # The run's own mechanism decides: only NoDP's plain gradients take nothing per sample.
        assert (batchnorm_use(cfg) == "local") == (mechanism_type(cfg) is NoDP)
        assert batchnorm_use(cfg.replace(fix_batchnorm=True)) == "groupnorm"
    assert batchnorm_use(runs[0]) == "local"  # the comparison above can hold both ways
    plain = NoDP(delta=1e-5, target_epsilon=None, sample_rate=1.0).gradient_policy()
    clipped = ClipOnly(delta=1e-5, target_epsilon=None, sample_rate=1.0).gradient_policy()
    assert (plain.kind, clipped.kind) == ("plain", "clipped")


def test_under_clipping_batchnorm_is_refused_naming_the_flag(net: str) -> None:
    for cfg in (RunConfig(epsilon=4.0), RunConfig(clip_only=True)):
        with pytest.raises(ConfigError) as info:
            build(net, cfg)
        message = str(info.value)
        assert "\n" not in message and message.endswith(".")
        assert "layer `1` is BatchNorm2d" in message
        assert "pass --fix-batchnorm to swap it for nn.GroupNorm(8, 8)" in message


def test_without_clipping_batchnorm_is_kept_and_its_statistics_are_not_parameters(
        net: str) -> None:
    model = build(net, RunConfig())
    assert [path for path, _ in batchnorms(model)] == ["1", "5"]
    layout = FlatParams.of(model)
    names = [name for name, _ in layout.spec]
    stats = [name for name, _ in model.named_buffers()]
    assert stats and not set(stats) & set(names)  # running statistics never enter a message
    assert layout.numel == sum(p.numel() for p in model.parameters())
    # The build's checks ran a batch through it: the statistics every node starts from are
    # still BatchNorm's initial ones.
    assert torch.equal(model.get_buffer("1.running_mean"), torch.zeros(8))
    assert torch.equal(model.get_buffer("1.running_var"), torch.ones(8))
    assert int(model.get_buffer("1.num_batches_tracked")) == 0


def trainer(model: nn.Module, seed: int) -> LocalTrainer:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(40, *IMAGE, generator=g) + seed, torch.arange(40) % 3
    return LocalTrainer(model, x, y, x[:10], y[:10], batch_size=8, policy=GradientPolicy(),
                        data_generator=torch.Generator().manual_seed(seed))


def test_each_trainer_keeps_its_own_statistics_and_evaluation_does_not_move_them(
        net: str) -> None:
    shared = build(net, RunConfig())  # the simulator shares one model among its nodes
    a, b = trainer(shared, 0), trainer(shared, 5)
    w = FlatParams.of(shared).flatten(shared)
    a.gradient(w)
    b.gradient(w)
    mean = "1.running_mean"
    assert not torch.equal(a.model.get_buffer(mean), b.model.get_buffer(mean))
    assert torch.equal(shared.get_buffer(mean), torch.zeros(8))
    before = {k: v.clone() for k, v in a.model.named_buffers()}
    a.evaluate(w)
    assert all(torch.equal(before[k], v) for k, v in a.model.named_buffers())
    assert a.model.training  # back to batch statistics for the next step
    # Evaluation used the running statistics: the same as an eval-mode forward of the copy.
    a.model.eval()
    logits = torch.func.functional_call(a.model, FlatParams.of(shared).unflatten(w),
                                        (a.x_test,))
    a.model.train()
    loss = float(nn.functional.cross_entropy(logits, a.y_test))
    assert math.isclose(a.evaluate(w).loss, loss, rel_tol=1e-6)


def test_fix_batchnorm_swaps_every_batchnorm_for_groupnorm_and_says_so_once(
        net: str, caplog: pytest.LogCaptureFixture) -> None:
    cfg = RunConfig(epsilon=4.0, fix_batchnorm=True)
    with caplog.at_level(logging.WARNING):
        model = build(net, cfg)
        build(net, cfg)
    assert batchnorms(model) == [] and list(model.buffers()) == []
    assert isinstance(model[1], nn.GroupNorm) and (model[1].num_groups, model[1].num_channels) \
        == (8, 8)
    # BatchNorm1d on (N, C): groups of two channels, never of one value.
    assert isinstance(model[5], nn.GroupNorm) and model[5].num_groups == 3
    # The same w⁰ as without the swap: only the normalisation layers changed, no random draw.
    kept = build(net, RunConfig())
    same = dict(kept.named_parameters())
    assert all(torch.equal(p, same[k]) for k, p in model.named_parameters())
    lines = [r.getMessage() for r in caplog.records if "--fix-batchnorm" in r.getMessage()]
    assert lines == [f"note: --fix-batchnorm: in model {net}, BatchNorm swapped for GroupNorm "
                     "(`1` → nn.GroupNorm(8, 8), `5` → nn.GroupNorm(3, 6))"]
    assert model(torch.randn(2, *IMAGE)).shape == (2, 3)


def test_the_shipped_batchnorm_example_runs_without_clipping_and_is_fixed_under_dp() -> None:
    kept = build_model(BAD, in_shape=(1, 28, 28), num_classes=10, seed=0, batchnorm="local")
    assert [type(m).__name__ for _, m in batchnorms(kept)] == ["BatchNorm2d"]
    fixed = build_model(BAD, in_shape=(1, 28, 28), num_classes=10, seed=0,
                        batchnorm="groupnorm")
    assert batchnorms(fixed) == []


@pytest.mark.parametrize("channels", [1, 2, 3, 6, 8, 12, 30, 64, 96, 100])
def test_group_counts_divide_the_channels_and_never_leave_a_flat_group_of_one(
        channels: int) -> None:
    for spatial in (True, False):
        g = groups(channels, spatial=spatial)
        assert channels % g == 0 and 1 <= g <= 32
        if not spatial and channels > 1:
            assert channels // g >= 2
        better = [d for d in range(g + 1, 33) if channels % d == 0
                  and (spatial or channels // d >= 2)]
        assert better == []  # the largest such count
