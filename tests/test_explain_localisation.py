"""Localisation metrics and baselines on hand-made maps and masks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from chestdx.explain.localisation import (
    energy_inside,
    lung_centre_prior,
    peak,
    pixel_auroc,
    pointing_game,
    random_map,
)


def square_mask(shape=(64, 64), box=(10, 20, 30, 40)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    y0, y1, x0, x1 = box
    mask[y0:y1, x0:x1] = True
    return mask


def test_pointing_game_hit_miss_and_tolerance():
    mask = square_mask()
    heat = np.zeros((64, 64))
    heat[15, 35] = 1.0
    assert pointing_game(heat, mask, tolerance_px=0)
    heat = np.zeros((64, 64))
    heat[15, 50] = 1.0  # 11 columns right of the mask's last column (39)
    assert not pointing_game(heat, mask, tolerance_px=10)
    assert pointing_game(heat, mask, tolerance_px=11)


def test_pointing_game_empty_mask_is_an_error():
    with pytest.raises(ValueError, match="empty mask"):
        pointing_game(np.ones((8, 8)), np.zeros((8, 8), dtype=bool))


def test_peak_of_plateau_is_its_centre():
    heat = np.zeros((20, 20))
    heat[4:9, 10:17] = 1.0
    assert peak(heat) == (6, 13)


def test_energy_inside_exact():
    mask = np.array([[True, False], [False, False]])
    heat = np.array([[3.0, 1.0], [0.0, 1.0]])
    assert energy_inside(heat, mask) == pytest.approx(0.6)
    assert math.isnan(energy_inside(np.zeros((2, 2)), mask))


def test_pixel_auroc():
    mask = square_mask()
    assert pixel_auroc(mask.astype(float), mask) == 1.0
    assert pixel_auroc(1.0 - mask, mask) == 0.0
    assert pixel_auroc(random_map(mask.shape, 0), mask) == pytest.approx(0.5, abs=0.05)
    assert math.isnan(pixel_auroc(np.ones((4, 4)), np.zeros((4, 4), dtype=bool)))
    assert math.isnan(pixel_auroc(np.ones((4, 4)), np.ones((4, 4), dtype=bool)))


def test_random_map_seeded():
    a, b = random_map((5, 6), 3), random_map((5, 6), np.random.default_rng(3))
    assert a.shape == (5, 6) and a.dtype == np.float32 and np.array_equal(a, b)
    assert 0.0 <= a.min() and a.max() < 1.0


def test_lung_centre_prior_peaks_at_centroid():
    lungs = square_mask((60, 80), (10, 30, 10, 30)) | square_mask((60, 80), (10, 30, 50, 70))
    prior = lung_centre_prior(lungs)
    assert prior.shape == (60, 80) and prior.dtype == np.float32 and prior.max() == pytest.approx(1.0)
    row, col = np.unravel_index(np.argmax(prior), prior.shape)
    assert abs(row - 19.5) <= 0.5 and abs(col - 39.5) <= 0.5  # the centroid of both lungs
    assert prior[19, 60] < prior[19, 45] < prior[19, 40]
    # The spread follows the lung's extent: 60 px wide, 20 px tall -> wider along x.
    assert prior[19, 40 + 10] > prior[19 + 10, 40]


def test_lung_centre_prior_empty_mask_centres_on_image():
    prior = lung_centre_prior(np.zeros((9, 11), dtype=bool))
    assert np.unravel_index(np.argmax(prior), prior.shape) == (4, 5)


def test_shape_mismatch_rejected():
    with pytest.raises(ValueError, match="differ"):
        energy_inside(np.ones((3, 3)), np.ones((3, 4), dtype=bool))
