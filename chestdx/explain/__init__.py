"""Explanations: heat maps of the evidence on the slices that drove a decision, and their files.

`maps.explain_slices` computes maps at model input size, `maps.map_to_original` brings them
back onto the stored slices, `outputs.write_explanations` writes them, `overlay` draws them
and `localisation` measures whether they point at annotated lesions.
"""

from chestdx.explain.maps import METHODS, ExplanationResult, explain_slices, map_to_original

__all__ = ["METHODS", "ExplanationResult", "explain_slices", "map_to_original"]
