"""detl (Basu, Mitra & Saha, 2020): domain extension transfer learning for chest X-rays.

A CNN is first trained on a large related X-ray task (normal vs disease, NIH
ChestX-ray14 in the paper: `chestdx.train.transfer.fit_source`), then its last fully
connected layer is replaced for the target classes, the layers up to the last
convolutional block are frozen, and the last block plus the head are fine-tuned with
SGD (lr 1e-4, momentum 0.9). Explained with Grad-CAM on the last block.

Backbones (``params["backbone"]``): ``"lite0"``, the ImageNet EfficientNet-Lite0 of
``ai-corona``; or small VGG-, ResNet- and AlexNet-style networks standing in for the
paper's VGG16, ResNet50 and AlexNet (built from MONAI blocks; chestdx choices: widths 16
to 128, batch norm, global average pooling, one hidden layer before the head). The
parameters the target stage trains, per backbone, are in `TARGET_TRAINABLE`; use
`detl_config` to get a config for a backbone other than the default.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from monai.networks.blocks import Convolution
from torch import nn

from chestdx.errors import ChestDxError
from chestdx.models.bundled import WEIGHTS_FILE
from chestdx.models.networks.blocks import residual_units
from chestdx.models.networks.efficientnet import EfficientNetClassifier
from chestdx.models.registry import RecipeConfig, register_recipe
from chestdx.preprocess.spec import InputSpec

# Module-name prefixes left trainable in the target stage: the last block and the head.
TARGET_TRAINABLE = {
    "lite0": ["blocks.6", "conv_head", "fc"],
    "vgg": ["blocks.4", "classifier", "fc"],
    "resnet": ["blocks.4", "classifier", "fc"],
    "alexnet": ["blocks.2", "classifier", "fc"],
}
HEAD_PREFIX = "fc."


def _conv(in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1) -> Convolution:
    """Conv + batch norm + ReLU (MONAI ``Convolution``), "same" padding."""
    return Convolution(2, in_channels, out_channels, strides=stride, kernel_size=kernel, act="relu", norm="batch")


def vgg_blocks(widths=(16, 32, 64, 96, 128), depths=(1, 1, 2, 2, 2)) -> list[nn.Module]:
    """VGG-style stages: ``depth`` 3x3 convs then a 2x2 max pool.

    Args:
        widths: channels of each stage.
        depths: convs per stage.

    Returns:
        The stages (stride 32 overall).
    """
    stages, c_in = [], 3
    for width, depth in zip(widths, depths):
        layers = [_conv(c_in if i == 0 else width, width) for i in range(depth)]
        stages.append(nn.Sequential(*layers, nn.MaxPool2d(2)))
        c_in = width
    return stages


def resnet_blocks(widths=(16, 32, 64, 128), units: int = 2) -> list[nn.Module]:
    """ResNet-style: a 7x7 stride-2 stem with max pool, then stages of MONAI residual units.

    Args:
        widths: channels of each residual stage (the stem has ``widths[0]``).
        units: residual units per stage.

    Returns:
        The stem and the stages (stride 32 overall).
    """
    stem = nn.Sequential(_conv(3, widths[0], kernel=7, stride=2), nn.MaxPool2d(3, stride=2, padding=1))
    stages = [residual_units(widths[max(i - 1, 0)], w, units, stride=1 if i == 0 else 2) for i, w in enumerate(widths)]
    return [stem, *stages]


def alexnet_blocks(widths=(24, 64, 96, 96, 64)) -> list[nn.Module]:
    """AlexNet-style: 11x11 stride-4 conv, 5x5 conv, then three 3x3 convs, max pools between.

    Args:
        widths: channels of the five convs.

    Returns:
        Three stages: conv1 + pool, conv2 + pool, conv3-5 + pool (stride 32 overall).
    """
    pool = nn.MaxPool2d(3, stride=2, padding=1)
    return [
        nn.Sequential(_conv(3, widths[0], kernel=11, stride=4), pool),
        nn.Sequential(_conv(widths[0], widths[1], kernel=5), pool),
        nn.Sequential(_conv(widths[1], widths[2]), _conv(widths[2], widths[3]), _conv(widths[3], widths[4]), pool),
    ]


SMALL_BACKBONES = {"vgg": (vgg_blocks, 128), "resnet": (resnet_blocks, 128), "alexnet": (alexnet_blocks, 64)}


class ConvNetClassifier(nn.Module):
    """Conv stages + global average pool + hidden layer + linear head.

    Args:
        blocks: the conv stages, in order (``blocks.0`` ... ``blocks.N-1``).
        feature_dim: channels out of the last stage.
        num_classes: number of output classes.
        hidden: width of the hidden layer before the head.
        dropout: dropout before the hidden layer and the head.
    """

    def __init__(self, blocks: list[nn.Module], feature_dim: int, num_classes: int, hidden: int = 128,
                 dropout: float = 0.3) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim, hidden), nn.ReLU(),
                                        nn.Dropout(dropout))
        self.fc = nn.Linear(hidden, num_classes)
        self.target_layer = f"blocks.{len(blocks) - 1}"

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(N, 3, H, W)``. Returns: pooled features ``(N, feature_dim)``."""
        return self.pool(self.blocks(x)).flatten(1)

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """Args: features: ``(B, feature_dim)``. Returns: logits ``(B, K)``."""
        return self.fc(self.classifier(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(B, 3, H, W)``. Returns: logits ``(B, K)``."""
        return self.head(self.encode(x))


def load_source_weights(net: nn.Module, path: str | Path) -> None:
    """Copy a source-task checkpoint into every layer of ``net`` except the head (``fc``).

    Args:
        net: the freshly built target network.
        path: ``model.pt`` of the source task, or the folder holding it.

    Raises:
        ChestDxError: the file is missing or was trained with another backbone.
    """
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS_FILE
    if not path.is_file():
        raise ChestDxError(f"DETL source weights {path} not found: train the source task again "
                           "(`chestdx train --recipe detl --source ADAPTER:PATH ...`)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    body = {k: v.float() if v.is_floating_point() else v for k, v in state.items() if not k.startswith(HEAD_PREFIX)}
    try:
        missing, unexpected = net.load_state_dict(body, strict=False)
    except RuntimeError as exc:
        raise ChestDxError(f"DETL source weights {path} do not fit this backbone: train the source task with "
                           "the same backbone") from exc
    missing = [k for k in missing if not k.startswith(HEAD_PREFIX)]
    if missing or unexpected:
        raise ChestDxError(f"DETL source weights {path} do not fit this backbone (e.g. "
                           f"{(missing or unexpected)[0]!r}): train the source task with the same backbone")


def detl_config(backbone: str = "lite0", classes: tuple[str, ...] = ("normal", "pneumonia", "other-disease", "covid"),
                epochs: int = 30, batch_size: int = 16) -> RecipeConfig:
    """The DETL recipe for one backbone.

    Args:
        backbone: ``"lite0"``, ``"vgg"``, ``"resnet"`` or ``"alexnet"``.
        classes: target classes, in logit order.
        epochs: epochs of the target stage (the source stage uses ``train["source"]``).
        batch_size: batch size of both stages.

    Returns:
        The config: ``train["stages"]`` is the target stage (last block + head trainable,
        SGD lr 1e-4 momentum 0.9); ``train["source"]`` the source stage that
        ``fit_source`` runs (every layer trainable).
    """
    if backbone not in TARGET_TRAINABLE:
        raise ChestDxError(f"unknown DETL backbone {backbone!r}: choose one of {', '.join(TARGET_TRAINABLE)}")
    return RecipeConfig(
        name="detl",
        input=InputSpec(window="lung", selection="all", size=224, channels=3, normalise="imagenet"),
        classes=tuple(classes),
        unit="slice",
        aggregator="mean-prob",
        params={"backbone": backbone, "pretrained": True, "dropout": 0.3},
        train={
            "batch_size": batch_size,
            "weight_decay": 0.0,
            "patience": 8,
            "source": {"name": "source", "optimizer": "adamw", "lr": 3e-4, "weight_decay": 1e-4,
                       "epochs": 10, "patience": 3, "freeze": []},
            "stages": [{"name": "target", "trainable": list(TARGET_TRAINABLE[backbone]), "optimizer": "sgd",
                        "lr": 1e-4, "momentum": 0.9, "epochs": epochs}],
        },
    )


@register_recipe(detl_config())
def build_detl(config: RecipeConfig) -> nn.Module:
    """Build the DETL network; with ``pretrained``, start from the source-task weights when
    ``params["source_weights"]`` is set, else from ImageNet (Lite0) or random (small nets).

    Args:
        config: a detl config.

    Returns:
        The network (head sized for ``config.classes``).
    """
    params = copy.deepcopy(config.params)
    backbone = params.get("backbone", "lite0")
    source = params.get("source_weights")
    pretrained = bool(params.get("pretrained", True))
    dropout = float(params.get("dropout", 0.3))
    k = len(config.classes)
    if backbone == "lite0":
        net = EfficientNetClassifier("lite0", num_classes=k, pretrained=pretrained and not source, dropout=dropout)
    elif backbone in SMALL_BACKBONES:
        make_blocks, dim = SMALL_BACKBONES[backbone]
        net = ConvNetClassifier(make_blocks(), dim, k, dropout=dropout)
    else:
        raise ChestDxError(f"unknown DETL backbone {backbone!r}: choose one of {', '.join(TARGET_TRAINABLE)}")
    names = [name for name, _ in net.named_parameters()]
    for stage in config.train.get("stages") or []:
        unknown = [t for t in stage.get("trainable") or [] if not any(n.startswith(t) for n in names)]
        if unknown:
            raise ChestDxError(f"DETL stage {stage.get('name')!r} keeps {unknown} trainable, which the {backbone!r} "
                               f"backbone does not have: build the config with detl_config({backbone!r})")
    if pretrained and source:
        load_source_weights(net, source)
    return net
