"""Heat maps of the pixels that drove a slice classifier: CAM, Grad-CAM, Grad-CAM++, occlusion, boxes.

Every method works on a batch of slices at model input size and returns maps in 0..1;
`map_to_original` brings a map back to the slice as stored in the study.
"""

from __future__ import annotations

import logging
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from monai.visualize import CAM, GradCAM, GradCAMpp
from monai.visualize.class_activation_maps import ModelWithHooks
from scipy.ndimage import gaussian_filter
from skimage.transform import resize
from torch import nn

from chestdx.errors import ChestDxError
from chestdx.progress import progress as progress_bar

logger = logging.getLogger(__name__)

METHODS = ("cam", "gradcam", "gradcampp", "occlusion", "boxes")
_GRADIENT_METHODS = {"gradcam": GradCAM, "gradcampp": GradCAMpp}
# Every dict in which `nn.Module.register_*_hook` files a hook.
_HOOK_DICTS = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_backward_hooks")


@dataclass
class ExplanationResult:
    """Heat maps of a batch of slices, at model input size.

    Args:
        maps: float32 ``(n, H, W)`` in 0..1 (1 = strongest evidence for the target class).
        target_class: the class explained; when each slice was explained for its own
            predicted class, the most frequent of those (see ``target_classes``).
        probabilities: float32 ``(n, K)`` softmax of the model's logits per slice.
        target_classes: int ``(n,)`` the class explained on each slice.
        method: the method used.
        boxes: per slice a float32 ``(k, 4)`` array of ``(y0, x0, y1, x1)`` boxes in input
            pixels (models that propose lesion boxes, such as DRE-Net), else None.
        box_scores: per slice a float32 ``(k,)`` array of box scores, else None.
    """

    maps: np.ndarray
    target_class: int
    probabilities: np.ndarray
    target_classes: np.ndarray
    method: str
    boxes: list[np.ndarray] | None = None
    box_scores: list[np.ndarray] | None = None


class _ReleasedHooks(ModelWithHooks):
    """MONAI's `ModelWithHooks`, scoring each slice for its own class and removing its hooks on exit.

    MONAI registers its hooks without keeping the handles and never removes them (and
    turns off ``inplace`` on the target layer), so each ``GradCAM(model, ...)`` would leave
    hooks behind for the model's lifetime. Used as a context manager, this wrapper removes
    exactly the hooks it added and restores the layer's flags.

    Args:
        model: the network.
        layer: dotted name of the target layer.
        backward: also cache gradients (Grad-CAM); CAM needs activations only.
    """

    def __init__(self, model: nn.Module, layer: str, backward: bool) -> None:
        self._layer = dict(model.named_modules())[layer]
        self._before = {name: set(getattr(self._layer, name, {})) for name in _HOOK_DICTS}
        flags = ("inplace", "_is_full_backward_hook")
        self._flags = {k: self._layer.__dict__[k] for k in flags if k in self._layer.__dict__}
        super().__init__(model, layer, register_forward=True, register_backward=backward)

    def class_score(self, logits: torch.Tensor, class_idx: torch.Tensor) -> torch.Tensor:
        """Args: logits: ``(B, K)``; class_idx: ``(B,)`` one class per slice.

        Returns:
            ``(B, 1, 1, 1)`` the logit of each slice's class (shaped to broadcast over
            ``(B, C, h, w)`` gradients in Grad-CAM++).
        """
        return logits.gather(1, class_idx.view(-1, 1)).view(-1, 1, 1, 1)

    def __enter__(self) -> "_ReleasedHooks":
        return self

    def __exit__(self, *exc) -> None:
        for name in _HOOK_DICTS:
            hooks = getattr(self._layer, name, {})
            for key in set(hooks) - self._before[name]:
                del hooks[key]
        self._layer.__dict__.update(self._flags)


class _SliceClassifier(nn.Module):
    """Slice logits of a model: ``forward_slices`` where it has one, else ``forward``.

    Bag models whose ``forward`` needs whole groups of slices (cnn-bilstm) classify single
    slices with ``forward_slices``; that is the classifier explained. Module names gain the
    prefix ``net.``.

    Args:
        model: the network.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.net = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(B, C, H, W)``. Returns: logits ``(B, K)``."""
        return self.net.forward_slices(x) if hasattr(self.net, "forward_slices") else self.net(x)

    def cam_head(self, features: torch.Tensor) -> torch.Tensor:
        """Args: features: ``(B, D)`` pooled target-layer features. Returns: logits ``(B, K)``.

        Raises:
            AttributeError: the slice logits do not come from ``model.head`` on pooled features.
        """
        if hasattr(self.net, "forward_slices") or not callable(getattr(self.net, "head", None)):
            raise AttributeError("no head on pooled features")
        return self.net.head(features)


