"""The real CT training data of ``../shared/data``: sources, records, splits and the prepared-slice cache.

Shared by every script that trains a CT model on it (``scripts/train_real_ct.py`` for `ct-default`,
``scripts/train_recipes.py`` for the seed recipes), so that all of them train and are tested on the
same patients.

Splits: UCSD COVID-CT keeps its official split; every other source is split by patient
(`patient_split`: CC-CCII and SIRM patients, Soares look-alike groups, MosMed and MedSeg slices
each alone), 70/15/15, SIRM 50/15/35 so that more of its volumes stay out for the real-volume
check. CC-CCII common pneumonia and DRE-Net are never trained on (test only).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np

from chestdx.errors import ChestDxError
from chestdx.io import load_study
from chestdx.io.datasets import (CaseRecord, cc_ccii, dre_net_demo, fallback_patient_id, mosmed_slices, sirm_volumes,
                                 soares_ct, ucsd_covid_ct)
from chestdx.io.images import IMAGE_SUFFIXES
from chestdx.io.split import patient_split
from chestdx.preprocess.pipeline import prepare_study
from chestdx.preprocess.select import make_groups
from chestdx.preprocess.spec import InputSpec

log = logging.getLogger(__name__)

SPEC = InputSpec(window="lung", selection="lung", lung_filter="min-area", min_lung_fraction=0.25, max_slices=48,
                 lung_crop=True, lungs_only=True, upright=True, size=224, channels=3, normalise="imagenet")
"""`ct-default`'s input: lung slices, lungs only, lung crop, upright, 224 px."""

# source -> (folder under the data folder, glob of its studies: slice files or volume folders).
SOURCES = {
    "soares": ("ct-sars-cov-2-soares", "*/*"),
    "mosmed-slices": ("ct-mosmed-slices", "*/*"),
    "cc-ccii-normal": ("ct-cc-ccii-normal", "Normal/*/*"),
    "ucsd": ("ucsd-covid-ct", "images/*/*"),
    "sirm": ("covid-ct-volumes-sirm", "*"),
    "medseg": ("medseg-covid-infection", "train/images/*"),
    "cc-ccii-cp": ("cc-ccii-sample", "CP/*/*"),
    "dre-net": ("dre-net-demo", "*"),
}
CLASSES = ("non-covid", "covid")
COVID_LABELS = ("covid", "covid-19")
SPLIT_FRACTIONS = {"sirm": (0.5, 0.15, 0.35)}
EXTERNAL = ("cc-ccii-cp", "dre-net")
"""Sources never trained on: other pneumonia (and their COVID-19 persons) for the external check."""


def study_paths(data: Path, source: str) -> list[Path]:
    """Args: data: the shared data folder. source: a key of `SOURCES`. Returns: its studies, sorted."""
    folder, pattern = SOURCES[source]
    found = sorted((data / folder).glob(pattern))
    return [p for p in found if p.is_dir() or p.suffix.lower() in IMAGE_SUFFIXES]


def prepare_source(data: Path, source: str, out: Path, limit: int | None = None, spec: InputSpec = SPEC,
                   tag: str = "") -> Path:
    """Prepare every study of a source once with ``spec``; write ``prep[-<tag>]-<source>.npz``.

    The file holds ``x`` (uint8 ``(n, size, size)``: one channel, the others are copies),
    ``study`` (the study path of each row) and ``index`` (its slice in the study). For the
    ``"groups"`` selection each selected slice is one row and the groups are ``group_rows``
    (``(g, group_size)`` row numbers, ``-1`` for a black padding slice) with ``group_study`` (the
    study of each group): `make_groups` over the selected slices, as `prepare_study` forms them,
    without storing a repeated slice twice.

    Args:
        data: the shared data folder.
        source: a key of `SOURCES`.
        out: the run folder.
        limit: prepare only this many studies, spread over the sorted list (tests).
        spec: how to prepare (normalisation is ignored: rows are stored in 0..255).
        tag: names the cache of a spec other than `SPEC`.

    Returns:
        The file.
    """
    target = out / (f"prep-{tag}-{source}.npz" if tag else f"prep-{source}.npz")
    if target.is_file():
        return target
    xs, studies, indices, group_rows, group_study, t0 = [], [], [], [], [], time.time()
    grouped = spec.selection == "groups"
    per_slice = dataclasses.replace(spec, normalise="unit", selection="all" if grouped else spec.selection)
    paths = study_paths(data, source)
    if limit is not None and len(paths) > limit:
        paths = [paths[i] for i in np.linspace(0, len(paths) - 1, limit).round().astype(int)]
    for i, path in enumerate(paths):
        try:
            prepared = prepare_study(load_study(path, progress=False), per_slice)
        except ChestDxError as exc:
            log.warning("skipped %s: %s", path, exc)
            continue
        keep = np.flatnonzero(prepared.indices >= 0)
        if grouped:
            for group in make_groups(np.arange(len(keep)), spec.group_size):
                group_rows.append(np.where(group >= 0, group + len(studies), -1))
                group_study.append(str(path.resolve()))
        xs.append(np.rint(prepared.x[keep, 0] * 255.0).astype(np.uint8))
        studies += [str(path.resolve())] * len(keep)
        indices += prepared.indices[keep].tolist()
        if (i + 1) % 200 == 0:
            log.warning("%s: %d/%d studies, %.0f s", source, i + 1, len(paths), time.time() - t0)
    groups = {"group_rows": np.asarray(group_rows, int).reshape(-1, spec.group_size),
              "group_study": np.asarray(group_study)} if grouped else {}
    np.savez(target, x=np.concatenate(xs), study=np.asarray(studies), index=np.asarray(indices), **groups)
    log.warning("%s: %d studies, %d rows in %.0f s", source, len(paths), len(studies), time.time() - t0)
    return target


def source_records(data: Path) -> dict[str, list[CaseRecord]]:
    """Every CT study of the shared data, by source (``source`` of the records), with the set's own labels."""
    medseg = sorted((data / "medseg-covid-infection" / "train" / "images").glob("*.jpg"))
    return {
        "soares": soares_ct(data / "ct-sars-cov-2-soares"),
        "mosmed": mosmed_slices(data / "ct-mosmed-slices"),
        "cc-ccii-normal": cc_ccii(data / "ct-cc-ccii-normal"),
        "ucsd": ucsd_covid_ct(data / "ucsd-covid-ct"),
        "sirm": sirm_volumes(data / "covid-ct-volumes-sirm"),
        "medseg": [CaseRecord(p, "covid", fallback_patient_id(p, data / "medseg-covid-infection"), source="medseg")
                   for p in medseg],
        "cc-ccii-cp": cc_ccii(data / "cc-ccii-sample"),
        "dre-net": dre_net_demo(data / "dre-net-demo"),
    }


def split_sources(records: dict[str, list[CaseRecord]], seed: int = 0) -> dict[str, dict[str, list[CaseRecord]]]:
    """Returns: source -> {"train", "val", "test"} records (see the module docstring; external sources: test only)."""
    out = {}
    for source, recs in records.items():
        if source in EXTERNAL:
            out[source] = {"train": [], "val": [], "test": recs}
        elif source == "ucsd":
            out[source] = {s: [r for r in recs if r.split == s] for s in ("train", "val", "test")}
        else:
            out[source] = patient_split(recs, SPLIT_FRACTIONS.get(source, (0.7, 0.15, 0.15)), seed=seed)
    return out


def is_covid(record: CaseRecord) -> bool:
    """Args: record: a study. Returns: whether its label is COVID-19 (the positive class of `CLASSES`)."""
    return record.label in COVID_LABELS
