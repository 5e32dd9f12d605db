"""Heat-map methods on a tiny CNN that follows the model contract, trained to find a bright square."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from chestdx.errors import ChestDxError
from chestdx.explain.maps import METHODS, boxes_to_original, explain_slices, map_to_original, resize_map

SIZE = 32
SQUARE = 6
GRADIENT_METHODS = ("cam", "gradcam", "gradcampp", "occlusion")


class TinyNet(nn.Module):
    """conv -> pool -> conv -> target layer (in-place ReLU) -> global average -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1)
        )
        self.act = nn.ReLU(inplace=True)
        self.fc = nn.Linear(16, 2)
        self.target_layer = "act"

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.features(x)).mean(dim=(2, 3))

    def head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encode(x))


class BoxNet(TinyNet):
    """TinyNet that proposes two fixed lesion boxes per slice, like DRE-Net."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        self.last_boxes = torch.tensor([[2.0, 3.0, 10.0, 12.0], [20.0, 20.0, 30.0, 28.0]]).repeat(n, 1, 1)
        self.last_box_scores = torch.tensor([0.9, 0.3]).repeat(n, 1)
        return super().forward(x)


class GroupNet(TinyNet):
    """A bag model like cnn-bilstm: ``forward`` needs groups, ``forward_slices`` classifies slices."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5:
            raise ValueError("groups (B, S, C, H, W) only")
        return self.head(self.encode(x.flatten(0, 1)).view(*x.shape[:2], -1).mean(1))

    def forward_slices(self, x: torch.Tensor) -> torch.Tensor:
        return -self.head(self.encode(x))  # distinguishable from forward's per-slice logits


