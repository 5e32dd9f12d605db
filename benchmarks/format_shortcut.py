"""Does a CT model read the file format? UCSD val images scored as stored and re-saved as JPEG.

UCSD COVID-CT's COVID-19 images are PNG and its non-COVID images JPEG, so a model can
learn compression artefacts instead of disease. This re-saves every val image as an
8-bit JPEG (quality 75: the non-COVID files' own kind of encoding) and scores both
versions. A model that learned the format loses P(COVID-19) on the re-saved COVID-19
images and AUC on the re-saved split; one that did not barely moves.

Usage:
    python benchmarks/format_shortcut.py [--model ct-default] [--model runs/ablation/baseline-seed0 ...]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from chestdx.evaluate.metrics import auc_score
from chestdx.io import load_study
from chestdx.io.datasets import ucsd_covid_ct
from chestdx.models.loading import load_model
from chestdx.outputs.prediction import prediction_record
from chestdx.pipeline import diagnose

QUALITY = 75


def scores(model, paths: list[Path]) -> np.ndarray:
    """Returns: P(positive class) of each image."""
    positive = model.config.classes[-1]
    return np.array([prediction_record(diagnose(load_study(p, progress=False), model))["probabilities"][positive] for p in paths])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/ucsd-covid-ct")
    parser.add_argument("--model", action="append", help="bundled name or checkpoint folder (repeatable)")
    args = parser.parse_args()
    val = [r for r in ucsd_covid_ct(args.data) if r.split == "val"]
    y = np.array([r.label == "covid" for r in val], dtype=int)
    with tempfile.TemporaryDirectory() as tmp:
        resaved = []
        for i, rec in enumerate(val):
            path = Path(tmp) / f"{i:04d}.jpg"
            Image.open(rec.path).convert("L").save(path, format="JPEG", quality=QUALITY)
            resaved.append(path)
        print(f"UCSD val (n={len(val)}: {y.sum()} COVID-19 PNG, {len(y) - y.sum()} non-COVID JPEG), "
              f"re-saved as JPEG quality {QUALITY}")
        print("| model | AUC as stored | AUC re-saved | mean P(COVID) of COVID-19 images: stored -> re-saved "
              "| mean abs change of P, COVID-19 images | same, non-COVID images |")
        print("|---|---|---|---|---|---|")
        for name in args.model or ["ct-default"]:
            model = load_model(name)
            stored, jpeg = scores(model, [r.path for r in val]), scores(model, resaved)
            change = np.abs(jpeg - stored)
            print(f"| {name} | {auc_score(y, stored):.3f} | {auc_score(y, jpeg):.3f} | "
                  f"{stored[y == 1].mean():.3f} -> {jpeg[y == 1].mean():.3f} | {change[y == 1].mean():.3f} | "
                  f"{change[y == 0].mean():.3f} |", flush=True)


if __name__ == "__main__":
    main()
