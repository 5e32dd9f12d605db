"""A diagnosis as the prediction record (``predict --json``) and as the text ``chestdx predict`` prints."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from chestdx.pipeline import Diagnosis

RESEARCH_ONLY = "research use only, not for clinical use"
LESION_LABELS = {"1": "ground-glass opacity", "2": "consolidation"}
"""Values of a lesion label map (0 is background), as `chestdx.outputs.segmentation` writes them."""


def prediction_record(diagnosis: Diagnosis, top_k: int = 5, explanation_file: str | Path | None = None,
                      n_lesion_slices: int = 3) -> dict:
    """The JSON-ready prediction of a diagnosis.

    Args:
        diagnosis: the diagnosis.
        top_k: how many of the slices that drove the decision to list.
        explanation_file: where the explanation was written (``explain.json``), if it was.
        n_lesion_slices: how many of the slices with the most lesion to list under ``lesions``.

    Returns:
        ``kind``, ``probabilities`` (class -> p), ``decision``, ``threshold``, ``model``
        (the card's summary), ``limitations`` (the card's), ``slices_used``, ``top_slices``
        (study slice index and the decided class's probability), ``timing_s`` (per stage and
        ``total``), ``warnings`` and ``study`` (``n_slices``, ``intensity``, ``shape`` of the
        pixels); once ``explain`` has run ``explanation`` (``method``, ``class``, the explained
        ``slices`` and their ``slice_scores``, and ``file``); once ``quantify_lesions`` has run
        ``quantification`` and ``lesions`` (the segmenter, its ``labels``, the ``key_slices``
        with the most lesion, every slice with lesion and the slices the network ran on).
    """
    model, prepared = diagnosis.model, diagnosis.prepared
    card = model.card
    summary = card.summary()
    val_auc = card.headline_auc("val")
    if val_auc is not None and val_auc.ci_low is not None:
        summary["val_auc_ci"] = [round(val_auc.ci_low, 4), round(val_auc.ci_high, 4)]
    timing = {k: round(v, 3) for k, v in diagnosis.timing.items()}
    timing["total"] = round(sum(diagnosis.timing.values()), 3)
    study = diagnosis.study
    record = {
        "kind": study.kind,
        "probabilities": {c: round(float(p), 4) for c, p in zip(model.config.classes, diagnosis.probabilities)},
        "decision": diagnosis.decision,
        "threshold": model.threshold,
        "model": summary,
        "limitations": list(card.limitations),
        "slices_used": [int(i) for i in prepared.indices[prepared.indices >= 0]],
        "top_slices": [{"index": i, "score": round(p, 4)} for i, p in diagnosis.top_slices(top_k)],
        "timing_s": timing,
        "warnings": list(diagnosis.warnings),
        "study": {"n_slices": int(study.n_slices), "intensity": study.intensity, "shape": list(study.pixels.shape)},
    }
    e = diagnosis.explanation
    if e is not None:
        record["explanation"] = {"method": e.method, "class": e.class_name, "slices": list(e.slice_indices),
                                 "slice_scores": [round(s, 4) for s in e.slice_scores],
                                 "file": None if explanation_file is None else str(explanation_file)}
    if diagnosis.quantification:
        record["quantification"] = diagnosis.quantification
    lesions = diagnosis.lesions
    if lesions is not None:
        area = lesions.lesion_pixels()
        record["lesions"] = {
            "model": lesions.model, "threshold": lesions.threshold, "labels": dict(LESION_LABELS),
            "key_slices": [{"index": int(i), "lesion_pixels": int(area[i])} for i in lesions.key_slices(n_lesion_slices)],
            "slices_with_lesion": [int(i) for i in np.flatnonzero(area)],
            "segmented_slices": [int(i) for i in lesions.segmented],
        }
    return record


def prediction_text(record: dict) -> str:
    """Args: record: a `prediction_record` (``dicom_outputs`` added when DICOM objects were written). Returns: the text lines."""
    model = record["model"]
    lines = [f"model       {model['name']} ({model['recipe']}); {RESEARCH_ONLY}"]
    lines.append("probability " + "   ".join(f"{c} {p:.3f}" for c, p in record["probabilities"].items()))
    rule = (f"threshold {record['threshold']:.2f} on the last class" if len(record["probabilities"]) == 2
            else "most probable class")
    lines.append(f"decision    {record['decision']}   ({rule})")
    used = record["slices_used"]
    lines.append(f"slices used {len(used)}" + (f" ({used[0]}..{used[-1]})" if used else ""))
    lines.append("top slices  " + ", ".join(f"{s['index']} ({s['score']:.2f})" for s in record["top_slices"]))
    lines.append("timing s    " + "   ".join(f"{k} {v:.2f}" for k, v in record["timing_s"].items()))
    if record.get("quantification"):
        chest = record["quantification"]["chest"]
        lines.append(f"lesions     {chest['category']}   involvement {chest['involvement_percent']:.1f}%   "
                     f"severity score {chest['severity_score']}/30   ({record['quantification']['model']})")
    lines += [f"warning     {w}" for w in record["warnings"]]
    if record["limitations"]:
        lines.append(f"limitation  {record['limitations'][0]}")
        if len(record["limitations"]) > 1:
            lines.append(f"            (+{len(record['limitations']) - 1} more in the model card: --json shows them all)")
    if (record.get("explanation") or {}).get("file"):
        lines.append(f"heat maps   {record['explanation']['file']}")
    if record.get("dicom_outputs"):
        lines.append(f"DICOM       {len(record['dicom_outputs'])} objects (SR, key slices, segmentation) in "
                     f"{Path(record['dicom_outputs'][0]).parent}")
    return "\n".join(lines)
