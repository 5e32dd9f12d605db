"""Calibration: expected calibration error, Brier score, reliability curves, temperature scaling.

Probabilities may be binary, given as (n,) positive-class probabilities, or
multi-class, given as (n, K). Multi-class ECE and reliability curves are *top-label*:
the confidence of the predicted class against whether the prediction is right.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss

from chestdx.errors import ChestDxError


def _binary_view(y_true: np.ndarray, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels, probabilities) of a binary event: the positive class, or top-label correctness."""
    y_true = np.asarray(y_true, dtype=int)
    prob = np.asarray(prob, dtype=float)
    if prob.ndim == 1:
        return y_true, prob
    return (prob.argmax(axis=1) == y_true).astype(int), prob.max(axis=1)


def expected_calibration_error(y_true: np.ndarray, prob: np.ndarray, n_bins: int = 10) -> float:
    """Expected calibration error over equal-width probability bins.

    Args:
        y_true: (n,) labels (0/1 for binary, class indices for multi-class).
        prob: (n,) positive-class probabilities, or (n, K) class probabilities
            (top-label ECE).
        n_bins: number of equal-width bins on [0, 1].

    Returns:
        The case-weighted mean over bins of ``|observed frequency - mean probability|``.
    """
    y, p = _binary_view(y_true, prob)
    bins = np.searchsorted(np.linspace(0.0, 1.0, n_bins + 1)[1:-1], p)
    counts = np.bincount(bins, minlength=n_bins)
    gap = np.bincount(bins, weights=y - p, minlength=n_bins)
    return float(np.abs(gap).sum() / counts.sum())


def brier_score(y_true: np.ndarray, prob: np.ndarray) -> float:
    """Brier score (scikit-learn's ``brier_score_loss``; multi-class for (n, K) probabilities).

    Args:
        y_true: (n,) labels.
        prob: (n,) positive-class probabilities or (n, K) class probabilities.

    Returns:
        Mean squared error of the probabilities (lower is better).
    """
    prob = np.asarray(prob, dtype=float)
    labels = None if prob.ndim == 1 else np.arange(prob.shape[1])
    return float(brier_score_loss(np.asarray(y_true, dtype=int), prob, labels=labels))


def reliability_curve(y_true: np.ndarray, prob: np.ndarray, n_bins: int = 10) -> dict[str, list[float]]:
    """Points of a reliability diagram (scikit-learn's ``calibration_curve``, uniform bins).

    Args:
        y_true: (n,) labels.
        prob: (n,) positive-class probabilities or (n, K) class probabilities (top-label).
        n_bins: number of equal-width bins.

    Returns:
        ``{"prob_pred", "prob_true", "count"}``: mean predicted probability, observed
        frequency and number of cases of each non-empty bin.
    """
    y, p = _binary_view(y_true, prob)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=n_bins, strategy="uniform", pos_label=1)
    counts = np.bincount(np.searchsorted(np.linspace(0.0, 1.0, n_bins + 1)[1:-1], p), minlength=n_bins)
    return {"prob_pred": prob_pred.tolist(), "prob_true": prob_true.tolist(), "count": counts[counts > 0].tolist()}


def logits_from_probs(p: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """Logits (log probabilities) of a model that only gives probabilities.

    ``softmax(log p) == p``, so the result can be fed to :class:`TemperatureScaler`.

    Args:
        p: (n, K) probabilities.
        eps: floor that keeps log(0) finite.

    Returns:
        (n, K) array ``log(max(p, eps))``.
    """
    return np.log(np.clip(np.asarray(p, dtype=float), eps, 1.0))


def _as_two_class(logits: np.ndarray) -> np.ndarray:
    """(n, K) logits; a 1-D array is read as binary logits of the positive class."""
    logits = np.asarray(logits, dtype=float)
    if logits.ndim == 1:
        return np.stack([np.zeros_like(logits), logits], axis=1)
    if logits.ndim != 2:
        raise ChestDxError(f"logits must be (n,) or (n, K), got shape {logits.shape}")
    return logits


class TemperatureScaler:
    """Temperature scaling (Guo et al. 2017): ``softmax(logits / T)`` with T fitted by NLL.

    Fit on the validation split, store ``temperature_`` in the model card, and apply the
    same T at prediction time. T > 1 softens an over-confident model; the argmax (and so
    accuracy) does not change.

    Example:
        >>> scaler = TemperatureScaler().fit(val_logits, val_labels)
        >>> probs = scaler.transform(test_logits)
    """

    bounds = (1e-2, 1e2)

    def fit(self, logits: np.ndarray, y: np.ndarray) -> TemperatureScaler:
        """Find the temperature that minimises the negative log-likelihood.

        Args:
            logits: (n, K) logits, or (n,) binary logits of the positive class.
            y: (n,) class indices.

        Returns:
            self, with ``temperature_`` set.
        """
        logits = _as_two_class(logits)
        y = np.asarray(y, dtype=int)
        if len(y) != len(logits) or len(y) == 0:
            raise ChestDxError(f"temperature scaling needs one label per logit row, got {len(y)} labels for {len(logits)} rows")
        rows = np.arange(len(y))

        def nll(log_t: float) -> float:
            return float(-log_softmax(logits / np.exp(log_t), axis=1)[rows, y].mean())

        found = minimize_scalar(nll, bounds=np.log(self.bounds), method="bounded")
        self.temperature_ = float(np.exp(found.x))
        return self

    def transform(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities.

        Args:
            logits: (n, K) logits, or (n,) binary logits.

        Returns:
            (n, K) probabilities, or (n,) positive-class probabilities for 1-D input.
        """
        if not hasattr(self, "temperature_"):
            raise ChestDxError("TemperatureScaler is not fitted: call fit(validation_logits, labels) first")
        probs = softmax(_as_two_class(logits) / self.temperature_, axis=1)
        return probs[:, 1] if np.ndim(logits) == 1 else probs
