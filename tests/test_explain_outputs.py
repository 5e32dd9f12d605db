"""Explanation files: names, shapes, explain.json, overlays, and never overwriting the user's files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from chestdx.errors import ChestDxError
from chestdx.outputs.explanations import write_explanations
from chestdx.explain.overlay import figure_grid, overlay_png, overlay_rgb

H0, W0 = 40, 56


def slices_and_maps(n: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    rendered = rng.integers(0, 256, size=(n, H0, W0), dtype=np.uint8)
    maps = rng.random((n, H0, W0)).astype(np.float32)
    return rendered, maps


def write(out, indices=(3, 17), **kwargs):
    rendered, maps = slices_and_maps(len(indices))
    return write_explanations(out, list(indices), rendered, maps, "gradcam", 2, "covid", 0.93, **kwargs), maps


def test_files_named_and_shaped(tmp_path):
    out = tmp_path / "expl"
    path, maps = write(out, extra={"recipe": "ai-corona"})
    assert path == out / "explain.json"
    assert sorted(p.name for p in out.iterdir()) == [
        "explain.json", "slice_0003_heatmap.npy", "slice_0003_overlay.png",
        "slice_0017_heatmap.npy", "slice_0017_overlay.png",
    ]
    heat = np.load(out / "slice_0017_heatmap.npy")
    assert heat.dtype == np.float32 and heat.shape == (H0, W0)
    assert np.array_equal(heat, maps[1])
    with Image.open(out / "slice_0003_overlay.png") as image:
        # the slice at its own size, a caption strip above and a colour bar to the right
        assert image.size[0] > W0 and image.size[1] > H0 and image.mode == "RGB"
    document = json.loads(path.read_text())
    assert document["method"] == "gradcam"
    assert document["target_class"] == {"index": 2, "name": "covid"}
    assert document["probability"] == pytest.approx(0.93)
    assert [s["index"] for s in document["slices"]] == [3, 17]
    assert document["slices"][0]["heatmap"] == "slice_0003_heatmap.npy"
    assert document["slices"][0]["overlay"] == "slice_0003_overlay.png"
    assert document["recipe"] == "ai-corona"


def test_boxes_in_json(tmp_path):
    boxes = [np.array([[1, 2, 10, 20]]), np.zeros((0, 4))]
    path, _ = write(tmp_path / "b", boxes=boxes, box_scores=[np.array([0.8]), np.zeros(0)])
    slices = json.loads(path.read_text())["slices"]
    assert slices[0]["boxes"] == [[1.0, 2.0, 10.0, 20.0]] and slices[0]["box_scores"] == [0.8]
    assert slices[1]["boxes"] == []


def test_rewrite_replaces_previous_outputs(tmp_path):
    out = tmp_path / "expl"
    write(out, indices=(3, 17))
    write(out, indices=(5,))
    assert sorted(p.name for p in out.iterdir()) == ["explain.json", "slice_0005_heatmap.npy", "slice_0005_overlay.png"]


def test_refuses_folder_with_user_files(tmp_path):
    out = tmp_path / "expl"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ChestDxError, match="notes.txt"):
        write(out)
    assert (out / "notes.txt").read_text() == "mine" and len(list(out.iterdir())) == 1


def test_refuses_foreign_explain_json(tmp_path):
    out = tmp_path / "expl"
    out.mkdir()
    (out / "explain.json").write_text('{"mine": true}')
    with pytest.raises(ChestDxError, match="other files"):
        write(out)


def test_refuses_file_as_folder(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(ChestDxError, match="is a file"):
        write(target)


def test_mismatched_inputs_rejected(tmp_path):
    rendered, maps = slices_and_maps(2)
    with pytest.raises(ValueError):
        write_explanations(tmp_path / "x", [1, 1], rendered, maps, "cam", 0, "normal", 0.5)
    with pytest.raises(ValueError):
        write_explanations(tmp_path / "x", [1, 2], rendered, maps[:, :10], "cam", 0, "normal", 0.5)
    assert not (tmp_path / "x").exists()


def test_overlay_blends_heat_outline_and_boxes(tmp_path):
    grey = np.full((32, 32), 100, dtype=np.uint8)
    heat = np.zeros((32, 32), dtype=np.float32)
    heat[:, 16:] = 1.0
    mask = np.zeros((32, 32), dtype=bool)
    mask[8:24, 8:24] = True
    rgb = overlay_rgb(grey, heat, lung_mask=mask, boxes=np.array([[2, 2, 6, 6]]), alpha=0.5)
    assert rgb.shape == (32, 32, 3) and rgb.dtype == np.uint8
    assert rgb[0, 31, 0] > rgb[0, 31, 2]  # hot (red) where the map is 1
    assert tuple(rgb[0, 0]) == (100, 100, 100)  # transparent where it is 0: the slice shows through
    assert tuple(rgb[8, 12]) == (0, 255, 0)  # lung outline
    assert tuple(rgb[2, 4]) == (255, 255, 255)  # box edge
    path = overlay_png(grey, heat, tmp_path / "o.png", title="covid 0.93")
    with Image.open(path) as image:
        assert image.size[0] > 32 and image.size[1] > 32  # colour bar to the right, title above


def test_figure_grid(tmp_path):
    rendered, maps = slices_and_maps(3)
    path = figure_grid(
        list(rendered), list(maps), masks=list(maps > 0.5), titles=["a", "b", "c"], path=tmp_path / "g.png"
    )
    with Image.open(path) as image:
        assert image.size[0] > image.size[1] > 0