@contextmanager
def _inference_state(model: nn.Module) -> Iterator[None]:
    """Eval mode and frozen parameters inside the block; the model's previous state after it."""
    was_training = model.training
    requires = [p.requires_grad for p in model.parameters()]
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, r in zip(model.parameters(), requires):
            p.requires_grad_(r)
        model.train(was_training)


def explain_slices(
    model: nn.Module,
    x: torch.Tensor | np.ndarray,
    method: str,
    target_class: int | None = None,
    target_layer: str | None = None,
    lung_mask: np.ndarray | None = None,
    smooth_sigma: float = 0.0,
    occlusion_patch: int = 32,
    occlusion_stride: int = 16,
    occlusion_fill: str = "mean",
    batch_size: int = 16,
    progress: bool = False,
) -> ExplanationResult:
    """Heat maps of the evidence for a class on each slice.

    Methods: ``"cam"`` (class activation map from the classifier weights; needs a head
    applied to the global average of the target layer, as in ai-corona), ``"gradcam"``,
    ``"gradcampp"`` (MONAI, on ``target_layer``), ``"occlusion"`` (COVID CT-Net's sliding
    window: the drop in the target class's probability when an ``occlusion_patch``
    square, moved by ``occlusion_stride`` pixels, is replaced by the slice's mean or by
    zero; a pixel gets the mean drop of the patches covering it) and ``"boxes"`` (the
    lesion boxes of models that propose them, as score-weighted filled rectangles).

    The slice classifier explained is ``model.forward_slices`` where the model has one (bag
    models whose ``forward`` needs a whole group, such as cnn-bilstm), else ``model``.
    Each map is smoothed (``smooth_sigma``), then scaled to 0..1 by its minimum and maximum
    within the lung mask (if given; zero outside it); a constant map becomes all zeros.
    The model is used in eval mode with frozen parameters; its mode, ``requires_grad``
    flags and hooks are as before afterwards.

    Args:
        model: network following the `chestdx.models.registry.build_model` contract.
        x: slices ``(n, C, H, W)``, preprocessed as model input.
        method: one of ``METHODS``.
        target_class: class to explain on every slice (e.g. the study's decision);
            None explains each slice's predicted class.
        target_layer: dotted module name for CAM / Grad-CAM; None uses ``model.target_layer``.
        lung_mask: bool ``(n, H, W)`` at input size: restrict and normalise maps within it
            (a slice whose mask is empty is left unrestricted).
        smooth_sigma: Gaussian smoothing of the maps, in input pixels (0 = none).
        occlusion_patch: occluded square's side in input pixels.
        occlusion_stride: step between occluded squares, at most ``occlusion_patch``.
        occlusion_fill: ``"mean"`` (the slice's mean) or ``"zero"``.
        batch_size: slices (gradient methods) or occluded copies (occlusion) per forward.
        progress: report occlusion's progress (`chestdx.progress.progress`); it takes minutes per study on a CPU.

    Returns:
        The maps, probabilities, explained classes and, for box models, the boxes.

    Raises:
        ChestDxError: unknown method, class or layer; a method the model does not support;
            an occlusion patch that does not fit the slice.

    Example:
        >>> result = explain_slices(model, slices, "gradcam", target_class=2)
        >>> result.maps.shape  # (n, H, W), values 0..1
    """
    if method not in METHODS:
        raise ChestDxError(f"unknown explanation method {method!r}: choose one of {', '.join(METHODS)}")
    x = torch.as_tensor(x, dtype=torch.float32)
    if x.ndim != 4 or len(x) == 0:
        raise ValueError(f"x must be slices (n, C, H, W) with n >= 1, got shape {tuple(x.shape)}")
    if lung_mask is not None:
        lung_mask = np.asarray(lung_mask, dtype=bool)
        if lung_mask.shape != (x.shape[0], *x.shape[2:]):
            raise ValueError(f"lung_mask must be (n, H, W) = {(x.shape[0], *x.shape[2:])}, got {lung_mask.shape}")
    device = next(model.parameters()).device
    classifier = _SliceClassifier(model)
    with torch.inference_mode(False):
        x = x.to(device).clone()
        with _inference_state(classifier):
            logits, boxes, scores = _forward(classifier, x, batch_size)
            probabilities = torch.softmax(logits, dim=1)
            targets = _targets(target_class, logits)
            if method == "boxes":
                if boxes is None:
                    raise ChestDxError(
                        "method 'boxes' needs a model that proposes lesion boxes (recipe dre-net): "
                        "use cam, gradcam, gradcampp or occlusion with this model"
                    )
                raw = _box_maps(boxes, scores, x.shape[2:])
            elif method == "occlusion":
                raw = _occlusion_maps(
                    classifier, x, targets, probabilities, occlusion_patch, occlusion_stride, occlusion_fill, batch_size,
                    progress,
                )
            else:
                layer = "net." + _check_layer(model, target_layer or getattr(model, "target_layer", None))
                raw = _activation_maps(classifier, x, targets, logits, layer, method, batch_size)
    maps = _normalise(raw, lung_mask, smooth_sigma)
    counts = Counter(targets.tolist())
    return ExplanationResult(
        maps=maps,
        target_class=int(target_class) if target_class is not None else counts.most_common(1)[0][0],
        probabilities=probabilities.cpu().numpy().astype(np.float32),
        target_classes=targets.cpu().numpy(),
        method=method,
        boxes=None if boxes is None else [b.astype(np.float32) for b in boxes],
        box_scores=None if scores is None else [s.astype(np.float32) for s in scores],
    )


