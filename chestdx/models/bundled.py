"""Where checkpoints live: the bundled models inside the package, and the files of a checkpoint folder.

A leaf module (no torch, no other chestdx model module), so that every stage can find a
model without importing the networks.
"""

from __future__ import annotations

from pathlib import Path

from chestdx.errors import ChestDxError

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
WEIGHTS_FILE = "model.pt"
ONNX_FILE = "model.onnx"
CARD_FILE = "metadata.json"
DEFAULT_MODELS = {"ct-volume": "ct-default", "ct-slice": "ct-default", "xray": "xray-default"}


def list_bundled() -> list[str]:
    """Returns: names of the models shipped inside the package (folders with weights and a card)."""
    if not WEIGHTS_DIR.is_dir():
        return []
    return sorted(p.name for p in WEIGHTS_DIR.iterdir() if (p / CARD_FILE).is_file() and (p / WEIGHTS_FILE).is_file())


def resolve_model_path(name_or_path: str | Path | None, kind: str = "ct-volume") -> Path:
    """Find a checkpoint folder by bundled name, by path, or the default for a study kind.

    Args:
        name_or_path: a bundled model name (see ``list_bundled``), a checkpoint folder, or
            None for the default of ``kind``.
        kind: study kind used when ``name_or_path`` is None.

    Returns:
        The checkpoint folder, resolved.

    Raises:
        ChestDxError: nothing found there.
    """
    if name_or_path is None:
        name_or_path = DEFAULT_MODELS[kind]
    path = Path(name_or_path)
    if not (path / CARD_FILE).is_file():
        path = WEIGHTS_DIR / str(name_or_path)
    if not (path / CARD_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
        raise ChestDxError(
            f"no model {str(name_or_path)!r}: give a bundled model name ({', '.join(list_bundled()) or 'none installed'}) "
            f"or a folder holding {WEIGHTS_FILE} and {CARD_FILE} (as written by `chestdx train`)"
        )
    return path.resolve()


def onnx_files(path: Path) -> list[Path]:
    """Args: path: a checkpoint folder. Returns: its ONNX files (one, or one per ensemble member, in order)."""
    if (path / ONNX_FILE).is_file():
        return [path / ONNX_FILE]
    return sorted(path.glob("model-*.onnx"), key=lambda p: int(p.stem.split("-")[1]))
