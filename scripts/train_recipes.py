"""Train the seed CT recipes on the real CT data, on `ct-default`'s splits, and score them the same way.

Recipes: ``cnn-bilstm`` (Kara et al.), ``dre-net`` (Song et al.), ``residual-attention``
(Yazdani et al.); ``ai-corona`` is `ct-default` (``scripts/train_real_ct.py``), scored here with the
same ``evaluate`` step. Every recipe keeps its paper's network, slice selection, aggregation and
explanation; for the real data all of them take binary COVID-19 vs non-COVID (as `ct-default`: other
pneumonia on CT is too scarce to train a class) and lungs-only, lung-cropped, upright slices (as
`ct-default`), so that the comparison is between recipes and not between preprocessing.

Steps (each cached under ``--out``, so a rerun skips what is done):

1. ``prepare``: every study of every source through `prepare_study` with the recipe's own spec
   (``prep-<recipe>-<source>.npz``, uint8; `chestdx.train.real_ct.prepare_source`).
2. ``train``: the recipe's stages through the one training loop (`chestdx.train.loop.fit`), on
   the train split of every trainable source, early stopping on the pooled val split; then the
   F1 operating point on val. Writes ``OUT/<recipe>`` (checkpoint, ONNX where the network is
   slice-level, card).
3. ``evaluate``: the checkpoint through ``chestdx evaluate``'s path (load, prepare, classify,
   aggregate: exactly what ``chestdx predict`` does) on each source's test split, study level,
   patient-bootstrap CIs; written into the card. Read once per model, after training.

Usage:
    python scripts/train_recipes.py prepare --recipe cnn-bilstm
    python scripts/train_recipes.py train --recipe cnn-bilstm --max-minutes 20
    python scripts/train_recipes.py evaluate --recipe cnn-bilstm
    python scripts/train_recipes.py evaluate --model ct-default --recipe ai-corona
    python scripts/train_recipes.py install --recipe cnn-bilstm      # into chestdx/weights/ct-cnn-bilstm
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from chestdx.evaluate.metrics import choose_operating_point
from chestdx.evaluate.run import evaluate_model
from chestdx.models.bundled import CARD_FILE, ONNX_FILE, WEIGHTS_DIR, WEIGHTS_FILE
from chestdx.models.card import MetricSet, read_card, write_card
from chestdx.models.checkpoint import export_onnx
from chestdx.models.recipes import get_recipe
from chestdx.models.registry import RecipeConfig
from chestdx.train.data import SampleSet
from chestdx.train.loop import fit, predict_samples, stages_of
from chestdx.train.real_ct import CLASSES, SOURCES, is_covid, prepare_source, source_records, split_sources

log = logging.getLogger("train_recipes")

REAL_DATA = {"lungs_only": True, "lung_crop": True, "upright": True, "window": "lung"}
"""What every recipe's input spec takes from `ct-default`'s (`chestdx.train.real_ct.SPEC`)."""
CHEAP_AUGMENT = {"elastic": 0, "blur": 0}
"""The loop's augmentations but the two costliest per slice on a CPU (elastic distortion, Gaussian blur)."""
SCHEDULES = {
    # Kara's two stages; the biLSTM stage (CNN frozen, 50 slices a sample) without augmentation.
    "cnn-bilstm": {"stages": [{"epochs": 12, "batch_size": 64, "patience": 3, "augment": CHEAP_AUGMENT},
                              {"epochs": 8, "batch_size": 8, "patience": 3, "augment": False}]},
    "dre-net": {"epochs": 8, "batch_size": 16, "patience": 3, "augment": CHEAP_AUGMENT},
    "residual-attention": {"epochs": 10, "batch_size": 32, "patience": 3, "augment": CHEAP_AUGMENT},
}
"""Epochs and time budgets bounded for 2 CPU cores (the card records what ran). Float32 always: these were trained
on a 2-core AMD EPYC with AVX2 and no native bfloat16, where forced bf16 autocast made a step 4-5x slower."""
SIZES = {"dre-net": {"size": 128}, "residual-attention": {"size": 128}}
"""Input size for the two 224 px networks trained from scratch: 128 px keeps an epoch within the CPU budget
(a float32 training step on one thread of that CPU, under load: 0.5 s per slice for dre-net and 0.2 s for
residual-attention at 128 px, 1.8 s and 0.45 s at 224 px)."""
LIMITATIONS = [
    "Binary COVID-19 vs non-COVID, trained from scratch on the real CT sources of ../shared/data (as ct-default, same "
    "patient-grouped splits): other pneumonia on CT is one CC-CCII patient and two DRE-Net persons, too few to "
    "train or validate a class on, so P(COVID-19) does not mean 'not other pneumonia'.",
    "8-bit slices only in training (lung-window renderings, JPEG/PNG, no pixel spacing); HU studies are windowed "
    "before the same steps. Every slice is reduced to its lungs (classical segmentation): what it leaves out is not "
    "seen.",
    "Sources differ in class mix (SIRM and MedSeg all COVID-19, the CC-CCII normals all normal): read the "
    "per-source test figures, not a pooled one.",
    "Trained on 2 CPU cores within a time budget per stage (training.history records what ran): a reproduction "
    "of the paper's method, not of its training length or its published figure.",
]
DEVIATIONS = {
    "cnn-bilstm": "Kara et al.: three classes, CLAHE, lung-area slice filter, groups of 50, two stages, majority "
                  "vote with the 0.9 override are kept; binary classes and lungs-only slices are chestdx's. A "
                  "single-slice study is one group of its slice repeated 50 times (make_groups).",
    "dre-net": "Song et al.: 15 equidistant slices with the < 50% lung filter, FPN detail module with top-3 "
               "regions, mean of slice probabilities are kept; ResNet-18 at half width from scratch instead of "
               "an ImageNet ResNet-50.",
    "residual-attention": "Yazdani et al.: Attention-56-style stages with (1 + M) * T modules, mean of slice "
                          "probabilities, every slice of a volume (selection 'all') are kept; widths 16-128 "
                          "instead of 64-1024.",
}
MODEL_NAMES = {"cnn-bilstm": "ct-cnn-bilstm", "dre-net": "ct-dre-net", "residual-attention": "ct-residual-attention",
               "ai-corona": "ct-default"}


