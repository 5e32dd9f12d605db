"""Train the bundled default CT model on UCSD COVID-CT's official split, over several seeds.

The configuration is a row of `scripts/ablate_ct.py` (chosen there on **val** only). It
is trained on the official train split with each seed; each seed's model is a final
candidate: its temperature and operating point (the threshold of the best val F1) are fitted
on val, then it is scored once on val and once on test with patient-bootstrap CIs. The seed with
the best val AUC is installed as ``chestdx/weights/ct-default`` with its ONNX export; its
card carries every seed's figures, their mean and sd, and the ablation table. Runs already
made by the ablation (same row and seed, ``--reuse``) are not trained again.

Usage:
    python scripts/train_default_ct.py --row ema --seeds 0 1 2 [--reuse runs/ablation] [--install]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

from ablate_ct import ROWS, row_config

from chestdx.evaluate.report import evaluate_predictions
from chestdx.evaluate.run import calibrate_model, predict_records
from chestdx.io.datasets import ucsd_covid_ct
from chestdx.models.checkpoint import BUNDLED_DIR, CARD_FILE, export_onnx, load_model
from chestdx.train.loop import fit

KEYS = ("auc", "f1", "sensitivity", "specificity", "accuracy", "kappa")

LIMITATIONS = [
    "Trained on UCSD COVID-CT: single slices rendered as figures in papers (COVID-19 class: PNG) against "
    "non-COVID slices from other sources (JPEG). Training re-encodes every slice as JPEG at a random quality so "
    "that the file format cannot be learned, but other differences between the image sources remain.",
    "Binary (COVID-19 vs non-COVID); the non-COVID class is mostly normal or non-pneumonia slices. It has never "
    "seen other pneumonia labelled as such, and on real volumes (2026-12-01, benchmarks/real_volumes.py) it scores "
    "other pneumonia higher than COVID-19 (CC-CCII common pneumonia mean P 0.73, DRE-Net bacterial 0.65, SIRM "
    "COVID-19 0.53): its output is not a COVID-19 probability on clinical studies.",
    "Study score = the classifier head applied to the mean of the slice feature vectors (ai-corona); at most 48 "
    "lung slices per study.",
]


def score(model, records: list, threshold: float, seed: int) -> dict:
    """Args: model: a loaded model. records: one split. threshold: operating point. seed: bootstrap seed.

    Returns:
        The card's metrics block for that split (value and 95% CI of each metric).
    """
    preds = predict_records(model, records, progress=False)
    res = evaluate_predictions(preds.y, preds.probs, list(model.config.classes), preds.patient_ids,
                               threshold=threshold, level="study", n_resamples=2000, seed=seed)
    return {"level": "image (UCSD images are single slices)", "n": res["n_cases"],
            **{k: res["metrics"][k] for k in KEYS}}


def summary(per_seed: dict, split: str) -> dict:
    """Returns: metric -> {mean, sd} over the seeds' point estimates on ``split``."""
    out = {}
    for key in KEYS:
        values = [m[split][key]["value"] for m in per_seed.values()]
        out[key] = {"mean": round(statistics.mean(values), 4),
                    "sd": round(statistics.stdev(values), 4) if len(values) > 1 else None}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/ucsd-covid-ct")
    parser.add_argument("--row", required=True, choices=list(ROWS), help="ablation row to train")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="runs/ct-default")
    parser.add_argument("--reuse", help="folder of ablation runs (<row>-seed<k>) to take instead of training")
    parser.add_argument("--ablation", default="runs/ablation/ablation.jsonl", help="ablation results for the card")
    parser.add_argument("--install", action="store_true", help="copy the chosen seed to chestdx/weights/ct-default")
    args = parser.parse_args()

    records = ucsd_covid_ct(args.data)
    train, val, test = ([r for r in records if r.split == s] for s in ("train", "val", "test"))
    data = {"name": "UCSD COVID-CT (Zhao et al. 2020), official split", "n_train": len(train), "n_val": len(val),
            "n_test": len(test), "split": "official train/val/test files"}
    out = Path(args.out)
    per_seed = {}
    for seed in args.seeds:
        run = f"{args.row}-seed{seed}"
        reused = Path(args.reuse) / run if args.reuse else None
        if reused is not None and (reused / CARD_FILE).is_file():
            shutil.rmtree(out / run, ignore_errors=True)
            shutil.copytree(reused, out / run)
        else:
            fit(row_config(args.row), train, val, out / run, seed=seed, name=run, data_description=data, threads=2)
        config = row_config(args.row)
        export_onnx(load_model(out / run).net, out / run, config.input.size)
        # Operating point: the threshold of the best F1 on val (the benchmark's metric), kept for test.
        calibrate_model(str(out / run), val, target="f1", value=1.0, split_name="val (official)", progress=False)
        model = load_model(out / run)
        per_seed[seed] = {split: score(model, recs, model.threshold, seed) for split, recs in (("val", val),
                                                                                              ("test", test))}
        per_seed[seed]["train_minutes"] = round(model.card["training"]["seconds"] / 60, 1)
        print(run, json.dumps({s: {k: round(per_seed[seed][s][k]["value"], 4) for k in KEYS}
                               for s in ("val", "test")}), flush=True)
    best = max(args.seeds, key=lambda s: per_seed[s]["val"]["auc"]["value"])
    print("installed seed (best val AUC):", best, flush=True)
    chosen = out / f"{args.row}-seed{best}"
    card = json.loads((chosen / CARD_FILE).read_text())
    card["name"] = "ct-default"
    card["metrics"] = {"val": per_seed[best]["val"], "test": per_seed[best]["test"]}
    ablation = Path(args.ablation)
    card["selection"] = {
        "criterion": "ablation rows compared on val AUC (scripts/ablate_ct.py); among the seeds of the chosen row, "
                     "the best val AUC is installed",
        "row": args.row,
        "seeds": {str(s): {"val": {k: round(m["val"][k]["value"], 4) for k in KEYS},
                           "test": {k: round(m["test"][k]["value"], 4) for k in KEYS},
                           "train_minutes": m["train_minutes"]} for s, m in per_seed.items()},
        "mean_over_seeds": {"val": summary(per_seed, "val"), "test": summary(per_seed, "test")},
        "ablation": [json.loads(line) for line in ablation.read_text().splitlines()] if ablation.is_file() else [],
    }
    card["limitations"] = LIMITATIONS
    card["written"] = time.strftime("%Y-%m-%d")
    (chosen / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps(card["selection"]["mean_over_seeds"]), flush=True)
    if args.install:
        target = BUNDLED_DIR / "ct-default"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(chosen, target)
        print("installed", target)


if __name__ == "__main__":
    main()
