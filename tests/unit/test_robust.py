"""The robust aggregation rules (node.core.algorithm.robust) on hand-made inputs: an honest
neighbour within the radius is untouched, a far one is clipped exactly to τ, the adaptive
radius follows the lower median, screening reports (never drops), extreme but finite values
neither crash nor poison, and the configuration refuses bad modes and radii in one sentence."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from node.config import RunConfig
from node.core.algorithm import Gossip, NoNoise, PrimalDual, PrimalDualParams, RobustRule
from node.core.algorithm.robust import (
    SCREEN_AFTER,
    TRUST_FLOOR,
    clip_towards,
    distance,
    dual_reference,
    lower_median,
)
from node.daemon.state import Checkpoint, load_checkpoint, save_checkpoint
from node.errors import ConfigError


def test_within_radius_is_the_same_tensor_and_far_is_clipped_exactly_to_tau() -> None:
    ref = torch.tensor([1.0, 1.0, 1.0])
    near = torch.tensor([1.5, 1.0, 1.0])
    far = torch.tensor([1.0, 5.0, 4.0])  # ‖far − ref‖ = 5
    assert clip_towards(near, ref, 1.0) is near
    clipped = clip_towards(far, ref, 2.0)
    assert distance(clipped, ref) == pytest.approx(2.0, rel=1e-6)
    # on the segment from ref towards far: ref + (far - ref) * 2/5
    assert torch.allclose(clipped, torch.tensor([1.0, 1.0 + 1.6, 1.0 + 1.2]))
    assert clip_towards(far, ref, 5.0) is far  # exactly at τ: untouched


def test_adaptive_radius_is_scale_times_the_lower_median() -> None:
    assert lower_median([3.0, 1.0]) == 1.0
    assert lower_median([4.0, 1.0, 2.0, 3.0]) == 2.0
    rule = RobustRule(scale=2.0)  # distances 1.0, 1.2, 100 (no own voice)
    own = torch.zeros(4)
    received = {1: torch.full((4,), 0.5), 2: torch.full((4,), 0.6), 3: torch.full((4,), 50.0)}
    out = rule.apply(received, dict.fromkeys(received, own))
    # distances 1.0, 1.2, 100 → lower median 1.2, τ = 2.4: only node 3 is clipped, to 2.4
    assert rule.last_radius == pytest.approx(2.4)
    assert out[1] is received[1] and out[2] is received[2]
    assert distance(out[3], own) == pytest.approx(2.4, rel=1e-6)
    assert rule.clipped == {3}


def test_infinite_radius_returns_the_received_tensors_untouched() -> None:
    rule = RobustRule(radius=math.inf)
    received = {1: torch.randn(5) * 1e30, 2: torch.randn(5)}
    out = rule.apply(received, dict.fromkeys(received, torch.zeros(5)))
    assert all(out[j] is received[j] for j in received)


def test_extreme_but_finite_values_are_clipped_to_a_finite_vector() -> None:
    big = torch.full((1000,), 3.0e38)  # float32's largest finite range: its norm overflows
    ref = torch.full((1000,), -3.0e38)
    assert math.isfinite(distance(big, ref))
    out = clip_towards(big, ref, 1.0)
    assert torch.isfinite(out).all()
    rule = RobustRule()
    own = torch.zeros(1000)
    got = rule.apply({1: big, 2: torch.full((1000,), 0.01)}, {1: own, 2: own})
    assert torch.isfinite(got[1]).all()
    assert distance(got[1], own) <= distance(got[2], own) * 1.0001  # τ = 1 x lower median


def test_screen_marks_a_persistently_clipped_neighbour_and_never_drops_it() -> None:
    rule = RobustRule(screen=True)
    own = torch.zeros(200)
    gen = torch.Generator().manual_seed(0)
    for r in range(30):
        honest = {j: torch.randn(200, generator=gen) * 0.1 for j in (1, 2, 3)}
        received = {**honest, 4: torch.full((200,), 10.0)}
        out = rule.apply(received, dict.fromkeys(received, own))
        assert set(out) == {1, 2, 3, 4}  # reported, still mixed (clipped)
        if r < SCREEN_AFTER - 1:
            assert rule.suspects() == []  # not before SCREEN_AFTER rounds heard
            assert rule.trust(4) == 1.0
    assert rule.suspects() == [4]
    # Its radius has shrunk to the floor: a tenth of τ, in its own direction, never zero.
    assert rule.trust(4) == TRUST_FLOOR
    assert rule.last_radius is not None
    assert distance(out[4], own) == pytest.approx(TRUST_FLOOR * rule.last_radius, rel=1e-5)
    assert all(rule.trust(j) == 1.0 for j in (1, 2, 3))  # alike honest distances: not scored


def test_a_wrongly_scored_neighbour_regains_its_radius_once_it_stops_standing_out() -> None:
    rule = RobustRule(screen=True)
    own = torch.zeros(4)
    near = {j: torch.full((4,), 0.1 * (1 + j / 10)) for j in (1, 2, 3)}
    for _ in range(6):  # neighbour 3 far for a few rounds (say a burst of disagreement)
        rule.apply({**near, 3: torch.full((4,), 5.0)}, dict.fromkeys(near, own))
    assert rule.suspects() == [3] and rule.trust(3) < 1.0
    low = rule.trust(3)
    for _ in range(15):
        rule.apply(near, dict.fromkeys(near, own))
    assert rule.suspects() == []
    assert low <= 0.5 < 0.9 < rule.trust(3)  # the score decays by 0.8 a round


def test_screen_does_not_mark_honest_noisy_neighbours() -> None:
    # DP-noisy honest neighbours: large but alike distances, never beyond 2x the lower median:
    # never reported; with c = 1 the ones above the median lose only a few percent.
    rule, wide = RobustRule(screen=True), RobustRule(scale=2.0)
    gen = torch.Generator().manual_seed(1)
    own = torch.zeros(2000)
    for _ in range(50):
        received = {j: torch.randn(2000, generator=gen) * 3.0 for j in range(4)}
        out = rule.apply(received, dict.fromkeys(received, own))
        wide.apply(received, dict.fromkeys(received, own))
        assert all(distance(out[j], own) >= 0.95 * distance(received[j], own) for j in out)
        assert not wide.clipped
    assert rule.suspects() == []


def test_dual_reference_predicts_an_honest_neighbour_at_consensus_exactly() -> None:
    # At consensus (w_j = w_i) with z_{j|i} = s_{i|j}, j's message is exactly the reference.
    params = PrimalDualParams(lr=0.1, eta=0.5, alpha=0.2)
    w = torch.randn(6)
    i, j = PrimalDual(0, [1], w, params), PrimalDual(1, [0], w, params)
    sent = i.dual_messages({1}, _none())[1]  # s_{0|1}
    j.absorb({0: sent})
    y_ji = j.dual_messages({0}, _none())[0]
    ref = dual_reference(params.kappa, params.beta, i.signs[1], sent, w)
    assert torch.allclose(y_ji, ref, atol=1e-6)


def test_gossip_clips_a_far_neighbour_before_mixing() -> None:
    weights = {0: 1 / 3, 1: 1 / 3, 2: 1 / 3}
    g = Gossip(0, weights, torch.zeros(4), lr=0.1)
    g.robust = RobustRule(radius=1.0)
    g.absorb({1: torch.tensor([0.5, 0.0, 0.0, 0.0]), 2: torch.tensor([100.0, 0.0, 0.0, 0.0])})
    assert torch.allclose(g.w, torch.tensor([(0.5 + 1.0) / 3, 0.0, 0.0, 0.0]))


@pytest.mark.parametrize("changes, fragment", [
    ({"robust": "median"}, "unknown robust mode"),
    ({"robust_radius": 0.0}, "robust_radius must be a positive"),
    ({"robust_radius": -1.0}, "robust_radius must be a positive"),
    ({"robust_scale": math.inf}, "robust_scale must be a positive finite"),
])
def test_bad_robust_settings_are_one_sentence(changes: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as err:
        RunConfig(**changes)  # type: ignore[arg-type]
    assert str(err.value).count(". ") == 0 and str(err.value).endswith(".")


def _none() -> NoNoise:
    return NoNoise()


def test_a_restarted_node_keeps_its_verdicts_and_references_through_the_checkpoint(
        tmp_path: Path) -> None:
    # A ring node 0 with an honest neighbour 1 and a far one 2; interrupted after 8 rounds, the
    # resumed copy must clip round 9 exactly as the uninterrupted node does.
    params = PrimalDualParams(lr=0.1, eta=0.5, alpha=0.2)
    gen = torch.Generator().manual_seed(3)

    def node() -> PrimalDual:
        n = PrimalDual(0, [1, 2], torch.zeros(50), params)
        n.robust = RobustRule(screen=True)
        return n

    def received() -> dict[int, torch.Tensor]:
        return {1: torch.randn(50, generator=gen) * 0.01, 2: torch.full((50,), 3.0)}

    rounds = [received() for _ in range(9)]
    live = node()
    for msgs in rounds[:8]:
        live.absorb(msgs)
        live.dual_messages({1, 2}, _none())
    path = tmp_path / "checkpoint.npz"
    save_checkpoint(path, Checkpoint(7, {**live.state_dict(), **live.robust_state()}, None, {}))
    ckpt = load_checkpoint(path)
    assert ckpt is not None
    resumed = node()
    resumed.load_state_dict(ckpt.state)
    resumed.load_robust_state(ckpt.state)
    assert resumed.robust is not None and live.robust is not None
    assert resumed.robust.suspects() == live.robust.suspects() == [2]
    assert resumed.robust.scores == pytest.approx(live.robust.scores)
    assert resumed.robust.heard == live.robust.heard
    live.absorb(rounds[8])
    resumed.absorb(rounds[8])
    assert all(torch.equal(live.duals[j], resumed.duals[j]) for j in (1, 2))
    # Without the saved screen a fresh node would trust neighbour 2 fully again.
    fresh = node()
    fresh.load_state_dict(ckpt.state)
    fresh.absorb(rounds[8])
    assert not torch.equal(fresh.duals[2], live.duals[2])
