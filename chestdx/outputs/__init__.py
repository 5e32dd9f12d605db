"""Outputs of a diagnosis, one module per form: the prediction record (JSON and text) and the explanation files."""
