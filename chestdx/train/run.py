"""`chestdx train`: datasets and splits in, checkpoint (or cross-validation summary) out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from chestdx.errors import ChestDxError
from chestdx.evaluate.serialise import to_json_ready
from chestdx.io.datasets import load_dataset
from chestdx.io.labels import POSITIVE, canonical_label, label_indices
from chestdx.io.split import patient_kfold, patient_split
from chestdx.models.registry import RecipeConfig
from chestdx.train.loop import fit


def split_records(records: list, seed: int) -> tuple[list, list]:
    """Training and validation records: the dataset's own split when it has one, else a patient split.

    Test records are never returned: they are for the final evaluation only.

    Args:
        records: dataset records.
        seed: seed of the patient split.

    Returns:
        ``(train, val)``.
    """
    if all(r.split for r in records):
        train = [r for r in records if r.split == "train"]
        val = [r for r in records if r.split == "val"]
        if train and val:
            return train, val
    parts = patient_split(records, seed=seed)
    return parts["train"], parts["val"]


def _check_labels(records: list, config: RecipeConfig, spec: str) -> None:
    """Every label must map onto the recipe's classes (see `chestdx.io.labels.class_index`)."""
    labels = sorted({r.label for r in records})
    try:
        label_indices(labels, config.classes)
    except ChestDxError:
        covid = [lab for lab in labels if canonical_label(lab) == POSITIVE]
        suggested = [lab for lab in labels if lab not in covid] + covid
        positive = f" --positive {POSITIVE}" if covid else ""
        raise ChestDxError(f"{spec} has labels {labels} but recipe {config.name!r} predicts {list(config.classes)}: "
                           f"pass --classes {','.join(suggested)}{positive} (the positive class is the last)") from None


def train_command(config: RecipeConfig, data_spec: str, out_dir: str | Path, *, val_spec: str | None = None,
                  source_spec: str | None = None, seed: int = 0, epochs: int | None = None, cv: int | None = None,
                  progress: bool = True) -> dict:
    """Train as ``chestdx train`` does.

    Args:
        config: the recipe config (classes already set).
        data_spec: ``ADAPTER:PATH`` of the training data.
        out_dir: output folder (one checkpoint; with ``cv``, one sub-folder per fold).
        val_spec: ``ADAPTER:PATH`` of validation data (default: official or patient split).
        source_spec: ``ADAPTER:PATH`` of the source task for two-stage recipes (``detl``).
        seed: random seed.
        epochs: override the recipe's epochs.
        cv: number of patient-grouped folds for cross-validation.
        progress: show progress bars.

    Returns:
        A JSON-ready summary (validation metrics; mean ± sd across folds with ``cv``).
    """
    records = load_dataset(data_spec)
    _check_labels(records, config, data_spec)
    data = {"name": data_spec, "n_records": len(records)}
    if source_spec:
        from chestdx.train.transfer import fit_source

        config = fit_source(config, load_dataset(source_spec), Path(out_dir) / "source", seed=seed,
                            epochs=epochs, progress=progress)
        data["source"] = source_spec
    if cv:
        folds = []
        for k, (train, val) in enumerate(patient_kfold(records, k=cv, seed=seed)):
            result = fit(config, train, val, Path(out_dir) / f"fold{k + 1}", seed=seed, epochs=epochs,
                         progress=progress, data_description={**data, "fold": k + 1, "folds": cv})
            folds.append({k: m.value for k, m in result.card.metrics["val"].values.items()})
        values = {k: np.array([np.nan if f.get(k) is None else f[k] for f in folds], dtype=float) for k in folds[0]}
        summary = {"folds": folds, "mean": {k: float(np.nanmean(v)) for k, v in values.items()},
                   "sd": {k: float(np.nanstd(v, ddof=1)) for k, v in values.items()}}
        summary = to_json_ready(summary)
        Path(out_dir, "cv_summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False))
        return summary
    if val_spec:
        train, val = records, load_dataset(val_spec)
        data["val"] = val_spec
    else:
        train, val = split_records(records, seed)
        data["split"] = "official" if all(r.split for r in records) else f"patient split, seed {seed}"
    data.update(n_train=len(train), n_val=len(val))
    result = fit(config, train, val, out_dir, seed=seed, epochs=epochs, progress=progress, data_description=data)
    return {"out": str(out_dir), "val": result.card.metrics["val"].to_dict(), "history": result.history}
