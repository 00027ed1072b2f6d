"""The plain-language privacy statement printed by the calculator and kept in docs/PRIVACY.md."""

from __future__ import annotations

import textwrap

from privacy.modes import NO_GUARANTEE, Mode

_WHAT = """\
Unit of privacy: one training example of this node's local data; two datasets are neighbours if
one is the other with one example added or removed.
Adversary: any coalition of other nodes (curious or malicious, all neighbours together) and any
network eavesdropper; they may see every message this node sends during the whole run.
Protected: whether any single example was in the node's data (membership) and its content
(reconstruction); every model, score or message computed from what the node sent inherits the
guarantee.
Not protected: population-level statistics of the node's data (they are what training learns),
the node's dataset as a whole (its size, label mix, whether the node takes part at all: no
node-level privacy), a person with k examples (roughly k·ε), hyper-parameters tuned on private
data, and side channels such as timing. The guarantee is for the idealised real-valued Gaussian
mechanism; floating-point sampling is attackable in theory."""


def privacy_statement(*, mode: Mode, epsilon: float | None, delta: float,
                      noise_multiplier: float, sample_rate: float, steps: int,
                      local_steps: int = 1, sigma: float | None = None) -> str:
    """Return the statement for one configuration (ε None: no formal guarantee)."""
    if epsilon is None:
        claim = (f"No formal guarantee: message mode with {local_steps} local steps per round is "
                 f"not covered by any proof, so no ε is claimed ({NO_GUARANTEE}).")
    else:
        claim = (f"Each node satisfies (ε = {epsilon:.4g}, δ = {delta:.3g})-differential privacy "
                 f"for the complete sequence of messages it sends during training.")
    if mode == "gradient":
        how = (f"Mechanism: Poisson sampling at rate q = {sample_rate:.4g}, per-example L2 "
               f"clipping at C, Gaussian noise with std z·C (z = {noise_multiplier:.4g}) on the "
               f"summed clipped gradients at each of T = {steps} local steps; every message is "
               "post-processing.")
    else:
        noise = f"σ = {sigma:.4g}" if sigma is not None else "σ"
        how = (f"Mechanism: Poisson sampling at rate q = {sample_rate:.4g}, per-example L2 "
               f"clipping at C, independent Gaussian noise ({noise}) on every outgoing dual; "
               f"against all neighbours together each of the R = {steps} rounds is one "
               f"subsampled Gaussian with effective noise multiplier z = {noise_multiplier:.4g}.")
    accounting = ("Accounting: privacy-loss-distribution (PLD) accountant of Google's "
                  "dp-accounting, add/remove-one neighbours; RDP as a cross-check.")
    return "\n".join([*(textwrap.fill(p, width=92) for p in (claim, how, accounting)), _WHAT])
