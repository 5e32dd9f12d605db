"""Lesion segmenter: an EfficientNet-Lite0 U-Net labelling ground-glass opacity and consolidation.

The network sees one 8-bit lung-window slice, cropped to the lungs (the MedSeg / Inf-Net
training slices are lung-cropped) and stretched to ``size`` x ``size``; it returns logits of
three classes per pixel (`CLASSES`). Infection probability is ``1 - p(background)``; a pixel is
a lesion where it reaches the model's threshold (fixed on validation, stored in its card),
and the lesion's type is the likelier of ground-glass and consolidation.

`segment_study` runs the segmenter over a whole study and keeps lesions inside the (slightly
dilated) lung mask; `lesion_heatmaps` gives the infection probability of chosen slices, for
explanations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from monai.networks.nets.flexible_unet import SegmentationHead, UNetDecoder
from scipy import ndimage
from torch import nn

from chestdx.errors import ChestDxError
from chestdx.io.study import Study
from chestdx.models.bundled import ONNX_FILE, resolve_model_path
from chestdx.models.card import new_card, read_card
from chestdx.models.checkpoint import read_weights, save_checkpoint
from chestdx.models.loading import LoadedModel, onnx_session
from chestdx.models.networks.efficientnet import EfficientNetClassifier
from chestdx.models.registry import RecipeConfig
from chestdx.preprocess.intensity import render_8bit
from chestdx.preprocess.lungs import ASSUMED_FOV_MM
from chestdx.preprocess.pipeline import study_lung_mask
from chestdx.preprocess.resize import resize_slices
from chestdx.preprocess.select import lung_bbox
from chestdx.preprocess.spec import InputSpec

CLASSES = ("background", "ground-glass", "consolidation")
DEFAULT_LESION_MODEL = "lesion-default"
ENCODER_CHANNELS = (16, 24, 40, 112, 320)
"""Channels of the Lite0 stages whose outputs feed the decoder (strides 2, 4, 8, 16, 32)."""
_SKIP_STAGES = (0, 1, 2, 4, 6)
LUNG_MARGIN = 0.04
"""Margin added around the lung box before cropping, as a fraction of its side (MedSeg slices
are cropped with a thin rim of chest wall)."""
LUNG_DILATION_MM = 5.0
"""Lesions farther than this outside the lung mask are dropped (peripheral consolidation can
fall just outside a classical lung mask)."""


class LesionUNet(nn.Module):
    """U-Net with an EfficientNet-Lite0 encoder and MONAI's `UNetDecoder`.

    The decoder stops at half resolution (skips at strides 16, 8 and 4) and the logits are
    upsampled bilinearly: a full-resolution stage cost more than twice as much on CPU, and
    lesion boundaries on lung-window slices are soft anyway (Inf-Net predicts at 1/8).

    Args:
        encoder: True for ImageNet weights, the name or path of a self-supervised encoder
            (``"ct-moco-lite0"``), or False for random initialisation.
        normalise: ``"unit"`` (0-1 input, as the MoCo encoder was trained) or ``"imagenet"``.
        decoder_channels: channels of the four decoder stages.
        num_classes: output classes (background, ground-glass, consolidation).

    Example:
        >>> net = LesionUNet(encoder=False)
        >>> net(torch.rand(2, 1, 64, 64)).shape
        torch.Size([2, 3, 64, 64])
    """

    def __init__(self, encoder: bool | str = "ct-moco-lite0", normalise: str = "unit",
                 decoder_channels: tuple[int, ...] = (96, 64, 48, 32), num_classes: int = len(CLASSES)) -> None:
        super().__init__()
        if normalise not in ("unit", "imagenet"):
            raise ChestDxError(f"unknown normalisation {normalise!r}: use unit or imagenet")
        backbone = EfficientNetClassifier("lite0", num_classes=1, pretrained=encoder)
        self.stem, self.blocks = backbone.stem, backbone.blocks
        mean, std = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)) if normalise == "imagenet" else ((0.0,) * 3, (1.0,) * 3)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.decoder = UNetDecoder(
            spatial_dims=2, encoder_channels=ENCODER_CHANNELS, decoder_channels=decoder_channels,
            act=("relu", {"inplace": True}), norm=("batch", {"eps": 1e-3, "momentum": 0.1}), dropout=0.0,
            bias=False, upsample="nontrainable", pre_conv=None, interp_mode="nearest", align_corners=None, is_pad=True,
        )
        self.head = SegmentationHead(spatial_dims=2, in_channels=decoder_channels[-1], out_channels=num_classes,
                                     scale_factor=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: grey slices ``(N, 1, H, W)`` in 0-1 (H, W multiples of 32). Returns: logits ``(N, K, H, W)``."""
        h = self.stem((x.expand(-1, 3, -1, -1) - self.mean) / self.std)
        features = []
        for i, stage in enumerate(self.blocks):
            h = stage(h)
            if i in _SKIP_STAGES:
                features.append(h)
        # The first feature map only starts the decoder's chain; its last stage has no skip.
        return self.head(self.decoder(features, skip_connect=len(features) - 2))


