"""How much of each lung a lesion map takes: volumes, percent involvement, zonal score, CT-0..CT-4.

Definitions (what ``quantify`` reports):

* Lung: the lung mask together with the lesion voxels (dense consolidation can fall outside a
  classical lung mask, and it is lung tissue). Involvement is lesion / lung, in percent.
* Right and left lung: the two largest 3-D components of the lung when both are sizeable and
  their bounding boxes' centres lie either side of the midline; otherwise (lungs touching, one lung found) each voxel goes by its
  side of the midline (the centre of the lungs' bounding box). Columns run from the patient's
  right to left (the radiological convention chestdx reads DICOM and NIfTI in), so the lung on
  the image's left is the right lung. Leftover small components go by the midline too.
* Zones: each lung's craniocaudal extent (the slices holding it) cut into equal thirds; slice 0
  is the lowest (feet), the order chestdx gives DICOM and NIfTI volumes (for image stacks, the
  files' order).
* Zonal severity score: each of the six zones scored by its involvement: 0 none, 1 under 5%,
  2 5-25%, 3 25-50%, 4 50-75%, 5 75% or more; per lung 0-15, total 0-30.
* Category (MosMedData): CT-0 no lesion, CT-1 under 25%, CT-2 25-50%, CT-3 50-75%, CT-4 75%
  or more of the whole lung volume.
  A value on an edge takes the higher score or category.
* Volumes in mL from the voxel spacing; without a spacing, in voxels (``volume_unit``).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

ZONE_EDGES = (5.0, 25.0, 50.0, 75.0)
"""Involvement (%) at which a zone's score rises from 1 to 2, 2 to 3, 3 to 4 and 4 to 5."""
CATEGORY_EDGES = (25.0, 50.0, 75.0)
"""Involvement (%) at which the category rises from CT-1 to CT-2, CT-3 and CT-4."""
ZONES = ("upper", "middle", "lower")
SPLIT_GRID = 128
"""Side of the grid the lungs are split into components on (pixels)."""
SECOND_LUNG_RATIO = 0.2
"""The second largest lung component counts as the other lung when at least this share of the largest."""
SCORING = ("zones: thirds of each lung's craniocaudal extent; zone score 0 none, 1 <5%, 2 5-25%, 3 25-50%, "
           "4 50-75%, 5 >=75% involvement (total 0-30); category CT-0 0%, CT-1 <25%, CT-2 25-50%, CT-3 50-75%, "
           "CT-4 >=75% of the whole lung volume")


def zone_score(percent: float) -> int:
    """Args: percent: involvement of a zone (0-100). Returns: its score 0-5 (0 only for no lesion at all)."""
    return 0 if percent <= 0 else 1 + int(np.searchsorted(ZONE_EDGES, percent, side="right"))


def ct_category(percent: float) -> str:
    """Args: percent: involvement of the whole lung (0-100). Returns: ``"CT-0"`` ... ``"CT-4"`` (MosMedData)."""
    return "CT-0" if percent <= 0 else f"CT-{1 + int(np.searchsorted(CATEGORY_EDGES, percent, side='right'))}"


