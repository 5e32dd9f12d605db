"""Train and select the bundled default CT model on UCSD COVID-CT's official split.

Candidates are trained on the official train split and compared on val (AUC); the best
becomes ``chestdx/weights/ct-default``. The test split is read once, for the chosen
model only, and its metrics are written into the model card. Reproducible from the seed.

Usage:
    python scripts/train_default_ct.py --data ../shared/data/ucsd-covid-ct --out runs/ct-default [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from chestdx.evaluate.report import evaluate_predictions
from chestdx.evaluate.run import predict_records
from chestdx.io.datasets import ucsd_covid_ct
from chestdx.models.checkpoint import BUNDLED_DIR, CARD_FILE, export_onnx, load_model
from chestdx.models.registry import get_recipe
from chestdx.preprocess.spec import InputSpec
from chestdx.train.loop import fit

CLASSES = ("non-covid", "covid")
# One slice-level input spec for every candidate, so they see the same pixels: lung
# window for HU studies, slices with enough lung (at most 48, equidistant), keep-aspect 224 px.
SPEC = dict(window="lung", selection="lung", lung_filter="min-area", min_lung_fraction=0.25, max_slices=48, size=224)

LIMITATIONS = [
    "Trained on UCSD COVID-CT: single slices rendered as figures in papers (COVID-19 class: PNG) against "
    "non-COVID slices from other sources (JPEG); the model can separate image sources as well as disease.",
    "On real CT volumes it calls other pneumonia COVID-19 as often as COVID-19 (CC-CCII common pneumonia "
    "P=0.77-0.88, DRE-Net bacterial cases P=0.85-0.88): its output is not a COVID-19 probability on clinical "
    "studies. See docs/accuracy.md.",
    "Binary (COVID-19 vs non-COVID); it has never seen normal CT volumes or other diseases labelled as such.",
    "Study score = the classifier head applied to the mean of the slice feature vectors (ai-corona); at most 48 lung slices per study.",
]


def candidates() -> dict:
    """Returns: name -> recipe config of each candidate."""
    lite0 = get_recipe("ai-corona", classes=CLASSES, unit="slice", input=InputSpec(**SPEC, normalise="imagenet"))
    lite0.train = {"epochs": 12, "lr": 3e-4, "weight_decay": 1e-4, "batch_size": 16, "optimizer": "adamw",
                   "patience": 4, "label_smoothing": 0.1}
    # Trained from scratch; at 128 px so that it fits the same CPU budget as the Lite0 fine-tune.
    resatt = get_recipe("residual-attention", classes=CLASSES,
                        input=InputSpec(**{**SPEC, "size": 128}, normalise="unit"))
    resatt.train = {**resatt.train, "epochs": 12, "patience": 4, "label_smoothing": 0.1, "max_minutes": 15}
    return {"ai-corona-lite0": lite0, "residual-attention": resatt}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/ucsd-covid-ct")
    parser.add_argument("--out", default="runs/ct-default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", help="train only this candidate")
    parser.add_argument("--install", action="store_true", help="copy the chosen model to chestdx/weights/ct-default")
    parser.add_argument("--reuse", action="store_true",
                        help="keep candidates already trained in --out (same seed) instead of training them again")
    args = parser.parse_args()

    records = ucsd_covid_ct(args.data)
    train = [r for r in records if r.split == "train"]
    val = [r for r in records if r.split == "val"]
    test = [r for r in records if r.split == "test"]
    data = {"name": "UCSD COVID-CT (Zhao et al. 2020), official split", "n_train": len(train), "n_val": len(val),
            "n_test": len(test), "split": "official train/val/test files"}
    out = Path(args.out)
    results = {}
    for name, config in candidates().items():
        if args.only and name != args.only:
            continue
        if args.reuse and (out / name / CARD_FILE).is_file():
            card = json.loads((out / name / CARD_FILE).read_text())
            history = card["training"]["history"]
            results[name] = {"val_auc": max(h["val_auc"] for h in history),
                             "minutes": round(card["training"]["seconds"] / 60, 1), "epochs": len(history)}
        else:
            t0 = time.time()
            result = fit(config, train, val, out / name, seed=args.seed, name=name, data_description=data)
            results[name] = {"val_auc": max(h["val_auc"] for h in result.history),
                             "minutes": round((time.time() - t0) / 60, 1), "epochs": len(result.history)}
        print(name, results[name], flush=True)
    best = max(results, key=lambda k: results[k]["val_auc"])
    print("chosen on val AUC:", best, flush=True)

    # The chosen model ships with its ONNX export (float32, faster on CPU) and the current
    # inference spec (the cap on slices per study does not change single-slice training).
    card = load_model(out / best).card
    card["input"] = candidates()[best].input.to_dict()
    card["recipe"]["input"] = card["input"]
    (out / best / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    export_onnx(load_model(out / best).net, out / best, SPEC["size"])
    model = load_model(out / best)
    card = model.card
    for split_name, split in (("val", val), ("test", test)):
        preds = predict_records(model, split, progress=False)
        res = evaluate_predictions(preds.y, preds.probs, list(CLASSES), preds.patient_ids, threshold=model.threshold,
                                   level="study", n_resamples=2000, seed=args.seed)
        card["metrics"][split_name] = {"level": "image (UCSD images are single slices)", "n": res["n_cases"],
                                       **{k: res["metrics"][k] for k in ("auc", "f1", "sensitivity", "specificity",
                                                                         "accuracy", "kappa")}}
        print(split_name, json.dumps(card["metrics"][split_name]), flush=True)
    card["name"] = "ct-default"
    card["limitations"] = LIMITATIONS
    card["selection"] = {"criterion": "val AUC", "candidates": results}
    (out / best / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    if args.install:
        target = BUNDLED_DIR / "ct-default"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(out / best, target)
        print("installed", target)


if __name__ == "__main__":
    main()
