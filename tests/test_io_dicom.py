"""DICOM reading: physical order, series choice, HU, compression, X-ray, real files."""

from __future__ import annotations

import shutil
import zipfile

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import get_encoder
from pydicom.uid import generate_uid

from chestdx.errors import ChestDxError
from chestdx.io import load_study
from chestdx.io.sample import SAMPLE_DESCRIPTION, new_dataset, synthetic_chest_ct, write_sample_series

N, SIZE = 12, 64


@pytest.fixture(scope="module")
def series_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("series") / "ct"
    write_sample_series(out, n_slices=N, size=SIZE, seed=3, progress=False)
    return out


@pytest.fixture(scope="module")
def expected_hu():
    return np.clip(np.round(synthetic_chest_ct(N, SIZE, seed=3)), -1024, 3071)


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _rewrite(folder, change):
    """Apply ``change(ds)`` to every file of a folder, in place."""
    for path in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        change(ds)
        ds.save_as(path)


def test_shuffled_file_names_are_read_in_position_order(series_dir, expected_hu):
    names = [p.name for p in write_sample_series(series_dir.parent / "again", n_slices=N, size=SIZE, seed=3, progress=False)]
    assert names != sorted(names)  # file names are not in slice order
    study = load_study(series_dir, progress=False)
    assert study.kind == "ct-volume" and study.intensity == "hu" and study.modality == "CT"
    assert study.pixels.shape == (N, SIZE, SIZE)
    np.testing.assert_allclose(study.slice_positions, -300.0 + 2.5 * np.arange(N))
    np.testing.assert_array_equal(study.pixels, expected_hu)
    assert study.spacing == pytest.approx((2.5, 0.7, 0.7))
    assert study.warnings == []
    assert study.metadata["SeriesDescription"] == SAMPLE_DESCRIPTION


