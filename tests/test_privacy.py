"""No patient identifier of a DICOM study ends up in what chestdx prints or writes (DICOM results included), by default."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from chestdx.cli import main
from chestdx.io.sample import write_sample_series

IDENTIFIERS = {"PatientName": "Doe^Jane^Q", "PatientID": "PID-93817465", "PatientBirthDate": "19450317",
               "AccessionNumber": "ACC-5521987", "InstitutionName": "St Example Hospital",
               "ReferringPhysicianName": "Smithers^Rudolfo"}


@pytest.fixture(scope="module")
def identified_study(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("phi") / "study"
    for path in write_sample_series(folder, n_slices=20, size=128, progress=False):
        ds = pydicom.dcmread(path)
        for keyword, value in IDENTIFIERS.items():
            setattr(ds, keyword, value)
        ds.save_as(path)
    return folder


def _needles() -> list[str]:
    out = []
    for value in IDENTIFIERS.values():
        out += [value, value.replace("^", " ")] + [part for part in value.split("^") if len(part) > 3]
    return out + ["1945-03-17"]


def test_outputs_carry_no_identifier(identified_study, tmp_path, capsys):
    assert pydicom.dcmread(next(identified_study.iterdir())).PatientID == IDENTIFIERS["PatientID"]
    texts = []
    for args in (["info", str(identified_study)], ["info", str(identified_study), "--json"],
                 ["predict", str(identified_study)], ["predict", str(identified_study), "--json"],
                 ["predict", str(identified_study), "--explain", "cam", "--out", str(tmp_path / "maps"),
                  "--dicom-out", str(tmp_path / "dicom")],
                 ["preview", str(identified_study), "-o", str(tmp_path / "sheet.png")]):
        assert main(["--quiet", *args]) == 0
        captured = capsys.readouterr()
        texts += [captured.out, captured.err]
    assert any((tmp_path / "dicom").glob("*.dcm"))
    for path in tmp_path.rglob("*"):
        if path.is_file():
            texts.append(path.read_bytes().decode("latin-1"))
    leaks = [n for n in _needles() for t in texts if n in t]
    assert not leaks
    source = next(identified_study.iterdir()).read_bytes().decode("latin-1")
    assert all(v in source for v in ("Doe^Jane^Q", "PID-93817465", "19450317"))  # the scan does find them
