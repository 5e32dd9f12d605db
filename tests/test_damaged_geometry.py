"""Slice geometry that is missing or not a finite number never reaches the DICOM results (found by fuzzing the node)."""

from __future__ import annotations

import math
from pathlib import Path

import pydicom
import pytest

from chestdx.cli import main
from chestdx.io import load_study
from chestdx.io.sample import write_sample_series

pytest.importorskip("highdicom")


def _series(folder: Path, change) -> Path:
    for path in write_sample_series(folder, n_slices=4, size=64, progress=False):
        ds = pydicom.dcmread(path)
        change(ds)
        ds.save_as(path)
    return folder


def _nan_thickness(ds):
    ds.SliceThickness = "NaN"


def _no_thickness(ds):
    del ds.SliceThickness


def _nan_position(ds):
    ds.ImagePositionPatient = ["0", "0", "NaN"] if ds.InstanceNumber == 2 else ds.ImagePositionPatient


def _infinite_spacing(ds):
    ds.PixelSpacing = ["inf", "0.7"]


@pytest.mark.parametrize("change", [_nan_thickness, _no_thickness, _nan_position, _infinite_spacing])
def test_predict_dicom_out_writes_the_results_it_can(change, tmp_path, capsys):
    from pydicom import config

    before = config.settings.writing_validation_mode
    config.settings.writing_validation_mode = config.IGNORE  # let the test write the damaged values
    try:
        study = _series(tmp_path / "study", change)
    finally:
        config.settings.writing_validation_mode = before
    loaded = load_study(study, progress=False)
    assert all(math.isfinite(v) and v > 0 for v in loaded.spacing)
    refs = loaded.dicom
    assert refs.slice_thickness is None or math.isfinite(refs.slice_thickness)
    assert refs.pixel_spacing is None or all(math.isfinite(v) for v in refs.pixel_spacing)
    assert main(["--quiet", "predict", str(study), "--dicom-out", str(tmp_path / "out")]) == 0
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert "sr.dcm" in written and any(n.startswith("sc_slice_") for n in written)
    assert "seg.dcm" not in written  # a Segmentation needs the whole geometry, finite
    for name in written:
        pydicom.dcmread(tmp_path / "out" / name)  # every file written is whole
