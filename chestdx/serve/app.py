"""The FastAPI application: upload studies, follow their jobs, view slices with Grad-CAM or lesions, get reports.

Every endpoint but ``/healthz`` (and the static viewer page, which holds no data) needs
``Authorization: Bearer TOKEN`` (``chestdx serve token create NAME``). Logs name studies by
their id only; no uploaded file name is stored or logged. Every request's body is bounded in
size and in time (`RequestLimits`), every response carries the security headers of
`security_headers`, study ids in paths must be ids the service made (32 hex digits), and no
other origin may call the API unless ``cors_origins`` lists it (docs/security.md).
"""

from __future__ import annotations

import asyncio
import errno
import io
import json
import logging
import re
import shutil
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from PIL import Image
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from chestdx.errors import ChestDxError
from chestdx.explain.overlay import overlay_rgb
from chestdx.io.study import Study
from chestdx.models.bundled import list_bundled
from chestdx.outputs.explanations import heatmap_name
from chestdx.outputs.report import ChromiumMissing, html_to_pdf, report_html
from chestdx.outputs.segmentation import overlay_labels
from chestdx.preprocess.intensity import render_8bit
from chestdx.serve.jobs import DURATION_BUCKETS, EXPLANATION_FOLDER, LESION_FILE, LESION_FOLDER, PIXELS_FILE, JobRunner
from chestdx.serve.store import StudyRow, check_token, count_by_status, open_database
from chestdx.serve.uploads import RequestError, StreamedUpload, clean_incoming, multipart_boundary, upload_too_large
from chestdx.writable import check_writable_folder

log = logging.getLogger("chestdx.serve")
STATIC_DIR = Path(__file__).resolve().parent / "static"
# Viewer window names -> the HU presets of chestdx.preprocess.intensity.WINDOWS.
VIEW_WINDOWS = {"lung": "lung", "mediastinum": "mediastinal"}
STUDY_ID = re.compile(r"^[0-9a-f]{32}$")
MAX_WAIT_S = 60.0  # longest ``GET /studies/{id}?wait=``
WAIT_CHECK_S = 0.1  # how often a waiting request looks at its study
"""What a study id looks like (``uuid4().hex``); any other value in a path is refused before a file is touched."""
# The viewer loads only its own script and style; images are its own PNGs (as blob: URLs) and data: URIs
# (the report's figures, which open in a window that inherits this policy).
CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
# FastAPI's /docs and /redoc pages load Swagger UI / ReDoc from its CDN.
DOCS_CSP = ("default-src 'none'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
            "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
            "font-src https://fonts.gstatic.com; img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly; "
            "connect-src 'self'; worker-src blob:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
SECURITY_HEADERS = {"x-content-type-options": "nosniff", "x-frame-options": "DENY", "referrer-policy": "no-referrer",
                    "cross-origin-resource-policy": "same-origin", "permissions-policy": "camera=(), microphone=(), geolocation=()"}
KINDS = ("ct-volume", "ct-slice", "xray")
DRAIN_BYTES = 64 * 2**20
"""After refusing an upload part-way, read (and drop) at most this much more of its body (and at most
a quarter of the upload limit), so that the client, still sending, gets to read the answer instead
of a reset connection, while a client sending far past the limit is not read to its end."""
UPLOAD_BODY = {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["files"], "properties": {
        "files": {"type": "array", "items": {"type": "string", "format": "binary"},
                  "description": "a DICOM zip, DICOM files, a NIfTI, image slices or an X-ray image"},
        "kind": {"type": "string", "enum": list(KINDS), "description": "study kind; detected when left out"},
        "model": {"type": "string", "description": "a bundled model; default: the service's --model, else chosen by the study's kind"}}}}}}


