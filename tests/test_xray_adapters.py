"""X-ray dataset adapters: NIH ChestX-ray14 (real CSV header) and the generic CSV list; DETL's source relabelling."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from chestdx.errors import ChestDxError
from chestdx.io.datasets import ADAPTERS, CaseRecord, csv_list, load_dataset, nih_chestxray14
from chestdx.train.transfer import source_records

NIH_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
              "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")
NIH_ROWS = [  # as in the release: a trailing comma on every row
    "00000001_000.png,Cardiomegaly,0,1,58,M,PA,2682,2749,0.143,0.143,",
    "00000001_001.png,Cardiomegaly|Emphysema,1,1,58,M,PA,2894,2729,0.143,0.143,",
    "00000002_000.png,No Finding,0,2,81,M,AP,2500,2048,0.171,0.171,",
    "00000003_000.png,Hernia,0,3,81,F,LL,2582,2991,0.143,0.143,",  # lateral: dropped
    "00000004_000.png,No Finding,0,4,82,M,PA,2048,2500,0.168,0.168,",
    "00000005_000.png,Infiltration,0,5,69,F,PA,2048,2500,0.168,0.168,",  # listed, image missing
]


def _png(path, value: int = 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((40, 36), value, np.uint8)).save(path)


@pytest.fixture
def nih_root(tmp_path):
    root = tmp_path / "nih"
    root.mkdir()
    (root / "Data_Entry_2017.csv").write_text("\n".join([NIH_HEADER, *NIH_ROWS]) + "\n")
    for name, folder in (("00000001_000.png", "images_001"), ("00000001_001.png", "images_001"),
                         ("00000002_000.png", "images_002"), ("00000003_000.png", "images_002"),
                         ("00000004_000.png", "images_002")):
        _png(root / folder / "images" / name)
    _png(root / "images_002" / "images" / "99999999_000.png")  # on disk, not in the CSV: ignored
    return root


def test_nih_frontal_labels_patients(nih_root, caplog):
    with caplog.at_level(logging.WARNING):
        records = nih_chestxray14(nih_root)
    assert [r.path.name for r in records] == ["00000001_000.png", "00000001_001.png", "00000002_000.png",
                                              "00000004_000.png"]
    assert [r.label for r in records] == ["disease", "disease", "normal", "normal"]
    assert [r.patient_id for r in records] == ["nih:1", "nih:1", "nih:2", "nih:4"]
    assert records[1].group == "Cardiomegaly|Emphysema"
    assert records[2].path.parent == nih_root / "images_002" / "images"
    assert "1 frontal image(s)" in caplog.text and "00000005_000.png" in caplog.text


def test_nih_through_load_dataset_and_errors(nih_root, tmp_path):
    assert ADAPTERS["nih"] is nih_chestxray14 and ADAPTERS["csv"] is csv_list
    assert len(load_dataset(f"nih:{nih_root}")) == 4
    (tmp_path / "empty").mkdir()
    with pytest.raises(ChestDxError, match="Data_Entry_2017.csv"):
        nih_chestxray14(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "Data_Entry_2017.csv").write_text("file,label\na.png,x\n")
    with pytest.raises(ChestDxError, match="lacks the columns"):
        nih_chestxray14(tmp_path / "bad")


def test_csv_list_relative_paths_and_fallback_ids(tmp_path):
    _png(tmp_path / "imgs" / "a.png")
    _png(tmp_path / "imgs" / "b.png")
    _png(tmp_path / "c.png")
    listing = tmp_path / "list.csv"
    listing.write_text("path,label,patient_id\nimgs/a.png,covid,p1\nimgs/b.png,covid,p1\n"
                       f"{tmp_path / 'c.png'},normal,\n")
    records = load_dataset(f"csv:{listing}")
    assert records == [CaseRecord(tmp_path / "imgs" / "a.png", "covid", "p1"),
                       CaseRecord(tmp_path / "imgs" / "b.png", "covid", "p1"),
                       CaseRecord(tmp_path / "c.png", "normal", "img:" + (tmp_path / "c").as_posix())]


@pytest.mark.parametrize("text, match", [
    ("file,label\na.png,covid\n", "needs path,label,patient_id"),
    ("path,label,patient_id\nmissing.png,covid,p1\n", r"1 path\(s\) .* do not exist \(e.g. missing.png\)"),
    ("path,label,patient_id\n,covid,p1\n", "line 2: empty path or label"),
])
def test_csv_list_refuses_bad_lists(tmp_path, text, match):
    (tmp_path / "list.csv").write_text(text)
    with pytest.raises(ChestDxError, match=match):
        csv_list(tmp_path / "list.csv")


def test_source_relabelling_is_binary():
    records = [CaseRecord("a", "normal", "1"), CaseRecord("b", "covid", "2"), CaseRecord("c", "Effusion", "3")]
    assert [r.label for r in source_records(records)] == ["normal", "disease", "disease"]
    assert [r.patient_id for r in source_records(records)] == ["1", "2", "3"]
    with pytest.raises(ChestDxError, match="no 'normal' images"):
        source_records(records[1:])
