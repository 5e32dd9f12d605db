"""The default CT model `ct-default` (every real CT source, last two stages fine-tuned): its card, the predict path
without --model, pinned predictions on real images."""

from __future__ import annotations

import json

import pytest

from chestdx.cli import main
from chestdx.io import load_study
from chestdx.io.sample import write_sample_series
from chestdx.models.loading import load_model
from chestdx.outputs.prediction import prediction_record
from chestdx.pipeline import diagnose

# P(covid) measured with the bundled weights (float32, ONNX Runtime; 2026-12-07); a change beyond the
# tolerance means the weights, the preprocessing (lungs only, upright) or the inference engine changed.
PINNED = {
    "ct-sars-cov-2-soares/COVID/0100.jpg": 0.9308,
    "ct-sars-cov-2-soares/non-COVID/0100.jpg": 0.2239,
    "ct-mosmed-slices/CT-0/0010.jpg": 0.6006,
    "dre-net-demo/person001_COVID19": 0.2393,
}


@pytest.fixture(scope="module")
def model():
    return load_model("ct-default")


def test_card_says_what_the_model_is(model):
    card = model.card.to_dict()
    assert card["name"] == "ct-default" and card["classes"] == ["non-covid", "covid"]
    assert card["training"]["tail_block"] == 5  # stages 6-7, the head convolution and the classifier were trained
    assert card["recipe"]["name"] == "ai-corona" and len(model.sessions) == 1
    assert card["input"]["lungs_only"] and card["input"]["upright"] and card["input"]["lung_crop"]
    fingerprint = card["fingerprint"]
    assert fingerprint["study_kinds"] == ["ct-volume", "ct-slice"]
    assert fingerprint["modality"] == "CT" and fingerprint["intensities"] == ["8bit"]
    assert set(fingerprint["sources"]) >= {"soares", "mosmed", "cc-ccii-normal", "ucsd", "sirm", "medseg"}
    assert not fingerprint["sources"]["cc-ccii-cp"].get("train") and not fingerprint["sources"]["dre-net"].get("train")
    for source in ("soares", "mosmed", "ucsd"):
        auc = card["metrics"]["test"][source]["auc"]
        assert auc["ci_low"] <= auc["value"] <= auc["ci_high"]
    assert card["training"]["time_to_train"]["total_minutes"] <= 60
    assert card["limitations"] and "research only" in card["intended_use"].lower()


def test_predict_cli_takes_it_for_a_ct_slice_and_a_dicom_study(tmp_path, shared_data, capsys):
    image = shared_data / "ct-mosmed-slices" / "CT-1" / "0010.jpg"
    assert main(["--quiet", "predict", str(image), "--kind", "ct-slice", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["kind"] == "ct-slice" and answer["model"]["name"] == "ct-default"
    assert abs(sum(answer["probabilities"].values()) - 1) < 1e-3
    write_sample_series(tmp_path / "study", n_slices=40, size=256, progress=False)
    assert main(["--quiet", "predict", str(tmp_path / "study"), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["kind"] == "ct-volume" and answer["model"]["name"] == "ct-default"
    assert 0 < len(answer["slices_used"]) <= 40 and {s["index"] for s in answer["top_slices"]} <= set(answer["slices_used"])


@pytest.mark.parametrize("relative", sorted(PINNED))
def test_pinned_predictions_on_real_images(model, shared_data, relative):
    answer = prediction_record(diagnose(load_study(shared_data / relative, progress=False), model))
    assert answer["probabilities"]["covid"] == pytest.approx(PINNED[relative], abs=0.01)
