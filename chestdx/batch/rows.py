"""One study -> one result row: read, diagnose, optionally explain, flatten the prediction record."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from chestdx.batch.discover import BatchItem
from chestdx.errors import ChestDxError
from chestdx.evaluate.run import probability_column
from chestdx.io import load_study
from chestdx.models.loading import load_model, reuse_freed_memory
from chestdx.outputs.explanations import write_study_explanation
from chestdx.outputs.prediction import prediction_record
from chestdx.pipeline import diagnose, explain

# Column groups in file order; probabilities, quantification and timing columns sit in their group's slot.
COLUMN_ORDER = ("path", "study_id", "study_uid", "series_uid", "kind", "n_slices", "model", "p_", "decision",
                "threshold", "q_", "t_", "warnings", "explanation", "error")
TIMING_PREFIX = "t_"


@dataclass(frozen=True)
class BatchOptions:
    """What every worker does to a study.

    Args:
        model: bundled model name or checkpoint folder; None for the default of each study's kind.
        explain: explanation method (``chestdx.pipeline.explain``), or None.
        maps_dir: folder of the heat maps (one sub-folder per study id) when explaining.
        explain_slices: how many slices to explain per study.
        threads: intra-op threads of each worker's runtimes (ONNX Runtime, torch).
    """

    model: str | None = None
    explain: str | None = None
    maps_dir: str | None = None
    explain_slices: int = 3
    threads: int = 1


def start_worker(options: BatchOptions) -> None:
    """Set a worker process up: its thread count, its memory reuse (`reuse_freed_memory`), then its model
    (loaded once; `load_model` caches it).

    ``OMP_NUM_THREADS`` is read by `chestdx.models.loading` (ONNX Runtime sessions) and by
    torch when explanations import it, so each worker uses its share of the CPUs.

    Args:
        options: the batch options.
    """
    os.environ["OMP_NUM_THREADS"] = str(options.threads)
    reuse_freed_memory()
    load_model(options.model)


def _flatten(prefix: str, values: dict) -> dict:
    """``{"a": 1, "b": {"c": 2}}`` -> ``{prefix + "a": 1, prefix + "b_c": 2}``."""
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_flatten(f"{prefix}{key}_", value))
        else:
            out[f"{prefix}{key}"] = value
    return out


def score_study(item: BatchItem, options: BatchOptions) -> dict:
    """Diagnose one study into its result row; any failure becomes the row's ``error``.

    Probabilities are kept at full precision (``predict --json`` rounds them to 4 digits for
    display) so that ``chestdx evaluate --predictions`` on the file equals evaluating by
    running the model. ``study_uid`` stays empty: the reader leaves StudyInstanceUID out of a
    `Study` (it is an identifying tag), only the series UID is kept.

    Args:
        item: the study.
        options: the batch options.

    Returns:
        The row: path, study id, UIDs, kind, model, ``p_<class>`` per class, decision,
        threshold, ``q_<key>`` per quantification value, ``t_<stage>`` seconds, warnings,
        explanation (path of ``explain.json``) and error (None when scored).
    """
    row = {"path": item.path, "study_id": item.study_id, "study_uid": None, "series_uid": None, "kind": None}
    try:
        t0 = time.perf_counter()
        study = load_study(item.path, progress=False)
        read_seconds = time.perf_counter() - t0
        row.update(series_uid=study.series_uid, kind=study.kind, n_slices=study.n_slices)
        diagnosis = diagnose(study, load_model(options.model, kind=study.kind), read_seconds=read_seconds)
        explanation = None
        if options.explain:
            explain(diagnosis, options.explain, n_slices=options.explain_slices)
            explanation = str(write_study_explanation(Path(options.maps_dir) / item.study_id, diagnosis))
        record = prediction_record(diagnosis)
        row["model"] = record["model"]["name"]
        row.update({probability_column(c): float(p) for c, p in zip(diagnosis.model.config.classes,
                                                                   diagnosis.probabilities)})
        row.update(decision=record["decision"], threshold=float(record["threshold"]))
        row.update(_flatten("q_", record.get("quantification") or {}))
        row.update({f"{TIMING_PREFIX}{stage}": float(s) for stage, s in record["timing_s"].items()})
        row.update(warnings="; ".join(record["warnings"]) or None, explanation=explanation, error=None)
    except ChestDxError as exc:
        row["error"] = str(exc)
    except Exception as exc:  # one study's failure of any kind is its row's error, never the batch's
        row["error"] = f"{type(exc).__name__}: {exc}"
    return row


def _group(column: str) -> int:
    for rank, name in enumerate(COLUMN_ORDER):
        if column == name or (name.endswith("_") and column.startswith(name)):
            return rank
    return COLUMN_ORDER.index("warnings")


def table_columns(rows: list[dict]) -> list[str]:
    """Args: rows: result rows in file order. Returns: their columns, grouped as `COLUMN_ORDER`, first seen first."""
    seen = list(dict.fromkeys(key for row in rows for key in row))
    return sorted(seen, key=_group)
