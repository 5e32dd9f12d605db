"""The built-in recipes and variants, and the functions that build from them.

Importing this package registers every built-in recipe (each module registers itself with
`chestdx.models.registry`) and imports torch.
"""

from __future__ import annotations

import copy

from torch import nn

from chestdx.errors import ChestDxError
from chestdx.models.recipes import ai_corona, cnn_bilstm, detl, dre_net, residual_attention  # noqa: F401
from chestdx.models.registry import RecipeConfig, Variant, recipe_table, variant_table


def list_recipes() -> list[str]:
    """Returns: the registered recipe names, sorted."""
    return sorted(recipe_table())


def list_variants() -> list[str]:
    """Returns: the registered variant names, sorted."""
    return sorted(variant_table())


def get_recipe(name: str, **overrides) -> RecipeConfig:
    """A copy of a recipe's default config, with top-level fields overridden.

    Args:
        name: recipe name.
        **overrides: fields of `RecipeConfig` to replace (``classes=...``, ``params=...``).

    Returns:
        The config.

    Raises:
        ChestDxError: unknown recipe.
    """
    if name not in recipe_table():
        raise ChestDxError(f"unknown recipe {name!r}: choose one of {', '.join(list_recipes())}")
    config = copy.deepcopy(recipe_table()[name][0])
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def get_variant(name: str) -> Variant:
    """A registered variant, its config a copy the caller may change.

    Args:
        name: variant name (``chestdx recipes`` lists them).

    Returns:
        The variant.

    Raises:
        ChestDxError: unknown variant.
    """
    if name not in variant_table():
        raise ChestDxError(f"unknown variant {name!r}: choose one of {', '.join(list_variants()) or 'none'}")
    variant = variant_table()[name]
    return Variant(**{**variant.__dict__, "config": copy.deepcopy(variant.config)})


def build_model(config: RecipeConfig) -> nn.Module:
    """Build the network of a recipe.

    Every network maps a float tensor ``(B, C, H, W)`` (unit ``"slice"``) or
    ``(B, S, C, H, W)`` (unit ``"bag"``) to logits ``(B, len(classes))``, and has:
    ``encode(x)`` returning per-slice features ``(B, D)`` for slice input, ``head(f)``
    mapping features to logits, and the attribute ``target_layer`` (dotted module name of
    the default Grad-CAM layer).

    Args:
        config: the recipe config.

    Returns:
        The network, in training mode.
    """
    if config.name not in recipe_table():
        raise ChestDxError(f"unknown recipe {config.name!r}: choose one of {', '.join(list_recipes())}")
    return recipe_table()[config.name][1](config)