def recipe_config(recipe: str, max_minutes: float | None) -> RecipeConfig:
    """The recipe's own config, for the real data: binary classes, `REAL_DATA` input, bounded schedule.

    Args:
        recipe: a key of `SCHEDULES`.
        max_minutes: time budget of each stage (None: epochs and patience only).

    Returns:
        The config.
    """
    config = get_recipe(recipe, classes=CLASSES)
    config.input = dataclasses.replace(config.input, **REAL_DATA)
    schedule = SCHEDULES[recipe]
    config.input = dataclasses.replace(config.input, **SIZES.get(recipe, {}))
    train = dict(config.train, label_smoothing=0.1, max_minutes=max_minutes, bf16=False)
    if "stages" in schedule:
        train["stages"] = [dict(stage, **change) for stage, change in zip(train["stages"], schedule["stages"])]
    else:
        train.update(schedule)
    config.train = train
    return config


class RecipeCache:
    """The prepared rows of every source for one recipe, and the samples of a set of studies.

    Args:
        out: the run folder. recipe: whose cache (``prep-<recipe>-<source>.npz``).
        channels: model input channels (the cache keeps one; the others are copies).
        sources: which prepared sources.
    """

    def __init__(self, out: Path, recipe: str, channels: int, sources=tuple(SOURCES)) -> None:
        self.channels, self.rows, self.groups, parts, start = channels, {}, {}, [], 0
        for source in sources:
            prep = np.load(out / f"prep-{recipe}-{source}.npz")
            parts.append(prep["x"])
            seen = set()
            for i, (study, index) in enumerate(zip(prep["study"], prep["index"])):
                if (study, index) not in seen:  # a selection that repeats a slice (15 equidistant of 1): once
                    seen.add((study, index))
                    self.rows.setdefault(str(study), []).append(start + i)
            for rows, study in zip(prep.get("group_rows", []), prep.get("group_study", [])):
                self.groups.setdefault(str(study), []).append(np.where(rows >= 0, rows + start, -1))
            start += len(prep["study"])
        self.x = np.concatenate(parts)

    def _image(self, rows: np.ndarray) -> np.ndarray:
        if rows.ndim and len(np.unique(rows)) == 1:  # a single-slice study's group: one slice, repeated (a view)
            return np.broadcast_to(self._image(rows[0]), (len(rows),) + self._image(rows[0]).shape)
        x = np.where((rows >= 0)[..., None, None], self.x[np.maximum(rows, 0)], 0).astype(np.float16)
        x = x[..., None, :, :] / np.float16(255.0)
        return np.broadcast_to(x, x.shape[:-3] + (self.channels,) + x.shape[-2:])

    def samples(self, records: list, unit: str) -> SampleSet:
        """The training samples of studies: every selected slice (``"slice"``) or every group (``"bag"``).

        Args:
            records: studies (those that failed to prepare are left out).
            unit: ``"slice"`` or ``"bag"``.

        Returns:
            The samples, in 0..1 (as `chestdx.train.data.build_samples` makes them).
        """
        xs, ys, pids, cases = [], [], [], []
        for k, rec in enumerate(records):
            key = str(Path(rec.path).resolve())
            if unit == "slice":
                parts = [self._image(np.asarray(r)) for r in self.rows.get(key, [])]
            else:
                parts = [self._image(g) for g in self.groups.get(key, [])]
            xs += parts
            ys += [int(is_covid(rec))] * len(parts)
            pids += [rec.patient_id] * len(parts)
            cases += [k] * len(parts)
        return SampleSet(xs, np.asarray(ys, np.int64), pids, np.asarray(cases, np.int64))