def _forward(classifier: _SliceClassifier, x: torch.Tensor, batch_size: int):
    """Logits ``(n, K)`` and, for box models, per-slice boxes and scores (numpy) else None."""
    logits, boxes, scores = [], [], []
    with torch.no_grad():
        for chunk in torch.split(x, batch_size):
            logits.append(classifier(chunk))
            if getattr(classifier.net, "last_boxes", None) is not None:
                boxes.extend(classifier.net.last_boxes.detach().cpu().numpy())
                scores.extend(classifier.net.last_box_scores.detach().cpu().numpy())
    return torch.cat(logits), (boxes or None), (scores or None)


def _targets(target_class: int | None, logits: torch.Tensor) -> torch.Tensor:
    n, k = logits.shape
    if target_class is None:
        return logits.argmax(1)
    if not 0 <= int(target_class) < k:
        raise ChestDxError(f"target class {target_class} does not exist: this model has classes 0 to {k - 1}")
    return torch.full((n,), int(target_class), dtype=torch.long, device=logits.device)


def _check_layer(model: nn.Module, layer: str | None) -> str:
    modules = dict(model.named_modules())
    if not layer or layer not in modules:
        examples = ", ".join(name for name in list(modules)[-6:] if name)
        raise ChestDxError(
            f"target layer {layer!r} is not a module of this model: give a name from "
            f"model.named_modules() (the last ones are {examples})"
        )
    return layer


def _activation_maps(
    classifier: _SliceClassifier, x: torch.Tensor, targets: torch.Tensor, logits: torch.Tensor, layer: str, method: str,
    batch_size: int,
) -> np.ndarray:
    """CAM / Grad-CAM / Grad-CAM++ maps ``(n, H, W)`` with MONAI, before normalisation."""
    maps = []
    with _ReleasedHooks(classifier, layer, backward=method != "cam") as hooked:
        with torch.no_grad():
            classifier(x[:1])  # fills hooked.activations, to check the layer before MONAI uses it
        _check_activation(classifier, hooked.activations[layer], logits[:1], layer, method)
        if method == "cam":
            explainer = CAM(hooked, layer, fc_layers=lambda m: m.cam_head, postprocessing=_identity)
        else:
            explainer = _GRADIENT_METHODS[method](hooked, layer, postprocessing=_identity)
        for start in range(0, len(x), batch_size):
            chunk = x[start : start + batch_size].detach().clone().requires_grad_(method != "cam")
            with torch.set_grad_enabled(method != "cam"):
                maps.append(explainer(chunk, class_idx=targets[start : start + batch_size])[:, 0].detach())
    return torch.cat(maps).cpu().numpy()


def _identity(a: torch.Tensor) -> torch.Tensor:
    return a


