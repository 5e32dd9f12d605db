"""Deep ensembles of ai-corona checkpoints: assembly, the logits they give, ONNX, explanations, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from chestdx.cli import main
from chestdx.errors import ChestDxError
from chestdx.explain.maps import explain_slices
from chestdx.models.card import new_card
from chestdx.models.checkpoint import assemble_ensemble, export_onnx, save_checkpoint
from chestdx.models.loading import load_model
from chestdx.models.predict import slice_logits, study_probabilities
from chestdx.models.recipes import build_model, get_recipe
from chestdx.preprocess.pipeline import PreparedStudy
from chestdx.preprocess.spec import InputSpec

SIZE = 64


def _member(folder, seed: int, size: int = SIZE):
    """An untrained ai-corona Lite0 checkpoint whose weights depend on ``seed``."""
    config = get_recipe("ai-corona", classes=("non-covid", "covid"), unit="slice",
                        input=InputSpec(window="lung", selection="all", size=size, normalise="imagenet"))
    config.params = {**config.params, "pretrained": False}
    torch.manual_seed(seed)
    net = build_model(config).eval()
    with torch.no_grad():  # BatchNorm statistics away from identity, so that members differ in eval mode
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    card = new_card(config, f"member-{seed}", training={"seed": seed, "seconds": 60.0}, metrics={"val": {"auc": 0.6}})
    save_checkpoint(net, card, folder)
    return net


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory):
    root = tmp_path_factory.mktemp("ensemble")
    nets = [_member(root / f"m{s}", s) for s in range(3)]
    out = assemble_ensemble([root / f"m{s}" for s in range(3)], root / "ens")
    return nets, out, root


def _slices(n: int = 5) -> np.ndarray:
    return np.random.default_rng(0).normal(0, 1, (n, 3, SIZE, SIZE)).astype(np.float32)


def test_ensemble_logits_are_the_mean_of_its_members(ensemble):
    nets, out, _ = ensemble
    model = load_model(out)
    assert model.config.params["members"] == 3 and not model.sessions
    x = torch.from_numpy(_slices())
    with torch.no_grad():
        expected = torch.stack([n(x) for n in nets]).mean(0)
        got = model.net(x)
        features = model.net.encode(x)
    # Weights are stored in fp16: equal to the members' within fp16 rounding.
    assert torch.allclose(got, expected, atol=2e-2)
    assert features.shape == (5, 3 * 1280)
    assert not torch.allclose(nets[0](x), nets[1](x), atol=1e-3)  # the members really differ


def test_card_lists_members_and_sums_training_time(ensemble):
    _, out, root = ensemble
    card = json.loads((out / "metadata.json").read_text())
    assert [m["seed"] for m in card["members"]] == [0, 1, 2]
    assert card["training"]["seconds"] == 180.0 and card["name"] == "ens"
    assert (out / "model.pt").stat().st_size < 0.6 * 3 * (root / "m0" / "model.pt").stat().st_size  # fp16


def test_onnx_per_member_predicts_like_torch(ensemble, tmp_path):
    import shutil

    _, out, _ = ensemble
    copy = tmp_path / "ens"
    shutil.copytree(out, copy)
    torch_model = load_model(copy)
    files = export_onnx(torch_model.net, copy, SIZE)
    assert [f.name for f in files] == ["model-0.onnx", "model-1.onnx", "model-2.onnx"]
    assert not any(m.training for m in torch_model.net.modules())  # export leaves the network in eval mode
    onnx_model = load_model(copy)
    assert len(onnx_model.sessions) == 3
    x = _slices()
    (lt, ft), (lo, fo) = slice_logits(torch_model, x), slice_logits(onnx_model, x)
    assert np.allclose(lt, lo, atol=1e-4) and np.allclose(ft, fo, atol=1e-4)
    prepared = PreparedStudy(x=x, indices=np.arange(len(x)), rendered=np.zeros((len(x), SIZE, SIZE), np.uint8))
    assert np.allclose(study_probabilities(torch_model, prepared)[0], study_probabilities(onnx_model, prepared)[0],
                       atol=1e-5)


@pytest.mark.parametrize("method", ["cam", "gradcam"])
def test_explanations_run_on_all_members_feature_maps(ensemble, method):
    _, out, _ = ensemble
    result = explain_slices(load_model(out).net, _slices(2), method, target_class=1)
    assert result.maps.shape == (2, SIZE, SIZE) and np.isfinite(result.maps).all()


def test_members_that_differ_are_refused(ensemble, tmp_path):
    _, _, root = ensemble
    _member(tmp_path / "other", 9, size=96)
    with pytest.raises(ChestDxError, match="same classes, input"):
        assemble_ensemble([root / "m0", tmp_path / "other"], tmp_path / "bad")
    with pytest.raises(ChestDxError, match="at least two"):
        assemble_ensemble([root / "m0"], tmp_path / "bad")
    with pytest.raises(ChestDxError, match="ensemble already"):
        assemble_ensemble([root / "ens", root / "ens"], tmp_path / "bad")


def test_cli_ensemble_writes_a_loadable_model(ensemble, tmp_path, capsys):
    _, _, root = ensemble
    assert main(["--quiet", "ensemble", str(root / "m0"), str(root / "m1"), "--out", str(tmp_path / "e2")]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["members"] == 2 and answer["onnx"] == ["model-0.onnx", "model-1.onnx"]
    assert len(load_model(tmp_path / "e2").sessions) == 2
    assert main(["--quiet", "ensemble", str(root / "m0"), "--out", str(tmp_path / "e3")]) == 2
