"""ai-corona: ImageNet EfficientNet slice encoder, slice features averaged per study, dense head."""

from __future__ import annotations

from chestdx.models.networks.efficientnet import EfficientNetClassifier, EfficientNetEnsemble
from chestdx.models.registry import RecipeConfig, Variant, register_recipe, register_variant
from chestdx.preprocess.spec import InputSpec


AI_CORONA = RecipeConfig(
    name="ai-corona",
    input=InputSpec(window="lung", clip_top_percent=0.5, selection="middle", middle_fraction=0.5,
                    size=224, channels=3, normalise="imagenet"),
    classes=("normal", "pneumonia", "covid"),
    unit="bag",
    aggregator="mean-features",
    params={"backbone": "lite0", "pretrained": True, "dropout": 0.3},
    train={"epochs": 12, "lr": 3e-4, "weight_decay": 1e-4, "batch_size": 16, "optimizer": "adamw", "patience": 4},
)


@register_recipe(AI_CORONA)
def build_ai_corona(config: RecipeConfig) -> EfficientNetClassifier | EfficientNetEnsemble:
    """Args: config: an ai-corona config (param ``members`` > 1: an ensemble). Returns: the network."""
    params = dict(config.params)
    members = int(params.pop("members", 1))
    if members > 1:
        return EfficientNetEnsemble(members, num_classes=len(config.classes), **params)
    return EfficientNetClassifier(num_classes=len(config.classes), **params)


# The bundled `ct-ucsd` (the default CT model until 2026-12-07): the `moco-long-20` row of scripts/ablate_ct.py
# (docs/accuracy.md).
register_variant(Variant(
    name="ct-ucsd",
    config=RecipeConfig(
        name="ai-corona",
        input=InputSpec(window="lung", selection="lung", lung_filter="min-area", min_lung_fraction=0.25, max_slices=48,
                        lung_crop=True, size=224, channels=3, normalise="imagenet"),
        classes=("non-covid", "covid"),
        unit="slice",
        aggregator="mean-features",
        params={"backbone": "lite0", "pretrained": "ct-moco-lite0", "dropout": 0.3},
        train={"epochs": 20, "lr": 3e-4, "weight_decay": 1e-4, "batch_size": 16, "optimizer": "adamw", "patience": 8,
               "label_smoothing": 0.1, "augment": {"jpeg": 1.0}},
    ),
    seeds=(0, 1, 2),
    calibrate="f1",
    data="ucsd:ucsd-covid-ct",
    notes="one network per seed (`chestdx train --variant ct-ucsd --seed S`), put together with "
          "`chestdx ensemble`, temperature and F1 operating point fitted on the official val split with "
          "`chestdx calibrate --target f1`",
))
