"""dre-net (Song et al., 2021): ResNet + feature-pyramid detail module with top-K region crops.

A shared ResNet encodes the slice (global feature). A feature pyramid over its last two
scales (lateral 1x1 convs, top-down upsampling, 3x3 smoothing) scores candidate square
regions: two anchor sizes per position and scale. The ``top_k`` best regions (greedy
non-max suppression) are cut out of the input image and resized; a re-composed image is
the input multiplied by the upsampled region-score map. The crops and the re-composed image
are re-encoded by the same ResNet; the crop features are weighted by their region scores
(which is how the scoring convs learn from the classification loss), everything is
concatenated with the global feature and an MLP gives the logits. The chosen boxes of the
last forward are kept in ``last_boxes`` / ``last_box_scores`` as an explanation.

Values from the paper: 15 equidistant slices, lung cut-out with the < 50% lung filter, FPN
detail module with top-K = 3 regions plus a score-weighted image re-encoded by the shared
backbone, concatenation with the global feature, MLP, mean of slice probabilities. chestdx
choices: ResNet-18 (``depth`` 34 offered) from scratch instead of the paper's ImageNet
ResNet-50, anchor sizes, crop size, NMS threshold, optimiser and schedule.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.nets import ResNet
from torch import nn

from chestdx.models.registry import RecipeConfig, register_recipe
from chestdx.preprocess.spec import InputSpec

RESNET_LAYERS = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3]}


def anchor_boxes(height: int, width: int, grid: tuple[int, int], sizes: list[float]) -> torch.Tensor:
    """Square candidate boxes centred on the cells of a feature grid, shifted inside the image.

    Args:
        height: image height in pixels.
        width: image width in pixels.
        grid: ``(h, w)`` of the feature map.
        sizes: box sides as fractions of ``min(height, width)``.

    Returns:
        ``(len(sizes) * h * w, 4)`` boxes ``(y0, x0, y1, x1)`` in pixels, ordered like
        ``scores.flatten(1)`` of a ``(B, len(sizes), h, w)`` score map.
    """
    h, w = grid
    cy = (torch.arange(h, dtype=torch.float32) + 0.5) * height / h
    cx = (torch.arange(w, dtype=torch.float32) + 0.5) * width / w
    cy, cx = torch.meshgrid(cy, cx, indexing="ij")
    boxes = []
    for frac in sizes:
        side = min(frac * min(height, width), float(min(height, width)))
        y0 = (cy - side / 2).clamp(0, height - side)
        x0 = (cx - side / 2).clamp(0, width - side)
        boxes.append(torch.stack([y0, x0, y0 + side, x0 + side], dim=-1).reshape(-1, 4))
    return torch.cat(boxes)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Args: a: ``(N, 4)``; b: ``(M, 4)`` boxes ``(y0, x0, y1, x1)``. Returns: IoU ``(N, M)``."""
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).prod(-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def select_regions(scores: torch.Tensor, boxes: torch.Tensor, k: int, nms_iou: float | None) -> torch.Tensor:
    """Indices of the ``k`` best boxes after greedy non-max suppression.

    When suppression leaves fewer than ``k`` boxes, the best suppressed ones fill up.

    Args:
        scores: ``(N,)`` region scores.
        boxes: ``(N, 4)`` boxes.
        k: number of regions.
        nms_iou: IoU above which a lower-scored box is suppressed; None to skip NMS.

    Returns:
        ``(k,)`` indices into ``scores``, best first.
    """
    order = torch.argsort(scores, descending=True)
    if nms_iou is None:
        return order[:k]
    iou = box_iou(boxes[order], boxes[order])
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    chosen: list[int] = []
    for i in range(len(order)):
        if not suppressed[i]:
            chosen.append(i)
            if len(chosen) == k:
                break
            suppressed |= iou[i] > nms_iou
    chosen += [i for i in range(len(order)) if i not in chosen][: k - len(chosen)]
    return order[torch.tensor(chosen)]


def crop_resize(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear crops of boxes, resized to ``size`` x ``size`` (differentiable in the images).

    Args:
        images: ``(B, C, H, W)``.
        boxes: ``(B, K, 4)`` boxes ``(y0, x0, y1, x1)`` in pixels.
        size: output side.

    Returns:
        ``(B * K, C, size, size)``, crops of image 0 first.
    """
    b, c, height, width = images.shape
    k = boxes.shape[1]
    y0, x0, y1, x1 = boxes.reshape(-1, 4).unbind(-1)
    zero = torch.zeros_like(y0)
    theta = torch.stack([
        torch.stack([(x1 - x0) / width, zero, (x0 + x1) / width - 1], dim=-1),
        torch.stack([zero, (y1 - y0) / height, (y0 + y1) / height - 1], dim=-1),
    ], dim=1)
    grid = F.affine_grid(theta, [b * k, c, size, size], align_corners=False)
    return F.grid_sample(images.repeat_interleave(k, dim=0), grid, mode="bilinear", align_corners=False)


class DRENet(nn.Module):
    """ResNet + feature-pyramid detail module (Song et al.'s DRE-Net, sized for CPU).

    Args:
        num_classes: number of output classes.
        in_channels: image channels.
        depth: ResNet depth, 18 or 34.
        widen_factor: multiplier of the ResNet widths (64, 128, 256, 512).
        fpn_channels: channels of the pyramid.
        top_k: number of regions cropped.
        anchor_sizes: per pyramid scale (stride 16, stride 32), the two box sides as
            fractions of the image side.
        crop_fraction: side of the resized crops as a fraction of the input side.
        nms_iou: IoU of the region non-max suppression; None to skip it.
        hidden: hidden size of the MLP.
        dropout: dropout in the MLP.
    """

    def __init__(
        self,
        num_classes: int = 2,
        in_channels: int = 3,
        depth: int = 18,
        widen_factor: float = 0.5,
        fpn_channels: int = 64,
        top_k: int = 3,
        anchor_sizes: tuple[tuple[float, float], ...] = ((0.2, 0.3), (0.4, 0.55)),
        crop_fraction: float = 0.5,
        nms_iou: float | None = 0.3,
        hidden: int = 256,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        if depth not in RESNET_LAYERS:
            raise ValueError(f"depth must be one of {sorted(RESNET_LAYERS)}, got {depth}")
        self.backbone = ResNet(
            "basic", RESNET_LAYERS[depth], [64, 128, 256, 512], spatial_dims=2, n_input_channels=in_channels,
            conv1_t_size=7, conv1_t_stride=2, widen_factor=widen_factor, feed_forward=False,
        )
        c3, c4 = int(256 * widen_factor), int(512 * widen_factor)
        self.global_map = nn.Identity()
        self.lateral = nn.ModuleList([nn.Conv2d(c3, fpn_channels, 1), nn.Conv2d(c4, fpn_channels, 1)])
        self.smooth = nn.ModuleList(
            Convolution(2, fpn_channels, fpn_channels, kernel_size=3, act="relu", norm=None) for _ in range(2)
        )
        self.score = nn.ModuleList(nn.Conv2d(fpn_channels, len(s), 1) for s in anchor_sizes)
        self.anchor_sizes = [list(s) for s in anchor_sizes]
        self.top_k = top_k
        self.crop_fraction = crop_fraction
        self.nms_iou = nms_iou
        self.head = nn.Sequential(
            nn.Linear((top_k + 2) * c4, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes)
        )
        self.target_layer = "global_map"
        self.last_boxes: torch.Tensor | None = None
        self.last_box_scores: torch.Tensor | None = None

    def _scales(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        net = self.backbone
        x = net.maxpool(net.act(net.bn1(net.conv1(x))))
        c3 = net.layer3(net.layer2(net.layer1(x)))
        return c3, self.global_map(net.layer4(c3))

    def _region_scores(self, c3: torch.Tensor, c4: torch.Tensor) -> list[torch.Tensor]:
        p4 = self.lateral[1](c4)
        p3 = self.lateral[0](c3) + F.interpolate(p4, size=c3.shape[-2:], mode="nearest")
        return [score(smooth(p)) for p, smooth, score in zip((p3, p4), self.smooth, self.score)]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Global, top-K region and re-composed image features, concatenated.

        Also stores the chosen boxes in ``last_boxes`` ``(B, K, 4)`` as ``(y0, x0, y1, x1)``
        in input pixels and their sigmoid scores in ``last_box_scores`` ``(B, K)``.

        Args:
            x: slices ``(B, C, H, W)``.

        Returns:
            features ``(B, (K + 2) * F)``.
        """
        b, _, height, width = x.shape
        c3, c4 = self._scales(x)
        maps = self._region_scores(c3, c4)
        scores = torch.cat([m.flatten(1) for m in maps], dim=1)
        anchors = torch.cat([
            anchor_boxes(height, width, m.shape[-2:], sizes) for m, sizes in zip(maps, self.anchor_sizes)
        ]).to(x.device)
        with torch.no_grad():
            idx = torch.stack([select_regions(s.cpu(), anchors.cpu(), self.top_k, self.nms_iou) for s in scores])
        idx = idx.to(x.device)
        boxes = anchors[idx]
        weights = torch.sigmoid(torch.gather(scores, 1, idx))
        crop_size = max(1, round(self.crop_fraction * min(height, width)))
        crops = self.backbone(crop_resize(x, boxes, crop_size)).view(b, self.top_k, -1)
        score_map = torch.stack([
            F.interpolate(torch.sigmoid(m).amax(1, keepdim=True), size=(height, width), mode="bilinear",
                          align_corners=False)
            for m in maps
        ]).mean(0)
        recomposed = self.backbone(x * score_map)
        self.last_boxes, self.last_box_scores = boxes.detach(), weights.detach()
        glob = self.backbone.avgpool(c4).flatten(1)
        return torch.cat([glob, (crops * weights.unsqueeze(-1)).flatten(1), recomposed], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: slices ``(B, C, H, W)``. Returns: logits ``(B, K)``."""
        return self.head(self.encode(x))


DRE_NET = RecipeConfig(
    name="dre-net",
    input=InputSpec(window="lung", selection="equidistant", n_slices=15, lung_filter="dre", lung_crop=True,
                    size=224, channels=3, normalise="imagenet"),
    classes=("non-covid", "covid"),
    unit="slice",
    aggregator="mean-prob",
    params={"depth": 18, "widen_factor": 0.5, "fpn_channels": 64, "top_k": 3,
            "anchor_sizes": [[0.2, 0.3], [0.4, 0.55]], "crop_fraction": 0.5, "nms_iou": 0.3,
            "hidden": 256, "dropout": 0.3},
    train={"optimizer": "adamw", "lr": 3e-4, "weight_decay": 1e-4, "epochs": 20, "batch_size": 16, "patience": 5},
)


@register_recipe(DRE_NET)
def build_dre_net(config: RecipeConfig) -> DRENet:
    """Build the network; the channels come from ``config.input``.

    Args:
        config: a dre-net config.

    Returns:
        The network.
    """
    return DRENet(num_classes=len(config.classes), in_channels=config.input.channels, **config.params)
