"""Outputs of a diagnosis, one module per form: the prediction record (JSON and text), explanation files,
DICOM objects, and lesion label maps with their quantification."""
