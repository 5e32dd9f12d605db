"""Train `ct-ucsd` (the default CT model until 2026-12-07) on UCSD COVID-CT's official split, over several seeds.

The configuration is a row of `scripts/ablate_ct.py` (chosen there on **val** only). It
is trained on the official train split with each seed. With ``--members K`` consecutive
seeds are put together as deep ensembles of K members (``--seeds 0 1 2 3 4 5 --members 3``:
ensembles of seeds 0-2 and 3-5); ``--score-members`` also scores each member alone, the same way,
for the per-seed figures of the recipe (recorded, never installed). Each single model or
ensemble is a final candidate: its
temperature and operating point (the threshold of the best val F1) are fitted on val, then it
is scored once on val and once on test with patient-bootstrap CIs. The candidate with the best
val AUC is installed as ``chestdx/weights/ct-ucsd`` with its ONNX export; its card carries
every candidate's figures, their mean and sd, each member's val AUC and the ablation table.
Runs already made by the ablation (same row and seed, ``--reuse``) are not trained again.

Usage:
    python scripts/train_ucsd_ct.py --row lung-crop --seeds 0 1 2 [--members 3 [--score-members]] \
        [--reuse runs/ablation] [--install]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

from ablate_ct import ROWS, row_config, train_row

from chestdx.evaluate.report import evaluate_predictions
from chestdx.evaluate.run import calibrate_model, predict_records
from chestdx.io.datasets import ucsd_covid_ct
from chestdx.models.bundled import CARD_FILE, WEIGHTS_DIR
from chestdx.models.card import MetricSet, read_card, write_card
from chestdx.models.checkpoint import assemble_ensemble, export_onnx
from chestdx.models.loading import load_model

KEYS = ("auc", "f1", "sensitivity", "specificity", "accuracy", "kappa")

LIMITATIONS = [
    "Trained on UCSD COVID-CT: single slices rendered as figures in papers (COVID-19 class: PNG) against "
    "non-COVID slices from other sources (JPEG). Training re-encodes every slice as JPEG at a random quality so "
    "that the file format cannot be learned, but other differences between the image sources remain.",
    "Binary (COVID-19 vs non-COVID); the non-COVID class is mostly normal or non-pneumonia slices. It has never "
    "seen other pneumonia labelled as such: on real volumes (benchmarks/real_volumes.py) it has scored other "
    "pneumonia as high as or higher than COVID-19, so its output is not a COVID-19 probability on clinical studies.",
    "Study score = the classifier head applied to the mean of the slice feature vectors (ai-corona; for an "
    "ensemble, the mean of the members' logits so computed); at most 48 lung slices per study.",
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
    """Returns: metric -> {mean, sd} over the candidates' point estimates on ``split``."""
    out = {}
    for key in KEYS:
        values = [m[split][key]["value"] for m in per_seed.values()]
        out[key] = {"mean": round(statistics.mean(values), 4),
                    "sd": round(statistics.stdev(values), 4) if len(values) > 1 else None}
    return out


def train_member(row: str, seed: int, out: Path, reuse: str | None, train: list, val: list, data: dict) -> Path:
    """Args: row: ablation row. seed: its seed. out: run folder. reuse: ablation folder or None. train, val:
    records. data: the card's data description.

    Returns:
        The member's checkpoint folder (trained, or copied from ``reuse``).
    """
    reused = Path(reuse) / f"{row}-seed{seed}" if reuse else None
    if reused is None or not (reused / CARD_FILE).is_file():
        return train_row(row, seed, out, False, train, val, data)
    run = out / reused.name
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(reused, run)
    return run


def evaluate_candidate(folder: Path, size: int, val: list, test: list, seed: int) -> dict:
    """Export, calibrate on val and score one candidate on val and test (its one test read).

    Args:
        folder: the candidate's checkpoint folder (its card is rewritten with temperature and threshold).
        size: input size for the ONNX export.
        val, test: records of the two splits.
        seed: bootstrap seed.

    Returns:
        ``{"val": metrics, "test": metrics, "train_minutes": ...}`` (cards' metrics blocks).
    """
    export_onnx(load_model(folder).net, folder, size)
    # Operating point: the threshold of the best F1 on val (the benchmark's metric), kept for test.
    calibrate_model(str(folder), val, target="f1", split_name="val (official)", progress=False)
    model = load_model(folder)
    result = {split: score(model, recs, model.threshold, seed) for split, recs in (("val", val), ("test", test))}
    return {**result, "train_minutes": round(model.card.training["seconds"] / 60, 1)}


