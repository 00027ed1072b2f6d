"""Privacy of the node's real code path: data flow, clipping, noise scale, gradient inversion.

Four of the checks of docs/PRIVACY.md, "How it is tested", run through what the daemon runs
(assemble.build_node, NodeRunner, LocalTrainer, PrimalDual/Gossip) rather than through privacy/
alone:

- D: with clipping forced to C = 0 (which also zeroes the gradient noise z·C), the encoded
  outgoing messages are byte-identical for two unrelated private datasets; with C > 0 they differ;
- C: one example moves the trainer's gradient by at most C/(q·n) (add/remove) before noise;
- B: the noise the trainer adds has std z·C/(q·n), the per-edge dual noise has std plan.sigma,
  each within 2 %, and the same check rejects a factor-2 error;
- F: a neighbour inverts a non-private ECL message back to the training input (cosine ≈ 1), but
  not a message-mode DP one at ε = 1.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Iterator

import networkx as nx
import pytest
import torch
from torch import Tensor

from gossip.codec import encode
from gossip.messages import Dual, Primal
from node.config import RunConfig
from node.core import privacy_plan
from node.core.algorithm import NoNoise, PrimalDual
from node.core.assemble import NodeSetup, build_graph, build_node
from node.core.data import Dataset, synthetic
from node.core.model import GradientPolicy, LocalTrainer, build_model
from node.core.model.models import flatten
from node.core.runner import NodeRunner
from privacy.accountant import calibrate_noise_multiplier
from privacy.mechanisms import poisson_sample

NODE = 0
TOL = 0.02  # relative tolerance of the noise-scale checks (issue 3)


def _cfg(**changes: object) -> RunConfig:
    base: dict[str, object] = dict(topology="ring", nodes=4, rounds=5, dataset="synthetic",
                                   model="logreg", lr=0.5, batch_size=16, test_examples=50,
                                   primal_every=1, epsilon=2.0, seed=0)
    base.update(changes)
    return RunConfig(**base)  # type: ignore[arg-type]


def _shard(seed: int, n: int, *, image: bool = False, dim: int = 24,
           test: Dataset | None = None) -> Dataset:
    data = synthetic(n, 50, dim=dim, image=image, seed=seed)
    test = test or data
    return Dataset(data.x_train, data.y_train, test.x_test, test.y_test, data.num_classes,
                   data.in_shape, "synthetic")


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Tiny models: torch's thread pool only adds contention on a shared 2-core machine (a
    # logreg step takes ~100 ms with 2 busy threads, ~0.3 ms with one).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _calibrate_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nodes are built by the real build_node/privacy_plan, but each (ε, δ, q, steps) is
    calibrated once: a PLD calibration takes about a second and these tests build many nodes."""
    monkeypatch.setattr(privacy_plan, "calibrate_noise_multiplier", _calibrate)


@functools.cache
def _calibrate(epsilon: float, delta: float, q: float, steps: int) -> float:
    return calibrate_noise_multiplier(epsilon, delta, q, steps)


def _node(cfg: RunConfig, data: Dataset, *, noise_seed: int = 123) -> tuple[NodeSetup, nx.Graph]:
    graph = build_graph(cfg)
    return build_node(cfg, graph, NODE, data, noise_seed=noise_seed), graph


# ---- D. data flow ------------------------------------------------------------------------

def _wire_transcript(cfg: RunConfig, data: Dataset, policy: GradientPolicy, *,
                     dual_noise: bool, rounds: int = 3) -> list[bytes]:
    """Every byte node 0 would put on the wire in `rounds` rounds, with replayed inputs."""
    setup, _ = _node(cfg, data)
    setup.trainer.policy = policy
    if not dual_noise:
        setup.noise = NoNoise()
    runner = NodeRunner(cfg, setup)
    replay = torch.Generator().manual_seed(99)   # the neighbours' messages: public, replayed
    d = setup.layout.numel
    frames: list[bytes] = []
    seq = 0
    for r in range(rounds):
        received = {j: torch.randn(d, generator=replay) for j in setup.neighbours}
        if r:
            runner.absorb(received)
        out = runner.step(set(setup.neighbours))
        messages: list[Dual | Primal] = [Dual(NODE, r, seq + k, y.numpy())
                                         for k, (_, y) in enumerate(sorted(out.duals.items()))]
        seq += len(messages)
        if out.primal is not None:
            messages.append(Primal(NODE, r, seq, out.primal.numpy()))
            seq += 1
        for msg in messages:
            frames += [bytes(f) for f in encode(msg)]
    return frames


