"""Training loop, checkpoints and prediction on a tiny synthetic dataset (CI-sized)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from chestdx.cli import main
from chestdx.io import load_study
from chestdx.io.datasets import folder_per_class
from chestdx.models.loading import load_model
from chestdx.outputs.prediction import prediction_record
from chestdx.pipeline import diagnose
from chestdx.models.recipes import get_recipe
from chestdx.preprocess.spec import InputSpec
from chestdx.train.loop import fit, stages_of

SIZE = 48


def _write_slices(root, n_per_class: int = 12, seed: int = 0):
    """Class "covid" carries a bright blob in the right half; "non-covid" does not."""
    rng = np.random.default_rng(seed)
    for label in ("covid", "non-covid"):
        (root / label).mkdir(parents=True)
        for i in range(n_per_class):
            img = rng.normal(60, 15, (64, 64))
            if label == "covid":
                y, x = rng.integers(16, 48), rng.integers(36, 56)
                img[y - 6:y + 6, x - 6:x + 6] += 140
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / label / f"p{i:02d}.png")
    return folder_per_class(root)


def _tiny_config(name: str = "residual-attention"):
    config = get_recipe(name, classes=("non-covid", "covid"))
    config.input = InputSpec(window="lung", selection="all", size=SIZE, channels=3, normalise="unit")
    config.train = {**config.train, "epochs": 6, "batch_size": 8, "lr": 3e-3, "patience": 10, "bf16": False,
                    "augment": {"elastic": 0, "blur": 0}}
    return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("slices")
    records = _write_slices(root)
    torch.manual_seed(0)
    out = root.parent / "model"
    result = fit(_tiny_config(), records[::2] + records[1::4], records[1::2], out, seed=0, progress=False, threads=1)
    return result, out, root


def test_fit_learns_and_writes_a_card(trained):
    result, out, _ = trained
    assert (out / "model.pt").is_file() and (out / "metadata.json").is_file()
    card = json.loads((out / "metadata.json").read_text())
    for key in ("name", "recipe", "classes", "input", "threshold", "temperature", "training", "metrics",
                "libraries", "date", "intended_use"):
        assert key in card
    assert card["classes"] == ["non-covid", "covid"]
    assert card["temperature"] > 0
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < losses[0]
    assert card["metrics"]["val"]["auc"]["value"] > 0.8


def test_loaded_checkpoint_predicts_like_the_trained_net(trained):
    result, out, root = trained
    model = load_model(out)
    study = load_study(root / "covid" / "p01.png")
    assert study.kind == "ct-slice"
    answer = prediction_record(diagnose(study, model))
    assert set(answer) >= {"kind", "probabilities", "decision", "model", "slices_used", "top_slices", "timing_s"}
    assert abs(sum(answer["probabilities"].values()) - 1) < 1e-3
    assert answer["decision"] in ("covid", "non-covid")
    json.dumps(answer)


def test_stages_fill_defaults_and_keep_recipe_values():
    config = get_recipe("cnn-bilstm")
    stages = stages_of(config)
    assert [s["unit"] for s in stages] == ["slice", "bag"]
    assert stages[1]["freeze"] == ["cnn"] and stages[0]["optimizer"] == config.train["optimizer"]


def test_cli_predict_json_on_a_slice(trained, capsys):
    _, out, root = trained
    assert main(["--quiet", "predict", str(root / "non-covid" / "p00.png"), "--model", str(out), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["model"]["recipe"] == "residual-attention"


def test_cli_predict_unknown_model_exits_2(tmp_path, capsys):
    img = tmp_path / "s.png"
    Image.fromarray(np.full((64, 64), 80, np.uint8)).save(img)
    assert main(["predict", str(img), "--model", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "no model" in err and "Traceback" not in err


def test_cli_evaluate_json_has_patient_level_cis(trained, capsys, tmp_path):
    _, out, root = trained
    report = tmp_path / "report.html"
    assert main(["--quiet", "evaluate", "--model", str(out), "--data", f"folder:{root}", "--json",
                 "--resamples", "200", "--report", str(report)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["level"] == "patient" and result["n_cases"] == 24
    for key in ("auc", "f1", "sensitivity", "specificity", "accuracy", "kappa"):
        entry = result["metrics"][key]
        assert entry["ci_low"] <= entry["value"] <= entry["ci_high"]
    assert "study" in result["levels"]
    assert 'id="metrics"' in report.read_text()


def test_cli_explain_writes_maps_of_the_stored_slice_size(trained, tmp_path):
    _, out, root = trained
    target = tmp_path / "maps"
    assert main(["--quiet", "explain", str(root / "covid" / "p03.png"), "--model", str(out), "--method", "gradcam",
                 "--out", str(target)]) == 0
    info = json.loads((target / "explain.json").read_text())
    heat = np.load(target / "slice_0000_heatmap.npy")
    assert heat.shape == (64, 64) and heat.dtype == np.float32 and 0 <= heat.min() and heat.max() <= 1
    assert info["method"] == "gradcam" and (target / "slice_0000_overlay.png").is_file()


def test_cli_calibrate_stores_a_validation_operating_point(trained, tmp_path, capsys):
    import shutil

    _, out, root = trained
    copy = tmp_path / "model"
    shutil.copytree(out, copy)
    assert main(["--quiet", "calibrate", "--model", str(copy), "--data", f"folder:{root}", "--split", "",
                 "--target", "specificity=0.9"]) == 0
    written = json.loads(capsys.readouterr().out)
    card = json.loads((copy / "metadata.json").read_text())
    assert card["threshold"] == written["threshold"] and card["temperature"] == written["temperature"] > 0
    assert card["operating_point"] == {"target": "specificity", "value": 0.9, "fitted_on": "folder:" + str(root),
                                       "n_studies": 24}
    assert load_model(copy).threshold == card["threshold"]
    assert main(["calibrate", "--model", str(copy), "--data", f"folder:{root}", "--split", "", "--target", "spec"]) == 2
    assert main(["--quiet", "calibrate", "--model", str(copy), "--data", f"folder:{root}", "--split", "",
                 "--target", "f1"]) == 0
    card = json.loads((copy / "metadata.json").read_text())
    assert card["operating_point"] == {"target": "f1", "fitted_on": "folder:" + str(root), "n_studies": 24}


def test_train_command_cross_validation_reports_mean_and_sd(tmp_path):
    from chestdx.train.run import train_command

    records_root = tmp_path / "slices"
    _write_slices(records_root, n_per_class=6)
    config = _tiny_config()
    config.train = {**config.train, "epochs": 2}
    summary = train_command(config, f"folder:{records_root}", tmp_path / "cv", cv=3, progress=False)
    assert len(summary["folds"]) == 3 and "auc" in summary["mean"] and "auc" in summary["sd"]
    assert all((tmp_path / "cv" / f"fold{k}" / "metadata.json").is_file() for k in (1, 2, 3))
    assert json.loads((tmp_path / "cv" / "cv_summary.json").read_text())["mean"] == summary["mean"]


def test_time_budget_ends_a_stage_inside_its_first_epoch(tmp_path):
    records = _write_slices(tmp_path / "slices", n_per_class=8)
    config = _tiny_config()
    config.train = {**config.train, "epochs": 3, "batch_size": 2, "max_minutes": 1e-9}
    result = fit(config, records, records, None, seed=0, progress=False, threads=1)
    assert len(result.history) == 1  # one partial epoch, validated, then the stage stopped
    assert result.history[0]["samples"] == 2 < len(records)
