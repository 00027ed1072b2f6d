"""Byzantine-robust aggregation for one node: self-centred clipping of what the neighbours sent.

Pure code beside the algorithm: it sees only the messages received this round and a reference
per neighbour computed from the node's own state, never the network. `--robust clip` and
`--robust clip+screen` turn it on; `off` leaves the algorithms exactly as they were.

Clipping. For a received vector v_j and the node's reference r_j,

    CLIP(v_j; r_j, τ) = r_j + (v_j − r_j) · min(1, τ / ‖v_j − r_j‖)

so a neighbour within τ of what the node expects is used untouched (the very same tensor), and
a far one is moved onto the sphere of radius τ around r_j. What a neighbour can do to the node
per round is then bounded by τ times its weight, whatever it sends.

- Gossip family (ClippedGossip / self-centred clipping, He, Karimireddy & Jaggi 2022): r_j is
  the node's own model x_i, and the mixing is x_i ← W_ii·x_i + Σ_j W_ij·CLIP(x_j; x_i, τ)
  (for CHOCO the node's public copy x̂_{i→j} stands in for x_i).
- Primal-dual family (clipping in the dual, after Gaucher, Hendrikx & Dieuleveut 2024): node j
  sends y_{j|i} = κ·z_{j|i} − 2β·A_{j|i}·w_j (+ ξ). Had j set z_{j|i} to what i sent it last
  round (s_{i|j}, θ = 1) and were it at consensus (w_j = w_i), i would receive (w_i taken
  after the message-mode continuation, a function of i's releases)

      r_{j|i} = κ·s_{i|j} + 2β·A_{i|j}·w_i          (A_{j|i} = −A_{i|j})

  so y_{j|i} − r_{j|i} = −2β·A_{j|i}·(w_j − w_i) + ξ_{ji} (+ i's continuation): the
  disagreement of the models plus noise. The dual update uses CLIP(y_{j|i}; r_{j|i}, τ), so one bad
  edge cannot drag z_{i|j} (and through it w_i) further than τ per round.

Radius. A fixed τ (`robust_radius`; inf = never clip, which leaves mixing and ECL bit for bit),
or adaptive: τ = c · m, c = `robust_scale` (default 1), m the lower median of this round's
distances ‖v_j − r_j‖ together with the node's own: how far its own message moved since the
previous round (‖x_i − x_i⁻‖ for gossip, 2β·‖w_i − w_i⁻‖ for the duals, the same units). The
node counts as one honest voice, so as long as Byzantine neighbours are fewer than half of
(neighbours + 1) — one of two on a ring, two of four on a torus — m lies between two honest
values: attackers can neither inflate τ by being far nor shrink it to zero by sending exactly
the reference (that would cut the node off from its honest neighbours). Honest neighbours
within c·m are never touched, under DP too (their distances are noise-dominated and alike).
What clipping cannot remove is an attack within τ (ALIE, dissensus on a sparse graph): its
effect is bounded by τ per round, not cancelled.

Screening (`clip+screen`): each neighbour's score s_j is an exponential average (factor 0.8)
of "was farther than 2·m this round" (whatever c is). After `SCREEN_AFTER` rounds heard it acts
on the radius: neighbour j is clipped to τ_j = τ · max(0.1, 1 − 2·s_j), so one that keeps
standing out loses its pull round by round, and a score above one half marks it suspicious
(metrics.jsonl and final.json `suspects`). Clipping alone bounds an attacker's pull by τ per
round but cannot cancel a persistent one (a ring node with one honest and one Byzantine
neighbour is pulled as hard by each); the score is the memory that tells them apart. The radius
never reaches zero: a suspect is still clipped, never dropped, so an honest neighbour wrongly
scored (DP noise, a round of disagreement) still pulls with a tenth of τ and regains its radius
as its score decays. Honest-but-noisy DP neighbours have alike distances and are not scored.

Clipping what was received is post-processing: it reads only released messages (the
neighbours' and the node's own) and state reconstructible from releases (the gossip model, a
DP output in gradient mode; the continued w in message mode), so it changes no privacy
accounting (docs/PRIVACY.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from node.config import RunConfig

SCREEN_AFTER = 3
SCREEN_DECAY = 0.8
SCREEN_THRESHOLD = 0.5
SCREEN_FACTOR = 2.0  # a distance beyond this many times m counts against a neighbour
TRUST_FLOOR = 0.1  # a suspect's radius shrinks to this fraction of τ, never to zero


def distance(value: Tensor, reference: Tensor) -> float:
    """‖value − reference‖, in float64 when float32 overflows (extreme but finite values)."""
    d = float(torch.linalg.vector_norm(value - reference))
    if math.isfinite(d):
        return d
    return float(torch.linalg.vector_norm(value.double() - reference.double()))


def clip_towards(value: Tensor, reference: Tensor, tau: float,
                 dist: float | None = None) -> Tensor:
    """CLIP(value; reference, τ): `value` itself when within τ, else the point at distance τ
    from `reference` on the segment towards `value`."""
    d = distance(value, reference) if dist is None else dist
    if d <= tau:
        return value
    ref = reference.double()
    moved = ref + (value.double() - ref) * (tau / d)
    return moved.to(value.dtype)


def lower_median(values: Iterable[float]) -> float:
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]


def dual_reference(kappa: float, beta: float, sign: float, prior: Tensor, w: Tensor) -> Tensor:
    """r_{j|i} = κ·s_{i|j} + 2β·A_{i|j}·w_i: the dual message i expects from j (module doc)."""
    return kappa * prior + (2.0 * beta * sign) * w


@dataclass
class RobustRule:
    """One node's clipping rule and screening state."""

    screen: bool = False
    radius: float | None = None  # fixed τ; None: adaptive
    scale: float = 1.0
    last_radius: float | None = None
    clipped: set[int] = field(default_factory=set)  # this round's
    scores: dict[int, float] = field(default_factory=dict)
    heard: dict[int, int] = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: RunConfig) -> RobustRule | None:
        if cfg.robust == "off":
            return None
        return cls(screen=cfg.robust == "clip+screen", radius=cfg.robust_radius,
                   scale=cfg.robust_scale)

    def tau(self, typical: float) -> float:
        """τ: the fixed radius, or c times the typical distance m."""
        return self.radius if self.radius is not None else self.scale * typical

    @staticmethod
    def typical(distances: Mapping[int, float], own: float | None) -> float:
        """m: the lower median of the neighbours' distances and the node's own."""
        return lower_median([*distances.values(), *([] if own is None else [own])])

    def apply(self, received: Mapping[int, Tensor], reference: Mapping[int, Tensor],
              own: float | None = None) -> dict[int, Tensor]:
        """Each received vector clipped to τ around its reference (untouched when within);
        `own`: the node's own distance, one more voice in the adaptive radius."""
        if not received:
            return {}
        if self.radius == math.inf:  # never clip: not even a norm is computed
            self.last_radius, self.clipped = math.inf, set()
            self._score({}, {})
            return dict(received)
        dist = {j: distance(v, reference[j]) for j, v in received.items()}
        m = self.typical(dist, own)
        tau = self.last_radius = self.tau(m)
        self._score({j: d for j, d in dist.items() if d > SCREEN_FACTOR * m}, dist)
        radius = {j: tau * self.trust(j) for j in received}
        self.clipped = {j for j, d in dist.items() if d > radius[j]}
        return {j: clip_towards(v, reference[j], radius[j], dist[j])
                for j, v in received.items()}

    def trust(self, j: int) -> float:
        """The fraction of τ neighbour j may pull by: 1 until it has been heard SCREEN_AFTER
        times, then 1 − 2·score, floored at TRUST_FLOOR (1 always without screening)."""
        if not self.screen or self.heard.get(j, 0) < SCREEN_AFTER:
            return 1.0
        return max(TRUST_FLOOR, min(1.0, 1.0 - 2.0 * self.scores.get(j, 0.0)))

    def _score(self, far: Mapping[int, float], dist: Mapping[int, float]) -> None:
        if not self.screen:
            return
        for j in dist:
            hit = 1.0 if j in far else 0.0
            self.scores[j] = SCREEN_DECAY * self.scores.get(j, 0.0) + (1 - SCREEN_DECAY) * hit
            self.heard[j] = self.heard.get(j, 0) + 1

    def state_dict(self) -> dict[str, Tensor]:
        """The screen's memory, for the checkpoint: rows (neighbour, score, rounds heard)."""
        rows = [[float(j), self.scores.get(j, 0.0), float(n)]
                for j, n in sorted(self.heard.items())]
        return {"robust.screen": torch.tensor(rows, dtype=torch.float64).reshape(-1, 3)}

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        rows = state.get("robust.screen")
        if rows is None:  # a checkpoint from before the screen was saved
            return
        self.scores, self.heard = {}, {}
        for j, score, heard in rows.tolist():
            self.scores[int(j)] = float(score)
            self.heard[int(j)] = int(heard)

    def suspects(self) -> list[int]:
        """Neighbours that stood out in most recent rounds (after SCREEN_AFTER rounds heard)."""
        return sorted(j for j, s in self.scores.items()
                      if self.heard.get(j, 0) >= SCREEN_AFTER and s > SCREEN_THRESHOLD)
