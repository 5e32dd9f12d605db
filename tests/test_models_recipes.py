"""The cnn-bilstm, dre-net and residual-attention recipes: build, forward, contract, training."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F

from chestdx.models.recipes.dre_net import anchor_boxes, box_iou, crop_resize, select_regions
from chestdx.models.recipes.residual_attention import AttentionModule
from chestdx.models.recipes import build_model, get_recipe, list_recipes
from chestdx.models.registry import RecipeConfig
from chestdx.train.loop import apply_freeze, stages_of

RECIPES = ["cnn-bilstm", "dre-net", "residual-attention"]
SIZE = 32  # tiny slices; cnn-bilstm groups hold 50 of them


def squares(n: int, size: int, channels: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise slices; every odd one carries a bright square (class 1)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, channels, size, size, generator=g) * 0.3
    y = torch.arange(n) % 2
    side = size // 4
    for i in torch.nonzero(y).flatten():
        r, c = torch.randint(0, size - side, (2,), generator=g).tolist()
        x[i, :, r:r + side, c:c + side] = 1.0
    return x, y


def bags(n: int, group: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Groups of noise slices; every odd group has 10 consecutive slices with squares."""
    x, y = squares(2 * n * group, size, 1, seed)
    neg, pos = x[y == 0].view(n, group, 1, size, size), x[y == 1].view(n, group, 1, size, size)
    labels = torch.arange(n) % 2
    out = neg.clone()
    out[labels == 1, 20:30] = pos[labels == 1, 20:30]
    return out, labels


def example(config: RecipeConfig, batch: int) -> torch.Tensor:
    shape = (batch, config.input.channels, SIZE, SIZE)
    if config.unit == "bag":
        shape = (batch, config.input.group_size, *shape[1:])
    return torch.rand(shape, generator=torch.Generator().manual_seed(0))


def encode_head(model, x: torch.Tensor) -> torch.Tensor:
    if x.ndim == 5:
        return model.head(model.encode(x.flatten(0, 1)).view(*x.shape[:2], -1))
    return model.head(model.encode(x))


def test_registered():
    assert set(RECIPES) <= set(list_recipes())


@pytest.mark.parametrize("name", RECIPES)
@pytest.mark.parametrize("classes", [("non-covid", "covid"), ("normal", "pneumonia", "covid")])
def test_forward_any_class_set(name, classes):
    config = get_recipe(name, classes=classes)
    model = build_model(config).eval()
    with torch.no_grad():
        logits = model(example(config, 2))
    assert logits.shape == (2, len(classes))
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", RECIPES)
def test_encode_then_head_is_forward(name):
    config = get_recipe(name)
    model = build_model(config).eval()
    x = example(config, 2)
    with torch.no_grad():
        torch.testing.assert_close(encode_head(model, x), model(x))
        features = model.encode(x.flatten(0, 1) if x.ndim == 5 else x)
    assert features.ndim == 2 and features.shape[0] == (x.shape[0] * x.shape[1] if x.ndim == 5 else x.shape[0])


@pytest.mark.parametrize("name", RECIPES)
def test_target_layer_runs_once_with_a_4d_output(name):
    config = get_recipe(name)
    model = build_model(config).eval()
    layer = dict(model.named_modules())[model.target_layer]
    outputs = []
    hook = layer.register_forward_hook(lambda module, args, out: outputs.append(out))
    with torch.no_grad():
        model(example(config, 2))
    hook.remove()
    assert len(outputs) == 1
    assert outputs[0].ndim == 4


@pytest.mark.parametrize("name", RECIPES)
def test_config_round_trips_through_json(name):
    config = get_recipe(name)
    again = RecipeConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == RecipeConfig.from_dict(config.to_dict())
    model, rebuilt = build_model(config).eval(), build_model(again).eval()
    rebuilt.load_state_dict(model.state_dict())
    x = example(config, 1)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x))


@pytest.mark.parametrize("name", ["dre-net", "residual-attention"])
def test_slice_recipes_learn_bright_squares(name):
    torch.manual_seed(0)
    model = build_model(get_recipe(name))
    x, y = squares(16, SIZE, 3, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) / 3 < 0.3 * losses[0]
    x_new, y_new = squares(32, SIZE, 3, seed=1)
    with torch.no_grad():
        accuracy = (model.eval()(x_new).argmax(1) == y_new).float().mean().item()
    assert accuracy >= 0.75


