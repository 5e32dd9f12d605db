"""Explanations: heat maps of the evidence on the slices that drove a decision, and their files.

`maps.explain_slices` computes maps at model input size, `maps.map_to_original` brings them
back onto the stored slices, `outputs.write_explanations` writes them, `overlay` draws them
and `localisation` measures whether they point at annotated lesions.
"""

__all__ = ["METHODS", "ExplanationResult", "explain_slices", "map_to_original"]


def __getattr__(name: str):
    # Imported on first use, so that `chestdx.explain.outputs` (used to check arguments) needs no torch.
    if name in __all__:
        from chestdx.explain import maps

        return getattr(maps, name)
    raise AttributeError(f"module 'chestdx.explain' has no attribute {name!r}")
