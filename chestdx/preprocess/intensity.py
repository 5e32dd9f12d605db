"""Intensity transforms: HU windows, 8-bit rendering, top-percent clip, lungs only, CLAHE, ImageNet normalisation,
re-windowing of 8-bit renderings onto a lung window.

HU steps (windows) only apply to ``"hu"`` studies; ``"8bit"`` studies are used as they are,
never pushed through a fake HU conversion. Written in NumPy with the arithmetic of MONAI's
``ScaleIntensityRange``, ``ScaleIntensityRangePercentiles`` and ``NormalizeIntensity`` (the
transforms the bundled models were trained with; ``tests/test_preprocess_intensity.py``
checks each against MONAI), so that prediction does not import torch.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.ndimage import binary_erosion
from skimage.exposure import equalize_adapthist
from skimage.filters import threshold_otsu

from chestdx.errors import ChestDxError
from chestdx.io.study import Study

WINDOWS: dict[str, tuple[float, float]] = {"lung": (-600.0, 1500.0), "mediastinal": (40.0, 400.0)}
"""HU window presets as ``(center, width)``."""

LUNG_WINDOW_AIR, LUNG_WINDOW_TISSUE = 59.0, 236.0
"""Grey levels of air (-1000 HU) and soft tissue (40 HU) in a lung window (-600/1500)."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def window_bounds(window: str) -> tuple[float, float]:
    """HU range ``(low, high)`` of a window preset.

    Args:
        window: a key of ``WINDOWS``.

    Returns:
        ``(center - width / 2, center + width / 2)``.
    """
    if window not in WINDOWS:
        raise ChestDxError(f"unknown HU window {window!r}: use one of {sorted(WINDOWS)}")
    center, width = WINDOWS[window]
    return center - width / 2, center + width / 2


def apply_window(hu: np.ndarray, window: str = "lung") -> np.ndarray:
    """Map Hounsfield units through a window preset to 0-1 (clipped).

    Args:
        hu: array of HU values, any shape.
        window: ``"lung"`` (-600/1500) or ``"mediastinal"`` (40/400).

    Returns:
        float32 array of the same shape in 0..1.

    Example:
        >>> apply_window(np.array([-1350.0, -600.0, 150.0]))  # lung window
        array([0. , 0.5, 1. ], dtype=float32)
    """
    low, high = window_bounds(window)
    return scale_range(np.asarray(hu, dtype=np.float32), low, high, 0.0, 1.0)


def scale_range(img: np.ndarray, a_min: float, a_max: float, b_min: float, b_max: float) -> np.ndarray:
    """Map ``a_min..a_max`` linearly onto ``b_min..b_max`` and clip (MONAI ``ScaleIntensityRange``).

    Args:
        img: float32 array.
        a_min: input value mapped to ``b_min``.
        a_max: input value mapped to ``b_max``.
        b_min: output minimum.
        b_max: output maximum.

    Returns:
        float32 array; when ``a_min == a_max`` the image is only shifted (``img - a_min + b_min``).
    """
    if a_max - a_min == 0.0:
        return (img - np.float32(a_min) + np.float32(b_min)).astype(np.float32, copy=False)
    out = (img - np.float32(a_min)) / np.float32(a_max - a_min) * np.float32(b_max - b_min) + np.float32(b_min)
    return np.clip(out, b_min, b_max).astype(np.float32, copy=False)


def render_8bit(study: Study, window: str = "lung", slices: np.ndarray | None = None,
                region: tuple[slice, slice] | None = None) -> np.ndarray:
    """The study's slices as 8-bit images, as a person would view them.

    Args:
        study: the study; ``"hu"`` pixels go through ``window``, ``"8bit"`` pixels are
            returned as they are (rounded and clipped to 0..255, no HU step).
        window: HU window preset, ignored for ``"8bit"`` studies.
        slices: indices of the slices to render; default all.
        region: ``(rows, columns)`` slices of the part of each slice to render; default all of it.

    Returns:
        uint8 array ``(z, y, x)`` (``z = len(slices)`` when given; ``y, x`` the region's size).
    """
    pixels = study.pixels if region is None else study.pixels[(slice(None), *region)]
    pixels = pixels if slices is None else pixels[np.asarray(slices, dtype=int)]
    if study.intensity == "hu":
        return np.rint(apply_window(pixels, window) * 255.0).astype(np.uint8)
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def clip_top_percent(img: np.ndarray, percent: float = 0.5) -> np.ndarray:
    """ai-corona's intensity step: clip the brightest ``percent`` % of each slice, rescale to 0-255.

    Each slice is scaled from its minimum to its ``100 - percent`` percentile.

    Args:
        img: one slice ``(h, w)`` or slices ``(n, h, w)``, any numeric type.
        percent: share of the brightest intensities clipped, in percent.

    Returns:
        float32 array of the same shape in 0..255.
    """
    arr = np.asarray(img, dtype=np.float32)
    stack = arr[None] if arr.ndim == 2 else arr
    out = np.empty(stack.shape, dtype=np.float32)
    for i, image in enumerate(stack):
        low, high = np.percentile(image, [0.0, 100.0 - percent])
        out[i] = scale_range(image, float(low), float(high), 0.0, 255.0)
    return out[0] if arr.ndim == 2 else out


