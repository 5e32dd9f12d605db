"""Recipe registry: a recipe is a `RecipeConfig` (data) plus a registered builder."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Callable, Literal

from torch import nn

from chestdx.errors import ChestDxError
from chestdx.preprocess.spec import InputSpec


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


Builder = Callable[[RecipeConfig], nn.Module]
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


def list_recipes() -> list[str]:
    """Returns: the registered recipe names, sorted."""
    _load_builtin()
    return sorted(_RECIPES)


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
    _load_builtin()
    if name not in _RECIPES:
        raise ChestDxError(f"unknown recipe {name!r}: choose one of {', '.join(sorted(_RECIPES))}")
    config = copy.deepcopy(_RECIPES[name][0])
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


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
    _load_builtin()
    if config.name not in _RECIPES:
        raise ChestDxError(f"unknown recipe {config.name!r}: choose one of {', '.join(sorted(_RECIPES))}")
    return _RECIPES[config.name][1](config)


def _load_builtin() -> None:
    # The built-in recipes register themselves on import.
    import chestdx.models.recipes  # noqa: F401
