"""Every user-caused failure ends in one ChestDxError that says what is wrong."""

from __future__ import annotations

import io
import zipfile

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
