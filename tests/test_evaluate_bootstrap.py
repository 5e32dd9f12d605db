"""Patient bootstrap: whole patients resampled, undefined resamples skipped, reproducible."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from chestdx.errors import ChestDxError
from chestdx.evaluate.bootstrap import PatientResampler, patient_bootstrap
from chestdx.evaluate.metrics import binary_metrics, multiclass_metrics


def _clustered(n_patients=30, slices=8, seed=0):
    """Slices that share their patient's score level: strongly correlated within a patient."""
    rng = np.random.default_rng(seed)
    label = np.arange(n_patients) % 2
    level = rng.normal(0.5 + 0.15 * (2 * label - 1), 0.2)
    y = np.repeat(label, slices)
    score = np.clip(np.repeat(level, slices) + rng.normal(0, 0.03, y.size), 0, 1)
    return y, score, np.repeat(np.arange(n_patients), slices)


def test_resampler_draws_whole_patients():
    ids = np.array(["a", "a", "a", "b", "c", "c"])
    resampler = PatientResampler(ids, seed=1)
    for _ in range(20):
        drawn = ids[resampler.draw()]
        for patient, size in (("a", 3), ("b", 1), ("c", 2)):
            assert np.sum(drawn == patient) % size == 0
        assert len(np.unique(drawn)) <= 3
    assert resampler.n_patients == 3


def test_patient_level_intervals_are_wider_than_slice_level():
    y, score, ids = _clustered()
    fn = binary_metrics
    by_patient = patient_bootstrap(fn, y, score, ids, n_resamples=300, seed=0)
    by_slice = patient_bootstrap(fn, y, score, np.arange(y.size), n_resamples=300, seed=0)
    for name in ("auc", "sensitivity", "specificity", "accuracy"):
        wide = by_patient[name]["ci_high"] - by_patient[name]["ci_low"]
        narrow = by_slice[name]["ci_high"] - by_slice[name]["ci_low"]
        assert wide > 1.5 * narrow, name
        assert by_patient[name]["value"] == by_slice[name]["value"]


def test_interval_contains_estimate_and_seed_reproduces():
    y, score, ids = _clustered(seed=3)
    first = patient_bootstrap(binary_metrics, y, score, ids, n_resamples=200, seed=7)
    again = patient_bootstrap(binary_metrics, y, score, ids, n_resamples=200, seed=7)
    other = patient_bootstrap(binary_metrics, y, score, ids, n_resamples=200, seed=8)
    assert first == again
    assert first["auc"]["ci_low"] != other["auc"]["ci_low"]
    for name, entry in first.items():
        assert entry["ci_low"] <= entry["value"] <= entry["ci_high"], name
        assert entry["n_valid"] == 200


def test_class_absent_from_some_resamples_does_not_crash():
    # one positive patient in eight: about a third of resamples draw no positive at all
    ids = np.repeat(np.arange(8), 3)
    y = (ids == 0).astype(int)
    score = np.where(y == 1, 0.8, 0.3) + np.linspace(0, 0.1, ids.size)
    out = patient_bootstrap(binary_metrics, y, score, ids, n_resamples=300, seed=0)
    assert 100 < out["auc"]["n_valid"] < 300
    assert out["specificity"]["n_valid"] == 300  # negatives are always drawn
    assert out["auc"]["ci_low"] == out["auc"]["ci_high"] == 1.0
    assert out["sensitivity"]["value"] == 1.0


def test_metric_undefined_everywhere_gives_nan_interval():
    out = patient_bootstrap(binary_metrics, np.zeros(6, int), np.linspace(0, 1, 6), np.arange(6), n_resamples=50)
    assert out["auc"]["n_valid"] == 0 and np.isnan(out["auc"]["ci_low"])
    assert out["specificity"]["value"] == pytest.approx(0.5)


def test_non_scalar_metric_entries_are_skipped():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 60)
    probs = rng.dirichlet([1, 1, 1], 60)
    out = patient_bootstrap(partial(multiclass_metrics, classes=["a", "b", "c"]), y, probs, np.arange(60) // 2, n_resamples=50)
    assert "confusion_matrix" not in out
    assert {"auc", "kappa", "f1[b]"} <= set(out)


def test_length_mismatch_is_a_user_error():
    with pytest.raises(ChestDxError, match="patient ids"):
        patient_bootstrap(binary_metrics, np.zeros(4, int), np.zeros(4), np.arange(3))
