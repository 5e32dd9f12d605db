"""`Study.dicom`: the source's UIDs and geometry, in the physical slice order of `Study.pixels`."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
from pydicom.uid import generate_uid

from chestdx.io import load_study
from chestdx.io.sample import write_sample_series

N, SIZE = 10, 32


def _headers(files):
    return [pydicom.dcmread(f, stop_before_pixels=True) for f in files]


def test_uids_and_geometry_follow_slice_order(tmp_path):
    files = write_sample_series(tmp_path / "ct", n_slices=N, size=SIZE, seed=5, progress=False)
    headers = _headers(files)  # in slice order (feet to head); the file names are random
    refs = load_study(tmp_path / "ct", progress=False).dicom
    assert refs.sop_instance_uids == tuple(h.SOPInstanceUID for h in headers)
    assert refs.study_uid == headers[0].StudyInstanceUID and refs.series_uid == headers[0].SeriesInstanceUID
    assert refs.sop_class_uid == pydicom.uid.CTImageStorage
    assert refs.frame_of_reference_uid == headers[0].FrameOfReferenceUID
    np.testing.assert_allclose(refs.image_positions[:, 2], -300.0 + 2.5 * np.arange(N))
    assert refs.image_orientation == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    assert refs.pixel_spacing == (0.7, 0.7) and refs.slice_thickness == 2.5


def test_renamed_in_reverse_order_still_in_physical_order(tmp_path):
    files = write_sample_series(tmp_path / "ct", n_slices=N, size=SIZE, seed=6, progress=False)
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    for i, path in enumerate(files):  # the head-end slice gets the first name
        shutil.copy(path, shuffled / f"{N - i:03d}.dcm")
    study = load_study(shuffled, progress=False)
    assert study.dicom.sop_instance_uids == tuple(h.SOPInstanceUID for h in _headers(files))
    assert np.all(np.diff(study.dicom.image_positions[:, 2]) > 0)


def test_references_kept_while_metadata_is_deidentified(tmp_path):
    write_sample_series(tmp_path / "ct", n_slices=N, size=SIZE, seed=5, progress=False)
    study = load_study(tmp_path / "ct", progress=False)
    assert "PatientName" not in study.metadata and "PatientID" not in study.metadata
    assert "StudyInstanceUID" not in study.metadata
    assert len(study.dicom.sop_instance_uids) == study.n_slices
    assert load_study(tmp_path / "ct", keep_phi=True, progress=False).metadata["PatientID"] == "CHESTDX-SYNTHETIC"


def test_dropped_duplicate_slice_drops_its_uid(tmp_path):
    files = write_sample_series(tmp_path / "ct", n_slices=N, size=SIZE, seed=7, progress=False)
    copy = pydicom.dcmread(files[4])  # the same image at the same position, under a new SOP Instance UID
    copy.SOPInstanceUID = copy.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    copy.save_as(tmp_path / "ct" / "copy.dcm")
    study = load_study(tmp_path / "ct", progress=False)
    uids = [h.SOPInstanceUID for h in _headers(files)]
    kept = list(study.dicom.sop_instance_uids)
    assert study.n_slices == N == len(kept)
    assert kept[4] in (uids[4], copy.SOPInstanceUID)  # whichever of the pair was read first
    assert kept[:4] + kept[5:] == uids[:4] + uids[5:]


def test_non_dicom_source_has_no_references(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "slice.png")
    assert load_study(tmp_path / "slice.png", kind="ct-slice", progress=False).dicom is None
