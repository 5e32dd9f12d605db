"""Train the default CT model (`ct-default`) on every real CT source together, from cached feature maps.

Steps (each cached under ``--out``, so a rerun skips what is done):

1. ``prepare``: every study of every CT source (slices and volumes) goes through
   `prepare_study` with `SPEC` (lung slices, lungs only, lung crop, upright, 224 px), exactly as
   `chestdx predict` prepares a study for this model; the slices are kept as uint8.
2. ``features``: the frozen part of each candidate encoder (`ENCODERS`: the stem and the first
   ``--tail-block`` of Lite0's 7 stages) turns every slice into the maps entering the next stage
   (all 7 frozen: 320x7x7; 5 frozen: 112x14x14), cached once.
3. ``train``: what follows the frozen part (with ``--tail-block 7`` only the head convolution and
   the classifier; with 5, stages 6 and 7 too) is trained on the maps of the train split
   (`chestdx.train.cached.fit_tail`), one network per seed, each on its own weighted
   draw of the training slices; the seeds are scored on val, and the best mean within-source
   val AUC (Soares, MosMed, UCSD: the sources with both classes) is chosen. (No deep ensemble:
   its members would share one frozen trunk and still cost three trunks at prediction.) Only
   the chosen network is then scored on the test splits (one read), per source with
   patient-bootstrap CIs, and written as a checkpoint with its ONNX export and card
   (``OUT/chosen``, ``OUT/chosen-b<B>`` for another tail block), named ``ct-default``. Seeds already
   trained in ``OUT`` are reused with ``--reuse``. (Until 2026-12-07 the all-frozen network was bundled
   as ``ct-real``; the network fine-tuned after five frozen stages replaced it, docs/accuracy.md.)

Classes: COVID-19 vs non-COVID. Other pneumonia on CT is one CC-CCII patient and two DRE-Net
persons: too few to train and validate a class on, so they stay the external check
(`benchmarks/real_volumes.py`); normal lungs are scored separately (specificity on MosMed
CT-0 and the CC-CCII normal patients).

Sources, splits and the slice cache: `chestdx.train.real_ct` (shared with
``scripts/train_recipes.py``, so every CT model is trained and tested on the same patients).

Usage:
    python scripts/train_real_ct.py prepare [--data ../shared/data] [--out runs/ct-real]
    python scripts/train_real_ct.py features --encoder moco
    python scripts/train_real_ct.py train --encoder moco --seeds 0 1 2 --epochs 5 --val-only   # settings compared on val
    python scripts/train_real_ct.py train --encoder moco --seeds 0 1 2 --epochs 15 --val-only
    python scripts/train_real_ct.py train --encoder moco --seeds 0 1 2 --epochs N --reuse      # the chosen: test read once
    python scripts/train_real_ct.py features --tail-block 5        # last two stages fine-tuned (OUT/chosen-b5)
    python scripts/train_real_ct.py train --tail-block 5 --seeds 0 1 2 --epochs 8 --val-only
    python scripts/train_real_ct.py train --tail-block 5 --seeds 0 --epochs 8 --hold-out soares   # leave one source out
    python scripts/train_real_ct.py train --tail-block 5 --seeds 0 1 2 --epochs 8 --reuse --score-seeds
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from chestdx.evaluate.calibration import TemperatureScaler
from chestdx.evaluate.metrics import choose_operating_point
from chestdx.evaluate.report import evaluate_predictions
from chestdx.io.datasets import CaseRecord
from chestdx.io.images import IMAGE_SUFFIXES
from chestdx.models.bundled import CARD_FILE
from chestdx.models.card import MetricSet, new_card, read_card, write_card
from chestdx.models.checkpoint import export_onnx, save_checkpoint
from chestdx.models.networks.efficientnet import EfficientNetClassifier
from chestdx.models.recipes import get_recipe
from chestdx.models.registry import RecipeConfig
from chestdx.preprocess.intensity import imagenet_normalise
from chestdx.train.cached import Tail, fit_tail, frozen_part, tail_outputs
from chestdx.train.real_ct import (CLASSES, COVID_LABELS, SOURCES, SPEC, prepare_source, source_records,  # noqa: F401
                                   split_sources)

log = logging.getLogger("train_real_ct")

ENCODERS = {"imagenet": True, "moco": "ct-moco-lite0"}
TAIL_BLOCK = 7
"""Lite0 stages frozen (of 7) by default: the tail trained on the cached 320x7x7 maps is the head convolution and
classifier. ``--tail-block`` (stored in the card as ``training.tail_block``) freezes fewer."""
STAGES = 7


def trainable_of(block: int) -> list[str]:
    """Args: block: the first trainable stage. Returns: parameter-name prefixes trained after ``block`` frozen stages."""
    return [f"blocks.{i}" for i in range(block, STAGES)] + ["conv_head", "fc"]


def run_name(encoder: str, block: int) -> str:
    """The cache and run-folder tag of an encoder with ``block`` frozen stages (the default keeps its old name)."""
    return encoder if block == TAIL_BLOCK else f"{encoder}-b{block}"

def encoder_net(encoder: str) -> EfficientNetClassifier:
    """Args: encoder: a key of `ENCODERS`. Returns: a fresh Lite0 classifier starting from that encoder."""
    return EfficientNetClassifier("lite0", num_classes=2, pretrained=ENCODERS[encoder], dropout=0.3)


def feature_source(out: Path, source: str, encoder: str, block: int = TAIL_BLOCK) -> Path:
    """Compute (once) the maps entering stage ``block`` for a prepared source; write ``feat-<run_name>-<source>.npy``
    (float16)."""
    target = out / f"feat-{run_name(encoder, block)}-{source}.npy"
    if target.is_file():
        return target
    t0 = time.time()
    x = np.load(out / f"prep-{source}.npz")["x"]
    part = frozen_part(encoder_net(encoder), block).eval().to(memory_format=torch.channels_last)
    maps = []
    with torch.inference_mode():
        for i in range(0, len(x), 32):
            x01 = np.repeat(x[i:i + 32, None].astype(np.float32) / 255.0, 3, axis=1)
            batch = torch.from_numpy(imagenet_normalise(x01)).contiguous(memory_format=torch.channels_last)
            maps.append(part(batch).half().numpy())
    np.save(target, np.concatenate(maps))
    log.warning("features %s %s: %d slices in %.0f s", run_name(encoder, block), source, len(x), time.time() - t0)
    return target


TRAIN = {"epochs": 5, "lr": 1e-3, "weight_decay": 1e-4, "batch_size": 64, "optimizer": "adamw", "patience": 2,
         "label_smoothing": 0.1, "trainable": trainable_of(TAIL_BLOCK)}
LIMITATIONS = [
    "Binary COVID-19 vs non-COVID. Other pneumonia on CT is one CC-CCII patient and two DRE-Net persons in the "
    "shared data: no class can be trained or validated on that, so they are only the external real-volume check; "
    "the non-COVID training class is normal lungs (MosMed CT-0, CC-CCII normals) and Soares / UCSD non-COVID "
    "slices (other findings or normal). Do not read P(COVID-19) as 'not other pneumonia'.",
    "8-bit slices only (lung window renderings, JPEG/PNG); HU studies are windowed before the same steps, but no "
    "HU volume was in training. Pixel spacing is unknown for every training image.",
    "Every slice is reduced to its lungs (classical segmentation; black elsewhere; lung intensities stretched per "
    "slice): a lesion the segmentation leaves out (dense consolidation at the chest wall) is not seen, and a "
    "slice where the segmentation fails is judged on what it kept.",
    "Sources differ in class mix (SIRM and MedSeg are all COVID-19, the CC-CCII normals all normal): see the "
    "shortcut checks (benchmarks/shortcuts_ct.py) before trusting a per-source figure.",
    "Soares has no patient ids: its split is by look-alike slice groups, which cannot rule out one patient on "
    "both sides; MosMed slices are split each alone (study ids unknown).",
    "Encoder from ImageNet then MoCo v2 on unlabelled shared CT (which included the real-volume check's CC-CCII "
    "and DRE-Net slices without labels); its early stages frozen (training.tail_block), no image augmentation.",
]
WITHIN_SOURCE_VAL = ("soares", "mosmed", "ucsd")
"""Sources with both classes in val: the selection score is the mean of their val AUCs."""


def recipe_config(encoder: str, epochs: int, block: int = TAIL_BLOCK, lr: float = TRAIN["lr"]) -> RecipeConfig:
    """Args: encoder: a key of `ENCODERS`. epochs: epochs of the tail. block: stages frozen. lr: peak learning rate.
    Returns: the ai-corona config of the model."""
    config = get_recipe("ai-corona", classes=CLASSES, unit="slice", input=SPEC)
    config.params = {"backbone": "lite0", "pretrained": ENCODERS[encoder], "dropout": 0.3}
    config.train = {**TRAIN, "epochs": epochs, "patience": max(TRAIN["patience"], epochs // 3), "lr": lr,
                    "trainable": trainable_of(block)}
    return config


class SliceTable:
    """The cached slices of every prepared source: trunk maps, and the rows of each study.

    Args:
        out: the run folder. encoder: whose maps to read. sources: which prepared sources.
    """

    def __init__(self, out: Path, encoder: str, sources=tuple(SOURCES), block: int = TAIL_BLOCK) -> None:
        maps, self.rows, start = [], {}, 0
        for source in sources:
            prep = np.load(out / f"prep-{source}.npz")
            maps.append(np.load(out / f"feat-{run_name(encoder, block)}-{source}.npy"))
            for i, study in enumerate(prep["study"]):
                self.rows.setdefault(str(study), []).append(start + i)
            start += len(prep["study"])
        self.maps = np.concatenate(maps)

    def present(self, records: list[CaseRecord]) -> list[CaseRecord]:
        """Args: records: studies. Returns: those that were prepared (a damaged study is skipped there)."""
        return [r for r in records if str(Path(r.path).resolve()) in self.rows]

    def select(self, records: list[CaseRecord]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Args: records: studies. Returns: ``(rows, y, study index)`` of their slices (see `present`)."""
        rows, y, study = [], [], []
        for k, rec in enumerate(self.present(records)):
            found = self.rows.get(str(Path(rec.path).resolve()), [])
            rows += found
            y += [int(rec.label in COVID_LABELS)] * len(found)
            study += [k] * len(found)
        return np.asarray(rows, int), np.asarray(y, int), np.asarray(study, int)


