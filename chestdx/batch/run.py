"""``chestdx batch``: score every study of a source into one result table, resumable, locally or on Ray."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from chestdx.batch.discover import BatchItem, discover_studies
from chestdx.batch.rows import BatchOptions, table_columns
from chestdx.errors import ChestDxError
from chestdx.io.tables import read_table, table_format, write_table
from chestdx.models.bundled import resolve_model_path
from chestdx.models.loading import classifier_card

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")


def available_cpus() -> int:
    """Returns: the CPUs this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


WORKER_MEMORY = 2 * 2**30
"""Memory to allow per worker: a worker scoring 300-slice 512x512 studies peaked at 1.8 GB (`benchmarks/batch.py`)."""


def available_memory() -> int | None:
    """Returns: bytes of memory available to new processes (``MemAvailable``), or None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def default_workers(cpus: int, memory: int | None) -> int:
    """One single-threaded worker per CPU, as many as the available memory holds.

    A study spends about half its time in single-threaded steps (reading DICOM, the lung
    mask, resizing), so processes, not threads, fill the CPUs: on 2 CPUs two one-thread
    workers scored more studies per hour than one two-thread worker in each of three runs
    of `benchmarks/batch.py` (docs/benchmarks.md).
    Each worker holds one study at a time, up to `WORKER_MEMORY`.

    Args:
        cpus: the CPUs to fill.
        memory: bytes of memory available (None: not limited).

    Returns:
        The number of workers.
    """
    return max(1, min(cpus, memory // WORKER_MEMORY if memory is not None else cpus))


class ResultWriter:
    """Keeps the result rows in discovery order and rewrites the table atomically every few studies.

    Args:
        path: the result file.
        items: the studies of this run, in discovery order.
        kept_rows: rows already in the file (resume); rows of studies that are not in
            ``items`` stay at the end, in their order.
        every_rows: rewrite after this many new rows...
        every_seconds: ...or when this long has passed since the last rewrite.
    """

    def __init__(self, path: Path, items: Sequence[BatchItem], kept_rows: list[dict], every_rows: int = 16,
                 every_seconds: float = 30.0):
        self.path = path
        self.order = {item.path: i for i, item in enumerate(items)}
        self.rows = {row["path"]: row for row in kept_rows if row["path"] in self.order}
        self.others = [row for row in kept_rows if row["path"] not in self.order]
        self.every_rows, self.every_seconds = every_rows, every_seconds
        self.unwritten, self.written_at = 0, time.monotonic()

    def add(self, row: dict) -> None:
        """Args: row: a finished study's row (rewrites the file when due)."""
        self.rows[row["path"]] = row
        self.unwritten += 1
        if self.unwritten >= self.every_rows or time.monotonic() - self.written_at >= self.every_seconds:
            self.flush()

    def flush(self) -> None:
        """Write every row so far: this run's studies in discovery order, then kept rows of other studies."""
        rows = sorted(self.rows.values(), key=lambda row: self.order[row["path"]]) + self.others
        if rows:
            write_table(self.path, rows, table_columns(rows))
        self.unwritten, self.written_at = 0, time.monotonic()


@dataclass
class BatchSummary:
    """What a batch run did.

    Args:
        out: the result file.
        studies: studies found in the source.
        skipped: studies already in the file (``--resume``).
        scored: studies scored in this run.
        failed: of those, studies whose row holds an error.
        seconds: wall time of the scoring.
        engine: ``local`` or ``ray``.
        workers: worker processes (or Ray actors).
        threads: threads per worker.
    """

    out: Path
    studies: int
    skipped: int
    scored: int
    failed: int
    seconds: float
    engine: str
    workers: int
    threads: int


def _progress_bar(total: int, enabled: bool):
    """A tqdm bar with studies/s and ETA on a terminal's stderr; None otherwise."""
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="scoring", unit="study", file=sys.stderr)


