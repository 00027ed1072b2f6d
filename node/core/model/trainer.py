"""Gradient oracles over one node's private shard, and evaluation on the shared test split.

The algorithm (node.core.algorithm) asks an oracle for a gradient at the current flat
parameters; this module decides how that gradient touches the data:

- `plain`: a shuffled mini-batch of `batch_size`, mean cross-entropy gradient (no privacy);
- `clipped`: Poisson sampling at the policy's rate q, per-sample gradients clipped to C, summed
  and divided by the expected batch size — no noise. Message mode adds its noise to the duals
  instead, and this is also the clipped, noise-free control of the experiments;
- `noisy`: as `clipped`, plus N(0, (zC)²I) on the sum before dividing (gradient-mode DP-SGD);
- `secure`: as `noisy`, but each clipped gradient is rounded to an integer grid and the noise is
  the exact discrete Gaussian added in integers (privacy.discrete, `--secure-noise`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from node.core.model.batchnorm import has_local_batchnorm
from node.core.model.metrics import AurocKind, Evaluation, evaluation, preload
from node.core.model.models import FlatParams
from privacy.discrete import clipped_grid_sum, grid_for, secure_release
from privacy.discrete import poisson_sample as secure_poisson_sample
from privacy.mechanisms import clipped_grad_sum, poisson_sample, privatize_gradient_sum

GradientKind = Literal["plain", "clipped", "noisy", "secure"]


@dataclass(frozen=True)
class GradientPolicy:
    """How each local step touches the data; see the module docstring.

    For the private kinds, `sample_rate` q and `expected_batch` (the normaliser) are public
    constants fixed before training (the privacy plan), never recomputed from the data: with
    them taken from the data, adding one example would also change q and the normaliser, which
    the accountant does not model (docs/PRIVACY.md)."""

    kind: GradientKind = "plain"
    clip: float = 1.0
    noise_multiplier: float = 0.0
    sample_rate: float = 1.0
    expected_batch: float = 1.0


class LocalTrainer:
    """Owns a model's structure and one node's data; parameters live in flat vectors."""

    def __init__(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        x_test: Tensor,
        y_test: Tensor,
        *,
        batch_size: int,
        policy: GradientPolicy,
        data_generator: torch.Generator,
        noise_generator: torch.Generator | None = None,
        auroc: AurocKind = "none",
        device: torch.device | str = "cpu",
    ) -> None:
        if len(x) == 0:
            raise ValueError("a node needs at least one training example")
        if policy.kind != "plain" and noise_generator is None:
            raise ValueError("private gradient policies need a private generator")
        self.device = torch.device(device)
        # A kept BatchNorm's running statistics (node.core.model.batchnorm) are this node's own: a
        # copy per trainer, since the simulator shares one model among its nodes, and on the
        # oracle's device, where its forward updates them.
        self.local_state = has_local_batchnorm(model)
        if self.local_state:
            model = copy.deepcopy(model).to(self.device)
        self.model = model
        self.layout = FlatParams.of(model)
        # Where the gradient oracle runs (node.core.model.device); parameters come in and gradients
        # go out as CPU tensors, so the algorithm never sees the device. Otherwise the model
        # module stays where it is: `functional_call` uses the parameters it is given, and
        # models have no other buffers (node.core.model.models).
        self.x, self.y = x.to(self.device), y.to(self.device)
        self.x_test, self.y_test = x_test.to(self.device), y_test.to(self.device)
        self.batch_size = min(batch_size, len(x))
        self.policy = policy
        self.data_generator = data_generator
        self.noise_generator = noise_generator
        self.auroc = auroc  # which AUROC `evaluate` reports (node.core.model.metrics.auroc_kind)
        preload(auroc)
        self.steps = 0
        # Sampled examples whose per-sample gradient was not finite and so entered the clipped
        # sum as zero (privacy.mechanisms). A function of the private data: local diagnostics
        # only, never put in a message or anything sent.
        self.nonfinite_examples = 0
        self._order = torch.empty(0, dtype=torch.int64)

    def noise_generator_reseed(self, seed: int) -> None:
        """Reseed the private generator (shared with the dual noise) for a fixed-seed restart."""
        if self.noise_generator is not None:
            self.noise_generator.manual_seed(seed)

    @property
    def n(self) -> int:
        return len(self.x)

    def _mean_loss(self, params: Mapping[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(functional_call(self.model, dict(params), (x,)), y)

    def _next_batch(self) -> Tensor:
        if len(self._order) < self.batch_size:
            fresh = torch.randperm(self.n, generator=self.data_generator)
            self._order = torch.cat([self._order, fresh])
        batch, self._order = self._order[: self.batch_size], self._order[self.batch_size :]
        return batch

    def gradient(self, w: Tensor) -> tuple[Tensor, float]:
        """The oracle: a gradient estimate at flat parameters `w`, and the batch's mean loss."""
        self.steps += 1
        params = self.layout.unflatten(w.detach().to(self.device))
        if self.policy.kind == "plain":
            idx = self._next_batch()
            # torch.autograd, not torch.func.grad: the first torch.func transform imports
            # torch._dynamo and sympy (about 70 MB and 2 s per process), which only the
            # per-sample gradients of the private policies need. The same gradient (bit for bit
            # through linear layers; conv backward can differ in float32's last bits).
            leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
            with torch.enable_grad():
                mean = self._mean_loss(leaves, self.x[idx], self.y[idx])
                grads = torch.autograd.grad(mean, list(leaves.values()))
            flat = self.layout.concat(dict(zip(leaves, grads, strict=True)))
            return flat.float().cpu(), float(mean.detach())
        # Which examples enter a batch is part of the mechanism: a batch drawn from a public
        # seed would let an adversary know q = 1 for them, so sampling uses the private
        # generator (OS entropy unless the user fixed a seed for an experiment).
        assert self.noise_generator is not None
        if self.policy.kind == "secure":
            return self._secure_gradient(params)
        idx = poisson_sample(self.n, self.policy.sample_rate, self.noise_generator)
        total, losses, dropped = clipped_grad_sum(
            self._mean_loss, params, self.x[idx], self.y[idx], self.policy.clip
        )
        self.nonfinite_examples += dropped
        expected = self.policy.expected_batch
        if self.policy.kind == "noisy":
            g = privatize_gradient_sum(
                total, self.policy.clip, self.policy.noise_multiplier, expected,
                self.noise_generator,
            )
        else:
            g = total / expected
        # The mean over the finite losses only, so that one overflowing example (whose gradient
        # was dropped) does not turn the local loss curve into NaN; NaN when none is finite.
        finite = losses[torch.isfinite(losses)]
        loss = float(finite.mean()) if len(finite) else float("nan")
        return g.cpu(), loss

    def _secure_gradient(self, params: Mapping[str, Tensor]) -> tuple[Tensor, float]:
        """The `secure` kind: an exact Poisson sample and the integer release V
        (privacy.discrete), scaled back by the grid and divided by q·n̂ — post-processing of V,
        which is exact."""
        assert self.noise_generator is not None
        idx = secure_poisson_sample(self.n, self.policy.sample_rate, self.noise_generator)
        grid = grid_for(self.policy.clip, self.layout.numel)
        total, losses, dropped = clipped_grid_sum(self._mean_loss, params, self.x[idx],
                                                  self.y[idx], self.policy.clip, grid)
        self.nonfinite_examples += dropped
        released = secure_release(total, self.policy.noise_multiplier, grid)
        g = released.double() / (grid.scale * self.policy.expected_batch)
        finite = losses[torch.isfinite(losses)]
        return g.float(), float(finite.mean()) if len(finite) else float("nan")

    @torch.no_grad()
    def evaluate(self, w: Tensor, batch: int = 1000) -> Evaluation:
        """Mean loss and accuracy of flat parameters `w` on the test split, and AUROC and
        balanced accuracy where `self.auroc` asks (node.core.model.metrics)."""
        params = self.layout.unflatten(w.detach().to(self.device))
        # A kept BatchNorm normalises the test batches with the node's running statistics and
        # learns nothing from them.
        if not self.local_state:
            return self._evaluate(params, batch)
        self.model.eval()
        try:
            return self._evaluate(params, batch)
        finally:
            self.model.train()

    def _evaluate(self, params: dict[str, Tensor], batch: int) -> Evaluation:
        total_loss, correct = 0.0, 0
        keep = self.auroc != "none"
        logits_seen: list[np.ndarray] = []
        predicted: list[np.ndarray] = []
        for start in range(0, len(self.x_test), batch):
            xb, yb = self.x_test[start : start + batch], self.y_test[start : start + batch]
            logits = functional_call(self.model, params, (xb,))
            total_loss += float(F.cross_entropy(logits, yb, reduction="sum"))
            pred = logits.argmax(dim=1)
            correct += int((pred == yb).sum())
            if keep:
                logits_seen.append(logits.detach().float().cpu().numpy())
                predicted.append(pred.cpu().numpy())
        n = max(len(self.x_test), 1)
        loss, accuracy = total_loss / n, correct / n
        if not keep or not logits_seen:
            return Evaluation(loss, accuracy)
        return evaluation(loss, accuracy, self.auroc, np.concatenate(logits_seen),
                          np.concatenate(predicted), self.y_test.cpu().numpy())
