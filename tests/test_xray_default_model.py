"""The bundled default X-ray model: its card, automatic choice for X-ray input, prediction on real X-rays."""

from __future__ import annotations

import json

import numpy as np
import pytest

from chestdx.cli import main
from chestdx.evaluate.metrics import auc_score
from chestdx.io import load_study
from chestdx.io.datasets import ieee8023_xray
from chestdx.io.split import patient_split
from chestdx.models.bundled import WEIGHTS_DIR
from chestdx.models.loading import load_model
from chestdx.outputs.prediction import prediction_record
from chestdx.pipeline import diagnose

XRAY_DIR = WEIGHTS_DIR / "xray-default"


@pytest.fixture(scope="module")
def model():
    if not (XRAY_DIR / "model.pt").is_file():
        pytest.skip("the bundled xray-default model is not installed (run scripts/train_default_xray.py --install)")
    return load_model(kind="xray")


def _real_xrays(shared_data, finding: str) -> list:
    return [r.path for r in ieee8023_xray(shared_data / "ieee8023-cxr-frontal") if r.label == finding]


def test_card_states_classes_limits_and_cv(model):
    card = model.card
    assert model.name == "xray-default" and model.config.name == "detl"
    assert card.classes == ("other-pneumonia", "covid") and card.extra["does_not_know"] == ["normal"]
    assert any("does NOT know normal" in c for c in card.limitations)
    assert any("Research use only" in c for c in card.limitations) and "Research only" in card.intended_use
    cv = card.metrics["cross_validation"].details
    assert cv["folds"] == 5 and len(cv["per_fold"]) == 5 and cv["grouping"].startswith("patient")
    assert set(cv["mean_sd"]) == {"accuracy", "sensitivity", "specificity", "f1", "auc"}
    assert sum(f["n"] for f in cv["per_fold"]) == card.training["data"]["n_images"]
    assert all(sum(map(sum, f["confusion"])) == f["n"] for f in cv["per_fold"])
    assert 0.5 < cv["mean_sd"]["auc"]["mean"] <= 1.0
    assert card.recipe.train["stages"][0]["trainable"] == ["blocks.6", "conv_head", "fc"]
    assert (XRAY_DIR / "model.pt").stat().st_size < 25 * 2**20


def test_predicts_real_xrays(model, shared_data):
    covid, other = _real_xrays(shared_data, "covid"), _real_xrays(shared_data, "other-pneumonia")
    answer = prediction_record(diagnose(load_study(covid[0], kind="xray"), model))
    assert answer["kind"] == "xray" and answer["model"]["name"] == "xray-default"
    assert set(answer["probabilities"]) == {"other-pneumonia", "covid"}
    assert sum(answer["probabilities"].values()) == pytest.approx(1, abs=1e-3)
    # the card's validation AUC is reproduced from the images through the user-facing path (both float32)
    records = [r for r in ieee8023_xray(shared_data / "ieee8023-cxr-frontal") if r.label in model.config.classes]
    val = patient_split(records, fractions=(0.85, 0.15, 0.0), seed=model.card.training["seed"])["val"]
    assert len(val) == model.card.metrics["val"].n
    p = [prediction_record(diagnose(load_study(r.path, kind="xray"), model))["probabilities"]["covid"] for r in val]
    auc = auc_score(np.array([r.label == "covid" for r in val], int), np.array(p))
    assert auc == pytest.approx(model.card.metric("val", "auc").value, abs=0.01)


def test_cli_picks_the_xray_model(model, shared_data, capsys):
    image = _real_xrays(shared_data, "covid")[0]
    assert main(["--quiet", "predict", str(image), "--kind", "xray", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["model"]["name"] == "xray-default" and answer["kind"] == "xray"
    assert set(answer) >= {"kind", "probabilities", "decision", "threshold", "model", "slices_used", "top_slices",
                           "timing_s", "warnings"}