@dataclass
class Settings:
    """How the service runs.

    Args:
        data_dir: folder of the uploaded studies and results (one folder per study) and of
            the default SQLite database.
        db_url: SQLAlchemy database URL; None for ``sqlite:///<data_dir>/chestdx.db``.
        max_upload_mb: largest upload.
        workers: worker processes that run the jobs (each loads the models once).
        explain_slices: top slices that get a Grad-CAM map per study (0: none; each map
            costs seconds of CPU).
        poll_seconds: how often the dispatcher looks at the queue when not woken.
        request_timeout_s: longest time a client may take to send one request's body (an
            upload of ``max_upload_mb`` needs ``max_upload_mb / request_timeout_s`` MB/s).
        idle_timeout_s: longest pause between two parts of a request's body.
        cors_origins: web origins (``https://host:port``) whose pages may call the API from a
            browser; empty (the default): none, only the service's own viewer.
        quantify: segment the lesions of CT studies (lesion-default) and quantify them: lung
            and lesion volumes, involvement, ground-glass / consolidation shares, severity
            score, CT-0..CT-4; the viewer overlays the label map.
        quantify_slices: run the lesion segmenter on at most this many lung slices per study
            (None: all; the others take the labels of the nearest slice run).
        model: the model of uploads that name none (bundled name or checkpoint folder; the
            workers load it at start); None: the default of each study's kind.
    """

    data_dir: Path = Path("chestdx-data")
    db_url: str | None = None
    max_upload_mb: float = 1024.0
    workers: int = 1
    explain_slices: int = 3
    poll_seconds: float = 2.0
    request_timeout_s: float = 900.0
    idle_timeout_s: float = 60.0
    cors_origins: tuple[str, ...] = ()
    quantify: bool = True
    quantify_slices: int | None = None
    model: str | None = None

    @property
    def database_url(self) -> str:
        """Returns: the database URL to connect to."""
        return self.db_url or f"sqlite:///{(Path(self.data_dir) / 'chestdx.db').resolve()}"


def _iso(moment: datetime | None) -> str | None:
    """ISO time in UTC (SQLite gives the stored UTC times back without their zone)."""
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).isoformat()


def _study_summary(row: StudyRow, with_result: bool) -> dict:
    result = json.loads(row.result) if row.result else None
    out = {"id": row.id, "status": row.status, "error": row.error, "kind": row.kind, "model": row.model,
           "upload": row.upload, "attempts": row.attempts,
           "created": _iso(row.created), "started": _iso(row.started), "finished": _iso(row.finished)}
    if with_result:
        out["result"] = result
    elif result is not None:
        out["decision"], out["probabilities"] = result["decision"], result["probabilities"]
    return out


def metrics_text(counts: dict[str, int], runner: JobRunner) -> str:
    """The Prometheus text exposition of the queue and the jobs.

    Args:
        counts: studies per status in the database.
        runner: the job runner (its finished-job counts and durations).

    Returns:
        The text (format version 0.0.4).
    """
    m = runner.metrics
    lines = ["# HELP chestdx_queue_length Studies waiting for a worker.", "# TYPE chestdx_queue_length gauge",
             f"chestdx_queue_length {counts['queued']}",
             "# HELP chestdx_studies Studies in the database by status.", "# TYPE chestdx_studies gauge"]
    lines += [f'chestdx_studies{{status="{s}"}} {n}' for s, n in counts.items()]
    with m.lock:
        lines += ["# HELP chestdx_jobs_finished_total Jobs finished by this process, by outcome.",
                  "# TYPE chestdx_jobs_finished_total counter"]
        lines += [f'chestdx_jobs_finished_total{{status="{s}"}} {n}' for s, n in m.finished.items()]
        lines += ["# HELP chestdx_jobs_failed_total Jobs that failed in this process.",
                  "# TYPE chestdx_jobs_failed_total counter", f"chestdx_jobs_failed_total {m.finished['failed']}",
                  "# HELP chestdx_job_duration_seconds Seconds from a job's start to its end.",
                  "# TYPE chestdx_job_duration_seconds histogram"]
        lines += [f'chestdx_job_duration_seconds_bucket{{le="{b:g}"}} {n}' for b, n in zip(DURATION_BUCKETS, m.bucket_counts)]
        lines += [f'chestdx_job_duration_seconds_bucket{{le="+Inf"}} {m.duration_count}',
                  f"chestdx_job_duration_seconds_sum {m.duration_sum:.3f}",
                  f"chestdx_job_duration_seconds_count {m.duration_count}"]
    return "\n".join(lines) + "\n"


class RequestLimits:
    """ASGI middleware: a request's body must arrive in time, and one declared too large is not read.

    A body whose ``Content-Length`` is over the limit is refused before it is read. A body
    without one (chunked) is counted while it arrives by the upload endpoint itself
    (`chestdx.serve.uploads.StreamedUpload`, the only endpoint that reads a body), which
    refuses it (413) as soon as its files pass the limit.

    Args:
        app: the application.
        max_bytes: largest declared body.
        timeout_s: longest time to receive the whole body.
        idle_timeout_s: longest wait for the next part of the body.
        too_large: the message of a body over ``max_bytes``.
    """

    def __init__(self, app, max_bytes: int, timeout_s: float, idle_timeout_s: float, too_large: str):
        self.app, self.max_bytes, self.too_large = app, max_bytes, too_large
        self.timeout_s, self.idle_timeout_s = timeout_s, idle_timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            return await JSONResponse({"detail": self.too_large}, status_code=413)(scope, receive, send)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        state = {"done": False}

        async def limited_receive():
            if state["done"]:
                return await receive()
            wait = min(deadline - loop.time(), self.idle_timeout_s)
            try:
                message = await asyncio.wait_for(receive(), max(wait, 0.0))
            except asyncio.TimeoutError:
                # An HTTPException raised while the body is read is answered as such (not as a parse error).
                raise HTTPException(408, f"the request's body did not arrive in time (limits: "
                                         f"{self.timeout_s:g} s in all, {self.idle_timeout_s:g} s without data): "
                                         "send it again over a faster link, or ask for a larger --request-timeout") from None
            state["done"] = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, limited_receive, send)


