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


INFNET_THRESHOLDS = np.linspace(1.0, 0.0, 256)
"""Inf-Net's evaluation thresholds (MATLAB ``1:-1/255:0``)."""


def infnet_mean_scores(maps: list[np.ndarray], truths: list[np.ndarray]) -> dict:
    """Scores as Inf-Net's MATLAB evaluation tool computes them (``EvaluationTool/main.m``).

    Each map is min-max scaled to 0..1 per image; Dice, sensitivity and specificity are
    computed at each of 256 thresholds (pixels >= threshold), averaged over images, then
    over thresholds (``meanDic``, ``meanSen``, ``meanSpe``); MAE is the mean absolute error
    of the scaled map. Every image counts, also those whose ground truth is empty.

    Args:
        maps: probability maps ``(h, w)``, one per image.
        truths: bool ground-truth masks, same shapes.

    Returns:
        ``dice``, ``sensitivity``, ``specificity``, ``mae`` and ``n``.
    """
    dices, sens, specs, maes = [], [], [], []
    for heat, truth in zip(maps, truths):
        truth = np.asarray(truth, bool)
        low, high = float(heat.min()), float(heat.max())
        scaled = (heat - low) / (high - low) if high > low else np.zeros_like(heat, dtype=np.float64)
        positives, negatives = np.sort(scaled[truth]), np.sort(scaled[~truth])
        tp = len(positives) - np.searchsorted(positives, INFNET_THRESHOLDS, side="left")
        fp = len(negatives) - np.searchsorted(negatives, INFNET_THRESHOLDS, side="left")
        fn, tn = len(positives) - tp, len(negatives) - fp
        with np.errstate(invalid="ignore", divide="ignore"):
            dices.append(np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 1.0))
            sens.append(tp / len(positives) if len(positives) else np.ones(len(tp)))
            specs.append(tn / len(negatives) if len(negatives) else np.ones(len(tn)))
        maes.append(float(np.abs(scaled - truth).mean()))
    return {"dice": float(np.mean(dices)), "sensitivity": float(np.mean(sens)), "specificity": float(np.mean(specs)),
            "mae": float(np.mean(maes)), "n": len(maps)}