def run_batch(source: str, out, *, model: str | None = None, explain: str | None = None, maps_dir=None,
              explain_slices: int = 3, workers: int | None = None, resume: bool = False, engine: str = "local",
              address: str = "auto", progress: bool = True) -> BatchSummary:
    """Score every study of a source into one Parquet or CSV table, one row per study.

    A study that fails gets a row with its error; the batch goes on. The table is
    rewritten atomically every few studies, so an interrupted run keeps what it finished,
    and ``resume=True`` scores only the studies not in it yet: the file then equals an
    uninterrupted run's (same rows, in discovery order; timings aside).

    Args:
        source: see `discover_studies` (folder, ``ADAPTER:PATH``, CSV with a ``path`` column).
        out: the result file, ``.parquet`` or ``.csv``.
        model: bundled model name or checkpoint folder; None for the default of each study's kind.
        explain: explanation method (e.g. ``"gradcam"``) or None; needs ``maps_dir``.
        maps_dir: heat maps go to ``maps_dir/<study id>/``.
        explain_slices: slices explained per study.
        workers: worker processes (Ray: actors); default one per CPU as memory allows (see `default_workers`).
        resume: keep the rows already in ``out`` and score only the other studies.
        engine: ``"local"`` (process pool) or ``"ray"``.
        address: the Ray cluster (``auto``, ``ray://HOST:PORT``, ``local``); Ray only.
        progress: show a progress bar (on a terminal).

    Returns:
        The summary.

    Raises:
        ChestDxError: bad output name or folder, output exists without ``resume`` (or is not
            a batch result), no studies, unknown model or adapter, ``explain`` without ``maps_dir``.
    """
    out = Path(out).expanduser()
    table_format(out)
    if engine not in ENGINES:
        raise ChestDxError(f"unknown engine {engine!r}: use one of {', '.join(ENGINES)}")
    if out.exists() and not resume:
        raise ChestDxError(f"{out} exists: pass --resume to add the studies it lacks, or give a new file")
    if bool(explain) != bool(maps_dir):
        raise ChestDxError("--explain and --maps go together: --explain METHOD --maps DIR writes heat maps to DIR")
    if workers is not None and workers < 1:
        raise ChestDxError("--workers must be at least 1")
    if not out.parent.is_dir():
        raise ChestDxError(f"folder {out.parent} does not exist: create it, or write the results elsewhere")
    if model is not None:
        classifier_card(resolve_model_path(model), model)  # an unknown, broken or wrong model: before any work
    items = discover_studies(source)
    kept = read_table(out) if out.exists() else []
    if kept and "path" not in kept[0]:
        raise ChestDxError(f"{out} has no 'path' column: it is not a chestdx batch result; give a new file")
    done = {row["path"] for row in kept}
    todo = [item for item in items if item.path not in done]
    writer = ResultWriter(out, items, kept)
    cpus = available_cpus()
    n_workers = max(1, min(workers or default_workers(cpus, available_memory()), len(todo) or 1))
    options = BatchOptions(model=model, explain=explain, maps_dir=str(maps_dir) if maps_dir else None,
                           explain_slices=explain_slices, threads=max(1, cpus // n_workers))
    bar = _progress_bar(len(todo), progress)
    threads, scored, failed = options.threads, 0, 0

    def on_row(row: dict) -> None:
        nonlocal scored, failed
        scored += 1
        failed += row.get("error") is not None
        writer.add(row)
        if bar is not None:
            bar.update(1)

    start = time.perf_counter()
    try:
        if todo and engine == "local":
            from chestdx.batch.local import run_local

            run_local(todo, options, n_workers, on_row)
        elif todo:
            from chestdx.batch.ray_engine import run_ray

            n_workers, threads = run_ray(todo, options, workers, address, on_row)
    finally:
        writer.flush()
        if bar is not None:
            bar.close()
    return BatchSummary(out=out, studies=len(items), skipped=len(items) - len(todo), scored=scored, failed=failed,
                        seconds=time.perf_counter() - start, engine=engine, workers=n_workers, threads=threads)
