"""Explanations: heat maps of the evidence on the slices that drove a decision.

`maps.explain_slices` computes maps at model input size (torch), `maps.map_to_original`
brings them back onto the stored slices, `overlay` draws them and `localisation` measures
whether they point at annotated lesions. A study's explanation is made from its diagnosis
(`chestdx.pipeline.explain`) and written by `chestdx.outputs.explanations`.
"""
