"""A distinguishing experiment on the real runner: does a node's first release leak more than
the ε it prints?

Two worlds for node 0 of a two-node line: its data D (background examples whose first feature
is 0), or D' = D plus one canary whose first feature is large — the worst case for clipping, its
gradient uses the whole budget C along a direction no background example touches. Each trial
builds nothing new: it resets the model and reseeds the private generator (fresh Poisson sample
and fresh noise), runs `NodeRunner.step` exactly as the simulator and the daemon do, and scores
the message node 0 sends by its projection on the canary's first-feature weights. q and the
normaliser are the public constants of D (n̂ = |D|), so in D' the canary is one more example
sampled at the same rate — the add/remove adjacency the accountant assumes.

`privacy.audit.epsilon_lower_bound` turns the scores into ε_lb, which must stay below the printed
ε; `noise_scale < 1` shrinks the noise behind the plan's back, the positive control that shows
the auditor can see a violation. `scripts/audit_privacy.py` runs it at full size.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import torch

from node.config import RunConfig
from node.core.assemble import build_graph, build_node
from node.core.data import Dataset
from node.core.mechanism import GaussianDualNoise
from node.core.runner import NodeRunner
from node.core.seeds import noise_seed
from privacy.audit import epsilon_lower_bound

FEATURES, CLASSES = 6, 2
Mode = Literal["message", "gradient"]
# The algorithm each mode is audited on: DP-ECL releases duals, D-PSGD its model.
AUDITED: dict[Mode, Literal["ecl", "dpsgd"]] = {"message": "ecl", "gradient": "dpsgd"}


@dataclass(frozen=True)
class AuditResult:
    printed_epsilon: float
    epsilon_lower_bound: float
    trials: int

    @property
    def holds(self) -> bool:
        return self.epsilon_lower_bound <= self.printed_epsilon


def audit_config(mode: Mode, *, epsilon: float = 2.0, examples: int = 64,
                 batch: int = 32) -> RunConfig:
    """One round of a two-node line, message mode (DP-ECL) or gradient mode (DP-D-PSGD)."""
    return RunConfig(topology="line", nodes=2, rounds=1, algorithm=AUDITED[mode], epsilon=epsilon,
                     privacy_mode=mode, model="logreg", dataset="synthetic", batch_size=batch,
                     clip=1.0, lr=0.5, public_examples=examples, primal_every=0)


def canary_worlds(examples: int, seed: int = 0) -> tuple[Dataset, Dataset]:
    """(D, D') as described in the module docstring."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(examples, FEATURES, generator=g)
    x[:, 0] = 0.0
    y = torch.randint(0, CLASSES, (examples,), generator=g)
    canary = torch.zeros(1, FEATURES)
    canary[0, 0] = 1e3
    test_x, test_y = x[:8], y[:8]
    d = Dataset(x, y, test_x, test_y, CLASSES, (FEATURES,), "audit")
    d_prime = Dataset(torch.cat([x, canary]), torch.cat([y, torch.tensor([0])]), test_x, test_y,
                      CLASSES, (FEATURES,), "audit+canary")
    return d, d_prime


def release_scores(cfg: RunConfig, data: Dataset, trials: int, *, seed: int,
                   noise_scale: float = 1.0) -> tuple[list[float], float]:
    """Scores of node 0's first message over `trials` runs, and the ε it printed."""
    graph = build_graph(cfg)
    setup = build_node(cfg, graph, 0, data, noise_seed=seed, size_is_public=False)
    if noise_scale != 1.0:  # the positive control: less noise than the plan says
        policy = setup.trainer.policy
        setup.trainer.policy = replace(policy,
                                       noise_multiplier=policy.noise_multiplier * noise_scale)
        if isinstance(setup.noise, GaussianDualNoise):
            setup.noise = GaussianDualNoise(setup.noise.std * noise_scale,
                                            setup.noise.generator)
    w0 = setup.algorithm.w.clone()
    # The weight of feature 0 for class 0 minus that for class 1 (the Linear layer's weight is
    # (classes, features)): where the canary's (label 0) clipped gradient, and nothing else
    # in D, moves the model.
    probe = torch.zeros(setup.layout.numel)
    weight = next(v for v in setup.layout.unflatten(probe).values() if v.dim() == 2)
    weight[0, 0], weight[1, 0] = 1.0, -1.0
    scores, printed = [], 0.0
    generator = setup.trainer.noise_generator
    assert generator is not None
    for t in range(trials):
        setup.algorithm.w = w0.clone()
        generator.manual_seed(noise_seed(seed, t) or 0)
        runner = NodeRunner(cfg, setup)
        out = runner.step({1})
        released = out.duals[1]
        assert isinstance(released, torch.Tensor)  # the audit runs uncompressed
        scores.append(float(released @ probe))
        printed = runner.epsilon() or 0.0
    return scores, printed


def audit(mode: Mode, *, trials: int, seed: int = 0, noise_scale: float = 1.0,
          epsilon: float = 2.0, delta: float = 1e-5) -> AuditResult:
    cfg = audit_config(mode, epsilon=epsilon).replace(delta=delta)
    d, d_prime = canary_worlds(cfg.public_examples or 64, seed)
    negatives, printed = release_scores(cfg, d, trials, seed=seed, noise_scale=noise_scale)
    positives, _ = release_scores(cfg, d_prime, trials, seed=seed + 1, noise_scale=noise_scale)
    bound = epsilon_lower_bound(positives, negatives, delta=delta)
    return AuditResult(printed, bound, trials)
