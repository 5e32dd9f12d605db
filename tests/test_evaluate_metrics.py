"""Metrics against scikit-learn and hand-computed cases (perfect, inverted, constant, tied)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score, f1_score, precision_score, recall_score, roc_auc_score

from chestdx.errors import ChestDxError
from chestdx.evaluate.metrics import (
    auc_score,
    binary_metrics,
    choose_operating_point,
    confusion,
    multiclass_metrics,
    threshold_sweep,
)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 150)
    score = np.clip(0.3 * y + rng.normal(0.35, 0.25, 150), 0, 1).round(2)  # rounding makes ties
    m = binary_metrics(y, score, threshold=0.5)
    pred = (score >= 0.5).astype(int)
    assert m["auc"] == pytest.approx(roc_auc_score(y, score))
    assert m["f1"] == pytest.approx(f1_score(y, pred))
    assert m["kappa"] == pytest.approx(cohen_kappa_score(y, pred))
    assert m["sensitivity"] == pytest.approx(recall_score(y, pred))
    assert m["specificity"] == pytest.approx(recall_score(1 - y, 1 - pred))
    assert m["precision"] == pytest.approx(precision_score(y, pred))
    assert m["npv"] == pytest.approx(precision_score(1 - y, 1 - pred))
    assert m["accuracy"] == pytest.approx(np.mean(pred == y))


def test_perfect_inverted_constant_and_tied_scores():
    y = np.array([0, 0, 0, 1, 1, 1])
    perfect = binary_metrics(y, np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9]))
    assert (perfect["auc"], perfect["sensitivity"], perfect["specificity"], perfect["kappa"]) == (1.0, 1.0, 1.0, 1.0)
    inverted = binary_metrics(y, np.array([0.9, 0.8, 0.7, 0.3, 0.2, 0.1]))
    assert (inverted["auc"], inverted["sensitivity"], inverted["specificity"]) == (0.0, 0.0, 0.0)
    constant = binary_metrics(y, np.full(6, 0.4))
    assert constant["auc"] == 0.5
    assert constant["sensitivity"] == 0.0 and constant["specificity"] == 1.0
    assert np.isnan(constant["precision"])  # no positive call: PPV undefined, not 0
    # one positive tied with one negative at 0.5: pairs won 8 of 9, the tie counts 1/2
    tied = binary_metrics(y, np.array([0.1, 0.2, 0.5, 0.5, 0.8, 0.9]))
    assert tied["auc"] == pytest.approx(8.5 / 9)
    assert tied["specificity"] == pytest.approx(2 / 3)  # score == threshold counts as positive


def test_one_class_absent_gives_nan_not_error():
    m = binary_metrics(np.ones(5, int), np.linspace(0.1, 0.9, 5))
    assert np.isnan(m["auc"]) and np.isnan(m["specificity"])
    assert m["sensitivity"] == pytest.approx(0.6)
    assert np.isnan(auc_score(np.zeros(3), np.zeros(3)))


def test_multiclass_metrics_match_sklearn():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 200)
    probs = rng.dirichlet([1, 1, 1], 200)
    probs[np.arange(200), y] += 0.4
    probs /= probs.sum(1, keepdims=True)
    classes = ["normal", "pneumonia", "COVID-19"]
    m = multiclass_metrics(y, probs, classes)
    pred = probs.argmax(1)
    assert m["auc"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr", average="macro"))
    assert m["f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert m["sensitivity"] == pytest.approx(recall_score(y, pred, average="macro"))
    assert m["kappa"] == pytest.approx(cohen_kappa_score(y, pred))
    assert m["accuracy"] == pytest.approx(np.mean(y == pred))
    assert m["auc[pneumonia]"] == pytest.approx(roc_auc_score(y == 1, probs[:, 1]))
    assert m["specificity[COVID-19]"] == pytest.approx(recall_score(y != 2, pred != 2))
    assert np.array_equal(m["confusion_matrix"], confusion(y, pred, 3)[0])


def test_confusion_counts_and_row_normalisation():
    counts, norm = confusion(np.array([0, 0, 1, 1, 1]), np.array([0, 1, 1, 1, 0]), 3)
    assert counts.tolist() == [[1, 1, 0], [1, 2, 0], [0, 0, 0]]
    assert norm[1].tolist() == pytest.approx([1 / 3, 2 / 3, 0])
    assert norm[2].tolist() == [0, 0, 0]  # empty row: zeros, as scikit-learn


def test_threshold_sweep_rows():
    y = np.array([0, 0, 1, 1])
    rows = threshold_sweep(y, np.array([0.15, 0.55, 0.45, 0.95]))
    assert [r["threshold"] for r in rows] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    at_half = rows[4]
    assert (at_half["sensitivity"], at_half["specificity"], at_half["f1"]) == (0.5, 0.5, 0.5)
    assert rows[0]["sensitivity"] == 1.0 and rows[0]["specificity"] == 0.0


def test_operating_point_reaches_target_specificity_and_sensitivity():
    rng = np.random.default_rng(4)
    y = np.r_[np.zeros(120, int), np.ones(80, int)]
    score = np.r_[rng.beta(2, 5, 120), rng.beta(5, 2, 80)]
    t = choose_operating_point(y, score, "specificity", 0.9)
    m = binary_metrics(y, score, threshold=t)
    assert m["specificity"] >= 0.9
    # the lowest such threshold: lowered to the next negative score, it misses the target
    next_negative = np.max(score[(y == 0) & (score < t)])
    assert binary_metrics(y, score, threshold=next_negative)["specificity"] < 0.9
    t_sens = choose_operating_point(y, score, "sensitivity", 0.95)
    assert binary_metrics(y, score, threshold=t_sens)["sensitivity"] >= 0.95
    next_positive = np.min(score[(y == 1) & (score >= t_sens)])
    assert binary_metrics(y, score, threshold=np.nextafter(next_positive, 1))["sensitivity"] < 0.95


def test_operating_point_for_the_best_f1_beats_every_other_threshold():
    rng = np.random.default_rng(5)
    y = np.r_[np.zeros(60, int), np.ones(40, int)]
    score = np.r_[rng.beta(2, 4, 60), rng.beta(4, 2, 40)]
    best = binary_metrics(y, score, threshold=choose_operating_point(y, score, "f1"))["f1"]
    for t in np.linspace(0, 1, 101):
        assert binary_metrics(y, score, threshold=t)["f1"] <= best + 1e-12


def test_operating_point_errors_are_user_errors():
    with pytest.raises(ChestDxError, match="specificity"):
        choose_operating_point(np.array([0, 1]), np.array([0.2, 0.8]), "ppv", 0.9)
    with pytest.raises(ChestDxError, match="both classes"):
        choose_operating_point(np.ones(4, int), np.linspace(0, 1, 4), "sensitivity", 0.9)
