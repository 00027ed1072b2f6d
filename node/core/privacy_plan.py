"""The calibration of a node's privacy mechanism (docs/DESIGN.md §2).

The mechanism (node.core.mechanism) is fixed before training from public quantities (target ε,
δ, rounds, K, the sampling rate, the clip, the degree): every noisy mechanism's releases are
subsampled Gaussians, so one z is calibrated for the releases the mechanism makes, and the
mechanism turns it into its noise; the budget charges its `releases` for each round run.
"""

from __future__ import annotations

import math

import networkx as nx

from node.config import RunConfig
from node.core.algorithm import PrimalDualParams
from node.core.mechanism import Mechanism, mechanism_type
from node.errors import ConfigError
from privacy.accountant import calibrate_noise_multiplier, check_delta
from privacy.discrete import available as discrete_available
from privacy.discrete import calibrate as discrete_calibrate
from privacy.errors import PrivacyError
from topologies import max_degree as graph_max_degree


def sample_rate(cfg: RunConfig, public_examples: int | None, node: int) -> tuple[float, float]:
    """(q, n̂): the Poisson rate and the public dataset size it is fixed from, before training.

    q is `cfg.sample_rate` when given, else B/n̂ with n̂ = `cfg.public_examples` or the size the
    caller declares public (`public_examples`: a shard of a public dataset). A private run with
    neither, or with q ≥ 1, is refused: q from the private data itself is not covered by the
    accountant, and q ≥ 1 leaves no subsampling to amplify with."""
    declared = cfg.public_examples if cfg.public_examples is not None else public_examples
    if cfg.sample_rate is not None:
        # Given directly, q fixes the expected batch size B = q·n̂ with n̂ = B/q.
        q = cfg.sample_rate
        n = float(declared) if declared is not None else cfg.batch_size / q
    elif declared is not None:
        n, q = float(declared), min(cfg.batch_size, declared) / declared
    else:
        raise ConfigError(f"node {node} reads its own data, whose size is private; declare the "
                          "Poisson sampling rate (sample_rate = q) or a public dataset size "
                          "(public_examples = n) so that q is fixed before training.")
    if cfg.private and not q < 1:
        raise ConfigError(f"node {node}: batch_size {cfg.batch_size} is not below its public "
                          f"dataset size {n:g}, so the sampling rate q = {q:.3g} would be ≥ 1; "
                          "lower --batch-size (or sample_rate) below the number of examples.")
    return q, n


def formal_guarantee(cfg: RunConfig, *, released: bool) -> bool:
    """Whether a proof covers what this run prints: the mechanism's own condition (message mode
    needs K = 1, docs/DESIGN.md §2), and no fixed noise seed in a run whose messages are really sent
    (`released`: the daemon), which would let every peer — they all hold the same config —
    regenerate the noise and the batches; the simulator releases nothing, so its seeded noise
    stands for the OS-entropy noise."""
    return mechanism_type(cfg).proven(cfg) and not (released and cfg.noise_seed is not None)


def privacy_plan(cfg: RunConfig, graph: nx.Graph, node: int,
                 public_examples: int | None, *, released: bool = False,
                 max_degree: int | None = None,
                 params: PrimalDualParams | None = None, rows: int | None = None) -> Mechanism:
    """This node's mechanism, calibrated for its public dataset size and degree (always on the
    safe side). `public_examples` is the node's dataset size where that is public (a shard of
    a public dataset, or any run without a privacy claim), None where it is not (a node's own
    file in a private run). `max_degree` is the graph's, when the caller already has it (the
    simulator, for N nodes of one graph); `params` the primal-dual algorithm's, when the caller
    runs one (`build_node`): a mechanism that noises the duals sizes its noise from them;
    `rows` the number of examples the node really trains on, where the caller knows it."""
    q, n = sample_rate(cfg, public_examples, node)
    kind = mechanism_type(cfg)
    if not kind.claims_privacy:
        return kind.calibrated(cfg, sample_rate=q, n=n, noise_multiplier=0.0, formal=True,
                               degree=graph.degree(node), params=params)
    try:
        check_delta(cfg.delta, math.ceil(n))
        if rows is not None and rows > n:
            # δ bounds the chance that the guarantee fails for the data the node holds: with
            # δ ≥ 1/n a mechanism that publishes one random row of n would pass, however
            # small the n̂ it declared.
            check_delta(cfg.delta, rows)
        if params is None and kind.noises_duals:
            if max_degree is None:
                max_degree = graph_max_degree(graph)
            params = PrimalDualParams.from_config(cfg, max_degree)
        if kind.discrete and not discrete_available():
            raise ConfigError("--secure-noise needs OpenDP's exact samplers, which are not "
                              "installed: pip install opendp.")
        # The discrete Gaussian's releases have their own accountant (privacy.discrete).
        calibrate = discrete_calibrate if kind.discrete else calibrate_noise_multiplier
        z = calibrate(cfg.epsilon, cfg.delta, q, kind.steps(cfg))
        return kind.calibrated(cfg, sample_rate=q, n=n, noise_multiplier=z,
                               formal=formal_guarantee(cfg, released=released),
                               degree=graph.degree(node), params=params)
    except PrivacyError as exc:
        raise ConfigError(str(exc)) from None