def lungs_only(img: np.ndarray, lung_mask: np.ndarray, low: float = 1.0, high: float = 99.0,
               rim: float = 0.01) -> np.ndarray:
    """Keep only the lungs: black outside the mask, lung intensities stretched to 0-255.

    The mask is first eroded by ``rim`` of the image side, so that its edge (pleura and
    chest wall where the lungs were segmented, a dark JPEG halo where a mask was applied
    before) looks alike for every source; each slice's remaining lung pixels are scaled from
    their ``low`` to their ``high`` percentile. Neither what surrounds the lungs nor the
    window a source was rendered with is left for a model to learn.

    Args:
        img: slices ``(n, h, w)`` in 0..255.
        lung_mask: bool ``(n, h, w)``.
        low, high: percentiles of the lung pixels mapped to 0 and 255.
        rim: erosion of the mask, as a share of the longer image side (at least 1 pixel).

    Returns:
        float32 ``(n, h, w)`` in 0..255; a slice without lung comes back black.

    Example:
        >>> lungs_only(np.full((1, 4, 4), 90.0), np.ones((1, 4, 4), bool)).max()
        0.0
    """
    out = np.zeros(np.shape(img), dtype=np.float32)
    steps = max(1, int(round(rim * max(np.shape(img)[1:]))))
    for i, (image, mask) in enumerate(zip(np.asarray(img, dtype=np.float32), np.asarray(lung_mask, dtype=bool))):
        mask = binary_erosion(mask, iterations=steps)
        if not mask.any():
            continue
        lo, hi = np.percentile(image[mask], [low, high])
        stretched = np.clip((image - lo) * (255.0 / max(hi - lo, 1e-6)), 0.0, 255.0)
        out[i] = np.where(mask, stretched, 0.0)
    return out


def clahe(img_uint8: np.ndarray, clip_limit: float = 0.01) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation (Kara et al.), slice by slice.

    Args:
        img_uint8: one slice ``(h, w)`` or slices ``(n, h, w)``, 0..255.
        clip_limit: scikit-image's normalised clip limit (0..1; higher = more contrast).

    Returns:
        uint8 array of the same shape.
    """
    arr = np.asarray(img_uint8)
    stack = arr[None] if arr.ndim == 2 else arr
    out = np.empty(stack.shape, dtype=np.uint8)
    for i, image in enumerate(stack):
        equalised = equalize_adapthist(image.astype(np.uint8), clip_limit=clip_limit)
        out[i] = np.rint(equalised * 255.0).astype(np.uint8)
    return out[0] if arr.ndim == 2 else out


def imagenet_normalise(x01: np.ndarray) -> np.ndarray:
    """Normalise 0-1 images with ImageNet's channel mean and standard deviation.

    Args:
        x01: float array ``(n, 3, h, w)`` in 0..1; ``(n, 1, h, w)`` grey images use the
            mean of the three channels' statistics.

    Returns:
        float32 array of the same shape: ``(x - mean[c]) / std[c]``.
    """
    x = np.asarray(x01, dtype=np.float32)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"imagenet_normalise expects (n, 3, h, w) or (n, 1, h, w), got {x.shape}")
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if x.shape[1] == 3 else ((float(np.mean(IMAGENET_MEAN)),), (float(np.mean(IMAGENET_STD)),))
    mean = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    return np.ascontiguousarray((x - mean) / std, dtype=np.float32)


def as_lung_window(image: np.ndarray) -> np.ndarray:
    """Map an 8-bit rendering's air and soft-tissue levels onto those of a lung window (-600/1500).

    Args:
        image: ``(h, w)`` 0-255 slice, black (0-2) outside the scan circle.

    Returns:
        float32 ``(h, w)`` in 0-255: air 59, soft tissue 236, outside the circle air.
    """
    image = np.asarray(image, np.float32)
    labels, _ = ndimage.label(image <= 2)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    outside = np.isin(labels, border[border > 0])
    inside = image[~outside]
    cut = threshold_otsu(inside)
    air, tissue = np.median(inside[inside < cut]), np.median(inside[inside >= cut])
    out = LUNG_WINDOW_AIR + (image - air) * (LUNG_WINDOW_TISSUE - LUNG_WINDOW_AIR) / max(tissue - air, 1.0)
    out[outside] = LUNG_WINDOW_AIR
    return np.clip(out, 0, 255)
