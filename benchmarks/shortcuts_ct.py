"""Shortcut checks of the real-data CT model (issue 15; DeGrave et al., Nat Mach Intell 2021).

Reads the slice cache of ``scripts/train_real_ct.py`` (``--run``) and its splits, and prints:

1. Per-source sensitivity and specificity on the test splits, with patient-bootstrap CIs
   (the model's own study scores, at its val operating point).
2. A source classifier on the model's own pooled slice features (logistic regression, fit on
   the train split, read on the test split): how well the features tell the sources apart,
   over all slices and within each class.
3. Leave-one-source-out: for each source, a linear probe (logistic regression) on the frozen
   encoder's pooled features is fit on the train splits of every *other* source, its
   threshold set on their val splits (best F1), and read on the held-out source's test split.
   A probe, not the full model: retraining the model's head once per source does not fit the
   2-core budget. The same probe fit on every source is the reference row.
4. Lungs blanked: test slices whose lung pixels (the model's own lung mask) are set to black,
   through the whole ``chestdx predict`` path; a model that reads only the lungs should answer
   the same for all of them (what it says on an image without lung), compared with the
   training prior.
5. With ``--compare NAME``: another model (e.g. the previous ``ct-default``) through the same
   predict path on the test splits (``--split val``: the val splits, for a selection rule) of the
   sources with both classes and of the CC-CCII normals; with ``--split val`` the mean within-source
   AUC (Soares, MosMed, UCSD) is printed too.

Usage:
    python benchmarks/shortcuts_ct.py [--run runs/ct-real] [--model runs/ct-real/chosen] [--data ../shared/data]
        [--compare ct-default] [--only compare] [--split val]
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from train_real_ct import (  # noqa: E402  (the training script's data layout and splits)
    COVID_LABELS,
    TAIL_BLOCK,
    SliceTable,
    encoder_net,
    score_sources,
    source_records,
    split_sources,
)

from chestdx.errors import ChestDxError  # noqa: E402
from chestdx.evaluate.metrics import auc_score, choose_operating_point  # noqa: E402
from chestdx.evaluate.report import evaluate_predictions  # noqa: E402
from chestdx.io import load_study  # noqa: E402
from chestdx.io.study import Study  # noqa: E402
from chestdx.models.loading import load_model  # noqa: E402
from chestdx.outputs.prediction import prediction_record  # noqa: E402
from chestdx.pipeline import diagnose  # noqa: E402
from chestdx.preprocess.pipeline import study_lung_mask  # noqa: E402
from chestdx.train.cached import Tail, tail_outputs  # noqa: E402

TRAINABLE = ("soares", "mosmed", "cc-ccii-normal", "ucsd", "sirm", "medseg")


def _cell(entry) -> str:
    if not isinstance(entry, dict) or entry.get("value") is None:
        return "-"
    low, high = entry.get("ci_low"), entry.get("ci_high")
    ci = f" ({low:.3f}-{high:.3f})" if low is not None and high is not None else ""
    return f"{entry['value']:.3f}{ci}"


def tail_block(model) -> int:
    """Returns: the stages a `train_real_ct.py` model kept frozen (the maps its tail reads)."""
    return model.card.training.get("tail_block", TAIL_BLOCK)


def members_of(model) -> list[Tail]:
    """Returns: one tail per member of a loaded ai-corona model (an ensemble or one network)."""
    return [Tail(m, tail_block(model)) for m in getattr(model.net, "members", [model.net])]


def slice_features(tails: list[Tail], maps: np.ndarray) -> np.ndarray:
    """Returns: the model's pooled slice features (members side by side)."""
    return np.concatenate([tail_outputs(t, maps)[1] for t in tails], 1)


def per_source_table(model, table, parts) -> None:
    metrics = score_sources(members_of(model), table, parts, "test", model.temperature, model.threshold, 2000)
    print(f"\n## 1. Per-source test results at the val operating point (threshold {model.threshold:.3f})\n")
    print("| source | studies (COVID-19) | patients | AUC | sensitivity | specificity |")
    print("|---|---|---|---|---|---|")
    for source, m in metrics.items():
        print(f"| {source} | {m['n_studies']} ({m['n_covid']}) | {m['n_patients']} | {_cell(m['auc'])} | "
              f"{_cell(m['sensitivity'])} | {_cell(m['specificity'])} |")


