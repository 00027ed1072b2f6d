"""BatchNorm in a user's model: kept where nothing is clipped, swapped for GroupNorm on request,
refused otherwise.

BatchNorm normalises each example with statistics of the whole batch, so one example's gradient
depends on the others and per-sample clipping no longer bounds any one example's influence: a
run that clips per sample (every private mechanism, and the clipped control) cannot keep it.

Without clipping (ε = ∞, no `clip_only`) the gradients are plain mini-batch gradients and
BatchNorm trains as it does anywhere. Its running mean and variance are buffers, not
parameters: they are not in the flat parameter vector (node.core.model.models.FlatParams, built from
`named_parameters()`), so no message carries them. Each node keeps its own, updated from its own
batches and used at evaluation, as FedBN does (local statistics, shared weights); each trainer
holds its own copy of the model for that (node.core.model.trainer). They are not checkpointed: a
resumed node starts them afresh.

`--fix-batchnorm` (RunConfig.fix_batchnorm) replaces every BatchNorm by a GroupNorm over the
same channels before anything else sees the model, with the same affine weights, and says so in
one line. GroupNorm normalises each example on its own, so clipping holds again.
"""

from __future__ import annotations

import logging
from typing import Literal

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from node.config import RunConfig
from node.errors import ConfigError

__all__ = ["BatchNormUse", "batchnorm_use", "batchnorms", "groups", "has_local_batchnorm",
           "refusal", "swap_for_groupnorm"]

BatchNormUse = Literal["refuse", "local", "groupnorm"]
MAX_GROUPS = 32  # GroupNorm's usual group count (Wu & He, 2018)
_log = logging.getLogger(__name__)
_noted: set[str] = set()


def batchnorm_use(cfg: RunConfig) -> BatchNormUse:
    """What a run does with a BatchNorm: every mechanism but the plain one (node.core.mechanism:
    NoDP, for ε = ∞ without clip_only) clips per-sample gradients."""
    if cfg.fix_batchnorm:
        return "groupnorm"
    return "refuse" if cfg.private or cfg.clip_only else "local"


def batchnorms(model: nn.Module) -> list[tuple[str, _BatchNorm]]:
    return [(path, m) for path, m in model.named_modules() if isinstance(m, _BatchNorm)]


def has_local_batchnorm(model: nn.Module) -> bool:
    """Whether the model keeps BatchNorm running statistics (node-local state)."""
    return any(m.track_running_stats for _, m in batchnorms(model))


def groups(channels: int, *, spatial: bool = True) -> int:
    """GroupNorm's group count for `channels`: the largest divisor up to 32 (so 32 groups where
    the width allows, as GroupNorm is usually run). Without spatial dimensions (a BatchNorm1d,
    whose input may be (N, C)) each group keeps at least two channels: a group of one value
    would always be normalised to zero."""
    top = min(MAX_GROUPS, channels if spatial else channels // 2)
    return max(g for g in range(1, max(top, 1) + 1) if channels % g == 0)


def _groups_of(module: _BatchNorm) -> int:
    return groups(module.num_features, spatial=not isinstance(module, nn.BatchNorm1d))


def _groupnorm_text(module: _BatchNorm) -> str:
    return f"nn.GroupNorm({_groups_of(module)}, {module.num_features})"


def refusal(name: str, path: str, module: _BatchNorm) -> str:
    """The one sentence refusing a BatchNorm in a run that clips per sample."""
    where = f"layer `{path}`" if path else "its top module"
    return (f"in model {name}, {where} is {type(module).__name__}, which mixes examples within "
            "a batch and breaks per-sample clipping; pass --fix-batchnorm to swap it for "
            f"{_groupnorm_text(module)}, or use GroupNorm in the model.")


def swap_for_groupnorm(model: nn.Module, name: str) -> nn.Module:
    """Replace every BatchNorm of `model` (in place; the model is returned) by a GroupNorm over
    the same channels, with its eps and affine weights, and say so once per model and process.
    No random draw: every node swaps to the same w⁰."""
    found = batchnorms(model)
    swapped = []
    for path, bn in found:
        if bn.num_features < 1:  # a Lazy* BatchNorm before its first call: no channel count
            raise ConfigError(f"in model {name}, layer `{path}` does not know its channels yet "
                             "(a lazy BatchNorm); give it num_features to use --fix-batchnorm.")
        gn = nn.GroupNorm(_groups_of(bn), bn.num_features, eps=bn.eps, affine=bn.affine)
        if bn.affine:
            gn.weight.data.copy_(bn.weight.data)
            gn.bias.data.copy_(bn.bias.data)
        parent_path, _, attr = path.rpartition(".")
        parent = model.get_submodule(parent_path) if path else None
        if parent is None:
            raise ConfigError(f"model {name} is itself a BatchNorm; there is nothing to train "
                             "around it.")
        setattr(parent, attr, gn)
        swapped.append(f"`{path}` → {_groupnorm_text(bn)}")
    if swapped and name not in _noted:
        _noted.add(name)
        _log.warning("note: --fix-batchnorm: in model %s, BatchNorm swapped for GroupNorm "
                     "(%s)", name, ", ".join(swapped))
    return model
