"""Recipe registry: a recipe is a `RecipeConfig` (data) plus a registered builder; a variant is a named config.

This module is a leaf: it imports neither torch nor the recipes. The built-in recipes
register themselves when ``chestdx.models.recipes`` is imported, which is where
``get_recipe``, ``get_variant`` and ``build_model`` live.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Callable, Literal

from chestdx.preprocess.spec import InputSpec

if TYPE_CHECKING:
    from torch import nn


@dataclass
class RecipeConfig:
    """A recipe as data.

    Args:
        name: registry name (``"ai-corona"``, ``"cnn-bilstm"``, ...).
        input: how studies become model input.
        classes: class names, in logit order.
        unit: what one training sample is: ``"slice"`` (a ``(C, H, W)`` image with its
            study's label) or ``"bag"`` (a ``(S, C, H, W)`` stack of slices of one study).
        aggregator: how slice outputs become the study's probabilities at prediction
            time: a name from ``chestdx.models.aggregators.AGGREGATORS``.
        params: keyword arguments of the builder (network sizes, backbone name, ...).
        train: training hyper-parameters (``epochs``, ``lr``, ``batch_size``, ...), read by
            ``chestdx.train``.
    """

    name: str
    input: InputSpec = field(default_factory=InputSpec)
    classes: tuple[str, ...] = ("non-covid", "covid")
    unit: Literal["slice", "bag"] = "slice"
    aggregator: str = "mean-prob"
    params: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Returns: the config as a JSON-ready dict."""
        out = asdict(self)
        out["classes"] = list(self.classes)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "RecipeConfig":
        """Args: data: as written by ``to_dict``. Returns: the config."""
        data = dict(data)
        data["input"] = InputSpec.from_dict(data.get("input", {}))
        data["classes"] = tuple(data.get("classes", ("non-covid", "covid")))
        return cls(**data)


BOX_RECIPES = ("dre-net",)
"""Recipes whose networks propose lesion boxes (``--method boxes``)."""

Builder = Callable[[RecipeConfig], "nn.Module"]
_RECIPES: dict[str, tuple[RecipeConfig, Builder]] = {}


def register_recipe(config: RecipeConfig) -> Callable[[Builder], Builder]:
    """Decorator that registers a builder under ``config.name`` with its default config.

    Args:
        config: the recipe's default configuration.

    Returns:
        The decorator; it returns the builder unchanged.

    Example:
        >>> @register_recipe(RecipeConfig("my-net", params={"width": 16}))
        ... def build_my_net(config): ...
    """

    def wrap(builder: Builder) -> Builder:
        _RECIPES[config.name] = (config, builder)
        return builder

    return wrap


@dataclass(frozen=True)
class Variant:
    """A named configuration of a recipe (the way timm names ``arch.tag`` configs).

    Args:
        name: the variant's name (a bundled model trained from it carries the same name).
        config: the full recipe config ``chestdx train --variant NAME`` trains one network of.
        seeds: the seeds of the members, when the bundled model is a deep ensemble of them.
        calibrate: the operating point fitted on validation (``"f1"``, ``"specificity=0.9"``).
        data: the training data it was made for (``ADAPTER:PATH`` with the path relative to the
            project's ``../shared/data``).
        notes: how the bundled model was made from it, in one sentence.
    """

    name: str
    config: RecipeConfig
    seeds: tuple[int, ...] = (0,)
    calibrate: str | None = None
    data: str | None = None
    notes: str = ""


_VARIANTS: dict[str, Variant] = {}


def register_variant(variant: Variant) -> Variant:
    """Args: variant: the variant (its recipe must be registered). Returns: the variant."""
    _VARIANTS[variant.name] = variant
    return variant


def recipe_table() -> dict[str, tuple[RecipeConfig, Builder]]:
    """Returns: the registered recipes (name -> default config, builder); see ``chestdx.models.recipes``."""
    return _RECIPES


def variant_table() -> dict[str, Variant]:
    """Returns: the registered variants by name; see ``chestdx.models.recipes``."""
    return _VARIANTS
