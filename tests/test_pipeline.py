"""The one diagnosis pipeline: each stage once per command, explanations from the same pass, the model cache."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import chestdx.models.predict as predict_module
import chestdx.pipeline.diagnosis as diagnosis_module
import chestdx.preprocess.pipeline as preprocess_module
from chestdx.cli import main
from chestdx.io import load_study
from chestdx.io.sample import write_sample_series
from chestdx.models.loading import load_model
from chestdx.models.recipes import get_variant
from chestdx.outputs.prediction import prediction_record, prediction_text
from chestdx.pipeline import diagnose, explain


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipeline") / "study"
    write_sample_series(folder, n_slices=30, size=160, progress=False)
    return folder


def _count(monkeypatch, module, name: str) -> list:
    calls = []
    original = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def test_predict_with_explanation_runs_each_stage_once(study_dir, tmp_path, monkeypatch, capsys):
    lungs = _count(monkeypatch, preprocess_module, "segment_lungs")
    prepare = _count(monkeypatch, diagnosis_module, "prepare_study")
    classify = _count(monkeypatch, predict_module, "slice_logits")
    import chestdx.explain.maps as maps

    explained = _count(monkeypatch, maps, "explain_slices")
    assert main(["--quiet", "predict", str(study_dir), "--json", "--explain", "gradcam", "--slices", "2",
                 "--out", str(tmp_path / "maps")]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert (len(lungs), len(prepare), len(classify), len(explained)) == (1, 1, 1, 1)
    assert explained[0][1].shape[0] == 2  # only the explained slices go through the network again
    assert set(answer["timing_s"]) == {"read", "lungs", "preprocess", "classify", "explain_setup", "explain",
                                      "total"}
    assert answer["timing_s"]["total"] == pytest.approx(sum(v for k, v in answer["timing_s"].items() if k != "total"),
                                                        abs=0.01)
    shown = json.loads((tmp_path / "maps" / "explain.json").read_text())
    assert [s["index"] for s in shown["slices"]] == [s["index"] for s in answer["top_slices"][:2]]


def test_explanation_of_another_class_ranks_slices_for_it(study_dir):
    d = diagnose(load_study(study_dir, progress=False), load_model("ct-default"))
    other = [c for c in d.model.config.classes if c != d.decision][0]
    e = explain(d, "cam", n_slices=3, target=other)
    k = d.model.config.classes.index(other)
    best = sorted(d.slice_probs[d.prepared.indices >= 0, k])[::-1][:3]
    np.testing.assert_allclose(sorted(e.slice_scores)[::-1], best)
    assert e.maps.shape == (3,) + d.study.pixels.shape[1:] and d.explanation is e


def test_prediction_record_keeps_its_keys_and_adds_the_limitations(study_dir):
    d = diagnose(load_study(study_dir, progress=False), load_model("ct-default"))
    record = prediction_record(d, top_k=3)
    assert {"kind", "probabilities", "decision", "threshold", "model", "slices_used", "top_slices", "timing_s",
            "warnings"} <= set(record)
    assert set(record["model"]) >= {"name", "recipe", "classes", "trained_on", "val_auc", "temperature", "intended_use"}
    # the card's results by source (the default CT model's), not its {value, ci} entries
    assert record["model"]["val_auc"] is None and record["model"]["test_auc_by_source"]["soares"] == pytest.approx(0.9095, abs=1e-4)
    assert all(isinstance(v, float) for v in record["model"]["val_auc_by_source"].values())
    ucsd = prediction_record(diagnose(d.study, load_model("ct-ucsd")))["model"]
    assert isinstance(ucsd["val_auc"], float) and "val_auc_by_source" not in ucsd  # one pooled figure
    assert record["limitations"] == d.model.card.limitations and record["limitations"]
    text = prediction_text(record)
    assert "research use only" in text and record["limitations"][0] in text


def test_load_model_is_cached_until_the_checkpoint_changes(tmp_path):
    first = load_model("ct-default")
    assert load_model("ct-default") is first
    copy = tmp_path / "model"
    shutil.copytree(first.path, copy)
    a = load_model(copy)
    assert load_model(copy) is a and a is not first
    card = copy / "metadata.json"
    card.write_text(json.dumps({**json.loads(card.read_text()), "threshold": 0.6}))
    os.utime(card, ns=(card.stat().st_atime_ns, card.stat().st_mtime_ns + 10**9))
    b = load_model(copy)
    assert b is not a and b.threshold == 0.6


_KEPT_AFTER_FREE = """
import os, sys
import numpy as np
from chestdx.models.loading import reuse_freed_memory
took = reuse_freed_memory() if sys.argv[1] == "reuse" else None
def resident():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
before = resident()
volume = np.ones((200, 512, 512), np.float32)  # a study's worth of memory (200 MB), then freed
del volume
print(took, (resident() - before) // 2**20)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc settings and /proc: Linux only")
def test_a_worker_keeps_the_memory_a_study_freed_for_the_next():
    def kept_mb(mode: str) -> tuple[str, int]:
        out = subprocess.run([sys.executable, "-c", _KEPT_AFTER_FREE, mode], capture_output=True, text=True, check=True)
        took, kept = out.stdout.split()
        return took, int(kept)

    assert kept_mb("default")[1] < 20  # glibc unmaps a large block when it is freed: the next study faults it in again
    took, kept = kept_mb("reuse")
    assert took == "True" and kept > 180


def test_fingerprint_warns_about_a_study_outside_the_training_data(study_dir):
    import dataclasses

    model = load_model("ct-default")
    outside = dataclasses.replace(model, card=dataclasses.replace(model.card, fingerprint={"study_kinds": ["xray"],
                                                                                           "intensities": ["8bit"]}))
    d = diagnose(load_study(study_dir, progress=False), outside)
    assert any("trained on xray only" in w for w in d.warnings)
    assert any("trained on 8bit images" in w for w in d.warnings)
    # the bundled CT models were trained on 8-bit renderings only: a HU series is said to be outside that
    hu = diagnose(load_study(study_dir, progress=False), model).warnings
    assert [w for w in hu if "trained on" in w] == [
        "this study is hu but ct-default was trained on 8bit images (HU studies are windowed to the lung window "
        "(-600/1500) before the same steps)"]


def test_no_fingerprint_warning_for_a_study_like_the_training_data(shared_data):
    slice_path = shared_data / "ct-mosmed-slices" / "CT-0" / "0010.jpg"
    d = diagnose(load_study(slice_path, kind="ct-slice", progress=False), load_model("ct-default"))
    assert not any("trained on" in w for w in d.warnings)


def test_a_hu_study_is_diagnosed_by_a_model_whose_card_gives_the_spacing_in_words(study_dir):
    model = load_model("ct-default")  # its fingerprint: pixel_spacing_mm "unknown (8-bit images carry no spacing)"
    assert isinstance(model.card.fingerprint["pixel_spacing_mm"], str)
    d = diagnose(load_study(study_dir, progress=False), model)  # a HU DICOM series: was a TypeError
    assert len(d.probabilities) == len(model.config.classes) and abs(float(d.probabilities.sum()) - 1) < 1e-5


def test_ct_ucsd_is_a_variant_that_train_reproduces(monkeypatch, tmp_path):
    variant = get_variant("ct-ucsd")
    shipped = load_model("ct-ucsd").config.to_dict()
    assert shipped["params"].pop("members") == len(variant.seeds) == 3
    assert variant.config.to_dict() == shipped
    seen = {}
    import chestdx.train.run as run

    monkeypatch.setattr(run, "train_command", lambda config, *a, **k: seen.setdefault("config", config) and {})
    assert main(["--quiet", "train", "--variant", "ct-ucsd", "--data", "folder:x", "--out", str(tmp_path)]) == 0
    assert seen["config"].to_dict() == variant.config.to_dict()
    assert main(["--quiet", "train", "--data", "folder:x", "--out", str(tmp_path)]) == 2


def test_predict_quantifies_lesions_and_explains_with_the_segmenter(study_dir, tmp_path, monkeypatch, capsys):
    lungs = _count(monkeypatch, preprocess_module, "segment_lungs")
    assert main(["--quiet", "predict", str(study_dir), "--json", "--quantify", "--quantify-slices", "6",
                 "--explain", "lesion", "--slices", "2", "--out", str(tmp_path / "maps")]) == 0
    answer = json.loads(capsys.readouterr().out)
    q = answer["quantification"]
    assert q["model"] == "lesion-default" and q["chest"]["category"] in {f"CT-{k}" for k in range(5)}
    assert 0 <= q["chest"]["involvement_percent"] <= 100 and 0 <= q["chest"]["severity_score"] <= 30
    assert {"lesions", "explain"} <= set(answer["timing_s"]) and len(lungs) == 1  # the lungs are segmented once
    shown = json.loads((tmp_path / "maps" / "explain.json").read_text())
    assert shown["method"] == "lesion" and len(shown["slices"]) == 2
    # the record says what was explained and where it was written, and where the segmenter found lesions
    assert answer["explanation"]["file"] == str(tmp_path / "maps" / "explain.json")
    assert answer["explanation"]["slices"] == [s["index"] for s in shown["slices"]]
    assert answer["explanation"]["method"] == "lesion" and answer["explanation"]["class"] == answer["decision"]
    assert len(answer["lesions"]["segmented_slices"]) <= 6  # --quantify-slices 6
    assert answer["lesions"]["model"] == "lesion-default" and answer["study"]["shape"][0] == answer["study"]["n_slices"]
    heat = np.load(tmp_path / "maps" / shown["slices"][0]["heatmap"])
    assert heat.shape == (160, 160) and 0 <= heat.min() and heat.max() <= 1


def test_quantification_is_refused_for_an_xray(tmp_path):
    from PIL import Image

    from chestdx.errors import ChestDxError
    from chestdx.pipeline import quantify_lesions

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 128), dtype=np.uint8)).save(tmp_path / "x.png")
    d = diagnose(load_study(tmp_path / "x.png", kind="xray", progress=False), load_model(kind="xray"))
    with pytest.raises(ChestDxError, match="for chest CT"):
        quantify_lesions(d)
