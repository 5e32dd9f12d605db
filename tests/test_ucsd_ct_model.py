"""`ct-ucsd`, the UCSD COVID-CT ensemble (the default CT model until 2026-12-07): its card, prediction on a generated
study, pinned predictions on real images."""

from __future__ import annotations

import json

import pytest

from chestdx.cli import main
from chestdx.io import load_study
from chestdx.io.sample import write_sample_series
from chestdx.models.loading import load_model
from chestdx.outputs.prediction import prediction_record
from chestdx.pipeline import diagnose

# P(covid) measured with the bundled weights (float32, ONNX Runtime; 2026-12-02); a change beyond the
# tolerance means the weights, the preprocessing or the inference engine changed.
PINNED = {
    "ucsd-covid-ct/images/CT_COVID/2020.01.24.919183-p27-132.png": 0.9848,
    "ucsd-covid-ct/images/CT_NonCOVID/0.jpg": 0.0092,
    "ucsd-covid-ct/images/CT_NonCOVID/1%0.jpg": 0.1763,
    "dre-net-demo/person001_COVID19": 0.6397,
}


@pytest.fixture(scope="module")
def model():
    return load_model("ct-ucsd")


def test_card_describes_the_model(model):
    card = model.card
    assert card.name == "ct-ucsd" and card.classes == ("non-covid", "covid")
    assert "not for clinical" in card.intended_use.lower() or "research only" in card.intended_use.lower()
    assert 0.5 < card.metric("test", "auc").value <= 1 and card.metric("test", "auc").ci_low is not None
    assert card.recipe.input.window == "lung" and card.recipe.input.size == 224
    assert len(model.sessions) == len(card.members) == 3  # a 3-seed ensemble, one ONNX export per member


def test_predict_on_a_generated_dicom_study(model, tmp_path, capsys):
    write_sample_series(tmp_path / "study", n_slices=40, size=256, progress=False)
    assert main(["--quiet", "predict", str(tmp_path / "study"), "--model", "ct-ucsd", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["kind"] == "ct-volume" and answer["model"]["name"] == "ct-ucsd"
    assert abs(sum(answer["probabilities"].values()) - 1) < 1e-3
    assert 0 < len(answer["slices_used"]) <= 40
    assert {s["index"] for s in answer["top_slices"]} <= set(answer["slices_used"])
    for key in ("read", "preprocess", "classify", "total"):
        assert answer["timing_s"][key] >= 0


@pytest.mark.parametrize("relative", sorted(PINNED))
def test_pinned_predictions_on_real_images(model, shared_data, relative):
    answer = prediction_record(diagnose(load_study(shared_data / relative, progress=False), model))
    assert answer["probabilities"]["covid"] == pytest.approx(PINNED[relative], abs=2e-4)  # unchanged by refactors
