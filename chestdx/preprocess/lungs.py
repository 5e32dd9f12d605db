"""Classical lung segmentation for HU volumes and 8-bit slices (offline, no trained model).

Method (on a working grid whose long side is about ``WORK_SIZE`` pixels and, for volumes,
at most about ``WORK_SLICES`` slices; the mask is brought back to full size at the end):

1. Threshold: air-like pixels are darker than ``HU_THRESHOLD`` (HU studies) or than an
   Otsu threshold of the image (8-bit studies, whatever window they were rendered with),
   computed without the black frame around a round field of view (MosMedData slices).
2. Body: the largest non-air component of each slice, plus sizeable tissue cut by the
   image border (a tightly cropped chest wall). A constant frame around a slice (padding)
   is left out of this analysis.
3. Air outside the body: a dark component is kept only when at least half of it lies in
   the convex hull of the body and of the components kept so far; repeated until nothing
   changes. Air around the body (touching the image border) lies outside the hull and is
   dropped; a lung cut by a tight crop (lung-cropped slices, thorax-cropped figures)
   touches the border too, but joins once the hull has grown by the other lung.
4. Morphological opening cuts thin bridges and noise.
5. Components: in ``"3d"`` mode the largest 3-D component, plus the second largest when it
   is at least ``SECOND_LUNG_RATIO`` of the largest and centred within the largest's
   slice range (left and right lung; gas in the bowel or stomach is smaller and lower);
   in ``"2d"`` mode the two largest components of each slice that cover at least
   ``MIN_COMPONENT_FRACTION`` of the body hull.
6. Airways: small components (under ``AIRWAY_MAX_FRACTION`` of the body hull) centred on
   the body's midline are dropped slice by slice (trachea, main bronchi), and stay out
   after the next step.
7. Closing and hole filling per slice, so vessels and ground-glass inside the lung count
   as lung.

8-bit slices that arrive already lung-masked (black everywhere but the lungs, as the
CC-CCII normal slices are redistributed) have no body to find the lungs in: such a slice
(``_premasked``) takes its non-black region, opened and hole-filled, as the lung mask.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError
from skimage.filters import threshold_otsu

HU_THRESHOLD = -320.0
"""HU below which a pixel counts as air-like (lung parenchyma is about -900 to -500)."""
WORK_SIZE = 128
"""Long side (pixels) of the working grid: 128 segments a 300-slice volume in about 1.6 s on
2 cores and keeps the two-slice reference count within 10% (256: 3.6 s, within 5%)."""
WORK_SLICES = 160
"""Volumes with more slices are segmented on every k-th slice (k = ceil(n / WORK_SLICES)),
each other slice taking the mask of the nearest segmented one: a 300-slice volume then
costs about half. Thin-slice neighbours differ little, and the mask serves slice choice,
lung crop and map restriction, not volumetry."""
ASSUMED_FOV_MM = 350.0
"""In-plane field of view assumed when the spacing is unknown (typical chest CT)."""
OPEN_MM = 1.5
CLOSE_MM = 5.0
SECOND_LUNG_RATIO = 0.15
MIN_COMPONENT_FRACTION = 0.005
AIRWAY_MAX_FRACTION = 0.01
BORDER_TISSUE_FRACTION = 0.005
CLIPPED_DARK_LEVELS = 2
CLIPPED_DARK_SHARE = 0.3
AIRWAY_MIDLINE = 0.1
AIRWAY_CENTRE = 0.4
BLACK_LEVELS = 8
"""8-bit pixels within this many levels of the slice minimum count as black (JPEG ringing)."""
PREMASKED_FRAME = 0.6
PREMASKED_INNER_BLACK = 0.02
PREMASKED_BRIGHT = 0.25
"""A slice is already lung-masked when border-connected black covers at least
``PREMASKED_FRAME`` of it, black enclosed by non-black less than ``PREMASKED_INNER_BLACK``,
and fewer than ``PREMASKED_BRIGHT`` of its other pixels are brighter than mid-grey (no body
wall: lung-window lungs are dark but for vessels). Measured on every CT slice of
``../shared/data``: all 286 CC-CCII normal slices pass, no slice of another set does
(frame share at most 0.59 there)."""

_PLANE = np.zeros((3, 3, 3), dtype=bool)
_PLANE[1] = ndimage.generate_binary_structure(2, 1)
"""4-connectivity within a slice, none between slices."""


def segment_lungs(
    pixels: np.ndarray,
    intensity: Literal["hu", "8bit"],
    spacing: tuple[float, float, float] | None = None,
    mode: Literal["3d", "2d"] = "3d",
) -> np.ndarray:
    """Segment both lungs (vessels and ground-glass inside them included).

    Args:
        pixels: ``(z, y, x)`` (or one ``(y, x)`` slice): HU or 0-255 intensity.
        intensity: ``"hu"`` or ``"8bit"``: what ``pixels`` hold.
        spacing: voxel spacing ``(z, y, x)`` in mm, or None when unknown (8-bit images,
            assumed to span ``ASSUMED_FOV_MM``): the in-plane spacing sizes the morphology.
        mode: ``"3d"`` chooses lung components in the volume (robust against bowel gas);
            ``"2d"`` treats each slice on its own (single slices, unordered slices).

    Returns:
        bool mask with the shape of ``pixels``.

    Example:
        >>> mask = segment_lungs(study.pixels, study.intensity, study.spacing)
    """
    if mode not in ("3d", "2d"):
        raise ValueError(f"mode must be '3d' or '2d', got {mode!r}")
    if intensity not in ("hu", "8bit"):
        raise ValueError(f"intensity must be 'hu' or '8bit', got {intensity!r}")
    vol = np.asarray(pixels, dtype=np.float32)
    squeeze = vol.ndim == 2
    vol = vol[None] if squeeze else vol
    if vol.ndim != 3:
        raise ValueError(f"segment_lungs expects (z, y, x) or (y, x), got shape {vol.shape}")
    n, h, w = vol.shape
    factor = max(1, int(round(max(h, w) / WORK_SIZE)))
    step = -(-n // WORK_SLICES) if mode == "3d" else 1
    sampled = vol[step // 2::step]  # every slice when step is 1
    small = _downsample(sampled, factor)
    pixel_mm = (float(spacing[1]) if spacing is not None else ASSUMED_FOV_MM / max(h, w)) * factor

    frame = _black_frame(small) if intensity == "8bit" else np.zeros(small.shape, dtype=bool)
    dark = small < _air_threshold(small, intensity, frame)
    lungs, hull = _inside_body(dark, _content_boxes(sampled, factor))
    lungs = _morph(ndimage.binary_opening, lungs, _radius(OPEN_MM, pixel_mm))
    lungs = _largest_3d(lungs) if mode == "3d" else _largest_2d(lungs, hull)
    airways = _airways(lungs, hull)
    lungs = _fill_holes(_morph(ndimage.binary_closing, lungs & ~airways, _radius(CLOSE_MM, pixel_mm))) & ~airways
    if intensity == "8bit":
        masked = _premasked(small, frame)
        if masked.any():
            given = _morph(ndimage.binary_opening, ~frame[masked], _radius(OPEN_MM, pixel_mm))
            lungs[masked] = _fill_holes(_largest_2d(given, ~frame[masked]))
    if step > 1:  # slice z takes the segmented slice nearest to it
        lungs = lungs[np.minimum(np.arange(n) // step, len(lungs) - 1)]
    if factor > 1:
        lungs = lungs.repeat(factor, axis=1).repeat(factor, axis=2)[:, :h, :w]
    return lungs[0] if squeeze else lungs


def _downsample(vol: np.ndarray, factor: int) -> np.ndarray:
    """In-plane block mean by an integer factor (edges padded by repetition)."""
    if factor == 1:
        return vol
    _, h, w = vol.shape
    pad = ((0, 0), (0, -h % factor), (0, -w % factor))
    vol = np.pad(vol, pad, mode="edge") if any(p[1] for p in pad) else vol
    # Columns first, then rows, accumulating strided views in place (twice as fast as a
    # reshape-mean on a 300-slice volume, which is memory-bound).
    cols = vol[:, :, 0::factor].astype(np.float32)
    for j in range(1, factor):
        cols += vol[:, :, j::factor]
    total = cols[:, 0::factor].copy()
    for i in range(1, factor):
        total += cols[:, i::factor]
    return total / float(factor * factor)


def _black_frame(vol: np.ndarray) -> np.ndarray:
    """Per slice, the black pixels (``BLACK_LEVELS`` of the minimum) connected to the slice border."""
    black = vol <= vol.min(axis=(1, 2), keepdims=True) + BLACK_LEVELS
    labels, n = ndimage.label(black, structure=_PLANE)
    touches = _border_labels(labels, n)
    touches[0] = False
    return touches[labels]


def _premasked(vol: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """bool per slice: already lung-masked (see ``PREMASKED_FRAME``)."""
    black = vol <= vol.min(axis=(1, 2), keepdims=True) + BLACK_LEVELS
    inner = (black & ~frame).mean(axis=(1, 2))
    rest = np.maximum((~frame).sum(axis=(1, 2)), 1)
    bright = ((vol > 128) & ~frame).sum(axis=(1, 2)) / rest
    return (frame.mean(axis=(1, 2)) >= PREMASKED_FRAME) & (inner < PREMASKED_INNER_BLACK) & (bright < PREMASKED_BRIGHT)


def _air_threshold(vol: np.ndarray, intensity: str, frame: np.ndarray | None = None) -> float:
    """Fixed HU level for HU data; Otsu on a subsample of the 8-bit intensities otherwise.

    The black frame around the image content (``frame``: outside a round field of view) is
    left out of the 8-bit statistics: it would otherwise make the whole dark class look
    clipped. 8-bit images whose dark class is mostly clipped to black (a mediastinal
    window: lungs and outside air both pure black, fat dark grey) use ``CLIPPED_DARK_SHARE``
    of the way from black to the Otsu level, so that fat in the chest wall stays tissue.
    """
    if intensity == "hu":
        return HU_THRESHOLD
    sample = vol[:, ::2, ::2]
    if frame is not None:
        inside = sample[~frame[:, ::2, ::2]]
        sample = inside if inside.size and inside.max() > inside.min() else sample
    low = float(sample.min())
    if sample.max() == low:
        return low + 1.0
    otsu = float(threshold_otsu(sample))
    if np.median(sample[sample < otsu]) <= low + CLIPPED_DARK_LEVELS:
        return low + CLIPPED_DARK_SHARE * (otsu - low)
    return otsu


def _radius(mm: float, pixel_mm: float) -> int:
    return max(1, int(round(mm / pixel_mm)))


def _convex_hull(mask: np.ndarray) -> np.ndarray:
    """Filled convex hull of a 2-D mask (from the leftmost and rightmost pixel of each row)."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return mask.copy()
    left = mask[rows].argmax(axis=1)
    right = mask.shape[1] - 1 - mask[rows, ::-1].argmax(axis=1)
    points = np.concatenate([np.stack([left, rows], 1), np.stack([right, rows], 1)]).astype(float)
    try:
        vertices = points[ConvexHull(points).vertices]
    except QhullError:  # a line or a point: the mask is its own hull
        return mask.copy()
    canvas = Image.new("1", (mask.shape[1], mask.shape[0]))
    ImageDraw.Draw(canvas).polygon([tuple(v) for v in vertices], fill=1, outline=1)
    return np.asarray(canvas) | mask


