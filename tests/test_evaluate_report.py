"""evaluate_predictions results and the self-contained HTML report."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from chestdx.errors import ChestDxError
from chestdx.evaluate.metrics import binary_metrics, multiclass_metrics
from chestdx.evaluate.report import aggregate_to_patients, evaluate_predictions, write_html_report

SECTIONS = ("dataset", "metrics", "confusion", "roc", "pr", "calibration", "histograms", "thresholds", "model-card")
REQUIRED = ("auc", "f1", "sensitivity", "specificity", "accuracy", "kappa", "precision", "npv")


def _slices(n_patients=40, seed=0):
    """Binary slice data: 1-6 slices per patient, scores from overlapping Beta distributions."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 7, n_patients)
    ids = np.repeat([f"P{i:02d}" for i in range(n_patients)], sizes)
    y = np.repeat(np.arange(n_patients) % 2, sizes)
    score = np.where(y == 1, rng.beta(5, 2.5, y.size), rng.beta(2.5, 5, y.size))
    return y, np.stack([1 - score, score], axis=1), ids


@pytest.fixture(scope="module")
def binary_results():
    y, probs, ids = _slices()
    slice_level = evaluate_predictions(y, probs, ["non-COVID", "COVID-19"], ids, level="slice", n_resamples=100)
    pids, pprobs, py = aggregate_to_patients(ids, probs, y)
    patient_level = evaluate_predictions(py, pprobs, ["non-COVID", "COVID-19"], pids, level="patient", n_resamples=100)
    return (y, probs, ids), slice_level, patient_level


def test_binary_result_layout_and_values(binary_results):
    (y, probs, ids), result, _ = binary_results
    assert (result["n_cases"], result["n_patients"], result["level"]) == (len(y), 40, "slice")
    assert result["threshold"] == 0.5 and result["classes"] == ["non-COVID", "COVID-19"]
    expected = binary_metrics(y, probs[:, 1], 0.5)
    for name in REQUIRED:
        entry = result["metrics"][name]
        assert entry["value"] == pytest.approx(expected[name])
        assert entry["ci_low"] <= entry["value"] <= entry["ci_high"]
    counts = np.array(result["confusion_matrix"]["counts"])
    assert counts.sum() == len(y) and counts[1, 1] == np.sum((y == 1) & (probs[:, 1] >= 0.5))
    assert [row["threshold"] for row in result["threshold_sweep"]["COVID-19"]][:2] == [0.1, 0.2]
    assert 0 < result["calibration"]["ece"] < 0.5 and 0 < result["calibration"]["brier"] < 0.5
    assert list(result["curves"]["roc"]) == ["COVID-19"]
    json.dumps(result, allow_nan=False)  # strict JSON


def test_curves_are_subsampled_and_keep_their_ends():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 1500)
    score = np.clip(0.25 * y + rng.random(1500) * 0.75, 0, 1)
    result = evaluate_predictions(y, np.stack([1 - score, score], 1), ["neg", "pos"], None, n_resamples=20)
    roc = result["curves"]["roc"]["pos"]
    assert 100 < len(roc["fpr"]) <= 200
    assert (roc["fpr"][0], roc["tpr"][0], roc["fpr"][-1], roc["tpr"][-1]) == (0.0, 0.0, 1.0, 1.0)
    assert len(result["curves"]["pr"]["pos"]["recall"]) <= 200
    assert any("no patient ids" in w for w in result["warnings"])


def test_multiclass_result_has_per_class_entries():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 90)
    probs = rng.dirichlet([1, 1, 1], 90)
    probs[np.arange(90), y] += 0.5
    probs /= probs.sum(1, keepdims=True)
    classes = ["normal", "pneumonia", "COVID-19"]
    result = evaluate_predictions(y, probs, classes, np.arange(90) // 3, level="study", n_resamples=50)
    expected = multiclass_metrics(y, probs, classes)
    assert result["threshold"] is None and result["n_patients"] == 30
    assert result["metrics"]["auc"]["value"] == pytest.approx(expected["auc"])
    assert result["metrics"]["sensitivity[COVID-19]"]["value"] == pytest.approx(expected["sensitivity[COVID-19]"])
    assert set(result["curves"]["roc"]) == {*classes, "macro"}
    assert set(result["threshold_sweep"]) == set(classes)
    with pytest.raises(ChestDxError, match="binary"):
        evaluate_predictions(y, probs, classes, None, threshold=0.3, n_resamples=10)


def test_absent_class_gives_null_not_nan():
    y = np.zeros(10, int)
    result = evaluate_predictions(y, np.tile([0.7, 0.3], (10, 1)), ["neg", "pos"], np.arange(10), n_resamples=20)
    assert result["metrics"]["auc"]["value"] is None and result["metrics"]["specificity"]["value"] == 1.0
    assert result["curves"]["roc"] == {}
    json.dumps(result, allow_nan=False)


def test_bad_inputs_are_user_errors():
    probs = np.tile([0.5, 0.5], (4, 1))
    with pytest.raises(ChestDxError, match="one label per case"):
        evaluate_predictions(np.zeros(3, int), probs, ["a", "b"], None)
    with pytest.raises(ChestDxError, match="one column per class"):
        evaluate_predictions(np.zeros(4, int), probs, ["a", "b", "c"], None)
    with pytest.raises(ChestDxError, match="level"):
        evaluate_predictions(np.zeros(4, int), probs, ["a", "b"], None, level="image")


def test_aggregate_to_patients_means_and_checks_labels():
    ids = np.array(["b", "a", "b", "a", "a"])
    probs = np.array([[0.2, 0.8], [0.9, 0.1], [0.4, 0.6], [0.6, 0.4], [0.9, 0.1]])
    pids, pprobs, py = aggregate_to_patients(ids, probs, np.array([1, 0, 1, 0, 0]))
    assert pids.tolist() == ["a", "b"] and py.tolist() == [0, 1]
    np.testing.assert_allclose(pprobs, [[0.8, 0.2], [0.3, 0.7]])
    _, pmax, _ = aggregate_to_patients(ids, probs, np.array([1, 0, 1, 0, 0]), how="max")
    np.testing.assert_allclose(pmax[1], [0.4 / 1.2, 0.8 / 1.2])
    with pytest.raises(ChestDxError, match="different labels"):
        aggregate_to_patients(ids, probs, np.array([1, 0, 0, 0, 0]))


def test_html_report_is_self_contained_with_every_section(binary_results, tmp_path):
    _, slice_level, patient_level = binary_results
    card = {"name": "demo-model", "calibration": {"temperature": 1.7}}
    path = write_html_report([slice_level, patient_level], tmp_path / "r.html", model_card=card,
                             dataset_summary={"name": "synthetic", "split": "test"})
    text = path.read_text(encoding="utf-8")
    for section in SECTIONS:
        assert f'id="{section}"' in text, section
    # ROC, PR, calibration and histograms, for both levels
    assert len(re.findall(r'src="data:image/png;base64,[A-Za-z0-9+/=]{100,}"', text)) == 8
    assert not re.search(r"https?://", text)
    assert "<script" not in text and "<link" not in text
    assert "slice level: " in text and "patient level: " in text
    assert "not for clinical use" in text.lower()
    assert "demo-model" in text and "1.7" in text and "synthetic" in text
    assert re.search(r"\d\.\d{3} \(\d\.\d{3}&ndash;\d\.\d{3}\)", text)
