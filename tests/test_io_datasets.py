"""Dataset adapters on real data and on layouts built here; patient-grouped splits."""

from __future__ import annotations

from collections import Counter

import pytest

from chestdx.errors import ChestDxError
from chestdx.io import load_study
from chestdx.io.datasets import (
    ADAPTERS, CaseRecord, cc_ccii, covid_ct_md, folder_per_class, ieee8023_label, load_dataset, mosmeddata,
)
from chestdx.io.split import official_or_patient_split, patient_kfold, patient_split


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_ucsd_official_splits_and_patient_ids(shared_data):
    records = load_dataset(f"ucsd:{shared_data / 'ucsd-covid-ct'}")
    counts = Counter((r.label, r.split) for r in records)
    assert [counts["covid", s] for s in ("train", "val", "test")] == [191, 60, 98]
    assert [counts["non-covid", s] for s in ("train", "val", "test")] == [234, 58, 105]
    covid = [r for r in records if r.label == "covid"]
    assert len(covid) == 349 and not any(r.patient_id.startswith("img:") for r in covid)
    assert next(r for r in covid if r.path.name == "2020.01.24.919183-p27-132.png").patient_id == "2020.01.24.919183|Patient 1"
    non_covid = {r.path.name: r.patient_id for r in records if r.label == "non-covid"}
    assert non_covid["1%0.jpg"] == non_covid["1%1.jpg"] == "img:CT_NonCOVID/1"  # sub-images of one figure
    split = official_or_patient_split(records)
    assert {k: len(v) for k, v in split.items()} == {"train": 425, "val": 118, "test": 203}


def test_ucsd_split_file_naming_a_missing_image(shared_data, tmp_path):
    for folder in ("CT_COVID", "CT_NonCOVID"):
        _touch(tmp_path / "images" / folder / "a.png")
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "train_COVID.txt").write_text("a.png\nmissing.png\n")
    with pytest.raises(ChestDxError, match="1 file.*CT_COVID/missing.png"):
        load_dataset(f"ucsd:{tmp_path}")


def test_ieee8023_frontal_xrays(shared_data):
    records = load_dataset(f"ieee8023:{shared_data / 'ieee8023-cxr-frontal'}")
    assert Counter(r.label for r in records) == {"covid": 206, "other-pneumonia": 50, "normal": 2}
    assert len({r.patient_id for r in records}) == 162
    assert all(r.patient_id.startswith("ieee8023:") for r in records)
    study = load_study(records[0].path, kind="xray")
    assert study.kind == "xray" and study.intensity == "8bit"


def test_ieee8023_label_mapping():
    assert [ieee8023_label(f) for f in ("COVID-19", "COVID-19, ARDS", "COVID-19+ARDS", "SARS", "Klebsiella",
                                        "No Finding", "todo", "")] == [
        "covid", "covid", "covid", "other-pneumonia", "other-pneumonia", "normal", None, None]


def test_real_volume_datasets(shared_data):
    cc = load_dataset(f"cc-ccii:{shared_data / 'cc-ccii-sample'}")
    assert [(r.path.name, r.label, r.patient_id) for r in cc] == [
        ("3131", "pneumonia", "CP/0"), ("3132", "pneumonia", "CP/0"), ("3133", "pneumonia", "CP/0")]
    sirm = load_dataset(f"sirm:{shared_data / 'covid-ct-volumes-sirm'}")
    assert len(sirm) == 20 and {r.label for r in sirm} == {"covid"}
    assert len({r.patient_id for r in sirm}) == 18  # radiopaedia cases 10 and 29 have two scans each
    dre = load_dataset(f"dre-net-demo:{shared_data / 'dre-net-demo'}")
    assert [(r.patient_id, r.label) for r in dre] == [
        ("person001", "covid"), ("person002", "covid"), ("person003", "pneumonia"), ("person004", "pneumonia")]


def test_mosmed_layout(tmp_path):
    for k, n in enumerate((3, 2, 2, 1, 1)):
        for i in range(n):
            _touch(tmp_path / "studies" / f"CT-{k}" / f"study_{k}{i:03d}.nii.gz")
    _touch(tmp_path / "studies" / "CT-1" / "readme.txt")
    records = mosmeddata(tmp_path)
    assert len(records) == 9
    assert Counter(r.label for r in records) == {"normal": 3, "covid": 6}
    assert Counter(r.group for r in records) == {"CT-0": 3, "CT-1": 2, "CT-2": 2, "CT-3": 1, "CT-4": 1}
    assert records[0].patient_id == "mosmed:study_0000"


def test_covid_ct_md_layout(tmp_path):
    for folder, patients in (("COVID-19 subjects", ("P001", "P002")), ("Cap subjects", ("cap001",)),
                             ("Normal subjects", ("normal001", "normal002"))):
        for p in patients:
            _touch(tmp_path / folder / p / "IM0001.dcm")
    records = covid_ct_md(tmp_path)
    assert [(r.label, r.patient_id) for r in records] == [
        ("covid", "COVID-19 subjects/P001"), ("covid", "COVID-19 subjects/P002"), ("pneumonia", "Cap subjects/cap001"),
        ("normal", "Normal subjects/normal001"), ("normal", "Normal subjects/normal002")]
    assert records[0].path == tmp_path / "COVID-19 subjects" / "P001"


