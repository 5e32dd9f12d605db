"""Jobs: the worker processes that diagnose uploaded studies, and the dispatcher that feeds them.

A study's job runs in a ``ProcessPoolExecutor`` whose initializer loads the default CT model
once per process (``load_model`` keeps it), never in a request handler. The dispatcher (a
thread of the web process) claims queued jobs in the database, at most one per worker, and
records each job's end. Everything a job writes lives in the study's folder:
``upload/`` (what was sent), ``pixels.npy`` (the study's slices for the viewer),
``result.json`` (the prediction record), ``explanation/`` (Grad-CAM maps and overlays) and, for
CT, ``lesions.npy`` (the lesion label map the viewer overlays) and ``lesions/`` (the label map
as NIfTI, overlays of the slices with the most lesion, ``quantify.json``).
Files are written under a temporary name and renamed, and the job's row says ``done`` only
after they are all there, so a killed process leaves no half-written result that counts. A
worker process that dies under a job (killed, out of memory) fails none of the jobs it held:
they are queued again, up to ``MAX_ATTEMPTS`` runs each, then failed with the reason.
"""

from __future__ import annotations

import io
import itertools
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from chestdx.errors import ChestDxError
from chestdx.serve.store import MAX_ATTEMPTS, claim_next, finish, interrupted_error, requeue, requeue_interrupted
from chestdx.serve.uploads import upload_source
from chestdx.writable import WRITE_ERRNOS

log = logging.getLogger("chestdx.serve")

PIXELS_FILE = "pixels.npy"
RESULT_FILE = "result.json"
EXPLANATION_FOLDER = "explanation"
LESION_FILE = "lesions.npy"
LESION_FOLDER = "lesions"
EXPLAIN_METHOD = "gradcam"
DURATION_BUCKETS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


def _exit_with_parent(parent: int) -> None:
    """End this worker when the web process is gone (killed): its job is re-queued and re-run at the next start."""
    while os.getppid() == parent:
        time.sleep(2.0)
    os._exit(1)


def _killed_with_parent(parent: int) -> None:
    """Linux: have the kernel SIGKILL this worker the moment the thread of the web process that started it ends.

    The polling thread of `_exit_with_parent` takes up to 2 s, more on a loaded machine; meanwhile
    a restarted service would run the same job twice.
    """
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the polling thread alone
        return
    if os.getppid() != parent:  # it died before the request took effect
        os._exit(1)


def load_worker_models(model: str | None = None) -> None:
    """Pool initializer: load ``model`` (default: the CT default) once in this worker process (others on first use),
    which reuses the memory each study frees (`reuse_freed_memory`)."""
    from chestdx.models.loading import load_model, reuse_freed_memory

    reuse_freed_memory()
    parent = os.getppid()
    _killed_with_parent(parent)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    load_model(model, kind="ct-volume")


