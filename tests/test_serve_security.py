"""The service's security basics (docs/security.md): headers, CORS, path parameters, tokens, body limits in size
and time, zip bombs, and a data folder that is full or read-only."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import sqlite3
import threading
import time
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("sqlalchemy")
import httpx  # noqa: E402
import uvicorn  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from chestdx.serve import Settings, create_app  # noqa: E402
from chestdx.serve import store  # noqa: E402
from chestdx.serve.store import StudyRow, create_token, open_database, requeue_interrupted  # noqa: E402
from chestdx.serve.uploads import INCOMING_FOLDER, clean_incoming  # noqa: E402
from fs_limits import remount, small_disk  # noqa: E402

MAX_UPLOAD_MB = 8


def _app(data_dir: Path, **settings):
    """The app without its lifespan (no worker is needed to answer these requests), and a token's headers."""
    app = create_app(Settings(data_dir=data_dir, max_upload_mb=settings.pop("max_upload_mb", MAX_UPLOAD_MB),
                              explain_slices=0, **settings))
    return app, {"Authorization": f"Bearer {create_token(app.state.sessions, 'tests')}"}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("security")
    app, headers = _app(data_dir)
    (data_dir / "secret.txt").write_text("not for the web")
    yield TestClient(app), headers, data_dir


def test_every_answer_carries_the_security_headers(client):
    web, headers, _ = client
    for path, auth in (("/", {}), ("/healthz", {}), ("/static/viewer.js", {}), ("/studies", headers),
                       ("/studies/" + "0" * 32, headers)):
        answer = web.get(path, headers=auth)
        assert answer.headers["x-content-type-options"] == "nosniff", path
        assert answer.headers["x-frame-options"] == "DENY" and answer.headers["referrer-policy"] == "no-referrer"
        csp = answer.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self';" in csp and "frame-ancestors 'none'" in csp
    assert web.get("/studies", headers=headers).headers["cache-control"] == "no-store"
    assert "cdn.jsdelivr.net" in web.get("/docs").headers["content-security-policy"]  # Swagger UI's own page only


def test_cors_is_off_unless_origins_are_listed(client, tmp_path):
    web, headers, _ = client
    preflight = {"Origin": "https://elsewhere.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization"}
    assert "access-control-allow-origin" not in web.options("/studies", headers=preflight).headers
    assert "access-control-allow-origin" not in web.get("/studies", headers={**headers, "Origin": preflight["Origin"]}).headers
    app, _ = _app(tmp_path, cors_origins=("https://viewer.hospital.example",))
    listed = TestClient(app)
    allowed = listed.options("/studies", headers={**preflight, "Origin": "https://viewer.hospital.example"})
    assert allowed.headers["access-control-allow-origin"] == "https://viewer.hospital.example"
    assert "access-control-allow-origin" not in listed.options("/studies", headers=preflight).headers


@pytest.mark.parametrize("path", ["/studies/..%2Fsecret.txt", "/studies/..%2F..%2Fetc%2Fpasswd/report",
                                  "/studies/%2E%2E/slices/0.png", "/studies/" + "0" * 31 + "/report",
                                  "/studies/" + "A" * 32])
def test_a_study_id_that_is_not_one_is_refused_before_any_file_is_touched(client, path):
    web, headers, data_dir = client
    for method in ("get", "delete"):
        answer = getattr(web, method)(path, headers=headers)
        assert answer.status_code == 404 or (method == "delete" and answer.status_code == 405), (method, path, answer.text)
        assert "not for the web" not in answer.text and "root:" not in answer.text
    assert (data_dir / "secret.txt").is_file()


@pytest.mark.parametrize("path", ["/static/../secret.txt", "/static/..%2F..%2Fsecret.txt", "/static/%2e%2e/%2e%2e/chestdx.db",
                                  "/static//etc/passwd", "/static/..%5C..%5Csecret.txt"])
def test_static_files_never_leave_their_folder(client, path):
    web, *_ = client
    answer = web.get(path)
    assert answer.status_code == 404 and b"not for the web" not in answer.content and b"SQLite" not in answer.content


