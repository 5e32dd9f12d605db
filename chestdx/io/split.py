"""Patient-grouped splits stratified by class (or by source and class): no patient ever on two sides.

Records need ``label`` and ``patient_id`` (``CaseRecord``). Records with a fallback id
(``"img:..."``: no patient id in the data) are each their own group, or share one with
the images of the same source the adapter grouped.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from chestdx.errors import ChestDxError
from chestdx.io.datasets import SPLITS, CaseRecord

log = logging.getLogger(__name__)


def _patients(records: Sequence[CaseRecord]) -> dict[str, list[int]]:
    """Returns: patient id -> indices of its records, in first-seen order."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, record in enumerate(records):
        if not record.patient_id:
            raise ChestDxError(f"record {record.path} has an empty patient_id: give every record an id")
        groups[record.patient_id].append(i)
    return groups


def _label(record: CaseRecord) -> str:
    return record.label


def _source_and_label(record: CaseRecord) -> str:
    return f"{record.source}/{record.label}"


def patient_split(records: Sequence[CaseRecord], fractions: Sequence[float] = (0.7, 0.15, 0.15),
                  seed: int = 0, by_source: bool = False) -> dict[str, list[CaseRecord]]:
    """Split into train / val / test by patient, stratified by class (and source).

    Each patient goes whole to one side. Patients are taken per stratum (a patient's
    stratum is the most common class, or source and class, of its records) in a seeded
    random order, largest first, each to the side furthest below its share of that
    stratum's records.

    Args:
        records: the records.
        fractions: shares of train, val and test (summing to 1).
        seed: random seed.
        by_source: stratify by ``(source, label)`` rather than by label, so that each
            source keeps its class mix on every side (pooled sets of several sources).

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, each in the input order.
    """
    fractions = np.asarray(fractions, float)
    if fractions.shape != (3,) or (fractions < 0).any() or abs(fractions.sum() - 1.0) > 1e-6:
        raise ChestDxError(f"split fractions {fractions.tolist()} must be three non-negative numbers summing to 1")
    rng = np.random.default_rng(seed)
    groups = _patients(records)
    stratum_of = _source_and_label if by_source else _label
    by_stratum: dict[str, list[str]] = defaultdict(list)
    for patient, indices in groups.items():
        stratum = Counter(stratum_of(records[i]) for i in indices).most_common(1)[0][0]
        by_stratum[stratum].append(patient)
    side_of: dict[str, int] = {}
    for stratum in sorted(by_stratum):
        patients = [by_stratum[stratum][i] for i in rng.permutation(len(by_stratum[stratum]))]
        patients.sort(key=lambda p: -len(groups[p]))
        target = fractions * sum(len(groups[p]) for p in patients)
        filled = np.zeros(3)
        for patient in patients:
            side = int(np.argmax(target - filled))
            side_of[patient] = side
            filled[side] += len(groups[patient])
    out: dict[str, list[CaseRecord]] = {name: [] for name in SPLITS}
    for record in records:
        out[SPLITS[side_of[record.patient_id]]].append(record)
    return out


def patient_kfold(records: Sequence[CaseRecord], k: int = 5, seed: int = 0) -> list[tuple[list, list]]:
    """K-fold cross-validation by patient, stratified by class (scikit-learn's StratifiedGroupKFold).

    Args:
        records: the records.
        k: number of folds.
        seed: random seed.

    Returns:
        ``k`` pairs ``(train_records, test_records)``; every patient is in exactly one test fold.
    """
    groups = _patients(records)
    if len(groups) < k:
        raise ChestDxError(f"{k}-fold splitting needs at least {k} patients, got {len(groups)}: use fewer folds")
    labels = [r.label for r in records]
    patient_ids = [r.patient_id for r in records]
    folds = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return [([records[i] for i in train], [records[i] for i in test])
            for train, test in folds.split(np.zeros(len(records)), labels, patient_ids)]


def official_or_patient_split(records: Sequence[CaseRecord], seed: int = 0) -> dict[str, list[CaseRecord]]:
    """Use the dataset's own split when every record has one, else ``patient_split``.

    A patient found on two sides of an official split is logged as a warning (the
    official split is still used, so results stay comparable with published ones).

    Args:
        records: the records.
        seed: random seed for the fallback split.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``.
    """
    if not records or not all(r.split in SPLITS for r in records):
        return patient_split(records, seed=seed)
    out: dict[str, list[CaseRecord]] = {name: [] for name in SPLITS}
    sides: dict[str, set[str]] = defaultdict(set)
    for record in records:
        out[record.split].append(record)
        sides[record.patient_id].add(record.split)
    leaked = sorted(p for p, s in sides.items() if len(s) > 1)
    if leaked:
        log.warning("the official split puts %d patient(s) on more than one side (e.g. %s)", len(leaked), leaked[0])
    return out
