"""Models: backbones, recipes (registry), study-level aggregators, checkpoints and prediction."""
