"""Slice filters by lung area and the recipes' slice selections, on hand-made masks."""

from __future__ import annotations

import numpy as np

from chestdx.preprocess.select import (
    filter_dre,
    filter_kara,
    filter_min_area,
    lung_area_fraction,
    lung_areas,
    lung_bbox,
    make_groups,
    select_equidistant,
    select_middle,
)


def _mask_with_areas(areas: list[int], width: int = 10) -> np.ndarray:
    """One slice per area: a block of ``area // width`` full rows of ``width`` pixels."""
    mask = np.zeros((len(areas), 20, 20), dtype=bool)
    for z, area in enumerate(areas):
        mask[z, 5 : 5 + area // width, 5 : 5 + width] = True
    return mask


def test_areas_fraction_and_bbox():
    mask = np.zeros((3, 10, 20), dtype=bool)
    mask[0, 2:4, 3:8] = True
    mask[2, 5:9, 10:12] = True
    assert lung_areas(mask).tolist() == [10, 0, 8]
    np.testing.assert_allclose(lung_area_fraction(mask), [10 / 200, 0, 8 / 200])
    assert lung_bbox(mask) == (2, 9, 3, 12)  # exclusive ends: mask[:, 2:9, 3:12] holds every lung pixel
    assert lung_bbox(mask[0]) == (2, 4, 3, 8)
    assert lung_bbox(np.zeros((2, 10, 20), bool)) == (0, 10, 0, 20)


def test_dre_filter_measures_inside_the_lung_bounding_box():
    mask = np.zeros((4, 20, 20), dtype=bool)
    mask[0, 5:15, 5:15] = True  # 100 px: 25% of the image, 100% of the box
    mask[1, 5:11, 5:15] = True  # 60% of the box
    mask[2, 5:9, 5:15] = True  # 40% of the box
    assert filter_dre(mask).tolist() == [True, True, False, False]
    assert (lung_area_fraction(mask) < 0.5).all()  # on the whole image every slice would go


def test_kara_filter_top_and_bottom_thresholds():
    # index 0 = feet; the peak is slice 3; the head side (index > 3) needs 0.4, the feet side 0.9
    mask = _mask_with_areas([0, 30, 80, 100, 90, 50, 30, 10])
    assert filter_kara(mask).tolist() == [False, False, False, True, True, True, False, False]
    assert filter_kara(mask, top=0.4, bottom=0.75).tolist() == [False, False, True, True, True, True, False, False]
    # stored head first: the same anatomy reversed gives the same slices
    reversed_keep = filter_kara(mask[::-1], head_last=False)
    assert reversed_keep[::-1].tolist() == filter_kara(mask).tolist()
    assert not filter_kara(np.zeros((3, 4, 4), bool)).any()


def test_min_area_filter():
    mask = _mask_with_areas([0, 20, 30, 100, 40])
    assert filter_min_area(mask, 0.25).tolist() == [False, False, True, True, True]
    assert filter_min_area(mask, 0.0).tolist() == [False, True, True, True, True]  # never a slice without lung


def test_select_middle():
    assert select_middle(100).tolist() == list(range(25, 75))
    assert select_middle(100, 0.2).tolist() == list(range(40, 60))
    assert select_middle(1).tolist() == [0]
    assert select_middle(3, 0.1).tolist() == [1]
    assert select_middle(0).tolist() == []


def test_select_equidistant():
    assert select_equidistant(100).tolist() == [0, 6, 13, 20, 26, 33, 40, 46, 53, 60, 66, 73, 80, 86, 93]
    assert select_equidistant(15).tolist() == list(range(15))
    assert select_equidistant(5, 10).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert select_equidistant(0).tolist() == []


def test_groups_remainder_up_to_half_is_interpolated():
    groups = make_groups(np.arange(120), 50)  # 50 + 50 + 20: 20 <= 25
    assert len(groups) == 2 and all(len(g) == 50 for g in groups)
    assert groups[0].tolist() == list(range(50))
    last = groups[1]  # slices 50..119 (70) re-sampled down to 50
    assert last[0] == 50 and last[-1] == 119 and (np.diff(last) >= 1).all() and (np.diff(last) <= 2).all()
    assert last.tolist() == np.rint(np.linspace(50, 119, 50)).astype(int).tolist()
    assert -1 not in last


def test_groups_remainder_over_half_is_padded_black():
    groups = make_groups(np.arange(130), 50)  # 30 left: > 25
    assert [len(g) for g in groups] == [50, 50, 50]
    assert groups[2].tolist() == list(range(100, 130)) + [-1] * 20


def test_groups_edge_cases():
    assert [g.tolist() for g in make_groups(np.arange(100), 50)] == [list(range(50)), list(range(50, 100))]
    few = make_groups(np.arange(10), 50)  # no full group, 10 <= 25: stretched to 50
    assert len(few) == 1 and len(few[0]) == 50 and set(few[0].tolist()) == set(range(10))
    assert make_groups(np.arange(40), 50)[0].tolist() == list(range(40)) + [-1] * 10
    assert make_groups(np.array([], dtype=int)) == []
    kept = np.array([3, 4, 7, 9, 12, 13, 15])  # indices of kept slices are carried through
    assert [g.tolist() for g in make_groups(kept, 4)] == [[3, 4, 7, 9], [12, 13, 15, -1]]
    assert [g.tolist() for g in make_groups(kept[:6], 4)] == [[3, 7, 9, 13]]  # 4 + 2 re-sampled to 4


def test_lungs_stacked_votes_by_slice():
    from chestdx.preprocess.select import lungs_stacked

    side_by_side = np.zeros((3, 40, 40), bool)
    side_by_side[:, 10:30, 5:15] = side_by_side[:, 10:30, 25:35] = True
    assert not lungs_stacked(side_by_side)
    assert lungs_stacked(np.rot90(side_by_side, 1, axes=(1, 2)))
    one_lung = np.zeros((40, 40), bool)
    one_lung[5:35, 10:20] = True  # tall, but a single lung: no turn
    assert not lungs_stacked(one_lung)
