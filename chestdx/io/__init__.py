"""Reading studies (DICOM, NIfTI, image slices, X-rays) into ``Study`` objects, and datasets."""

from chestdx.io.load import load_study
from chestdx.io.study import Study

__all__ = ["Study", "load_study"]
