"""Two-stage transfer learning (DETL): train a source task, hand its weights to the target stage."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

from chestdx.errors import ChestDxError
from chestdx.io.split import patient_split
from chestdx.models.bundled import WEIGHTS_FILE
from chestdx.models.registry import RecipeConfig
from chestdx.train.loop import fit

SOURCE_CLASSES = ("normal", "disease")


def source_records(records: list) -> list:
    """Relabel records to the binary source task: ``"normal"`` stays, any other label becomes ``"disease"``.

    Args:
        records: dataset records (``CaseRecord``).

    Returns:
        The relabelled records.

    Raises:
        ChestDxError: one of the two classes is missing.
    """
    out = [dataclasses.replace(r, label="normal" if r.label == "normal" else "disease") for r in records]
    missing = [c for c in SOURCE_CLASSES if not any(r.label == c for r in out)]
    if missing:
        raise ChestDxError(f"the source dataset has no {missing[0]!r} images: DETL's source task needs both normal "
                           "and diseased X-rays (e.g. nih:PATH for NIH ChestX-ray14)")
    return out


def source_config(config: RecipeConfig) -> RecipeConfig:
    """The source-task config: binary classes, the recipe's ``train["source"]`` stage, no source weights.

    Args:
        config: the target recipe config (e.g. ``detl``).

    Returns:
        A new config.
    """
    out = copy.deepcopy(config)
    out.classes = SOURCE_CLASSES
    out.params = {k: v for k, v in out.params.items() if k != "source_weights"}
    stage = {"name": "source", "freeze": [], **config.train.get("source", {})}
    out.train = {**{k: v for k, v in config.train.items() if k not in ("stages", "source")}, "stages": [stage]}
    return out


def fit_source(config: RecipeConfig, records: list, out_dir: str | Path, *, seed: int = 0, epochs: int | None = None,
               progress: bool = True) -> RecipeConfig:
    """Stage 1 of DETL: train normal vs disease on the source dataset and save that checkpoint.

    The source records are split by patient (85% training, 15% validation for early
    stopping); the checkpoint goes to ``out_dir``.

    Args:
        config: the target recipe config.
        records: source dataset records (labels: ``"normal"`` and anything else).
        out_dir: folder for the source checkpoint.
        seed: random seed.
        epochs: override the source stage's epochs.
        progress: show progress bars.

    Returns:
        A copy of ``config`` whose ``params["source_weights"]`` is the source checkpoint,
        so the builder loads it into every layer except the new head.
    """
    relabelled = source_records(records)
    parts = patient_split(relabelled, fractions=(0.85, 0.15, 0.0), seed=seed)
    if not parts["val"]:
        raise ChestDxError(f"the source dataset has too few patients ({len(records)} records) for a validation "
                           "split: give a larger source dataset")
    data = {"task": "DETL source: normal vs disease", "n_train": len(parts["train"]), "n_val": len(parts["val"]),
            "split": f"patient split 85/15, seed {seed}"}
    fit(source_config(config), parts["train"], parts["val"], out_dir, seed=seed, name=f"{config.name}-source",
        epochs=epochs, progress=progress, data_description=data)
    target = copy.deepcopy(config)
    target.params = {**target.params, "source_weights": str(Path(out_dir).resolve() / WEIGHTS_FILE), "pretrained": True}
    return target