def split_lungs(lung: np.ndarray, step: int | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """Split a lung mask into the right and the left lung.

    Components are found on a grid of at most `SPLIT_GRID` pixels a side (every k-th row and
    column; a 512-pixel volume costs a sixteenth), and each lung voxel takes the side of its grid
    point; voxels whose grid point is not lung go by the midline.

    Args:
        lung: bool ``(z, y, x)``; columns from the patient's right to left.
        step: the grid's spacing in pixels; default the one that fits `SPLIT_GRID` points on
            the longer side.

    Returns:
        ``(right, left, method)``: bool masks, and ``"components"`` or ``"midline"``.
    """
    if not lung.any():
        return lung.copy(), lung.copy(), "midline"
    xs = np.flatnonzero(lung.any(axis=(0, 1)))
    midline = (xs[0] + xs[-1]) / 2.0
    on_right = np.arange(lung.shape[2])[None, None, :] < midline
    step = step or grid_step(lung.shape)
    labels, n = ndimage.label(lung[:, ::step, ::step])
    if n >= 2:
        sizes = np.bincount(labels.ravel())[1:]
        first, second = np.argsort(-sizes)[:2] + 1
        boxes = ndimage.find_objects(labels)
        centres = [step * (boxes[c - 1][2].start + boxes[c - 1][2].stop - 1) / 2.0 for c in (first, second)]
        if sizes[second - 1] >= SECOND_LUNG_RATIO * sizes[first - 1] and (centres[0] - midline) * (centres[1] - midline) < 0:
            right_label = first if centres[0] < centres[1] else second
            side = np.where(labels == right_label, 1, np.where((labels == first) | (labels == second), 2, 0))
            side = side.astype(np.int8).repeat(step, axis=1).repeat(step, axis=2)[:, :lung.shape[1], :lung.shape[2]]
            right = lung & ((side == 1) | ((side == 0) & on_right))
            return right, lung & ~right, "components"
    right = lung & on_right
    return right, lung & ~right, "midline"


def grid_step(shape: tuple[int, ...]) -> int:
    """Args: shape: ``(z, y, x)``. Returns: the spacing of `split_lungs`'s grid for slices of that size."""
    return max(1, -(-max(shape[1:]) // SPLIT_GRID))


def _lung_box(lung_mask: np.ndarray, labels: np.ndarray, step: int) -> tuple[slice, slice, slice]:
    """The box holding the lung and the lesions, its in-plane start on the split grid (so the split is unchanged)."""
    def extent(axis: tuple[int, int]) -> np.ndarray:
        return np.flatnonzero(lung_mask.any(axis=axis) | labels.any(axis=axis))
    zs, ys, xs = extent((1, 2)), extent((0, 2)), extent((0, 1))
    if zs.size == 0:
        return slice(0, 0), slice(0, 0), slice(0, 0)
    return (slice(zs[0], zs[-1] + 1), slice(ys[0] - ys[0] % step, ys[-1] + 1), slice(xs[0] - xs[0] % step, xs[-1] + 1))


def _volumes(region: np.ndarray, labels: np.ndarray, voxel: float) -> dict:
    """Volumes and shares of one region (a lung, or both)."""
    lung = int(region.sum())
    ggo = int((region & (labels == 1)).sum())
    consolidation = int((region & (labels == 2)).sum())
    lesion = ggo + consolidation
    percent = 100.0 * lesion / lung if lung else 0.0
    return {
        "lung_volume": round(lung * voxel, 2),
        "lesion_volume": round(lesion * voxel, 2),
        "ground_glass_volume": round(ggo * voxel, 2),
        "consolidation_volume": round(consolidation * voxel, 2),
        "involvement_percent": round(percent, 3),
        "ground_glass_share_percent": round(100.0 * ggo / lesion, 2) if lesion else None,
        "consolidation_share_percent": round(100.0 * consolidation / lesion, 2) if lesion else None,
    }


def _zones(region: np.ndarray, labels: np.ndarray, first_slice: int = 0) -> dict:
    """Upper / middle / lower thirds of one lung, with their involvement and score (slice 0 of ``region`` is ``first_slice``)."""
    slices = np.flatnonzero(region.any(axis=(1, 2)))
    out = {}
    if slices.size == 0:
        return {zone: {"slices": [], "involvement_percent": 0.0, "score": 0} for zone in ZONES}
    edges = np.linspace(slices[0], slices[-1] + 1, 4)
    for zone, (low, high) in zip(ZONES, ((edges[2], edges[3]), (edges[1], edges[2]), (edges[0], edges[1]))):
        part = region[int(np.ceil(low)):int(np.ceil(high))]
        lung = int(part.sum())
        lesion = int((part & (labels[int(np.ceil(low)):int(np.ceil(high))] > 0)).sum())
        percent = 100.0 * lesion / lung if lung else 0.0
        out[zone] = {"slices": [first_slice + int(np.ceil(low)), first_slice + int(np.ceil(high)) - 1],
                     "involvement_percent": round(percent, 3),
                     "score": zone_score(percent)}
    return out


def quantify(lung_mask: np.ndarray, lesion_labels: np.ndarray, spacing: tuple[float, float, float] | None = None) -> dict:
    """Quantify lesions per lung and for the whole chest (definitions in this module's docstring).

    Args:
        lung_mask: bool ``(z, y, x)`` (a ``(y, x)`` slice is taken as one slice).
        lesion_labels: uint8 ``(z, y, x)``: 0 background, 1 ground-glass opacity, 2 consolidation.
        spacing: voxel spacing ``(z, y, x)`` in mm, or None when unknown (volumes in voxels).

    Returns:
        JSON-ready dict: ``volume_unit`` (``"mL"`` or ``"voxels"``), ``spacing_mm``, ``lung_split``,
        ``scoring``; ``right_lung`` and ``left_lung`` (volumes, ``involvement_percent``,
        ground-glass / consolidation shares, ``zones`` with score, ``score`` 0-15); ``chest``
        (the same for both lungs, ``severity_score`` 0-30 and ``category`` CT-0..CT-4).

    Example:
        >>> q = quantify(result.lung_mask, result.labels, study.spacing)
        >>> q["chest"]["category"], q["chest"]["severity_score"]
        ('CT-1', 4)
    """
    lung_mask = np.asarray(lung_mask, bool)
    labels = np.asarray(lesion_labels)
    if lung_mask.ndim == 2:
        lung_mask, labels = lung_mask[None], labels[None]
    if lung_mask.shape != labels.shape:
        raise ValueError(f"lung mask {lung_mask.shape} and lesion labels {labels.shape} differ in shape")
    voxel = float(np.prod(spacing)) / 1000.0 if spacing is not None else 1.0
    step = grid_step(lung_mask.shape)
    box = _lung_box(lung_mask, labels, step)  # everything below works on the box: nothing lies outside it
    lung_mask, labels = lung_mask[box], labels[box]
    lung = lung_mask | (labels > 0)
    right, left, method = split_lungs(lung, step)
    out = {
        "volume_unit": "mL" if spacing is not None else "voxels",
        "spacing_mm": [float(s) for s in spacing] if spacing is not None else None,
        "lung_split": method,
        "scoring": SCORING,
    }
    for name, region in (("right_lung", right), ("left_lung", left)):
        zones = _zones(region, labels, int(box[0].start))
        out[name] = {**_volumes(region, labels, voxel), "zones": zones, "score": sum(z["score"] for z in zones.values())}
    chest = _volumes(lung, labels, voxel)
    chest["severity_score"] = out["right_lung"]["score"] + out["left_lung"]["score"]
    lesion_voxels = int((lung & (labels > 0)).sum())
    chest["category"] = ct_category(100.0 * lesion_voxels / lung.sum() if lesion_voxels else 0.0)
    out["chest"] = chest
    return out