@pytest.mark.parametrize(("algorithm", "mode"), [("dpnorm", "message"), ("ecl", "message"),
                                                 ("dpnorm", "gradient"), ("dpsgd", "gradient")])
def test_outgoing_bytes_do_not_depend_on_the_private_data_when_clipping_is_zero(
    algorithm: str, mode: str,
) -> None:
    cfg = _cfg(algorithm=algorithm, privacy_mode=mode)
    test_split = _shard(0, 50)
    d_a, d_b = _shard(1, 120, test=test_split), _shard(2, 120, test=test_split)
    assert not torch.equal(d_a.x_train, d_b.x_train)
    kind = "noisy" if mode == "gradient" else "clipped"
    setup, _ = _node(cfg, d_a)
    z = setup.plan.noise_multiplier
    zero = GradientPolicy(kind, clip=0.0, noise_multiplier=z)   # noise z·C = 0 too
    real = GradientPolicy(kind, clip=1.0, noise_multiplier=z)
    # Message mode: with and without its (data-independent, same-seed) dual noise.
    for dual_noise in ((False, True) if mode == "message" else (False,)):
        a = _wire_transcript(cfg, d_a, zero, dual_noise=dual_noise)
        b = _wire_transcript(cfg, d_b, zero, dual_noise=dual_noise)
        assert len(a) > 0 and a == b, f"{algorithm}/{mode}: messages depend on the data"
        # Positive control: the same comparison notices the data once C > 0.
        a = _wire_transcript(cfg, d_a, real, dual_noise=dual_noise)
        b = _wire_transcript(cfg, d_b, real, dual_noise=dual_noise)
        assert a != b, f"{algorithm}/{mode}: the data-flow check cannot see the data at all"


# ---- C. one example's influence --------------------------------------------------------

def _trainer(data: Dataset, policy: GradientPolicy, *, batch: int, seed: int) -> LocalTrainer:
    model = build_model("logreg", in_shape=data.in_shape, num_classes=data.num_classes, seed=0)
    return LocalTrainer(model, data.x_train, data.y_train, data.x_test, data.y_test,
                        batch_size=batch, policy=policy,
                        data_generator=torch.Generator().manual_seed(0),
                        noise_generator=torch.Generator().manual_seed(seed))


def _with_example(data: Dataset, x: Tensor, y: int, at: int | None = None) -> Dataset:
    """`data` with (x, y) appended (at=None) or replacing example `at`."""
    xs, ys = data.x_train.clone(), data.y_train.clone()
    if at is None:
        xs, ys = torch.cat([xs, x[None]]), torch.cat([ys, torch.tensor([y])])
    else:
        xs[at], ys[at] = x, y
    return Dataset(xs, ys, data.x_test, data.y_test, data.num_classes, data.in_shape, data.name)


def _canary(data: Dataset) -> tuple[Tensor, int]:
    """An example whose gradient is enormous (features × 10⁶, a wrong label)."""
    return data.x_train[0] * 1e6, int(data.y_train[0] + 1) % data.num_classes


def test_one_example_moves_the_step_by_at_most_c_over_b() -> None:
    """Add/remove through the real trainer and its real sampler: q and the normaliser B are the
    public constants of D, so D' = D ∪ {x*} keeps D's Poisson draws (x* is appended, and the
    draws are taken in order) and the step moves by clip(∇x*)/B at most. With q or the
    normaliser recomputed from the data, as before, D' sampled with another rate and the
    step moved by far more than C/B."""
    n, batch = 80, 10
    data = _shard(3, n)
    qn = batch
    x_star, y_star = _canary(data)
    w = flatten(build_model("logreg", in_shape=data.in_shape, num_classes=data.num_classes,
                            seed=0))
    # A seed whose draw for x* (the (n+1)-th) puts it in the batch.
    seed = next(s for s in range(100)
                if float(torch.rand(n + 1, generator=torch.Generator().manual_seed(s))[n])
                < batch / n)

    def influence(clip: float) -> float:
        policy = GradientPolicy("clipped", clip=clip, sample_rate=batch / n, expected_batch=qn)
        g, _ = _trainer(data, policy, batch=batch, seed=seed).gradient(w)
        g2, _ = _trainer(_with_example(data, x_star, y_star), policy, batch=batch,
                         seed=seed).gradient(w)
        return float((g2 - g).double().norm())

    for clip in (0.1, 1.0, 3.0):
        moved = influence(clip)
        assert moved <= clip / qn * (1 + 1e-5), (clip, moved)
        assert moved >= 0.99 * clip / qn, "the canary should use its whole budget C"
    # Positive control: without effective clipping the same check fails by orders of magnitude.
    assert influence(1e12) > 100 * 1.0 / qn

    # Replace-one through the unmodified trainer and its seeded sampler: ≤ 2C/(q·n).
    sample = poisson_sample(n, batch / n, torch.Generator().manual_seed(seed))
    assert len(sample) > 0
    k = int(sample[0])
    policy = GradientPolicy("clipped", clip=1.0, sample_rate=batch / n, expected_batch=qn)
    g, _ = _trainer(data, policy, batch=batch, seed=seed).gradient(w)
    g2, _ = _trainer(_with_example(data, x_star, y_star, at=k), policy, batch=batch,
                     seed=seed).gradient(w)
    assert float((g2 - g).double().norm()) <= 2.0 / qn * (1 + 1e-5)


