"""Checkpoints: weights plus a model card (``metadata.json``), bundled or user-trained."""

from __future__ import annotations

import datetime as _dt
import json
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from chestdx.errors import ChestDxError
from chestdx.models.backbones import WEIGHTS_DIR
from chestdx.models.registry import RecipeConfig, build_model

BUNDLED_DIR = WEIGHTS_DIR
DEFAULT_MODELS = {"ct-volume": "ct-default", "ct-slice": "ct-default", "xray": "xray-default"}
WEIGHTS_FILE = "model.pt"
ONNX_FILE = "model.onnx"
CARD_FILE = "metadata.json"
INTENDED_USE = "Research only. Not a medical device; not for clinical diagnosis or patient management."


@dataclass
class LoadedModel:
    """A network ready for inference, with its recipe and card.

    Args:
        net: the network in eval mode.
        config: the recipe config it was built from.
        card: the model card (``metadata.json`` contents).
        path: the checkpoint folder.
        session: ONNX Runtime session of ``model.onnx`` (outputs: slice features, logits)
            when the checkpoint ships one, else None.
    """

    net: nn.Module
    config: RecipeConfig
    card: dict
    path: Path
    session: object | None = None

    @property
    def name(self) -> str:
        """Returns: the model's name from its card (or its folder name)."""
        return self.card.get("name", self.path.name)

    @property
    def threshold(self) -> float:
        """Returns: the operating threshold on the positive (last) class probability."""
        return float(self.card.get("threshold", 0.5))

    @property
    def temperature(self) -> float:
        """Returns: the calibration temperature applied to logits (1.0 = none)."""
        return float(self.card.get("temperature", 1.0))


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def make_card(config: RecipeConfig, name: str, **fields) -> dict:
    """A model card with the fields every checkpoint carries, plus ``fields``.

    Args:
        config: the recipe config.
        name: model name.
        **fields: further card entries (``training``, ``metrics``, ``threshold``, ...).

    Returns:
        The card as a JSON-ready dict.
    """
    import monai

    import chestdx

    card = {
        "name": name,
        "recipe": config.to_dict(),
        "classes": list(config.classes),
        "input": config.input.to_dict(),
        "threshold": 0.5,
        "temperature": 1.0,
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_commit": _git_commit(),
        "libraries": {"chestdx": chestdx.__version__, "torch": torch.__version__, "monai": monai.__version__,
                      "python": platform.python_version()},
        "intended_use": INTENDED_USE,
    }
    card.update(fields)
    return card


def save_checkpoint(net: nn.Module, card: dict, out_dir: str | Path, half: bool = False) -> Path:
    """Write ``model.pt`` (state dict) and ``metadata.json`` into ``out_dir``.

    Args:
        net: the trained network.
        card: its model card (see `make_card`).
        out_dir: folder to write (created).
        half: store floating-point tensors as fp16 (halves the file; loaded back as fp32).

    Returns:
        The folder.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if half and v.is_floating_point() else v) for k, v in net.state_dict().items()}
    torch.save(state, out / WEIGHTS_FILE)
    (out / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    return out


class _FeaturesAndLogits(nn.Module):
    """Wraps a network so one call returns ``(encode(x), head(encode(x)))`` for export."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.net.encode(x)
        return features, self.net.head(features)


def export_onnx(net: nn.Module, out_dir: str | Path, size: int, channels: int = 3) -> Path:
    """Write ``model.onnx`` (inputs ``x`` (n, C, size, size); outputs features and logits).

    Only for networks whose slice logits are ``head(encode(x))`` (slice-level recipes).

    Args:
        net: the network in eval mode.
        out_dir: checkpoint folder.
        size: input height/width.
        channels: input channels.

    Returns:
        The file written.
    """
    path = Path(out_dir) / ONNX_FILE
    example = torch.zeros(1, channels, size, size)
    torch.onnx.export(_FeaturesAndLogits(net.eval()), example, path, input_names=["x"],
                      output_names=["features", "logits"], dynamic_axes={"x": {0: "n"}, "features": {0: "n"},
                                                                         "logits": {0: "n"}}, dynamo=False)
    return path


def _onnx_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def resolve_model_path(name_or_path: str | Path | None, kind: str = "ct-volume") -> Path:
    """Find a checkpoint folder by bundled name, by path, or the default for a study kind.

    Args:
        name_or_path: a bundled model name (see ``list_bundled``), a checkpoint folder, or
            None for the default of ``kind``.
        kind: study kind used when ``name_or_path`` is None.

    Returns:
        The checkpoint folder.

    Raises:
        ChestDxError: nothing found there.
    """
    if name_or_path is None:
        name_or_path = DEFAULT_MODELS[kind]
    path = Path(name_or_path)
    if not (path / CARD_FILE).is_file():
        path = BUNDLED_DIR / str(name_or_path)
    if not (path / CARD_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
        raise ChestDxError(
            f"no model {str(name_or_path)!r}: give a bundled model name ({', '.join(list_bundled()) or 'none installed'}) "
            f"or a folder holding {WEIGHTS_FILE} and {CARD_FILE} (as written by `chestdx train`)"
        )
    return path


def list_bundled() -> list[str]:
    """Returns: names of the models shipped inside the package."""
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / CARD_FILE).is_file())


def load_model(name_or_path: str | Path | None = None, kind: str = "ct-volume") -> LoadedModel:
    """Load a checkpoint for inference (no download: bundled weights ship with the package).

    Args:
        name_or_path: bundled name, checkpoint folder, or None for the default of ``kind``.
        kind: study kind used when ``name_or_path`` is None.

    Returns:
        The loaded model in eval mode.
    """
    path = resolve_model_path(name_or_path, kind)
    card = json.loads((path / CARD_FILE).read_text())
    config = RecipeConfig.from_dict(card["recipe"])
    # Pretrained backbone weights are about to be overwritten: skip reading them.
    config.params = {**config.params, **({"pretrained": False} if "pretrained" in config.params else {})}
    net = build_model(config)
    state = torch.load(path / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    net.eval()
    session = _onnx_session(path / ONNX_FILE) if (path / ONNX_FILE).is_file() else None
    return LoadedModel(net=net, config=config, card=card, path=path, session=session)
