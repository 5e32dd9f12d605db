"""Files of a lesion segmentation: NIfTI label map, PNG overlays of the key slices, quantify.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from skimage.segmentation import find_boundaries

from chestdx.io.nifti import write_nifti
from chestdx.io.study import Study
from chestdx.preprocess.intensity import render_8bit

if TYPE_CHECKING:  # the segmenter's module imports torch; overlays (the web viewer's) need none of it
    from chestdx.models.lesion import LesionResult

LABEL_FILE = "lesions.nii.gz"
QUANTIFY_FILE = "quantify.json"
LESION_COLOURS = {1: (255, 210, 0), 2: (230, 30, 30)}
"""Ground-glass opacity yellow, consolidation red."""
LUNG_OUTLINE = (0, 200, 0)


def overlay_name(index: int) -> str:
    """Args: index: a slice index. Returns: the file name of its lesion overlay in a segmentation folder."""
    return f"slice_{int(index):04d}.png"


def overlay_labels(slice_uint8: np.ndarray, labels: np.ndarray, lung_mask: np.ndarray | None = None,
                   alpha: float = 0.45) -> np.ndarray:
    """A slice with its lesion labels blended in colour and the lung outlined.

    Args:
        slice_uint8: ``(H, W)`` grey slice.
        labels: ``(H, W)`` label map (1 ground-glass, 2 consolidation).
        lung_mask: ``(H, W)`` bool, outlined in green when given.
        alpha: opacity of the lesion colours.

    Returns:
        uint8 ``(H, W, 3)``.
    """
    rgb = np.repeat(np.asarray(slice_uint8, np.float32)[..., None], 3, axis=2)
    for label, colour in LESION_COLOURS.items():
        where = labels == label
        rgb[where] = (1 - alpha) * rgb[where] + alpha * np.asarray(colour, np.float32)
    out = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    if lung_mask is not None:
        out[find_boundaries(np.asarray(lung_mask, bool), mode="inner")] = LUNG_OUTLINE
    return out


def write_segmentation(study: Study, result: LesionResult, quantification: dict, out_dir: str | Path,
                       n_key_slices: int = 3, extra: dict | None = None) -> dict:
    """Write a study's lesion segmentation into a folder.

    Files: ``lesions.nii.gz`` (uint8 label map aligned with the input volume: 0 background,
    1 ground-glass opacity, 2 consolidation; see `chestdx.io.nifti.write_nifti`),
    ``slice_<index>.png`` overlays of the slices with the most lesion, and ``quantify.json``
    (the quantification with the model, threshold, key slices and warnings).

    Args:
        study: the study segmented.
        result: its `LesionResult`.
        quantification: `chestdx.models.quantify.quantify` of it.
        out_dir: folder (created).
        n_key_slices: overlays to write.
        extra: further entries for ``quantify.json``.

    Returns:
        The JSON written, with ``files`` (the paths).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    z0 = float(study.slice_positions[0]) if study.slice_positions is not None and len(study.slice_positions) else 0.0
    files = {"labels": str(write_nifti(result.labels, study.spacing, out / LABEL_FILE, z_origin=z0))}
    key = result.key_slices(n_key_slices)
    rendered = render_8bit(study, "lung", slices=key) if len(key) else []
    files["overlays"] = []
    for index, image in zip(key, rendered):
        path = out / overlay_name(index)
        Image.fromarray(overlay_labels(image, result.labels[index], result.lung_mask[index])).save(path)
        files["overlays"].append(str(path))
    report = {
        "model": result.model,
        "threshold": result.threshold,
        "labels": {"0": "background", "1": "ground-glass opacity", "2": "consolidation"},
        "key_slices": [{"index": int(i), "lesion_pixels": int(result.lesion_pixels()[i])} for i in key],
        "quantification": quantification,
        "warnings": list(study.warnings) + list(result.warnings),
        **(extra or {}),
        "files": files,
    }
    (out / QUANTIFY_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return report
