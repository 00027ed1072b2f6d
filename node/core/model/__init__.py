"""The model sub-room of core: the networks a node trains (`models`, users' own in `user_model`,
their BatchNorm in `batchnorm`), the gradient oracle with per-sample clipping and gradient-mode
noise (`trainer`), the task's metrics (`metrics`) and the compute device (`device`).

Rule 1: this `__init__` is the sub-room's door; every other room, the rest of core included,
imports what it needs from `node.core.model`, never from a module inside it.
Rule 2: like all of core, synchronous and without I/O; it imports only `node.config`,
`node.errors` and `privacy`.
"""

from __future__ import annotations

from node.core.model.batchnorm import batchnorm_use
from node.core.model.device import resolve_device
from node.core.model.metrics import Evaluation, LeadMetric, auroc_kind, lead_metric
from node.core.model.models import DEFAULT_WIDTH, FlatParams, build_model, num_params
from node.core.model.trainer import GradientPolicy, LocalTrainer
from node.core.model.user_model import (
    absolute_spec,
    is_package_model,
    is_user_model,
    load_user_model,
)

__all__ = [
    "DEFAULT_WIDTH",
    "Evaluation",
    "FlatParams",
    "GradientPolicy",
    "LeadMetric",
    "LocalTrainer",
    "absolute_spec",
    "auroc_kind",
    "batchnorm_use",
    "build_model",
    "is_package_model",
    "is_user_model",
    "lead_metric",
    "load_user_model",
    "num_params",
    "resolve_device",
]
