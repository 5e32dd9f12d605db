"""Turn evaluation results into strict-JSON-ready Python objects."""

from __future__ import annotations

import numpy as np


def to_json_ready(value):
    """Numpy scalars and arrays to Python numbers and lists, nan and infinities to None.

    Args:
        value: a (nested) dict / list / tuple / array / scalar.

    Returns:
        The same structure, safe for ``json.dumps(..., allow_nan=False)``; dict keys
        become strings.
    """
    if isinstance(value, dict):
        return {str(k): to_json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [to_json_ready(v) for v in value]
    if isinstance(value, np.integer | np.bool_):
        return value.item()
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else None
    return value


def dumps(value) -> str:
    """Args: value: a (nested) result. Returns: strict, indented JSON (see `to_json_ready`; other objects as strings)."""
    import json

    return json.dumps(to_json_ready(value), indent=2, allow_nan=False, default=str)
