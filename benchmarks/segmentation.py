"""Lesion segmenter: MedSeg scores beside Inf-Net's, MosMed involvement by category, time per study.

Parts (``--parts``, default all three):

* ``medseg``: the slices of ``--split`` (``test``: the 48 MedSeg test slices, read once with the
  threshold fixed on validation; ``val``: the 10 validation slices named in the model card, for
  checking this script without touching test). Each slice is segmented as given (Inf-Net's
  protocol: the whole lung-cropped slice, no lung mask). Two readings: Inf-Net's MATLAB
  protocol (per-image min-max scaled maps, metrics averaged over 256 thresholds; per class on
  that class's probability, every slice counted), comparable with the published rows; and the
  model's operating point (its card's threshold; per-class Dice averaged over the slices whose
  ground truth has the class). A third row runs ``segment_study`` (lung crop and lung-mask
  restriction, as ``chestdx segment`` does) at the operating point.
* ``mosmed``: every slice of ``ct-mosmed-slices`` (8-bit 256 px renderings; without the half
  that chose the model's minimum lesion area, when its card names one) through
  ``segment_study`` and ``quantify``: involvement (% of the slice's lung) per category, median and
  quartiles, and the share of slices called CT-0 (no lesion pixel). These renderings use a wider
  window than a lung window (lungs and air mid-grey, about 100; soft tissue about 180; black
  outside the scan circle), on which the classical lung mask finds nothing; each slice is first
  mapped linearly onto a lung window's levels (`as_lung_window`: its air and soft-tissue levels,
  the medians either side of an Otsu threshold inside the scan circle, onto 59 and 236, the lung
  window's -1000 and 40 HU; the outside circle filled with air).
* ``sampling`` (not in the default): each of the 20 SIRM COVID-19 volumes quantified from every
  lung slice and from ``--max-slices`` of them (the others take the nearest one's labels):
  how far the involvement, category and severity score move (volumes with fewer lung slices
  than that are left out: nothing was sampled).
* ``timing``: a generated 300-slice DICOM study (``write_sample_series``), read, segmented and
  quantified, best of ``--repeats``, with ``--threads`` torch threads; also with ``--max-slices``.

Usage:
    python benchmarks/segmentation.py [--model lesion-default] [--split test] [--parts medseg,mosmed,timing]
        [--threads 2] [--limit N] [--json FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from chestdx.evaluate.segmentation import class_dice, infection_scores, infnet_mean_scores, mean_scores
from chestdx.io import load_study
from chestdx.io.images import natural_key
from chestdx.io.sample import write_sample_series
from chestdx.io.study import Study
from chestdx.models.lesion import load_lesion_model, measured_spacing, predict_slices, segment_study
from chestdx.models.quantify import quantify
from chestdx.preprocess.intensity import as_lung_window
from chestdx.train.loop import cpu_name
from chestdx.train.segmentation import read_medseg, score_segmenter

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PUBLISHED = [  # Fan et al., IEEE TMI 2020 (Inf-Net), MedSeg test slices, their evaluation tool
    ("Inf-Net (published)", {"dice": 0.682}),
    ("Semi-Inf-Net (published)", {"dice": 0.739, "sensitivity": 0.725, "specificity": 0.960}),
    ("Semi-Inf-Net + FCN8s multi-class (published)", {"dice_ground_glass": 0.646, "dice_consolidation": 0.301}),
]
COLUMNS = ("dice", "sensitivity", "specificity", "mae", "dice_ground_glass", "dice_consolidation")
MOSMED_CATEGORIES = ("CT-0", "CT-1", "CT-2plus")


def medseg(model, split: str, limit: int | None) -> dict:
    """Score the segmenter on MedSeg slices (see the module docstring)."""
    if split == "val":
        names = model.card.training["data"]["medseg-covid-infection train"]["val_slices"]
        data = read_medseg(DATA / "medseg-covid-infection", "train").subset(names)
    else:
        data = read_medseg(DATA / "medseg-covid-infection", "test")
    data = data.subset(data.names[:limit]) if limit else data
    size = model.config.input.size
    t0 = time.perf_counter()
    probs = predict_slices(model.net, data.images, size)
    seconds = (time.perf_counter() - t0) / len(probs)
    infnet = infnet_mean_scores([1 - p[0] for p in probs], [t > 0 for t in data.labels])
    for label, key in ((1, "dice_ground_glass"), (2, "dice_consolidation")):
        infnet[key] = infnet_mean_scores([p[label] for p in probs], [t == label for t in data.labels])["dice"]
    operating = score_segmenter(model.net, data, size, model.threshold, probs=probs)
    pipeline_rows = []
    for image, truth in zip(data.images, data.labels):
        study = Study(image.astype(np.float32), "8bit", kind="ct-slice")
        result = segment_study(study, model)
        pipeline_rows.append((result.labels[0], truth))
    pipeline = _label_scores(pipeline_rows)
    return {"model": model.name, "split": split, "n": len(probs), "threshold": model.threshold, "seconds_per_slice": seconds,
            "infnet_protocol": infnet, "operating_point": operating, "segment_study": pipeline}


def _label_scores(rows: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    """Dice / sensitivity / specificity / per-class Dice of label maps (no probabilities: no MAE)."""
    scored = []
    for labels, truth in rows:
        row = infection_scores((labels > 0).astype(np.float32), truth > 0, 0.5)
        row.pop("mae")
        row["dice_ground_glass"] = class_dice(labels, truth, 1)
        row["dice_consolidation"] = class_dice(labels, truth, 2)
        scored.append(row)
    return mean_scores(scored)


def medseg_table(result: dict, val_scores: dict | None) -> str:
    """Markdown table: published rows, then ours."""
    def cell(scores, key):
        value = scores.get(key)
        value = value.get("value") if isinstance(value, dict) else value  # a card's metrics hold {"value": ...}
        return "-" if value is None else f"{value:.3f}"

    lines = ["| model / reading | Dice | sensitivity | specificity | MAE | GGO Dice | consolidation Dice |",
             "|---|---|---|---|---|---|---|"]
    for name, scores in PUBLISHED:
        lines.append(f"| {name} | " + " | ".join(cell(scores, k) for k in COLUMNS) + " |")
    n, split = result["n"], result["split"]
    lines.append(f"| {result['model']}, Inf-Net protocol (mean over thresholds), {split} n={n} | "
                 + " | ".join(cell(result["infnet_protocol"], k) for k in COLUMNS) + " |")
    lines.append(f"| {result['model']} at threshold {result['threshold']:.2f} (fixed on val), {split} n={n} | "
                 + " | ".join(cell(result["operating_point"], k) for k in COLUMNS) + " |")
    lines.append(f"| segment_study (lung crop + lung mask) at {result['threshold']:.2f}, {split} n={n} | "
                 + " | ".join(cell(result["segment_study"], k) for k in COLUMNS) + " |")
    if val_scores:
        lines.append("| (validation, from the card, at the operating point, n=10) | "
                     + " | ".join(cell(val_scores, k) for k in COLUMNS) + " |")
    return "\n".join(lines)


def mosmed(model, limit: int | None) -> dict:
    """Predicted involvement of every MosMed slice (re-windowed), per category."""
    out = {}
    tuning = (model.card.training or {}).get("min_lesion_area", {}).get("mosmed_tuning_slices", {})
    for category in MOSMED_CATEGORIES:
        held_out = set(tuning.get(category, []))  # the half that chose the model's minimum lesion area is not scored
        paths = [p for p in sorted((DATA / "ct-mosmed-slices" / category).glob("*.jpg"), key=natural_key)
                 if p.name not in held_out][:limit]
        values = []
        for path in paths:
            study = load_study(path, progress=False)
            study.pixels = as_lung_window(study.pixels[0])[None]
            result = segment_study(study, model)
            values.append(quantify(result.lung_mask, result.labels, None)["chest"]["involvement_percent"])
        values = np.asarray(values)
        out[category] = {"n": len(values), "median": float(np.median(values)),
                         "q1": float(np.percentile(values, 25)), "q3": float(np.percentile(values, 75)),
                         "mean": float(values.mean()), "ct0_share": float(np.mean(values == 0)),
                         "over_1_percent": float(np.mean(values > 1))}
    return out


def mosmed_table(result: dict) -> str:
    """Markdown table of involvement per MosMed category."""
    lines = ["| MosMed category | slices | median involvement % | quartiles % | mean % | called CT-0 (no lesion) | > 1% |",
             "|---|---|---|---|---|---|---|"]
    for category, r in result.items():
        lines.append(f"| {category} | {r['n']} | {r['median']:.2f} | {r['q1']:.2f}-{r['q3']:.2f} | {r['mean']:.2f} | "
                     f"{r['ct0_share']:.0%} | {r['over_1_percent']:.0%} |")
    return "\n".join(lines)


def timing(model, n_slices: int, repeats: int, max_slices: int | None) -> dict:
    """Seconds to read, segment and quantify a generated DICOM study."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        write_sample_series(tmp, n_slices=n_slices, progress=False)
        for cap in (None, max_slices):
            best = None
            for _ in range(repeats):
                t0 = time.perf_counter()
                study = load_study(tmp, progress=False)
                t1 = time.perf_counter()
                result = segment_study(study, model, max_slices=cap)
                t2 = time.perf_counter()
                quantify(result.lung_mask, result.labels, measured_spacing(study))
                t3 = time.perf_counter()
                run = {"read": t1 - t0, "segment": t2 - t1, "quantify": t3 - t2, "total": t3 - t0,
                       "slices_run": int(len(result.segmented))}
                best = run if best is None or run["total"] < best["total"] else best
            out["all lung slices" if cap is None else f"max_slices={cap}"] = best
    return out


