"""FedAvg and SCAFFOLD as pure updates (node.sim.aggregation), checked against what the papers'
rules imply on quadratics, where every quantity has a closed form."""

from __future__ import annotations

import torch

from node.sim.aggregation import ScaffoldState, fedavg, scaffold

# Client i: f_i(w) = ½ a_i ‖w − b_i‖². Unequal curvatures make FedAvg with K > 1 local steps
# drift from the global optimum Σ a_i b_i / Σ a_i; SCAFFOLD's control variates remove the drift.
CURVATURE = torch.tensor([0.5, 1.0, 3.0])
TARGETS = torch.tensor([[1.0, -2.0], [0.0, 4.0], [-3.0, 1.0]])
OPTIMUM = (CURVATURE[:, None] * TARGETS).sum(0) / CURVATURE.sum()
STEPS, LR = 5, 0.1


def local_steps(i: int, w: torch.Tensor, correction: torch.Tensor) -> torch.Tensor:
    for _ in range(STEPS):
        w = w - LR * (CURVATURE[i] * (w - TARGETS[i]) + correction)
    return w


def test_fedavg_is_the_weighted_average() -> None:
    models = [torch.tensor([1.0, 2.0]), torch.tensor([3.0, -2.0])]
    assert torch.equal(fedavg(models, [0.25, 0.75]), torch.tensor([2.5, -1.0]))
    assert torch.equal(fedavg([models[0]] * 3, [0.5, 0.25, 0.25]), models[0])


def test_one_scaffold_round_from_zero_controls() -> None:
    """With c = c_i = 0 and constant gradients g_i, y_i = x − K·lr·g_i, so option II gives
    c_i⁺ = g_i, c⁺ = mean g_i and x⁺ = x − K·lr·mean g_i."""
    x = torch.tensor([1.0, 1.0])
    grads = [torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])]
    state = ScaffoldState.start(x, 2)
    after = scaffold(state, [x - STEPS * LR * g for g in grads], STEPS, LR)
    for got, want in zip(after.client_controls, grads, strict=True):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(after.control, torch.tensor([0.5, 1.0]))
    torch.testing.assert_close(after.model, x - STEPS * LR * torch.tensor([0.5, 1.0]))


def test_scaffold_reaches_the_optimum_where_fedavg_drifts() -> None:
    start = torch.zeros(2)
    w = start
    state = ScaffoldState.start(start, len(CURVATURE))
    for _ in range(300):
        w = fedavg([local_steps(i, w, torch.zeros(2)) for i in range(3)], [1 / 3] * 3)
        state = scaffold(state, [local_steps(i, state.model, state.correction(i))
                                 for i in range(3)], STEPS, LR)
    # Equal weights, as the reference weighs equal-sized shards: the drift-free fixed point
    # is the minimiser of Σ f_i.
    assert float((state.model - OPTIMUM).norm()) < 1e-4
    assert float((w - OPTIMUM).norm()) > 0.1  # client drift: FedAvg's fixed point is elsewhere
