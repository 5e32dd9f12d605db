"""Lesion quantification on synthetic masks with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from chestdx.models.quantify import ct_category, quantify, split_lungs, zone_score


def two_lungs(z: int = 30) -> np.ndarray:
    """Two separate box lungs: image columns 10-29 (right lung) and 50-69 (left lung), 20x20 pixels each."""
    lung = np.zeros((z, 40, 80), dtype=bool)
    lung[:, 10:30, 10:30] = True
    lung[:, 10:30, 50:70] = True
    return lung


def test_volumes_from_spacing_and_involvement():
    lung = two_lungs()
    labels = np.zeros(lung.shape, np.uint8)
    labels[:, 10:20, 10:30] = 1  # half of the right lung ground-glass
    labels[:, 10:15, 50:70] = 2  # a quarter of the left lung consolidated
    q = quantify(lung, labels, spacing=(2.0, 0.5, 0.5))
    voxel_ml = 2.0 * 0.5 * 0.5 / 1000
    assert q["volume_unit"] == "mL"
    assert q["right_lung"]["lung_volume"] == pytest.approx(30 * 400 * voxel_ml)
    assert q["right_lung"]["involvement_percent"] == pytest.approx(50.0)
    assert q["right_lung"]["ground_glass_share_percent"] == pytest.approx(100.0)
    assert q["left_lung"]["involvement_percent"] == pytest.approx(25.0)
    assert q["left_lung"]["consolidation_share_percent"] == pytest.approx(100.0)
    assert q["chest"]["lesion_volume"] == pytest.approx(30 * 300 * voxel_ml)
    assert q["chest"]["involvement_percent"] == pytest.approx(37.5)
    assert q["chest"]["ground_glass_share_percent"] == pytest.approx(200 / 3, abs=0.01)
    assert q["chest"]["category"] == "CT-2"
    assert q["lung_split"] == "components"
    # Every zone of the right lung 50% -> 4, of the left 25% -> 3: total 3 * 4 + 3 * 3.
    assert [z["score"] for z in q["right_lung"]["zones"].values()] == [4, 4, 4]
    assert q["right_lung"]["score"] == 12 and q["left_lung"]["score"] == 9
    assert q["chest"]["severity_score"] == 21


def test_zones_are_thirds_with_upper_at_the_head_end():
    lung = two_lungs(z=30)
    labels = np.zeros(lung.shape, np.uint8)
    labels[25:30, 10:30, 10:30] = 1  # the top 5 of the right lung's 30 slices: half its upper third
    q = quantify(lung, labels, spacing=(1.0, 1.0, 1.0))
    zones = q["right_lung"]["zones"]
    assert zones["upper"]["slices"] == [20, 29] and zones["lower"]["slices"] == [0, 9]
    assert zones["upper"]["involvement_percent"] == pytest.approx(50.0)
    assert (zones["middle"]["score"], zones["lower"]["score"]) == (0, 0)
    assert zones["upper"]["score"] == 4
    assert q["left_lung"]["score"] == 0


def test_no_spacing_counts_voxels_and_says_so():
    lung = two_lungs(z=2)
    labels = np.zeros(lung.shape, np.uint8)
    labels[0, 10:12, 10:12] = 2
    q = quantify(lung, labels, spacing=None)
    assert q["volume_unit"] == "voxels" and q["spacing_mm"] is None
    assert q["chest"]["lung_volume"] == 2 * 800
    assert q["chest"]["lesion_volume"] == 4


def test_no_lesion_is_ct0_and_tiny_lesion_is_ct1():
    lung = two_lungs(z=10)
    labels = np.zeros(lung.shape, np.uint8)
    assert quantify(lung, labels, (1, 1, 1))["chest"]["category"] == "CT-0"
    labels[5, 15, 15] = 1  # one voxel in 8000
    q = quantify(lung, labels, (1, 1, 1))
    assert q["chest"]["category"] == "CT-1"
    assert q["chest"]["severity_score"] == 1
    assert q["chest"]["ground_glass_share_percent"] == 100.0


@pytest.mark.parametrize("percent, score", [(0, 0), (0.01, 1), (4.99, 1), (5, 2), (24.9, 2), (25, 3), (49.9, 3),
                                            (50, 4), (74.9, 4), (75, 5), (100, 5)])
def test_zone_score_edges(percent, score):
    assert zone_score(percent) == score


@pytest.mark.parametrize("percent, category", [(0, "CT-0"), (0.001, "CT-1"), (24.99, "CT-1"), (25, "CT-2"),
                                               (50, "CT-3"), (74.99, "CT-3"), (75, "CT-4"), (100, "CT-4")])
def test_category_edges(percent, category):
    assert ct_category(percent) == category


def test_touching_lungs_split_by_midline():
    lung = np.zeros((4, 20, 40), dtype=bool)
    lung[:, 5:15, 5:35] = True  # one block across the midline (x 5..34, midline 19.5)
    right, left, method = split_lungs(lung)
    assert method == "midline"
    assert right.sum() == left.sum() == 4 * 10 * 15
    assert right[:, 5:15, 5:20].all() and not right[:, :, 20:].any()


def test_lesion_outside_the_lung_mask_counts_as_lung():
    lung = two_lungs(z=4)
    labels = np.zeros(lung.shape, np.uint8)
    labels[:, 30:32, 10:30] = 2  # dense consolidation just below the right lung's mask
    q = quantify(lung, labels, (1, 1, 1))
    assert q["right_lung"]["lung_volume"] == pytest.approx(4 * (400 + 40) / 1000)
    assert q["chest"]["involvement_percent"] <= 100
    assert q["right_lung"]["involvement_percent"] == pytest.approx(100 * 40 / 440, abs=1e-3)