def _check_activation(
    classifier: _SliceClassifier, activation: torch.Tensor, logits: torch.Tensor, layer: str, method: str
) -> None:
    """The layer must give 4-D maps; for CAM, the logits must be the head applied to their global average."""
    layer = layer.removeprefix("net.")
    if activation.ndim != 4:
        raise ChestDxError(
            f"target layer {layer!r} outputs shape {tuple(activation.shape)}: choose a layer "
            "with a (B, C, h, w) output (a convolutional block)"
        )
    if method != "cam":
        return
    with torch.no_grad():
        try:
            pooled = classifier.cam_head(activation.mean(dim=(2, 3)))
        except (AttributeError, RuntimeError) as exc:  # no such head, or not for this layer's channels
            raise _cam_error(layer) from exc
    if not torch.allclose(pooled, logits, rtol=1e-3, atol=1e-4):
        raise _cam_error(layer)


def _cam_error(layer: str) -> ChestDxError:
    return ChestDxError(
        f"method 'cam' needs a classifier applied to the global average of layer {layer!r} "
        "(as in recipe ai-corona); this model is not built that way: use gradcam or gradcampp"
    )


def _window_starts(size: int, patch: int, stride: int) -> list[int]:
    """Top-left corners every ``stride`` pixels, plus one flush with the far edge so all pixels are covered."""
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def _occlusion_maps(
    model: nn.Module, x: torch.Tensor, targets: torch.Tensor, probabilities: torch.Tensor, patch: int, stride: int,
    fill: str, batch_size: int, progress: bool = False,
) -> np.ndarray:
    """Mean drop of the target probability over the occluded squares covering each pixel."""
    n, _, h, w = x.shape
    if not 1 <= patch <= min(h, w) or not 1 <= stride <= patch:
        raise ChestDxError(
            f"occlusion patch {patch} / stride {stride} do not fit {h}x{w} slices: "
            f"use 1 <= stride <= patch <= {min(h, w)}"
        )
    if fill not in ("mean", "zero"):
        raise ChestDxError(f"unknown occlusion fill {fill!r}: choose 'mean' or 'zero'")
    windows = [(y, x0) for y in _window_starts(h, patch, stride) for x0 in _window_starts(w, patch, stride)]
    coverage = torch.zeros(h, w, device=x.device)
    for y, x0 in windows:
        coverage[y : y + patch, x0 : x0 + patch] += 1
    maps = torch.zeros(n, h, w, device=x.device)
    batches = [(i, start) for i in range(n) for start in range(0, len(windows), batch_size)]
    with torch.no_grad():
        for i, start in progress_bar(batches, f"occlusion of {n} slice(s)", "batch", enabled=progress):
            value = x[i].mean() if fill == "mean" else 0.0
            target = int(targets[i])
            chunk = windows[start : start + batch_size]
            occluded = x[i].repeat(len(chunk), 1, 1, 1)
            for j, (y, x0) in enumerate(chunk):
                occluded[j, :, y : y + patch, x0 : x0 + patch] = value
            drops = probabilities[i, target] - torch.softmax(model(occluded), dim=1)[:, target]
            for drop, (y, x0) in zip(drops, chunk):
                maps[i, y : y + patch, x0 : x0 + patch] += drop
    return (maps / coverage).cpu().numpy()


