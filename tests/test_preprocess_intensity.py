"""HU windows, 8-bit rendering, top-percent clip, CLAHE and ImageNet normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from chestdx.errors import ChestDxError
from chestdx.io.study import Study
from chestdx.preprocess.intensity import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    WINDOWS,
    apply_window,
    clahe,
    clip_top_percent,
    imagenet_normalise,
    render_8bit,
)


def test_window_presets_are_center_width():
    assert WINDOWS == {"lung": (-600, 1500), "mediastinal": (40, 400)}


def test_lung_window_maps_known_hu():
    out = apply_window(np.array([-2048.0, -1350.0, -1000.0, -600.0, 150.0, 3000.0]), "lung")
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0.0, 0.0, 350 / 1500, 0.5, 1.0, 1.0], atol=1e-6)


def test_mediastinal_window_maps_known_hu():
    out = apply_window(np.array([-160.0, 40.0, 140.0, 240.0]), "mediastinal")
    np.testing.assert_allclose(out, [0.0, 0.5, 0.75, 1.0], atol=1e-6)


def test_unknown_window_is_a_user_error():
    with pytest.raises(ChestDxError, match="lung"):
        apply_window(np.zeros(3), "bone")


def test_render_hu_study_uses_the_window():
    study = Study(np.array([[[-1350.0, -600.0], [-1000.0, 400.0]]]), "hu")
    out = render_8bit(study, "lung")
    assert out.dtype == np.uint8 and out.shape == (1, 2, 2)
    assert out.tolist() == [[[0, 128], [60, 255]]]  # 0.5 * 255 = 127.5 -> 128; 0.2333 * 255 = 59.5 -> 60


def test_render_8bit_study_is_not_windowed():
    pixels = np.array([[[0.0, 17.0], [128.4, 255.0]]])
    out = render_8bit(Study(pixels, "8bit"), "mediastinal")
    assert out.tolist() == [[[0, 17], [128, 255]]]


def test_clip_top_percent_clips_the_brightest_half_percent_per_slice():
    ramp = np.arange(1000, dtype=np.float32).reshape(1, 10, 100)
    stack = np.concatenate([ramp, ramp * 0.5 + 100])  # second slice: other range, same ranks
    out = clip_top_percent(stack, 0.5)
    assert out.dtype == np.float32 and out.shape == stack.shape
    for s in out:
        assert s.min() == 0.0 and s.max() == 255.0
        assert (s == 255.0).sum() == 5  # values above the 99.5th percentile (994.005) are clipped
    np.testing.assert_allclose(out[0], out[1], atol=1e-3)
    np.testing.assert_allclose(out[0].ravel()[500], 500 / 994.005 * 255, rtol=1e-4)


def test_clip_top_percent_on_a_real_slice(shared_data):
    import pydicom

    ds = pydicom.dcmread(shared_data / "dicom-ct-two-slices" / "0.dcm")
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    out = clip_top_percent(hu, 0.5)
    assert out.shape == hu.shape and out.min() == 0.0 and out.max() == 255.0
    assert 0.005 <= (out == 255.0).mean() < 0.0055  # the brightest 0.5% (bone), ties at the cut included
    cut = np.percentile(hu, 99.5)
    np.testing.assert_allclose(out[hu == -1000], (-1000 + 2048) / (cut + 2048) * 255, rtol=1e-4)


def test_clahe_raises_local_contrast_and_keeps_uint8():
    rng = np.random.default_rng(0)
    flat = (100 + rng.integers(0, 12, (2, 64, 64))).astype(np.uint8)  # low contrast
    out = clahe(flat)
    assert out.dtype == np.uint8 and out.shape == flat.shape
    assert out.std() > 3 * flat.std()
    single = clahe(flat[0])
    assert single.shape == (64, 64)
    np.testing.assert_array_equal(single, out[0])


def test_clahe_on_a_real_slice(shared_data):
    from PIL import Image

    image = np.asarray(Image.open(shared_data / "cc-ccii-sample/CP/0/3131/0100.png").convert("L"))
    out = clahe(image, clip_limit=0.01)
    lung = image < 100
    assert out.dtype == np.uint8
    assert out[lung].std() > image[lung].std()  # texture inside the dark lungs is spread out


def test_imagenet_normalise_per_channel():
    x = np.random.default_rng(0).random((2, 3, 4, 4)).astype(np.float32)
    out = imagenet_normalise(x)
    assert out.dtype == np.float32 and out.shape == x.shape
    for c in range(3):
        np.testing.assert_allclose(out[:, c], (x[:, c] - IMAGENET_MEAN[c]) / IMAGENET_STD[c], rtol=1e-5)
    grey = imagenet_normalise(np.ones((1, 1, 2, 2)))
    np.testing.assert_allclose(grey, (1 - np.mean(IMAGENET_MEAN)) / np.mean(IMAGENET_STD), rtol=1e-5)
    with pytest.raises(ValueError):
        imagenet_normalise(np.zeros((1, 2, 4, 4)))


# Prediction runs these in NumPy; training ran them through MONAI. They must agree.
def test_numpy_intensity_steps_match_monai():
    from monai.transforms import NormalizeIntensity, ScaleIntensityRange, ScaleIntensityRangePercentiles
    from monai.utils import convert_to_numpy

    from chestdx.preprocess.intensity import IMAGENET_MEAN, IMAGENET_STD, apply_window, clip_top_percent, imagenet_normalise

    rng = np.random.default_rng(0)
    hu = rng.uniform(-2000, 2000, (3, 40, 50)).astype(np.float32)
    expected = convert_to_numpy(ScaleIntensityRange(a_min=-1350.0, a_max=150.0, b_min=0.0, b_max=1.0, clip=True)(hu))
    np.testing.assert_allclose(apply_window(hu, "lung"), expected, atol=1e-6)
    img = rng.uniform(0, 255, (3, 40, 50)).astype(np.float32)
    img[2] = 7.0  # a flat slice: MONAI only shifts it
    expected = convert_to_numpy(ScaleIntensityRangePercentiles(lower=0.0, upper=99.5, b_min=0.0, b_max=255.0, clip=True,
                                                                channel_wise=True)(img))
    np.testing.assert_allclose(clip_top_percent(img, 0.5), expected, atol=1e-3)
    x = rng.uniform(0, 1, (2, 3, 8, 8)).astype(np.float32)
    expected = convert_to_numpy(NormalizeIntensity(subtrahend=IMAGENET_MEAN, divisor=IMAGENET_STD, channel_wise=True)(
        np.ascontiguousarray(x.swapaxes(0, 1)))).swapaxes(0, 1)
    np.testing.assert_allclose(imagenet_normalise(x), expected, atol=1e-6)


@pytest.mark.parametrize("shape", [(2, 512, 512), (2, 300, 417), (2, 100, 150), (1, 224, 224), (2, 513, 97)])
def test_numpy_resize_matches_monai(shape):
    from monai.transforms import Resize, SpatialPad
    from monai.utils import convert_to_numpy

    from chestdx.preprocess.resize import resize_slices

    stack = np.random.default_rng(1).uniform(0, 255, shape).astype(np.float32)
    mode = "area" if max(shape[1:]) >= 224 else "bilinear"
    resized = Resize(224, size_mode="longest", mode=mode)(stack)
    expected = convert_to_numpy(SpatialPad((224, 224), method="symmetric", mode="constant", value=float(stack.min()))(resized))
    np.testing.assert_allclose(resize_slices(stack, 224), expected, atol=5e-3)
    stretched = convert_to_numpy(Resize((224, 224), mode=mode)(stack))
    np.testing.assert_allclose(resize_slices(stack, 224, keep_aspect=False), stretched, atol=5e-3)


def test_lungs_only_blanks_outside_and_equalises_windows():
    from chestdx.preprocess.intensity import lungs_only

    rng = np.random.default_rng(0)
    lungs = np.zeros((1, 64, 64), bool)
    lungs[0, 10:54, 8:30] = lungs[0, 10:54, 34:56] = True
    texture = rng.uniform(0, 1, (1, 64, 64))
    dark = np.where(lungs, 10 + 40 * texture, 200.0)  # one window: dark lungs, bright body
    grey = np.where(lungs, 90 + 20 * texture, 0.0)  # another: mid-grey lungs, black outside (pre-masked)
    a, b = lungs_only(dark, lungs), lungs_only(grey, lungs)
    assert (a[~lungs] == 0).all() and (b[~lungs] == 0).all()
    inner = a > 0
    assert np.abs(a[inner] - b[inner]).max() < 1.0  # same texture, same output whatever the window
    assert a.max() == 255.0
