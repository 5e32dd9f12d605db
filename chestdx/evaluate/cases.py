"""Per-case results of an evaluation: one row per study, for a CSV and the report's case table."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def case_rows(records: Sequence, probs: np.ndarray, y: Sequence[int], classes: Sequence[str],
              threshold: float | None) -> list[dict]:
    """One row per study: id, patient, truth, probabilities, decision, error and source.

    Args:
        records: the dataset records, in the order of ``probs``.
        probs: ``(n, K)`` study probabilities in the order of ``classes``.
        y: true class index of each study.
        classes: class names in logit order.
        threshold: a binary model's threshold on the last class; None: the most probable class.

    Returns:
        Rows with the keys ``id``, ``patient``, ``label`` (the dataset's), ``truth`` (the
        model class it maps onto), ``p(CLASS)`` per class,
        ``decision``, ``correct``, ``error`` (1 - the probability of the true class) and
        ``source`` (the record's source, empty when it has none), in record order.
    """
    rows = []
    for rec, p, truth in zip(records, np.asarray(probs, dtype=float), y, strict=True):
        decided = (len(classes) - 1 if p[-1] >= threshold else 0) if threshold is not None else int(np.argmax(p))
        rows.append({"id": str(rec.path), "patient": rec.patient_id, "label": rec.label, "truth": classes[truth],
                     **{f"p({c})": round(float(v), 4) for c, v in zip(classes, p, strict=True)},
                     "decision": classes[decided], "correct": decided == truth,
                     "error": round(1.0 - float(p[truth]), 4), "source": getattr(rec, "source", None) or ""})
    return rows


def worst_first(rows: list[dict]) -> list[dict]:
    """Returns: the rows ordered by falling error (the most confident mistakes first)."""
    return sorted(rows, key=lambda row: -row["error"])


def write_cases_csv(rows: list[dict], path: str | Path) -> Path:
    """Write the per-case rows as CSV (header from the first row).

    Args:
        rows: as returned by `case_rows`.
        path: the CSV file to write.

    Returns:
        The path written.
    """
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path