def test_tokens_are_checked_with_the_same_work_whatever_is_sent(client, monkeypatch):
    web, headers, _ = client
    sessions = web.app.state.sessions
    token = headers["Authorization"].split()[1]
    calls = []
    real_hash, real_compare = store._hash, store.hmac.compare_digest
    monkeypatch.setattr(store, "_hash", lambda t, s: calls.append("hash") or real_hash(t, s))
    monkeypatch.setattr(store.hmac, "compare_digest", lambda a, b: calls.append("compare") or real_compare(a, b))
    for sent, name in ((token, "tests"), (token[:-2] + "xx", None), ("cdx_ffffffffffff_" + "x" * 43, None),
                       ("not-a-token", None), ("cdx_" + "k" * 500 + "_x", None), ("x" * 100_000, None)):
        calls.clear()
        assert store.check_token(sessions, sent) == name
        assert calls == ["hash", "compare"], sent[:20]  # an unknown key id or a malformed token is hashed too


def test_a_zip_bomb_is_refused_before_it_is_unpacked(client):
    web, headers, data_dir = client
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("ct/0001.dcm", "w") as member:
        for _ in range(64):
            member.write(bytes(2**20))  # 64 MiB of zeros in about 64 kB
    answer = web.post("/studies", headers=headers, files={"files": ("bomb.zip", buffer.getvalue(), "application/zip")})
    assert answer.status_code == 400 and "zip bomb" in answer.json()["detail"]
    assert "\n" not in answer.json()["detail"]