def sampling(model, max_slices: int) -> list[dict]:
    """Quantification of each SIRM volume from every lung slice and from ``max_slices`` of them."""
    rows = []
    for folder in sorted((DATA / "covid-ct-volumes-sirm").iterdir(), key=natural_key):
        study = load_study(folder, progress=False)
        chest = {}
        for cap in (None, max_slices):
            result = segment_study(study, model, max_slices=cap)
            chest[cap] = quantify(result.lung_mask, result.labels, None)["chest"]
        if len(result.segmented) < max_slices:  # every lung slice was run both times
            continue
        rows.append({"study": folder.name, "slices": len(study.pixels), "all": chest[None]["involvement_percent"],
                     "sampled": chest[max_slices]["involvement_percent"], "category_all": chest[None]["category"],
                     "category_sampled": chest[max_slices]["category"], "score_all": chest[None]["severity_score"],
                     "score_sampled": chest[max_slices]["severity_score"]})
    return rows


def sampling_summary(rows: list[dict], max_slices: int) -> str:
    """One paragraph: how far sampled quantification is from the full one."""
    diff = np.array([abs(r["sampled"] - r["all"]) for r in rows])
    same = sum(r["category_all"] == r["category_sampled"] for r in rows)
    score = np.array([abs(r["score_sampled"] - r["score_all"]) for r in rows])
    return (f"SIRM volumes with more than {max_slices} lung slices: {len(rows)}; involvement from {max_slices} slices vs "
            f"all: median |difference| {np.median(diff):.2f} points, largest {diff.max():.2f} (involvement "
            f"{min(r['all'] for r in rows):.1f}-{max(r['all'] for r in rows):.1f}%); same category {same}/{len(rows)}; "
            f"severity score |difference| median {np.median(score):.0f}, largest {score.max():.0f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="lesion-default")
    parser.add_argument("--split", default="test", choices=["test", "val"])
    parser.add_argument("--parts", default="medseg,mosmed,timing")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, help="first N slices per set (quick checks)")
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--max-slices", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_lesion_model(args.model)
    parts = args.parts.split(",")
    print(f"# {model.name} ({model.card.date}), {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"{cpu_name()}, torch threads {args.threads}\n")
    figures = {"model": model.name, "threads": args.threads}
    if "medseg" in parts:
        figures["medseg"] = result = medseg(model, args.split, args.limit)
        print(medseg_table(result, model.card.metrics["val"].to_dict() if "val" in model.card.metrics else None))
        print(f"\n{result['seconds_per_slice']:.2f} s per slice through the network\n")
    if "mosmed" in parts:
        figures["mosmed"] = result = mosmed(model, args.limit)
        print(mosmed_table(result) + "\n")
    if "timing" in parts:
        figures["timing"] = result = timing(model, args.slices, args.repeats, args.max_slices)
        for name, r in result.items():
            print(f"{args.slices}-slice study, {name}: total {r['total']:.1f} s (read {r['read']:.1f}, segment "
                  f"{r['segment']:.1f} for {r['slices_run']} slices, quantify {r['quantify']:.2f})")
    if "sampling" in parts:
        figures["sampling"] = rows = sampling(model, args.max_slices)
        print(sampling_summary(rows, args.max_slices))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
