"""Explanation files on disk: a heat map array and an overlay per slice, and ``explain.json``."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from chestdx.errors import ChestDxError

FORMAT = "chestdx-explanation/1"
_SLICE_FILE = re.compile(r"^slice_\d{4,}_(heatmap\.npy|overlay\.png)$")


def heatmap_name(index: int) -> str:
    """Args: index: slice index in the study. Returns: the heat map file name."""
    return f"slice_{index:04d}_heatmap.npy"


def overlay_name(index: int) -> str:
    """Args: index: slice index in the study. Returns: the overlay file name."""
    return f"slice_{index:04d}_overlay.png"


def write_explanations(
    out_dir: str | Path,
    slice_indices: Sequence[int],
    rendered_slices: np.ndarray,
    maps: np.ndarray,
    method: str,
    target_class: int,
    class_name: str,
    probability: float,
    extra: dict | None = None,
    lung_masks: np.ndarray | None = None,
    boxes: Sequence[np.ndarray] | None = None,
    box_scores: Sequence[np.ndarray] | None = None,
) -> Path:
    """Write ``slice_{i:04d}_heatmap.npy`` and ``slice_{i:04d}_overlay.png`` per slice ``i``, and ``explain.json``.

    The folder is created if needed. A folder that already holds anything other than
    earlier chestdx explanation files is refused (nothing of the user's is overwritten);
    earlier explanation files in it are replaced.

    Args:
        out_dir: output folder.
        slice_indices: index in the study of each explained slice.
        rendered_slices: uint8 ``(n, H0, W0)`` windowed slices as stored in the study.
        maps: ``(n, H0, W0)`` heat maps in 0..1 on the stored slices (see
            `chestdx.explain.maps.map_to_original`).
        method: the explanation method.
        target_class: index of the explained class.
        class_name: its name.
        probability: the model's probability of that class (for the study).
        extra: more JSON-ready keys for ``explain.json`` (model, recipe, per-slice scores...).
        lung_masks: bool ``(n, H0, W0)``, outlined on the overlays.
        boxes: per slice ``(k, 4)`` ``(y0, x0, y1, x1)`` boxes in stored-slice pixels.
        box_scores: per slice ``(k,)`` box scores.

    Returns:
        Path of ``explain.json``.

    Raises:
        ChestDxError: ``out_dir`` is a file, or a folder holding other files.

    Example:
        >>> write_explanations("out/expl", [12, 30], rendered, maps, "gradcam", 2, "covid", 0.93)
    """
    rendered_slices = np.asarray(rendered_slices)
    maps = np.asarray(maps, dtype=np.float32)
    indices = [int(i) for i in slice_indices]
    if rendered_slices.dtype != np.uint8 or rendered_slices.ndim != 3:
        raise ValueError(
            f"rendered_slices must be uint8 (n, H, W), got {rendered_slices.dtype} {rendered_slices.shape}"
        )
    if maps.shape != rendered_slices.shape or len(indices) != len(maps) or len(set(indices)) != len(indices):
        raise ValueError(
            f"need one distinct index and one map per slice: {len(indices)} indices, maps {maps.shape}, "
            f"slices {rendered_slices.shape}"
        )
    document = {
        "format": FORMAT,
        "method": method,
        "target_class": {"index": int(target_class), "name": class_name},
        "probability": float(probability),
        "slices": [],
    }
    clash = set(extra or {}) & set(document)
    if clash:
        raise ValueError(f"extra must not replace the keys {sorted(clash)}")
    from chestdx.explain.overlay import overlay_png  # matplotlib and scikit-image: not needed to check a folder

    out_dir = Path(out_dir)
    _prepare(out_dir)
    for n, index in enumerate(indices):
        heat = np.clip(np.nan_to_num(maps[n]), 0.0, 1.0)
        slice_boxes = None if boxes is None else np.asarray(boxes[n], dtype=np.float32).reshape(-1, 4)
        np.save(out_dir / heatmap_name(index), heat)
        overlay_png(
            rendered_slices[n], heat, out_dir / overlay_name(index),
            lung_mask=None if lung_masks is None else lung_masks[n], boxes=slice_boxes,
            title=overlay_caption(method, class_name, probability, (extra or {}).get("model"), index),
        )
        entry = {"index": index, "heatmap": heatmap_name(index), "overlay": overlay_name(index),
                 "shape": list(heat.shape)}
        if slice_boxes is not None:
            entry["boxes"] = [[round(float(v), 2) for v in box] for box in slice_boxes]
        if box_scores is not None:
            entry["box_scores"] = [round(float(s), 4) for s in np.ravel(box_scores[n])]
        document["slices"].append(entry)
    document.update(extra or {})
    path = out_dir / "explain.json"
    path.write_text(json.dumps(document, indent=2))
    return path


def overlay_caption(method: str, class_name: str, probability: float, model: str | None, index: int) -> str:
    """Returns: the caption of an overlay: method, explained class with its probability, model and slice."""
    parts = [method, f"class {class_name} (p {probability:.2f})", f"model {model}" if model else "", f"slice {index}"]
    return "  |  ".join(p for p in parts if p)


def _is_previous_output(path: Path) -> bool:
    """Whether ``path`` is a file written by an earlier `write_explanations`."""
    if not path.is_file():
        return False
    if _SLICE_FILE.match(path.name):
        return True
    if path.name != "explain.json":
        return False
    try:
        return json.loads(path.read_text()).get("format") == FORMAT
    except (ValueError, UnicodeDecodeError, AttributeError):
        return False


def check_output_folder(out_dir: str | Path) -> None:
    """Refuse an output folder that is a file or holds anything but earlier chestdx explanations.

    Args:
        out_dir: the folder the explanations will be written to (it may not exist yet).

    Raises:
        ChestDxError: ``out_dir`` is a file, or a folder holding other files.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ChestDxError(f"output path {out_dir} is a file: give a folder for the explanations")
    if out_dir.is_dir():
        foreign = [p.name for p in sorted(out_dir.iterdir()) if not _is_previous_output(p)]
        if foreign:
            shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            raise ChestDxError(
                f"output folder {out_dir} already holds other files ({shown}): "
                "give a new or empty folder so nothing there is overwritten"
            )


def _prepare(out_dir: Path) -> None:
    """Create ``out_dir``, or empty it of earlier explanations; refuse a folder with other files."""
    check_output_folder(out_dir)
    if out_dir.is_dir():
        for path in out_dir.iterdir():
            path.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


def write_study_explanation(out_dir: str | Path, diagnosis) -> Path:
    """Write the explanation of a diagnosis (``chestdx.pipeline.explain`` must have run).

    Args:
        out_dir: output folder (see `write_explanations` for what it refuses).
        diagnosis: a `chestdx.pipeline.Diagnosis` with its ``explanation``.

    Returns:
        Path of ``explain.json``.
    """
    e = diagnosis.explanation
    if e is None:
        raise ValueError("the diagnosis has no explanation: run chestdx.pipeline.explain first")
    model = diagnosis.model
    return write_explanations(
        out_dir, e.slice_indices, e.rendered, e.maps, e.method, e.class_index, e.class_name, e.probability,
        extra={"model": model.name, "recipe": model.config.name, "slice_scores": [round(s, 4) for s in e.slice_scores]},
        lung_masks=e.lung_masks, boxes=e.boxes, box_scores=e.box_scores)
