"""Every user-caused failure ends in one ChestDxError that says what is wrong."""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from chestdx.cli import main
from chestdx.errors import ChestDxError
from chestdx.io import load_study
from chestdx.io.sample import write_sample_series


@pytest.fixture(scope="module")
def one_slice(tmp_path_factory):
    return write_sample_series(tmp_path_factory.mktemp("one"), n_slices=3, size=32, progress=False)


def test_missing_path():
    with pytest.raises(ChestDxError, match="does not exist"):
        load_study("/nonexistent/study")


def test_empty_folder(tmp_path):
    with pytest.raises(ChestDxError, match="is empty"):
        load_study(tmp_path)


def test_folder_without_images(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "data.bin").write_bytes(b"\0" * 300)
    with pytest.raises(ChestDxError, match="no DICOM, NIfTI or image files"):
        load_study(tmp_path)


def test_non_dicom_dcm(tmp_path):
    (tmp_path / "fake.dcm").write_text("this is not a DICOM file\n" * 20)
    with pytest.raises(ChestDxError, match="not a readable DICOM file"):
        load_study(tmp_path / "fake.dcm")
    with pytest.raises(ChestDxError, match="no readable DICOM image"):
        load_study(tmp_path)


@pytest.mark.parametrize("keep", [0.5, 0.05])
def test_truncated_dcm(one_slice, tmp_path, keep):
    data = one_slice[0].read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ChestDxError, match="truncated"):
        load_study(tmp_path / "cut.dcm")


def test_truncated_slice_in_a_series(one_slice, tmp_path):
    for path in one_slice:
        (tmp_path / path.name).write_bytes(path.read_bytes())
    data = one_slice[1].read_bytes()
    (tmp_path / one_slice[1].name).write_bytes(data[: len(data) - 300])
    with pytest.raises(ChestDxError, match=f"{one_slice[1].name}.*truncated"):
        load_study(tmp_path, progress=False)