def source_classifier(model, table, parts) -> None:
    tails = members_of(model)
    data = {}
    for split in ("train", "test"):
        rows, ys, srcs = [], [], []
        for source in TRAINABLE:
            r, y, _ = table.select(parts[source][split])
            rows.append(r)
            ys.append(y)
            srcs += [source] * len(r)
        rows = np.concatenate(rows)
        data[split] = (slice_features(tails, table.maps[rows]), np.concatenate(ys), np.asarray(srcs))
    x_tr, y_tr, s_tr = data["train"]
    x_te, y_te, s_te = data["test"]
    print("\n## 2. Source classifier on the model's pooled slice features (train split -> test split)\n")
    print("| slices | sources | balanced accuracy (chance) | recall per source |")
    print("|---|---|---|---|")
    for name, keep_tr, keep_te in (("all", np.ones_like(y_tr, bool), np.ones_like(y_te, bool)),
                                   ("COVID-19 only", y_tr == 1, y_te == 1), ("non-COVID only", y_tr == 0, y_te == 0)):
        sources = sorted(set(s_tr[keep_tr]) & set(s_te[keep_te]))
        if len(sources) < 2:
            continue
        tr = keep_tr & np.isin(s_tr, sources)
        te = keep_te & np.isin(s_te, sources)
        scaler = StandardScaler().fit(x_tr[tr])
        clf = LogisticRegression(C=0.1, max_iter=3000, class_weight="balanced").fit(scaler.transform(x_tr[tr]), s_tr[tr])
        pred = clf.predict(scaler.transform(x_te[te]))
        recall = {s: float(np.mean(pred[s_te[te] == s] == s)) for s in sources}
        print(f"| {name} (n={te.sum()}) | {len(sources)} | {balanced_accuracy_score(s_te[te], pred):.3f} "
              f"({1 / len(sources):.3f}) | " + ", ".join(f"{s} {v:.2f}" for s, v in recall.items()) + " |")


def leave_one_source_out(table, parts, encoder: str, block: int) -> None:
    probe = Tail(encoder_net(encoder), block)
    feats, labels = {}, {}
    for source in TRAINABLE:
        for split in ("train", "val", "test"):
            rows, y, _ = table.select(parts[source][split])
            feats[source, split] = tail_outputs(probe, table.maps[rows])[1] if len(rows) else np.zeros((0, 1280))
            labels[source, split] = y
    print(f"\n## 3. Leave-one-source-out: linear probe on the frozen {encoder} encoder's pooled features "
          "(slice level)\n")
    print("| held-out source | test slices (COVID-19) | AUC | sensitivity | specificity | same probe trained on all sources: AUC / sens / spec |")
    print("|---|---|---|---|---|---|")

    def fit(sources):
        x = np.concatenate([feats[s, "train"] for s in sources])
        y = np.concatenate([labels[s, "train"] for s in sources])
        scaler = StandardScaler().fit(x)
        clf = LogisticRegression(C=0.05, max_iter=3000, class_weight="balanced").fit(scaler.transform(x), y)
        xv = np.concatenate([feats[s, "val"] for s in sources])
        yv = np.concatenate([labels[s, "val"] for s in sources])
        threshold = choose_operating_point(yv, clf.predict_proba(scaler.transform(xv))[:, 1], "f1")
        return lambda x: clf.predict_proba(scaler.transform(x))[:, 1], threshold

    def read(predict, threshold, source):
        y = labels[source, "test"]
        p = predict(feats[source, "test"])
        auc = auc_score(y, p) if 0 < y.sum() < len(y) else None
        sens = float(np.mean(p[y == 1] >= threshold)) if (y == 1).any() else None
        spec = float(np.mean(p[y == 0] < threshold)) if (y == 0).any() else None
        return [("-" if v is None else f"{v:.3f}") for v in (auc, sens, spec)]

    everything = fit(TRAINABLE)
    for source in TRAINABLE:
        y = labels[source, "test"]
        if not len(y):
            continue
        held = read(*fit([s for s in TRAINABLE if s != source]), source)
        print(f"| {source} | {len(y)} ({int(y.sum())}) | " + " | ".join(held) + " | " +
              " / ".join(read(*everything, source)) + " |")


