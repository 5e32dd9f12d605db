"""The web service on a live uvicorn at 127.0.0.1: tokens, uploads, jobs in worker processes, slices, reports,
metrics, restarts, and the viewer page driven in Chromium (when Debian's chromium and chromium-driver are there).

The API tests run twice: on SQLite (the default) and on PostgreSQL, a cluster of Debian's
``postgresql`` package that the tests start on a Unix socket in a temporary folder.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("sqlalchemy")
import httpx  # noqa: E402
import uvicorn  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from chestdx.cli import main  # noqa: E402
from chestdx.io import load_study  # noqa: E402
from chestdx.io.sample import write_sample_series  # noqa: E402
from chestdx.outputs.explanations import write_explanations  # noqa: E402
from chestdx.serve import Settings, create_app  # noqa: E402
from chestdx.serve.store import StudyRow, TokenRow, check_token, create_token, open_database  # noqa: E402
from chestdx.serve.uploads import INCOMING_FOLDER  # noqa: E402

MAX_UPLOAD_MB = 2
DATABASES = ["sqlite", "postgresql"]


def zipped(folder: Path, arcname=lambda p: p.name) -> bytes:
    """Args: folder: files to zip. arcname: member name of each file. Returns: the zip's bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path in sorted(folder.iterdir()):
            zf.write(path, arcname(path))
    return buffer.getvalue()


def wait_for_job(client: httpx.Client | TestClient, headers: dict, study_id: str, patience_s: float = 600.0) -> dict:
    """Wait for a study's job to end with ``?wait=`` requests (a guard against hanging, not a speed check). Returns: the study."""
    deadline = time.monotonic() + patience_s
    while time.monotonic() < deadline:
        study = client.get(f"/studies/{study_id}", headers=headers, params={"wait": 30}).json()
        if study["status"] in ("done", "failed"):
            return study
    raise AssertionError(f"study {study_id} still {study['status']} after {patience_s} s")