def _zip(path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@pytest.mark.parametrize("name", ["../evil.dcm", "a/../../evil.dcm", "/tmp/chestdx_abs_evil.dcm", "C:/evil.dcm"])
def test_zip_slip_refused_and_nothing_written(one_slice, tmp_path, name):
    work = tmp_path / "inside"
    work.mkdir()
    archive = _zip(work / "study.zip", {"ok.dcm": one_slice[0].read_bytes(), name: one_slice[1].read_bytes()})
    with pytest.raises(ChestDxError, match="unsafe path"):
        load_study(archive)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["inside", "study.zip"]
    assert not (tmp_path.parent / "evil.dcm").exists()


def test_zip_bomb_refused_before_extracting(tmp_path):
    archive = _zip(tmp_path / "bomb.zip", {"big.dcm": b"\0" * (8 << 20)})
    assert archive.stat().st_size < 100_000
    with pytest.raises(ChestDxError, match="would unpack to .* more than the limit"):
        load_study(archive, max_bytes=1 << 20)


def test_zip_with_too_many_files_refused(tmp_path):
    archive = _zip(tmp_path / "many.zip", {f"{i}.dcm": b"x" for i in range(6)})
    with pytest.raises(ChestDxError, match="holds 6 files, more than the limit of 5"):
        load_study(archive, max_files=5)


def test_zip_that_is_not_a_zip(tmp_path):
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(ChestDxError, match="not a readable zip"):
        load_study(tmp_path / "broken.zip")


@pytest.mark.parametrize("shape", [(1, 1), (8, 200)])
def test_tiny_image_refused(tmp_path, shape):
    Image.fromarray(np.zeros(shape, np.uint8)).save(tmp_path / "tiny.png")
    with pytest.raises(ChestDxError, match="too small"):
        load_study(tmp_path / "tiny.png")


def test_corrupt_png_refused(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(buffer, format="PNG")
    (tmp_path / "bad.png").write_bytes(buffer.getvalue()[:40])
    with pytest.raises(ChestDxError, match="damaged, truncated or not an image"):
        load_study(tmp_path / "bad.png")


def test_unknown_kind_and_wrong_kind(one_slice):
    with pytest.raises(ChestDxError, match="unknown kind"):
        load_study(one_slice[0].parent, kind="mri")
    with pytest.raises(ChestDxError, match="kind='ct-slice'.*3 slices"):
        load_study(one_slice[0].parent, kind="ct-slice", progress=False)


def test_sample_refuses_a_folder_with_other_files(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(ChestDxError, match="already holds other files"):
        write_sample_series(tmp_path, n_slices=2, size=32, progress=False)
    assert (tmp_path / "precious.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious.txt"]


def test_sample_replaces_its_own_earlier_output(tmp_path):
    first = write_sample_series(tmp_path, n_slices=4, size=32, progress=False)
    second = write_sample_series(tmp_path, n_slices=2, size=32, seed=5, progress=False)
    assert sorted(tmp_path.iterdir()) == sorted(second) and len(first) == 4
    with pytest.raises(ChestDxError, match="cannot write transfer syntax"):
        write_sample_series(tmp_path / "x", n_slices=2, size=32, transfer_syntax="JPEGLosslessSV1", progress=False)


def test_cli_prints_one_line_and_exits_2(tmp_path, capsys):
    assert main(["--quiet", "info", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("chestdx: error:") and "is empty" in err and "\n" not in err


# Damaged input found by fuzzing (issue: reliability): each ends in one project error line, never a traceback.
def _explicit_vr_ct(tmp_path) -> Path:
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    path = tmp_path / "ct.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_corrupted_decimal_string_is_one_line(tmp_path):
    path = _explicit_vr_ct(tmp_path)
    raw = path.read_bytes()
    tag = b"\x28\x00\x53\x10DS"  # RescaleSlope: a traceback before
    at = raw.index(tag) + 6
    length = int.from_bytes(raw[at:at + 2], "little")
    path.write_bytes(raw[:at + 2] + b"0>".ljust(length, b" ") + raw[at + 2 + length:])
    with pytest.raises(ChestDxError) as err:
        load_study(path, progress=False)
    assert "\n" not in str(err.value) and "could not be read" in str(err.value)


def test_unknown_value_representation_is_one_line(tmp_path):
    path = _explicit_vr_ct(tmp_path)
    raw = path.read_bytes()
    tag = b"\x18\x00\x00\x51CS"  # PatientPosition
    assert tag in raw
    path.write_bytes(raw.replace(tag, b"\x18\x00\x00\x51CN"))
    try:
        study = load_study(path, progress=False)
    except ChestDxError as exc:
        assert "\n" not in str(exc)
    else:
        assert study.pixels.shape[0] == 1


@pytest.mark.parametrize("fill", [np.nan, np.inf])
def test_non_finite_nifti_is_refused(tmp_path, fill):
    import nibabel as nib

    volume = np.full((64, 64, 20), -800.0, np.float32)
    volume[10:20, 10:20, 5] = fill
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "v.nii.gz")
    with pytest.raises(ChestDxError, match="NaN or infinite"):
        load_study(tmp_path / "v.nii.gz", progress=False)


def test_highly_compressed_member_is_refused_before_unpacking(tmp_path):
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("scan/junk.dcm", "w") as member:
            for _ in range(40):
                member.write(bytes(2**20))
    assert path.stat().st_size < 2**20
    with pytest.raises(ChestDxError, match="zip bomb"):
        load_study(path, progress=False)


def test_junk_named_dcm_is_refused_without_parsing_it(tmp_path, monkeypatch):
    import pydicom

    (tmp_path / "junk.dcm").write_bytes(bytes(3 * 2**20))
    calls = []
    monkeypatch.setattr(pydicom, "dcmread", lambda *a, **k: calls.append(a) or pytest.fail("parsed junk"))
    with pytest.raises(ChestDxError, match="not a readable DICOM file"):
        load_study(tmp_path / "junk.dcm", progress=False)
    assert calls == []


def test_error_messages_are_one_line():
    assert str(ChestDxError("decoder failed:\n  plugin a: x\n  plugin b: y")) == "decoder failed: plugin a: x plugin b: y"


def test_unreadable_folder_is_not_called_empty(tmp_path, monkeypatch):
    import os

    (tmp_path / "sub").mkdir()
    real_walk = os.walk

    def walk(top, onerror=None, **kwargs):  # as os.walk reports a folder it may not list (CI runs as root)
        onerror(PermissionError(13, "Permission denied", str(tmp_path / "sub")))
        return real_walk(top, onerror=onerror, **kwargs)

    monkeypatch.setattr(os, "walk", walk)
    with pytest.raises(ChestDxError, match="sub cannot be read .permission denied."):
        load_study(tmp_path, progress=False)


def test_sigterm_while_unpacking_removes_the_temporary_folder(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for i in range(400):
            zf.writestr(f"s/{i:04d}.dcm", os.urandom(2**18))
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "chestdx.cli", "--quiet", "info", str(archive)],
                            env={**os.environ, "TMPDIR": str(scratch)}, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not any(scratch.iterdir()) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(60)
    assert rc in (143, 2), proc.stderr.read()  # terminated, or it finished (refusing the junk) first
    assert not [p for p in scratch.iterdir() if p.is_dir()]


def test_a_nifti_that_claims_a_huge_volume_is_refused_from_its_header(tmp_path):
    # a few kilobytes of gzip that would inflate to 16 GiB of float32: refused before a voxel is read
    import gzip

    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape((4096, 4096, 256))
    header.set_data_dtype(np.int16)
    path = tmp_path / "bomb.nii.gz"
    with gzip.open(path, "wb") as out:
        out.write(header.binaryblock + b"\0" * 4)
        for _ in range(16):
            out.write(bytes(2**20))
    started = time.monotonic()
    with pytest.raises(ChestDxError, match="claims a volume of 4096 x 4096 x 256 voxels"):
        load_study(path, progress=False)
    assert time.monotonic() - started < 5
