"""A diagnosis as the prediction record (``predict --json``) and as the text ``chestdx predict`` prints."""

from __future__ import annotations

from pathlib import Path

from chestdx.pipeline import Diagnosis

RESEARCH_ONLY = "research use only, not for clinical use"


def prediction_record(diagnosis: Diagnosis, top_k: int = 5) -> dict:
    """The JSON-ready prediction of a diagnosis.

    Args:
        diagnosis: the diagnosis.
        top_k: how many of the slices that drove the decision to list.

    Returns:
        ``kind``, ``probabilities`` (class -> p), ``decision``, ``threshold``, ``model``
        (the card's summary), ``limitations`` (the card's), ``slices_used``, ``top_slices``
        (study slice index and the decided class's probability), ``timing_s`` (per stage and
        ``total``) and ``warnings``.
    """
    model, prepared = diagnosis.model, diagnosis.prepared
    card = model.card
    summary = card.summary()
    val_auc = card.headline_auc("val")
    if val_auc is not None and val_auc.ci_low is not None:
        summary["val_auc_ci"] = [round(val_auc.ci_low, 4), round(val_auc.ci_high, 4)]
    timing = {k: round(v, 3) for k, v in diagnosis.timing.items()}
    timing["total"] = round(sum(diagnosis.timing.values()), 3)
    return {
        "kind": diagnosis.study.kind,
        "probabilities": {c: round(float(p), 4) for c, p in zip(model.config.classes, diagnosis.probabilities)},
        "decision": diagnosis.decision,
        "threshold": model.threshold,
        "model": summary,
        "limitations": list(card.limitations),
        "slices_used": [int(i) for i in prepared.indices[prepared.indices >= 0]],
        "top_slices": [{"index": i, "score": round(p, 4)} for i, p in diagnosis.top_slices(top_k)],
        "timing_s": timing,
        "warnings": list(diagnosis.warnings),
        **({"quantification": diagnosis.quantification} if diagnosis.quantification else {}),
    }


def prediction_text(record: dict) -> str:
    """Args: record: a `prediction_record` (with ``explanation`` when heat maps were written, ``dicom_outputs`` when DICOM objects were). Returns: the text lines."""
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
    if record.get("explanation"):
        lines.append(f"heat maps   {record['explanation']}")
    if record.get("dicom_outputs"):
        lines.append(f"DICOM       {len(record['dicom_outputs'])} objects (SR, key slices, segmentation) in "
                     f"{Path(record['dicom_outputs'][0]).parent}")
    return "\n".join(lines)
