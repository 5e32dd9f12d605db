"""Train the bundled lesion segmenter (``lesion-default``) on MedSeg train; resumable, fixed seed.

The 50 MedSeg train slices are split once (seeded, written into the card): 10 validation, 40
training. MedSeg gives no patient ids (the 100 slices come from about 40 patients), so the split
is by slice and neighbouring slices of one patient may sit on both sides: validation is optimistic.
After training, the infection threshold is chosen on validation and the checkpoint is written;
the 48 test slices are not read here (``benchmarks/segmentation.py`` reads them once). Running
the script again on a finished run only re-selects the threshold and rewrites the checkpoint.

Last, the minimum lesion area (``min_lesion_mm2`` in the card: smaller in-plane lesions are
dropped by ``segment_study``) is chosen on a seeded half of the MosMed slices (written into the
card; ``benchmarks/segmentation.py`` reports the other half): the area on a grid with the best
balanced accuracy of "no lesion" on CT-0 slices and "some lesion" on CT-1/CT-2plus slices, among
the areas that keep the validation slices' Dice (``segment_study``) within 0.01 of no minimum.

Semi-supervised (``--teacher``): a trained segmenter labels the unlabelled slices of
``--unlabelled`` (the 1,600 SIRM slices, as Semi-Inf-Net used them) once, at the start of the
run (kept in the run folder, so a resumed run reuses them even if the teacher changed); every
epoch then adds ``--pseudo-per-epoch`` of them, drawn afresh, to the 40 labelled slices.

    nohup nice -n 5 env PYTHONPATH=$PWD python scripts/train_lesion.py --out runs/lesion \
        --max-minutes 45 --install > runs/lesion.log 2>&1 &
    nohup nice -n 5 env PYTHONPATH=$PWD python scripts/train_lesion.py --out runs/lesion-semi --size 192 \
        --teacher lesion-default --pseudo-per-epoch 120 --max-minutes 50 > runs/lesion-semi.log 2>&1 &
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from chestdx.evaluate.segmentation import dice
from chestdx.io import load_study
from chestdx.io.images import natural_key
from chestdx.io.study import Study
from chestdx.models.bundled import WEIGHTS_DIR
from chestdx.models.lesion import (
    DEFAULT_LESION_MODEL,
    drop_small_lesions,
    export_lesion_onnx,
    in_plane_mm,
    load_lesion_model,
    predict_slices,
    save_lesion_model,
    segment_study,
)
from chestdx.preprocess.intensity import as_lung_window
from chestdx.train.segmentation import LabelledSlices, pseudo_label, read_medseg, read_unlabelled
from chestdx.train.loop import cpu_name
from chestdx.train.segmentation import choose_threshold, fit_segmenter, score_segmenter

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DATA = SHARED / "medseg-covid-infection"
UNLABELLED = SHARED / "covid-ct-volumes-sirm"
PSEUDO_FILE = "pseudo-labels.npz"
MOSMED = SHARED / "ct-mosmed-slices"
MOSMED_CATEGORIES = ("CT-0", "CT-1", "CT-2plus")
MIN_AREA_GRID_MM2 = (0.0, 5.0, 10.0, 20.0, 40.0, 80.0)
VAL_DICE_TOLERANCE = 0.01
MIN_AREA_RULE = ("the grid's area with the best balanced accuracy of 'no lesion' on CT-0 and 'some lesion' on "
                 "CT-1/CT-2plus slices of the MosMed tuning half, among the areas that keep the validation slices' "
                 "segment_study Dice within 0.01 of no minimum; ties go to the smaller area")
VAL_SLICES = 10
LIMITATIONS = [
    "Trained on 40 slices and validated on 10 slices of one public set (MedSeg / SIRM, Italy; COVID-19 only), "
    "split by slice because the set has no patient ids: validation figures are optimistic.",
    "No normal lungs and no other pneumonia in training: lesions are found wherever the slice looks like "
    "the training lesions, so false positives on normal slices and on other diseases are expected "
    "(benchmarks/segmentation.py reports MosMed CT-0 slices).",
    "Input: one 8-bit lung-window slice (-600/1500), cropped to the lungs. HU studies are rendered with that "
    "window; 8-bit images rendered with another window must be re-windowed first (MosMed's must).",
    "2-D, slice by slice: no 3-D consistency. The ground-glass / consolidation split is less reliable than "
    "infection vs background.",
    "Research use only; not a medical device.",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA, help="MedSeg folder (train/ and test/)")
    parser.add_argument("--out", type=Path, default=Path("runs/lesion"), help="run folder (resumes from its state)")
    parser.add_argument("--encoder", default="ct-moco-lite0", help="ct-moco-lite0, imagenet or none")
    parser.add_argument("--size", type=int, default=288)
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--max-minutes", type=float, default=45.0, help="budget in minutes of CPU time")
    parser.add_argument("--max-wall-minutes", type=float, help="wall-clock budget as well (a shared machine)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--teacher", help="a trained segmenter (name or folder) that pseudo-labels --unlabelled")
    parser.add_argument("--unlabelled", type=Path, default=UNLABELLED, help="folder of unlabelled lung-cropped slices")
    parser.add_argument("--pseudo-per-epoch", type=int, default=120, help="pseudo-labelled slices added to each epoch")
    parser.add_argument("--install", action="store_true", help=f"write the result to chestdx/weights/{DEFAULT_LESION_MODEL}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    torch.set_num_threads(1)

    data = read_medseg(args.data, "train")
    order = np.random.default_rng(args.seed).permutation(len(data.names))
    val_names = sorted((data.names[i] for i in order[:VAL_SLICES]), key=int)
    train_names = [n for n in data.names if n not in val_names]
    train, val = data.subset(train_names), data.subset(val_names)
    logging.info("train %d slices, val %d slices: %s", len(train_names), len(val_names), val_names)

    pseudo, pseudo_record = None, None
    if args.teacher:
        pseudo, pseudo_record = pseudo_labelled(args.out, args.teacher, args.unlabelled)
        logging.info("%d pseudo-labelled slices from %s; %d per epoch", len(pseudo.names), args.teacher, args.pseudo_per_epoch)
    encoder = {"imagenet": True, "none": False}.get(args.encoder, args.encoder)
    normalise = "imagenet" if encoder is True else "unit"
    fit = fit_segmenter(train, val, args.out, encoder=encoder, normalise=normalise, size=args.size,
                        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, max_minutes=args.max_minutes,
                        max_wall_minutes=args.max_wall_minutes, seed=args.seed, pseudo=pseudo,
                        pseudo_per_epoch=args.pseudo_per_epoch)
    probs = predict_slices(fit.net, val.images, args.size)
    threshold = choose_threshold(probs, val)
    val_scores = score_segmenter(fit.net, val, args.size, threshold, probs=probs)
    logging.info("best epoch %d; val at 0.5: %s; threshold %.2f on val: %s", fit.best_epoch, fit.val_scores,
                 threshold, val_scores)
    training = {
        "data": {"medseg-covid-infection train": {"train_slices": train_names, "val_slices": val_names},
                 **({"pseudo-labelled": pseudo_record} if pseudo_record else {})},
        "split": "by slice, seeded (MedSeg has no patient ids)",
        "encoder": args.encoder, "size": args.size, "epochs_run": fit.history[-1]["epoch"],
        "epochs_planned": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
        "max_cpu_minutes": args.max_minutes, "max_wall_minutes": args.max_wall_minutes, "cpu_seconds": fit.seconds, "best_epoch": fit.best_epoch,
        "selection": "EMA network with the best mean val infection Dice (threshold 0.5), scored every 5 epochs; "
                     "then the infection threshold with the best mean val Dice on a 0.2-0.8 grid",
        "cpu": f"{cpu_name()}, 1 torch thread",
    }
    out = WEIGHTS_DIR / DEFAULT_LESION_MODEL if args.install else args.out / "model"
    limitations = LIMITATIONS if not pseudo_record else [
        LIMITATIONS[0] + f" Also trained on {pseudo_record['slices']} unlabelled slices of {pseudo_record['patients']} "
        f"COVID-19 patients ({pseudo_record['folder']}) labelled by {pseudo_record['teacher']}: its errors are learnt "
        "as well.", *LIMITATIONS[1:]]
    card = {"size": args.size, "normalise": normalise, "threshold": threshold, "training": training,
            "metrics": {"val": val_scores, "val_threshold_0.5": fit.val_scores}, "limitations": limitations}
    save_lesion_model(fit.net, out, **card)
    export_lesion_onnx(fit.net, out, args.size)
    tuning = mosmed_tuning_half(MOSMED, args.seed)
    area, rows = choose_min_area(load_lesion_model(out), val, tuning)
    for row in rows:
        logging.info("minimum lesion area %s", row)
    training["min_lesion_area"] = {"mosmed_tuning_slices": tuning, "grid": rows, "rule": MIN_AREA_RULE}
    save_lesion_model(fit.net, out, **card, min_lesion_mm2=area)
    logging.info("minimum lesion area %.0f mm2", area)
    (args.out / "history.json").write_text(json.dumps(fit.history, indent=1))
    logging.info("wrote %s", out)
    return 0


def mosmed_tuning_half(folder: Path, seed: int) -> dict[str, list[str]]:
    """Half of each MosMed category's slice files (seeded draw), for choosing the minimum lesion area."""
    half = {}
    for category in MOSMED_CATEGORIES:
        paths = sorted((folder / category).glob("*.jpg"), key=natural_key)
        order = np.random.default_rng(seed).permutation(len(paths))
        half[category] = [paths[i].name for i in sorted(order[:len(paths) // 2])]
    return half


def choose_min_area(model, val: LabelledSlices, tuning: dict[str, list[str]]) -> tuple[float, list[dict]]:
    """The minimum lesion area (mm2) by the rule of this script's docstring, and the grid's figures."""
    def segmented(study: Study):
        return segment_study(study, model, min_lesion_mm2=0.0).labels, in_plane_mm(study) ** 2

    def kept(labels: np.ndarray, pixel_mm2: float, area: float) -> np.ndarray:
        labels = labels.copy()
        drop_small_lesions(labels, area / pixel_mm2)
        return labels

    mosmed = {}
    for category, names in tuning.items():
        mosmed[category] = []
        for name in names:
            study = load_study(MOSMED / category / name, progress=False)
            study.pixels = as_lung_window(study.pixels[0])[None]
            mosmed[category].append(segmented(study))
    val_maps = [(segmented(Study(im.astype(np.float32), "8bit", kind="ct-slice")), truth)
                for im, truth in zip(val.images, val.labels)]
    rows = []
    for area in MIN_AREA_GRID_MM2:
        normal = np.mean([not kept(*m, area).any() for m in mosmed["CT-0"]])
        lesion = np.mean([kept(*m, area).any() for c in ("CT-1", "CT-2plus") for m in mosmed[c]])
        val_dice = np.mean([dice(kept(*m, area)[0] > 0, truth > 0) for m, truth in val_maps])
        rows.append({"min_lesion_mm2": area, "ct0_without_lesion": float(normal), "ct1_2_with_lesion": float(lesion),
                     "balanced_accuracy": float((normal + lesion) / 2), "val_dice_segment_study": float(val_dice)})
    allowed = [r for r in rows if r["val_dice_segment_study"] >= rows[0]["val_dice_segment_study"] - VAL_DICE_TOLERANCE]
    best = max(allowed, key=lambda r: (r["balanced_accuracy"], -r["min_lesion_mm2"]))
    return best["min_lesion_mm2"], rows


def pseudo_labelled(run: Path, teacher: str, folder: Path) -> tuple[LabelledSlices, dict]:
    """The run's pseudo-labelled slices: labelled by ``teacher`` on the first call, read back after."""
    path = run / PSEUDO_FILE
    slices = read_unlabelled(folder)
    if path.is_file():
        stored = np.load(path)
        record = json.loads(str(stored["record"]))
        labels = [stored[f"label_{i}"] for i in range(len(slices))]
        return LabelledSlices([im for _, im in slices], labels, [n for n, _ in slices]), record
    model = load_lesion_model(teacher)
    pseudo = pseudo_label(model, slices)
    record = {"folder": folder.name, "slices": len(slices), "patients": len({n.split("/")[0] for n in pseudo.names}),
              "teacher": model.name, "teacher_date": model.card.date, "teacher_threshold": model.threshold,
              "slices_with_lesion": int(sum(bool(lb.any()) for lb in pseudo.labels))}
    run.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, record=json.dumps(record), **{f"label_{i}": lb for i, lb in enumerate(pseudo.labels)})
    return pseudo, record


if __name__ == "__main__":
    raise SystemExit(main())
