"""UCSD COVID-CT official split: our model's test metrics with CIs beside the published results.

The model is the bundled default CT model or any model given with ``--model`` (``ct-ucsd``:
trained by ``scripts/train_ucsd_ct.py`` on the official train split, selected on val). Test
metrics come with 95% CIs from a bootstrap over patients (non-COVID images have no patient
id: each source figure counts as one patient).

Published rows (same official split, COVID-19 positive class): Self-Trans, He et al. 2020,
"Sample-Efficient Deep Learning for COVID-19 Diagnosis Based on CT Scans" (arXiv 2003.13865;
first and later versions).

Usage:
    python benchmarks/ucsd_official_split.py [--data ../shared/data/ucsd-covid-ct] [--model ct-default]
"""

from __future__ import annotations

import argparse

from chestdx.evaluate.run import evaluate_model
from chestdx.io.datasets import ucsd_covid_ct

PUBLISHED = [
    ("Self-Trans (He et al. 2020, first version)", {"f1": 0.85, "auc": 0.94}),
    ("Self-Trans (He et al. 2020, later version)", {"f1": 0.90, "auc": 0.98, "accuracy": 0.89}),
]
KEYS = ("auc", "f1", "accuracy", "sensitivity", "specificity")


def _cell(entry) -> str:
    if isinstance(entry, dict):
        return f"{entry['value']:.3f} ({entry['ci_low']:.3f}-{entry['ci_high']:.3f})"
    return "-" if entry is None else f"{entry:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/ucsd-covid-ct")
    parser.add_argument("--model", default="ct-default")
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--report", help="also write the HTML report of the test split here")
    args = parser.parse_args()
    records = ucsd_covid_ct(args.data)
    rows = []
    for split in ("val", "test"):
        result = evaluate_model(args.model, [r for r in records if r.split == split], level="study",
                                n_resamples=args.resamples, report=args.report if split == "test" else None,
                                dataset_name=f"UCSD COVID-CT official {split} split", progress=False)
        rows.append((f"chestdx {result['model']['name']} ({split}, n={result['n_cases']})", result["metrics"]))
    print("| model | " + " | ".join(KEYS) + " |")
    print("|---|" + "---|" * len(KEYS))
    for name, metrics in rows + PUBLISHED:
        print(f"| {name} | " + " | ".join(_cell(metrics.get(k)) for k in KEYS) + " |")


if __name__ == "__main__":
    main()