def _box_maps(boxes: list[np.ndarray], scores: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Score-weighted filled rectangles ``(n, H, W)`` (overlapping boxes add up)."""
    h, w = shape
    maps = np.zeros((len(boxes), h, w), dtype=np.float32)
    for out, slice_boxes, slice_scores in zip(maps, boxes, scores):
        for (y0, x0, y1, x1), score in zip(slice_boxes, slice_scores):
            r0, r1 = int(np.clip(np.floor(y0), 0, h)), int(np.clip(np.ceil(y1), 0, h))
            c0, c1 = int(np.clip(np.floor(x0), 0, w)), int(np.clip(np.ceil(x1), 0, w))
            out[r0:r1, c0:c1] += score
    return maps


def _normalise(raw: np.ndarray, lung_mask: np.ndarray | None, sigma: float) -> np.ndarray:
    """Smooth, then min-max scale each map to 0..1 within its lung mask (zero outside)."""
    raw = np.nan_to_num(np.asarray(raw, dtype=np.float32))
    out = np.zeros_like(raw)
    for i, heat in enumerate(raw):
        if sigma > 0:
            heat = gaussian_filter(heat, sigma)
        inside = np.ones(heat.shape, dtype=bool) if lung_mask is None else lung_mask[i]
        if not inside.any():
            logger.warning("slice %d has an empty lung mask: its map is not restricted to the lung", i)
            inside = np.ones(heat.shape, dtype=bool)
        low, high = heat[inside].min(), heat[inside].max()
        if high > low:
            out[i] = np.where(inside, (heat - low) / (high - low), 0.0)
    return np.clip(out, 0.0, 1.0)


def resize_map(heatmap: np.ndarray, out_shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a 2-D map (pixel centres aligned, values stay within the input's range).

    Args:
        heatmap: ``(h, w)`` map.
        out_shape: ``(H, W)``.

    Returns:
        float32 ``(H, W)``.
    """
    out = resize(np.asarray(heatmap, dtype=np.float32), tuple(out_shape), order=1, mode="edge",
                 anti_aliasing=False, preserve_range=True)
    return out.astype(np.float32)


def _placement(input_shape, original_shape, crop_box, keep_aspect):
    """Where the (cropped) original lies in the model input.

    Returns:
        ``(crop y0, crop x0, crop h, crop w, pad top, pad left, resized h, resized w)``.
    """
    height, width = original_shape[:2]
    y0, y1, x0, x1 = crop_box if crop_box is not None else (0, height, 0, width)
    h, w = y1 - y0, x1 - x0
    size_y, size_x = input_shape[:2]
    if keep_aspect:
        scale = min(size_y / h, size_x / w)
        rh, rw = min(size_y, round(h * scale)), min(size_x, round(w * scale))
    else:
        rh, rw = size_y, size_x
    return y0, x0, h, w, (size_y - rh) // 2, (size_x - rw) // 2, rh, rw


def map_to_original(
    map_at_input_size: np.ndarray,
    original_shape: tuple[int, int],
    crop_box: tuple[int, int, int, int] | None = None,
    keep_aspect: bool = True,
    quarter_turns: int = 0,
) -> np.ndarray:
    """Bring a map from model input size back onto the slice as stored in the study.

    Undoes the preprocessing geometry: an optional crop ``original[y0:y1, x0:x1]``, then
    optional quarter turns (``InputSpec.upright``), then a resize to the input size keeping
    the aspect ratio (scale = input / longest side, rounded sizes) with symmetric zero
    padding (``(input - resized) // 2`` before), or a plain resize when ``keep_aspect`` is False.

    Args:
        map_at_input_size: ``(S, S)`` map.
        original_shape: ``(H0, W0)`` of the stored slice.
        crop_box: ``(y0, y1, x0, x1)`` crop of the original (half-open), or None.
        keep_aspect: whether the input was a keep-aspect resize with padding.
        quarter_turns: counter-clockwise quarter turns applied after the crop
            (``PreparedStudy.quarter_turns``); turned back first.

    Returns:
        float32 ``(H0, W0)``; zero outside the crop box.

    Example:
        >>> full = map_to_original(result.maps[0], study.pixels.shape[1:], crop_box=(40, 470, 20, 490))
    """
    map_at_input_size = np.rot90(map_at_input_size, -quarter_turns)
    y0, x0, h, w, top, left, rh, rw = _placement(map_at_input_size.shape, original_shape, crop_box, keep_aspect)
    out = np.zeros(tuple(original_shape[:2]), dtype=np.float32)
    out[y0 : y0 + h, x0 : x0 + w] = resize_map(map_at_input_size[top : top + rh, left : left + rw], (h, w))
    return out


def boxes_to_original(
    boxes: np.ndarray,
    input_shape: tuple[int, int],
    original_shape: tuple[int, int],
    crop_box: tuple[int, int, int, int] | None = None,
    keep_aspect: bool = True,
) -> np.ndarray:
    """Bring ``(y0, x0, y1, x1)`` boxes from model input pixels onto the stored slice (see `map_to_original`).

    Args:
        boxes: ``(k, 4)`` boxes in input pixels.
        input_shape: ``(S, S)`` model input size.
        original_shape: ``(H0, W0)`` of the stored slice.
        crop_box: ``(y0, y1, x0, x1)`` crop of the original, or None.
        keep_aspect: whether the input was a keep-aspect resize with padding.

    Returns:
        float32 ``(k, 4)`` boxes in original pixels, clipped to the crop.
    """
    y0, x0, h, w, top, left, rh, rw = _placement(input_shape, original_shape, crop_box, keep_aspect)
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    ys = np.clip((b[:, [0, 2]] - top) * h / rh, 0, h) + y0
    xs = np.clip((b[:, [1, 3]] - left) * w / rw, 0, w) + x0
    return np.stack([ys[:, 0], xs[:, 0], ys[:, 1], xs[:, 1]], axis=1).astype(np.float32)
