"""Slice filters (by lung area) and slice selection rules of the published recipes.

Filters take a lung mask ``(z, y, x)`` and return a bool per slice (True = keep);
selections return indices. Slice index 0 is the feet end of a volume whose slice
positions are known (``Study`` keeps slices in physical order, feet to head).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def lungs_stacked(mask: np.ndarray, min_ratio: float = 0.1) -> bool:
    """Whether the two lungs lie one above the other (slices turned by 90 degrees).

    Each slice votes when its two largest lung components look like two lungs (the smaller
    has at least ``min_ratio`` of the larger's area): "stacked" when their centres are
    further apart vertically than horizontally, else "side by side". One lung alone gives
    no vote.

    Args:
        mask: bool lung mask ``(z, y, x)`` or ``(y, x)``.
        min_ratio: least area of the second component relative to the first.

    Returns:
        True when more slices vote "stacked" than "side by side".
    """
    planes = np.asarray(mask, dtype=bool)
    planes = planes[None] if planes.ndim == 2 else planes
    votes = 0
    for plane in planes:
        labels, n = ndimage.label(plane)
        if n < 2:
            continue
        ys, xs = np.nonzero(labels)  # one pass over the lung pixels (ndimage.center_of_mass scans every label)
        found = labels[ys, xs]
        sizes = np.bincount(found)
        first, second = np.argsort(sizes[1:])[::-1][:2] + 1
        if sizes[second] < min_ratio * sizes[first]:
            continue
        cy, cx = (np.bincount(found, weights=v) / np.maximum(sizes, 1) for v in (ys, xs))
        votes += 1 if abs(cy[first] - cy[second]) > abs(cx[first] - cx[second]) else -1
    return votes > 0


def lung_areas(mask: np.ndarray) -> np.ndarray:
    """Lung pixels per slice.

    Args:
        mask: bool lung mask ``(z, y, x)``.

    Returns:
        int array ``(z,)``.
    """
    return np.asarray(mask, dtype=bool).sum(axis=(1, 2))


def lung_area_fraction(mask: np.ndarray) -> np.ndarray:
    """Share of each slice covered by lung.

    Args:
        mask: bool lung mask ``(z, y, x)``.

    Returns:
        float array ``(z,)`` in 0..1.
    """
    return lung_areas(mask) / float(mask.shape[1] * mask.shape[2])


def lung_bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Bounding box of the lungs over all slices.

    Args:
        mask: bool lung mask ``(z, y, x)`` or ``(y, x)``.

    Returns:
        ``(y0, y1, x0, x1)`` with exclusive ends (``mask[..., y0:y1, x0:x1]`` holds every
        lung pixel); the whole image when the mask is empty.
    """
    plane = np.asarray(mask, dtype=bool)
    plane = plane.any(axis=0) if plane.ndim == 3 else plane
    ys, xs = np.flatnonzero(plane.any(axis=1)), np.flatnonzero(plane.any(axis=0))
    if ys.size == 0:
        return 0, plane.shape[0], 0, plane.shape[1]
    return int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1


def filter_dre(mask: np.ndarray, min_fraction: float = 0.5) -> np.ndarray:
    """DRE-Net's filter: drop slices whose lung covers less than half of the image, the image
    being the study cropped to its lung bounding box (``lung_bbox``).

    Args:
        mask: bool lung mask ``(z, y, x)``.
        min_fraction: least lung share of the cropped slice that is kept.

    Returns:
        bool array ``(z,)``: True for slices kept.
    """
    y0, y1, x0, x1 = lung_bbox(mask)
    cropped = np.asarray(mask, dtype=bool)[:, y0:y1, x0:x1]
    return lung_area_fraction(cropped) >= min_fraction


def filter_kara(mask: np.ndarray, top: float = 0.4, bottom: float = 0.9, head_last: bool = True) -> np.ndarray:
    """Kara et al.'s filter: lung area ratio to the slice with the largest lung area.

    Slices on the top side of the largest-lung slice (towards the head: the apices, where
    lung area shrinks slowly) are kept when the ratio is at least ``top``; slices on the
    bottom side (towards the feet: the bases, where the diaphragm and the abdomen take over)
    need at least ``bottom``. The largest-lung slice is always kept (when it has any lung).

    Args:
        mask: bool lung mask ``(z, y, x)``.
        top: least ratio on the head side.
        bottom: least ratio on the feet side.
        head_last: True when the index grows towards the head (``Study``'s physical order,
            index 0 = feet); False for volumes stored head first.

    Returns:
        bool array ``(z,)``: True for slices kept.
    """
    areas = lung_areas(mask).astype(float)
    if areas.max() == 0:
        return np.zeros(len(areas), dtype=bool)
    ratio = areas / areas.max()
    index = np.arange(len(areas))
    peak = int(np.argmax(areas))
    towards_head = index > peak if head_last else index < peak
    need = np.where(towards_head, top, bottom)
    need[peak] = 0.0
    return (ratio >= need) & (areas > 0)


def filter_min_area(mask: np.ndarray, fraction: float = 0.25) -> np.ndarray:
    """Keep slices whose lung area is at least ``fraction`` of the largest slice's.

    Args:
        mask: bool lung mask ``(z, y, x)``.
        fraction: least ratio to the largest lung area.

    Returns:
        bool array ``(z,)``: True for slices kept (never a slice without lung).
    """
    areas = lung_areas(mask).astype(float)
    if areas.max() == 0:
        return np.zeros(len(areas), dtype=bool)
    return (areas >= fraction * areas.max()) & (areas > 0)


def select_middle(n: int, fraction: float = 0.5) -> np.ndarray:
    """The central ``fraction`` of ``n`` slices (ai-corona: the middle 50%).

    Args:
        n: number of slices.
        fraction: share kept, 0..1; at least one slice is kept.

    Returns:
        Consecutive indices, e.g. 25..74 for ``n=100``.
    """
    if n <= 0:
        return np.zeros(0, dtype=int)
    count = min(n, max(1, int(n * fraction + 0.5)))
    start = (n - count) // 2
    return np.arange(start, start + count)


def select_equidistant(n: int, count: int = 15) -> np.ndarray:
    """``count`` equidistant slices at ``i * n // count`` (DRE-Net: 15).

    Args:
        n: number of slices.
        count: slices wanted; when ``n < count`` some slices repeat.

    Returns:
        ``count`` indices (empty when ``n == 0``).
    """
    if n <= 0:
        return np.zeros(0, dtype=int)
    return np.arange(count) * n // count


def make_groups(indices: np.ndarray, size: int = 50) -> list[np.ndarray]:
    """Kara et al.'s fixed-size groups of consecutive slices.

    The slices are cut into groups of ``size``. When a remainder ``r`` is left:

    * ``r > size / 2`` (more than 25): the last group is padded with ``-1`` (a black slice)
      up to ``size``;
    * ``r <= size / 2``: the last full group and the remainder (``size + r`` slices) are
      merged and re-sampled down to one group of ``size`` slices by nearest-neighbour
      interpolation of the slice positions (``round(linspace(first, last, size))``), so
      the group still spans them evenly. A study with fewer than ``size / 2`` slices and
      no full group is re-sampled up to ``size`` the same way (slices repeat).

    Args:
        indices: slice indices in order (for example the slices a filter kept).
        size: group length (50).

    Returns:
        List of int arrays of length ``size``; ``-1`` marks a black padding slice.

    Example:
        >>> [len(g) for g in make_groups(np.arange(120))]  # 50 + (50 + 20 -> 50)
        [50, 50]
        >>> int((make_groups(np.arange(130))[-1] == -1).sum())  # 30 left: 20 black slices added
        20
    """
    indices = np.asarray(indices, dtype=int)
    n = len(indices)
    if n == 0:
        return []
    full, rest = divmod(n, size)
    groups = [indices[i * size : (i + 1) * size] for i in range(full)]
    if rest == 0:
        return groups
    if rest > size / 2:
        return groups + [np.concatenate([indices[full * size :], np.full(size - rest, -1, dtype=int)])]
    tail = indices[max(full - 1, 0) * size :]
    positions = np.rint(np.linspace(0, len(tail) - 1, size)).astype(int)
    return groups[: max(full - 1, 0)] + [tail[positions]]