def _stack_probabilities(net: nn.Module, stack: np.ndarray, size: int, session=None) -> torch.Tensor:
    """Class probabilities ``(n, K, h, w)`` of same-sized 8-bit slices ``(n, h, w)``, at their own size."""
    x = resize_slices(np.asarray(stack, np.float32), size, keep_aspect=False) / np.float32(255.0)
    x = np.ascontiguousarray(x[:, None], dtype=np.float32)
    if session is not None:
        logits = torch.from_numpy(session.run(None, {"x": x})[0])
    else:
        with torch.inference_mode():
            logits = net(torch.from_numpy(x))
    probs = torch.softmax(logits, 1)
    return nn.functional.interpolate(probs, size=stack.shape[1:], mode="bilinear", align_corners=False)


def predict_slices(net: nn.Module, slices: list[np.ndarray], size: int, batch_size: int = 8,
                   session=None) -> list[np.ndarray]:
    """Class probabilities of 8-bit slices, each returned at its own size.

    Args:
        net: a `LesionUNet` (eval mode).
        slices: 2-D uint8 (or 0-255 float) arrays, already cropped to the lungs; sizes may differ.
        size: the network's input side (slices are stretched to ``size`` x ``size``).
        batch_size: slices per forward pass (slices of one size run together).
        session: an ONNX Runtime session of the same network (``model.onnx``; about twice as
            fast on CPU, same outputs), used instead of ``net`` when given.

    Returns:
        float32 ``(K, h, w)`` probabilities per slice (softmax over `CLASSES`).
    """
    out: list[np.ndarray] = []
    for start in range(0, len(slices), batch_size):
        chunk = [np.asarray(s) for s in slices[start:start + batch_size]]
        groups = [chunk] if len({s.shape for s in chunk}) == 1 else [[s] for s in chunk]
        for group in groups:
            out.extend(_stack_probabilities(net, np.stack(group), size, session).numpy())
    return out


def lesion_labels(probs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Label map from class probabilities.

    Args:
        probs: ``(K, ...)`` probabilities over `CLASSES`.
        threshold: infection probability (``1 - p(background)``) at which a pixel is a lesion.

    Returns:
        uint8 map, same spatial shape: 0 background, 1 ground-glass, 2 consolidation (the
        likelier of the two where infected).
    """
    infected = 1.0 - probs[0] >= threshold
    return np.where(infected, 1 + np.argmax(probs[1:], axis=0), 0).astype(np.uint8)


def _lesion_config(size: int, normalise: str) -> RecipeConfig:
    """The card's description of a `LesionUNet` (not a classification recipe: not registered)."""
    return RecipeConfig(
        name="lesion-unet",
        input=InputSpec(window="lung", selection="all", lung_crop=True, size=size, channels=1, normalise=normalise),
        classes=CLASSES, unit="slice", aggregator="none",
        params={"encoder": "efficientnet-lite0", "normalise": normalise, "decoder_channels": [96, 64, 48, 32]},
    )


def save_lesion_model(net: LesionUNet, out_dir: str | Path, *, size: int, normalise: str, threshold: float,
                      **card_fields) -> Path:
    """Write a lesion segmenter as a checkpoint folder (fp16 ``model.pt`` + ``metadata.json``).

    Args:
        net: the trained network.
        out_dir: folder to write.
        size: its input side.
        normalise: its input normalisation.
        threshold: infection probability threshold (chosen on validation).
        **card_fields: further card entries (``training``, ``metrics``, ``limitations``, ...).

    Returns:
        The folder.
    """
    config = _lesion_config(size, normalise)
    card = new_card(config, Path(out_dir).name, threshold=threshold, task="lesion-segmentation", **card_fields)
    return save_checkpoint(net, card, out_dir, half=True)


def export_lesion_onnx(net: LesionUNet, out_dir: str | Path, size: int) -> Path:
    """Write ``model.onnx`` (input ``x`` (n, 1, size, size) in 0-1, output ``logits``) beside the weights.

    Args:
        net: the network.
        out_dir: its checkpoint folder.
        size: its input side (the decoder's shapes are traced for that size).

    Returns:
        The file.
    """
    path = Path(out_dir) / ONNX_FILE
    torch.onnx.export(net.eval(), torch.zeros(1, 1, size, size), path, input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}}, dynamo=False)
    return path