def test_cnn_bilstm_two_stage_training():
    torch.manual_seed(0)
    config = get_recipe("cnn-bilstm", classes=("non-covid", "covid"))
    stages = config.train["stages"]
    assert [s["name"] for s in stages] == ["cnn", "lstm"] and [s["freeze"] for s in stages] == [[], ["cnn"]]
    model = build_model(config)

    x, y = squares(32, 16, 1, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(20):
        loss = F.cross_entropy(getattr(model, stages[0]["method"])(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    assert loss.item() < 0.3 * first

    apply_freeze(model, stages_of(config)[1])
    cnn_before = {k: v.clone() for k, v in model.cnn.state_dict().items()}
    lstm_before = model.lstm.weight_ih_l0.detach().clone()
    xb, yb = bags(8, config.input.group_size, 16, seed=2)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
    first = None
    for _ in range(15):
        loss = F.cross_entropy(getattr(model, stages[1]["method"])(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    assert loss.item() < 0.3 * first
    for key, value in model.cnn.state_dict().items():
        torch.testing.assert_close(value, cnn_before[key], rtol=0, atol=0)
    assert not torch.equal(model.lstm.weight_ih_l0, lstm_before)
    assert not any(p.requires_grad for p in model.cnn.parameters())


def test_cnn_bilstm_slice_logits_and_group_size_check():
    model = build_model(get_recipe("cnn-bilstm")).eval()
    with torch.no_grad():
        assert model.forward_slices(torch.rand(5, 1, SIZE, SIZE)).shape == (5, 3)
    with pytest.raises(ValueError, match="50 slices"):
        model(torch.rand(1, 49, 1, SIZE, SIZE))


def test_dre_net_keeps_valid_top_k_boxes():
    config = get_recipe("dre-net")
    model = build_model(config).eval()
    x = torch.rand(2, 3, 64, 48)
    with torch.no_grad():
        model(x)
    boxes, scores = model.last_boxes, model.last_box_scores
    k = config.params["top_k"]
    assert boxes.shape == (2, k, 4) and scores.shape == (2, k)
    y0, x0, y1, x1 = boxes.unbind(-1)
    assert (y0 >= 0).all() and (x0 >= 0).all() and (y1 <= 64).all() and (x1 <= 48).all()
    assert (y1 > y0).all() and (x1 > x0).all()
    assert ((scores > 0) & (scores < 1)).all()
    assert (scores[:, :-1] >= scores[:, 1:]).all()  # best first
    for b in range(2):
        iou = box_iou(boxes[b], boxes[b])
        assert (iou[~torch.eye(k, dtype=torch.bool)] <= config.params["nms_iou"] + 1e-6).all()


def test_dre_net_depth_option():
    small = build_model(get_recipe("dre-net"))
    config = get_recipe("dre-net")
    config.params["depth"] = 34
    deeper = build_model(config)
    assert len(deeper.backbone.layer3) == 6 and len(small.backbone.layer3) == 2
    config.params["depth"] = 50
    with pytest.raises(ValueError, match="depth"):
        build_model(config)


def test_crop_resize_takes_the_box_pixels():
    image = torch.arange(2 * 64 * 64, dtype=torch.float32).view(1, 2, 64, 64)
    boxes = torch.tensor([[[0.0, 0.0, 64.0, 64.0], [16.0, 32.0, 48.0, 64.0]]])
    crops = crop_resize(image, boxes, 32)
    assert crops.shape == (2, 2, 32, 32)
    torch.testing.assert_close(crops[1], image[0, :, 16:48, 32:64])
    torch.testing.assert_close(crops[0], F.interpolate(image, size=32, mode="bilinear", align_corners=False)[0])


def test_select_regions_suppresses_overlaps():
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [40, 40, 50, 50]])
    scores = torch.tensor([0.9, 0.8, 0.3, 0.1])
    assert select_regions(scores, boxes, 3, nms_iou=0.3).tolist() == [0, 2, 3]
    assert select_regions(scores, boxes, 3, nms_iou=None).tolist() == [0, 1, 2]
    # too few boxes survive: the best suppressed one fills up
    assert select_regions(scores[:3], boxes[:3], 3, nms_iou=0.3).tolist() == [0, 2, 1]


def test_anchor_boxes_lie_inside_the_image():
    boxes = anchor_boxes(64, 48, (4, 3), [0.25, 0.9])
    assert boxes.shape == (2 * 4 * 3, 4)
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 64).all() and (boxes[:, 3] <= 48).all()
    sides = boxes[:, 2:] - boxes[:, :2]
    torch.testing.assert_close(sides[:12], torch.full((12, 2), 12.0))
    torch.testing.assert_close(sides[12:], torch.full((12, 2), 0.9 * 48))


@pytest.mark.parametrize("levels", [1, 2, 3])
def test_attention_module_keeps_shape_and_mask_in_unit_range(levels):
    module = AttentionModule(8, levels).eval()
    x = torch.randn(2, 8, 15, 13)
    with torch.no_grad():
        mask = module.mask(module.pre(x))
        out = module(x)
    assert out.shape == x.shape and mask.shape == x.shape
    assert ((mask > 0) & (mask < 1)).all()


def test_cnn_bilstm_encodes_a_repeated_slice_group_once_with_the_same_logits():
    config = get_recipe("cnn-bilstm", classes=("non-covid", "covid"))
    config.input = dataclasses.replace(config.input, size=32, group_size=6)
    net = build_model(config).eval()
    x = torch.rand(3, 6, 1, 32, 32)
    x[0] = x[0, :1].expand(6, -1, -1, -1)  # a single-slice study's group
    calls = []
    net.cnn.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    with torch.no_grad():
        logits = net(x)
        plain = net.head(net.encode(x.flatten(0, 1)).view(3, 6, -1))
    assert torch.allclose(logits, plain, atol=1e-6)
    assert calls[:2] == [1, 12]  # the repeated group once, the two others slice by slice
