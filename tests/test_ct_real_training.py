"""The real-data CT training script's code on a handful of real slices per source: preparation, cached trunk
maps (all 7 stages frozen, or 5), a tiny tail training that changes only what it should, and a checkpoint that
`chestdx predict` reads the way the cache scored it."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import train_real_ct as script  # noqa: E402

from chestdx.io import load_study  # noqa: E402
from chestdx.models.card import new_card  # noqa: E402
from chestdx.models.checkpoint import export_onnx, save_checkpoint  # noqa: E402
from chestdx.models.loading import load_model  # noqa: E402
from chestdx.outputs.prediction import prediction_record  # noqa: E402
from chestdx.pipeline import diagnose  # noqa: E402
from chestdx.train.cached import Tail, fit_tail  # noqa: E402

SOURCES = {"soares": 4, "mosmed-slices": 4, "ucsd": 4, "cc-ccii-normal": 1}


@pytest.fixture(scope="module")
def cache(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ct-real")
    for source, limit in SOURCES.items():
        script.prepare_source(shared_data, source, out, limit=limit)
        for block in (script.TAIL_BLOCK, 5):
            script.feature_source(out, source, "imagenet", block)
    return out


def test_every_source_is_prepared_alike(cache):
    for source in SOURCES:
        prep = np.load(cache / f"prep-{source}.npz")
        x = prep["x"]
        assert x.dtype == np.uint8 and x.shape[1:] == (224, 224)
        black = (x == 0).mean(axis=(1, 2))
        assert (black > 0.3).all() and (black < 1.0).all(), (source, black)  # lungs only, on black
        assert (x.max(axis=(1, 2)) == 255).all()  # lung intensities stretched: no window left to learn
        maps = np.load(cache / f"feat-imagenet-{source}.npy")
        assert maps.shape == (len(x), 320, 7, 7) and maps.dtype == np.float16
        assert np.load(cache / f"feat-imagenet-b5-{source}.npy").shape == (len(x), 112, 14, 14)  # entering stage 6
    volume = np.load(cache / "prep-cc-ccii-normal.npz")
    assert len(set(volume["study"])) == 1 and len(volume["study"]) > 5  # a CC-CCII scan: its lung slices


@pytest.mark.parametrize("block", [script.TAIL_BLOCK, 5])
def test_tiny_tail_training_gives_a_checkpoint_predict_reads_like_the_cache(cache, shared_data, tmp_path, block):
    table = script.SliceTable(cache, "imagenet", sources=tuple(SOURCES), block=block)
    studies = sorted(table.rows)
    y = np.array([int("COVID" in s or "CT-1" in s or "CT-2" in s) for s in studies])
    assert 0 < y.sum() < len(y)
    rows = [table.rows[s] for s in studies]
    maps = np.concatenate([table.maps[r] for r in rows])
    labels = np.concatenate([[c] * len(r) for c, r in zip(y, rows)])
    config = script.recipe_config("imagenet", epochs=2, block=block)
    config.train["batch_size"] = 8
    net = script.encoder_net("imagenet")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    history = fit_tail(Tail(net, block), config, maps, labels, maps, labels, seed=0)
    changed = {k.split(".")[0] + ("." + k.split(".")[1] if k.startswith("blocks.") else "")
               for k, v in net.state_dict().items() if v.dtype.is_floating_point and not torch.equal(before[k], v)}
    assert len(history) == 2 and changed == {f"blocks.{i}" for i in range(block, 7)} | {"conv_head", "fc"}
    save_checkpoint(net, new_card(config, "tiny-ct-real"), tmp_path / "model")
    export_onnx(net, tmp_path / "model", script.SPEC.size)
    model = load_model(tmp_path / "model")
    assert model.config.input.lungs_only and model.config.input.upright and model.sessions

    slice_path = Path(next(s for s in studies if "ct-sars-cov-2-soares" in s))
    cached = script.study_logits([Tail(model.net, block)], table.maps[table.rows[str(slice_path)]],
                                 np.zeros(len(table.rows[str(slice_path)]), int))
    p_cached = torch.softmax(torch.from_numpy(cached), 1)[0, 1].item()
    answer = prediction_record(diagnose(load_study(slice_path, kind="ct-slice", progress=False), model))
    assert answer["probabilities"]["covid"] == pytest.approx(p_cached, abs=0.02)

    scan = Path(next(s for s in studies if "cc-ccii-normal" in s))
    rows = table.rows[str(scan)]
    cached = script.study_logits([Tail(model.net, block)], table.maps[rows], np.zeros(len(rows), int))
    answer = prediction_record(diagnose(load_study(scan, progress=False), model))
    assert len(answer["slices_used"]) == len(rows)
    assert answer["probabilities"]["covid"] == pytest.approx(torch.softmax(torch.from_numpy(cached), 1)[0, 1].item(),
                                                             abs=0.02)


def test_splits_keep_patients_and_external_sets_apart(shared_data):
    parts = script.split_sources(script.source_records(shared_data), seed=0)
    assert not parts["cc-ccii-cp"]["train"] and not parts["dre-net"]["train"]  # the real-volume check only
    assert {r.split for r in parts["ucsd"]["test"]} == {"test"}
    for source, splits in parts.items():
        if source == "ucsd":  # its official split, kept for comparison with published results
            continue
        sides = [{r.patient_id for r in splits[s]} for s in ("train", "val", "test")]
        assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2]), source
    assert len(parts["sirm"]["test"]) >= 5  # volumes held out of training for the real-volume check