def _points(result: dict) -> dict:
    """Returns: the point estimates of a candidate's val and test metrics."""
    return {split: {m: round(result[split][m]["value"], 4) for m in KEYS} for split in ("val", "test")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/ucsd-covid-ct")
    parser.add_argument("--row", required=True, choices=list(ROWS), help="ablation row to train")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--members", type=int, default=1, help="seeds per candidate (>1: deep ensembles)")
    parser.add_argument("--score-members", action="store_true", help="also score each ensemble member alone")
    parser.add_argument("--out", default="runs/ct-ucsd")
    parser.add_argument("--reuse", help="folder of ablation runs (<row>-seed<k>) to take instead of training")
    parser.add_argument("--ablation", default="runs/ablation/ablation.jsonl", help="ablation results for the card")
    parser.add_argument("--install", action="store_true", help="copy the chosen candidate to chestdx/weights/ct-ucsd")
    args = parser.parse_args()
    if len(args.seeds) % args.members:
        parser.error(f"{len(args.seeds)} seeds do not split into ensembles of {args.members}")

    records = ucsd_covid_ct(args.data)
    train, val, test = ([r for r in records if r.split == s] for s in ("train", "val", "test"))
    data = {"name": "UCSD COVID-CT (Zhao et al. 2020), official split", "n_train": len(train), "n_val": len(val),
            "n_test": len(test), "split": "official train/val/test files"}
    out = Path(args.out)
    size = row_config(args.row).input.size
    results, folders, singles = {}, {}, {}
    for first in range(0, len(args.seeds), args.members):
        seeds = args.seeds[first:first + args.members]
        runs = [train_member(args.row, s, out, args.reuse, train, val, data) for s in seeds]
        key = "+".join(str(s) for s in seeds)
        folder = runs[0] if len(runs) == 1 else assemble_ensemble(runs, out / f"{args.row}-ensemble-{key.replace('+', '-')}")
        results[key] = evaluate_candidate(folder, size, val, test, seeds[0])
        if len(runs) > 1:
            members = read_card(folder).members
            results[key]["member_val_auc"] = [m["val_auc"] for m in members]
            if args.score_members:
                for seed, run in zip(seeds, runs):
                    singles[str(seed)] = evaluate_candidate(run, size, val, test, seed)
                    print("member", seed, json.dumps(_points(singles[str(seed)])), flush=True)
        folders[key] = folder
        print(key, json.dumps(_points(results[key])), flush=True)
    best = max(results, key=lambda k: results[k]["val"]["auc"]["value"])
    print("chosen candidate (best val AUC): seeds", best, flush=True)
    chosen = folders[best]
    card = read_card(chosen)
    card.name = "ct-ucsd"
    card.metrics = {split: MetricSet.parse(results[best][split], split) for split in ("val", "test")}
    ablation = Path(args.ablation)
    card.selection = {
        "criterion": "ablation rows compared on val AUC (scripts/ablate_ct.py); among the candidates of the chosen "
                     "row (single seeds, or ensembles of consecutive seeds), the best val AUC is installed",
        "row": args.row,
        "members_per_candidate": args.members,
        "candidates": {k: {**_points(r), **{f: r[f] for f in ("train_minutes", "member_val_auc") if f in r}}
                       for k, r in results.items()},
        "mean_over_candidates": {"val": summary(results, "val"), "test": summary(results, "test")},
        **({"members_alone": {"per_seed": {k: {split: r[split] for split in ("val", "test")}
                                           for k, r in singles.items()},
                              "mean": {"val": summary(singles, "val"), "test": summary(singles, "test")}}}
           if singles else {}),
        "ablation": [json.loads(line) for line in ablation.read_text().splitlines()] if ablation.is_file() else [],
    }
    card.limitations = LIMITATIONS
    card.extra["written"] = time.strftime("%Y-%m-%d")
    write_card(card, chosen)
    print(json.dumps(card.selection["mean_over_candidates"]), flush=True)
    if args.install:
        target = WEIGHTS_DIR / "ct-ucsd"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(chosen, target)
        print("installed", target)


if __name__ == "__main__":
    main()
