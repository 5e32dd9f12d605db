"""Segmentation metrics as Inf-Net reports them (Fan et al., IEEE TMI 2020): per image, then averaged."""

from __future__ import annotations

import numpy as np


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice overlap ``2|P∩G| / (|P| + |G|)``; 1.0 when both masks are empty.

    Args:
        pred: bool prediction.
        truth: bool ground truth of the same shape.

    Returns:
        Dice in [0, 1].
    """
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    total = pred.sum() + truth.sum()
    return 1.0 if total == 0 else float(2 * np.logical_and(pred, truth).sum() / total)


def infection_scores(prob: np.ndarray, truth: np.ndarray, threshold: float = 0.5) -> dict:
    """Inf-Net's per-image scores of an infection probability map.

    Args:
        prob: infection probability ``(h, w)`` in [0, 1].
        truth: bool infection mask ``(h, w)``.
        threshold: probability at which a pixel counts as infected.

    Returns:
        ``dice``, ``sensitivity`` (TP / (TP + FN); 1.0 without infection), ``specificity``
        (TN / (TN + FP)) and ``mae`` (mean absolute error of ``prob`` against ``truth``).
    """
    truth = np.asarray(truth, bool)
    pred = prob >= threshold
    tp = np.logical_and(pred, truth).sum()
    negatives = (~truth).sum()
    return {
        "dice": dice(pred, truth),
        "sensitivity": float(tp / truth.sum()) if truth.any() else 1.0,
        "specificity": float(np.logical_and(~pred, ~truth).sum() / negatives) if negatives else 1.0,
        "mae": float(np.abs(prob - truth).mean()),
    }


def class_dice(labels: np.ndarray, truth: np.ndarray, label: int) -> float | None:
    """Dice of one class of a label map, or None when the ground truth lacks that class.

    Args:
        labels: predicted label map.
        truth: ground-truth label map.
        label: the class value.

    Returns:
        Dice, or None (the image does not count towards that class's mean).
    """
    return dice(labels == label, truth == label) if (truth == label).any() else None


def mean_scores(rows: list[dict]) -> dict:
    """Args: rows: per-image score dicts (None values skipped). Returns: the mean of each key and its count ``n_<key>``."""
    out = {}
    for key in rows[0] if rows else []:
        values = [r[key] for r in rows if r.get(key) is not None]
        out[key] = float(np.mean(values)) if values else None
        out[f"n_{key}"] = len(values)
    return out