def _replace_atomically(target: Path, parts: Iterable[bytes | memoryview]) -> None:
    """Write ``parts`` (in order, each before the next is asked for) to ``target`` through a temporary
    file renamed into place (removed if the write fails)."""
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        with open(partial, "wb") as fh:
            for part in parts:
                fh.write(part)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _npy_header(shape: tuple[int, ...], dtype) -> bytes:
    """The ``.npy`` (version 1.0) header of a C-ordered array of this shape and dtype."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": tuple(shape)})
    return header.getvalue()


def _save_npy_atomically(target: Path, array: np.ndarray) -> None:
    """`_replace_atomically` for a NumPy array in ``.npy`` format, written from the array's own memory.

    Python's file writes, not NumPy's (which report a full disk without an errno), and no copy of
    the array (a study's volume is hundreds of MB).
    """
    array = np.ascontiguousarray(array)
    _replace_atomically(target, [_npy_header(array.shape, array.dtype), memoryview(array.reshape(-1)).cast("B")])


def stored_slices(pixels: np.ndarray, intensity: str) -> Iterator[memoryview]:
    """A study's pixels as the viewer reads them, rounded to int16 (HU) or uint8 (8-bit), a slice at a time.

    Each slice is converted into the same two one-slice buffers (the bytes yielded are overwritten
    by the next slice): no volume-sized copy in the worker, whose fresh memory is slow to touch.
    """
    dtype = viewer_dtype(intensity)
    low, high = np.iinfo(dtype).min, np.iinfo(dtype).max
    rounded, out = np.empty(pixels.shape[1:], np.float32), np.empty(pixels.shape[1:], dtype)
    for image in pixels:
        np.clip(np.rint(image, out=rounded), low, high, out=rounded)
        out[...] = rounded
        yield memoryview(out.reshape(-1)).cast("B")


def viewer_dtype(intensity: str):
    """Args: intensity: ``"hu"`` or ``"8bit"``. Returns: the dtype of the viewer's copy of the pixels."""
    return np.int16 if intensity == "hu" else np.uint8


def _write_viewer_pixels(folder: Path, study) -> None:
    """Write the study's pixels as the viewer reads them (`stored_slices`, ``.npy``) into its folder."""
    header = _npy_header(study.pixels.shape, viewer_dtype(study.intensity))
    _replace_atomically(folder / PIXELS_FILE, itertools.chain([header], stored_slices(study.pixels, study.intensity)))


def _out_of_space(exc: OSError) -> bool:
    """Whether a write failed for want of space or permission (NumPy's ``tofile`` says so without an errno)."""
    return exc.errno in WRITE_ERRNOS or (exc.errno is None and "requested and" in str(exc) and "written" in str(exc))


def run_study(folder: str, kind: str | None, model: str | None, explain_slices: int, quantify: bool = True,
              quantify_slices: int | None = None) -> str:
    """`diagnose_and_write`, with a data folder that cannot be written (full, read-only) as the job's one-line error."""
    try:
        return diagnose_and_write(folder, kind, model, explain_slices, quantify, quantify_slices)
    except OSError as exc:
        if not _out_of_space(exc):
            raise
        raise ChestDxError(f"the service could not write this study's results ({exc.strerror or 'No space left on device'}):"
                           " the administrator must free space in its data folder; upload the study again afterwards") from None


def diagnose_and_write(folder: str, kind: str | None, model: str | None, explain_slices: int, quantify: bool = True,
                       quantify_slices: int | None = None) -> str:
    """Diagnose one uploaded study and write its files (runs in a worker process).

    Args:
        folder: the study's folder (holding ``upload/``).
        kind: study kind override, or None to detect it.
        model: bundled model name, or None for the default of the study's kind.
        explain_slices: how many top slices get a Grad-CAM map (0: none).
        quantify: segment the lesions of a CT study and quantify them (lesion-default).
        quantify_slices: run the lesion segmenter on at most this many lung slices (None: all).

    Returns:
        The result JSON: the prediction record (`chestdx.outputs.prediction.prediction_record`,
        with ``study``, ``explanation``, ``quantification`` and ``lesions`` as they apply).

    Raises:
        ChestDxError: the study cannot be read or diagnosed; the message says why.
    """
    from chestdx.evaluate.serialise import dumps
    from chestdx.outputs.explanations import write_study_explanation
    from chestdx.outputs.prediction import prediction_record
    from chestdx.pipeline import diagnose_source, explain, quantify_lesions

    path = Path(folder)
    for partial in path.glob(".*.partial"):  # left by a run of this job that was killed while writing
        partial.unlink(missing_ok=True)
    with ThreadPoolExecutor(1, thread_name_prefix="chestdx-viewer-pixels") as writer:
        viewer_copy: list[Future] = []  # the viewer's copy of the pixels is converted and written while the study is diagnosed
        try:
            diagnosis = diagnose_source(upload_source(path), model, kind=kind,
                                        on_read=lambda study: viewer_copy.append(writer.submit(_write_viewer_pixels, path, study)))
            viewer_copy[0].result()  # its error (a full disk) is the job's
        except BaseException:
            wait(viewer_copy)
            (path / PIXELS_FILE).unlink(missing_ok=True)  # a failed study keeps no viewer copy
            raise
    study = diagnosis.study
    if quantify and study.kind != "xray":
        from chestdx.outputs.segmentation import write_segmentation

        quantify_lesions(diagnosis, max_slices=quantify_slices)
        _save_npy_atomically(path / LESION_FILE, diagnosis.lesions.labels)
        write_segmentation(study, diagnosis.lesions, diagnosis.quantification, path / LESION_FOLDER)
    explanation_file = None
    if explain_slices > 0:
        explain(diagnosis, EXPLAIN_METHOD, n_slices=explain_slices)
        explanation_file = write_study_explanation(path / EXPLANATION_FOLDER, diagnosis).relative_to(path)
    text = dumps(prediction_record(diagnosis, explanation_file=explanation_file))
    _replace_atomically(path / RESULT_FILE, [text.encode()])
    return text


@dataclass
class JobMetrics:
    """Counts and durations of the jobs this process finished, for ``/metrics``."""

    finished: dict[str, int] = field(default_factory=lambda: {"done": 0, "failed": 0})
    bucket_counts: list[int] = field(default_factory=lambda: [0] * len(DURATION_BUCKETS))
    duration_sum: float = 0.0
    duration_count: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def observe(self, status: str, seconds: float) -> None:
        """Args: status: ``done`` or ``failed``. seconds: the job's duration."""
        with self.lock:
            self.finished[status] += 1
            self.duration_sum += seconds
            self.duration_count += 1
            for i, bound in enumerate(DURATION_BUCKETS):
                if seconds <= bound:
                    self.bucket_counts[i] += 1


class JobRunner:
    """Runs queued studies in a process pool, claiming them from the database.

    Args:
        sessions: the database's session factory.
        data_dir: the folder holding one folder per study.
        workers: worker processes (each loads the models once).
        explain_slices: Grad-CAM maps per study (0: none).
        poll_seconds: how often the queue is checked when nothing wakes the dispatcher.
        quantify: segment and quantify the lesions of CT studies.
        quantify_slices: lesion segmenter's slices per study at most (None: every lung slice).
        preload: the model every worker loads at start (None: the CT default).
    """

    def __init__(self, sessions, data_dir: Path, workers: int, explain_slices: int, poll_seconds: float = 2.0,
                 quantify: bool = True, quantify_slices: int | None = None, preload: str | None = None):
        self.sessions, self.data_dir = sessions, data_dir
        self.workers, self.explain_slices, self.poll_seconds = workers, explain_slices, poll_seconds
        self.quantify, self.quantify_slices, self.preload = quantify, quantify_slices, preload
        self.metrics = JobMetrics()
        self._wake, self._stop = threading.Event(), threading.Event()
        self._in_flight = 0
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Re-queue jobs a stopped process left running, start the workers and the dispatcher."""
        requeued, failed = requeue_interrupted(self.sessions)
        if requeued:
            log.warning("re-queued %d job(s) left running by a stopped process", requeued)
        if failed:
            log.error("failed %d job(s) interrupted %d times", failed, MAX_ATTEMPTS)
        self._pool = self._new_pool()
        self._thread = threading.Thread(target=self._dispatch, name="chestdx-dispatcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop dispatching and the workers; unfinished jobs stay ``running`` and are re-queued at the next start."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def wake(self) -> None:
        """Tell the dispatcher that a job was queued."""
        self._wake.set()

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn: the web process has threads (uvicorn, the dispatcher), which fork would copy half-way.
        return ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=load_worker_models, initargs=(self.preload,))

    def _dispatch(self) -> None:
        while not self._stop.is_set():
            while self._in_flight < self.workers and not self._stop.is_set():
                row = claim_next(self.sessions)
                if row is None:
                    break
                self._submit(row.id, row.kind, row.model, row.attempts)
            self._wake.wait(self.poll_seconds)
            self._wake.clear()

    def _submit(self, study_id: str, kind: str | None, model: str | None, attempts: int = 1) -> None:
        with self._lock:
            self._in_flight += 1
        log.info("study %s started", study_id)
        started = time.monotonic()
        job = (run_study, str(self.data_dir / study_id), kind, model, self.explain_slices, self.quantify,
               self.quantify_slices)
        try:
            future = self._pool.submit(*job)
        except BrokenProcessPool:
            self._pool = self._new_pool()
            future = self._pool.submit(*job)
        future.add_done_callback(lambda f: self._finished(study_id, started, f, attempts))

    def _finished(self, study_id: str, started: float, future: Future, attempts: int = 1) -> None:
        seconds = time.monotonic() - started
        try:
            if future.cancelled():
                return  # shutting down: the job stays running and is re-queued at the next start
            error = future.exception()
            if error is None:
                finish(self.sessions, study_id, result=future.result())
                log.info("study %s done in %.1f s", study_id, seconds)
            elif isinstance(error, ChestDxError):
                finish(self.sessions, study_id, error=str(error))
                log.info("study %s failed: %s", study_id, error)
            elif isinstance(error, BrokenProcessPool):
                # The pool's processes are gone (one was killed or ran out of memory): every job it held lands
                # here. Run each again in a new pool, up to MAX_ATTEMPTS runs; the next submit makes the pool.
                if attempts < MAX_ATTEMPTS and not self._stop.is_set():
                    requeue(self.sessions, study_id)
                    log.error("study %s: its worker process died; queued again (run %d of %d)", study_id,
                              attempts + 1, MAX_ATTEMPTS)
                    return
                finish(self.sessions, study_id, error=interrupted_error(attempts))
                log.error("study %s: its worker process died %d times; failed", study_id, attempts)
            else:
                finish(self.sessions, study_id, error=f"internal error ({type(error).__name__}): the administrator "
                                                      "finds the details in the service's log")
                log.error("study %s failed with an internal error", study_id, exc_info=error)
            if not self._stop.is_set():
                self.metrics.observe("failed" if error is not None else "done", seconds)
        finally:
            with self._lock:
                self._in_flight -= 1
            self._wake.set()
