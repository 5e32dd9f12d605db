"""Confidence intervals from a bootstrap that resamples patients, not slices."""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from numbers import Real

import numpy as np

from chestdx.errors import ChestDxError

logger = logging.getLogger(__name__)

MetricFn = Callable[[np.ndarray, np.ndarray], dict]


class PatientResampler:
    """Draws bootstrap resamples of patients and returns the rows of the drawn patients.

    A patient drawn twice contributes all of its rows twice. Slices of one patient are
    correlated, so resampling patients gives honest (wider) intervals than resampling
    slices as if they were independent.

    Args:
        patient_ids: (n,) patient id of each row (any hashable values).
        seed: seed of the random generator.

    Example:
        >>> resampler = PatientResampler(["a", "a", "b"], seed=0)
        >>> rows = resampler.draw()  # row indices, e.g. array([2, 0, 1])
    """

    def __init__(self, patient_ids, seed: int = 0) -> None:
        _, codes = np.unique(np.asarray(patient_ids), return_inverse=True)
        self._order = np.argsort(codes, kind="stable")
        self._sizes = np.bincount(codes)
        self._starts = np.concatenate([[0], np.cumsum(self._sizes)[:-1]])
        self.n_patients = int(self._sizes.size)
        self._rng = np.random.default_rng(seed)

    def draw(self) -> np.ndarray:
        """Row indices of one resample (n_patients patients drawn with replacement)."""
        drawn = self._rng.integers(0, self.n_patients, size=self.n_patients)
        sizes = self._sizes[drawn]
        offsets = np.cumsum(sizes) - sizes
        positions = np.repeat(self._starts[drawn] - offsets, sizes) + np.arange(sizes.sum())
        return self._order[positions]


def _scalars(metrics: dict) -> dict[Hashable, float]:
    """The real-number entries of a metric dict (a confusion matrix, for instance, is dropped)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, Real)}


def patient_bootstrap(
    metric_fn: MetricFn,
    y_true: np.ndarray,
    score: np.ndarray,
    patient_ids,
    n_resamples: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[Hashable, dict[str, float]]:
    """Point estimates and percentile confidence intervals from a patient bootstrap.

    Args:
        metric_fn: ``metric_fn(y_true_rows, score_rows) -> dict`` of floats (other values
            are ignored), e.g. ``binary_metrics`` or a ``functools.partial`` of it.
        y_true: (n,) labels, one per row.
        score: (n,) or (n, K) scores, one row per case.
        patient_ids: (n,) patient id of each row; pass ``np.arange(n)`` to treat every
            row as independent.
        n_resamples: number of bootstrap resamples.
        seed: random seed; the same seed gives the same intervals.
        alpha: 1 - confidence level (0.05 gives 95% intervals).

    Returns:
        For each metric: ``{"value", "ci_low", "ci_high", "n_valid"}``, where ``value`` is
        the metric on all data and ``n_valid`` the number of resamples in which the
        metric was defined (resamples where it is nan, e.g. a class drawn zero times, are
        skipped for that metric). The interval is nan when no resample was valid.

    Raises:
        ChestDxError: lengths differ or there are no rows.
    """
    y_true = np.asarray(y_true)
    score = np.asarray(score)
    patient_ids = np.asarray(patient_ids)
    if not (len(y_true) == len(score) == len(patient_ids)):
        raise ChestDxError(
            f"labels ({len(y_true)}), scores ({len(score)}) and patient ids ({len(patient_ids)}) differ in length: "
            "give one label, score and patient id per case"
        )
    if len(y_true) == 0:
        raise ChestDxError("no cases to evaluate: check that the dataset split is not empty")
    point = _scalars(metric_fn(y_true, score))
    names = list(point)
    samples = np.full((n_resamples, len(names)), np.nan)
    resampler = PatientResampler(patient_ids, seed=seed)
    for r in range(n_resamples):
        rows = resampler.draw()
        values = _scalars(metric_fn(y_true[rows], score[rows]))
        samples[r] = [values.get(name, np.nan) for name in names]
    result = {}
    for j, name in enumerate(names):
        valid = samples[~np.isnan(samples[:, j]), j]
        if valid.size:
            low, high = np.percentile(valid, [100 * alpha / 2, 100 * (1 - alpha / 2)])
        else:
            low = high = float("nan")
        if valid.size < 0.9 * n_resamples and not np.isnan(point[name]):
            logger.warning("metric %s was undefined in %d of %d bootstrap resamples; its interval rests on the rest",
                           name, n_resamples - valid.size, n_resamples)
        result[name] = {"value": point[name], "ci_low": float(low), "ci_high": float(high), "n_valid": int(valid.size)}
    return result