def load_lesion_model(name_or_path: str | Path = DEFAULT_LESION_MODEL) -> LoadedModel:
    """Load a lesion segmenter for inference.

    Args:
        name_or_path: a bundled name (``"lesion-default"``) or a checkpoint folder.

    Returns:
        The model (``net`` a `LesionUNet` in eval mode; ``threshold`` from its card; ``sessions``
        holding an ONNX Runtime session when the folder has ``model.onnx``).

    Raises:
        ChestDxError: not found, or not a lesion segmenter.
    """
    path = resolve_model_path(name_or_path)
    card = read_card(path)
    if card.extra.get("task") != "lesion-segmentation":
        raise ChestDxError(f"{name_or_path!r} is not a lesion segmenter (its card has no task 'lesion-segmentation'): "
                           f"give {DEFAULT_LESION_MODEL!r} or a folder written by scripts/train_lesion.py")
    config = card.recipe
    net = LesionUNet(encoder=False, normalise=config.input.normalise,
                     decoder_channels=tuple(config.params["decoder_channels"]))
    net.load_state_dict(read_weights(path))
    model = LoadedModel(card=card, path=path, sessions=[onnx_session(path / ONNX_FILE)] if (path / ONNX_FILE).is_file() else [])
    model.net = net.eval()  # not a registered recipe: the network is built here, not by LoadedModel
    return model


@dataclass
class LesionResult:
    """Lesions of a study, aligned with ``study.pixels``.

    Args:
        labels: uint8 ``(z, y, x)``: 0 background, 1 ground-glass opacity, 2 consolidation.
        lung_mask: bool ``(z, y, x)``: the lungs the lesions were restricted to.
        segmented: int indices of the slices the network ran on (slices without lung are not
            run; with ``max_slices`` the others take the labels of the nearest segmented slice).
        threshold: the infection probability threshold used.
        model: the segmenter's name.
        warnings: what went differently (no lung found, slices sampled, ...).
    """

    labels: np.ndarray
    lung_mask: np.ndarray
    segmented: np.ndarray
    threshold: float
    model: str
    warnings: list[str] = field(default_factory=list)

    def lesion_pixels(self) -> np.ndarray:
        """Returns: int ``(z,)``: lesion pixels per slice."""
        return (self.labels > 0).sum(axis=(1, 2))

    def key_slices(self, n: int = 3) -> np.ndarray:
        """Args: n: how many. Returns: indices of the ``n`` slices with the most lesion (none without lesion)."""
        area = self.lesion_pixels()
        order = np.argsort(-area, kind="stable")[:n]
        return order[area[order] > 0]


def measured_spacing(study: Study) -> tuple[float, float, float] | None:
    """The study's voxel spacing when its file recorded one (DICOM, NIfTI), else None (image files).

    Args:
        study: the study.

    Returns:
        ``(z, y, x)`` in mm, or None: volumes of such a study can only be counted in voxels.
    """
    return tuple(float(s) for s in study.spacing) if study.modality == "CT" else None


def in_plane_mm(study: Study) -> float:
    """Args: study: the study. Returns: its in-plane pixel size in mm (from a typical field of view when unknown)."""
    spacing = measured_spacing(study)
    return spacing[1] if spacing else ASSUMED_FOV_MM / max(study.pixels.shape[1:])


