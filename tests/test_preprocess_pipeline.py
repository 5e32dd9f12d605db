"""prepare_study for every selection mode, its fallbacks, and the contact sheet."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from chestdx.errors import ChestDxError
from chestdx.io.sample import synthetic_chest_ct
from chestdx.io.study import Study
from chestdx.preprocess.intensity import IMAGENET_MEAN, IMAGENET_STD, render_8bit
from chestdx.preprocess.pipeline import PreparedStudy, prepare_study, study_lung_mask
from chestdx.preprocess.preview import contact_sheet
from chestdx.preprocess.select import lung_bbox
from chestdx.preprocess.spec import InputSpec

N, SIZE = 40, 128


@pytest.fixture(scope="module")
def study() -> Study:
    return Study(synthetic_chest_ct(N, SIZE, seed=1), "hu", spacing=(8.0, 2.7, 2.7), modality="CT", source="phantom")


@pytest.fixture(scope="module")
def mask(study) -> np.ndarray:
    return study_lung_mask(study)


def _check(prepared: PreparedStudy, spec: InputSpec) -> None:
    n = len(prepared.indices)
    assert n >= 1
    assert prepared.x.shape == (n, spec.channels, spec.size, spec.size) and prepared.x.dtype == np.float32
    assert prepared.rendered.shape == (n, SIZE, SIZE) and prepared.rendered.dtype == np.uint8
    assert prepared.indices.dtype.kind == "i"


def test_phantom_lungs_are_found(study, mask):
    assert mask.shape == study.pixels.shape
    fraction = mask.mean(axis=(1, 2))
    assert 0.05 < fraction.max() < 0.3  # the phantom's lungs at their widest
    assert fraction[N // 2] > fraction[0] and fraction[N // 2] > fraction[-1]  # smaller at both ends


def test_all_slices_unit_normalisation_is_the_rendered_image(study):
    spec = InputSpec(selection="all", size=SIZE, normalise="unit")
    prepared = prepare_study(study, spec)
    _check(prepared, spec)
    assert prepared.indices.tolist() == list(range(N))
    assert prepared.lung_mask is None and prepared.groups is None and prepared.crop_box is None
    np.testing.assert_array_equal(prepared.rendered, render_8bit(study, "lung"))
    np.testing.assert_allclose(prepared.x[:, 0], prepared.rendered / 255.0, atol=1e-6)
    np.testing.assert_array_equal(prepared.x[:, 0], prepared.x[:, 2])  # grey repeated to 3 channels


def test_middle_with_imagenet_normalisation(study):
    spec = InputSpec(selection="middle", middle_fraction=0.5, size=SIZE)
    prepared = prepare_study(study, spec)
    _check(prepared, spec)
    assert prepared.indices.tolist() == list(range(10, 30))
    unit = prepared.rendered / 255.0
    for c in range(3):
        np.testing.assert_allclose(prepared.x[:, c], (unit - IMAGENET_MEAN[c]) / IMAGENET_STD[c], atol=1e-5)


def test_equidistant_single_channel_resized(study):
    spec = InputSpec(selection="equidistant", n_slices=15, size=64, channels=1, normalise="unit")
    prepared = prepare_study(study, spec)
    _check(prepared, spec)
    assert prepared.indices.tolist() == [i * N // 15 for i in range(15)]
    assert 0.0 <= prepared.x.min() and prepared.x.max() <= 1.0
    shrunk = prepared.rendered.reshape(15, 64, 2, 64, 2).mean(axis=(2, 4)) / 255.0  # area resize by 2
    np.testing.assert_allclose(prepared.x[:, 0], shrunk, atol=1e-5)


def test_equidistant_takes_each_slice_once_when_a_study_has_fewer():
    few = Study(synthetic_chest_ct(4, SIZE, seed=2), "hu", spacing=(8.0, 2.7, 2.7), modality="CT", source="phantom")
    prepared = prepare_study(few, InputSpec(selection="equidistant", n_slices=15, size=32, normalise="unit"))
    assert prepared.indices.tolist() == [0, 1, 2, 3]  # not 15 rows with repeats


def test_groups_pad_with_black_rows(study):
    spec = InputSpec(selection="groups", group_size=14, size=32, normalise="unit")  # 40 = 2 x 14 + 12 (> 7)
    prepared = prepare_study(study, spec)
    _check(prepared, spec)
    assert len(prepared.groups) == 3 and [g.tolist() for g in prepared.groups][1] == list(range(14, 28))
    assert prepared.indices[-2:].tolist() == [-1, -1] and prepared.indices[:40].tolist() == list(range(40))
    assert not prepared.rendered[-2:].any() and not prepared.x[-2:].any()  # black slices


def test_groups_interpolate_small_remainder(study):
    spec = InputSpec(selection="groups", group_size=16, size=32)  # 40 = 2 x 16 + 8 (<= 8)
    prepared = prepare_study(study, spec)
    assert [len(g) for g in prepared.groups] == [16, 16]
    assert prepared.indices[16] == 16 and prepared.indices[-1] == 39 and -1 not in prepared.indices


def test_lung_selection_with_crop_clip_and_clahe(study, mask):
    spec = InputSpec(selection="lung", lung_filter="min-area", min_lung_fraction=0.5, clip_top_percent=0.5, clahe=True, lung_crop=True, size=48)
    prepared = prepare_study(study, spec, lung_mask=mask)
    _check(prepared, spec)
    areas = mask.sum(axis=(1, 2))
    assert prepared.indices.tolist() == np.flatnonzero(areas >= 0.5 * areas.max()).tolist()
    assert prepared.crop_box == lung_bbox(mask)
    assert prepared.lung_mask is mask and not prepared.warnings


def test_dre_and_kara_filters_keep_lung_slices(study, mask):
    for name in ("dre", "kara"):
        spec = InputSpec(selection="all", lung_filter=name, size=32)
        prepared = prepare_study(study, spec, lung_mask=mask)
        assert 1 <= len(prepared.indices) < N
        assert mask[prepared.indices].any(axis=(1, 2)).all()


def test_never_empty_when_no_lungs():
    air_free = Study(np.full((6, 32, 32), 40.0, np.float32), "hu", kind="ct-volume")
    prepared = prepare_study(air_free, InputSpec(selection="lung", lung_filter="dre", size=16))
    assert prepared.indices.tolist() == [1, 2, 3]  # the middle half
    assert prepared.x.shape == (3, 3, 16, 16)
    assert prepared.warnings and "lung filter" in prepared.warnings[0]


def test_8bit_study_and_xray(shared_data):
    image = np.asarray(Image.open(shared_data / "ucsd-covid-ct/images/CT_NonCOVID/709.png").convert("L"), dtype=np.float32)
    ct = Study(image, "8bit", kind="ct-slice")
    prepared = prepare_study(ct, InputSpec(selection="lung", lung_crop=True, window="mediastinal", size=64))
    np.testing.assert_array_equal(prepared.rendered[0], image.astype(np.uint8))  # no HU step on 8-bit input
    assert prepared.lung_mask.shape == (1,) + image.shape and 0.3 < prepared.lung_mask.mean() < 0.7
    xray = Study(image, "8bit", kind="xray", modality="DX")
    prepared = prepare_study(xray, InputSpec(selection="lung", lung_crop=True, size=64))
    assert prepared.lung_mask is None and prepared.indices.tolist() == [0] and prepared.warnings


def test_bad_lung_mask_shape(study):
    with pytest.raises(ValueError):
        prepare_study(study, InputSpec(selection="lung"), lung_mask=np.zeros((2, 4, 4), bool))


def test_contact_sheet_on_a_generated_series(tmp_path):
    from chestdx.io import load_study
    from chestdx.io.sample import write_sample_series

    write_sample_series(tmp_path / "series", n_slices=16, size=128, progress=False)
    study = load_study(tmp_path / "series", progress=False)
    out = contact_sheet(study, tmp_path / "sheets" / "sheet.png", max_slices=6)
    assert out == tmp_path / "sheets" / "sheet.png"
    with Image.open(out) as sheet:
        assert sheet.format == "PNG"
        pixels = np.asarray(sheet.convert("RGB")).astype(int)
    green = (pixels[..., 1] > 200) & (pixels[..., 0] < 120) & (pixels[..., 2] < 120)
    assert green.sum() > 100  # the lung outlines are drawn


def test_contact_sheet_refuses_other_paths(study, tmp_path):
    other = tmp_path / "report.jpg"
    other.write_bytes(b"keep me")
    with pytest.raises(ChestDxError, match=r"\.png"):
        contact_sheet(study, other)
    assert other.read_bytes() == b"keep me"
    folder = tmp_path / "folder.png"
    folder.mkdir()
    with pytest.raises(ChestDxError, match="folder"):
        contact_sheet(study, folder)


def test_contact_sheet_on_real_dicom(shared_data, tmp_path):
    import pydicom

    slices = [pydicom.dcmread(shared_data / "dicom-ct-two-slices" / f"{i}.dcm") for i in (0, 1)]
    hu = np.stack([ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in slices])
    study = Study(hu.astype(np.float32), "hu", spacing=(1.0, 0.625, 0.625), modality="CT", source="two-slices")
    out = contact_sheet(study, tmp_path / "two.png")
    with Image.open(out) as sheet:
        assert sheet.size[0] >= 600 and sheet.size[1] >= 200


def _two_lung_slice(size: int = 200) -> np.ndarray:
    """8-bit slice: black air, a grey body, two dark lungs side by side (with some texture)."""
    yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
    image = np.zeros((size, size), np.float32)
    image[(xx / 0.45) ** 2 + (yy / 0.35) ** 2 <= 1] = 170.0
    for cx in (-0.2, 0.2):
        image[((xx - cx) / 0.14) ** 2 + (yy / 0.25) ** 2 <= 1] = 40.0
    return image + np.random.default_rng(0).normal(0, 4, image.shape).astype(np.float32)


def test_upright_turns_stacked_lungs_and_lungs_only_blanks_the_rest():
    spec = InputSpec(selection="all", lung_crop=True, lungs_only=True, upright=True, size=64, normalise="unit")
    side_by_side = prepare_study(Study(_two_lung_slice(), "8bit", kind="ct-slice"), spec)
    stacked = prepare_study(Study(np.rot90(_two_lung_slice()).copy(), "8bit", kind="ct-slice"), spec)
    assert side_by_side.quarter_turns == 0 and stacked.quarter_turns == 1
    # turned a quarter further: side by side again, upside down (which way is anterior is not known)
    assert np.abs(side_by_side.x - np.rot90(stacked.x, 2, axes=(2, 3))).mean() < 0.05
    assert side_by_side.x.max() > 0.5 and (side_by_side.x == 0).mean() > 0.3  # stretched lungs on black


def test_maps_of_a_turned_slice_come_back_onto_the_stored_slice():
    from chestdx.explain.maps import map_to_original

    spec = InputSpec(selection="all", lung_crop=True, lungs_only=True, upright=True, size=64, normalise="unit")
    image = np.rot90(_two_lung_slice()).copy()  # lungs one above the other
    prepared = prepare_study(Study(image, "8bit", kind="ct-slice"), spec)
    assert prepared.quarter_turns == 1
    back = map_to_original(prepared.x[0, 0], image.shape, prepared.crop_box, quarter_turns=prepared.quarter_turns)
    lungs = prepared.lung_mask[0]
    assert back[lungs].mean() > 5 * back[~lungs].mean()  # the model input's lungs land on the slice's lungs
