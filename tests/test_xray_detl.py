"""DETL: backbones, source-weight transfer, real freezing in the target stage, a tiny two-stage run."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from chestdx.errors import ChestDxError
from chestdx.io import load_study
from chestdx.io.datasets import csv_list
from chestdx.models.loading import load_model
from chestdx.outputs.prediction import prediction_record
from chestdx.pipeline import diagnose
from chestdx.models.recipes.detl import TARGET_TRAINABLE, detl_config
from chestdx.models.recipes import build_model, get_recipe
from chestdx.preprocess.spec import InputSpec
from chestdx.train.loop import fit
from chestdx.train.run import train_command

SIZE = 32
CLASSES = ("other-pneumonia", "covid")


def _write_xrays(root, labels: dict[str, int], seed: int = 0, prefix: str = "") -> str:
    """Write PNGs and a ``list.csv``; every class but the first carries a bright blob (one image per patient).

    Returns:
        The path of the CSV.
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = ["path,label,patient_id"]
    for c, (label, n) in enumerate(labels.items()):
        for i in range(n):
            img = rng.normal(90, 12, (48, 40))
            if c:
                y, x = rng.integers(12, 36), rng.integers(10, 30)
                img[y - 6:y + 6, x - 6:x + 6] += 120
            name = f"{label}_{i:02d}.png"
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / name)
            rows.append(f"{name},{label},{prefix}{label}{i}")
    (root / "list.csv").write_text("\n".join(rows) + "\n")
    return str(root / "list.csv")


def _tiny(config, epochs: int = 2, lr: float | None = None):
    config.input = InputSpec(window="lung", selection="all", size=SIZE, channels=3, normalise="imagenet")
    config.train["batch_size"] = 8
    config.train["bf16"] = False
    config.train["augment"] = {"elastic": 0, "blur": 0}
    config.train["source"] = {**config.train["source"], "epochs": 3, "lr": 3e-3}
    config.train["stages"] = [{**s, "epochs": epochs, **({"lr": lr} if lr else {})} for s in config.train["stages"]]
    return config


def _trainable(name: str, prefixes) -> bool:
    return any(name.startswith(p) for p in prefixes)


def test_default_recipe_is_the_paper_setting():
    config = get_recipe("detl")
    assert config.classes == ("normal", "pneumonia", "other-disease", "covid")
    assert config.unit == "slice" and config.aggregator == "mean-prob" and config.input.size == 224
    (stage,) = config.train["stages"]
    assert stage["trainable"] == ["blocks.6", "conv_head", "fc"]
    assert (stage["optimizer"], stage["lr"], stage["momentum"]) == ("sgd", 1e-4, 0.9)
    assert config.train["source"]["freeze"] == []


@pytest.mark.parametrize("backbone", sorted(TARGET_TRAINABLE))
def test_target_stage_trains_only_the_last_block_and_head(tmp_path, backbone):
    """Source weights reach every layer but the head; a target fit leaves every frozen tensor unchanged
    (batch-norm running statistics included)."""
    source_cfg = _tiny(detl_config(backbone, classes=("normal", "disease", "x")))
    source_cfg.params["pretrained"] = False
    torch.manual_seed(1)
    source_net = build_model(source_cfg)
    torch.save(source_net.state_dict(), tmp_path / "model.pt")
    source_state = source_net.state_dict()

    config = _tiny(detl_config(backbone, classes=CLASSES), epochs=2, lr=1e-2)
    config.params["source_weights"] = str(tmp_path / "model.pt")
    before = build_model(config).state_dict()
    assert before["fc.weight"].shape[0] == 2 and source_state["fc.weight"].shape[0] == 3
    for key, value in before.items():
        if not key.startswith("fc."):
            assert torch.equal(value, source_state[key]), key

    records = csv_list(_write_xrays(tmp_path / "data", {"other-pneumonia": 8, "covid": 8}))
    after = fit(config, records, records[::2], seed=0, progress=False, threads=1).net.state_dict()
    prefixes = TARGET_TRAINABLE[backbone]
    frozen = [k for k in before if not _trainable(k, prefixes)]
    trained = [k for k in before if _trainable(k, prefixes) and before[k].is_floating_point()]
    assert frozen and trained
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(k.endswith("running_mean") for k in frozen)
    changed = [k for k in trained if not torch.equal(before[k], after[k])]
    assert "fc.weight" in changed and any(not k.startswith("fc.") for k in changed)


def test_mismatched_backbone_and_stage_refused(tmp_path):
    config = detl_config("alexnet", classes=CLASSES)
    config.train["stages"][0]["trainable"] = TARGET_TRAINABLE["lite0"]
    with pytest.raises(ChestDxError, match=r"does not have: build the config with detl_config\('alexnet'\)"):
        build_model(config)
    vgg = detl_config("vgg", classes=CLASSES)
    torch.save(build_model(vgg).state_dict(), tmp_path / "model.pt")
    resnet = detl_config("resnet", classes=CLASSES)
    resnet.params["source_weights"] = str(tmp_path)
    with pytest.raises(ChestDxError, match="do not fit this backbone"):
        build_model(resnet)


def test_two_stage_train_command(tmp_path):
    """Source (normal vs disease) then target through `train_command`: frozen layers are the source's weights."""
    source = _write_xrays(tmp_path / "source", {"normal": 12, "Effusion": 6, "Mass": 6}, seed=1, prefix="s")
    target = _write_xrays(tmp_path / "target", {"other-pneumonia": 8, "covid": 8}, seed=2)
    config = _tiny(detl_config("resnet", classes=CLASSES), epochs=2, lr=1e-2)
    out = tmp_path / "run"
    summary = train_command(config, f"csv:{target}", out, source_spec=f"csv:{source}", seed=0, progress=False)

    source_card = json.loads((out / "source" / "metadata.json").read_text())
    assert source_card["classes"] == ["normal", "disease"] and source_card["name"] == "detl-source"
    assert source_card["training"]["stages"][0]["freeze"] == []
    assert source_card["metrics"]["val"]["auc"]["value"] >= 0.8  # the blob separates normal from disease

    card = json.loads((out / "metadata.json").read_text())
    assert card["classes"] == list(CLASSES)
    assert card["recipe"]["params"]["source_weights"] == str((out / "source" / "model.pt").resolve())
    assert card["training"]["data"]["source"] == f"csv:{source}"
    assert [row["stage"] for row in summary["history"]] == ["target"] * 2

    src = torch.load(out / "source" / "model.pt", weights_only=True)
    final = torch.load(out / "model.pt", weights_only=True)
    prefixes = TARGET_TRAINABLE["resnet"]
    assert all(torch.equal(src[k], final[k]) for k in src if not _trainable(k, prefixes))
    assert any(not torch.equal(src[k], final[k]) for k in src if k.startswith("blocks.4") and k.endswith("weight"))

    shutil.rmtree(out / "source")  # the final checkpoint stands alone
    model = load_model(out)
    answer = prediction_record(diagnose(load_study(tmp_path / "target" / "covid_00.png", kind="xray"), model))
    assert answer["kind"] == "xray" and set(answer["probabilities"]) == set(CLASSES)
    assert sum(answer["probabilities"].values()) == pytest.approx(1, abs=1e-3)
