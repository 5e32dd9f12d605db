"""The bundled default X-ray model: its card, automatic choice for X-ray input, prediction on real X-rays."""

from __future__ import annotations

import json

import numpy as np
import pytest

from chestdx.cli import main
from chestdx.io import load_study
from chestdx.io.datasets import covid19_radiography, nih_pneumonia
from chestdx.models.checkpoint import BUNDLED_DIR, load_model
from chestdx.models.predict import predict_study

XRAY_DIR = BUNDLED_DIR / "xray-default"
CLASSES = ["normal", "other-pneumonia", "covid-19"]


@pytest.fixture(scope="module")
def model():
    if not (XRAY_DIR / "model.pt").is_file():
        pytest.skip("the bundled xray-default model is not installed (run scripts/train_default_xray.py --install)")
    return load_model(kind="xray")


def test_card_states_classes_sources_fingerprint_and_checks(model):
    card = model.card
    assert model.name == "xray-default" and model.config.name == "detl"
    assert card["classes"] == CLASSES
    assert card["recipe"]["train"]["stages"][0]["trainable"] == ["blocks.6", "conv_head", "fc"]
    fingerprint = card["fingerprint"]
    assert fingerprint["age_group"] == "adult" and "X-ray" in fingerprint["modality"]
    assert "8-bit" in fingerprint["intensity"]
    assert set(fingerprint["sources"]) == {"covid19-radiography", "ieee8023", "nih"}
    assert fingerprint["sources"]["nih"]["other-pneumonia"] > 300
    metrics = card["metrics"]
    assert set(metrics["per_source_test"]) == {"covid19-radiography", "ieee8023", "nih"}
    assert metrics["per_source_test"]["nih"]["n"].get("covid-19", 0) == 0
    shortcuts = metrics["shortcuts"]
    assert set(shortcuts["leave_one_source_out"]) == {"ieee8023", "covid19-radiography"}
    assert 0 <= shortcuts["source_classifier"]["all"]["balanced_accuracy"] <= 1
    assert set(shortcuts["lungs_blanked"]["mean_probabilities"]) == set(CLASSES)
    assert set(metrics["kermany"]["n"]) == {"normal", "other-pneumonia"}
    for name in ("macro_auc", "covid_sensitivity", "covid_specificity"):
        entry = metrics["test_ci"][name]
        assert entry["ci_low"] <= entry["value"] <= entry["ci_high"]
    assert len(card["training"]["seeds"]) == 3 and metrics["test_mean_sd_over_seeds"]["macro_auc"]["sd"] is not None
    assert any("Adults only" in c for c in card["caveats"]) and "Research only" in card["intended_use"]
    assert (XRAY_DIR / "model.pt").stat().st_size < 25 * 2**20


def test_predicts_real_xrays(model, shared_data):
    covid = [r.path for r in covid19_radiography(shared_data / "xray-covid19-radiography") if r.label == "covid-19"]
    normal = [r.path for r in nih_pneumonia(shared_data / "xray-nih-pneumonia") if r.label == "normal"]
    answers = [predict_study(load_study(p, kind="xray"), model) for p in covid[:6] + normal[:6]]
    assert all(a["kind"] == "xray" and a["model"]["name"] == "xray-default" for a in answers)
    assert all(set(a["probabilities"]) == set(CLASSES) for a in answers)
    assert all(sum(a["probabilities"].values()) == pytest.approx(1, abs=1e-3) for a in answers)
    p_covid = np.array([a["probabilities"]["covid-19"] for a in answers])
    assert p_covid[:6].mean() > p_covid[6:].mean() + 0.3  # COVID-19 films score far above normal films


def test_cli_picks_the_xray_model(model, shared_data, capsys):
    image = next(r.path for r in covid19_radiography(shared_data / "xray-covid19-radiography"))
    assert main(["--quiet", "predict", str(image), "--kind", "xray", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["model"]["name"] == "xray-default" and answer["kind"] == "xray"
    assert set(answer) >= {"kind", "probabilities", "decision", "threshold", "model", "slices_used", "top_slices",
                           "timing_s", "warnings"}
    assert answer["decision"] in CLASSES