# ---- B. noise statistics ---------------------------------------------------------------

def _scale_matches(sample: Tensor, expected_std: float, tol: float = TOL) -> bool:
    """The check of issue 3: zero mean (4σ/√d) and empirical std within `tol` of `expected`."""
    d = sample.numel()
    x = sample.double()
    mean_ok = abs(float(x.mean())) < 4 * expected_std / math.sqrt(d)
    return mean_ok and abs(float(x.std()) / expected_std - 1.0) < tol


def test_gradient_noise_has_std_z_c_over_qn_and_a_factor_two_error_is_caught() -> None:
    data = _shard(4, 400, image=True)            # 784 inputs → MLP with d ≈ 10⁵ parameters
    batch, clip, z, seed = 20, 0.7, 1.3, 11
    model = build_model("mlp", in_shape=data.in_shape, num_classes=data.num_classes,
                        width=128, seed=0)
    trainer = LocalTrainer(model, data.x_train, data.y_train, data.x_test, data.y_test,
                           batch_size=batch, policy=GradientPolicy("clipped", clip, 0.0,
                                                                   batch / 400, batch),
                           data_generator=torch.Generator().manual_seed(0),
                           noise_generator=torch.Generator())
    w = trainer.layout.flatten(model)
    d = w.numel()
    assert d >= 100_000

    def step(kind: str) -> Tensor:
        trainer.policy = GradientPolicy(kind, clip, z, batch / 400, batch)  # type: ignore[arg-type]
        trainer.noise_generator.manual_seed(seed)        # type: ignore[union-attr]
        return trainer.gradient(w)[0]

    clipped, noisy = step("clipped"), step("noisy")      # same Poisson sample, same clipped sum
    noise = noisy - clipped
    expected = z * clip / batch
    measured = float(noise.double().std())
    assert _scale_matches(noise, expected), (measured, expected)
    assert not _scale_matches(noise, 2 * expected)       # a factor-2 error fails this check
    assert not _scale_matches(noise, expected / 2)
    # Fresh draws each step (never a replayed noise vector).
    trainer.policy = GradientPolicy("noisy", clip, z, batch / 400, batch)
    again = trainer.gradient(w)[0] - trainer.gradient(w)[0]
    assert float(again.abs().max()) > 0


def test_message_mode_dual_noise_has_std_sigma_per_edge_and_is_independent() -> None:
    cfg = _cfg(model="mlp", width=128, nodes=5, topology="ring", epsilon=1.0, batch_size=20)
    data = _shard(5, 400, image=True)
    setup, graph = _node(cfg, data)
    plan = setup.plan
    assert plan.mode == "message" and plan.sigma > 0
    # σ is safe for every number of active neighbours: z(E) ≥ the calibrated z.
    for e in range(1, graph.degree(NODE) + 1):
        assert plan.round_noise_multiplier(e) >= plan.noise_multiplier * (1 - 1e-9)
    algorithm = setup.algorithm
    assert isinstance(algorithm, PrimalDual)
    active = set(setup.neighbours)
    gen = torch.Generator().manual_seed(21)
    for z in algorithm.duals.values():     # non-trivial state: nonzero duals and model
        z.copy_(torch.randn(z.shape, generator=gen))
    clean, noisy = copy.deepcopy(algorithm), copy.deepcopy(algorithm)
    y_clean = clean.messages(active, NoNoise())
    y_noisy = noisy.messages(active, setup.noise)
    xi = {j: y_noisy[j] - y_clean[j] for j in active}
    d = algorithm.w.numel()
    for j, sample in xi.items():
        measured = float(sample.double().std())
        assert _scale_matches(sample, plan.sigma), (j, measured, plan.sigma)
        assert not _scale_matches(sample, 2 * plan.sigma)
    a, b = (xi[j].double() for j in sorted(active))
    corr = float((a - a.mean()) @ (b - b.mean()) / (a.std() * b.std() * (d - 1)))
    assert abs(corr) < 4 / math.sqrt(d), corr
    # The node continues from what its neighbours can reconstruct jointly (docs/DESIGN.md §2).
    p = algorithm.params
    shift = sum(algorithm.signs[j] * xi[j] for j in active) / (2 * p.beta * len(active))
    torch.testing.assert_close(noisy.w, clean.w - shift, rtol=0, atol=1e-5)