def prepare_step(args) -> None:
    """Prepare every source with the recipe's spec (cached)."""
    config = recipe_config(args.recipe, None)
    for source in SOURCES:
        prepare_source(Path(args.data), source, Path(args.out), spec=config.input, tag=args.recipe)


def train_step(args) -> None:
    """Train the recipe, choose its F1 operating point on val, write ``OUT/<recipe>``."""
    out, data = Path(args.out), Path(args.data)
    config = recipe_config(args.recipe, args.max_minutes)
    cache = RecipeCache(out, args.recipe, config.input.channels)
    parts = split_sources(source_records(data), seed=0)
    train = [r for s in parts for r in parts[s]["train"]]
    val = [r for s in parts for r in parts[s]["val"]]
    units = {stage["unit"] for stage in stages_of(config)}
    tr = {unit: cache.samples(train, unit) for unit in units}
    va = {unit: cache.samples(val, unit) for unit in units}
    log.warning("train %s, val %s", {u: len(s) for u, s in tr.items()}, {u: len(s) for u, s in va.items()})
    folder = out / args.recipe
    description = {"name": "real CT sources of ../shared/data (chestdx.train.real_ct)",
                   "split": "UCSD official; others patient_split 70/15/15 by patient/look-alike group "
                            "(SIRM 50/15/35), seed 0; CC-CCII CP and DRE-Net never trained on",
                   "train_samples": {u: len(s) for u, s in tr.items()}, "val_samples": {u: len(s) for u, s in va.items()},
                   "trained_on_volumes": sorted(Path(r.path).name for split in ("train", "val")
                                                for r in parts["sirm"][split])}
    result = fit(config, [], [], folder, seed=args.seed, name=MODEL_NAMES[args.recipe], progress=False, threads=args.threads,
                 data_description=description, train_samples=tr, val_samples=va)
    last = stages_of(config)[-1]
    logits = predict_samples(result.net, va[last["unit"]], config, last["method"], bf16=False)  # as predict runs
    probs = torch.softmax(torch.from_numpy(logits / result.card.temperature), 1).numpy()
    card = read_card(folder)
    card.threshold = round(float(choose_operating_point(va[last["unit"]].y, probs[:, 1], "f1")), 4)
    card.limitations = [DEVIATIONS[args.recipe], *LIMITATIONS]
    card.fingerprint = {"study_kinds": ["ct-volume", "ct-slice"], "modality": "CT", "intensities": ["8bit"]}
    write_card(card, folder)
    if last["unit"] == "slice" and config.name != "dre-net":
        export_onnx(result.net.eval(), folder, config.input.size, config.input.channels)
    print(json.dumps({"recipe": args.recipe, "threshold": card.threshold, "history": result.history[-3:],
                      "seconds": card.training["seconds"]}), flush=True)


