"""Calibration: ECE, Brier, reliability curve and temperature scaling of an over-confident model."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss

from chestdx.errors import ChestDxError
from chestdx.evaluate.calibration import (
    TemperatureScaler,
    brier_score,
    expected_calibration_error,
    logits_from_probs,
    reliability_curve,
)


def _calibrated_model(n=3000, k=3, seed=0):
    """Logits whose softmax is the true class distribution the labels are drawn from."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.2, (n, k))
    probs = softmax(logits, axis=1)
    u = rng.random(n)[:, None]
    y = (u > np.cumsum(probs, axis=1)).sum(axis=1)
    return logits, y


def test_ece_hand_computed():
    # bin [0.1, 0.2): p = 0.15 twice, observed 1 of 2 -> gap 0.35; bin [0.9, 1]: p = 0.95, observed 1 -> gap 0.05
    y = np.array([0, 1, 1])
    p = np.array([0.15, 0.15, 0.95])
    assert expected_calibration_error(y, p, n_bins=10) == pytest.approx((2 * 0.35 + 1 * 0.05) / 3)
    assert expected_calibration_error(np.array([0, 1]), np.array([0.0, 1.0])) == 0.0


def test_brier_and_reliability_use_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    p = np.clip(0.5 * y + rng.random(300) * 0.5, 0, 1)
    assert brier_score(y, p) == pytest.approx(brier_score_loss(y, p))
    curve = reliability_curve(y, p, n_bins=5)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=5)
    assert curve["prob_true"] == pytest.approx(prob_true.tolist())
    assert curve["prob_pred"] == pytest.approx(prob_pred.tolist())
    assert sum(curve["count"]) == 300


def test_multiclass_brier_matches_one_hot_mean_squared_error():
    logits, y = _calibrated_model(n=200)
    probs = softmax(logits, axis=1)
    expected = np.mean(np.sum((probs - np.eye(3)[y]) ** 2, axis=1))
    assert brier_score(y, probs) == pytest.approx(expected)


def test_temperature_scaling_fixes_an_overconfident_model():
    logits, y = _calibrated_model()
    overconfident = 4.0 * logits
    scaler = TemperatureScaler().fit(overconfident, y)
    assert scaler.temperature_ == pytest.approx(4.0, rel=0.1)
    before = expected_calibration_error(y, softmax(overconfident, axis=1))
    after = expected_calibration_error(y, scaler.transform(overconfident))
    assert after < before / 3
    assert np.array_equal(scaler.transform(overconfident).argmax(1), overconfident.argmax(1))


def test_temperature_scaling_binary_logits_and_probability_only_models():
    logits, y = _calibrated_model(k=2, seed=2)
    binary_logit = 3.0 * (logits[:, 1] - logits[:, 0])
    scaler = TemperatureScaler().fit(binary_logit, y)
    assert scaler.temperature_ == pytest.approx(3.0, rel=0.15)
    assert scaler.transform(binary_logit).shape == (len(y),)
    # a model that only gives probabilities: calibrate log p
    sharp = softmax(4.0 * logits, axis=1)
    assert TemperatureScaler().fit(logits_from_probs(sharp), y).temperature_ == pytest.approx(4.0, rel=0.15)
    assert softmax(logits_from_probs(sharp), axis=1) == pytest.approx(sharp, abs=1e-6)


def test_transform_before_fit_is_a_user_error():
    with pytest.raises(ChestDxError, match="fit"):
        TemperatureScaler().transform(np.zeros((2, 2)))