def square_images(n: int, rng: np.random.Generator, present: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """Noise slices ``(n, 1, SIZE, SIZE)``, a bright square where ``present``; returns slices and corners."""
    x = rng.normal(0.0, 0.1, size=(n, 1, SIZE, SIZE)).astype(np.float32)
    corners = rng.integers(2, SIZE - SQUARE - 2, size=(n, 2))
    for image, (y, x0), has in zip(x, corners, present):
        if has:
            image[0, y : y + SQUARE, x0 : x0 + SQUARE] += 1.0
    return torch.from_numpy(x), corners


@pytest.fixture(scope="module")
def trained() -> TinyNet:
    """TinyNet trained (seeded, about a second) to tell 'square present' (class 1) from 'absent'."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = TinyNet()
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(60):
        labels = rng.integers(0, 2, size=32)
        x, _ = square_images(32, rng, labels.astype(bool))
        loss = nn.functional.cross_entropy(model(x), torch.from_numpy(labels))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._backward_hooks) for m in model.modules())


def test_trained_model_detects_square(trained):
    x, _ = square_images(40, np.random.default_rng(1), np.arange(40) % 2 == 1)
    with torch.no_grad():
        predicted = trained(x).argmax(1).numpy()
    assert (predicted == np.arange(40) % 2).mean() >= 0.95


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_map_maximum_lies_in_square(trained, method):
    x, corners = square_images(6, np.random.default_rng(2), np.ones(6, dtype=bool))
    result = explain_slices(trained, x, method, occlusion_patch=8, occlusion_stride=2)
    assert result.target_classes.tolist() == [1] * 6
    tolerance = 2
    for heat, (y, x0) in zip(result.maps, corners):
        py, px = np.unravel_index(np.argmax(heat), heat.shape)
        assert y - tolerance <= py < y + SQUARE + tolerance, (method, py, y)
        assert x0 - tolerance <= px < x0 + SQUARE + tolerance, (method, px, x0)


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_maps_shape_range_and_state(trained, method):
    x, _ = square_images(3, np.random.default_rng(3), np.array([True, False, True]))
    weights = {k: v.clone() for k, v in trained.state_dict().items()}
    trained.train()
    result = explain_slices(
        trained, x.numpy(), method, target_class=1, occlusion_patch=8, occlusion_stride=4, batch_size=2
    )
    assert result.maps.shape == (3, SIZE, SIZE) and result.maps.dtype == np.float32
    assert np.isfinite(result.maps).all() and result.maps.min() >= 0.0
    assert np.allclose(result.maps.max(axis=(1, 2)), 1.0)
    assert result.target_class == 1 and result.target_classes.tolist() == [1, 1, 1]
    assert result.probabilities.shape == (3, 2) and np.allclose(result.probabilities.sum(1), 1.0, atol=1e-5)
    assert result.boxes is None and result.method == method
    # The model is left as found: weights, training mode, grad flags, in-place flag, no gradients.
    assert all(torch.equal(weights[k], v) for k, v in trained.state_dict().items())
    assert trained.training and all(p.requires_grad and p.grad is None for p in trained.parameters())
    assert trained.act.inplace
    trained.eval()


@pytest.mark.parametrize("method", ("cam", "gradcam", "gradcampp"))
def test_hooks_are_released(trained, method):
    before = hook_count(trained)
    x = torch.randn(2, 1, SIZE, SIZE)
    for _ in range(3):
        explain_slices(trained, x, method)
    assert hook_count(trained) == before == 0


def test_hooks_released_after_error(trained):
    # A target layer whose output is not 4-D fails, and still leaves no hook behind.
    with pytest.raises(ChestDxError, match="choose a layer"):
        explain_slices(trained, torch.randn(1, 1, SIZE, SIZE), "gradcam", target_layer="fc")
    assert hook_count(trained) == 0


def test_lung_mask_restricts_and_normalises(trained):
    x, _ = square_images(2, np.random.default_rng(4), np.ones(2, dtype=bool))
    mask = np.zeros((2, SIZE, SIZE), dtype=bool)
    mask[:, 4:20, 4:28] = True
    result = explain_slices(trained, x, "gradcam", lung_mask=mask, smooth_sigma=1.5)
    assert (result.maps[~mask] == 0).all()
    assert np.allclose(result.maps.max(axis=(1, 2)), 1.0)
    assert np.allclose([m[k].min() for m, k in zip(result.maps, mask)], 0.0)


def test_constant_map_is_zero_not_nan():
    model = TinyNet()
    nn.init.zeros_(model.fc.weight)  # logits ignore the image: every gradient is zero
    result = explain_slices(model, torch.randn(2, 1, SIZE, SIZE), "gradcam")
    assert np.isfinite(result.maps).all() and (result.maps == 0).all()


def test_cam_needs_pooled_linear_head():
    model = TinyNet()
    with pytest.raises(ChestDxError, match="use gradcam"):
        explain_slices(model, torch.randn(1, 1, SIZE, SIZE), "cam", target_layer="features.0")


def test_boxes_method_draws_scored_boxes():
    result = explain_slices(BoxNet(), torch.randn(2, 1, SIZE, SIZE), "boxes")
    heat = result.maps[0]
    assert np.allclose(heat[2:10, 3:12], 1.0)
    assert np.allclose(heat[20:30, 20:28], 0.3 / 0.9)
    assert heat[15, 15] == 0.0
    assert len(result.boxes) == 2 and result.boxes[1].shape == (2, 4)
    assert np.allclose(result.box_scores[0], [0.9, 0.3])


def test_boxes_kept_with_other_methods():
    result = explain_slices(BoxNet(), torch.randn(1, 1, SIZE, SIZE), "gradcam")
    assert result.boxes is not None and result.boxes[0].shape == (2, 4)


def test_boxes_needs_box_model():
    with pytest.raises(ChestDxError, match="dre-net"):
        explain_slices(TinyNet(), torch.randn(1, 1, SIZE, SIZE), "boxes")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"method": "saliency"}, "choose one of"),
        ({"method": "gradcam", "target_class": 5}, "classes 0 to 1"),
        ({"method": "gradcam", "target_layer": "nope"}, "not a module"),
        ({"method": "occlusion", "occlusion_patch": 64}, "do not fit"),
        ({"method": "occlusion", "occlusion_patch": 8, "occlusion_stride": 9}, "do not fit"),
    ],
)
def test_user_errors(kwargs, message):
    with pytest.raises(ChestDxError, match=message):
        explain_slices(TinyNet(), torch.randn(1, 1, SIZE, SIZE), **kwargs)


def test_methods_listed():
    assert METHODS == ("cam", "gradcam", "gradcampp", "occlusion", "boxes")


def test_occlusion_is_probability_drop():
    # A linear model on the mean of the top-left quadrant: only patches there change the output.
    class Quadrant(TinyNet):
        def forward(self, x):
            return torch.stack([torch.zeros(len(x)), 20 * x[:, 0, :16, :16].mean(dim=(1, 2))], dim=1)

    x = torch.ones(1, 1, SIZE, SIZE)
    result = explain_slices(Quadrant(), x, "occlusion", occlusion_patch=8, occlusion_stride=8, occlusion_fill="zero")
    assert result.maps[0, :16, :16].min() == 1.0 and result.maps[0, 16:, :].max() == 0.0
    assert result.maps[0, :, 16:].max() == 0.0


def test_resize_map_range():
    heat = np.random.default_rng(5).random((7, 7)).astype(np.float32)
    out = resize_map(heat, (50, 30))
    assert out.shape == (50, 30) and out.dtype == np.float32
    assert heat.min() <= out.min() and out.max() <= heat.max()


def test_map_to_original_inverts_keep_aspect_resize():
    # A 100 x 200 slice becomes 32 x 64 inside a 64 x 64 input, with 16 rows of padding on top.
    original = (100, 200)
    heat = np.zeros((64, 64), dtype=np.float32)
    heat[16 + 25 * 32 // 100, 150 * 64 // 200] = 1.0  # the input pixel of original (25, 150)
    back = map_to_original(heat, original)
    assert back.shape == original
    py, px = np.unravel_index(np.argmax(back), original)
    assert abs(py - 25) <= 2 and abs(px - 150) <= 2


def test_map_to_original_with_crop():
    original = (300, 400)
    crop = (50, 250, 100, 300)  # a 200 x 200 crop: no padding
    heat = np.zeros((40, 40), dtype=np.float32)
    heat[10, 30] = 1.0  # crop pixel (50, 150) -> original (100, 250)
    back = map_to_original(heat, original, crop_box=crop)
    py, px = np.unravel_index(np.argmax(back), original)
    assert abs(py - 100) <= 3 and abs(px - 250) <= 3
    assert back[:50].max() == 0 and back[:, :100].max() == 0


def test_map_to_original_plain_resize():
    heat = np.zeros((32, 32), dtype=np.float32)
    heat[:, 16:] = 1.0
    back = map_to_original(heat, (64, 128), keep_aspect=False)
    assert back[:, :60].max() == 0.0 and back[:, 68:].min() == 1.0


def test_boxes_to_original():
    boxes = np.array([[16.0, 0.0, 48.0, 64.0], [24.0, 16.0, 32.0, 32.0]])
    back = boxes_to_original(boxes, (64, 64), (100, 200))
    assert np.allclose(back[0], [0, 0, 100, 200])
    assert np.allclose(back[1], [25, 50, 50, 100])


def test_works_inside_inference_mode(trained):
    x, corners = square_images(1, np.random.default_rng(6), np.ones(1, dtype=bool))
    with torch.inference_mode():
        result = explain_slices(trained, x, "gradcam")
    py, px = np.unravel_index(np.argmax(result.maps[0]), result.maps[0].shape)
    (y, x0), = corners
    assert y - 2 <= py < y + SQUARE + 2 and x0 - 2 <= px < x0 + SQUARE + 2


def test_bag_model_explains_forward_slices():
    model = GroupNet()
    x = torch.randn(2, 1, SIZE, SIZE)
    result = explain_slices(model, x, "gradcam")
    with torch.no_grad():
        expected = torch.softmax(model.forward_slices(x), dim=1).numpy()
    assert np.allclose(result.probabilities, expected, atol=1e-6)
    assert result.maps.shape == (2, SIZE, SIZE) and hook_count(model) == 0
    with pytest.raises(ChestDxError, match="use gradcam"):  # its slice logits are not head(pooled features)
        explain_slices(model, x, "cam")