def test_cc_ccii_layout(tmp_path):
    for cls, patient, scan in (("NCP", "1", "10"), ("NCP", "1", "11"), ("CP", "2", "20"), ("Normal", "3", "30"),
                               ("Other", "4", "40")):
        _touch(tmp_path / cls / patient / scan / "0000.png")
    records = cc_ccii(tmp_path)
    assert [(r.label, r.patient_id, r.path.name) for r in records] == [
        ("pneumonia", "CP/2", "20"), ("covid", "NCP/1", "10"), ("covid", "NCP/1", "11"), ("normal", "Normal/3", "30")]


def test_folder_per_class_and_load_dataset_errors(tmp_path):
    _touch(tmp_path / "covid" / "a.png")
    _touch(tmp_path / "covid" / "scan1" / "1.png")
    _touch(tmp_path / "normal" / "b.nii.gz")
    _touch(tmp_path / "normal" / "notes.txt")
    records = load_dataset(f"folder:{tmp_path}")
    assert [(r.label, r.patient_id) for r in records] == [
        ("covid", "img:covid/a"), ("covid", "img:covid/scan1"), ("normal", "img:normal/b")]
    assert records == folder_per_class(tmp_path)
    with pytest.raises(ChestDxError, match="unknown dataset type 'nope'"):
        load_dataset(f"nope:{tmp_path}")
    with pytest.raises(ChestDxError, match="does not exist"):
        load_dataset(f"folder:{tmp_path / 'missing'}")
    with pytest.raises(ChestDxError, match="NAME:PATH"):
        load_dataset("folder")
    with pytest.raises(ChestDxError, match="no studies found"):
        load_dataset(f"mosmed:{tmp_path}")
    assert set(ADAPTERS) >= {"folder", "ucsd", "cc-ccii", "mosmed", "covid-ct-md", "ieee8023", "sirm", "dre-net-demo"}


def _cohort():
    """60 covid patients (1-4 records each) and 40 normal patients (1-2 records), plus 30 fallback-id images."""
    records = []
    for p in range(60):
        records += [CaseRecord(f"c{p}_{i}", "covid", f"C{p}") for i in range(1 + p % 4)]
    for p in range(40):
        records += [CaseRecord(f"n{p}_{i}", "normal", f"N{p}") for i in range(1 + p % 2)]
    records += [CaseRecord(f"x{i}", "normal", f"img:x{i}") for i in range(30)]
    return records


def _patients(records):
    return {r.patient_id for r in records}


def test_patient_split_groups_and_stratifies():
    records = _cohort()
    split = patient_split(records, seed=1)
    assert sum(len(v) for v in split.values()) == len(records)
    train, val, test = (_patients(split[k]) for k in ("train", "val", "test"))
    assert not (train & val) and not (train & test) and not (val & test)
    for label in ("covid", "normal"):
        total = sum(r.label == label for r in records)
        shares = [sum(r.label == label for r in split[k]) / total for k in ("train", "val", "test")]
        assert shares == pytest.approx([0.7, 0.15, 0.15], abs=0.05)
    assert patient_split(records, seed=1) == split and patient_split(records, seed=2) != split
    with pytest.raises(ChestDxError, match="summing to 1"):
        patient_split(records, fractions=(0.5, 0.2, 0.2))


def test_patient_kfold_groups_and_stratifies():
    records = _cohort()
    folds = patient_kfold(records, k=5, seed=0)
    assert len(folds) == 5
    tested = [pid for _, test in folds for pid in _patients(test)]
    assert sorted(tested) == sorted(_patients(records))  # each patient tested exactly once
    for train, test in folds:
        assert not _patients(train) & _patients(test)
        assert len(train) + len(test) == len(records)
        share = sum(r.label == "covid" for r in test) / len(test)
        assert share == pytest.approx(sum(r.label == "covid" for r in records) / len(records), abs=0.1)
    with pytest.raises(ChestDxError, match="at least 5 patients"):
        patient_kfold(records[:3], k=5)


def test_official_split_used_only_when_complete(caplog):
    records = [CaseRecord(f"r{i}", "covid" if i % 2 else "normal", f"P{i // 2}", split=("train", "test")[i % 2])
               for i in range(8)]
    split = official_or_patient_split(records)
    assert [len(split[k]) for k in ("train", "val", "test")] == [4, 0, 4]
    assert "4 patient(s) on more than one side" in caplog.text  # P0..P3 each have a train and a test record
    partial = records[:-1] + [CaseRecord("r7", "covid", "P3")]
    fallback = official_or_patient_split(partial)
    assert not _patients(fallback["train"]) & _patients(fallback["test"])
