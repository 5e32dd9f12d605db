"""Accuracy ingredients of training: JPEG re-encoding, random resized crop, mixup, EMA,
knowledge distillation, bf16 only where native, MoCo v2 pre-training and loading its encoder."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from chestdx.errors import ChestDxError
from chestdx.models.networks.efficientnet import EfficientNetClassifier
from chestdx.train.augment import RandJPEG, augment_batch, slice_augmenter
from chestdx.train.contrastive import MoCo, pretrain_moco
from chestdx.train.loop import fit, mixup_loss, native_bf16, stages_of


def _smooth_slice(size: int = 64) -> torch.Tensor:
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = 0.5 + 0.3 * np.sin(6 * xx) * np.cos(4 * yy)
    return torch.from_numpy(np.repeat(img[None], 3, 0).astype(np.float32))


def test_jpeg_reencoding_keeps_the_image_but_changes_its_bytes():
    x = _smooth_slice()
    out = RandJPEG(prob=1.0, quality=(30, 30))(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    diff = (out - x).abs()
    assert 0 < diff.mean() < 0.02  # compression artefacts, not a different image
    assert torch.equal(out[0], out[2])  # grey stays grey in every channel
    assert torch.equal(RandJPEG(prob=0.0)(x), x)


def test_jpeg_quality_is_drawn_from_the_seeded_range():
    t = RandJPEG(prob=1.0, quality=(40, 95))
    t.set_random_state(seed=3)
    qualities = []
    for _ in range(20):
        t.randomize()
        qualities.append(t._q)
    assert min(qualities) >= 40 and max(qualities) <= 95 and len(set(qualities)) > 5


def test_random_resized_crop_and_jpeg_keep_the_batch_shape_and_range():
    augmenter = slice_augmenter(64, {"crop_scale": 0.5, "jpeg": 1.0}, seed=0)
    batch = torch.stack([_smooth_slice(), _smooth_slice()])
    out = augment_batch(batch, augmenter)
    assert out.shape == batch.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    assert not torch.allclose(out, batch)


def test_mixup_loss_without_mixing_is_cross_entropy_with_label_smoothing():
    torch.manual_seed(0)
    net = torch.nn.Linear(5, 3)
    x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
    rng = np.random.default_rng(0)
    loss = mixup_loss(net, x, y, 3, 0.0, 0.1, rng, bf16=False)
    assert torch.allclose(loss, F.cross_entropy(net(x), y, label_smoothing=0.1), atol=1e-6)


def test_mixup_of_identical_samples_changes_nothing_and_mixes_otherwise():
    torch.manual_seed(0)
    net = torch.nn.Linear(5, 2)
    x, y = torch.randn(1, 5).repeat(6, 1), torch.ones(6, dtype=torch.long)
    same = mixup_loss(net, x, y, 2, 0.4, 0.0, np.random.default_rng(1), bf16=False)
    assert torch.allclose(same, F.cross_entropy(net(x), y), atol=1e-6)
    x2, y2 = torch.randn(6, 5), torch.tensor([0, 1, 0, 1, 0, 1])
    mixed = mixup_loss(net, x2, y2, 2, 0.4, 0.0, np.random.default_rng(1), bf16=False)
    assert not torch.allclose(mixed, F.cross_entropy(net(x2), y2))


def test_distillation_from_a_copy_of_the_student_leaves_only_the_label_term():
    torch.manual_seed(0)
    net = torch.nn.Linear(5, 2)
    x, y = torch.randn(8, 5), torch.randint(0, 2, (8,))
    rng = np.random.default_rng(0)
    loss = mixup_loss(net, x, y, 2, 0.0, 0.0, rng, False, teacher=net, distil={"weight": 0.3, "temperature": 2.0})
    assert torch.allclose(loss, 0.7 * F.cross_entropy(net(x), y), atol=1e-6)


def test_distillation_term_is_the_softened_kl_to_the_teacher_and_trains_only_the_student():
    torch.manual_seed(0)
    student, teacher = torch.nn.Linear(5, 2), torch.nn.Linear(5, 2)
    x, y = torch.randn(8, 5), torch.randint(0, 2, (8,))
    loss = mixup_loss(student, x, y, 2, 0.0, 0.0, np.random.default_rng(0), False, teacher=teacher,
                      distil={"weight": 1.0, "temperature": 3.0})
    p_t = F.softmax(teacher(x) / 3, 1)
    expected = 9 * torch.sum(p_t * (torch.log(p_t) - F.log_softmax(student(x) / 3, 1)), 1).mean()
    assert torch.allclose(loss, expected, atol=1e-6) and loss > 0
    loss.backward()
    assert student.weight.grad is not None and teacher.weight.grad is None


def test_fit_distils_from_a_saved_teacher_and_refuses_one_of_other_input(tmp_path):
    from tests.test_train_predict import _tiny_config, _write_slices

    records = _write_slices(tmp_path / "s", n_per_class=4)
    teacher_config = _tiny_config()
    teacher_config.train = {**teacher_config.train, "epochs": 1}
    fit(teacher_config, records, records, tmp_path / "teacher", seed=0, progress=False, threads=1)
    plain, student = _tiny_config(), _tiny_config()
    for config in (plain, student):
        config.train = {**config.train, "epochs": 1}
    student.train["distil"] = {"teacher": str(tmp_path / "teacher"), "weight": 0.5, "temperature": 2.0}
    a = fit(plain, records, records, None, seed=0, progress=False, threads=1)
    b = fit(student, records, records, None, seed=0, progress=False, threads=1)
    assert a.history[0]["train_loss"] != b.history[0]["train_loss"]
    assert b.card.training["stages"][0]["distil"]["teacher"] == str(tmp_path / "teacher")
    teacher_card = json.loads((tmp_path / "teacher" / "metadata.json").read_text())
    assert b.card.training["teachers"]["stage1"]["date"] == teacher_card["date"]
    assert "teachers" not in a.card.training
    other = _tiny_config()
    other.input = dataclasses.replace(other.input, size=other.input.size + 8)
    other.train = {**student.train}
    with pytest.raises(ChestDxError, match="does not fit this recipe"):
        fit(other, records, records, None, seed=0, progress=False, threads=1)


def test_bf16_auto_is_resolved_per_machine():
    from chestdx.models.recipes import get_recipe

    config = get_recipe("residual-attention", classes=("non-covid", "covid"))
    assert all(s["bf16"] is native_bf16() for s in stages_of(config))
    config.train = {**config.train, "bf16": False}
    assert stages_of(config)[0]["bf16"] is False


def test_ema_weights_are_the_ones_kept(tmp_path):
    """Same seed and data: the EMA run keeps averaged weights, so its network differs."""
    from tests.test_train_predict import _tiny_config, _write_slices

    records = _write_slices(tmp_path / "s", n_per_class=6)
    plain, averaged = _tiny_config(), _tiny_config()
    for config in (plain, averaged):
        config.train = {**config.train, "epochs": 2, "patience": 5}
    averaged.train["ema"] = 0.5
    a = fit(plain, records, records, None, seed=0, progress=False, threads=1)
    b = fit(averaged, records, records, None, seed=0, progress=False, threads=1)
    wa, wb = next(a.net.parameters()), next(b.net.parameters())
    assert wa.shape == wb.shape and not torch.allclose(wa, wb)
    assert b.card.training["stages"][0]["ema"] == 0.5


def test_moco_step_fills_the_queue_with_unit_keys():
    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 16))
    moco = MoCo(encoder, 16, dim=8, queue_size=10)
    x = torch.randn(4, 3, 8, 8)
    loss = moco.loss(x, x + 0.01 * torch.randn_like(x), key_chunks=2)
    loss.backward()
    assert torch.isfinite(loss) and int(moco.pointer) == 4
    assert torch.allclose(moco.queue[:4].norm(dim=1), torch.ones(4), atol=1e-5)
    assert next(moco.query.parameters()).grad is not None
    assert all(p.grad is None for p in moco.key.parameters())


def test_moco_pretraining_moves_the_encoder_and_the_encoder_loads_for_fine_tuning(tmp_path):
    rng = np.random.default_rng(0)
    slices = [rng.random((3, 32, 32)).astype(np.float16) for _ in range(24)]
    net = EfficientNetClassifier("lite0", pretrained=True)
    before = net.stem[1].weight.detach().clone()
    net, history = pretrain_moco(net, slices, epochs=1, batch_size=8, progress=False)
    assert len(history) == 1 and np.isfinite(history[0]["loss"])
    assert not torch.allclose(net.stem[1].weight, before)
    path = tmp_path / "encoder.pt"
    torch.save({k: v.half() for k, v in net.state_dict().items() if not k.startswith("fc.")}, path)
    tuned = EfficientNetClassifier("lite0", num_classes=2, pretrained=str(path))
    assert torch.allclose(tuned.stem[1].weight, net.stem[1].weight.half().float())
    with pytest.raises(ChestDxError, match="do not fit"):
        EfficientNetClassifier("lite1", pretrained=str(path))
    with pytest.raises(ChestDxError, match="no encoder weights"):
        EfficientNetClassifier("lite0", pretrained=str(tmp_path / "missing.pt"))


def test_same_seed_same_weights_with_every_ingredient(tmp_path):
    """Training is reproducible bit for bit from its seed (augmentation, mixup and EMA included)."""
    from tests.test_train_predict import _tiny_config, _write_slices

    records = _write_slices(tmp_path / "s", n_per_class=4)
    config = _tiny_config()
    config.train = {**config.train, "epochs": 2, "mixup": 0.2, "ema": 0.9,
                    "augment": {"elastic": 0, "blur": 0, "jpeg": 1.0, "crop_scale": 0.7}}
    a = fit(config, records, records, None, seed=5, progress=False, threads=1)
    b = fit(config, records, records, None, seed=5, progress=False, threads=1)
    for (name, wa), wb in zip(a.net.state_dict().items(), b.net.state_dict().values()):
        assert torch.equal(wa, wb), name
    assert a.history == [{**h, "seconds": a.history[i]["seconds"]} for i, h in enumerate(b.history)]