def _border_labels(labels: np.ndarray, n: int) -> np.ndarray:
    """bool per label (0..n): does the component touch the border of its slice?"""
    touches = np.zeros(n + 1, dtype=bool)
    for edge in (labels[..., 0, :], labels[..., -1, :], labels[..., :, 0], labels[..., :, -1]):
        touches[edge] = True
    return touches


def _body(tissue: np.ndarray) -> np.ndarray:
    """The body in one slice: the largest tissue component, plus the sizeable tissue
    components cut by the image border (the chest wall of a tightly cropped image)."""
    labels, n = ndimage.label(tissue)
    if n == 0:
        return tissue
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    sizes[0] = 0
    keep = _border_labels(labels, n) & (sizes >= BORDER_TISSUE_FRACTION * tissue.size)
    keep[np.argmax(sizes)] = True
    keep[0] = False
    return keep[labels]


def _content_boxes(vol: np.ndarray, factor: int) -> np.ndarray:
    """Per slice, the box inside any padding frame, on the working grid (``factor``).

    Rows and columns at the image edges holding one constant value are padding (slices of
    several sizes padded to one, black margins of figures); they are left out of the body
    analysis, so that a lung reaching the edge of the real image is not joined to the frame.

    Returns:
        int array ``(z, 4)``: ``y0, y1, x0, x1`` (exclusive ends; an empty box for a blank slice).
    """
    boxes = np.zeros((len(vol), 4), dtype=int)
    varying_rows = vol.max(axis=2) > vol.min(axis=2)
    varying_cols = vol.max(axis=1) > vol.min(axis=1)
    for z in range(len(vol)):
        ys, xs = np.flatnonzero(varying_rows[z]), np.flatnonzero(varying_cols[z])
        if ys.size and xs.size:
            y0, y1, x0, x1 = ys[0], ys[-1] + 1, xs[0], xs[-1] + 1
            boxes[z] = -(-y0 // factor), y1 // factor, -(-x0 // factor), x1 // factor
    return boxes


def _inside_body(dark: np.ndarray, boxes: np.ndarray, max_rounds: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Per slice: the dark components inside the body, and the body region (convex hull).

    A component is kept when at least half of it lies in the convex hull of the body
    (``_body``) together with the components kept so far. Only the part of each slice
    inside its content box (``_content_boxes``) is looked at.
    """
    kept = np.zeros_like(dark)
    hulls = np.zeros_like(dark)
    for z, (y0, y1, x0, x1) in enumerate(boxes):
        plane = dark[z, y0:y1, x0:x1]
        if plane.size == 0:
            continue
        region = _body(~plane)
        if not region.any():
            continue
        labels, n = ndimage.label(plane)
        total = np.bincount(labels.ravel(), minlength=n + 1)
        accepted = np.zeros(n + 1, dtype=bool)
        for _ in range(max_rounds):
            hull = _convex_hull(region)
            inside = np.bincount(labels[hull], minlength=n + 1)
            new = (2 * inside >= total) & ~accepted
            new[0] = False
            if not new.any():
                break
            accepted |= new
            region = region | accepted[labels]
        kept[z, y0:y1, x0:x1] = accepted[labels]
        hulls[z, y0:y1, x0:x1] = hull
    return kept, hulls


def _largest_3d(mask: np.ndarray) -> np.ndarray:
    """Keep the largest 3-D component and a second lung-sized one at the same height."""
    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    order = np.argsort(sizes)[::-1]
    keep = [order[0] + 1]
    if n > 1 and sizes[order[1]] >= SECOND_LUNG_RATIO * sizes[order[0]]:
        boxes = ndimage.find_objects(labels)
        first, second = boxes[order[0]][0], boxes[order[1]][0]
        if first.start <= (second.start + second.stop - 1) / 2 <= first.stop - 1:
            keep.append(order[1] + 1)
    return np.isin(labels, keep)


def _slice_components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Components within each slice: labels, size and slice index of each label (1..n)."""
    labels, n = ndimage.label(mask, structure=_PLANE)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    zs = np.array([box[0].start for box in ndimage.find_objects(labels)], dtype=int)
    return labels, sizes, np.concatenate([[-1], zs]).astype(int)


def _largest_2d(mask: np.ndarray, hull: np.ndarray) -> np.ndarray:
    """Keep, per slice, the two largest components that are not tiny relative to the body."""
    labels, sizes, zs = _slice_components(mask)
    if len(sizes) == 1:
        return mask
    ids = np.arange(1, len(sizes))
    order = ids[np.lexsort((-sizes[ids], zs[ids]))]  # by slice, then largest first
    first_of_slice = np.searchsorted(zs[order], zs[order], side="left")
    rank = np.empty(len(sizes), dtype=int)
    rank[order] = np.arange(len(order)) - first_of_slice
    hull_area = hull.sum(axis=(1, 2))
    keep = (rank < 2) & (sizes >= MIN_COMPONENT_FRACTION * hull_area[np.maximum(zs, 0)])
    keep[0] = False
    return keep[labels]


def _airways(mask: np.ndarray, hull: np.ndarray) -> np.ndarray:
    """The small components centred on the body's midline (trachea, main bronchi).

    The midline is taken along either image axis, so rotated slices are handled too: a
    component is an airway when it is smaller than ``AIRWAY_MAX_FRACTION`` of the body
    hull, and its centre lies within ``AIRWAY_MIDLINE`` of the hull's extent from the
    hull's centre along one axis and within ``AIRWAY_CENTRE`` along the other.
    """
    labels, sizes, zs = _slice_components(mask)
    area = hull.sum(axis=(1, 2))
    safe = np.maximum(area, 1)
    rows, cols = hull.sum(axis=2), hull.sum(axis=1)
    centre_y = rows @ np.arange(hull.shape[1]) / safe
    centre_x = cols @ np.arange(hull.shape[2]) / safe
    height = np.maximum((rows > 0).sum(axis=1), 1)
    width = np.maximum((cols > 0).sum(axis=1), 1)
    drop = np.zeros(len(sizes), dtype=bool)
    for label, box in enumerate(ndimage.find_objects(labels), start=1):
        z = zs[label]
        if box is None or sizes[label] >= AIRWAY_MAX_FRACTION * area[z]:
            continue
        ys, xs = np.nonzero(labels[box][0] == label)
        dy = abs(ys.mean() + box[1].start - centre_y[z]) / height[z]
        dx = abs(xs.mean() + box[2].start - centre_x[z]) / width[z]
        drop[label] = min(dx, dy) <= AIRWAY_MIDLINE and max(dx, dy) <= AIRWAY_CENTRE
    return drop[labels]


def _morph(operation, mask: np.ndarray, radius: int) -> np.ndarray:
    """An in-plane binary opening or closing (``radius`` steps of 4-connectivity), computed
    in the mask's bounding box, padded by repetition so that masks touching the image
    border are not eroded there."""
    if not mask.any():
        return mask
    zs, ys, xs = (np.flatnonzero(mask.any(axis=axes)) for axes in ((1, 2), (0, 2), (0, 1)))
    pad = radius + 1
    y0, y1 = max(ys[0] - pad, 0), min(ys[-1] + pad + 1, mask.shape[1])
    x0, x1 = max(xs[0] - pad, 0), min(xs[-1] + pad + 1, mask.shape[2])
    box = (slice(zs[0], zs[-1] + 1), slice(y0, y1), slice(x0, x1))
    padded = np.pad(mask[box], ((0, 0), (pad, pad), (pad, pad)), mode="edge")
    out = np.zeros_like(mask)
    out[box] = operation(padded, _PLANE, iterations=radius)[:, pad:-pad, pad:-pad]
    return out


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill the holes of each slice: background components that do not touch the slice border."""
    labels, n = ndimage.label(~mask, structure=_PLANE)
    outside = _border_labels(labels, n)
    outside[0] = False
    return mask | ~outside[labels] & (labels > 0)