def _serve(app) -> tuple[uvicorn.Server, threading.Thread, int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread, port


def _read_answer(connection: socket.socket, start: bytes) -> bytes:
    """Read an HTTP answer to its end (headers and Content-Length bytes), given what already came."""
    connection.settimeout(15)
    data = start
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < int(
            re.search(rb"content-length: (\d+)", data.split(b"\r\n\r\n", 1)[0], re.I).group(1)):
        more = connection.recv(65536)
        if not more:
            break
        data += more
    return data


def test_a_chunked_upload_over_the_limit_is_stopped_while_it_arrives(tmp_path):
    app, headers = _app(tmp_path)
    server, thread, port = _serve(app)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
            # no Content-Length: only counting the bytes as they come can stop it
            client.sendall(b"POST /studies HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                           + f"Authorization: {headers['Authorization']}\r\n".encode()
                           + b"Content-Type: multipart/form-data; boundary=b\r\n\r\n")
            part = b'--b\r\nContent-Disposition: form-data; name="files"; filename="a.zip"\r\n\r\n'
            client.sendall(b"%x\r\n%s\r\n" % (len(part), part))
            chunk, sent, answer = b"\0" * 2**18, 0, b""
            client.settimeout(0.05)
            while sent < 8 * MAX_UPLOAD_MB * 2**20 and not answer:
                try:
                    client.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    sent += len(chunk)
                    answer = client.recv(4096)
                except TimeoutError:
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    break
            answer = _read_answer(client, answer)
        assert answer.startswith(b"HTTP/1.1 413") and b"larger than the limit" in answer, answer[:200]
        assert sent < 2 * MAX_UPLOAD_MB * 2**20  # stopped soon after the limit, not read to the end
        assert sorted(p.name for p in tmp_path.iterdir()) == [INCOMING_FOLDER, "chestdx.db"]
        assert not any((tmp_path / INCOMING_FOLDER).iterdir())
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_a_client_that_sends_too_slowly_gets_408_and_the_service_goes_on(tmp_path):
    app, headers = _app(tmp_path, request_timeout_s=3.0, idle_timeout_s=1.0)
    server, thread, port = _serve(app)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as slow:
            slow.sendall(b"POST /studies HTTP/1.1\r\nHost: x\r\n" + f"Authorization: {headers['Authorization']}\r\n".encode()
                         + b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n--b\r\n")
            started = time.monotonic()
            answer = _read_answer(slow, b"").decode()  # nothing more is sent
            waited = time.monotonic() - started
        assert answer.startswith("HTTP/1.1 408") and "did not arrive in time" in answer
        assert waited < 10
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        assert not any((tmp_path / INCOMING_FOLDER).iterdir())
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _integrity(db: Path) -> str:
    with sqlite3.connect(db) as connection:
        return connection.execute("PRAGMA integrity_check").fetchone()[0]


def test_a_full_or_read_only_data_folder_answers_one_line_and_keeps_the_database_whole(tmp_path):
    with small_disk(tmp_path / "disk", "2m") as disk:
        app, headers = _app(disk, max_upload_mb=64)
        web = TestClient(app)
        small = {"files": ("slice.png", b"\x89PNG\r\n\x1a\n" + bytes(1000), "image/png")}
        assert web.post("/studies", headers=headers, files=small).status_code == 202
        before = sorted(p.name for p in disk.iterdir())
        answer = web.post("/studies", headers=headers, files={"files": ("big.zip", bytes(3 * 2**20), "application/zip")})
        assert answer.status_code == 507 and "\n" not in answer.json()["detail"], answer.text
        assert "full" in answer.json()["detail"] and "No space left" in answer.json()["detail"]
        assert sorted(p.name for p in disk.iterdir()) == before and not any((disk / INCOMING_FOLDER).iterdir())
        assert len(web.get("/studies", headers=headers).json()) == 1

        app.state.sessions.kw["bind"].dispose()  # a file open for writing keeps a remount from making it read-only
        remount(disk, "ro")
        answer = web.post("/studies", headers=headers, files=small)
        assert answer.status_code == 503 and "cannot write its data folder" in answer.json()["detail"], answer.text
        assert web.get("/studies", headers=headers).status_code == 200  # reading goes on
        app.state.sessions.kw["bind"].dispose()
        remount(disk, "rw")
        assert _integrity(disk / "chestdx.db") == "ok"
        assert web.post("/studies", headers=headers, files=small).status_code == 202
        assert len(web.get("/studies", headers=headers).json()) == 2


def test_half_written_uploads_of_a_stopped_process_are_removed_at_the_next_start(tmp_path):
    incoming = tmp_path / INCOMING_FOLDER
    old, fresh = incoming / ("a" * 32), incoming / ("b" * 32)
    for folder in (old, fresh):
        (folder / "upload").mkdir(parents=True)
        (folder / "upload" / "study.zip").write_bytes(b"PK half")
    past = time.time() - 7200
    os.utime(old, (past, past))
    assert clean_incoming(tmp_path) == 1
    assert not old.exists() and fresh.exists()  # it may be another process's upload in progress


def test_a_job_that_keeps_killing_its_process_is_failed_with_the_reason(tmp_path):
    sessions = open_database(f"sqlite:///{tmp_path / 'chestdx.db'}")
    with sessions.begin() as session:
        session.add(StudyRow(id="a" * 32, status="running", attempts=1))
        session.add(StudyRow(id="b" * 32, status="running", attempts=store.MAX_ATTEMPTS))
    assert requeue_interrupted(sessions) == (1, 1)
    with sessions() as session:
        again, given_up = session.get(StudyRow, "a" * 32), session.get(StudyRow, "b" * 32)
    assert again.status == "queued"
    assert given_up.status == "failed" and f"{store.MAX_ATTEMPTS} times" in given_up.error


def test_an_unreachable_database_is_one_line(tmp_path):
    from chestdx.errors import ChestDxError

    with pytest.raises(ChestDxError, match="cannot open the database") as caught:
        open_database("postgresql+psycopg://user:secret@127.0.0.1:1/chestdx")
    assert "secret" not in str(caught.value) and "\n" not in str(caught.value)
    assert json.dumps(str(caught.value))


def test_a_job_whose_results_do_not_fit_fails_with_the_reason(tmp_path):
    from chestdx.errors import ChestDxError
    from chestdx.io.sample import write_sample_series
    from chestdx.serve.jobs import run_study

    with small_disk(tmp_path / "disk", "1m") as disk:
        upload = disk / ("c" * 32) / "upload"
        write_sample_series(upload, n_slices=4, size=128, progress=False)  # about 130 kB; its slices need as much
        with open(disk / "filler", "wb") as filler:  # fill what is left
            with pytest.raises(OSError):
                while True:
                    filler.write(bytes(2**16))
                    filler.flush()
        (disk / "filler").write_bytes(bytes((disk / "filler").stat().st_size - 40_000))  # leave ~40 kB free
        with pytest.raises(ChestDxError, match=r"could not write this study's results \(No space left on device\)"):
            run_study(str(upload.parent), None, None, 0)
        assert not list(upload.parent.glob(".*.partial")) and not (upload.parent / "result.json").exists()
