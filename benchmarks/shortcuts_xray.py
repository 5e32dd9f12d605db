"""Shortcut checks of the X-ray model: the figures its card records, and a live lung-blanking check.

Prints, from the model card (written by ``scripts/train_default_xray.py``): the pooled
test figures, per-source COVID-19 sensitivity / specificity with patient-bootstrap 95%
CIs, leave-one-source-out COVID-19 vs rest AUC, how well a source classifier tells the
sets apart on the same features, the output with the central lung field blanked, and
the paediatric (Kermany) check. Then, through the user-facing path (``predict_study`` on
image files), the mean COVID-19 probability of ``--n`` COVID-19 films of each adult
source, intact and with the central lung field blanked: a model that reads the lungs
should drop towards the training prior when they are hidden.

Usage:
    python benchmarks/shortcuts_xray.py [--model xray-default] [--data ../shared/data] [--n 20]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from chestdx.io import load_study
from chestdx.io.datasets import covid19_radiography, ieee8023_xray
from chestdx.models.checkpoint import load_model
from chestdx.models.predict import predict_study


def _ci(entry: dict) -> str:
    return f"{entry['value']:.3f} [{entry['ci_low']:.3f}, {entry['ci_high']:.3f}]"


def print_card(metrics: dict) -> None:
    """Print the card's test and shortcut figures as Markdown tables."""
    print("## Pooled test split (chosen seed; patient-bootstrap 95% CI)")
    for name, entry in metrics["test_ci"].items():
        print(f"- {name}: {_ci(entry)}")
    print("- mean ± sd over seeds:", json.dumps(metrics["test_mean_sd_over_seeds"]))
    print("\n## Per source (test split), COVID-19 vs rest at the validation threshold")
    print("| source | n | sensitivity | specificity | AUC | 3-class accuracy |\n|---|---|---|---|---|---|")
    for source, entry in metrics["per_source_test"].items():
        cells = [_ci(entry[k]) if k in entry else "-" for k in ("covid_sensitivity", "covid_specificity", "covid_auc")]
        print(f"| {source} | {entry['n']} | " + " | ".join(cells) + f" | {entry['accuracy_3class']:.3f} |")
    shortcuts = metrics["shortcuts"]
    if "leave_one_source_out" in shortcuts:
        print("\n## Leave one source out (trained without it, tested on all its films)")
        print("| held-out source | n | COVID-19 vs rest AUC | sensitivity | specificity |\n|---|---|---|---|---|")
        for source, entry in shortcuts["leave_one_source_out"].items():
            print(f"| {source} | {entry['n']} | {_ci(entry['covid_auc'])} | {entry['covid_sensitivity']:.3f} | "
                  f"{entry['covid_specificity']:.3f} |")
    print("\n## Source classifier on the model's pooled features (balanced accuracy, 5-fold patient-grouped)")
    for scope, entry in shortcuts["source_classifier"].items():
        print(f"- {scope}: {entry['balanced_accuracy']:.3f} (chance {entry['chance']:.3f}; {entry['sources']})")
    blank = shortcuts["lungs_blanked"]
    print("\n## Test films with the central lung field blanked")
    print(f"- mean probabilities {blank['mean_probabilities']} vs training prior {blank['train_prior']}")
    print(f"- macro AUC {blank['macro_auc']:.3f} (intact {blank['intact_macro_auc']:.3f}); "
          f"COVID-19 AUC {blank['covid_auc']:.3f}; called {blank['called']}")
    kermany = metrics["kermany"]
    print(f"\n## Kermany children (never trained on): {kermany['n']}; pneumonia vs normal AUC "
          f"{kermany['auc_pneumonia_vs_normal']:.3f}; called {kermany['called']}")


def live_blank_check(model, films: dict[str, list[Path]], box: tuple[float, float, float, float]) -> None:
    """Print the mean COVID-19 probability of each source's films, intact and blanked, via ``predict_study``."""
    print("\n## Live check through predict_study: mean P(COVID-19) of COVID-19 films")
    print("| source | n | intact | lung field blanked |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for source, paths in films.items():
            intact, blanked = [], []
            for k, path in enumerate(paths):
                intact.append(predict_study(load_study(path, kind="xray"), model)["probabilities"]["covid-19"])
                with Image.open(path) as img:
                    grey = np.asarray(img.convert("L"), np.float32)
                h, w = grey.shape
                top, bottom, left, right = (int(round(f * n)) for f, n in zip(box, (h, h, w, w)))
                grey[top:bottom, left:right] = grey.mean()
                out = Path(tmp) / f"{source}-{k}.png"
                Image.fromarray(grey.astype(np.uint8)).save(out)
                blanked.append(predict_study(load_study(out, kind="xray"), model)["probabilities"]["covid-19"])
            print(f"| {source} | {len(paths)} | {np.mean(intact):.3f} | {np.mean(blanked):.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="xray-default")
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--n", type=int, default=20, help="COVID-19 films per source for the live check")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load_model(args.model, kind="xray")
    metrics = model.card["metrics"]
    print_card(metrics)
    data = Path(args.data)
    films = {"ieee8023": [r.path for r in ieee8023_xray(data / "ieee8023-cxr-frontal") if r.label == "covid"][:args.n],
             "covid19-radiography": [r.path for r in covid19_radiography(data / "xray-covid19-radiography")
                                     if r.label == "covid-19"][:args.n]}
    live_blank_check(model, films, tuple(metrics["shortcuts"]["lungs_blanked"]["box_fraction_y0_y1_x0_x1"]))


if __name__ == "__main__":
    main()