def evaluate_step(args) -> None:
    """Score a trained model on every source's test split (study level, patient bootstrap); write it into its card."""
    out, data = Path(args.out), Path(args.data)
    model = args.model or str(out / args.recipe)
    parts = split_sources(source_records(data), seed=0)
    per_source, t0 = {}, time.time()
    for source, splits in parts.items():
        recs = splits["test"]
        res = evaluate_model(model, recs, level="study", n_resamples=2000, progress=False, classes=list(CLASSES))
        keys = ("auc", "sensitivity", "specificity", "accuracy", "f1")
        per_source[source] = {"n_studies": res["n_cases"], "n_patients": res["n_patients"],
                              "n_covid": int(sum(is_covid(r) for r in recs)),
                              **{k: res["metrics"].get(k) for k in keys}}
        log.warning("%s test: %s", source, {k: per_source[source][k] for k in ("n_studies", "auc")})
    seconds = round(time.time() - t0, 1)
    summary = {s: {k: (m[k] or {}).get("value") for k in ("auc", "sensitivity", "specificity")}
               for s, m in per_source.items()}
    print(json.dumps({"model": model, "test": summary, "seconds": seconds}, indent=1), flush=True)
    (out / f"test-{args.recipe}.json").write_text(json.dumps({"model": model, "test": per_source, "seconds": seconds},
                                                             indent=1))
    if args.model is None:
        card = read_card(out / args.recipe)
        card.metrics = {**card.metrics, "test": MetricSet.parse(per_source, "test")}
        write_card(card, out / args.recipe)


def install_step(args) -> None:
    """Copy ``OUT/<recipe>`` (checkpoint, ONNX, card; each file under 25 MB) to ``chestdx/weights/<model name>``."""
    source, target = Path(args.out) / args.recipe, WEIGHTS_DIR / MODEL_NAMES[args.recipe]
    if "test" not in read_card(source).metrics:
        raise SystemExit(f"{source} has no test figures yet: run the evaluate step first")
    target.mkdir(parents=True, exist_ok=True)
    for name in (WEIGHTS_FILE, ONNX_FILE, CARD_FILE):
        if (source / name).is_file():
            if (source / name).stat().st_size >= 25 * 2**20:
                raise SystemExit(f"{source / name} is over 25 MB: store it in fp16 first")
            shutil.copy2(source / name, target / name)
    print(f"installed {target}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["prepare", "train", "evaluate", "install"])
    parser.add_argument("--recipe", required=True, choices=[*SCHEDULES, "ai-corona"])
    parser.add_argument("--model", help="evaluate this model instead of OUT/<recipe> (e.g. ct-default)")
    parser.add_argument("--max-minutes", type=float, default=None, help="time budget of each training stage")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--out", default="runs/recipes")
    args = parser.parse_args()
    logging.basicConfig(format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    {"prepare": prepare_step, "train": train_step, "evaluate": evaluate_step, "install": install_step}[args.step](args)
    print(json.dumps({"done": args.step, "recipe": args.recipe}))


if __name__ == "__main__":
    main()