def _crop_box(lung_mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """The lungs' bounding box over the study with a `LUNG_MARGIN` rim, or None without lungs."""
    if not lung_mask.any():
        return None
    y0, y1, x0, x1 = lung_bbox(lung_mask)
    h, w = lung_mask.shape[-2:]
    dy, dx = round(LUNG_MARGIN * (y1 - y0)), round(LUNG_MARGIN * (x1 - x0))
    return max(0, y0 - dy), min(h, y1 + dy), max(0, x0 - dx), min(w, x1 + dx)


def _box_probabilities(study: Study, model: LoadedModel, indices: np.ndarray,
                       box: tuple[int, int, int, int]) -> torch.Tensor:
    """Class probabilities ``(n, K, box height, box width)`` of chosen slices, inside the lung box only."""
    y0, y1, x0, x1 = box
    rendered = render_8bit(study, "lung", slices=indices, region=(slice(y0, y1), slice(x0, x1)))
    session = model.sessions[0] if model.sessions else None
    return _stack_probabilities(model.net, rendered, model.config.input.size, session)


def lesion_heatmaps(study: Study, model: LoadedModel, indices, lung_mask: np.ndarray | None = None,
                    batch_size: int = 8) -> np.ndarray:
    """Infection probability of chosen slices: a heat map that points at lesions by construction.

    The slices are cropped to the study's lungs as in `segment_study`; the map is zero outside
    the crop. It is not restricted to the lung mask (callers that want that multiply by it).

    Args:
        study: the study.
        model: a lesion segmenter (`load_lesion_model`).
        indices: slice indices into ``study.pixels``.
        lung_mask: the study's lung mask ``(z, y, x)`` if already computed.
        batch_size: slices per forward pass.

    Returns:
        float32 ``(len(indices), y, x)`` in 0..1.
    """
    indices = np.atleast_1d(np.asarray(indices, dtype=int))
    lung_mask = study_lung_mask(study) if lung_mask is None else lung_mask
    y0, y1, x0, x1 = box = _crop_box(lung_mask) or (0, study.pixels.shape[1], 0, study.pixels.shape[2])
    maps = np.zeros((len(indices),) + study.pixels.shape[1:], dtype=np.float32)
    for start in range(0, len(indices), batch_size):
        probs = _box_probabilities(study, model, indices[start:start + batch_size], box)
        maps[start:start + batch_size, y0:y1, x0:x1] = 1.0 - probs[:, 0].numpy()
    return maps


def segment_study(study: Study, model: LoadedModel | None = None, *, lung_mask: np.ndarray | None = None,
                  max_slices: int | None = None, batch_size: int = 8, min_lesion_mm2: float | None = None) -> LesionResult:
    """Segment ground-glass opacity and consolidation in every lung slice of a CT study.

    Steps: lung mask (`chestdx.preprocess.pipeline.study_lung_mask`, unless given); the slices
    holding lung are rendered in the lung window, cropped to the study's lung box and run
    through the segmenter; a pixel is a lesion where its infection probability reaches the
    model's threshold; lesions farther than `LUNG_DILATION_MM` outside the lungs are dropped, and
    so are lesions (connected in-plane) smaller than the model's minimum area (its card's
    ``min_lesion_mm2``, chosen when it was trained; 0 without one).

    Args:
        study: a CT study (volume or slice; HU or 8-bit).
        model: a lesion segmenter; default `load_lesion_model()` (``lesion-default``).
        lung_mask: the study's lung mask ``(z, y, x)`` if already computed.
        max_slices: run the network on at most this many equidistant lung slices; every other
            lung slice takes the labels of the nearest one run (within its own lung mask).
            Volumes stay unbiased (systematic sampling), the label map coarser. None: all.
        batch_size: slices per forward pass.
        min_lesion_mm2: the minimum lesion area in mm² instead of the card's (image files'
            pixel size is taken from a typical field of view, `in_plane_mm`).

    Returns:
        The `LesionResult`, aligned with ``study.pixels``.

    Raises:
        ChestDxError: the study is an X-ray.

    Example:
        >>> result = segment_study(load_study("scan/"))
        >>> quantify(result.lung_mask, result.labels, study.spacing)["chest"]["involvement_percent"]
    """
    if study.kind == "xray":
        raise ChestDxError("lesion segmentation is for chest CT; this study is an X-ray")
    model = model or load_lesion_model()
    lung_mask = study_lung_mask(study) if lung_mask is None else np.asarray(lung_mask, bool)
    if lung_mask.shape != study.pixels.shape:
        raise ValueError(f"lung_mask shape {lung_mask.shape} does not match the study's {study.pixels.shape}")
    labels = np.zeros(study.pixels.shape, dtype=np.uint8)
    warnings: list[str] = []
    lung_slices = np.flatnonzero(lung_mask.any(axis=(1, 2)))
    box = _crop_box(lung_mask)
    if box is None:
        warnings.append("no lung found: nothing was segmented (is this a chest CT?)")
        return LesionResult(labels, lung_mask, lung_slices, model.threshold, model.name, warnings)
    run = lung_slices
    if max_slices and len(lung_slices) > max_slices:
        run = lung_slices[np.unique(np.linspace(0, len(lung_slices) - 1, max_slices).round().astype(int))]
        warnings.append(f"the network ran on {len(run)} of {len(lung_slices)} lung slices; "
                        "the others took the labels of the nearest one run")
    y0, y1, x0, x1 = box
    for start in range(0, len(run), batch_size):
        chunk = run[start:start + batch_size]
        probs = _box_probabilities(study, model, chunk, box).numpy()
        labels[chunk, y0:y1, x0:x1] = lesion_labels(probs.transpose(1, 0, 2, 3), model.threshold)
    if len(run) < len(lung_slices):
        nearest = run[np.abs(lung_slices[:, None] - run[None]).argmin(axis=1)]
        labels[lung_slices] = labels[nearest]
    pixel_mm = in_plane_mm(study)
    _drop_far_from_lungs(labels, lung_mask, box, pixel_mm)
    min_area = model.card.extra.get("min_lesion_mm2", 0.0) if min_lesion_mm2 is None else min_lesion_mm2
    drop_small_lesions(labels, min_area / pixel_mm**2, box)
    return LesionResult(labels, lung_mask, run, model.threshold, model.name, warnings)


def _drop_far_from_lungs(labels: np.ndarray, lung_mask: np.ndarray, box: tuple[int, int, int, int],
                         pixel_mm: float) -> None:
    """Zero (in place) lesion pixels farther than `LUNG_DILATION_MM` in-plane from the lung mask.

    Lesions lie inside the lung box (the network only sees it). Each slice with lesion outside
    the mask gets one distance transform, over the bounding box of those pixels widened by the
    tolerance: a lung pixel within the tolerance of one of them lies inside it, so the rule is
    exact at a fraction of a whole slice's cost.
    """
    y0, y1, x0, x1 = box
    sub_labels, sub_lung = labels[:, y0:y1, x0:x1], lung_mask[:, y0:y1, x0:x1]
    reach = int(np.ceil(LUNG_DILATION_MM / pixel_mm)) + 1
    outside = (sub_labels > 0) & ~sub_lung
    for z in np.flatnonzero(outside.any(axis=(1, 2))):
        ys, xs = np.flatnonzero(outside[z].any(axis=1)), np.flatnonzero(outside[z].any(axis=0))
        window = (slice(max(0, ys[0] - reach), ys[-1] + reach + 1), slice(max(0, xs[0] - reach), xs[-1] + reach + 1))
        lung, lesion = sub_lung[z][window], sub_labels[z][window]
        if not lung.any():
            lesion[outside[z][window]] = 0
            continue
        lesion[ndimage.distance_transform_edt(~lung) * pixel_mm > LUNG_DILATION_MM] = 0


def drop_small_lesions(labels: np.ndarray, min_pixels: float, box: tuple[int, int, int, int] | None = None) -> None:
    """Zero (in place) lesions of fewer than ``min_pixels`` pixels, each slice's 8-connected components apart.

    Args:
        labels: uint8 ``(z, y, x)`` label map.
        min_pixels: the smallest lesion kept, in pixels.
        box: ``(y0, y1, x0, x1)`` holding every lesion (the lung box), or None for the whole slice.
    """
    if min_pixels <= 1:
        return
    y0, y1, x0, x1 = box or (0, labels.shape[1], 0, labels.shape[2])
    sub = labels[:, y0:y1, x0:x1]
    for z in np.flatnonzero(sub.any(axis=(1, 2))):
        components, _ = ndimage.label(sub[z] > 0, structure=np.ones((3, 3), bool))
        small = np.bincount(components.ravel()) < min_pixels
        small[0] = False
        if small.any():
            sub[z][small[components]] = 0
