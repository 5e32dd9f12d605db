"""Checkpoints on disk: write weights with their card, export ONNX, assemble ensembles, build the network back.

Needs torch; loading for inference is ``chestdx.models.loading.load_model``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from chestdx.errors import ChestDxError
from chestdx.models.bundled import ONNX_FILE, WEIGHTS_FILE, resolve_model_path
from chestdx.models.card import ModelCard, new_card, read_card, write_card
from chestdx.models.recipes import build_model
from chestdx.models.registry import RecipeConfig


def save_checkpoint(net: nn.Module, card: ModelCard, out_dir: str | Path, half: bool = False) -> Path:
    """Write ``model.pt`` (state dict) and ``metadata.json`` into ``out_dir``.

    Args:
        net: the trained network.
        card: its model card (see ``chestdx.models.card.new_card``).
        out_dir: folder to write (created).
        half: store floating-point tensors as fp16 (halves the file; loaded back as fp32).

    Returns:
        The folder.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if half and v.is_floating_point() else v) for k, v in net.state_dict().items()}
    torch.save(state, out / WEIGHTS_FILE)
    write_card(card, out)
    return out


def read_weights(path: Path) -> dict:
    """Args: path: a checkpoint folder. Returns: its state dict in float32 (fp16 checkpoints included)."""
    state = torch.load(path / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def build_network(config: RecipeConfig, path: Path) -> nn.Module:
    """The network of a checkpoint, with its weights, in eval mode.

    Args:
        config: the checkpoint's recipe config.
        path: the checkpoint folder.

    Returns:
        The network.
    """
    # Pretrained backbone weights are about to be overwritten: skip reading them.
    params = {**config.params, **({"pretrained": False} if "pretrained" in config.params else {})}
    net = build_model(RecipeConfig.from_dict({**config.to_dict(), "params": params}))
    net.load_state_dict(read_weights(path))
    return net.eval()


class _FeaturesAndLogits(nn.Module):
    """Wraps a network so one call returns ``(encode(x), head(encode(x)))`` for export."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.net.encode(x)
        return features, self.net.head(features)


def export_onnx(net: nn.Module, out_dir: str | Path, size: int, channels: int = 3) -> list[Path]:
    """Write ``model.onnx`` (inputs ``x`` (n, C, size, size); outputs features and logits).

    Only for networks whose slice logits are ``head(encode(x))`` (slice-level recipes). An
    ensemble (a network with ``members``) gets one file per member, ``model-<i>.onnx``, each
    under the size of a single model; its features are the members' side by side and its
    logits their mean.

    Args:
        net: the network in eval mode.
        out_dir: checkpoint folder.
        size: input height/width.
        channels: input channels.

    Returns:
        The files written.
    """
    members = list(getattr(net, "members", []))
    targets = [(m, Path(out_dir) / f"model-{i}.onnx") for i, m in enumerate(members)] or [(net, Path(out_dir) / ONNX_FILE)]
    example = torch.zeros(1, channels, size, size)
    for module, path in targets:
        # The wrapper is put in eval mode too: the exporter restores its mode, and with it the network's.
        torch.onnx.export(_FeaturesAndLogits(module).eval(), example, path, input_names=["x"],
                          output_names=["features", "logits"], dynamic_axes={"x": {0: "n"}, "features": {0: "n"},
                                                                             "logits": {0: "n"}}, dynamo=False)
    return [path for _, path in targets]


def assemble_ensemble(member_dirs: list[str | Path], out_dir: str | Path, name: str | None = None) -> Path:
    """Put separately trained ai-corona checkpoints together as one ensemble checkpoint.

    The members must share recipe, classes, input and network parameters (they differ by
    seed). Weights are stored in fp16 (loaded back as fp32) so that an ensemble of three
    Lite0 networks stays under 25 MB; temperature and threshold start at 1.0 / 0.5 and are
    fitted with ``chestdx calibrate``.

    Args:
        member_dirs: checkpoint folders of the members (at least two).
        out_dir: folder to write (created).
        name: the ensemble's name (default: the folder name).

    Returns:
        The folder.

    Raises:
        ChestDxError: fewer than two members, or members that differ in more than their training.
    """
    if len(member_dirs) < 2:
        raise ChestDxError("an ensemble needs at least two member checkpoints")
    cards = [read_card(resolve_model_path(d)) for d in member_dirs]
    recipes = [{k: v for k, v in c.recipe.to_dict().items() if k != "train"} for c in cards]
    if recipes[0]["name"] != "ai-corona" or any(r != recipes[0] for r in recipes[1:]):
        raise ChestDxError("ensemble members must be ai-corona checkpoints with the same classes, input and network "
                           "parameters: " + ", ".join(str(d) for d in member_dirs))
    if recipes[0]["params"].get("members", 1) > 1:
        raise ChestDxError(f"{member_dirs[0]} is an ensemble already: give the checkpoints of its members instead")
    config = RecipeConfig.from_dict(cards[0].recipe.to_dict())
    config.params = {**config.params, "members": len(member_dirs)}
    net = build_model(RecipeConfig.from_dict({**config.to_dict(), "params": {**config.params, "pretrained": False}}))
    for module, d in zip(net.members, member_dirs):
        module.load_state_dict(read_weights(resolve_model_path(d)))
    out = Path(out_dir)
    members = []
    for c in cards:
        auc = c.metric("val", "auc")
        members.append({"name": c.name, "seed": c.training.get("seed"), "val_auc": None if auc is None else auc.value,
                        "training": c.training})
    card = new_card(config, name or out.name, members=members,
                    training={"data": cards[0].training.get("data"),
                              "seconds": sum(c.training.get("seconds", 0) for c in cards)})
    return save_checkpoint(net, card, out, half=True)
