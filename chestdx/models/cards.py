"""Model cards on disk (``metadata.json``), read without importing torch: bundled names, defaults, recipes.

The command line checks its arguments against these before it loads a network.
"""

from __future__ import annotations

import json
from pathlib import Path

from chestdx.errors import ChestDxError

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
"""The package's bundled weights (trained models and self-supervised encoders)."""
CARD_FILE = "metadata.json"
DEFAULT_MODELS = {"ct-volume": "ct-default", "ct-slice": "ct-default", "xray": "xray-default"}
"""The bundled model used for each study kind when none is named."""
BOX_RECIPES = ("dre-net",)
"""Recipes whose networks propose lesion boxes (``--method boxes``)."""


def list_bundled() -> list[str]:
    """Returns: names of the models shipped inside the package."""
    if not WEIGHTS_DIR.is_dir():
        return []
    return sorted(p.name for p in WEIGHTS_DIR.iterdir() if (p / CARD_FILE).is_file())


def card_folder(name_or_path: str | Path | None, kind: str = "ct-volume") -> Path:
    """The folder of a model's card: a checkpoint folder, a bundled name, or the default for a study kind.

    Args:
        name_or_path: a checkpoint folder, a bundled model name, or None.
        kind: study kind whose default model is used when ``name_or_path`` is None.

    Returns:
        The folder holding ``metadata.json``.

    Raises:
        ChestDxError: no card there.
    """
    name_or_path = DEFAULT_MODELS[kind] if name_or_path is None else name_or_path
    path = Path(name_or_path)
    if not (path / CARD_FILE).is_file():
        path = WEIGHTS_DIR / str(name_or_path)
    if not (path / CARD_FILE).is_file():
        raise ChestDxError(f"no model {str(name_or_path)!r}: give a bundled model name "
                           f"({', '.join(list_bundled()) or 'none installed'}) or a checkpoint folder holding "
                           f"{CARD_FILE} (as written by `chestdx train`)")
    return path


def read_card(name_or_path: str | Path | None, kind: str = "ct-volume") -> dict:
    """Args: name_or_path, kind: as for `card_folder`. Returns: the model card as a dict."""
    return json.loads((card_folder(name_or_path, kind) / CARD_FILE).read_text(encoding="utf-8"))


def card_recipe(card: dict) -> str:
    """Returns: the recipe name of a model card (``recipe`` is the recipe's config, or its name)."""
    recipe = card.get("recipe")
    return recipe.get("name", "") if isinstance(recipe, dict) else str(recipe or "")