def draw_weights(sources: list[str], y: np.ndarray) -> np.ndarray:
    """Draw probability of each training slice: ``1 / sqrt(n)`` of its (source, class) cell, so that the large
    sources do not drown the small ones and no cell dominates its source."""
    cells = [f"{s}|{c}" for s, c in zip(sources, y)]
    counts = {c: cells.count(c) for c in set(cells)}
    w = np.array([1.0 / np.sqrt(counts[c]) for c in cells])
    return w / w.sum()


def study_logits(members: list[Tail], maps: np.ndarray, study: np.ndarray) -> np.ndarray:
    """Study logits as the model computes them: each member's head on the mean of its slice features, averaged."""
    n = study.max() + 1 if len(study) else 0
    out = []
    for tail in members:
        _, feats = tail_outputs(tail, maps)
        pooled = np.stack([feats[study == k].mean(0) for k in range(n)])
        with torch.inference_mode():
            out.append(tail.net.head(torch.from_numpy(pooled)).numpy())
    return np.mean(out, 0)


def _probs(logits: np.ndarray, temperature: float) -> np.ndarray:
    return torch.softmax(torch.from_numpy(logits / temperature), 1).numpy()


def score_sources(members: list[Tail], table: SliceTable, parts: dict, split: str, temperature: float,
                  threshold: float, n_resamples: int) -> dict:
    """Per-source metrics of one split with patient-bootstrap CIs (studies scored as the model scores them).

    Returns:
        source -> {"n_studies", "n_patients", "auc" / "sensitivity" / "specificity" ... (value + CI)}.
    """
    out = {}
    for source, splits in parts.items():
        recs = table.present(splits[split])
        if not recs:
            continue
        rows, _, study = table.select(recs)
        logits = study_logits(members, table.maps[rows], study)
        y = np.array([int(r.label in COVID_LABELS) for r in recs])
        res = evaluate_predictions(y, _probs(logits, temperature), list(CLASSES), [r.patient_id for r in recs],
                                   threshold=threshold, level="study", n_resamples=n_resamples, seed=0)
        keys = ("auc", "sensitivity", "specificity", "accuracy", "f1")
        out[source] = {"n_studies": len(recs), "n_patients": res["n_patients"], "n_covid": int(y.sum()),
                       **{k: res["metrics"].get(k) for k in keys}}
        if source == "mosmed":
            out[source]["groups"] = sorted({r.group for r in recs})
    return out


