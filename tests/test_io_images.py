"""Plain images, folders of slices and NIfTI volumes."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from chestdx.errors import ChestDxError
from chestdx.io import load_study
from chestdx.io.images import natural_key
from chestdx.io.sample import synthetic_chest_ct


def _png(path, value, shape=(40, 48), dtype=np.uint8):
    Image.fromarray(np.full(shape, value, dtype)).save(path)
    return path


def test_natural_key_uses_the_trailing_number():
    names = ["s_10.png", "s_2.png", "s_1.png", "109054_26.0.jpg", "109054_24.0.jpg", "notes.png"]
    assert [n for n in sorted(names, key=lambda n: natural_key(Path(n)))] == [
        "s_1.png", "s_2.png", "s_10.png", "109054_24.0.jpg", "109054_26.0.jpg", "notes.png"]


def test_folder_of_slices_in_natural_order(tmp_path):
    for i in (1, 2, 10, 11, 3):
        _png(tmp_path / f"slice_{i}.png", i * 10)
    study = load_study(tmp_path, progress=False)
    assert study.kind == "ct-volume" and study.intensity == "8bit" and study.modality == "OT"
    assert study.pixels.shape == (5, 40, 48)
    assert study.pixels[:, 0, 0].tolist() == [10, 20, 30, 100, 110]


def test_16bit_slices_rescaled_jointly(tmp_path):
    _png(tmp_path / "a_1.png", 1000, dtype=np.uint16)
    _png(tmp_path / "a_2.png", 5000, dtype=np.uint16)
    _png(tmp_path / "a_3.png", 3000, dtype=np.uint16)
    study = load_study(tmp_path, progress=False)
    assert study.pixels[:, 0, 0].tolist() == [0.0, 255.0, 127.5]
    assert study.metadata["bit_depth"] == 16
    assert any("rescaled to 0-255" in w for w in study.warnings)


def test_rgb_single_image_is_read_grey_as_the_kind_asked(tmp_path):
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 100, 150, 200
    Image.fromarray(rgb).save(tmp_path / "one.png")
    study = load_study(tmp_path / "one.png", kind="ct-slice")
    assert study.kind == "ct-slice" and study.pixels.shape == (1, 32, 32)
    assert study.pixels[0, 0, 0] == pytest.approx(0.299 * 100 + 0.587 * 150 + 0.114 * 200, abs=1)
    assert load_study(tmp_path / "one.png", kind="xray").kind == "xray"


def test_tiff_16bit_single(tmp_path):
    arr = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    Image.fromarray(arr).save(tmp_path / "x.tif")
    study = load_study(tmp_path / "x.tif", kind="xray")
    assert (study.pixels.min(), study.pixels.max()) == (0.0, 255.0)


def test_cropped_slices_padded_but_unrelated_sizes_refused(tmp_path):
    _png(tmp_path / "c_1.png", 50, shape=(60, 64))
    _png(tmp_path / "c_2.png", 60, shape=(64, 58))
    study = load_study(tmp_path, progress=False)
    assert study.pixels.shape == (2, 64, 64)
    assert study.pixels[0, 2:62, :].min() == 50 and study.pixels[0, :2].max() == 0  # centred, padded with 0
    assert any("padded" in w for w in study.warnings)
    _png(tmp_path / "c_3.png", 70, shape=(200, 300))
    with pytest.raises(ChestDxError, match="different sizes"):
        load_study(tmp_path, progress=False)


def test_several_slice_folders_refused(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        _png(tmp_path / sub / "1.png", 1)
    with pytest.raises(ChestDxError, match="2 folders"):
        load_study(tmp_path, progress=False)


def _save_nifti(path, data, affine):
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


@pytest.mark.parametrize("layout", ["lps", "ras"])
def test_nifti_matches_dicom_layout(tmp_path, layout):
    """A volume in chestdx/DICOM layout (z feet->head, rows anterior->posterior, columns right->left) round-trips."""
    volume = synthetic_chest_ct(8, 48, seed=1)
    volume[0, 0, 0] = 3000.0  # a marker at (inferior, anterior, right)
    data = volume.transpose(2, 1, 0)  # NIfTI index (i, j, k) = (column, row, slice)
    if layout == "lps":  # columns go to patient left, rows to posterior: negative RAS axes
        affine = np.diag([-0.7, -0.8, 2.5, 1.0])
    else:  # stored RAS: flip columns and rows
        data, affine = data[::-1, ::-1, :], np.diag([0.7, 0.8, 2.5, 1.0])
    study = load_study(_save_nifti(tmp_path / "ct.nii.gz", np.ascontiguousarray(data), affine))
    assert study.kind == "ct-volume" and study.intensity == "hu" and study.modality == "CT"
    assert study.spacing == pytest.approx((2.5, 0.8, 0.7))
    np.testing.assert_allclose(study.pixels, volume, atol=1e-3)
    assert study.metadata["orientation"] == "RAS"


def test_nifti_8bit_values(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, (32, 32, 3)).astype(np.uint8)
    study = load_study(_save_nifti(tmp_path / "v.nii", data, np.eye(4)))
    assert study.intensity == "8bit" and study.n_slices == 3
    assert any("do not look like Hounsfield" in w for w in study.warnings)


def test_real_cc_ccii_scan(shared_data):
    study = load_study(shared_data / "cc-ccii-sample/CP/0/3132", progress=False)
    assert study.kind == "ct-volume" and study.intensity == "8bit"
    assert study.pixels.shape == (42, 512, 512)
    assert (study.pixels.min(), study.pixels.max()) == (0.0, 255.0)


def test_real_cc_ccii_scan_with_empty_files(shared_data):
    study = load_study(shared_data / "cc-ccii-sample/CP/0/3133", progress=False)
    assert study.n_slices == 108  # 124 files, 16 of them empty
    assert any("skipped 16 empty file(s)" in w for w in study.warnings)


def test_real_sirm_volume_of_cropped_slices(shared_data):
    study = load_study(shared_data / "covid-ct-volumes-sirm/coronacases_org_001", progress=False)
    assert study.pixels.shape == (100, 320, 238)  # largest crop
    assert study.intensity == "8bit" and study.kind == "ct-volume"
    assert any("padded" in w for w in study.warnings)


def test_real_dre_net_person(shared_data):
    study = load_study(shared_data / "dre-net-demo/person001_COVID19", progress=False)
    assert study.pixels.shape == (15, 512, 512) and study.intensity == "8bit"


def test_real_ucsd_slice_and_xray(shared_data):
    ucsd = load_study(shared_data / "ucsd-covid-ct/images/CT_COVID/2020.01.24.919183-p27-132.png")
    assert ucsd.kind == "ct-slice" and ucsd.pixels.ndim == 3 and ucsd.pixels.shape[0] == 1
    xray = sorted((shared_data / "ieee8023-cxr-frontal/images").glob("*.png"))[0]
    study = load_study(xray, kind="xray")
    assert study.kind == "xray" and study.intensity == "8bit" and max(study.pixels.shape) == 512
