"""Train the bundled lesion segmenter (``lesion-default``) on MedSeg train; resumable, fixed seed.

The 50 MedSeg train slices are split once (seeded, written into the card): 10 validation, 40
training. MedSeg gives no patient ids (the 100 slices come from about 40 patients), so the split
is by slice and neighbouring slices of one patient may sit on both sides: validation is optimistic.
After training, the infection threshold is chosen on validation and the checkpoint is written;
the 48 test slices are not read here (``benchmarks/segmentation.py`` reads them once). Running
the script again on a finished run only re-selects the threshold and rewrites the checkpoint.

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

from chestdx.models.bundled import WEIGHTS_DIR
from chestdx.models.lesion import (
    DEFAULT_LESION_MODEL,
    export_lesion_onnx,
    load_lesion_model,
    predict_slices,
    save_lesion_model,
)
from chestdx.train.segmentation import (
    LabelledSlices,
    choose_threshold,
    fit_segmenter,
    pseudo_label,
    read_medseg,
    read_unlabelled,
    score_segmenter,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DATA = SHARED / "medseg-covid-infection"
UNLABELLED = SHARED / "covid-ct-volumes-sirm"
PSEUDO_FILE = "pseudo-labels.npz"
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
        "cpu": "AMD EPYC (AVX2, no bf16), 1 torch thread",
    }
    out = WEIGHTS_DIR / DEFAULT_LESION_MODEL if args.install else args.out / "model"
    limitations = LIMITATIONS if not pseudo_record else [
        LIMITATIONS[0] + f" Also trained on {pseudo_record['slices']} unlabelled slices of {pseudo_record['patients']} "
        f"COVID-19 patients ({pseudo_record['folder']}) labelled by {pseudo_record['teacher']}: its errors are learnt "
        "as well.", *LIMITATIONS[1:]]
    save_lesion_model(fit.net, out, size=args.size, normalise=normalise, threshold=threshold, training=training,
                      metrics={"val": val_scores, "val_threshold_0.5": fit.val_scores}, limitations=limitations)
    export_lesion_onnx(fit.net, out, args.size)
    (args.out / "history.json").write_text(json.dumps(fit.history, indent=1))
    logging.info("wrote %s", out)
    return 0


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
