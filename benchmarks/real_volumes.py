"""Per-study probabilities of a CT model on the real volumes in ../shared/data (a sanity check).

Expected: SIRM COVID-19 volumes score high, the CC-CCII common-pneumonia patient lower,
DRE-Net demo: persons 1-2 COVID-19, persons 3-4 bacterial pneumonia. Also a generated
`chestdx sample` series (a phantom: its score means nothing clinically). These volumes
are few and are never used to train or tune a model: they only check that HU and 8-bit
inputs from real scanners reach the model in the form it was trained on; a model whose card
lists volumes it was trained on (``training.data.trained_on_volumes``: `ct-real` trains on
part of the SIRM volumes) is scored on the others only, and the skipped ones are named. The last line is
the AUC of P(COVID-19) for telling the COVID-19 studies (SIRM, DRE-Net persons 1-2) from
the other-pneumonia studies (CC-CCII scans, DRE-Net persons 3-4): 0.5 is no separation.

Usage:
    python benchmarks/real_volumes.py [--data ../shared/data] [--model ct-default]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from chestdx.evaluate.metrics import auc_score
from chestdx.io import load_study
from chestdx.io.datasets import cc_ccii, dre_net_demo, sirm_volumes
from chestdx.io.sample import write_sample_series
from chestdx.models.loading import load_model
from chestdx.outputs.prediction import prediction_record
from chestdx.pipeline import diagnose


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--model", default="ct-default")
    args = parser.parse_args()
    data = Path(args.data)
    model = load_model(args.model)
    positive = model.config.classes[-1]
    groups = {"SIRM (COVID-19)": sirm_volumes(data / "covid-ct-volumes-sirm"),
              "CC-CCII CP (other pneumonia)": cc_ccii(data / "cc-ccii-sample"),
              "DRE-Net demo": dre_net_demo(data / "dre-net-demo")}
    trained_on = set((model.card.training.get("data") or {}).get("trained_on_volumes", []))
    print(f"model {model.name}; P({positive}) per study, decision at threshold {model.threshold}")
    if trained_on:
        print(f"skipped (the model was trained on them): {', '.join(sorted(trained_on))}")
    print("| group | study | label | slices used | P(%s) | decision |" % positive)
    print("|---|---|---|---|---|---|")
    is_covid, all_scores = [], []
    for group, records in groups.items():
        scores = []
        for rec in (r for r in records if r.path.name not in trained_on):
            out = prediction_record(diagnose(load_study(rec.path, progress=False), model))
            scores.append(out["probabilities"][positive])
            is_covid.append(rec.label == "covid")
            print(f"| {group} | {rec.path.name} | {rec.label} | {len(out['slices_used'])} | "
                  f"{scores[-1]:.3f} | {out['decision']} |")
        print(f"| {group} | mean of {len(scores)} | | | {np.mean(scores):.3f} | |")
        all_scores += scores
    with tempfile.TemporaryDirectory() as tmp:
        write_sample_series(Path(tmp) / "s", progress=False)
        out = prediction_record(diagnose(load_study(Path(tmp) / "s", progress=False), model))
        print(f"| chestdx sample (phantom) | sample | - | {len(out['slices_used'])} | "
              f"{out['probabilities'][positive]:.3f} | {out['decision']} |")
    auc = auc_score(np.asarray(is_covid, int), np.asarray(all_scores))
    print(f"\nAUC of P({positive}), COVID-19 ({sum(is_covid)} studies) vs other pneumonia "
          f"({len(is_covid) - sum(is_covid)} studies): {auc:.3f}")


if __name__ == "__main__":
    main()
