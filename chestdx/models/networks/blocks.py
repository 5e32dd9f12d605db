"""Building blocks shared by several networks."""

from __future__ import annotations

from monai.networks.blocks import ResidualUnit
from torch import nn


def residual_units(in_channels: int, out_channels: int, n: int = 1, stride: int = 1) -> nn.Sequential:
    """``n`` residual units; the first changes channels and stride.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        n: number of units.
        stride: stride of the first unit.

    Returns:
        The units, in sequence.
    """
    return nn.Sequential(*(
        ResidualUnit(2, in_channels if i == 0 else out_channels, out_channels, strides=stride if i == 0 else 1,
                     act="relu", norm="batch", last_conv_only=True)
        for i in range(n)
    ))
