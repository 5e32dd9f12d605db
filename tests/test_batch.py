"""chestdx batch: study discovery, broken studies listed with their error, resume, Ray equals local, evaluate from the file."""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from chestdx.batch import BatchItem, discover_studies, run_batch
from chestdx.batch.run import WORKER_MEMORY, ResultWriter, default_workers
from chestdx.cli import main
from chestdx.errors import ChestDxError
from chestdx.evaluate.run import evaluate_model
from chestdx.io.datasets import CaseRecord, load_dataset
from chestdx.io.sample import write_sample_series
from chestdx.io.tables import read_table, write_table

UCSD_SLICE = "ucsd-covid-ct/images/CT_COVID/2019-novel-Coronavirus-severe-adult-respiratory-dist_2020_International-Jour-p3-91.png"


def _truncated_dicom(folder: Path, study: Path) -> None:
    folder.mkdir()
    data = sorted(study.glob("*.dcm"))[0].read_bytes()
    (folder / "slice.dcm").write_bytes(data[: len(data) // 2])


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """Three small synthetic CT series and three broken studies (truncated DICOM, empty folder, junk .nii.gz)."""
    root = tmp_path_factory.mktemp("batch") / "archive"
    for seed in range(3):
        write_sample_series(root / f"ct{seed}", n_slices=16, size=128, seed=seed, progress=False)
    _truncated_dicom(root / "broken", root / "ct0")
    (root / "empty").mkdir()
    (root / "junk.nii.gz").write_bytes(b"not a nifti file" * 8)
    return root


@pytest.fixture(scope="module")
def full_run(archive, tmp_path_factory) -> list[dict]:
    """Rows of one uninterrupted local run over the archive."""
    out = tmp_path_factory.mktemp("full") / "results.parquet"
    summary = run_batch(str(archive), out, workers=2, progress=False)
    assert (summary.studies, summary.scored, summary.failed) == (6, 6, 3)
    return read_table(out)


def _without_timing(rows: list[dict]) -> list[dict]:
    """Rows without their timings, probabilities to 6 decimals (a run with another worker or thread count sums
    in another order: differences of ~1e-8)."""
    return [{k: round(v, 6) if isinstance(v, float) else v for k, v in row.items() if not k.startswith("t_")}
            for row in rows]


def _predict_json(path: str) -> dict:
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        assert main(["--quiet", "predict", path, "--json"]) == 0
    return json.loads(printed.getvalue())


def test_discovery_finds_each_kind_of_study_once(tmp_path):
    root = tmp_path / "src"
    write_sample_series(root / "patient1" / "series1", n_slices=2, size=32, progress=False)
    write_sample_series(root / "patient1" / "series2", n_slices=2, size=32, seed=1, progress=False)
    (root / "slices").mkdir()
    for i in range(3):
        (root / "slices" / f"{i}.png").write_bytes(b"")
    (root / "single").mkdir()
    (root / "single" / "xray.jpg").write_bytes(b"")
    (root / "vol.nii.gz").write_bytes(b"")
    with zipfile.ZipFile(root / "scan.zip", "w") as zf:
        zf.writestr("a.dcm", b"")
    (root / "notes.txt").write_text("not a study")
    (root / "empty").mkdir()
    (root / ".hidden").mkdir()
    (root / ".hidden" / "x.dcm").write_bytes(b"")
    found = [(Path(i.path).relative_to(root.resolve()).as_posix(), i.study_id) for i in discover_studies(str(root))]
    assert found == [("empty", "empty"), ("patient1/series1", "patient1__series1"),
                     ("patient1/series2", "patient1__series2"), ("scan.zip", "scan.zip"),
                     ("single/xray.jpg", "single__xray.jpg"), ("slices", "slices"), ("vol.nii.gz", "vol.nii.gz")]
    listing = tmp_path / "list.csv"
    listing.write_text("path,label\nsrc/vol.nii.gz,covid\nsrc/slices,normal\n")
    assert [i.study_id for i in discover_studies(str(listing))] == ["src__vol.nii.gz", "src__slices"]
    folders = tmp_path / "classes"
    shutil.copytree(root / "slices", folders / "covid" / "a")
    assert [i.study_id for i in discover_studies(f"folder:{folders}")] == ["covid__a"]
    for source, message in ((f"nosuch:{folders}", "neither a path nor ADAPTER:PATH"),
                            (str(tmp_path / "missing"), "does not exist"), (str(root / "empty"), "no studies found")):
        with pytest.raises(ChestDxError, match=message):
            discover_studies(source)


def test_the_file_holds_every_finished_study_in_discovery_order(tmp_path):
    items = [BatchItem(f"/archive/s{i}", f"s{i}") for i in range(4)]
    out = tmp_path / "results.csv"
    writer = ResultWriter(out, items, [{"path": "/elsewhere/old", "study_id": "old", "error": "kept"}], every_rows=2)
    writer.add({"path": "/archive/s2", "study_id": "s2", "kind": None, "error": "unreadable"})
    assert not out.exists()
    writer.add({"path": "/archive/s0", "study_id": "s0", "kind": "ct-volume", "p_covid": 0.25, "t_total": 1.5,
                "error": None})
    rows = read_table(out)
    assert [row["path"] for row in rows] == ["/archive/s0", "/archive/s2", "/elsewhere/old"]
    assert list(rows[0]) == ["path", "study_id", "kind", "p_covid", "t_total", "error"]
    assert rows[0]["p_covid"] == "0.25" and rows[1]["p_covid"] is None
    writer.add({"path": "/archive/s1", "study_id": "s1", "error": "unreadable"})
    writer.flush()
    assert [row["study_id"] for row in read_table(out)] == ["s0", "s1", "s2", "old"]
    assert not list(tmp_path.glob(".*tmp"))


def test_broken_studies_are_listed_and_the_rest_scored_as_predict_does(archive, shared_data, tmp_path):
    source = tmp_path / "mixed"
    shutil.copytree(archive, source)
    shutil.copy(shared_data / UCSD_SLICE, source / "ucsd-slice.png")
    out = tmp_path / "results.csv"
    code = (f"import sys\nfrom chestdx.cli import main\nassert main(['--quiet', 'batch', {str(source)!r}, '--out', "
            f"{str(out)!r}, '--workers', '2']) == 0\nprint(' '.join(sorted(sys.modules)))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            timeout=600).stdout.split()
    assert "ray" not in loaded and "torch" not in loaded  # local mode: no Ray; ONNX models: no torch
    rows = {Path(row["path"]).name: row for row in read_table(out)}
    assert list(rows) == ["broken", "ct0", "ct1", "ct2", "empty", "junk.nii.gz", "ucsd-slice.png"]
    assert "cannot decode the pixels of slice.dcm" in rows["broken"]["error"]
    assert "is empty" in rows["empty"]["error"]
    assert "cannot read NIfTI file junk.nii.gz" in rows["junk.nii.gz"]["error"]
    for name in ("ct0", "ct1", "ct2", "ucsd-slice.png"):
        row, expected = rows[name], _predict_json(str(source / name))
        assert row["error"] is None and row["kind"] == expected["kind"] and row["decision"] == expected["decision"]
        assert {c: round(float(row[f"p_{c}"]), 4) for c in expected["probabilities"]} == expected["probabilities"]
        assert row["model"] == expected["model"]["name"] and float(row["threshold"]) == expected["threshold"]
    assert rows["ct0"]["series_uid"] and rows["ct0"]["study_uid"] is None
    assert rows["ucsd-slice.png"]["kind"] == "ct-slice"
    assert main(["--quiet", "batch", str(source), "--out", str(out)]) == 2  # exists without --resume


def test_resume_after_an_interrupted_run_gives_the_uninterrupted_file(archive, full_run, tmp_path):
    out = tmp_path / "results.parquet"
    first = tmp_path / "first.csv"  # the interrupted run: it had finished two studies
    first.write_text(f"path\n{archive / 'ct1'}\n{archive / 'junk.nii.gz'}\n")
    assert run_batch(str(first), out, workers=1, progress=False).scored == 2
    summary = run_batch(str(archive), out, workers=2, resume=True, progress=False)
    assert (summary.skipped, summary.scored) == (2, 4)
    assert _without_timing(read_table(out)) == _without_timing(full_run)
    assert run_batch(str(archive), out, resume=True, progress=False).scored == 0


def test_ray_cluster_gives_the_local_results(archive, full_run, tmp_path):
    out = tmp_path / "results.parquet"
    summary = run_batch(str(archive), out, workers=2, engine="ray", address="local", progress=False)
    assert (summary.engine, summary.scored, summary.failed) == ("ray", 6, 3)
    assert _without_timing(read_table(out)) == _without_timing(full_run)


def _metrics(result: dict) -> dict:
    levels = {result["level"]: result["metrics"], **{k: v["metrics"] for k, v in result["levels"].items()}}
    return {level: {name: {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in m.items()}
                    for name, m in metrics.items()} for level, metrics in levels.items()}


def test_evaluate_from_a_batch_file_equals_evaluate_by_running_the_model(archive, full_run, tmp_path):
    results = tmp_path / "results.csv"
    write_table(results, full_run, list(full_run[0]))
    listing = tmp_path / "labels.csv"
    listing.write_text("path,label,patient_id\n" + "".join(
        f"{archive / name},{label},p{i}\n" for i, (name, label) in enumerate([("ct0", "covid"), ("ct1", "non-covid"),
                                                                             ("ct2", "covid")])))
    records = load_dataset(f"csv:{listing}")
    options = {"n_resamples": 200, "seed": 0, "progress": False}
    from_file = evaluate_model(None, records, predictions_file=str(results), **options)
    by_model = evaluate_model(None, records, **options)
    assert _metrics(from_file) == {k: v for k, v in _metrics(by_model).items() if k != "slice"}
    missing = records + [CaseRecord(archive / "broken", "covid", "p9")]
    with pytest.raises(ChestDxError, match="1 of 4 studies have no scored row"):
        evaluate_model(None, missing, predictions_file=str(results), **options)
    with pytest.raises(ChestDxError, match="has probability columns"):
        evaluate_model("xray-default", records, predictions_file=str(results), **options)


def test_heat_maps_go_to_one_folder_per_study(archive, tmp_path):
    listing = tmp_path / "one.csv"
    listing.write_text(f"path\n{archive / 'ct2'}\n")
    maps, out = tmp_path / "maps", tmp_path / "results.csv"
    assert run_batch(str(listing), out, explain="gradcam", maps_dir=maps, explain_slices=2, progress=False).failed == 0
    row = read_table(out)[0]
    document = json.loads((maps / "ct2" / "explain.json").read_text())
    assert row["explanation"] == str(maps / "ct2" / "explain.json") and document["method"] == "gradcam"
    assert len(document["slices"]) == 2 and float(row["t_explain"]) > 0
    with pytest.raises(ChestDxError, match="--explain and --maps go together"):
        run_batch(str(listing), tmp_path / "other.csv", explain="gradcam", progress=False)


def test_mistakes_a_user_can_make_are_one_message(archive, tmp_path):
    other_table = tmp_path / "other.csv"
    other_table.write_text("name,value\na,1\n")
    for kwargs, message in ((dict(out=tmp_path / "r.txt"), "must end in .parquet or .csv"),
                            (dict(out=tmp_path / "missing" / "r.csv"), "does not exist: create it"),
                            (dict(out=tmp_path / "r.csv", model="no-such-model"), "no model 'no-such-model'"),
                            (dict(out=tmp_path / "r.csv", engine="spark"), "unknown engine"),
                            (dict(out=other_table, resume=True), "not a chestdx batch result")):
        with pytest.raises(ChestDxError, match=message):
            run_batch(str(archive), progress=False, **kwargs)


def test_default_workers_fill_the_cpus_as_far_as_memory_allows():
    assert default_workers(2, None) == 2
    assert default_workers(16, 3 * WORKER_MEMORY) == 3
    assert default_workers(4, WORKER_MEMORY // 2) == 1