def security_headers(app):
    """ASGI middleware: the headers every response carries (docs/security.md).

    Args:
        app: the application.

    Returns:
        The wrapped application.
    """

    async def wrapped(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        path = scope.get("path", "")

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                extra = dict(SECURITY_HEADERS)
                extra["content-security-policy"] = DOCS_CSP if path in ("/docs", "/redoc") else CSP
                if path.startswith(("/studies", "/metrics")):
                    extra["cache-control"] = "no-store"  # results and lists: never kept by a shared cache
                headers += [(k.encode(), v.encode()) for k, v in extra.items() if k.encode() not in present]
                message = {**message, "headers": headers}
            await send(message)

        await app(scope, receive, send_with_headers)

    return wrapped


def _storage_error(exc: OSError) -> RequestError:
    """The answer to a data folder that cannot be written (full, read-only): 507 or 503, one line."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return RequestError(507, f"the service's data folder is full ({exc.strerror}): nothing of this request was "
                                 "kept; ask the administrator to free space, then send it again")
    return RequestError(503, f"the service cannot write its data folder ({exc.strerror or exc}): nothing of this "
                             "request was kept; ask the administrator")


def create_app(settings: Settings) -> FastAPI:
    """Build the service: database, job runner (started with the app) and routes.

    Args:
        settings: how to run.

    Returns:
        The FastAPI application (serve it with uvicorn, or drive it with TestClient).
    """
    data_dir = check_writable_folder(settings.data_dir, "data folder").resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    sessions = open_database(settings.database_url)
    clean_incoming(data_dir)
    runner = JobRunner(sessions, data_dir, settings.workers, settings.explain_slices, settings.poll_seconds,
                       quantify=settings.quantify, quantify_slices=settings.quantify_slices, preload=settings.model)
    max_bytes = int(settings.max_upload_mb * 2**20)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        runner.start()
        yield
        runner.stop()

    app = FastAPI(title="chestdx", lifespan=lifespan,
                  description="COVID-19 pneumonia / other pneumonia / normal on chest CT and X-ray. "
                              "Research use only, not for clinical use.")
    app.state.runner, app.state.sessions = runner, sessions
    bearer = HTTPBearer(auto_error=False)

    @app.exception_handler(ChestDxError)
    async def user_error(request: Request, exc: ChestDxError) -> JSONResponse:
        status = exc.status if isinstance(exc, RequestError) else 400
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        where = " ".join(str(part) for part in first.get("loc", ()))
        return JSONResponse({"detail": f"{where}: {first.get('msg', 'invalid')}: see /docs for what it accepts"},
                            status_code=422)

    @app.exception_handler(OSError)
    async def storage_error(request: Request, exc: OSError) -> JSONResponse:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM):
            raise exc
        log.error("cannot write the data folder: %s", exc.strerror)
        error = _storage_error(exc)
        return JSONResponse({"detail": str(error)}, status_code=error.status)

    @app.exception_handler(SQLAlchemyError)
    async def database_error(request: Request, exc: SQLAlchemyError) -> JSONResponse:
        log.error("database error: %s", type(exc).__name__)
        reason = getattr(exc, "orig", None) or exc
        return JSONResponse({"detail": f"the service's database cannot be used right now ({type(reason).__name__}: "
                                       f"{' '.join(str(reason).split())[:200]}): try again later or ask the administrator"},
                            status_code=503)

    # outermost first: headers on every answer (errors too), then the body's limits, then CORS when asked for
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_credentials=False,
                           allow_methods=["GET", "POST", "DELETE"], allow_headers=["Authorization"])
    app.add_middleware(RequestLimits, max_bytes=max_bytes + 2**16, timeout_s=settings.request_timeout_s,
                       idle_timeout_s=settings.idle_timeout_s, too_large=str(upload_too_large(settings.max_upload_mb)))
    app.add_middleware(security_headers)

    def authorised(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> str:
        if credentials is None or check_token(sessions, credentials.credentials) is None:
            raise RequestError(401, "missing or unknown API token: send 'Authorization: Bearer TOKEN' "
                                    "(create one with `chestdx serve token create NAME`)")
        return credentials.credentials

    async def drain(stream) -> None:
        """Read and drop the rest of a refused upload's body, up to `DRAIN_BYTES` (a quarter of the limit at most)."""
        dropped, most = 0, min(DRAIN_BYTES, max_bytes // 4)
        try:
            async for chunk in stream:
                dropped += len(chunk)
                if dropped > most:
                    break
        except (ClientDisconnect, HTTPException):  # gone, or too slow (`RequestLimits`): the refusal is answered as it is
            pass

    def get_row(study_id: str) -> StudyRow:
        if not STUDY_ID.match(study_id):  # never a path: ids are 32 hex digits, checked before any file is touched
            raise RequestError(404, f"no study {study_id[:40]!r}: study ids are 32 hex digits; list the studies with "
                                    "GET /studies")
        with sessions() as session:
            row = session.get(StudyRow, study_id)
        if row is None:
            raise RequestError(404, f"no study {study_id!r}: list the studies with GET /studies")
        return row

    def finished_result(study_id: str) -> dict:
        row = get_row(study_id)
        if row.status != "done":
            raise RequestError(409, f"study {study_id} is {row.status}: slices and reports exist once it is done")
        return json.loads(row.result)

    @app.get("/healthz", tags=["service"])
    def healthz() -> dict:
        """Liveness: answers without a token."""
        return {"status": "ok"}

    @app.get("/metrics", tags=["service"], response_class=PlainTextResponse, dependencies=[Depends(authorised)])
    def metrics() -> PlainTextResponse:
        """Prometheus text: queue length, studies by status, finished and failed jobs, job durations."""
        return PlainTextResponse(metrics_text(count_by_status(sessions), runner),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    def upload_options(fields: dict[str, str]) -> tuple[str | None, str | None]:
        kind, model = fields.get("kind") or None, fields.get("model") or None
        if kind is not None and kind not in KINDS:
            raise RequestError(422, f"body kind: should be one of {', '.join(KINDS)} (or left out), not {kind!r}: "
                                    "see /docs for what it accepts")
        if model and model not in list_bundled():
            raise RequestError(400, f"no bundled model {model!r}: use one of {', '.join(list_bundled())}, or leave it out")
        return kind, model

    @app.post("/studies", status_code=202, tags=["studies"], dependencies=[Depends(authorised)],
              openapi_extra={"requestBody": UPLOAD_BODY})
    async def upload_study(request: Request) -> Response:
        """Queue a study; answers at once with its id (the diagnosis runs in a worker).

        Multipart fields: ``files`` (one or more), optional ``kind`` and ``model``. The files are
        written to disk while they arrive and refused (413) as soon as they pass the size limit.
        """
        boundary = multipart_boundary(request.headers.get("content-type"))
        study_id = uuid.uuid4().hex
        upload = StreamedUpload(data_dir / study_id, max_bytes, settings.max_upload_mb, boundary)
        stream = request.stream()
        try:
            async for chunk in stream:
                upload.feed(chunk)
            kind, model = upload_options(upload.fields)
            described = await run_in_threadpool(upload.finish)
            with sessions.begin() as session:
                session.add(StudyRow(id=study_id, status="queued", kind=kind, model=model or settings.model,
                                     upload=described))
        except ClientDisconnect:
            upload.discard()
            log.info("an upload was broken off by its client after %d bytes: nothing kept", upload.received)
            return Response(status_code=400)  # nobody is left to read it
        except BaseException as exc:
            upload.discard()
            if isinstance(exc, RequestError):
                await drain(stream)
            raise
        log.info("study %s queued (%s)", study_id, described)
        runner.wake()
        return JSONResponse({"id": study_id, "status": "queued"}, status_code=202)

    @app.get("/studies", tags=["studies"], dependencies=[Depends(authorised)])
    def list_studies(limit: int = Query(100, ge=1, le=1000)) -> list[dict]:
        """The newest studies first, with status and, when done, decision and probabilities."""
        from sqlalchemy import select

        with sessions() as session:
            rows = session.scalars(select(StudyRow).order_by(StudyRow.created.desc()).limit(limit)).all()
        return [_study_summary(row, with_result=False) for row in rows]

    @app.get("/studies/{study_id}", tags=["studies"], dependencies=[Depends(authorised)])
    async def get_study(study_id: str, wait: float = Query(0, ge=0, le=MAX_WAIT_S, description=(
            "seconds to wait for a queued or running study to finish before answering (0: answer at once); "
            "one request instead of a polling loop"))) -> dict:
        """Status, error and, when done, the result: probabilities, decision, model card summary, limitations, timing."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        row = await run_in_threadpool(get_row, study_id)
        while row.status in ("queued", "running") and loop.time() < deadline:
            # a primary-key read every WAIT_CHECK_S: far cheaper than a client's request, whose token is checked each time
            await asyncio.sleep(min(WAIT_CHECK_S, max(deadline - loop.time(), 0.0)))
            row = await run_in_threadpool(get_row, study_id)
        return _study_summary(row, with_result=True)

    @app.get("/studies/{study_id}/slices/{k}.png", tags=["studies"], dependencies=[Depends(authorised)],
             response_class=Response, responses={200: {"content": {"image/png": {}}}})
    def slice_png(study_id: str, k: int, window: Literal["lung", "mediastinum"] = "lung",
                  overlay: Literal["gradcam", "lesion", "none"] = "none",
                  opacity: float = Query(0.45, ge=0.0, le=1.0)) -> Response:
        """Slice ``k`` of a finished study, windowed, with an overlay.

        ``gradcam``: its Grad-CAM map (the explained key slices only); ``lesion``: the lesion
        segmenter's labels (CT studies; ground-glass opacity yellow, consolidation red).
        """
        record = finished_result(study_id)
        pixels = np.load(data_dir / study_id / PIXELS_FILE, mmap_mode="r")
        if not 0 <= k < len(pixels):
            raise RequestError(404, f"study {study_id} has slices 0..{len(pixels) - 1}, not {k}")
        one = Study(pixels=np.asarray(pixels[k:k + 1], dtype=np.float32), intensity=record["study"]["intensity"])
        image = render_8bit(one, VIEW_WINDOWS[window])[0]
        if overlay == "gradcam":
            explained = (record.get("explanation") or {}).get("slices", [])
            if k not in explained:
                raise RequestError(404, f"slice {k} has no Grad-CAM map: the explained slices are "
                                        f"{', '.join(map(str, explained)) or 'none (the service runs with --explain-slices 0)'}")
            heat = np.load(data_dir / study_id / EXPLANATION_FOLDER / heatmap_name(k))
            image = overlay_rgb(image, heat, alpha=opacity)
        elif overlay == "lesion":
            labels = data_dir / study_id / LESION_FILE
            if not labels.is_file():
                why = ("lesions are segmented in CT studies only" if record["kind"] == "xray"
                       else "the service runs with --no-quantify")
                raise RequestError(404, f"study {study_id} has no lesion map: {why}")
            image = overlay_labels(image, np.asarray(np.load(labels, mmap_mode="r")[k]), alpha=opacity)
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        return Response(buffer.getvalue(), media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/studies/{study_id}/report", tags=["studies"], dependencies=[Depends(authorised)],
             response_class=HTMLResponse, responses={200: {"content": {"text/html": {}, "application/pdf": {}}}})
    def report(study_id: str, format: Literal["html", "pdf"] = "html") -> Response:
        """The study's report as one self-contained HTML page, or as PDF (printed by Chromium on the server)."""
        folder = data_dir / study_id
        html = report_html(study_id, finished_result(study_id), folder / EXPLANATION_FOLDER, folder / LESION_FOLDER)
        if format == "pdf":
            try:
                pdf = html_to_pdf(html)
            except ChromiumMissing as exc:
                raise RequestError(501, str(exc)) from exc
            except ChestDxError as exc:
                raise RequestError(500, str(exc)) from exc
            headers = {"Content-Disposition": f'attachment; filename="chestdx-{study_id}.pdf"'}
            return Response(pdf, media_type="application/pdf", headers=headers)
        return HTMLResponse(html)

    @app.delete("/studies/{study_id}", status_code=204, tags=["studies"], dependencies=[Depends(authorised)])
    def delete_study(study_id: str) -> Response:
        """Remove the study's row and all its files."""
        row = get_row(study_id)
        if row.status == "running":
            raise RequestError(409, f"study {study_id} is running: delete it once it is done or failed")
        with sessions.begin() as session:
            session.delete(session.get(StudyRow, study_id))
        shutil.rmtree(data_dir / study_id, ignore_errors=True)
        log.info("study %s deleted", study_id)
        return Response(status_code=204)

    @app.get("/", include_in_schema=False)
    def viewer() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
