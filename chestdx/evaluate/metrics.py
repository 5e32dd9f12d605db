"""Classification metrics for binary and multi-class diagnosis, safe on degenerate data.

Every function returns ``nan`` for a metric that is undefined on the given data (for
example sensitivity when no case is positive, or AUC when one class is absent) instead
of raising, so that bootstrap resamples with a missing class can simply be skipped.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata

from chestdx.errors import ChestDxError

DEFAULT_THRESHOLDS = np.round(np.arange(0.1, 1.0, 0.1), 1)
_PER_CLASS = ("auc", "sensitivity", "specificity", "precision", "npv", "f1")


def _ratio(num: float, den: float) -> float:
    """``num / den``, or nan when ``den`` is 0."""
    return float(num / den) if den else float("nan")


def _kappa(counts: np.ndarray) -> float:
    """Cohen's kappa from a (K, K) confusion matrix of counts (rows truth, columns prediction)."""
    n = counts.sum()
    if n == 0:
        return float("nan")
    observed = np.trace(counts) / n
    expected = float(counts.sum(axis=1) @ counts.sum(axis=0)) / n**2
    return _ratio(observed - expected, 1.0 - expected)


def auc_score(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve via the Mann-Whitney rank statistic (ties count one half).

    Equal to ``sklearn.metrics.roc_auc_score`` but about 15 times faster, which matters
    inside a 2000-resample bootstrap.

    Args:
        y_true: (n,) labels, 1 = positive, 0 = negative.
        score: (n,) scores, higher = more likely positive.

    Returns:
        The AUC, or nan when either class is absent.
    """
    return _auc_from_ranks(np.asarray(y_true) == 1, rankdata(score))


def _auc_from_ranks(positive: np.ndarray, ranks: np.ndarray) -> float:
    """Mann-Whitney AUC from a boolean positive mask and the (mid-)ranks of the scores."""
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Confusion matrix, rows = true class, columns = predicted class.

    Args:
        y_true: (n,) true class indices in ``[0, n_classes)``.
        y_pred: (n,) predicted class indices in ``[0, n_classes)``.
        n_classes: number of classes K.

    Returns:
        ``(counts, row_normalised)``: (K, K) int counts and the same divided by each row's
        total (a row with no cases is all zeros, as in scikit-learn).
    """
    y_true = np.asarray(y_true, dtype=int)
    y_pred = np.asarray(y_pred, dtype=int)
    counts = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    totals = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    return counts, normalised


def metrics_from_counts(tp, fp, fn, tn) -> dict[str, np.ndarray]:
    """Decision metrics from confusion counts; works element-wise on arrays of counts.

    Args:
        tp, fp, fn, tn: true/false positive/negative counts (scalars or equal-shape arrays).

    Returns:
        dict of ``accuracy``, ``sensitivity``, ``specificity``, ``precision``, ``npv``,
        ``f1`` and ``kappa`` (Cohen's); nan where a denominator is 0.
    """
    tp, fp, fn, tn = (np.asarray(v, dtype=float) for v in (tp, fp, fn, tn))
    n = tp + fp + fn + tn
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = ((tp + fn) * (tp + fp) + (tn + fp) * (tn + fn)) / n**2
        return {
            "accuracy": (tp + tn) / n,
            "sensitivity": tp / (tp + fn),
            "specificity": tn / (tn + fp),
            "precision": tp / (tp + fp),
            "npv": tn / (tn + fn),
            "f1": 2 * tp / (2 * tp + fp + fn),
            "kappa": ((tp + tn) / n - expected) / (1.0 - expected),
        }


def _decision_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Threshold-dependent binary metrics from 0/1 truth and 0/1 decisions."""
    y = np.asarray(y_true) == 1
    p = np.asarray(y_pred) == 1
    counts = (np.sum(y & p), np.sum(~y & p), np.sum(y & ~p), np.sum(~y & ~p))
    return {k: float(v) for k, v in metrics_from_counts(*counts).items()}


def binary_metrics(y_true: np.ndarray, score: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Metrics of a binary test that calls a case positive when ``score >= threshold``.

    Args:
        y_true: (n,) int labels, 1 = positive, 0 = negative.
        score: (n,) float scores (e.g. the positive-class probability).
        threshold: decision threshold.

    Returns:
        dict with ``auc``, ``accuracy``, ``sensitivity``, ``specificity``, ``precision``
        (PPV), ``npv``, ``f1`` and ``kappa`` (Cohen's, decisions vs truth); undefined
        metrics (a class absent, no positive call) are nan.

    Example:
        >>> binary_metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.6, 0.7, 0.9]))["specificity"]
        0.5
    """
    score = np.asarray(score, dtype=float)
    out = {"auc": auc_score(y_true, score)}
    out.update(_decision_metrics(y_true, score >= threshold))
    return out


def multiclass_metrics(y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> dict:
    """Multi-class metrics for argmax decisions, with one-vs-rest metrics per class.

    Args:
        y_true: (n,) int class indices.
        probs: (n, K) class probabilities (or any scores; the argmax is the decision).
        classes: K class names, in column order.

    Returns:
        A flat dict: ``accuracy`` and ``kappa`` (multi-class), macro averages ``auc``,
        ``sensitivity``, ``specificity``, ``precision``, ``npv``, ``f1`` (nan when
        undefined for any class), per class ``"<metric>[<class>]"`` one-vs-rest, and
        ``confusion_matrix`` (nested list of counts; not a float, so bootstraps skip it).
    """
    y_true = np.asarray(y_true, dtype=int)
    probs = np.asarray(probs, dtype=float)
    counts, _ = confusion(y_true, probs.argmax(axis=1), len(classes))
    tp = np.diag(counts)
    fp = counts.sum(axis=0) - tp
    fn = counts.sum(axis=1) - tp
    per_class = metrics_from_counts(tp, fp, fn, counts.sum() - tp - fp - fn)
    ranks = rankdata(probs, axis=0)
    per_class["auc"] = np.array([_auc_from_ranks(y_true == k, ranks[:, k]) for k in range(len(classes))])
    out: dict = {name: float(np.mean(per_class[name])) for name in _PER_CLASS}
    out["accuracy"] = _ratio(np.trace(counts), counts.sum())
    out["kappa"] = _kappa(counts)
    for k, cls in enumerate(classes):
        out.update({f"{name}[{cls}]": float(per_class[name][k]) for name in _PER_CLASS})
    out["confusion_matrix"] = counts.tolist()
    return out


def threshold_sweep(y_true: np.ndarray, score: np.ndarray, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> list[dict]:
    """Sensitivity, specificity and F1 at each threshold (the COVID CT-Net table).

    Args:
        y_true: (n,) 0/1 labels.
        score: (n,) positive-class scores.
        thresholds: thresholds to evaluate (default 0.1, 0.2, ..., 0.9).

    Returns:
        One dict per threshold with ``threshold``, ``sensitivity``, ``specificity``,
        ``precision``, ``f1`` and ``accuracy``.
    """
    score = np.asarray(score, dtype=float)
    rows = []
    for t in thresholds:
        m = _decision_metrics(y_true, score >= t)
        rows.append({"threshold": float(t)} | {k: m[k] for k in ("sensitivity", "specificity", "precision", "f1", "accuracy")})
    return rows


def choose_operating_point(y_true: np.ndarray, score: np.ndarray, target: str, value: float = 1.0) -> float:
    """The threshold that reaches a target specificity or sensitivity, or the best F1, on this data.

    Fit it on the validation split and apply it unchanged to the test split. Among the
    thresholds that reach the target, the one that is best for the other metric is
    returned (the lowest threshold for a specificity target, the highest for a
    sensitivity target); for ``"f1"``, the threshold of the highest F1 (the middle one
    of a tie). Thresholds lie half-way between consecutive distinct scores so that a
    score equal to a training score is not on the edge.

    Args:
        y_true: (n,) 0/1 labels; both classes must be present.
        score: (n,) positive-class scores; a case is positive when ``score >= threshold``.
        target: ``"specificity"``, ``"sensitivity"`` or ``"f1"``.
        value: the minimum the target metric must reach, in (0, 1] (unused for ``"f1"``).

    Returns:
        The threshold.

    Raises:
        ChestDxError: unknown target, value outside (0, 1], or a class missing.
    """
    if target not in ("specificity", "sensitivity", "f1"):
        raise ChestDxError(f"operating-point target {target!r} is unknown: use 'specificity', 'sensitivity' or 'f1'")
    if target != "f1" and not (value is not None and 0.0 < value <= 1.0):
        raise ChestDxError(f"operating-point value {value} is outside (0, 1]: give a fraction such as 0.9")
    y = np.asarray(y_true) == 1
    score = np.asarray(score, dtype=float)
    if y.all() or not y.any():
        raise ChestDxError("choosing an operating point needs positive and negative cases: use a validation split holding both classes")
    unique = np.unique(score)
    candidates = np.concatenate([[unique[0]], (unique[:-1] + unique[1:]) / 2, [np.nextafter(unique[-1], np.inf)]])
    if target == "f1":
        f1 = np.array([_decision_metrics(y, score >= t)["f1"] for t in candidates])
        best = np.flatnonzero(f1 == np.nanmax(f1))
        return float(candidates[best[len(best) // 2]])
    if target == "specificity":
        negatives = np.sort(score[~y])
        reached = np.searchsorted(negatives, candidates, side="left") / negatives.size
        return float(candidates[np.argmax(reached >= value)])
    positives = np.sort(score[y])
    reached = 1.0 - np.searchsorted(positives, candidates, side="left") / positives.size
    return float(candidates[np.flatnonzero(reached >= value)[-1]])