def test_hu_of_air_and_lung(series_dir):
    hu = load_study(series_dir, progress=False).pixels
    assert hu[:, :4, :4].mean() == pytest.approx(-1000, abs=15)  # air in the corners
    middle = hu[N // 2]
    assert np.median(middle[(middle > -950) & (middle < -700)]) == pytest.approx(-850, abs=15)


def test_position_beats_instance_number(series_dir, tmp_path, expected_hu):
    folder = _copy(series_dir, tmp_path / "scrambled")
    _rewrite(folder, lambda ds: setattr(ds, "InstanceNumber", 1000 - int(ds.InstanceNumber) * 7 % 13))
    np.testing.assert_array_equal(load_study(folder, progress=False).pixels, expected_hu)


def test_slice_order_runs_feet_to_head_whatever_the_row_direction(series_dir, tmp_path, expected_hu):
    folder = _copy(series_dir, tmp_path / "flipped")
    _rewrite(folder, lambda ds: setattr(ds, "ImageOrientationPatient", [1, 0, 0, 0, -1, 0]))  # normal points to the feet
    study = load_study(folder, progress=False)
    np.testing.assert_array_equal(study.pixels, expected_hu)
    np.testing.assert_allclose(study.slice_positions, -300.0 + 2.5 * np.arange(N))


def test_instance_number_fallback_without_positions(series_dir, tmp_path, expected_hu):
    folder = _copy(series_dir, tmp_path / "nopos")
    _rewrite(folder, lambda ds: delattr(ds, "ImagePositionPatient"))
    study = load_study(folder, progress=False)
    np.testing.assert_array_equal(study.pixels, expected_hu)
    assert study.slice_positions is None
    assert any("InstanceNumber" in w for w in study.warnings)
    assert study.spacing[0] == 2.5  # from SliceThickness


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")  # raised by this test's writing, not the reader
def test_non_standard_uid_and_missing_optional_tags(series_dir, tmp_path, expected_hu):
    folder = _copy(series_dir, tmp_path / "odd")

    def strip(ds):
        ds.SeriesInstanceUID = "series-one"
        for tag in ("Modality", "SliceThickness", "KVP", "BodyPartExamined", "StudyDate", "InstanceNumber"):
            delattr(ds, tag)

    _rewrite(folder, strip)
    study = load_study(folder, progress=False)
    np.testing.assert_array_equal(study.pixels, expected_hu)
    assert study.series_uid == "series-one" and study.modality == "CT"
    assert any("'series-one' is not a valid DICOM UID" in w for w in study.warnings)
    assert any("inferred CT" in w for w in study.warnings)


def test_rescale_intercept_minus_8192(series_dir, tmp_path, expected_hu):
    folder = _copy(series_dir, tmp_path / "i8192")

    def shift(ds):
        ds.PixelData = (ds.pixel_array.astype(np.int16) + (8192 - 1024)).astype(np.int16).tobytes()
        ds.RescaleIntercept = -8192

    _rewrite(folder, shift)
    assert int(pydicom.dcmread(next(folder.glob("*.dcm"))).pixel_array.min()) > 7000
    study = load_study(folder, progress=False)
    np.testing.assert_array_equal(study.pixels, expected_hu)
    assert study.pixels[:, :4, :4].mean() == pytest.approx(-1000, abs=15)


@pytest.mark.parametrize("syntax", ["RLELossless", "JPEGLSLossless", "JPEG2000Lossless"])
def test_compressed_copies_decode_to_the_same_hu(tmp_path, syntax, expected_hu):
    if not get_encoder(getattr(pydicom.uid, syntax)).is_available:
        pytest.skip(f"no encoder for {syntax} installed")
    folder = tmp_path / syntax
    write_sample_series(folder, n_slices=N, size=SIZE, seed=3, transfer_syntax=syntax, progress=False)
    assert pydicom.dcmread(next(folder.glob("*.dcm"))).file_meta.TransferSyntaxUID == getattr(pydicom.uid, syntax)
    study = load_study(folder, progress=False)
    np.testing.assert_array_equal(study.pixels, expected_hu)
    assert study.metadata["TransferSyntax"] == getattr(pydicom.uid, syntax).name


def _localizer(folder, study_uid):
    scout = new_dataset(np.full((SIZE, SIZE), 1024, np.int16), ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"],
                        StudyInstanceUID=study_uid, SeriesDescription="topogram", ImagePositionPatient=[0, 0, 0],
                        ImageOrientationPatient=[1, 0, 0, 0, 0, -1], RescaleIntercept=-1024, RescaleSlope=1)
    scout.save_as(folder / "scout.dcm", enforce_file_format=True)
    return str(scout.SeriesInstanceUID)


def test_two_series_and_localizer(tmp_path):
    write_sample_series(tmp_path / "a", n_slices=10, size=SIZE, seed=1, progress=False)
    write_sample_series(tmp_path / "b", n_slices=6, size=SIZE, seed=2, progress=False)
    uid_a = str(pydicom.dcmread(next((tmp_path / "a").glob("*.dcm"))).SeriesInstanceUID)
    uid_b = str(pydicom.dcmread(next((tmp_path / "b").glob("*.dcm"))).SeriesInstanceUID)
    scout_uid = _localizer(tmp_path, "1.2.3")
    study = load_study(tmp_path, progress=False)
    assert study.series_uid == uid_a and study.n_slices == 10
    assert any(uid_a in w and "chose" in w for w in study.warnings)
    assert any(scout_uid in w and "localizer" in w for w in study.warnings)
    assert study.other_series == [{"index": 1, "uid": uid_b, "n_slices": 6, "description": SAMPLE_DESCRIPTION,
                                   "modality": "CT"}]
    by_index = load_study(tmp_path, series=1, progress=False)
    by_uid = load_study(tmp_path, series=uid_b, progress=False)
    assert by_index.series_uid == by_uid.series_uid == uid_b and by_uid.n_slices == 6
    assert by_uid.other_series[0]["uid"] == uid_a
    with pytest.raises(ChestDxError, match="out of range"):
        load_study(tmp_path, series=7, progress=False)
    with pytest.raises(ChestDxError, match="not found"):
        load_study(tmp_path, series="1.2.999", progress=False)


def test_single_slice_in_another_orientation_is_a_localizer(tmp_path):
    write_sample_series(tmp_path / "a", n_slices=5, size=SIZE, seed=1, progress=False)
    coronal = new_dataset(np.full((SIZE, SIZE), 1024, np.int16), ImageOrientationPatient=[1, 0, 0, 0, 0, -1],
                          ImagePositionPatient=[0, 0, 0], RescaleIntercept=-1024, RescaleSlope=1)
    coronal.save_as(tmp_path / "odd.dcm", enforce_file_format=True)
    study = load_study(tmp_path, progress=False)
    assert study.n_slices == 5 and study.other_series == []
    assert any(str(coronal.SeriesInstanceUID) in w for w in study.warnings)


def test_duplicates_are_dropped(series_dir, tmp_path, expected_hu):
    folder = _copy(series_dir, tmp_path / "dups")
    files = sorted(folder.glob("*.dcm"))
    shutil.copy(files[0], folder / "copy_same_sop.dcm")
    ds = pydicom.dcmread(files[1])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(folder / "copy_new_sop.dcm")
    study = load_study(folder, progress=False)
    np.testing.assert_array_equal(study.pixels, expected_hu)
    assert any("SOPInstanceUID" in w for w in study.warnings)
    assert any("identical pixels" in w for w in study.warnings)


def test_mixed_sizes_refused(series_dir, tmp_path):
    folder = _copy(series_dir, tmp_path / "mixed")
    ds = pydicom.dcmread(next(folder.glob("*.dcm")))
    small = new_dataset(np.zeros((32, 32), np.int16), SeriesInstanceUID=ds.SeriesInstanceUID,
                        ImagePositionPatient=[0, 0, 50], ImageOrientationPatient=[1, 0, 0, 0, 1, 0])
    small.save_as(folder / "small.dcm", enforce_file_format=True)
    with pytest.raises(ChestDxError, match="mixes image sizes"):
        load_study(folder, progress=False)


def test_zip_reads_like_the_folder(series_dir, tmp_path, expected_hu):
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in series_dir.glob("*.dcm"):
            zf.write(path, f"patient/series/{path.name}")
    study = load_study(archive, progress=False)
    np.testing.assert_array_equal(study.pixels, expected_hu)
    assert study.source == str(archive)


def test_zipped_dicom_is_read_in_memory_with_the_folders_order_and_skips(series_dir, tmp_path, expected_hu, monkeypatch):
    import chestdx.io.load as load_module

    archive = tmp_path / "study.zip"
    paths = sorted(series_dir.glob("*.dcm"))
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for i, path in enumerate(paths):  # half of the files without a suffix (found by their preamble), in a sub-folder
            zf.write(path, f"series/sub/{path.stem}" if i % 2 else f"series/{path.name}")
        zf.writestr("series/README.txt", "not a study file")
        zf.writestr("__MACOSX/series/._IM0001.dcm", b"resource fork")
        zf.writestr("series/.hidden.dcm", b"junk")
    monkeypatch.setattr(load_module, "extracted_zip", None)  # nothing unpacked to disk
    study = load_study(archive, progress=False)
    np.testing.assert_array_equal(study.pixels, expected_hu)
    assert study.warnings == []
    unpacked = tmp_path / "unpacked"
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(unpacked)
    folder = load_study(unpacked, progress=False)
    assert folder.metadata == study.metadata and folder.spacing == study.spacing


def test_a_zip_of_dicom_and_images_is_unpacked_and_read_like_its_folder(series_dir, tmp_path):
    archive = tmp_path / "mixed.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(series_dir.glob("*.dcm")):
            zf.write(path, path.name)
        zf.writestr("key.png", b"\x89PNG")  # an image beside the DICOM files
    study = load_study(archive, progress=False)
    assert any("ignored 1 non-DICOM image file" in w for w in study.warnings)


def test_a_damaged_member_of_a_zipped_series_is_named(series_dir, tmp_path):
    archive = tmp_path / "damaged.zip"
    paths = sorted(series_dir.glob("*.dcm"))
    with zipfile.ZipFile(archive, "w") as zf:
        for path in paths[:-1]:
            zf.write(path, path.name)
        zf.writestr(paths[-1].name, paths[-1].read_bytes()[:2000])  # its pixel data cut off
    with pytest.raises(ChestDxError, match=paths[-1].name):
        load_study(archive, progress=False)


def test_phi_left_out_unless_asked(series_dir):
    assert "PatientID" not in load_study(series_dir, progress=False).metadata
    assert "PatientName" not in load_study(series_dir, progress=False).metadata
    kept = load_study(series_dir, progress=False, keep_phi=True).metadata
    assert kept["PatientID"] == "CHESTDX-SYNTHETIC"


def test_ct_small_from_pydicom():
    study = load_study(get_testdata_file("CT_small.dcm"))
    assert study.kind == "ct-slice" and study.intensity == "hu" and study.pixels.shape == (1, 128, 128)
    assert (study.pixels.min(), study.pixels.max()) == (-896.0, 1167.0)  # stored 128..2191, intercept -1024
    assert study.spacing == pytest.approx((5.0, 0.661468, 0.661468))
    assert study.metadata["ConvolutionKernel"] == "STANDARD"


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm"])
def test_compressed_pydicom_files_decode_like_the_uncompressed_one(name):
    plain = load_study(get_testdata_file("MR_small.dcm"), kind="xray")
    compressed = load_study(get_testdata_file(name), kind="xray")
    np.testing.assert_array_equal(compressed.pixels, plain.pixels)
    assert compressed.pixels.std() > 10


@pytest.mark.parametrize(("name", "modality"), [("MR_small.dcm", "MR"), ("JPEG2000.dcm", "NM"), ("MR_small_RLE.dcm", "MR")])
def test_non_ct_refused_on_the_ct_path(name, modality):
    with pytest.raises(ChestDxError, match=f"is {modality}, not CT"):
        load_study(get_testdata_file(name))


def test_colour_dicom_read_as_grey_xray():
    study = load_study(get_testdata_file("SC_rgb_jpeg_lossy_gdcm.dcm"), kind="xray")
    assert study.kind == "xray" and study.intensity == "8bit" and study.pixels.shape == (1, 100, 100)
    assert study.pixels.min() == 0 and study.pixels.max() == 255


def _xray(path, photometric="MONOCHROME1", **tags):
    """A 16-bit X-ray: air on top (rows 0-9), soft tissue below, a dense vertical bone band."""
    density = np.full((80, 64), 0.2)
    density[:, 28:36] = 0.9  # bone
    density[:10] = 0.0  # air
    stored = (density * 4000).astype(np.uint16)
    if photometric == "MONOCHROME1":  # low values are white
        stored = (4095 - stored).astype(np.uint16)
    tags = {"ViewPosition": "PA", "ImagerPixelSpacing": [0.2, 0.2], **tags}
    ds = new_dataset(stored, modality="DX", PhotometricInterpretation=photometric, BitsStored=12, HighBit=11, **tags)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_xray_bone_is_bright(tmp_path, photometric):
    study = load_study(_xray(tmp_path / "cxr.dcm", photometric), progress=False)
    assert study.kind == "xray" and study.intensity == "8bit" and study.modality == "DX"
    assert study.pixels[0, 10:, 30].mean() == pytest.approx(255)
    assert study.pixels[0, :10].mean() == pytest.approx(0)
    assert study.pixels[0, 10:, 5].mean() == pytest.approx(255 * 0.2 / 0.9, abs=1)
    assert study.spacing == pytest.approx((1.0, 0.2, 0.2))


def test_xray_window_applied(tmp_path):
    # window 0..1600 of the MONOCHROME2 values (tissue 800, bone 3600): bone saturates, tissue mid-grey
    study = load_study(_xray(tmp_path / "w.dcm", "MONOCHROME2", WindowCenter=800, WindowWidth=1600))
    assert study.pixels[0, 10:, 30].mean() == pytest.approx(255)
    assert study.pixels[0, 10:, 5].mean() == pytest.approx(127.5, abs=2)
    assert study.pixels[0, :10].mean() == pytest.approx(0)


def test_xray_lateral_refused_and_burned_in_warned(tmp_path):
    with pytest.raises(ChestDxError, match="lateral"):
        load_study(_xray(tmp_path / "lat.dcm", ViewPosition="LL"))
    study = load_study(_xray(tmp_path / "burned.dcm", BurnedInAnnotation="YES"))
    assert any("BurnedInAnnotation" in w for w in study.warnings)


def test_xray_refused_as_ct_volume(tmp_path):
    with pytest.raises(ChestDxError, match="is DX, not CT.*kind='xray'"):
        load_study(_xray(tmp_path / "cxr.dcm"), kind="ct-volume")


def test_real_two_slice_ct(shared_data):
    study = load_study(shared_data / "dicom-ct-two-slices", progress=False)
    assert study.kind == "ct-volume" and study.modality == "CT" and study.intensity == "hu"
    assert study.pixels.shape == (2, 512, 512)
    assert study.spacing == pytest.approx((1.0, 0.625, 0.625))
    np.testing.assert_allclose(study.slice_positions, [0.0, 1.0])
    assert any("Modality tag missing: inferred CT" in w for w in study.warnings)
    assert any("identical pixels at different positions" in w for w in study.warnings)  # the two files hold one image
    assert (study.pixels.min(), study.pixels.max()) == (-2048.0, 1502.0)
    lungs = (study.pixels > -950) & (study.pixels < -500)
    assert 80_000 < lungs.sum() < 160_000  # reference lung mask: 101,288 voxels


def test_real_two_slices_at_one_position(shared_data, tmp_path):
    """Both files hold the same pixels: at one position they are exact duplicates, one is dropped."""
    for name in ("0.dcm", "1.dcm"):
        ds = pydicom.dcmread(shared_data / "dicom-ct-two-slices" / name)
        ds.ImagePositionPatient = [0.0, 0.0, 0.0]
        ds.save_as(tmp_path / name)
    study = load_study(tmp_path, progress=False)
    assert study.n_slices == 1 and study.kind == "ct-slice"
    assert study.spacing[0] == 1.0  # from SliceThickness
    assert any("dropped 1 duplicate slice(s) (same position and identical pixels)" in w for w in study.warnings)


def test_same_position_different_pixels_kept(shared_data, tmp_path):
    for name, offset in (("0.dcm", 0), ("1.dcm", 5)):
        ds = pydicom.dcmread(shared_data / "dicom-ct-two-slices" / name)
        ds.ImagePositionPatient = [0.0, 0.0, 0.0]
        ds.PixelData = (ds.pixel_array + offset).astype(np.int16).tobytes()
        ds.save_as(tmp_path / name)
    study = load_study(tmp_path, progress=False)
    assert study.n_slices == 2 and study.spacing[0] == 1.0
    assert any("share a position with a different image" in w for w in study.warnings)
    assert any("all slices have the same position" in w for w in study.warnings)


def test_hu_from_rescale_matches_pydicom_modality_lut():
    from pydicom.dataset import Dataset
    from pydicom.pixels import apply_modality_lut

    from chestdx.io.dicom import to_hu

    stored = np.arange(-2000, 2000, 7, dtype=np.int16).reshape(1, -1)
    ds = Dataset()
    ds.RescaleSlope, ds.RescaleIntercept = 1.5, -1024
    hu = to_hu(stored, ds)
    assert hu.dtype == np.float32
    np.testing.assert_allclose(hu, apply_modality_lut(stored, ds), rtol=0, atol=1e-3)
    bare = to_hu(stored, Dataset())  # no rescale: stored values are HU
    assert bare.dtype == np.float32 and np.array_equal(bare, stored.astype(np.float32))
