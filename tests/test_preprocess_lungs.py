"""Classical lung segmentation on a drawn phantom and on real HU and 8-bit data."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from chestdx.preprocess.intensity import apply_window
from chestdx.preprocess.lungs import segment_lungs

REFERENCE_LUNG_VOXELS = 101_288  # data README: 64,752 right + 36,536 left in dicom-ct-two-slices


def _phantom(n: int = 8, size: int = 128):
    """HU volume with known lungs: body, table, two lungs (slices 2..n-1) holding vessels and a
    ground-glass patch, a trachea joined to the right lung by a bronchus in slice 2, and a
    gas bubble in the abdomen (slice 0). Returns (hu, true lung mask, named points)."""
    yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
    hu = np.full((n, size, size), -1000.0, dtype=np.float32)
    hu[:, (xx / 0.42) ** 2 + (yy / 0.30) ** 2 <= 1] = 40.0
    hu[:, (np.abs(yy - 0.36) < 0.015) & (np.abs(xx) < 0.45)] = 250.0  # table, apart from the body
    lungs = np.zeros((n, size, size), dtype=bool)
    for cx in (-0.2, 0.2):
        lungs[2:, ((xx - cx) / 0.13) ** 2 + ((yy + 0.02) / 0.2) ** 2 <= 1] = True
    hu[lungs] = -850.0
    vessel = (np.hypot(xx - 0.2, yy + 0.05) < 0.025) | (np.hypot(xx + 0.2, yy - 0.05) < 0.02)
    hu[2:][:, vessel] = 40.0
    ggo = np.hypot(xx + 0.28, yy - 0.1) < 0.04
    hu[3:6][:, ggo & lungs[3]] = -500.0
    trachea = np.hypot(xx, yy + 0.1) < 0.03
    hu[2:][:, trachea] = -1000.0
    hu[2, (np.abs(yy + 0.1) < 0.015) & (xx > 0) & (xx < 0.1)] = -1000.0  # bronchus: trachea joins the right lung
    hu[0, np.hypot(xx - 0.1, yy - 0.1) < 0.06] = -1000.0  # bowel gas, under the diaphragm (slice 1)
    hu += np.random.default_rng(0).normal(0, 15, hu.shape).astype(np.float32)
    c = size // 2
    points = {
        "vessel": (c - int(0.05 * size), c + int(0.2 * size)),
        "ggo": (c + int(0.1 * size), c - int(0.28 * size)),
        "trachea": (c - int(0.1 * size), c),
        "gas": (c + int(0.1 * size), c + int(0.1 * size)),
    }
    return hu, lungs, points


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def _count_dice(a: int, b: int) -> float:
    return 2 * min(a, b) / (a + b)


def test_phantom_hu_3d_finds_the_lungs_and_nothing_else():
    hu, truth, points = _phantom()
    mask = segment_lungs(hu, "hu", spacing=(5.0, 2.7, 2.7))
    assert mask.shape == hu.shape and mask.dtype == bool
    assert _dice(mask, truth) > 0.93
    assert not mask[:2].any()  # bowel gas under the lungs is a separate, smaller 3-D component
    assert mask[2:][:, points["vessel"][0], points["vessel"][1]].all()  # vessels inside: holes filled
    assert mask[3:6][:, points["ggo"][0], points["ggo"][1]].all()  # ground glass inside the lung
    assert not mask[3:][:, points["trachea"][0], points["trachea"][1]].any()  # airway dropped


def test_phantom_2d_mode_judges_each_slice_alone():
    hu, truth, points = _phantom()
    mask = segment_lungs(hu, "hu", spacing=(5.0, 2.7, 2.7), mode="2d")
    assert _dice(mask[2:], truth[2:]) > 0.93
    assert mask[0, points["gas"][0], points["gas"][1]]  # without 3-D context the gas looks like lung
    single = segment_lungs(hu[4], "hu", spacing=(5.0, 2.7, 2.7), mode="2d")
    assert single.shape == hu[4].shape
    np.testing.assert_array_equal(single, mask[4])


def test_phantom_rendered_8bit_gives_the_same_lungs():
    hu, truth, _ = _phantom()
    rendered = np.rint(apply_window(hu, "lung") * 255)
    mask = segment_lungs(rendered, "8bit")
    assert _dice(mask, truth) > 0.93


def test_no_lungs_gives_an_empty_mask():
    yy, xx = np.mgrid[0:64, 0:64] / 64 - 0.5
    body = np.where((xx / 0.4) ** 2 + (yy / 0.3) ** 2 <= 1, 40.0, -1000.0).astype(np.float32)
    assert segment_lungs(np.stack([body, body]), "hu").sum() == 0  # outside air is not lung
    assert segment_lungs(np.full((2, 64, 64), 40.0, np.float32), "hu").sum() == 0
    assert segment_lungs(np.full((2, 64, 64), -1000.0, np.float32), "hu").sum() == 0


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError):
        segment_lungs(np.zeros((2, 8, 8)), "hu", mode="4d")
    with pytest.raises(ValueError):
        segment_lungs(np.zeros((2, 8, 8)), "float")
    with pytest.raises(ValueError):
        segment_lungs(np.zeros(8), "hu")


def test_real_two_slice_dicom_matches_the_reference_count(shared_data):
    import pydicom

    slices = [pydicom.dcmread(shared_data / "dicom-ct-two-slices" / f"{i}.dcm") for i in (0, 1)]
    hu = np.stack([ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in slices])
    spacing = (1.0, *map(float, slices[0].PixelSpacing))
    for mode in ("3d", "2d"):
        count = int(segment_lungs(hu, "hu", spacing=spacing, mode=mode).sum())
        assert abs(count - REFERENCE_LUNG_VOXELS) <= 0.15 * REFERENCE_LUNG_VOXELS, count
        assert _count_dice(count, REFERENCE_LUNG_VOXELS) > 0.92


def _two_lungs(mask: np.ndarray, axis: int) -> bool:
    """Lung on both sides of the image centre along ``axis`` (1 = left/right, 0 = top/bottom)."""
    half = mask.shape[axis] // 2
    first, second = (mask[:, :half], mask[:, half:]) if axis == 1 else (mask[:half], mask[half:])
    return first.sum() > 0.2 * mask.sum() and second.sum() > 0.2 * mask.sum()


@pytest.mark.parametrize(
    ("relative", "low", "high", "axis"),
    [
        ("cc-ccii-sample/CP/0/3131/0100.png", 0.06, 0.2, 1),  # whole FOV, lung window
        ("covid-ct-volumes-sirm/coronacases_org_001/0100.jpg", 0.4, 0.85, 0),  # lung-cropped, rotated
        ("ucsd-covid-ct/images/CT_NonCOVID/709.png", 0.3, 0.7, 1),  # thorax-cropped paper figure
        ("ucsd-covid-ct/images/CT_NonCOVID/996.png", 0.3, 0.7, 1),  # mediastinal window: black lungs
    ],
)
def test_real_8bit_slices(shared_data, relative, low, high, axis):
    image = np.asarray(Image.open(shared_data / relative).convert("L"), dtype=np.float32)
    mask = segment_lungs(image, "8bit", mode="2d")
    assert mask.shape == image.shape
    assert low <= mask.mean() <= high, mask.mean()
    assert _two_lungs(mask, axis)
    assert image[mask].mean() < image[~mask].mean()  # lungs are the dark part


def test_real_8bit_volume_3d(shared_data):
    folder = shared_data / "cc-ccii-sample/CP/0/3132"
    files = sorted(folder.glob("*.png"))
    volume = np.stack([np.asarray(Image.open(f).convert("L"), dtype=np.float32)[::2, ::2] for f in files])
    mask = segment_lungs(volume, "8bit")
    fractions = mask.mean(axis=(1, 2))
    assert fractions.max() > 0.08
    assert (fractions > 0).sum() >= 0.5 * len(files)


def test_padding_frame_is_not_lung(shared_data):
    """Slices of several sizes are padded to one (black frame): a lung reaching the edge of
    the real image must not swallow the frame (and, by hole filling, the whole slice)."""
    image = np.asarray(Image.open(shared_data / "covid-ct-volumes-sirm/coronacases_org_001/0100.jpg").convert("L"), dtype=np.float32)
    padded = np.pad(image, 12)
    mask = segment_lungs(padded, "8bit", mode="2d")
    assert not mask[:12].any() and not mask[-12:].any() and not mask[:, :12].any() and not mask[:, -12:].any()
    inner = segment_lungs(image, "8bit", mode="2d")
    assert 2 * (mask[12:-12, 12:-12] & inner).sum() / (mask.sum() + inner.sum()) > 0.95


def test_long_volumes_are_segmented_on_every_kth_slice_with_the_same_result(monkeypatch):
    import chestdx.preprocess.lungs as lungs

    hu, truth, _ = _phantom(n=40, size=96)
    hu = np.repeat(hu, 5, axis=0)  # 200 slices: slices 10.. hold lungs
    monkeypatch.setattr(lungs, "WORK_SLICES", 1000)
    full = segment_lungs(hu, "hu", spacing=(1.0, 3.6, 3.6))
    monkeypatch.setattr(lungs, "WORK_SLICES", 50)  # every 4th slice
    strided = segment_lungs(hu, "hu", spacing=(1.0, 3.6, 3.6))
    assert strided.shape == full.shape
    assert _dice(strided, full) > 0.98
    assert (strided != full).any(axis=(1, 2)).sum() <= 4  # only at the lung's upper edge


def test_round_field_of_view_frame_is_left_out_of_the_threshold(shared_data):
    """MosMedData slices: black outside a round field of view. Before the frame was left out
    of the 8-bit threshold, no lung was found in any of them."""
    for name in ("CT-0/0010.jpg", "CT-1/0010.jpg"):
        image = np.asarray(Image.open(shared_data / "ct-mosmed-slices" / name).convert("L"), dtype=np.float32)
        mask = segment_lungs(image, "8bit", mode="2d")
        assert 0.1 <= mask.mean() <= 0.35, mask.mean()
        assert _two_lungs(mask, 1)
        assert not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())  # frame is not lung


def test_premasked_slices_take_their_non_black_region(shared_data):
    """CC-CCII normal slices come lung-masked (black but for the lungs)."""
    folder = shared_data / "ct-cc-ccii-normal" / "Normal" / "13" / "0"
    files = sorted(folder.glob("*.jpg"))
    image = np.asarray(Image.open(files[len(files) // 2]).convert("L"), dtype=np.float32)
    mask = segment_lungs(image, "8bit", mode="2d")
    non_black = image > 8
    assert _two_lungs(mask, 1)
    assert 2 * (mask & non_black).sum() / (mask.sum() + non_black.sum()) > 0.9
    volume = np.stack([np.asarray(Image.open(f).convert("L"), dtype=np.float32) for f in files[::4]])
    assert segment_lungs(volume, "8bit").mean(axis=(1, 2)).min() > 0.05  # 3-D mode: every slice too
