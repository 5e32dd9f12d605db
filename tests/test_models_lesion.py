"""Lesion segmenter: training code on real MedSeg slices, study alignment, CLI, bundled model."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from torch import nn

from chestdx.cli import main
from chestdx.errors import ChestDxError
from chestdx.evaluate.segmentation import dice
from chestdx.io import load_study
from chestdx.io.images import natural_key
from chestdx.io.nifti import read_nifti, write_nifti
from chestdx.io.sample import write_sample_series
from chestdx.io.study import Study
from chestdx.models.bundled import WEIGHTS_DIR
from chestdx.models.lesion import (
    DEFAULT_LESION_MODEL,
    LesionUNet,
    drop_small_lesions,
    export_lesion_onnx,
    lesion_heatmaps,
    lesion_labels,
    load_lesion_model,
    predict_slices,
    save_lesion_model,
    segment_study,
)
from chestdx.models.quantify import quantify
from chestdx.train.segmentation import (
    choose_threshold,
    fit_segmenter,
    pseudo_label,
    read_medseg,
    read_unlabelled,
    score_segmenter,
)


TEST_SLICES = 8
"""MedSeg test slices (the first in natural file order) of the bundled model's sanity check."""


class BrightIsLesion(nn.Module):
    """Stub segmenter: ground-glass where the input is brighter than 0.5, else background."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ggo = 40 * (x - 0.5)
        return torch.cat([torch.zeros_like(x), ggo, torch.full_like(x, -50.0)], 1)


@pytest.fixture
def random_model_dir(tmp_path):
    torch.manual_seed(0)
    return save_lesion_model(LesionUNet(encoder=False).eval(), tmp_path / "lesion-random", size=64,
                             normalise="unit", threshold=0.5)


def phantom() -> tuple[Study, np.ndarray, np.ndarray]:
    """An HU study with two box lungs (-900 HU) in tissue (40 HU) and one lesion square (-100 HU) on slice 2."""
    hu = np.full((4, 96, 96), 40.0, np.float32)
    lungs = np.zeros(hu.shape, bool)
    lungs[:, 20:76, 10:44] = True
    lungs[:, 20:76, 52:86] = True
    hu[lungs] = -900.0
    lesion = np.zeros(hu.shape, bool)
    lesion[2, 40:56, 20:34] = True
    hu[lesion] = -100.0
    study = Study(hu, "hu", spacing=(2.0, 0.8, 0.8), modality="CT", kind="ct-volume")
    return study, lungs, lesion


def test_tiny_segmenter_trains_on_real_slices_and_resumes(shared_data, tmp_path):
    data = read_medseg(shared_data / "medseg-covid-infection", "train")
    assert len(data.names) == 50 and set(np.unique(data.labels[0])) <= {0, 1, 2}
    train, val = data.subset(data.names[:2]), data.subset(data.names[2:3])
    first = fit_segmenter(train, val, tmp_path / "run", encoder=False, size=64, epochs=1, batch_size=2, eval_every=1)
    assert len(first.history) == 1 and np.isfinite(first.history[0]["loss"])
    resumed = fit_segmenter(train, val, tmp_path / "run", encoder=False, size=64, epochs=2, batch_size=2, eval_every=1)
    assert [row["epoch"] for row in resumed.history] == [1, 2]
    assert resumed.history[0] == first.history[0]
    scores = score_segmenter(resumed.net, val, 64)
    assert 0 <= scores["dice"] <= 1 and 0 <= scores["mae"] <= 1
    probs = predict_slices(resumed.net, val.images, 64)
    assert probs[0].shape == (3,) + val.images[0].shape
    assert np.allclose(probs[0].sum(0), 1, atol=1e-4)
    assert 0.2 <= choose_threshold(probs, val) <= 0.8


def test_pseudo_labels_are_the_teachers_and_join_training(shared_data, random_model_dir, tmp_path):
    sirm = sorted((shared_data / "covid-ct-volumes-sirm" / "coronacases_org_001").glob("*.jpg"))[40:43]
    for name, path in zip(("10", "2", "1"), sirm):
        (tmp_path / "unlabelled" / "p1").mkdir(parents=True, exist_ok=True)
        (tmp_path / "unlabelled" / "p1" / f"{name}.jpg").write_bytes(path.read_bytes())
    half = np.zeros((60, 80), np.uint8)
    half[:, 40:] = 220
    Image.fromarray(half).save(tmp_path / "unlabelled" / "half.png")
    slices = read_unlabelled(tmp_path / "unlabelled")
    assert [name for name, _ in slices] == ["p1/1", "p1/2", "p1/10", "half"]  # natural order
    teacher = load_lesion_model(random_model_dir)
    teacher.net = BrightIsLesion()  # ground-glass where the slice is bright
    pseudo = pseudo_label(teacher, slices)
    assert pseudo.names == ["p1/1", "p1/2", "p1/10", "half"]
    assert (pseudo.labels[3][:, 45:] == 1).all() and not pseudo.labels[3][:, :35].any()
    with pytest.raises(ChestDxError, match="no JPG or PNG"):
        read_unlabelled(tmp_path / "run-empty")

    data = read_medseg(shared_data / "medseg-covid-infection", "train")
    train, val = data.subset(data.names[:2]), data.subset(data.names[2:3])
    options = {"encoder": False, "size": 64, "epochs": 1, "batch_size": 2, "eval_every": 1}
    alone = fit_segmenter(train, val, None, **options)
    mixed = fit_segmenter(train, val, tmp_path / "run", pseudo=pseudo, pseudo_per_epoch=2, **options)
    assert np.isfinite(mixed.history[0]["loss"]) and mixed.history[0]["loss"] != alone.history[0]["loss"]
    again = fit_segmenter(train, val, None, pseudo=pseudo, pseudo_per_epoch=2, **options)
    assert again.history[0]["loss"] == mixed.history[0]["loss"]  # seeded: the same draw


def test_lesion_labels_threshold_and_type():
    probs = np.array([[0.9, 0.3, 0.2], [0.05, 0.6, 0.3], [0.05, 0.1, 0.5]], np.float32).reshape(3, 1, 3)
    assert lesion_labels(probs, 0.5).tolist() == [[0, 1, 2]]
    assert lesion_labels(probs, 0.05).tolist() == [[1, 1, 2]]


def test_segment_study_is_aligned_and_kept_inside_the_lungs(random_model_dir):
    study, lungs, lesion = phantom()
    model = load_lesion_model(random_model_dir)
    model.net = BrightIsLesion()
    result = segment_study(study, model, lung_mask=lungs)
    assert result.labels.shape == study.pixels.shape and result.labels.dtype == np.uint8
    # Found where it is, through crop and resize. The stub also marks the bright tissue that the
    # lung mask's dilation lets through, and resizing blurs the lung edge by a pixel: alignment is
    # judged inside the lungs shrunk by two pixels.
    inner = ndimage.binary_erosion(lungs, structure=ndimage.generate_binary_structure(2, 1)[None], iterations=2)
    assert dice((result.labels[2] == 1) & inner[2], lesion[2]) > 0.9
    assert not (result.labels[[0, 1, 3]] & inner[[0, 1, 3]]).any()
    assert not result.labels[:, :12].any() and not result.labels[:, :, :3].any()  # tissue beyond the dilation dropped
    assert result.key_slices(1).tolist() == [2]
    heat = lesion_heatmaps(study, model, [2, 0], lung_mask=lungs)
    assert heat.shape == (2, 96, 96) and heat[0][lesion[2]].mean() > 0.9 and heat[1][inner[0]].max() < 0.1
    q = quantify(result.lung_mask, result.labels, study.spacing)
    assert q["chest"]["lesion_volume"] > 0 and q["chest"]["category"] != "CT-0"


def test_lesions_under_the_minimum_area_are_dropped(random_model_dir):
    labels = np.zeros((2, 12, 12), np.uint8)
    labels[0, 1:3, 1:3] = 1          # 4 pixels
    labels[0, 3, 3] = 2              # touches the first by a corner: one lesion of 5
    labels[0, 6:9, 6:10] = 2         # 12 pixels
    labels[1, 10, 10] = 1            # 1 pixel, another slice
    drop_small_lesions(labels, 6)
    assert labels[0, 6:9, 6:10].all() and labels.sum() == 24 and not labels[1].any()
    again = np.zeros((1, 12, 12), np.uint8)
    again[0, 1:3, 1:3] = again[0, 3, 3] = 1
    drop_small_lesions(again, 5)
    assert again.sum() == 5

    study, lungs, lesion = phantom()  # one 16 x 14 pixel lesion of 0.8 mm pixels: 143 mm2
    model = load_lesion_model(random_model_dir)
    model.net = BrightIsLesion()
    inside = segment_study(study, model, lung_mask=lungs, min_lesion_mm2=100.0).labels
    assert (inside[2][lesion[2]] == 1).mean() > 0.9
    assert not segment_study(study, model, lung_mask=lungs, min_lesion_mm2=200.0).labels[2][lesion[2]].any()


def test_segment_study_with_sampled_slices_fills_the_rest(random_model_dir):
    study, lungs, _ = phantom()
    model = load_lesion_model(random_model_dir)
    model.net = BrightIsLesion()
    result = segment_study(study, model, lung_mask=lungs, max_slices=2)
    assert len(result.segmented) == 2 and result.warnings
    assert result.labels.shape == study.pixels.shape


def test_segment_refuses_xray_and_non_lesion_models(random_model_dir):
    xray = Study(np.zeros((64, 64), np.float32), "8bit", kind="xray")
    with pytest.raises(ChestDxError):
        segment_study(xray, load_lesion_model(random_model_dir))
    with pytest.raises(ChestDxError, match="not a lesion segmenter"):
        load_lesion_model("ct-default")


def test_write_nifti_is_the_inverse_of_read_nifti(tmp_path):
    volume = np.random.default_rng(0).integers(0, 3, (5, 40, 48)).astype(np.uint8)
    path = write_nifti(volume, (2.5, 0.7, 0.6), tmp_path / "labels.nii.gz", z_origin=-30)
    back = read_nifti(path, kind=None, source=str(path))
    assert np.array_equal(back.pixels, volume)
    assert back.spacing == pytest.approx((2.5, 0.7, 0.6))
    assert back.slice_positions[0] == pytest.approx(-30)


def test_segment_cli_writes_an_aligned_nifti(random_model_dir, tmp_path, capsys):
    write_sample_series(tmp_path / "study", n_slices=6, size=96, progress=False)
    out = tmp_path / "out"
    assert main(["--quiet", "segment", str(tmp_path / "study"), "--out", str(out), "--model", str(random_model_dir),
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    study = load_study(tmp_path / "study", progress=False)
    image = nib.load(out / "lesions.nii.gz")
    assert image.shape == study.pixels.shape[::-1]
    assert image.header.get_zooms() == pytest.approx(study.spacing[::-1])
    expected = segment_study(study, load_lesion_model(random_model_dir)).labels
    assert np.array_equal(read_nifti(out / "lesions.nii.gz", kind=None, source="").pixels, expected)
    q = json.loads((out / "quantify.json").read_text())["quantification"]
    assert q == report["quantification"] and q["volume_unit"] == "mL"
    assert q["chest"]["category"] in {"CT-0", "CT-1", "CT-2", "CT-3", "CT-4"}
    assert len(report["files"]["overlays"]) == len(report["key_slices"])


def test_segment_cli_error_for_a_missing_model(tmp_path, capsys):
    write_sample_series(tmp_path / "study", n_slices=2, size=64, progress=False)
    assert main(["segment", str(tmp_path / "study"), "--out", str(tmp_path / "o"), "--model", "no-such-model"]) == 2
    assert "no model" in capsys.readouterr().err


@pytest.mark.skipif(not (WEIGHTS_DIR / DEFAULT_LESION_MODEL / "model.pt").is_file(), reason="lesion-default not bundled")
def test_bundled_model_segments_real_test_slices(shared_data):
    model = load_lesion_model()
    assert model.card.extra["task"] == "lesion-segmentation" and 0 < model.threshold < 1
    assert (WEIGHTS_DIR / DEFAULT_LESION_MODEL / "model.pt").stat().st_size < 25 * 2**20
    root = shared_data / "medseg-covid-infection" / "test"
    network, pipeline = [], []
    for path in sorted((root / "images").glob("*.jpg"), key=natural_key)[:TEST_SLICES]:
        truth = np.asarray(Image.open(root / "infection_mask" / f"{path.stem}.png")) > 127
        image = np.asarray(Image.open(path).convert("L"))
        probs = predict_slices(model.net, [image], model.config.input.size)[0]
        network.append(dice(lesion_labels(probs, model.threshold) > 0, truth))
        result = segment_study(load_study(path, progress=False), model)
        assert result.labels.shape == (1,) + truth.shape
        pipeline.append(dice(result.labels[0] > 0, truth))
    # the benchmark's figures over all 48: 0.746 as given, 0.606 through segment_study (lung mask)
    assert np.mean(network) > 0.7 and np.mean(pipeline) > 0.5


def test_onnx_export_gives_the_same_probabilities(tmp_path):
    torch.manual_seed(0)
    net = LesionUNet(encoder=False).eval()
    folder = save_lesion_model(net, tmp_path / "m", size=64, normalise="unit", threshold=0.5)
    export_lesion_onnx(net, folder, 64)
    model = load_lesion_model(folder)
    assert len(model.sessions) == 1
    slices = [np.random.default_rng(1).integers(0, 256, (50, 70)).astype(np.uint8)]
    with_torch = predict_slices(model.net, slices, 64)[0]
    with_onnx = predict_slices(model.net, slices, 64, session=model.sessions[0])[0]
    assert with_onnx.shape == (3, 50, 70)
    assert np.abs(with_torch - with_onnx).max() < 1e-3