def lungs_blanked(model, parts, per_source: int) -> None:
    print(f"\n## 4. Lungs blanked (black where the model's lung mask is), {per_source} test studies per source, "
          "whole predict path\n")
    print("| source | studies | P(COVID-19) original: mean | lungs blanked: mean (min-max) |")
    print("|---|---|---|---|")
    prior = model.card.training.get("prior_covid")
    for source in TRAINABLE:
        recs = parts[source]["test"]
        recs = [recs[i] for i in np.linspace(0, len(recs) - 1, min(per_source, len(recs))).round().astype(int)]
        original, blanked = [], []
        for rec in recs:
            study = _load(rec)
            original.append(prediction_record(diagnose(study, model))["probabilities"]["covid"])
            pixels = np.where(study_lung_mask(study), 0.0, study.pixels)
            empty = Study(pixels, study.intensity, study.spacing, study.modality, study.kind, study.source)
            blanked.append(prediction_record(diagnose(empty, model))["probabilities"]["covid"])
        print(f"| {source} | {len(recs)} | {np.mean(original):.3f} | {np.mean(blanked):.3f} "
              f"({np.min(blanked):.3f}-{np.max(blanked):.3f}) |")
    if prior is not None:
        print(f"\nTraining prior P(COVID-19) (share of drawn training slices): {prior:.3f}")


def _load(rec):
    """A record's study; single images are CT slices (the router is not under test here)."""
    return load_study(rec.path, kind=None if Path(rec.path).is_dir() else "ct-slice", progress=False)


def compare_model(name: str, parts, split: str = "test",
                  sources=("soares", "mosmed", "ucsd", "cc-ccii-normal")) -> None:
    model = load_model(name)
    print(f"\n## 5. {model.name} ({name}) on the same {split} splits, through the predict path "
          f"(threshold {model.threshold:.3f})\n")
    print("| source | studies (COVID-19) | AUC | sensitivity | specificity |")
    print("|---|---|---|---|---|")
    within = []
    for source in sources:
        recs = parts[source][split]
        probs, kept = [], []
        for rec in recs:
            try:
                study = _load(rec)
            except ChestDxError:
                continue
            answer = prediction_record(diagnose(study, model))
            probs.append([answer["probabilities"][c] for c in model.config.classes])
            kept.append(rec)
        y = np.array([int(r.label in COVID_LABELS) for r in kept])
        res = evaluate_predictions(y, np.asarray(probs), list(model.config.classes), [r.patient_id for r in kept],
                                   threshold=model.threshold, level="study", n_resamples=2000, seed=0)
        m = res["metrics"]
        print(f"| {source} | {len(kept)} ({int(y.sum())}) | {_cell(m.get('auc'))} | {_cell(m.get('sensitivity'))} | "
              f"{_cell(m.get('specificity'))} |")
        if isinstance(m.get("auc"), dict) and m["auc"].get("value") is not None:
            within.append(m["auc"]["value"])
    print(f"\nMean within-source {split} AUC over {len(within)} sources with both classes: {np.mean(within):.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/ct-real")
    parser.add_argument("--model", default="runs/ct-real/chosen")
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--encoder", default="moco")
    parser.add_argument("--blanked-per-source", type=int, default=8)
    parser.add_argument("--compare", help="also score this model (bundled name or folder) on the test splits")
    parser.add_argument("--only", choices=["compare"], help="run only the comparison")
    parser.add_argument("--split", choices=["test", "val"], default="test", help="the comparison's split")
    args = parser.parse_args()
    torch.set_num_threads(1)
    parts = split_sources(source_records(Path(args.data)), seed=0)
    if args.only == "compare":
        compare_model(args.compare, parts, args.split)
        return
    model = load_model(args.model)
    table = SliceTable(Path(args.run), args.encoder, block=tail_block(model))
    counts = Counter(r.label in COVID_LABELS for s in TRAINABLE for r in parts[s]["test"])
    print(f"model {model.name} ({args.model}); test studies: {counts[True]} COVID-19, {counts[False]} non-COVID")
    per_source_table(model, table, parts)
    source_classifier(model, table, parts)
    leave_one_source_out(table, parts, args.encoder, tail_block(model))
    lungs_blanked(model, parts, args.blanked_per_source)
    if args.compare:
        compare_model(args.compare, parts)


if __name__ == "__main__":
    main()
