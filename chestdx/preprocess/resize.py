"""Resizing slices to the model's input size (NumPy: prediction does not import torch).

The arithmetic is PyTorch's ``interpolate`` as MONAI's ``Resize`` calls it (area averaging
to shrink, bilinear without corner alignment to enlarge, the long side scaled to the size
and the short side rounded), written as two interpolation matrices per slice size;
``tests/test_preprocess_intensity.py`` checks it against MONAI.
"""

from __future__ import annotations

import functools
import math

import numpy as np


@functools.lru_cache(maxsize=64)
def _weights(n_in: int, n_out: int, mode: str) -> np.ndarray:
    """``(n_out, n_in)`` matrix of one axis's interpolation weights."""
    w = np.zeros((n_out, n_in), dtype=np.float64)
    scale = n_in / n_out
    for i in range(n_out):
        if mode == "area":  # adaptive average pooling, in integers as PyTorch computes the windows
            start, end = i * n_in // n_out, -(-(i + 1) * n_in // n_out)
            w[i, start:end] = 1.0 / (end - start)
        else:  # bilinear, align_corners=False
            src = max((i + 0.5) * scale - 0.5, 0.0)
            i0 = min(int(math.floor(src)), n_in - 1)
            i1 = min(i0 + 1, n_in - 1)
            frac = src - i0
            w[i, i0] += 1.0 - frac
            w[i, i1] += frac
    return w.astype(np.float32)


def _resample(stack: np.ndarray, height: int, width: int, mode: str) -> np.ndarray:
    n, h, w = stack.shape
    if (h, w) == (height, width):
        return stack
    rows = (stack.reshape(n * h, w) @ _weights(w, width, mode).T).reshape(n, h, width)
    return np.matmul(_weights(h, height, mode), rows)


def resize_slices(arr: np.ndarray, size: int, keep_aspect: bool = True, pad_value: float | None = None) -> np.ndarray:
    """Resize a stack of slices to ``size`` x ``size``.

    With ``keep_aspect`` the long side is scaled to ``size`` and the short side is padded
    symmetrically with the background value, so anatomy is never stretched. Shrinking
    uses area averaging, enlarging bilinear interpolation.

    Args:
        arr: ``(n, h, w)`` slices, any numeric type.
        size: output height and width.
        keep_aspect: keep the aspect ratio (pad) instead of stretching.
        pad_value: padding value; default the stack's minimum (the background: black).

    Returns:
        float32 array ``(n, size, size)``.
    """
    stack = np.asarray(arr, dtype=np.float32)
    if stack.ndim != 3:
        raise ValueError(f"resize_slices expects (n, h, w), got shape {stack.shape}")
    n, h, w = stack.shape
    if n == 0:
        return np.zeros((0, size, size), dtype=np.float32)
    mode = "area" if max(h, w) >= size else "bilinear"
    if not keep_aspect:
        return np.ascontiguousarray(_resample(stack, size, size, mode), dtype=np.float32)
    scale = size / max(h, w)
    new_h, new_w = int(round(h * scale)), int(round(w * scale))
    resized = _resample(stack, new_h, new_w, mode)
    value = float(stack.min()) if pad_value is None else float(pad_value)
    out = np.full((n, size, size), value, dtype=np.float32)
    y0, x0 = (size - new_h) // 2, (size - new_w) // 2
    out[:, y0:y0 + new_h, x0:x0 + new_w] = resized
    return out
