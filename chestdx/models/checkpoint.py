"""Checkpoints: weights plus a model card (``metadata.json``), bundled or user-trained."""

from __future__ import annotations

import datetime as _dt
import json
import platform
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from chestdx.errors import ChestDxError
from chestdx.models.cards import CARD_FILE, DEFAULT_MODELS, WEIGHTS_DIR, list_bundled
from chestdx.models.registry import RecipeConfig, build_model

BUNDLED_DIR = WEIGHTS_DIR
WEIGHTS_FILE = "model.pt"
ONNX_FILE = "model.onnx"
INTENDED_USE = "Research only. Not a medical device; not for clinical diagnosis or patient management."


@dataclass
class LoadedModel:
    """A network ready for inference, with its recipe and card.

    Args:
        net: the network in eval mode.
        config: the recipe config it was built from.
        card: the model card (``metadata.json`` contents).
        path: the checkpoint folder.
        sessions: ONNX Runtime sessions (outputs: slice features, logits) of ``model.onnx``,
            or of ``model-<i>.onnx`` for each member of an ensemble, when the checkpoint
            ships them; else empty.
    """

    net: nn.Module
    config: RecipeConfig
    card: dict
    path: Path
    sessions: list = field(default_factory=list)

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


def onnx_files(path: Path) -> list[Path]:
    """Args: path: a checkpoint folder. Returns: its ONNX files (one, or one per ensemble member, in order)."""
    if (path / ONNX_FILE).is_file():
        return [path / ONNX_FILE]
    return sorted(path.glob("model-*.onnx"), key=lambda p: int(p.stem.split("-")[1]))


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
    cards = [json.loads((resolve_model_path(d) / CARD_FILE).read_text()) for d in member_dirs]
    recipes = [{k: v for k, v in c["recipe"].items() if k != "train"} for c in cards]
    if recipes[0]["name"] != "ai-corona" or any(r != recipes[0] for r in recipes[1:]):
        raise ChestDxError("ensemble members must be ai-corona checkpoints with the same classes, input and network "
                           "parameters: " + ", ".join(str(d) for d in member_dirs))
    if recipes[0]["params"].get("members", 1) > 1:
        raise ChestDxError(f"{member_dirs[0]} is an ensemble already: give the checkpoints of its members instead")
    config = RecipeConfig.from_dict(cards[0]["recipe"])
    config.params = {**config.params, "members": len(member_dirs)}
    net = build_model(RecipeConfig.from_dict({**config.to_dict(), "params": {**config.params, "pretrained": False}}))
    for module, d in zip(net.members, member_dirs):
        module.load_state_dict(_read_weights(resolve_model_path(d)))
    out = Path(out_dir)
    aucs = [c.get("metrics", {}).get("val", {}).get("auc") for c in cards]
    members = [{"name": c.get("name"), "seed": c.get("training", {}).get("seed"),
                "val_auc": auc["value"] if isinstance(auc, dict) else auc, "training": c.get("training")}
               for c, auc in zip(cards, aucs)]
    card = make_card(config, name or out.name, members=members,
                     training={"data": cards[0].get("training", {}).get("data"),
                               "seconds": sum(c.get("training", {}).get("seconds", 0) for c in cards)})
    return save_checkpoint(net, card, out, half=True)


def _read_weights(path: Path) -> dict:
    """Args: path: a checkpoint folder. Returns: its state dict in float32 (fp16 checkpoints included)."""
    state = torch.load(path / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


_SHARED_ARENA: list = []


def _onnx_session(path: Path):
    import onnxruntime as ort

    if not _SHARED_ARENA:
        # One CPU arena for every session of the process: an arena per session keeps its own peak
        # activations, so the three sessions of an ensemble took 1.3 GB more than one network.
        info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, -1, -1, -1))
        _SHARED_ARENA.append(info)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.log_severity_level = 3
    options.add_session_config_entry("session.use_env_allocators", "1")
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
    net.load_state_dict(_read_weights(path))
    net.eval()
    sessions = [_onnx_session(f) for f in onnx_files(path)]
    return LoadedModel(net=net, config=config, card=card, path=path, sessions=sessions)
