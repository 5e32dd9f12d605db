"""Every command that writes checks its outputs before the work: one line on stderr and exit 2, never a traceback.

Each case runs the command line in this process with the functions that do the work
(reading the study, diagnosing, training, serving...) replaced by ones that fail the test: the
refusal must come before any of them is called. The read-only folder is a read-only mount
when the tests run as root (permission bits do not stop root), else a folder without write
permission (tests/fs_limits.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from chestdx.cli import main
from chestdx.errors import ChestDxError
from chestdx.io.sample import write_sample_series
from fs_limits import read_only_folder

ROOT = Path(__file__).resolve().parents[1]
WORK = [  # (module, attribute): where each command's work starts
    ("chestdx.io", "load_study"), ("chestdx.pipeline", "diagnose_source"), ("chestdx.evaluate.run", "evaluate_model"),
    ("chestdx.evaluate.run", "calibrate_model"), ("chestdx.evaluate.reader_study", "load_reads"),
    ("chestdx.train.run", "train_command"), ("chestdx.batch", "run_batch"), ("chestdx.io.sample", "write_sample_series"),
    ("chestdx.models.checkpoint", "assemble_ensemble"), ("chestdx.node.listener", "DicomNode"),
    ("chestdx.serve", "create_app"), ("chestdx.serve.store", "open_database"), ("chestdx.serve.store", "create_token"),
]


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("unwritable") / "study"
    write_sample_series(folder, n_slices=3, size=64, progress=False)
    return folder


@pytest.fixture(scope="module")
def read_only(tmp_path_factory):
    with read_only_folder(tmp_path_factory.mktemp("ro") / "ro", {"model/metadata.json": b"{}"}) as folder:
        yield folder


@pytest.fixture
def no_work(monkeypatch):
    import importlib

    def started(*args, **kwargs):
        raise AssertionError("the work started before the output was checked")

    modules = [importlib.import_module(module) for module, _ in WORK]  # all imported before any is patched:
    for module, (_, name) in zip(modules, WORK):  # a module imported later would keep the patched function
        monkeypatch.setattr(module, name, started)


def _csv(folder: Path) -> tuple[Path, Path]:
    truth, reads = folder / "truth.csv", folder / "reads.csv"
    truth.write_text("case,class\na,covid-19\n")
    reads.write_text("reader,case,class,yes_no,aided\nr1,a,covid-19,yes,no\n")
    return truth, reads


def _commands(study: Path, ro: Path, ok: Path) -> dict[str, tuple[list[str], str]]:
    """Command line -> the option its message must name (``ok``: a folder that can be written)."""
    truth, reads = ok / "truth.csv", ok / "reads.csv"
    return {
        "preview": (["preview", str(study), "-o", str(ro / "sheet.png")], "-o"),
        "predict --explain --out": (["predict", str(study), "--explain", "gradcam", "--out", str(ro / "maps")], "--out"),
        "predict --dicom-out": (["predict", str(study), "--dicom-out", str(ro / "dicom")], "--dicom-out"),
        "explain --out": (["explain", str(study), "--out", str(ro / "maps")], "--out"),
        "segment --out": (["segment", str(study), "--out", str(ro / "seg")], "--out"),
        "reader-study --report": (["reader-study", "--truth", str(truth), "--reads", str(reads),
                                   "--report", str(ro / "r.html")], "--report"),
        "evaluate --report": (["evaluate", "--data", f"ucsd:{ok}", "--report", str(ro / "e.html")], "--report"),
        "evaluate --cases": (["evaluate", "--data", f"ucsd:{ok}", "--cases", str(ro / "c.csv")], "--cases"),
        "batch --out": (["batch", str(study), "--out", str(ro / "r.csv")], "--out"),
        "batch --maps": (["batch", str(study), "--out", str(ok / "r.csv"), "--explain", "gradcam",
                          "--maps", str(ro / "maps")], "--maps"),
        "sample": (["sample", str(ro / "series")], "sample"),
        "train --out": (["train", "--recipe", "ai-corona", "--data", f"ucsd:{ok}", "--out", str(ro / "t")], "--out"),
        "calibrate --model": (["calibrate", "--model", str(ro / "model"), "--data", f"ucsd:{ok}"], "--model"),
        "ensemble --out": (["ensemble", str(ok), str(ok), "--out", str(ro / "ens")], "--out"),
        "node --store-dir": (["node", "--store-dir", str(ro / "store")], "--store-dir"),
        "serve --data-dir": (["serve", "--data-dir", str(ro / "data")], "--data-dir"),
        "serve token create": (["serve", "--data-dir", str(ro / "data"), "token", "create", "x"], "--data-dir"),
        "serve --db": (["serve", "--data-dir", str(ok / "data"), "--db", f"sqlite:///{ro / 'x.db'}"], "--db"),
    }


COMMANDS = list(_commands(Path("s"), Path("r"), Path("o")))


@pytest.mark.parametrize("name", COMMANDS)
def test_an_output_in_a_read_only_folder_is_refused_before_the_work(name, study, read_only, tmp_path, no_work, capsys):
    _csv(tmp_path)
    argv, option = _commands(study, read_only, tmp_path)[name]
    assert main(["--quiet", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("chestdx: error: "), err
    assert f"{option} " in err and "cannot write" in err, err
    assert not any(p.name.startswith(".chestdx-write-check") for p in tmp_path.iterdir())


@pytest.mark.parametrize("name", ["preview", "explain --out", "reader-study --report", "batch --out", "serve --data-dir"])
def test_an_output_where_nothing_can_be_created_is_refused(name, study, tmp_path, no_work, capsys):
    # /proc takes no new files or folders, whoever asks
    _csv(tmp_path)
    argv, option = _commands(study, Path("/proc"), tmp_path)[name]
    assert main(["--quiet", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{option} " in err and "cannot write in /proc" in err, err


def test_an_output_under_a_file_or_in_place_of_a_folder_is_refused(study, tmp_path, no_work, capsys):
    afile, folder = tmp_path / "afile", tmp_path / "sheet.png"
    afile.write_text("x")
    folder.mkdir()
    for argv, words in ((["segment", str(study), "--out", str(afile / "seg")], "is a file"),
                        (["predict", str(study), "--dicom-out", str(afile)], "is a file, not a folder"),
                        (["preview", str(study), "-o", str(folder)], "is a folder"),
                        (["reader-study", "--truth", str(afile), "--reads", str(afile), "--report",
                          str(afile / "r.html")], "is a file, not a folder")):
        assert main(["--quiet", *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err, (argv, err)


def test_a_disk_that_fills_up_during_the_work_ends_in_one_line(study, tmp_path, capsys):
    # the checks pass (the name can be opened), the bytes do not fit: /dev/full answers ENOSPC to every write
    sheet = tmp_path / "sheet.png"
    sheet.symlink_to("/dev/full")
    assert main(["--quiet", "preview", str(study), "-o", str(sheet)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err and "free space" in err, err


def test_standard_output_on_a_full_disk_is_one_line_and_exit_2(study):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "chestdx.cli", "--quiet", "info", str(study), "--json"],
                              stdout=full, stderr=subprocess.PIPE, text=True, env=env, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "cannot write the output (No space left on device)" in done.stderr


def test_the_service_refuses_a_data_folder_it_cannot_write(read_only):
    pytest.importorskip("fastapi")
    from chestdx.serve import Settings, create_app

    with pytest.raises(ChestDxError, match="data folder .*cannot write"):
        create_app(Settings(data_dir=read_only / "data"))
