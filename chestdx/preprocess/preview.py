"""`contact_sheet`: a PNG grid of the selected slices with the lung mask outlined."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from chestdx.errors import ChestDxError
from chestdx.io.study import Study
from chestdx.preprocess.pipeline import prepare_study, study_lung_mask
from chestdx.preprocess.spec import InputSpec

PREVIEW_SPEC = InputSpec(selection="lung", lung_filter="min-area")
"""Default selection of a contact sheet: every slice with a fair share of lung."""
OUTLINE_COLOUR = "#39ff14"
TILE_INCHES = 2.4
TITLE_INCHES = 0.9
MAX_COLUMNS = 6


def contact_sheet(study: Study, out_path: str | Path, spec: InputSpec | None = None, max_slices: int = 24) -> Path:
    """Write a contact sheet: up to ``max_slices`` selected slices with the lung outline.

    The slices are chosen evenly among those ``spec`` selects; each is shown as rendered
    in 8 bits (HU window for HU studies) with the lung mask outlined and its slice index
    as caption. The title gives the source, kind, slice count, spacing and intensity.

    Args:
        study: the study.
        out_path: the PNG file to write (created or overwritten; parent folders are created).
        spec: the selection to show; default ``PREVIEW_SPEC`` (lung slices, "min-area").
        max_slices: most tiles on the sheet.

    Returns:
        The path written.

    Raises:
        ChestDxError: ``out_path`` is not a ``.png`` file name, or is a folder.
    """
    path = Path(out_path)
    if path.suffix.lower() != ".png":
        raise ChestDxError(f"the contact sheet is a PNG image: give an output path ending in .png (got {str(path)!r})")
    if path.is_dir():
        raise ChestDxError(f"{str(path)!r} is a folder: give a file name ending in .png")
    if max_slices < 1:
        raise ChestDxError(f"max_slices must be at least 1 (got {max_slices})")
    spec = spec or PREVIEW_SPEC
    mask = study_lung_mask(study) if study.kind != "xray" else None
    prepared = prepare_study(study, spec, lung_mask=mask)
    rows = np.flatnonzero(prepared.indices >= 0)
    if len(rows) > max_slices:
        rows = rows[np.unique(np.rint(np.linspace(0, len(rows) - 1, max_slices)).astype(int))]
    figure = _draw(study, prepared.rendered[rows], prepared.indices[rows], mask, prepared.warnings)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure).print_png(str(path))
    return path


def _draw(study: Study, images: np.ndarray, indices: np.ndarray, mask: np.ndarray | None, warnings: list[str]) -> Figure:
    """The contact sheet figure: one tile per slice, a title, and warnings at the bottom."""
    count = len(images)
    columns = min(MAX_COLUMNS, count)
    lines = math.ceil(count / columns)
    width = max(columns, 3) * TILE_INCHES
    height = lines * TILE_INCHES + TITLE_INCHES
    figure = Figure(figsize=(width, height), dpi=100, facecolor="black")
    spacing = " x ".join(f"{s:.3g}" for s in study.spacing)
    source = study.source or "study"
    source = source if len(source) <= 90 else "..." + source[-87:]
    title = (
        f"{source}\n{study.kind}, {study.modality}  |  {study.n_slices} slices, {count} shown  |  "
        f"spacing (z, y, x) {spacing} mm  |  intensity {study.intensity}"
    )
    figure.suptitle(title, color="white", fontsize=8)
    if warnings:
        figure.text(0.5, 0.005, "; ".join(warnings), color="orange", fontsize=7, ha="center", va="bottom", wrap=True)
    for tile, (image, index) in enumerate(zip(images, indices)):
        axes = figure.add_subplot(lines, columns, tile + 1)
        axes.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        if mask is not None and mask[index].any():
            axes.contour(mask[index], levels=[0.5], colors=OUTLINE_COLOUR, linewidths=0.8)
        caption = f"slice {index}"
        if mask is not None:
            caption += f"  lung {100 * mask[index].mean():.0f}%"
        axes.set_title(caption, color="white", fontsize=8, pad=2)
        axes.set_axis_off()
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.2 / height, top=1 - TITLE_INCHES / height, wspace=0.04, hspace=0.12)
    return figure