@pytest.fixture(scope="module")
def series(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("serve") / "series"
    write_sample_series(folder, n_slices=16, size=128, progress=False)
    return folder


def _postgres_programs() -> Path | None:
    """The folder of Debian's PostgreSQL server programs (the newest version), or of ``initdb`` on the PATH."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb and shutil.which("pg_ctl") else None


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL cluster for the tests: ``initdb`` into a temporary folder, listening only on a Unix socket there.

    PostgreSQL refuses to run as root, so under root the cluster belongs to Debian's
    ``postgres`` user (``runuser``). Yields a function that creates a new database and
    returns its SQLAlchemy URL; the cluster is stopped and removed after the session.
    """
    programs = _postgres_programs()
    if programs is None:
        pytest.skip("the PostgreSQL tests need Debian's postgresql (apt-get install postgresql)")
    psycopg = pytest.importorskip("psycopg")
    root = Path(tempfile.mkdtemp(prefix="chestdx-pg-"))
    as_owner: list[str] = []
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root, the PostgreSQL tests need the postgres user of Debian's postgresql package")
        os.chown(root, owner.pw_uid, owner.pw_gid)
        as_owner = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", 5432  # the socket is private to the folder, so the usual port cannot clash

    def run(*command: str) -> None:
        done = subprocess.run([*as_owner, *command], cwd=root, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{command[0]} failed: {done.stderr or done.stdout}"

    run(str(programs / "initdb"), "-D", str(data), "-U", "chestdx", "--auth=trust", "-E", "UTF8", "--no-sync")
    run(str(programs / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "-o",
        f"-k {root} -p {port} -c listen_addresses='' -c fsync=off", "start")

    def new_database() -> str:
        name = f"chestdx_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(host=str(root), port=port, user="chestdx", dbname="postgres", autocommit=True) as db:
            db.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://chestdx@/{name}?host={root}&port={port}"

    try:
        yield new_database
    finally:
        subprocess.run([*as_owner, str(programs / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       cwd=root, capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)


def database_url(kind: str, request: pytest.FixtureRequest) -> str | None:
    """Args: kind: ``sqlite`` or ``postgresql``. request: the test's. Returns: the URL (None: SQLite in the data folder)."""
    return None if kind == "sqlite" else request.getfixturevalue("postgres")()


def serve_in_thread(app) -> tuple[uvicorn.Server, threading.Thread, int]:
    """Start uvicorn with the app on a free port of 127.0.0.1. Returns: the server, its thread and the port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    return server, thread, port


@pytest.fixture(scope="module", params=DATABASES)
def service(request, tmp_path_factory):
    """The app served by uvicorn on a free port of 127.0.0.1, with one token, on SQLite or PostgreSQL.

    Yields ``(client, headers, data folder, sessions)``.
    """
    data_dir = tmp_path_factory.mktemp(f"serve-data-{request.param}")
    app = create_app(Settings(data_dir=data_dir, db_url=database_url(request.param, request),
                              max_upload_mb=MAX_UPLOAD_MB, explain_slices=0, poll_seconds=0.2))
    assert app.state.sessions.kw["bind"].dialect.name == request.param
    token = create_token(app.state.sessions, "tests")
    server, thread, port = serve_in_thread(app)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
        yield client, {"Authorization": f"Bearer {token}"}, data_dir, app.state.sessions
    server.should_exit = True
    thread.join(timeout=30)


@pytest.fixture(scope="module")
def done_study(service, series) -> dict:
    """The sample series uploaded as a zip named like a patient export, diagnosed by a worker."""
    client, headers, *_ = service
    answer = client.post("/studies", headers=headers,
                         files={"files": ("DOE_JOHN_12345.zip", zipped(series), "application/zip")})
    assert answer.status_code == 202 and answer.json()["status"] == "queued"
    return wait_for_job(client, headers, answer.json()["id"])


def test_every_endpoint_but_healthz_needs_a_known_token(service):
    client, headers, *_ = service
    assert client.get("/healthz").status_code == 200
    for method, path in (("get", "/studies"), ("get", "/metrics"), ("get", "/studies/x"), ("delete", "/studies/x"),
                         ("get", "/studies/x/slices/0.png"), ("get", "/studies/x/report"), ("post", "/studies")):
        assert getattr(client, method)(path).status_code == 401, path
        wrong = getattr(client, method)(path, headers={"Authorization": "Bearer cdx_0123_not-a-token"})
        assert wrong.status_code == 401 and "token" in wrong.json()["detail"], path
    assert client.get("/studies", headers=headers).status_code == 200


def test_tokens_are_stored_hashed_and_made_by_the_cli(tmp_path):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["serve", "--data-dir", str(tmp_path), "token", "create", "pacs-bridge"]) == 0
    token = out.getvalue().split()[-1]
    sessions = open_database(f"sqlite:///{tmp_path / 'chestdx.db'}")
    assert check_token(sessions, token) == "pacs-bridge"
    assert check_token(sessions, token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    with sessions() as session:
        stored = session.query(TokenRow).one()
    assert token not in (stored.token_hash, stored.salt, stored.key_id) and stored.key_id in token
    assert token.encode() not in (tmp_path / "chestdx.db").read_bytes()


def test_an_uploaded_series_gets_the_probabilities_of_chestdx_predict(done_study, series, service):
    assert done_study["status"] == "done", done_study["error"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["--quiet", "predict", str(series), "--json", "--quantify"]) == 0
    cli = json.loads(out.getvalue())
    result = done_study["result"]
    assert result["probabilities"] == cli["probabilities"] and result["decision"] == cli["decision"]
    assert result["limitations"] == cli["limitations"] and result["model"]["name"] == cli["model"]["name"]
    # the service's record is predict's: the same keys (study, quantification, lesions included), the same measures
    assert set(result) == set(cli) and result["study"] == cli["study"] == {"n_slices": 16, "intensity": "hu",
                                                                          "shape": [16, 128, 128]}
    assert result["quantification"] == cli["quantification"] and result["lesions"] == cli["lesions"]
    chest = result["quantification"]["chest"]
    assert chest["category"] in {f"CT-{k}" for k in range(5)} and 0 <= chest["severity_score"] <= 30
    assert result["quantification"]["model"] == result["lesions"]["model"] == "lesion-default"
    # no uploaded file name is kept: not in the record, not on disk
    assert done_study["upload"] == "1 file: .zip"
    data_dir = service[2]
    assert [p.name for p in (data_dir / done_study["id"] / "upload").iterdir()] == ["study.zip"]
    assert "DOE" not in json.dumps(done_study)


def test_one_waiting_request_answers_when_the_job_ends(service, series):
    client, headers, *_ = service
    answer = client.post("/studies", headers=headers, files={"files": ("study.zip", zipped(series), "application/zip")})
    study_id = answer.json()["id"]
    assert client.get(f"/studies/{study_id}", headers=headers).json()["status"] in ("queued", "running")  # no wait: at once
    study = client.get(f"/studies/{study_id}", headers=headers, params={"wait": 60}).json()
    assert study["status"] == "done" and study["result"]["probabilities"]
    too_long = client.get(f"/studies/{study_id}", headers=headers, params={"wait": 600})
    assert too_long.status_code == 422 and "wait" in too_long.json()["detail"]


def test_a_broken_file_fails_its_job_with_the_one_line_message(service):
    client, headers, *_ = service
    answer = client.post("/studies", headers=headers, files={"files": ("scan.dcm", b"not a dicom file", "application/dicom")})
    assert answer.status_code == 202
    study = wait_for_job(client, headers, answer.json()["id"])
    assert study["status"] == "failed" and study["result"] is None
    assert "not a readable DICOM file" in study["error"] and "\n" not in study["error"]


def test_the_viewer_copy_is_written_beside_the_diagnosis_and_not_kept_when_it_fails(tmp_path, series, monkeypatch):
    from chestdx.errors import ChestDxError
    from chestdx.pipeline import diagnosis as pipeline_diagnosis
    from chestdx.serve import jobs

    folder = tmp_path / "study"
    shutil.copytree(series, folder / "upload")
    json.loads(jobs.diagnose_and_write(str(folder), None, None, 0, quantify=False))
    pixels = np.load(folder / jobs.PIXELS_FILE)
    hu = load_study(series, progress=False).pixels
    assert pixels.dtype == np.int16 and np.array_equal(pixels, np.clip(np.rint(hu), -32768, 32767).astype(np.int16))

    def fails_after_reading(study, model, read_seconds=0.0):
        time.sleep(0.5)  # the viewer's copy is being written meanwhile
        raise ChestDxError("this study cannot be diagnosed")

    monkeypatch.setattr(pipeline_diagnosis, "diagnose", fails_after_reading)
    (folder / jobs.PIXELS_FILE).unlink()
    (folder / jobs.RESULT_FILE).unlink()
    with pytest.raises(ChestDxError, match="cannot be diagnosed"):
        jobs.diagnose_and_write(str(folder), None, None, 0, quantify=False)
    assert sorted(p.name for p in folder.iterdir()) == ["upload"]  # no viewer copy, no partial file


def test_bad_uploads_answer_4xx_with_a_message_and_leave_nothing_behind(service, series):
    client, headers, data_dir, _ = service
    before = sorted(p.name for p in data_dir.iterdir())
    slip = zipped(series, arcname=lambda p: f"../{p.name}")
    cases = [
        # just over the limit: stopped while it is stored; far over: refused from its Content-Length
        (413, {"files": ("big.zip", b"0" * (MAX_UPLOAD_MB * 2**20 + 1), "application/zip")}, "larger than the limit"),
        (413, {"files": ("huge.zip", b"0" * (2 * MAX_UPLOAD_MB * 2**20), "application/zip")}, "larger than the limit"),
        (415, {"files": ("notes.txt", b"hello", "text/plain")}, "not a DICOM, NIfTI, image or zip"),
        (400, {"files": ("broken.zip", b"PK\x03\x04 truncated", "application/zip")}, "cannot be read"),
        (400, {"files": ("slip.zip", slip, "application/zip")}, "unsafe path"),
    ]
    for status, files, message in cases:
        answer = client.post("/studies", headers=headers, files=files)
        assert answer.status_code == status and message in answer.json()["detail"], answer.json()
    wrong_kind = client.post("/studies", headers=headers, data={"kind": "mri"},
                             files={"files": ("a.dcm", b"x", "application/dicom")})
    assert wrong_kind.status_code == 422 and "kind" in wrong_kind.json()["detail"]
    assert sorted(p.name for p in data_dir.iterdir()) == before


def _study_folders(data_dir: Path) -> list[Path]:
    """The studies' folders, and those of uploads still arriving (in the staging folder, renamed into place when whole)."""
    staging = data_dir / INCOMING_FOLDER
    arriving = sorted(p for p in staging.iterdir() if p.is_dir()) if staging.is_dir() else []
    return [p for p in data_dir.iterdir() if p.is_dir() and p != staging] + arriving


def _upload_files(data_dir: Path) -> list[Path]:
    return [f for folder in _study_folders(data_dir) for f in (folder / "upload").glob("*") if f.is_file()]


def _wait_until(condition, patience_s: float = 20.0) -> None:
    deadline = time.monotonic() + patience_s
    while not condition():
        assert time.monotonic() < deadline, "the condition never came true"
        time.sleep(0.02)


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_a_large_upload_streams_to_disk_in_bounded_memory_and_is_stopped_at_the_limit(tmp_path):
    """A chunked upload (no Content-Length, so only the streaming check can stop it) of 300 MB against a 256 MB limit.

    While it arrives, the file in the study's folder grows (it is written as it comes, not
    after the request) and the process's resident memory stays far below the upload's size;
    past the limit the upload is answered 413 in one line and its folder is removed.
    """
    limit_mb, total_mb, chunk = 256, 300, os.urandom(2**20)
    data_dir = tmp_path / "data"
    app = create_app(Settings(data_dir=data_dir, max_upload_mb=limit_mb, explain_slices=0))
    token = create_token(app.state.sessions, "tests")
    server, thread, port = serve_in_thread(app)
    boundary = "chestdx-test-boundary"
    seen = {"on_disk_mid_upload": 0, "gone_before_the_end": False}
    peak = {"rss": 0}
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            peak["rss"] = max(peak["rss"], _resident_bytes())
            time.sleep(0.005)

    def body():
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"DOE_JANE.nii\"\r\n"
               "Content-Type: application/octet-stream\r\n\r\n").encode()
        for mb in range(total_mb):
            if mb == 200:  # the first 200 MB are on disk while the client still sends
                _wait_until(lambda: sum(f.stat().st_size for f in _upload_files(data_dir)) >= 150 * 2**20)
                seen["on_disk_mid_upload"] = sum(f.stat().st_size for f in _upload_files(data_dir))
            if mb == total_mb - 8:  # past the limit: refused and removed before the upload ends
                _wait_until(lambda: not _study_folders(data_dir))
                seen["gone_before_the_end"] = True
            yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300) as client:
            client.get("/healthz")
            baseline = _resident_bytes()
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            started = time.monotonic()
            answer = client.post("/studies", content=body(), headers={
                "Authorization": f"Bearer {token}", "Content-Type": f"multipart/form-data; boundary={boundary}"})
            seconds = time.monotonic() - started
            sampling.set()
            sampler.join()
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    growth = peak["rss"] - baseline
    print(f"\n{total_mb} MB chunked upload: {seconds:.1f} s ({total_mb / seconds:.0f} MB/s); {seen['on_disk_mid_upload'] / 2**20:.0f} MB "
          f"on disk at 200 MB sent; resident memory +{growth / 2**20:.1f} MB at most")
    assert answer.status_code == 413, answer.text
    detail = answer.json()["detail"]
    assert f"larger than the limit of {limit_mb} MB" in detail and "\n" not in detail
    assert seen["on_disk_mid_upload"] >= 150 * 2**20 and seen["gone_before_the_end"]
    assert growth < 64 * 2**20, f"resident memory grew by {growth / 2**20:.0f} MB during a {total_mb} MB upload"
    assert not _study_folders(data_dir)
    with app.state.sessions() as session:
        assert session.query(StudyRow).count() == 0


def test_an_upload_broken_off_by_its_client_leaves_nothing_behind(service):
    client, headers, data_dir, sessions = service
    before = sorted(p.name for p in data_dir.iterdir())
    boundary = "chestdx-test-boundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"scan.nii\"\r\n\r\n").encode()
    declared = len(head) + 2**20 + 64
    request = (f"POST /studies HTTP/1.1\r\nHost: {client.base_url.host}\r\n{list(headers)[0]}: {list(headers.values())[0]}\r\n"
               f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {declared}\r\n\r\n").encode()
    with socket.create_connection((client.base_url.host, client.base_url.port)) as raw:
        raw.sendall(request + head + b"\0" * (2**19))  # half the file, then the client goes away
        _wait_until(lambda: any(f.stat().st_size > 0 for f in _upload_files(data_dir)))  # written as it came
    _wait_until(lambda: sorted(p.name for p in data_dir.iterdir()) == before)
    with sessions() as session:
        assert session.query(StudyRow).filter(StudyRow.upload.like("%.nii%")).count() == 0


def test_slices_render_in_both_windows_and_overlay_only_explained_slices(service, done_study):
    client, headers, data_dir, sessions = service
    base = f"/studies/{done_study['id']}/slices"
    lung = client.get(f"{base}/8.png", headers=headers)
    mediastinum = client.get(f"{base}/8.png?window=mediastinum", headers=headers)
    assert lung.headers["content-type"] == "image/png"
    lung_image, mediastinum_image = (np.asarray(Image.open(io.BytesIO(r.content))) for r in (lung, mediastinum))
    assert lung_image.shape == (128, 128) and not np.array_equal(lung_image, mediastinum_image)
    assert client.get(f"{base}/16.png", headers=headers).status_code == 404
    assert client.get(f"{base}/8.png?overlay=gradcam", headers=headers).status_code == 404

    # what a job with --explain-slices writes: a map for slice 8 and its entry in the result
    heat = np.zeros((1, 128, 128), np.float32)
    heat[0, 40:80, 30:60] = 1.0
    write_explanations(data_dir / done_study["id"] / "explanation", [8], lung_image[None], heat, "gradcam", 1, "covid", 0.8)
    with sessions.begin() as session:
        row = session.get(StudyRow, done_study["id"])
        row.result = json.dumps({**json.loads(row.result), "explanation": {
            "method": "gradcam", "class": "covid", "slices": [8], "slice_scores": [0.8]}})
    overlay = np.asarray(Image.open(io.BytesIO(client.get(f"{base}/8.png?overlay=gradcam", headers=headers).content)))
    assert overlay.shape == (128, 128, 3)
    hot, cold = overlay[40:80, 30:60].astype(int), overlay[100:120, 100:120].astype(int)
    assert (hot[..., 0] - hot[..., 2]).mean() > 50  # red where the map is 1 (jet colour map)
    assert np.abs(cold - lung_image[100:120, 100:120, None]).max() <= 1  # where the map is 0 the slice shows unchanged

    report = client.get(f"/studies/{done_study['id']}/report", headers=headers)
    assert report.headers["content-type"].startswith("text/html")
    assert f"Decision: {done_study['result']['decision']}" in report.text and "Limitations" in report.text
    assert 'alt="Grad-CAM on slice 8"' in report.text and "data:image/png;base64," in report.text


def test_the_lesion_overlay_colours_the_segmented_lesions_and_the_report_quantifies_them(service, done_study):
    client, headers, data_dir, _ = service
    result = done_study["result"]
    labels = np.load(data_dir / done_study["id"] / "lesions.npy")
    assert labels.shape == tuple(result["study"]["shape"]) and set(np.unique(labels)) <= {0, 1, 2}
    k = result["lesions"]["key_slices"][0]["index"]
    assert int((labels[k] > 0).sum()) == result["lesions"]["key_slices"][0]["lesion_pixels"] > 0
    assert result["lesions"]["slices_with_lesion"] == [int(i) for i in np.flatnonzero(labels.any(axis=(1, 2)))]

    def png(query: str) -> np.ndarray:
        answer = client.get(f"/studies/{done_study['id']}/slices/{k}.png?{query}", headers=headers)
        assert answer.status_code == 200, answer.text
        return np.asarray(Image.open(io.BytesIO(answer.content))).astype(int)

    plain, lesion = png("overlay=none"), png("overlay=lesion&opacity=0.6")
    assert lesion.shape == plain.shape + (3,)
    ggo, consolidation = labels[k] == 1, labels[k] == 2
    assert np.array_equal(lesion[~(ggo | consolidation)], np.repeat(plain[~(ggo | consolidation), None], 3, axis=1))
    if ggo.any():  # yellow: red and green above blue
        assert (lesion[ggo][:, 0] - lesion[ggo][:, 2]).min() > 60 and (lesion[ggo][:, 1] - lesion[ggo][:, 2]).min() > 40
    if consolidation.any():  # red
        assert (lesion[consolidation][:, 0] - lesion[consolidation][:, 1]).min() > 60
    assert client.get(f"/studies/{done_study['id']}/slices/{k}.png?overlay=mask", headers=headers).status_code == 422

    report = client.get(f"/studies/{done_study['id']}/report", headers=headers).text
    chest = result["quantification"]["chest"]
    assert "Lesions and lung involvement" in report and f"<b>{chest['category']}</b>" in report
    assert f"severity score {chest['severity_score']}/30" in report and "ground-glass share of lesion" in report
    assert f'alt="lesions on slice {k}"' in report


def test_metrics_are_prometheus_text(service, done_study):
    client, headers, *_ = service
    text = client.get("/metrics", headers=headers).text
    sample = re.compile(r'^[a-z_]+(\{[a-z]+="[^"]*"\})? -?[0-9.e+]+$')
    values = {}
    for line in text.splitlines():
        if not line.startswith("#"):
            assert sample.match(line), line
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    assert values["chestdx_queue_length"] == 0
    assert values['chestdx_studies{status="done"}'] >= 1
    assert values["chestdx_job_duration_seconds_count"] == values['chestdx_job_duration_seconds_bucket{le="+Inf"}'] >= 1


def test_delete_removes_the_row_and_the_files(service, series):
    client, headers, data_dir, _ = service
    answer = client.post("/studies", headers=headers, files={"files": ("x.dcm", b"garbage", "application/dicom")})
    study = wait_for_job(client, headers, answer.json()["id"])
    assert (data_dir / study["id"]).is_dir()
    assert client.delete(f"/studies/{study['id']}", headers=headers).status_code == 204
    assert not (data_dir / study["id"]).exists()
    assert client.get(f"/studies/{study['id']}", headers=headers).status_code == 404
    assert study["id"] not in [s["id"] for s in client.get("/studies", headers=headers).json()]


def test_the_viewer_page_is_served_without_anything_from_outside(service):
    client, *_ = service
    page = client.get("/").text
    assert "chestdx viewer" in page and 'id="token"' in page
    script = client.get("/static/viewer.js").text
    assert "sessionStorage" in script
    assert not re.search(r"(src|href)=\"https?://", page) and "https://" not in script


@pytest.mark.parametrize("database", DATABASES)
def test_a_restart_resumes_queued_jobs_and_reruns_interrupted_ones(tmp_path, series, database, request):
    """Rows as a killed service leaves them (one queued, one running), then the service starts again."""
    url = database_url(database, request) or f"sqlite:///{tmp_path / 'chestdx.db'}"
    sessions = open_database(url)
    for study_id, status in (("a" * 32, "queued"), ("b" * 32, "running")):
        (tmp_path / study_id / "upload").mkdir(parents=True)
        (tmp_path / study_id / "upload" / "study.zip").write_bytes(zipped(series))
        with sessions.begin() as session:
            session.add(StudyRow(id=study_id, status=status, upload="1 file: .zip", attempts=int(status == "running")))
    app = create_app(Settings(data_dir=tmp_path, db_url=url, explain_slices=0, poll_seconds=0.2, quantify=False))
    headers = {"Authorization": f"Bearer {create_token(app.state.sessions, 'tests')}"}
    with TestClient(app) as client:
        studies = [wait_for_job(client, headers, study_id) for study_id in ("a" * 32, "b" * 32)]
        no_map = client.get(f"/studies/{'a' * 32}/slices/0.png?overlay=lesion", headers=headers)
    assert no_map.status_code == 404 and "--no-quantify" in no_map.json()["detail"]
    assert [s["status"] for s in studies] == ["done", "done"], [s["error"] for s in studies]
    assert [s["attempts"] for s in studies] == [1, 2]
    assert studies[0]["result"]["probabilities"] == studies[1]["result"]["probabilities"]
    assert "quantification" not in studies[0]["result"]  # --no-quantify


def test_the_serve_model_option_is_the_model_of_uploads_that_name_none(tmp_path, series, capsys):
    app = create_app(Settings(data_dir=tmp_path, explain_slices=0, poll_seconds=0.2, quantify=False,
                              model="ct-residual-attention"))
    headers = {"Authorization": f"Bearer {create_token(app.state.sessions, 'tests')}"}
    with TestClient(app) as client:
        named_none = client.post("/studies", headers=headers, files={"files": ("s.zip", zipped(series), "application/zip")})
        named = client.post("/studies", headers=headers, data={"model": "ct-default"},
                            files={"files": ("s.zip", zipped(series), "application/zip")})
        studies = [wait_for_job(client, headers, a.json()["id"]) for a in (named_none, named)]
    assert [s["status"] for s in studies] == ["done", "done"], [s["error"] for s in studies]
    assert [s["model"] for s in studies] == ["ct-residual-attention", "ct-default"]
    assert [s["result"]["model"]["name"] for s in studies] == ["ct-residual-attention", "ct-default"]
    # a model that does not exist is refused at start, in one line, before anything listens
    assert main(["serve", "--data-dir", str(tmp_path / "other"), "--model", "ct-nope"]) == 2
    error = capsys.readouterr().err.strip()
    assert "no model 'ct-nope'" in error and "\n" not in error


def _chromium_driver():
    """A headless Chromium through Selenium, or a skip naming what is missing."""
    webdriver = pytest.importorskip("selenium.webdriver")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip("the viewer test needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(argument)
    return webdriver.Chrome(service=webdriver.ChromeService(driver), options=options)


COLOURED_PIXELS = """
const image = document.getElementById("image"), canvas = document.createElement("canvas");
canvas.width = image.naturalWidth; canvas.height = image.naturalHeight;
const context = canvas.getContext("2d");
context.drawImage(image, 0, 0);
const rgba = context.getImageData(0, 0, canvas.width, canvas.height).data;
let n = 0;
for (let i = 0; i < rgba.length; i += 4) if (rgba[i] - rgba[i + 2] > 60) n++;
return n;
"""
"""Pixels of the shown slice that are far redder than blue: the lesion colours (a grey slice has none)."""


@pytest.mark.parametrize("service", ["sqlite"], indirect=True)  # the page is the same on either database
def test_the_viewer_in_chromium_logs_in_uploads_scrolls_and_opens_the_report(service, series):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    client, headers, *_ = service
    browser = _chromium_driver()
    artefact = Path(__file__).resolve().parents[1] / "out" / "test-artefacts" / "serve-viewer.png"
    try:
        browser.get(str(client.base_url))
        browser.find_element(By.ID, "token").send_keys("cdx_wrong_token")
        browser.find_element(By.CSS_SELECTOR, "#login-form button").click()
        wait = WebDriverWait(browser, 600, poll_frequency=0.3)
        wait.until(lambda b: b.find_element(By.ID, "login-error").text)
        assert not browser.find_element(By.ID, "app").is_displayed()
        field = browser.find_element(By.ID, "token")
        field.clear()
        field.send_keys(headers["Authorization"].split()[1])
        browser.find_element(By.CSS_SELECTOR, "#login-form button").click()
        wait.until(lambda b: b.find_element(By.ID, "app").is_displayed())

        browser.execute_script("document.getElementById('files').hidden = false")
        browser.find_element(By.ID, "files").send_keys("\n".join(str(p) for p in sorted(series.iterdir())))
        decision = wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "#result-body .decision")).text
        newest = client.get("/studies", headers=headers).json()[0]
        assert newest["upload"] == "16 files: .dcm" and decision == f"Decision: {newest['decision']}"
        assert browser.find_element(By.CSS_SELECTOR, "#result-body ul li").text  # the model's limitations
        wait.until(lambda b: b.find_element(By.ID, "image").get_attribute("src").startswith("blob:"))

        first = browser.find_element(By.ID, "slice-label").text
        frame = browser.find_element(By.ID, "frame")
        frame.click()
        frame.send_keys(Keys.ARROW_DOWN)
        wait.until(lambda b: b.find_element(By.ID, "slice-label").text != first)
        # this service explains no slice (explain_slices=0): Grad-CAM cannot be chosen, the lesion map is shown
        overlay = Select(browser.find_element(By.ID, "overlay"))
        assert [o.get_attribute("value") for o in overlay.options if not o.is_enabled()] == ["gradcam"]
        assert overlay.first_selected_option.get_attribute("value") == "lesion"

        # the quantification beside the result, as the API has it
        record = client.get(f"/studies/{newest['id']}", headers=headers).json()["result"]
        chest = record["quantification"]["chest"]
        assert browser.find_element(By.ID, "category").text == (
            f"{chest['category']}: involvement {chest['involvement_percent']:.1f}%, "
            f"severity score {chest['severity_score']}/30")
        table = browser.find_element(By.ID, "quantification-table").text
        assert "lung volume" in table and "involvement %" in table and f"{chest['severity_score']}/30" in table

        # the slice with the most lesion, from its button: coloured where the segmenter found lesions
        k = record["lesions"]["key_slices"][0]["index"]
        browser.find_element(By.XPATH, f"//span[@id='lesion-slices']/button[text()='{k}']").click()
        wait.until(lambda b: b.find_element(By.ID, "image").get_attribute("alt") == f"slice {k}, lung window, lesion overlay")
        wait.until(lambda b: b.execute_script("return document.getElementById('image').complete"))
        assert browser.execute_script(COLOURED_PIXELS) > 0
        assert browser.find_element(By.ID, "lesion-legend").is_displayed()
        assert "Lesions found on this slice" in browser.find_element(By.ID, "overlay-note").text
        artefact.parent.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(artefact))
        overlay.select_by_value("none")  # toggled off: the grey slice
        wait.until(lambda b: b.find_element(By.ID, "image").get_attribute("alt") == f"slice {k}, lung window")
        wait.until(lambda b: b.execute_script("return document.getElementById('image').complete"))
        assert browser.execute_script(COLOURED_PIXELS) == 0
        assert not browser.find_element(By.ID, "lesion-legend").is_displayed()
        overlay.select_by_value("lesion")
        wait.until(lambda b: b.find_element(By.ID, "image").get_attribute("alt").endswith("lesion overlay"))

        browser.find_element(By.XPATH, "//button[text()='Open report']").click()
        wait.until(lambda b: len(b.window_handles) == 2)
        browser.switch_to.window(browser.window_handles[1])
        assert wait.until(lambda b: "Decision:" in b.find_element(By.TAG_NAME, "body").text)
        errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert [m for m in errors if "401 (Unauthorized)" not in m] == []  # only the wrong token's refusal
    finally:
        browser.quit()
