"""EfficientNet slice classifiers: one network, or a deep ensemble with the same encode/head contract."""

from __future__ import annotations

import torch
from torch import nn

from chestdx.errors import ChestDxError
from chestdx.models.backbones import efficientnet_bn, efficientnet_lite, encoder_weights_path


class EfficientNetClassifier(nn.Module):
    """EfficientNet encoder + dropout + linear head; bags of slices are pooled by mean of features.

    Args:
        backbone: ``"lite0"``, ``"lite1"``, ``"lite2"`` (ImageNet weights) or
            ``"efficientnet-b0"`` ... ``"efficientnet-b3"`` (random init).
        num_classes: number of output classes.
        pretrained: True for ImageNet weights (Lite only); or the name of a bundled encoder
            (``"ct-moco-lite0"``: ``chestdx/weights/<name>/encoder.pt``) or the path of an
            encoder state dict, as written by ``scripts/pretrain_ct_moco.py``; False for
            random initialisation.
        dropout: dropout before the head.
    """

    def __init__(self, backbone: str = "lite0", num_classes: int = 2, pretrained: bool | str = True,
                 dropout: float = 0.3) -> None:
        super().__init__()
        if backbone.startswith("lite"):
            net = efficientnet_lite(backbone, pretrained=pretrained is True)
            act = nn.ReLU6()
        else:
            net = efficientnet_bn(backbone)
            act = nn.SiLU()
        self.stem = nn.Sequential(net._conv_stem_padding, net._conv_stem, net._bn0, act)
        self.blocks = net._blocks
        self.conv_head = nn.Sequential(net._conv_head_padding, net._conv_head, net._bn1)
        self.act_head = nn.ReLU6() if backbone.startswith("lite") else nn.SiLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(net._fc.in_features, num_classes)
        self.target_layer = "act_head"
        if isinstance(pretrained, str):
            state = torch.load(encoder_weights_path(pretrained), map_location="cpu", weights_only=True)
            try:
                missing, unexpected = self.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
            except RuntimeError as exc:  # tensor shapes of another backbone
                missing, unexpected = [str(exc).splitlines()[-1].strip()], []
            if unexpected or set(missing) != {"fc.weight", "fc.bias"}:
                raise ChestDxError(f"encoder weights {pretrained!r} do not fit backbone {backbone!r} "
                                   f"(missing {missing[:3]}, unexpected {unexpected[:3]}): use the backbone they were "
                                   "pre-trained with")

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(N, 3, H, W)``. Returns: the last feature maps ``(N, 1280, h, w)``."""
        return self.act_head(self.conv_head(self.blocks(self.stem(x))))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(N, 3, H, W)``. Returns: pooled slice features ``(N, 1280)``."""
        return self.pool(self.feature_maps(x)).flatten(1)

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """Args: features: ``(B, 1280)``. Returns: logits ``(B, K)``."""
        return self.fc(self.dropout(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: slices ``(B, 3, H, W)`` or bags ``(B, S, 3, H, W)`` (features averaged over S).

        Returns:
            logits ``(B, K)``.
        """
        if x.ndim == 5:
            b, s = x.shape[:2]
            return self.head(self.encode(x.flatten(0, 1)).view(b, s, -1).mean(1))
        return self.head(self.encode(x))


class EfficientNetEnsemble(nn.Module):
    """A deep ensemble of `EfficientNetClassifier` members with the same backbone and input.

    Slice features are the members' features side by side and the logits the mean of the
    members' logits, so the ensemble keeps the single network's ``encode`` / ``head`` contract
    (study pooling, CAM and ONNX export per member work unchanged). Members are trained
    separately (one seed each) and put together with `chestdx.models.checkpoint.assemble_ensemble`.

    Args:
        members: number of members.
        **member_args: arguments of each `EfficientNetClassifier`.
    """

    def __init__(self, members: int, **member_args) -> None:
        super().__init__()
        self.members = nn.ModuleList(EfficientNetClassifier(**member_args) for _ in range(members))
        self.fused_maps = nn.Identity()  # hook point: all members' feature maps, channels concatenated
        self.target_layer = "fused_maps"

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(N, 3, H, W)``. Returns: every member's last feature maps ``(N, M * 1280, h, w)``."""
        return self.fused_maps(torch.cat([m.feature_maps(x) for m in self.members], 1))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(N, 3, H, W)``. Returns: pooled slice features ``(N, M * 1280)``."""
        return self.feature_maps(x).mean((2, 3))

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """Args: features: ``(..., M * 1280)``. Returns: the mean of the members' logits ``(..., K)``."""
        chunks = features.chunk(len(self.members), -1)
        return torch.stack([m.head(c) for m, c in zip(self.members, chunks)]).mean(0)

    # Slices or bags, through this class's encode / head: the single network's forward as it stands.
    forward = EfficientNetClassifier.forward
