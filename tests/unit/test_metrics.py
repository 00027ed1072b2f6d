"""AUROC and balanced accuracy (node.core.model.metrics): scikit-learn's numbers on the same scores,
None where undefined, macro one-vs-rest only when asked, loss and accuracy as before; and end to
end, what a simulated two-class federation records equals AUROC recomputed from its final model.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from torch import nn
from torch.func import functional_call

from node.config import RunConfig
from node.core.data import synthetic
from node.core.model import Evaluation, GradientPolicy, LocalTrainer, auroc_kind, lead_metric
from node.core.model.metrics import evaluation
from node.outputs.files import read_metrics
from node.outputs.records import ExitReason, metrics_record, node_entry, node_result, summary
from node.sim.simulate import build_runners, simulate

# Two-class logits whose scores z1 − z0 tie across the classes (0.4 twice) and within a class.
LOGITS2 = np.array([[0.0, 0.1], [1.0, 1.4], [0.2, 0.6], [0.5, 1.3], [2.0, 1.0], [0.0, 0.4],
                    [-1.0, -0.2], [0.3, 0.4]], dtype=np.float32)
LABELS2 = np.array([0, 0, 1, 1, 0, 1, 0, 1])


def score(logits: np.ndarray, labels: np.ndarray, kind: str = "binary") -> Evaluation:
    return evaluation(0.5, 0.25, kind, logits, logits.argmax(axis=1), labels)  # type: ignore[arg-type]


def test_two_class_auroc_and_balanced_accuracy_are_scikit_learns() -> None:
    result = score(LOGITS2, LABELS2)
    diff = LOGITS2[:, 1].astype(np.float64) - LOGITS2[:, 0]
    p1 = torch.softmax(torch.from_numpy(LOGITS2).double(), dim=1)[:, 1].numpy()
    assert result.auroc == roc_auc_score(LABELS2, diff) == roc_auc_score(LABELS2, p1)
    assert result.balanced_accuracy == balanced_accuracy_score(LABELS2, LOGITS2.argmax(axis=1))
    assert (result.loss, result.accuracy) == (0.5, 0.25)  # passed through untouched


def test_ties_count_half_as_the_definition_says() -> None:
    # Scores 0.1, 0.4 | 0.4, 0.8: of the 4 (positive, negative) pairs one ties, 3.5 / 4.
    logits = np.array([[0.0, 0.1], [0.0, 0.4], [0.0, 0.4], [0.0, 0.8]], dtype=np.float32)
    labels = np.array([0, 0, 1, 1])
    assert score(logits, labels).auroc == pytest.approx(0.875, abs=1e-12)
    assert score(logits, labels).balanced_accuracy == pytest.approx(0.5)  # all predicted 1


def test_undefined_auroc_is_none_not_an_error() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no scikit-learn warning leaks either
        one_class = score(LOGITS2, np.ones(8, dtype=np.int64))
        assert one_class.auroc is None
        assert one_class.balanced_accuracy == (LOGITS2.argmax(axis=1) == 1).mean()
        nan = LOGITS2.copy()
        nan[3, 1] = np.nan
        assert score(nan, LABELS2).auroc is None
        three = np.random.default_rng(1).normal(size=(9, 3)).astype(np.float32)
        assert score(three, np.array([0, 1] * 4 + [0]), "macro").auroc is None  # class 2 absent


def test_macro_one_vs_rest_for_three_classes_only_when_asked() -> None:
    rng = np.random.default_rng(0)
    labels = np.arange(30) % 3
    logits = (rng.normal(size=(30, 3)) + 1.5 * np.eye(3)[labels]).astype(np.float32)
    logits[5] = logits[6]  # a tie
    assert score(logits, labels, "none") == Evaluation(0.5, 0.25, None, None)
    macro = score(logits, labels, "macro")
    probs = torch.softmax(torch.from_numpy(logits).double(), dim=1).numpy()
    assert macro.auroc == pytest.approx(
        roc_auc_score(labels, probs, multi_class="ovr", average="macro"), abs=1e-12)
    per_class = [roc_auc_score(labels == k, probs[:, k]) for k in range(3)]
    assert macro.auroc == pytest.approx(float(np.mean(per_class)), abs=1e-12)
    assert macro.balanced_accuracy == balanced_accuracy_score(labels, logits.argmax(axis=1))


def test_which_auroc_and_which_lead() -> None:
    assert [auroc_kind(m, 2) for m in ("auto", "accuracy", "auroc")] == ["binary"] * 3
    assert [auroc_kind(m, 10) for m in ("auto", "accuracy", "auroc")] == ["none", "none", "macro"]
    leads = {(m, k): lead_metric(m, auroc_kind(m, k))
             for m in ("auto", "accuracy", "auroc") for k in (2, 10)}
    assert leads == {("auto", 2): "auroc", ("auto", 10): "accuracy",
                     ("accuracy", 2): "accuracy", ("accuracy", 10): "accuracy",
                     ("auroc", 2): "auroc", ("auroc", 10): "auroc"}


def trainer(classes: int, kind: str) -> tuple[LocalTrainer, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Linear(5, classes)
    data = synthetic(40, 2500, num_classes=classes, dim=5, seed=3)
    t = LocalTrainer(model, data.x_train, data.y_train, data.x_test, data.y_test, batch_size=8,
                     policy=GradientPolicy("plain"), data_generator=torch.Generator(),
                     auroc=kind)  # type: ignore[arg-type]
    return t, t.layout.flatten(model)


@pytest.mark.parametrize(("classes", "kind"), [(2, "binary"), (3, "macro"), (3, "none")])
def test_trainer_keeps_loss_and_accuracy_bit_for_bit(classes: int, kind: str) -> None:
    t, w = trainer(classes, kind)
    got = t.evaluate(w, batch=1000)  # three batches, the last one short
    params = t.layout.unflatten(w)
    total, correct = 0.0, 0  # the formula evaluate used before AUROC existed
    for start in range(0, len(t.x_test), 1000):
        xb, yb = t.x_test[start:start + 1000], t.y_test[start:start + 1000]
        logits = functional_call(t.model, params, (xb,))
        total += float(F.cross_entropy(logits, yb, reduction="sum"))
        correct += int((logits.argmax(dim=1) == yb).sum())
    assert (got.loss, got.accuracy) == (total / len(t.x_test), correct / len(t.x_test))
    with torch.no_grad():
        z = functional_call(t.model, params, (t.x_test,)).double()
    y = t.y_test.numpy()
    if kind == "none":
        assert got.auroc is None and got.balanced_accuracy is None
        return
    probs = torch.softmax(z, dim=1).numpy()
    expected = roc_auc_score(y, probs[:, 1]) if classes == 2 else \
        roc_auc_score(y, probs, multi_class="ovr")
    assert got.auroc == pytest.approx(expected, abs=1e-12)
    assert got.balanced_accuracy == balanced_accuracy_score(y, z.argmax(dim=1).numpy())


def line(round: int, scored: Evaluation | None) -> dict[str, object]:
    return metrics_record(round=round, node=0, time=0.0, loss=0.2, evaluation=scored,
                          dual_norm=None, consensus_distance=None, epsilon=None, bytes_sent=0,
                          bytes_received=0, peers_alive=0, neighbours_heard=0, round_seconds=0.0,
                          compute_seconds=0.0, wait_seconds=0.0)


def test_records_carry_the_new_keys(tmp_path: Path) -> None:
    record, bare = line(0, Evaluation(0.3, 0.9, 0.95, 0.85)), line(1, None)
    assert (record["accuracy"], record["auroc"], record["balanced_accuracy"]) == (0.9, 0.95, 0.85)
    assert (bare["accuracy"], bare["auroc"], bare["balanced_accuracy"]) == (None, None, None)
    entry = dict(loss=0.2, epsilon=None, bytes_sent=0, rounds_completed=2,
                 exit=ExitReason.FINISHED)
    nodes = {"0": node_entry(accuracy=0.9, auroc=0.8, balanced_accuracy=0.7, **entry),  # type: ignore[arg-type]
             "1": node_entry(accuracy=0.7, auroc=None, balanced_accuracy=0.5, **entry)}  # type: ignore[arg-type]
    report = summary(RunConfig(), nodes, 1.0, [])
    assert (report["mean_auroc"], report["mean_balanced_accuracy"]) == (0.8, 0.6)
    assert report["metric"] == "auroc"  # auto, and a node has an AUROC: two classes
    none = {k: {**v, "auroc": None} for k, v in nodes.items()}
    assert summary(RunConfig(), none, 1.0, [])["mean_auroc"] is None
    assert summary(RunConfig(), none, 1.0, [])["metric"] == "accuracy"
    assert summary(RunConfig(metric="auroc"), none, 1.0, [])["metric"] == "auroc"
    assert summary(RunConfig(classes=2), none, 1.0, [])["metric"] == "auroc"
    assert summary(RunConfig(), nodes, 1.0, [], metric="accuracy")["metric"] == "accuracy"
    # A node killed before final.json: its last evaluated round's numbers.
    (tmp_path / "metrics.jsonl").write_text(
        "\n".join(json.dumps(r) for r in (record, bare)) + "\n")
    crashed = node_result(tmp_path, formal=False)
    assert (crashed["accuracy"], crashed["auroc"], crashed["balanced_accuracy"]) == \
        (0.9, 0.95, 0.85)


def test_a_two_class_federation_records_scikit_learns_auroc(tmp_path: Path) -> None:
    cfg = RunConfig(topology="ring", nodes=3, rounds=5, model="logreg", lr=0.3, batch_size=16,
                    examples_per_node=80, test_examples=None, eval_every=2, primal_every=1)
    clean = synthetic(240, 300, num_classes=2, dim=8, seed=5)
    # A quarter of the test labels flipped: an AUROC well inside (0.5, 1), where any slip in
    # the scores or the split would show.
    flip = torch.from_numpy(np.random.default_rng(6).random(300) < 0.25)
    data = dataclasses.replace(clean, y_test=torch.where(flip, 1 - clean.y_test, clean.y_test))
    runners = build_runners(cfg, data)
    report = simulate(cfg, tmp_path, runners=runners)
    assert report["metric"] == "auroc"
    finals = []
    for runner in runners:
        records = read_metrics(tmp_path / str(runner.node) / "metrics.jsonl")
        evaluated = [r["round"] for r in records if r["auroc"] is not None]
        assert evaluated == [0, 2, 4]  # every evaluated round, and only those
        assert all((r["accuracy"] is None) == (r["auroc"] is None) for r in records)
        assert all(0 <= r["balanced_accuracy"] <= 1 for r in records if r["auroc"] is not None)
        # Independently: the final parameters on the same test split, softmax p₁ as the score.
        trainer = runner.setup.trainer
        params = trainer.layout.unflatten(runner.setup.algorithm.w)
        with torch.no_grad():
            logits = functional_call(trainer.model, params, (data.x_test,)).double()
        y = data.y_test.numpy()
        expected = roc_auc_score(y, torch.softmax(logits, dim=1)[:, 1].numpy())
        assert 0.6 < expected < 0.9  # learnt, and far from perfect
        assert records[-1]["auroc"] == pytest.approx(expected, abs=1e-12)
        assert report["nodes"][str(runner.node)]["auroc"] == records[-1]["auroc"]
        assert records[-1]["balanced_accuracy"] == \
            balanced_accuracy_score(y, logits.argmax(dim=1).numpy())
        finals.append(records[-1]["auroc"])
    assert report["mean_auroc"] == pytest.approx(float(np.mean(finals)), abs=1e-15)
    assert not math.isnan(report["mean_balanced_accuracy"])


def test_many_classes_lead_with_accuracy_unless_auroc_is_asked() -> None:
    data = synthetic(120, 90, num_classes=3, dim=6, seed=2)
    base = RunConfig(topology="ring", nodes=3, rounds=2, model="logreg", examples_per_node=40,
                     test_examples=None)
    plain = simulate(base, None, runners=build_runners(base, data))
    assert (plain["metric"], plain["mean_auroc"], plain["mean_balanced_accuracy"]) == \
        ("accuracy", None, None)
    asked = base.replace(metric="auroc")
    macro = simulate(asked, None, runners=build_runners(asked, data))
    assert macro["metric"] == "auroc" and 0 < macro["mean_auroc"] < 1
    assert macro["mean_accuracy"] == plain["mean_accuracy"]  # the same run, more numbers