# ---- F. gradient inversion -------------------------------------------------------------

def _invert_round0(setup: NodeSetup, w0: Tensor, duals: dict[int, Tensor]) -> Tensor:
    """What a coalition of neighbours recovers from node 0's round-0 duals (K = 1, z = 0).

    y_{i|j} = −2β·A_{i|j}·w (+ ξ), so w ≈ mean_j(−y_j / (2β·A_j)); the closed-form step then
    gives g = μ·w0 − (μ + βηE)·w; for logreg with one example, row r of dL/dW over dL/db_r is x.
    """
    alg = setup.algorithm
    assert isinstance(alg, PrimalDual)
    p = alg.params
    w = torch.stack([-y / (2 * p.beta * alg.signs[j]) for j, y in duals.items()]).mean(0)
    g = (p.mu * w0 - (p.mu + p.beta * p.eta * len(duals)) * w).double()
    (_, (classes, features)), _ = setup.layout.spec
    dw, db = g[: classes * features].reshape(classes, features), g[classes * features:]
    r = int(db.abs().argmax())
    return dw[r] / db[r]


def _cosine(a: Tensor, b: Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=0))


def _attack(cfg: RunConfig, data: Dataset, *, clip: float | None = None
            ) -> tuple[float, float]:
    """Run node 0's round 0 on a one-example batch; return (cosine, Pearson r) of the attack."""
    setup, _ = _node(cfg, data)
    trainer = setup.trainer
    for noise_seed in range(100):   # private policies: find a Poisson sample of exactly one
        if trainer.policy.kind == "plain":
            probe = torch.Generator().set_state(trainer.data_generator.get_state())
            picked = torch.randperm(trainer.n, generator=probe)[:1]
        else:
            assert trainer.noise_generator is not None   # shared with the dual noise
            trainer.noise_generator.manual_seed(noise_seed)
            probe = torch.Generator().set_state(trainer.noise_generator.get_state())
            picked = poisson_sample(trainer.n, trainer.policy.sample_rate, probe)
        if len(picked) == 1:
            break
    else:
        raise AssertionError("no seed gave a one-example Poisson sample")
    if clip is not None:
        trainer.policy = GradientPolicy("clipped", clip, 0.0, trainer.policy.sample_rate,
                                        trainer.policy.expected_batch)
        setup.noise = NoNoise()
    w0 = setup.algorithm.w.clone()
    out = NodeRunner(cfg, setup).step(set(setup.neighbours))
    x_hat = _invert_round0(setup, w0, out.duals)
    x = data.x_train[int(picked[0])].reshape(-1).double()
    pearson = float(torch.corrcoef(torch.stack([x_hat, x]))[0, 1])
    return _cosine(x_hat, x), pearson


def test_gradient_inversion_recovers_the_input_without_dp_but_not_with_dp() -> None:
    data = _shard(6, 100, dim=64)   # a random guess has |cosine| ≈ 1/√64 = 0.125
    common = dict(model="logreg", batch_size=1, local_steps=1, primal_every=0)
    cos, r = _attack(_cfg(algorithm="ecl", epsilon=math.inf, **common), data)
    assert cos > 0.99 and r > 0.99, (cos, r)
    # Clipping alone does not protect: the attack is a ratio, invariant to scale.
    cos, r = _attack(_cfg(algorithm="dpnorm", epsilon=1.0, **common), data, clip=0.1)
    assert cos > 0.99 and r > 0.99, (cos, r)
    # Message-mode DP at ε = 1: the reconstruction is no better than a random guess.
    cos, r = _attack(_cfg(algorithm="dpnorm", epsilon=1.0, **common), data)
    assert abs(cos) < 0.5 and abs(r) < 0.5, (cos, r)
