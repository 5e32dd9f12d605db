"""residual-attention (Yazdani et al., 2020): a residual attention network on single slices.

Wang et al.'s (2017) attention module: ``p`` residual units, then a trunk branch of ``t``
residual units and a soft-mask branch (bottom-up max pooling with ``r`` residual units per
level and skip connections, top-down interpolation back to the input size, two 1x1 convs,
sigmoid) combined as ``(1 + M) * T``, then ``p`` residual units. Three stages at strides 4,
8 and 16 carry one attention module each, with 3, 2 and 1 mask levels (Attention-56's
layout); global average pooling gives the slice feature and a linear head the logits.
Residual units are MONAI ``ResidualUnit`` (conv-BN-ReLU-conv plus identity / projection).

Values from the papers: the module (p=1, t=2, r=1, (1+M)*T), stage layout, binary
COVID / non-COVID per slice, mean of slice probabilities per study. chestdx choices:
widths (16-128 instead of 64-1024; final features 7x7 at input size 224), optimiser and
schedule.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from chestdx.models.networks.blocks import residual_units
from chestdx.models.registry import RecipeConfig, register_recipe
from chestdx.preprocess.spec import InputSpec


class SoftMask(nn.Module):
    """Bottom-up / top-down soft-mask branch, ``levels`` poolings deep, output in (0, 1).

    Args:
        channels: feature channels.
        levels: number of max-pool levels (with a skip connection between levels).
        r: residual units between adjacent pooling layers.
    """

    def __init__(self, channels: int, levels: int, r: int = 1) -> None:
        super().__init__()
        self.down = nn.ModuleList(residual_units(channels, channels, r) for _ in range(levels))
        self.skip = nn.ModuleList(residual_units(channels, channels, 1) for _ in range(levels - 1))
        self.up = nn.ModuleList(residual_units(channels, channels, r) for _ in range(levels - 1))
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.out = nn.Sequential(
            nn.BatchNorm2d(channels), nn.ReLU(), nn.Conv2d(channels, channels, 1),
            nn.BatchNorm2d(channels), nn.ReLU(), nn.Conv2d(channels, channels, 1), nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(N, C, H, W)``. Returns: the mask ``(N, C, H, W)``."""
        sizes, skips = [], []
        y = x
        for i, down in enumerate(self.down):
            sizes.append(y.shape[-2:])
            y = down(self.pool(y))
            if i < len(self.skip):
                skips.append(self.skip[i](y))
        for up, skip, size in zip(self.up, reversed(skips), reversed(sizes[1:])):
            y = up(F.interpolate(y, size=size, mode="bilinear", align_corners=False) + skip)
        return self.out(F.interpolate(y, size=sizes[0], mode="bilinear", align_corners=False))


class AttentionModule(nn.Module):
    """Residual attention module: ``p`` units, ``(1 + M) * T``, ``p`` units.

    Args:
        channels: feature channels.
        levels: pooling levels of the soft-mask branch.
        p: pre / post residual units.
        t: trunk residual units.
        r: residual units between pooling layers of the mask.
    """

    def __init__(self, channels: int, levels: int, p: int = 1, t: int = 2, r: int = 1) -> None:
        super().__init__()
        self.pre = residual_units(channels, channels, p)
        self.trunk = residual_units(channels, channels, t)
        self.mask = SoftMask(channels, levels, r)
        self.post = residual_units(channels, channels, p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(N, C, H, W)``. Returns: ``(N, C, H, W)``."""
        x = self.pre(x)
        return self.post((1 + self.mask(x)) * self.trunk(x))


class ResidualAttentionNet(nn.Module):
    """Attention-56-style network with small widths.

    Args:
        num_classes: number of output classes.
        in_channels: image channels.
        widths: channels of the stem and of the three attention stages (4 values); a
            final stride-2 stage of residual units uses the last width.
        mask_levels: soft-mask depth of each stage's attention module.
        p: pre / post residual units per attention module.
        t: trunk residual units.
        r: residual units between mask pooling layers.
        dropout: dropout before the head.
    """

    def __init__(
        self,
        num_classes: int = 2,
        in_channels: int = 3,
        widths: tuple[int, ...] = (16, 32, 64, 128),
        mask_levels: tuple[int, ...] = (3, 2, 1),
        p: int = 1,
        t: int = 2,
        r: int = 1,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if len(widths) != len(mask_levels) + 1:
            raise ValueError(f"need one width more than attention stages, got {widths} and {mask_levels}")
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(widths[0]), nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1),
        )
        stages = []
        for i, levels in enumerate(mask_levels):
            stages.append(residual_units(widths[max(i - 1, 0)], widths[i], 1, stride=1 if i == 0 else 2))
            stages.append(AttentionModule(widths[i], levels, p, t, r))
        self.stages = nn.Sequential(*stages)
        self.final = nn.Sequential(
            residual_units(widths[-2], widths[-1], 3, stride=2), nn.BatchNorm2d(widths[-1]), nn.ReLU()
        )
        self.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(widths[-1], num_classes))
        self.target_layer = "final"

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: slices ``(N, C, H, W)``. Returns: pooled features ``(N, widths[-1])``."""
        return self.final(self.stages(self.stem(x))).mean(dim=(2, 3))

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """Args: features: ``(N, D)``. Returns: logits ``(N, K)``."""
        return self.fc(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: slices ``(B, C, H, W)``. Returns: logits ``(B, K)``."""
        return self.head(self.encode(x))


RESIDUAL_ATTENTION = RecipeConfig(
    name="residual-attention",
    input=InputSpec(window="lung", selection="all", size=224, channels=3, normalise="unit"),
    classes=("non-covid", "covid"),
    unit="slice",
    aggregator="mean-prob",
    params={"widths": [16, 32, 64, 128], "mask_levels": [3, 2, 1], "p": 1, "t": 2, "r": 1, "dropout": 0.2},
    train={"optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-4, "epochs": 30, "batch_size": 32, "patience": 6},
)


@register_recipe(RESIDUAL_ATTENTION)
def build_residual_attention(config: RecipeConfig) -> ResidualAttentionNet:
    """Build the network; the channels come from ``config.input``.

    Args:
        config: a residual-attention config.

    Returns:
        The network.
    """
    return ResidualAttentionNet(num_classes=len(config.classes), in_channels=config.input.channels, **config.params)
