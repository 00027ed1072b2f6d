"""What an evaluation on the test split reports: loss and accuracy always, AUROC and balanced
accuracy where the task calls for them (scikit-learn computes both; nothing here re-derives them).

- two classes: AUROC of the score logit₁ − logit₀ (the ranking of softmax p₁, without its
  saturation to 1.0 creating ties) and balanced accuracy, whatever `metric` says;
- more classes: macro one-vs-rest AUROC on the softmax probabilities and balanced accuracy, only
  when the run asked for `metric = "auroc"`.

AUROC is undefined when a class it needs is absent from the test split (or the scores are not
finite): then it is None, never an error. scikit-learn is imported only by a task that computes
one of them (`preload`), since it pulls in scipy, which a node without DP otherwise never loads.
Like accuracy, these are local diagnostics on the test split: nothing of them is sent.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np

AurocKind = Literal["none", "binary", "macro"]
LeadMetric = Literal["accuracy", "auroc"]


@dataclass(frozen=True)
class Evaluation:
    """One evaluation of a model on the test split."""

    loss: float
    accuracy: float
    auroc: float | None = None
    balanced_accuracy: float | None = None


def auroc_kind(metric: str, num_classes: int) -> AurocKind:
    """Which AUROC a task computes: always for two classes, macro OvR only when asked."""
    if num_classes == 2:
        return "binary"
    return "macro" if metric == "auroc" else "none"


def lead_metric(metric: str, kind: AurocKind) -> LeadMetric:
    """The metric reports lead with, given the run's `metric` and the task's `auroc_kind`:
    accuracy when asked for, else AUROC wherever one is computed ("auto" = two classes)."""
    return "auroc" if metric != "accuracy" and kind != "none" else "accuracy"


def preload(kind: AurocKind) -> None:
    """Import scikit-learn now if `kind` will need it: a node pays the import (seconds, for
    scipy) while it starts, not in the middle of its first evaluated round."""
    if kind != "none":
        import sklearn.metrics  # noqa: F401


def evaluation(loss: float, accuracy: float, kind: AurocKind, logits: np.ndarray,
               predictions: np.ndarray, labels: np.ndarray) -> Evaluation:
    """`loss` and `accuracy` as computed by the caller, plus AUROC and balanced accuracy of
    `logits` (n × K) and `predictions` (their argmax) against `labels` when `kind` asks."""
    if kind == "none" or len(labels) == 0:
        return Evaluation(loss, accuracy)
    from sklearn.metrics import balanced_accuracy_score

    with warnings.catch_warnings():
        # Predicting a class the test split lacks is fine: the mean recall is over its classes.
        warnings.simplefilter("ignore", UserWarning)
        balanced = float(balanced_accuracy_score(labels, predictions))
    return Evaluation(loss, accuracy, _auroc(kind, logits, labels), balanced)


def _auroc(kind: AurocKind, logits: np.ndarray, labels: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    z = logits.astype(np.float64)
    if not np.isfinite(z).all():
        return None
    classes = z.shape[1]
    # Checked here rather than left to scikit-learn, which raises in some versions and warns
    # and returns NaN in others when a class is missing.
    if len(np.unique(labels)) < (2 if kind == "binary" else classes):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "binary":
            value = roc_auc_score(labels, z[:, 1] - z[:, 0])
        else:
            z -= z.max(axis=1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(axis=1, keepdims=True)
            value = roc_auc_score(labels, p, multi_class="ovr", average="macro",
                                  labels=np.arange(classes))
    value = float(value)
    return value if math.isfinite(value) else None
