"""Does a heat map point at the lesion? Metrics against a lesion mask, and the baselines to beat."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import center_of_mass, distance_transform_edt
from sklearn.metrics import roc_auc_score


def peak(heatmap: np.ndarray) -> tuple[int, int]:
    """The map's maximum as one pixel.

    When the maximum is a plateau (a filled box, a clipped map), the plateau pixel
    nearest to the plateau's centroid is used rather than its first pixel in memory order.

    Args:
        heatmap: ``(H, W)`` map.

    Returns:
        ``(row, column)``.
    """
    heat = np.asarray(heatmap, dtype=np.float64)
    rows, cols = np.nonzero(heat == heat.max())
    nearest = np.argmin((rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2)
    return int(rows[nearest]), int(cols[nearest])


def pointing_game(heatmap: np.ndarray, mask: np.ndarray, tolerance_px: float = 15) -> bool:
    """Pointing game: the map's maximum (see `peak`) lies inside the mask grown by ``tolerance_px``.

    Args:
        heatmap: ``(H, W)`` map.
        mask: ``(H, W)`` bool lesion mask, not empty.
        tolerance_px: allowed distance from the mask, in pixels.

    Returns:
        Whether the maximum hits.

    Raises:
        ValueError: empty mask (the game is undefined there) or shapes that differ.
    """
    mask = _mask(heatmap, mask)
    if not mask.any():
        raise ValueError("the pointing game is undefined on an empty mask: leave such slices out")
    row, col = peak(heatmap)
    return bool(distance_transform_edt(~mask)[row, col] <= tolerance_px)


def energy_inside(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """Fraction of the map's energy (sum of its non-negative values) inside the mask.

    Args:
        heatmap: ``(H, W)`` non-negative map.
        mask: ``(H, W)`` bool mask.

    Returns:
        A value in 0..1; nan for an all-zero map.
    """
    mask = _mask(heatmap, mask)
    heat = np.clip(np.asarray(heatmap, dtype=np.float64), 0.0, None)
    total = heat.sum()
    return float(heat[mask].sum() / total) if total > 0 else float("nan")


def pixel_auroc(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """Area under the ROC curve of the map's values as a pixel classifier of the mask.

    Args:
        heatmap: ``(H, W)`` map.
        mask: ``(H, W)`` bool mask.

    Returns:
        AUROC; nan when the mask is empty or covers the whole image.
    """
    mask = _mask(heatmap, mask)
    if mask.all() or not mask.any():
        return float("nan")
    return float(roc_auc_score(mask.ravel(), np.asarray(heatmap, dtype=np.float64).ravel()))


def random_map(shape: tuple[int, int], rng: np.random.Generator | int | None = None) -> np.ndarray:
    """Baseline: independent uniform noise per pixel.

    Args:
        shape: ``(H, W)``.
        rng: a generator or a seed.

    Returns:
        float32 ``(H, W)`` in 0..1.
    """
    return np.random.default_rng(rng).random(tuple(shape)).astype(np.float32)


def lung_centre_prior(lung_mask: np.ndarray, sigma_frac: float = 0.25) -> np.ndarray:
    """Baseline: a Gaussian centred on the lung mask's centroid.

    The spread along each axis is ``sigma_frac`` times the lung's bounding-box extent
    on that axis (the image's extent when the mask is empty, centred on the image).

    Args:
        lung_mask: ``(H, W)`` bool lung mask.
        sigma_frac: Gaussian sigma as a fraction of the lung's height and width.

    Returns:
        float32 ``(H, W)`` with its maximum 1 at the centroid.
    """
    lung = np.asarray(lung_mask, dtype=bool)
    h, w = lung.shape
    if lung.any():
        cy, cx = center_of_mass(lung)
        rows, cols = np.nonzero(lung)
        extent_y, extent_x = np.ptp(rows) + 1, np.ptp(cols) + 1
    else:
        cy, cx, extent_y, extent_x = (h - 1) / 2, (w - 1) / 2, h, w
    yy, xx = np.mgrid[0:h, 0:w]
    sy, sx = sigma_frac * extent_y, sigma_frac * extent_x
    prior = np.exp(-0.5 * (((yy - cy) / sy) ** 2 + ((xx - cx) / sx) ** 2))
    return (prior / prior.max()).astype(np.float32)


def _mask(heatmap: np.ndarray, mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != np.shape(heatmap):
        raise ValueError(f"heat map {np.shape(heatmap)} and mask {mask.shape} differ in shape")
    return mask
