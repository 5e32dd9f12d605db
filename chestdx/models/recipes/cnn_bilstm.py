"""cnn-bilstm (Kara et al., 2021): a small slice CNN, then a biLSTM over groups of 50 slices.

Slice CNN: four 3x3 conv layers with ReLU (2x2 max pool between them); the global max pool
of each layer's output is taken and the four vectors are concatenated into the slice
feature. Group model: a bidirectional LSTM over the ``group_size`` slice features of a
group, every time step's output kept and flattened, dropout, dense -> one prediction per
group. The study decision is Kara's majority vote over groups with the "healthy is
overridden when a non-healthy class has p > 0.9" rule (aggregator ``"majority-vote"``).

Training runs in two stages, described in ``config.train["stages"]``:

1. ``"cnn"``: slices (each with its study's label) through ``forward_slices`` (CNN +
   ``cnn_head``), everything trainable.
2. ``"lstm"``: groups ``(B, S, C, H, W)`` through ``forward`` with the ``cnn`` frozen, so
   only the biLSTM and the dense head learn.

Values from the paper: the architecture, groups of 50, CLAHE, lung-area slice filter, three
classes, two-stage training, the 0.9 override. chestdx choices (not taken from the paper):
input size 128 (keeps 50-slice groups CPU-feasible), layer widths, LSTM size, optimiser,
learning rates, epochs and batch sizes.
"""

from __future__ import annotations

import torch
from monai.networks.blocks import Convolution
from torch import nn

from chestdx.models.registry import RecipeConfig, register_recipe
from chestdx.preprocess.spec import InputSpec


class SliceCNN(nn.Module):
    """Four conv + ReLU layers; the global max pools of all four outputs, concatenated.

    Args:
        in_channels: image channels.
        widths: output channels of the four layers.
    """

    def __init__(self, in_channels: int = 1, widths: tuple[int, ...] = (16, 32, 64, 128)) -> None:
        super().__init__()
        chans = [in_channels, *widths]
        self.layers = nn.ModuleList(
            Convolution(2, chans[i], chans[i + 1], kernel_size=3, act="relu", norm=None)
            for i in range(len(widths))
        )
        self.downsample = nn.MaxPool2d(2)
        self.out_dim = sum(widths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(N, C, H, W)``. Returns: ``(N, sum(widths))``."""
        pooled = []
        for i, layer in enumerate(self.layers):
            x = layer(self.downsample(x) if i else x)
            pooled.append(torch.amax(x, dim=(2, 3)))
        return torch.cat(pooled, dim=1)


class CNNBiLSTM(nn.Module):
    """Kara et al.'s network: slice CNN, biLSTM over a group of slices, dense head.

    Args:
        num_classes: number of output classes.
        in_channels: image channels.
        widths: widths of the four conv layers.
        group_size: slices per group ``S`` (the flattened LSTM output has ``S`` steps).
        lstm_hidden: hidden size of each LSTM direction.
        dropout: dropout before the dense layers.
    """

    def __init__(
        self,
        num_classes: int = 3,
        in_channels: int = 1,
        widths: tuple[int, ...] = (16, 32, 64, 128),
        group_size: int = 50,
        lstm_hidden: int = 32,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.group_size = group_size
        self.cnn = SliceCNN(in_channels, tuple(widths))
        self.cnn_head = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.cnn.out_dim, num_classes))
        self.lstm = nn.LSTM(self.cnn.out_dim, lstm_hidden, batch_first=True, bidirectional=True)
        self.dense = nn.Sequential(nn.Dropout(dropout), nn.Linear(group_size * 2 * lstm_hidden, num_classes))
        self.target_layer = f"cnn.layers.{len(widths) - 1}"

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: slices ``(N, C, H, W)``. Returns: CNN features ``(N, D)``."""
        return self.cnn(x)

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """biLSTM over the slices of each group, all steps flattened, dense.

        Args:
            features: ``(B, S, D)`` slice features of ``B`` groups, ``S == group_size``.

        Returns:
            logits ``(B, K)``.
        """
        if features.shape[1] != self.group_size:
            raise ValueError(f"groups must hold {self.group_size} slices, got {features.shape[1]}")
        steps, _ = self.lstm(features)
        return self.dense(steps.flatten(1))

    def forward_slices(self, x: torch.Tensor) -> torch.Tensor:
        """Stage-1 model: slice-level logits from the CNN alone.

        Args:
            x: slices ``(N, C, H, W)``.

        Returns:
            logits ``(N, K)``.
        """
        return self.cnn_head(self.encode(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: groups ``(B, S, C, H, W)``. Returns: logits per group ``(B, K)``.

        A group that is one slice repeated (a single-slice study, `make_groups`) goes through the
        CNN once, not ``S`` times: the same features, at a fiftieth of the cost.
        """
        b, s = x.shape[:2]
        repeated = (x == x[:, :1]).flatten(1).all(1)
        if repeated.all():
            return self.head(self.encode(x[:, 0]).unsqueeze(1).expand(-1, s, -1))
        if not repeated.any():
            return self.head(self.encode(x.flatten(0, 1)).view(b, s, -1))
        once = self.encode(x[repeated, 0]).unsqueeze(1).expand(-1, s, -1)
        each = self.encode(x[~repeated].flatten(0, 1)).view(-1, s, self.cnn.out_dim)
        features = once.new_zeros(b, s, self.cnn.out_dim)
        features[repeated], features[~repeated] = once, each.to(once.dtype)
        return self.head(features)


CNN_BILSTM = RecipeConfig(
    name="cnn-bilstm",
    input=InputSpec(window="lung", clahe=True, selection="groups", group_size=50, lung_filter="kara",
                    size=128, channels=1, normalise="unit"),
    classes=("normal", "pneumonia", "covid"),
    unit="bag",
    aggregator="majority-vote",
    params={"widths": [16, 32, 64, 128], "lstm_hidden": 32, "dropout": 0.5},
    train={
        "optimizer": "adam",
        "weight_decay": 0.0,
        "patience": 5,
        "stages": [
            {"name": "cnn", "unit": "slice", "method": "forward_slices", "freeze": [],
             "epochs": 15, "lr": 1e-3, "batch_size": 64},
            {"name": "lstm", "unit": "bag", "method": "forward", "freeze": ["cnn"],
             "epochs": 30, "lr": 1e-3, "batch_size": 4},
        ],
    },
)


@register_recipe(CNN_BILSTM)
def build_cnn_bilstm(config: RecipeConfig) -> CNNBiLSTM:
    """Build the network; channels and group size come from ``config.input``.

    Args:
        config: a cnn-bilstm config.

    Returns:
        The network.
    """
    return CNNBiLSTM(num_classes=len(config.classes), in_channels=config.input.channels,
                     group_size=config.input.group_size, **config.params)