def fingerprint(table: SliceTable, parts: dict, data: Path) -> dict:
    """The training data's fingerprint for the card: modality, intensity, pixel sizes, sources and counts."""
    sizes = {}
    for source, splits in parts.items():
        for rec in splits["train"][:: max(1, len(splits["train"]) // 40)]:  # a sample of each source's studies
            first = rec.path if Path(rec.path).is_file() else sorted(p for p in Path(rec.path).iterdir()
                                                                       if p.suffix.lower() in IMAGE_SUFFIXES)[0]
            with Image.open(first) as img:
                sizes.setdefault(source, []).append(img.size)
    counts = {}
    for source, splits in parts.items():
        for split, recs in splits.items():
            recs = table.present(recs)
            if recs:
                rows, y, _ = table.select(recs)
                counts.setdefault(source, {})[split] = {"studies": len(recs), "slices": len(rows),
                                                        "covid_slices": int(y.sum()),
                                                        "patients": len({r.patient_id for r in recs})}
    return {"modality": "CT", "intensities": ["8bit"], "kind": ["ct-slice", "ct-volume"],
            "image_longest_side_px": {s: [int(min(max(wh) for wh in v)), int(max(max(wh) for wh in v))]
                                      for s, v in sizes.items()},
            "pixel_spacing_mm": "unknown (8-bit images carry no spacing)",
            "hu_input": "HU studies are windowed to the lung window (-600/1500) before the same steps",
            "sources": counts}


def operating_point(members: list[Tail], table: SliceTable, val: list[CaseRecord]) -> tuple[float, float]:
    """Returns: the temperature and the best-F1 threshold of ``members`` on the pooled val studies ``val``."""
    records = table.present(val)
    rows, _, study = table.select(records)
    logits = study_logits(members, table.maps[rows], study)
    y = np.array([int(r.label in COVID_LABELS) for r in records])
    temperature = TemperatureScaler().fit(logits, y).temperature_
    return temperature, choose_operating_point(y, _probs(logits, temperature)[:, 1], "f1")


def test_each_seed(sources: list[str], members: list[Tail], seeds: list[int], table: SliceTable, parts: dict,
                   trainable: list[str], held_out: str | None = None) -> None:
    """Each seed's network read on the test splits of ``sources``, at the operating point of the pooled val split of
    the sources it was trained on; prints one JSON line with the AUC's mean and sd over the seeds per source.

    Used after the choice (``--score-seeds``: the recipe's spread over seeds, nothing chosen from it) and for
    leave-one-source-out (``--hold-out``: the networks were trained without ``held_out``)."""
    result = {}
    for seed, tail in zip(seeds, members):
        temperature, threshold = operating_point([tail], table, [r for s in trainable for r in parts[s]["val"]])
        per = score_sources([tail], table, {s: parts[s] for s in sources}, "test", temperature, threshold, 2000)
        result[str(seed)] = {"threshold": round(float(threshold), 4),
                             **{s: {k: m[k] for k in ("n_studies", "n_covid", "n_patients", "auc", "sensitivity",
                                                      "specificity")} for s, m in per.items()}}
    spread = {}
    for source in sources:
        aucs = [r[source]["auc"]["value"] for r in result.values()
                if isinstance(r.get(source, {}).get("auc"), dict) and r[source]["auc"]["value"] is not None]
        if aucs:
            spread[source] = {"mean": round(float(np.mean(aucs)), 4), "sd": round(float(np.std(aucs, ddof=1)), 4)
                              if len(aucs) > 1 else None}
    print(json.dumps({"held_out": held_out, "trained_on": trainable, "test": result, "auc_over_seeds": spread}),
          flush=True)


def train_step(args) -> None:
    """Train, select on val, read test once, write ``OUT/chosen`` (see the module docstring)."""
    out, data = Path(args.out), Path(args.data)
    t_start = time.time()
    block, tag = args.tail_block, run_name(args.encoder, args.tail_block)
    config = recipe_config(args.encoder, args.epochs, block, args.lr)
    table = SliceTable(out, args.encoder, block=block)
    parts = split_sources(source_records(data), seed=0)
    trainable = [s for s in parts if parts[s]["train"] and s != args.hold_out]
    within = [s for s in WITHIN_SOURCE_VAL if s != args.hold_out]
    tr_rows, tr_y, tr_src = [], [], []
    for source in trainable:
        rows, y, _ = table.select(parts[source]["train"])
        tr_rows.append(rows)
        tr_y.append(y)
        tr_src += [source] * len(rows)
    tr_rows, tr_y = np.concatenate(tr_rows), np.concatenate(tr_y)
    va = [r for s in trainable for r in parts[s]["val"]]
    va_rows, va_y, _ = table.select(va)
    log.warning("train %d slices, val %d slices", len(tr_rows), len(va_rows))
    weights = draw_weights(tr_src, tr_y)
    members, histories, folders, drawn_covid = [], {}, [], []
    for seed in args.seeds:
        folder = out / (f"{tag}-e{args.epochs}{'' if args.lr == TRAIN['lr'] else f'-lr{args.lr:g}'}"
                        f"{f'-without-{args.hold_out}' if args.hold_out else ''}-seed{seed}")
        net = encoder_net(args.encoder)
        tail = Tail(net, block)
        draws = np.random.default_rng(seed).choice(len(tr_rows), size=len(tr_rows), p=weights)
        drawn_covid.append(float(tr_y[draws].mean()))
        if args.reuse and (folder / CARD_FILE).is_file():
            net.load_state_dict(torch.load(folder / "model.pt", weights_only=True))
            histories[seed] = read_card(folder).training["history"]
        else:
            t0 = time.time()
            histories[seed] = fit_tail(tail, config, table.maps[tr_rows[draws]], tr_y[draws], table.maps[va_rows],
                                       va_y, seed=seed)
            log.warning("seed %d: %s (%.0f s)", seed, histories[seed][-1], time.time() - t0)
            card = new_card(config, f"ct-default-{tag}-seed{seed}",
                            training={"seed": seed, "tail_block": block, "seconds": round(time.time() - t0, 1),
                                      "history": histories[seed]})
            save_checkpoint(net, card, folder)
        members.append(tail.eval())
        folders.append(folder)
    val_scores = {}
    for seed, tail in zip(args.seeds, members):
        per = score_sources([tail], table, {s: parts[s] for s in within}, "val", 1.0, 0.5, 200)
        val_scores[str(seed)] = {s: round(per[s]["auc"]["value"], 4) for s in per}
        val_scores[str(seed)]["mean"] = round(float(np.mean([per[s]["auc"]["value"] for s in per])), 4)
        log.warning("seed %s val %s", seed, val_scores[str(seed)])
    summary = {k: round(float(np.mean([v[k] for v in val_scores.values()])), 4) for k in val_scores[str(args.seeds[0])]}
    print(json.dumps({"run": tag, "epochs": args.epochs, "lr": args.lr, "val": val_scores, "mean_over_seeds": summary}),
          flush=True)
    if args.hold_out:
        test_each_seed([args.hold_out], members, args.seeds, table, parts, trainable, args.hold_out)
        return
    if args.score_seeds:
        test_each_seed(list(WITHIN_SOURCE_VAL), members, args.seeds, table, parts, trainable)
        return
    if args.val_only:
        return
    best = max(val_scores, key=lambda k: val_scores[k]["mean"])
    chosen = [members[args.seeds.index(int(best))]]
    temperature, threshold = operating_point(chosen, table, [r for s in trainable for r in parts[s]["val"]])
    log.warning("chosen %s; temperature %.3f, threshold %.3f (pooled val, best F1)", best, temperature, threshold)
    metrics = {split: score_sources(chosen, table, parts, split, temperature, threshold, 2000)
               for split in ("val", "test")}
    target = out / ("chosen" if block == TAIL_BLOCK else f"chosen-b{block}")
    shutil.copytree(folders[args.seeds.index(int(best))], target, dirs_exist_ok=True)
    held_out_volumes = sorted(Path(r.path).name for r in parts["sirm"]["test"])
    card = read_card(target)
    card.name, card.temperature, card.threshold = "ct-default", round(float(temperature), 4), round(float(threshold), 4)
    card.training = {**card.training,
                  "seconds": round(sum(read_card(f).training["seconds"] for f in folders), 1),
                  "scoring_seconds": round(time.time() - t_start, 1),
                  "prior_covid": round(drawn_covid[args.seeds.index(int(best))], 4),
                  "tail_block": block,
                  "how": f"{args.encoder} Lite0, stem and the first {block} of 7 stages frozen (their maps cached "
                         f"once); {', '.join(trainable_of(block))} trained on the cached maps "
                         f"(chestdx.train.cached.fit_tail), (source, class) cells drawn 1/sqrt(n); seeds "
                         f"{args.seeds}, best on val chosen",
                  "histories": {str(k): v for k, v in histories.items()},
                  "data": {"name": "real CT sources of ../shared/data (see fingerprint)",
                           # SIRM volumes of train and val: the real-volume check skips them
                           "trained_on_volumes": sorted(Path(r.path).name for split in ("train", "val")
                                                        for r in parts["sirm"][split]),
                           "held_out_volumes": held_out_volumes,
                           "split": "UCSD official; others patient_split 70/15/15 by patient/look-alike group "
                                    "(SIRM 50/15/35), seed 0; CC-CCII CP and DRE-Net never trained on"}}
    card.fingerprint = {"study_kinds": ["ct-volume", "ct-slice"], **fingerprint(table, parts, data)}
    card.selection = {"criterion": "mean of the val AUCs of soares, mosmed, ucsd (sources with both classes); "
                                   "candidates: one network per seed",
                      "val": val_scores, "chosen": best}
    card.metrics = {split: MetricSet.parse(m, split) for split, m in metrics.items()}
    card.limitations = LIMITATIONS
    write_card(card, target)
    export_onnx(load_chosen(target), target, SPEC.size)
    print(json.dumps({"chosen": best, "val": val_scores[best], "test": {
        s: {k: (v["value"] if isinstance(v, dict) else v) for k, v in m.items() if k in ("auc", "sensitivity", "specificity")}
        for s, m in metrics["test"].items()}}, indent=1))


def load_chosen(folder: Path) -> torch.nn.Module:
    """Returns: the network of a checkpoint folder (for the ONNX export)."""
    from chestdx.models.loading import load_model

    return load_model(folder).net


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["prepare", "features", "train"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=TRAIN["epochs"])
    parser.add_argument("--reuse", action="store_true", help="take seeds already trained in --out")
    parser.add_argument("--val-only", action="store_true", help="stop after scoring the seeds on val (no test read)")
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--out", default="runs/ct-real")
    parser.add_argument("--encoder", nargs="+", default=["moco"])
    parser.add_argument("--sources", nargs="+", default=list(SOURCES))
    parser.add_argument("--tail-block", type=int, default=TAIL_BLOCK, choices=range(STAGES + 1),
                        help="Lite0 stages frozen and cached (7: only the head convolution and classifier train)")
    parser.add_argument("--lr", type=float, default=TRAIN["lr"], help="peak learning rate (AdamW, one cycle)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--hold-out", choices=("soares", "mosmed", "ucsd", "cc-ccii-normal", "sirm", "medseg"),
                        help="leave-one-source-out: train without this source, read its test split, write no model")
    parser.add_argument("--score-seeds", action="store_true",
                        help="after the choice: read every seed on the test splits (spread over seeds), write nothing")
    args = parser.parse_args()
    logging.basicConfig(format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.step == "prepare":
        for source in args.sources:
            prepare_source(Path(args.data), source, out)
    elif args.step == "features":
        for encoder in args.encoder:
            for source in args.sources:
                feature_source(out, source, encoder, args.tail_block)
    else:
        args.encoder = args.encoder[0]
        train_step(args)
    print(json.dumps({"done": args.step}))


if __name__ == "__main__":
    main()
