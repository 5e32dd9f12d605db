"""Adapters of the real clinical sets in ../shared/data, look-alike grouping, cross-set dedup, source-stratified split."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from PIL import Image

from chestdx.errors import ChestDxError
from chestdx.io.datasets import CaseRecord, load_dataset, nih_chestxray14
from chestdx.io.lookalike import (_unit_rows, cross_set_duplicates, drop_cross_set_duplicates,
                                  join_near_duplicate_patients, thumbnail)
from chestdx.io.split import patient_split


def _counts(records) -> Counter:
    return Counter((r.label, r.group) for r in records)


def test_soares_counts_and_lookalike_groups(shared_data):
    records = load_dataset(f"soares:{shared_data / 'ct-sars-cov-2-soares'}")
    assert _counts(records) == {("covid-19", None): 1252, ("other-disease", "non-COVID"): 1229}
    assert {r.source for r in records} == {"soares"}
    groups = {r.patient_id for r in records}
    assert 80 <= len(groups) <= 130  # about 50 look-alike groups per class (the release: ~60 patients per class)
    assert all(g.startswith("soares-group:COVID/") or g.startswith("soares-group:non-COVID/") for g in groups)
    # the grouping's purpose: a group split leaves no near-copy slice on the other side
    covid = [r for r in records if r.label == "covid-19"]
    parts = patient_split(covid, seed=3)
    assert not {r.patient_id for r in parts["train"]} & {r.patient_id for r in parts["test"]}
    train = _unit_rows(np.stack([thumbnail(r.path) for r in parts["train"]]))
    test = _unit_rows(np.stack([thumbnail(r.path) for r in parts["test"]]))
    assert (test @ train.T).max() < 0.97
    # while a random slice split of the same sizes would leave many
    rng = np.random.default_rng(0)
    shuffled = rng.permutation(len(covid))
    every = _unit_rows(np.stack([thumbnail(r.path) for r in covid]))
    cut = len(parts["train"])
    leaked = ((every[shuffled[cut:]] @ every[shuffled[:cut]].T).max(axis=1) >= 0.97).mean()
    assert leaked > 0.1


def test_mosmed_slices_severity_and_fallback_ids(shared_data):
    records = load_dataset(f"mosmed-slices:{shared_data / 'ct-mosmed-slices'}")
    assert _counts(records) == {("normal", "CT-0"): 254, ("covid-19", "CT-1"): 684, ("covid-19", "CT-2plus"): 124}
    assert {r.source for r in records} == {"mosmed"}
    assert len({r.patient_id for r in records}) == len(records)
    assert records[0].patient_id == "img:CT-0/0000"


def test_cc_ccii_reads_the_lung_masked_normals(shared_data):
    records = load_dataset(f"cc-ccii:{shared_data / 'ct-cc-ccii-normal'}")
    assert len(records) == 9 and {r.label for r in records} == {"normal"} and {r.source for r in records} == {"cc-ccii"}
    assert len({r.patient_id for r in records}) == 9
    assert sum(len(list(r.path.glob("*.jpg"))) for r in records) == 286


def test_covid19_radiography(shared_data):
    records = load_dataset(f"covid19-radiography:{shared_data / 'xray-covid19-radiography'}")
    assert _counts(records) == {("covid-19", None): 3566, ("normal", None): 2000}
    assert {r.source for r in records} == {"covid19-radiography"}
    assert all(r.patient_id.startswith("img:") for r in records)


def test_nih_pneumonia_patient_ids(shared_data):
    root = shared_data / "xray-nih-pneumonia"
    records = load_dataset(f"nih-pneumonia:{root}")
    assert Counter(r.label for r in records) == {"other-pneumonia": 500, "normal": 499}
    assert {r.source for r in records} == {"nih"}
    by_patient: dict[str, set] = {}
    for r in records:
        by_patient.setdefault(r.patient_id, set()).add(r.label)
    assert sum(len(labels) == 2 for labels in by_patient.values()) == 21  # as the README says
    first = next(r for r in records if r.path.name == "00001280_004.jpg")
    assert first.patient_id == "nih:1280"  # the same id the full-release adapter gives
    with pytest.raises(ChestDxError, match="nih-pneumonia:PATH"):
        nih_chestxray14(root)


def test_kermany_subtypes_in_group(shared_data):
    records = load_dataset(f"kermany:{shared_data / 'xray-kermany-pediatric'}")
    assert _counts(records) == {("normal", None): 450, ("other-pneumonia", "bacterial"): 324,
                                ("other-pneumonia", "viral"): 204}
    assert {r.source for r in records} == {"kermany"}


def test_old_adapters_fill_source(shared_data):
    assert {r.source for r in load_dataset(f"ieee8023:{shared_data / 'ieee8023-cxr-frontal'}")} == {"ieee8023"}
    assert {r.source for r in load_dataset(f"ucsd:{shared_data / 'ucsd-covid-ct'}")} == {"ucsd"}


def test_class_folder_adapter_refuses_other_layouts(tmp_path):
    (tmp_path / "Cats").mkdir()
    with pytest.raises(ChestDxError, match="none of the class folders COVID, non-COVID"):
        load_dataset(f"soares:{tmp_path}")


def _save(array: np.ndarray, path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_dedup_finds_a_planted_copy_and_keeps_the_one_with_a_patient_id(shared_data, tmp_path):
    ieee = load_dataset(f"ieee8023:{shared_data / 'ieee8023-cxr-frontal'}")[:6]
    others = load_dataset(f"nih-pneumonia:{shared_data / 'xray-nih-pneumonia'}")[:6]
    with Image.open(ieee[2].path) as img:  # the re-collected copy: squashed to 224x224, JPEG, grey
        copy = np.asarray(img.convert("L").resize((224, 224), Image.BILINEAR))
    _save(copy, tmp_path / "COVID" / "copy.jpg")
    planted = CaseRecord(tmp_path / "COVID" / "copy.jpg", "covid-19", "img:COVID/copy", source="covid19-radiography")
    records = [planted, *others, *ieee]
    pairs = cross_set_duplicates(records)
    assert [(i, j) for i, j, _ in pairs] == [(0, 9)]
    kept, duplicates = drop_cross_set_duplicates(records, ["covid19-radiography", "ieee8023"])
    assert len(kept) == len(records) - 1 and planted not in kept  # a real patient id beats the priority list
    assert duplicates[0].kept == ieee[2] and duplicates[0].distance <= 10


def test_near_duplicates_within_a_set_share_a_patient_id(tmp_path):
    rng = np.random.default_rng(0)
    film = (rng.random((64, 64)) * 255).astype(np.uint8)
    _save(film, tmp_path / "a.png")
    _save(np.clip(film.astype(int) + 3, 0, 255).astype(np.uint8), tmp_path / "b.png")
    _save((rng.random((64, 64)) * 255).astype(np.uint8), tmp_path / "c.png")
    records = [CaseRecord(tmp_path / n, "normal", f"img:{n[0]}", source="s") for n in ("b.png", "a.png", "c.png")]
    joined = join_near_duplicate_patients(records)
    assert [r.patient_id for r in joined] == ["img:a", "img:a", "img:c"]


def test_source_stratified_split_keeps_each_sources_mix():
    records = []
    for source, n_patients, covid_share in (("big", 200, 0.8), ("small", 40, 0.2)):
        for p in range(n_patients):
            label = "covid-19" if p < covid_share * n_patients else "normal"
            records += [CaseRecord(f"{source}{p}_{i}", label, f"{source}:{p}", source=source) for i in range(1 + p % 3)]
    parts = patient_split(records, seed=1, by_source=True)
    sides = [{r.patient_id for r in parts[s]} for s in ("train", "val", "test")]
    assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
    for side in ("val", "test"):
        strata = Counter((r.source, r.label) for r in parts[side])
        total = Counter((r.source, r.label) for r in records)
        for key, n in total.items():
            assert abs(strata[key] / n - 0.15) < 0.06, (side, key)
