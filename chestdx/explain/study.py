"""Explain a whole study: heat maps on the slices that drove the model's decision."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from chestdx.errors import ChestDxError
from chestdx.explain.maps import boxes_to_original, explain_slices, map_to_original
from chestdx.explain.outputs import write_explanations
from chestdx.io.study import Study
from chestdx.models.checkpoint import LoadedModel
from chestdx.models.predict import decide, study_probabilities
from chestdx.preprocess.pipeline import prepare_study


def explain_study(study: Study, model: LoadedModel, method: str, out_dir: str | Path, n_slices: int = 3,
                  target: str | None = None, restrict_to_lungs: bool = True) -> Path:
    """Write heat maps for the ``n_slices`` slices with the highest score for the target class.

    Args:
        study: the loaded study.
        model: the loaded model.
        method: ``"cam"``, ``"gradcam"``, ``"gradcampp"``, ``"occlusion"`` or ``"boxes"``.
        out_dir: output folder (see ``write_explanations`` for what it refuses).
        n_slices: how many slices to explain.
        target: class name to explain (default: the model's decision).
        restrict_to_lungs: zero the map outside the (slightly dilated) lung mask when the
            preprocessing computed one.

    Returns:
        Path of ``explain.json``.
    """
    prepared = prepare_study(study, model.config.input)
    probs, slice_probs = study_probabilities(model, prepared)
    classes = list(model.config.classes)
    name = target or decide(model, probs)
    if name not in classes:
        raise ChestDxError(f"--target {name!r} is not one of the model's classes {classes}")
    cls = classes.index(name)
    real = np.flatnonzero(prepared.indices >= 0)
    rows = real[np.argsort(-slice_probs[real, cls], kind="stable")][:max(1, n_slices)]
    result = explain_slices(model.net, torch.from_numpy(np.ascontiguousarray(prepared.x[rows])), method, target_class=cls)
    shape = prepared.rendered.shape[1:]
    size = prepared.x.shape[-2:]
    maps = np.stack([map_to_original(m, shape, prepared.crop_box, quarter_turns=prepared.quarter_turns)
                     for m in result.maps])
    masks = None
    if prepared.lung_mask is not None:
        from scipy.ndimage import binary_dilation

        masks = prepared.lung_mask[prepared.indices[rows]]
        if restrict_to_lungs and masks.shape[1:] == shape:
            lungs = np.stack([binary_dilation(m, iterations=5) for m in masks])
            maps = np.where(lungs.any(axis=(1, 2), keepdims=True), maps * lungs, maps)
            peak = maps.max(axis=(1, 2), keepdims=True)
            maps = np.divide(maps, peak, out=np.zeros_like(maps), where=peak > 0)
    boxes = None
    if result.boxes is not None:
        boxes = [boxes_to_original(b, size, shape, prepared.crop_box) for b in result.boxes]
    return write_explanations(
        out_dir, [int(i) for i in prepared.indices[rows]], prepared.rendered[rows], maps.astype(np.float32), method,
        cls, name, float(probs[cls]),
        extra={"model": model.name, "recipe": model.config.name,
               "slice_scores": [round(float(slice_probs[r, cls]), 4) for r in rows]},
        lung_masks=masks, boxes=boxes, box_scores=result.box_scores)
