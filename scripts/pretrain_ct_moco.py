"""Self-supervised MoCo v2 pre-training of the ImageNet Lite0 slice encoder on unlabelled CT.

The slices: every CT image in ``../shared/data`` that is not in UCSD COVID-CT's val or
test lists, labels ignored: UCSD train images, the SIRM COVID-19 volumes, the CC-CCII
scans, the DRE-Net demo persons and the MedSeg *train* images (MedSeg test slices stay out:
they are the localisation benchmark). Volumes give at most ``--per-volume`` lung slices
each (equidistant), so that no study dominates. The encoder is written to
``chestdx/weights/ct-moco-lite0/encoder.pt`` (fp16) with ``encoder.json`` (data, settings,
loss history); `scripts/ablate_ct.py`'s ``moco`` row fine-tunes from it.

Usage:
    python scripts/pretrain_ct_moco.py [--epochs 12] [--size 160] [--lung-crop] [--max-minutes 45]
        [--lr 0.00375] [--queue 256]

The defaults of ``--lr`` and ``--queue`` fit this small pool: MoCo v2's 0.03 is for batches of
256 (linearly scaled to our 32 it is 0.00375), and a queue shorter than an epoch keeps an
image's own key of the previous epoch out of its negatives (with a queue of almost the whole
pool, as in the first run, the loss rose epoch after epoch).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from chestdx.io.datasets import CaseRecord, cc_ccii, dre_net_demo, sirm_volumes, ucsd_covid_ct
from chestdx.models.cards import WEIGHTS_DIR
from chestdx.models.recipes.ai_corona import EfficientNetClassifier
from chestdx.models.registry import RecipeConfig
from chestdx.preprocess.spec import InputSpec
from chestdx.train.contrastive import VIEW_AUGMENT, pretrain_moco, scaled_lr
from chestdx.train.data import build_samples

UNLABELLED = "unlabelled"


def unlabelled_records(data: Path) -> dict[str, list[CaseRecord]]:
    """Returns: source name -> records of the CT images used for pre-training (labels dropped)."""
    def strip(records):
        return [CaseRecord(r.path, UNLABELLED, r.patient_id) for r in records]

    medseg = sorted((data / "medseg-covid-infection" / "train" / "images").glob("*.jpg"))
    return {
        "ucsd-covid-ct train split": strip(r for r in ucsd_covid_ct(data / "ucsd-covid-ct") if r.split == "train"),
        "covid-ct-volumes-sirm": strip(sirm_volumes(data / "covid-ct-volumes-sirm")),
        "cc-ccii-sample": strip(cc_ccii(data / "cc-ccii-sample")),
        "dre-net-demo": strip(dre_net_demo(data / "dre-net-demo")),
        "medseg-covid-infection train images": [CaseRecord(p, UNLABELLED, f"medseg:{p.stem}") for p in medseg],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data", type=Path)
    parser.add_argument("--out", default=WEIGHTS_DIR / "ct-moco-lite0", type=Path)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--per-volume", type=int, default=40)
    parser.add_argument("--lung-crop", action="store_true", help="crop slices to the lungs (as the fine-tune does)")
    parser.add_argument("--max-minutes", type=float, default=45)
    parser.add_argument("--lr", type=float, default=scaled_lr(32), help="peak SGD learning rate (batch 32)")
    parser.add_argument("--queue", type=int, default=256, help="negatives kept (keep it under one epoch of slices)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)

    spec = InputSpec(window="lung", selection="lung", lung_filter="min-area", max_slices=args.per_volume,
                     lung_crop=args.lung_crop, size=args.size, normalise="unit")
    config = RecipeConfig("moco", input=spec, classes=(UNLABELLED,))
    slices, counts = [], {}
    for source, records in unlabelled_records(args.data).items():
        samples = build_samples(records, config, "slice", progress=False)
        slices += samples.x
        counts[source] = {"studies": len(records), "slices": len(samples)}
        print(source, counts[source], flush=True)
    net = EfficientNetClassifier("lite0", num_classes=2, pretrained=True)
    queue = min(args.queue, len(slices) - 32)
    t0 = time.time()
    net, history = pretrain_moco(net, slices, epochs=args.epochs, queue_size=queue, lr=args.lr, seed=args.seed,
                                 max_minutes=args.max_minutes)
    args.out.mkdir(parents=True, exist_ok=True)
    state = {k: v.half() for k, v in net.state_dict().items() if not k.startswith("fc.")}
    torch.save(state, args.out / "encoder.pt")
    card = {"name": args.out.name, "what": "EfficientNet-Lite0 slice encoder (stem, blocks, head conv), ImageNet "
            "weights then MoCo v2 on unlabelled CT; no classifier", "input": spec.to_dict(),
            "data": counts, "n_slices": len(slices), "augment": VIEW_AUGMENT, "seed": args.seed,
            "settings": {"epochs": args.epochs, "batch_size": 32, "lr": args.lr, "queue": queue, "momentum": 0.99,
                         "temperature": 0.2}, "history": history, "seconds": round(time.time() - t0, 1),
            "date": time.strftime("%Y-%m-%d"), "intended_use": "initialisation for fine-tuning; research only"}
    (args.out / "encoder.json").write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps({k: card[k] for k in ("n_slices", "seconds")}), flush=True)


if __name__ == "__main__":
    main()
