"""Resizing slices to the model's input size."""

from __future__ import annotations

import numpy as np
from monai.transforms import Resize, SpatialPad
from monai.utils import convert_to_numpy


def resize_slices(arr: np.ndarray, size: int, keep_aspect: bool = True, pad_value: float | None = None) -> np.ndarray:
    """Resize a stack of slices to ``size`` x ``size``.

    With ``keep_aspect`` the long side is scaled to ``size`` and the short side is padded
    symmetrically with the background value, so anatomy is never stretched. Shrinking
    uses area averaging, enlarging bilinear interpolation (MONAI ``Resize``).

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
        return convert_to_numpy(Resize((size, size), mode=mode)(stack), dtype=np.float32)
    resized = Resize(size, size_mode="longest", mode=mode)(stack)
    value = float(stack.min()) if pad_value is None else float(pad_value)
    padded = SpatialPad((size, size), method="symmetric", mode="constant", value=value)(resized)
    return convert_to_numpy(padded, dtype=np.float32)
