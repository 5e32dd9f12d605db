"""Heat maps drawn over slices: one PNG per slice, and a figure of several slices beside their masks."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont
from skimage.segmentation import find_boundaries

LUNG_OUTLINE = (0, 255, 0)
BOX_COLOUR = (255, 255, 255)
TRANSPARENT_BELOW = 0.2
"""Heat below this fraction of the map's peak is not drawn: the slice shows through unchanged."""


def overlay_rgb(
    slice_uint8: np.ndarray,
    heatmap: np.ndarray,
    lung_mask: np.ndarray | None = None,
    boxes: np.ndarray | None = None,
    alpha: float = 0.45,
    cmap: str = "jet",
) -> np.ndarray:
    """A colour-mapped heat map blended over a grey slice, with optional lung outline and boxes.

    The heat map's opacity rises with its value: none below ``TRANSPARENT_BELOW``, then
    linearly up to ``alpha`` at 1, so cold regions leave the slice as it is.

    Args:
        slice_uint8: ``(H, W)`` windowed slice, 0-255.
        heatmap: ``(H, W)`` map in 0..1.
        lung_mask: ``(H, W)`` bool; its outline is drawn in green.
        boxes: ``(k, 4)`` ``(y0, x0, y1, x1)`` boxes in slice pixels, drawn in white.
        alpha: opacity of the heat map where it is 1.
        cmap: matplotlib colour map name.

    Returns:
        uint8 ``(H, W, 3)`` image.
    """
    grey = np.asarray(slice_uint8, dtype=np.float32)
    heat = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float32)), 0.0, 1.0)
    if grey.shape != heat.shape:
        raise ValueError(f"slice {grey.shape} and heat map {heat.shape} differ in shape")
    colour = matplotlib.colormaps[cmap](heat)[..., :3] * 255.0
    opacity = alpha * np.clip((heat - TRANSPARENT_BELOW) / (1.0 - TRANSPARENT_BELOW), 0.0, 1.0)[..., None]
    rgb = (1.0 - opacity) * grey[..., None] + opacity * colour
    out = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    if lung_mask is not None:
        out[find_boundaries(np.asarray(lung_mask, dtype=bool), mode="inner")] = LUNG_OUTLINE
    if boxes is not None and len(boxes):
        image = Image.fromarray(out)
        draw = ImageDraw.Draw(image)
        width = max(1, round(max(out.shape[:2]) / 256))
        for y0, x0, y1, x1 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
            draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=BOX_COLOUR, width=width)
        out = np.asarray(image)
    return out


def overlay_png(
    slice_uint8: np.ndarray,
    heatmap: np.ndarray,
    path: str | Path,
    lung_mask: np.ndarray | None = None,
    boxes: np.ndarray | None = None,
    alpha: float = 0.45,
    cmap: str = "jet",
    title: str | None = None,
) -> Path:
    """Save `overlay_rgb` at the slice's own size, with a colour bar on the right and a caption above.

    Args:
        slice_uint8: ``(H, W)`` windowed slice, 0-255.
        heatmap: ``(H, W)`` map in 0..1.
        path: output ``.png`` path.
        lung_mask: ``(H, W)`` bool lung mask, outlined.
        boxes: ``(k, 4)`` boxes in slice pixels.
        alpha: opacity of the heat map where it is 1.
        cmap: matplotlib colour map name.
        title: caption written in a black strip above the image (method, class, model).

    Returns:
        The path written.

    Example:
        >>> overlay_png(rendered[0], heat[0], "out/slice_0012_overlay.png", title="gradcam | covid 0.93 | ct-default")
    """
    overlay = Image.fromarray(overlay_rgb(slice_uint8, heatmap, lung_mask, boxes, alpha, cmap))
    width, height = overlay.size
    font = ImageFont.load_default(size=max(10, min(width, height) // 32))
    line = font.size + 6
    bar_width = max(8, width // 40)
    labels = 4 * font.size  # room for "high" / "low"
    strip = line if title else 0
    image = Image.new("RGB", (width + bar_width + labels, height + strip))
    image.paste(overlay, (0, strip))
    image.paste(_colour_bar(bar_width, height, cmap, alpha), (width + 2, strip))
    draw = ImageDraw.Draw(image)
    if title:
        draw.text((3, 3), title, fill=(255, 255, 255), font=font)
    draw.text((width + bar_width + 4, strip), "high", fill=(255, 255, 255), font=font)
    draw.text((width + bar_width + 4, strip + height - line), "low", fill=(255, 255, 255), font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path


def _colour_bar(width: int, height: int, cmap: str, alpha: float) -> Image.Image:
    """A vertical colour bar (1 at the top) drawn as `overlay_rgb` blends over mid-grey: the low end stays grey."""
    ramp = np.repeat(np.linspace(1.0, 0.0, height, dtype=np.float32)[:, None], width, axis=1)
    return Image.fromarray(overlay_rgb(np.full((height, width), 128, dtype=np.uint8), ramp, alpha=max(alpha, 0.8),
                                       cmap=cmap))


def figure_grid(
    images: Sequence[np.ndarray],
    heatmaps: Sequence[np.ndarray],
    masks: Sequence[np.ndarray] | None = None,
    titles: Sequence[str] | None = None,
    *,
    path: str | Path,
    alpha: float = 0.45,
    cmap: str = "jet",
) -> Path:
    """A figure with one column per slice: the overlay on top, the slice with its mask below.

    Args:
        images: ``(H, W)`` uint8 slices.
        heatmaps: ``(H, W)`` maps in 0..1, one per slice.
        masks: ``(H, W)`` bool masks (e.g. the radiologist's lesion mask), drawn in red
            under each overlay; None for a single row.
        titles: one title per column.
        path: output image path (``.png``, ``.pdf``, ...).
        alpha: opacity of the heat maps.
        cmap: matplotlib colour map name.

    Returns:
        The path written.
    """
    n = len(images)
    if len(heatmaps) != n or (masks is not None and len(masks) != n) or (titles is not None and len(titles) != n):
        raise ValueError("images, heatmaps, masks and titles must have the same length")
    rows = 1 if masks is None else 2
    fig = Figure(figsize=(2.4 * n, 2.4 * rows))  # no pyplot: no global state, no GUI backend
    axes = fig.subplots(rows, n, squeeze=False)
    for i in range(n):
        axes[0, i].imshow(overlay_rgb(images[i], heatmaps[i], alpha=alpha, cmap=cmap))
        if titles is not None:
            axes[0, i].set_title(titles[i], fontsize=8)
        if masks is not None:
            lesion = np.zeros((*np.shape(masks[i]), 4))
            lesion[np.asarray(masks[i], dtype=bool)] = (1.0, 0.0, 0.0, 0.5)
            axes[1, i].imshow(images[i], cmap="gray", vmin=0, vmax=255)
            axes[1, i].imshow(lesion)
    for ax in axes.ravel():
        ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path
