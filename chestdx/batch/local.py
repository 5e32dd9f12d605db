"""The local engine: a pool of worker processes on this machine, each loading the model once."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from chestdx.batch.discover import BatchItem
from chestdx.batch.rows import BatchOptions, score_study, start_worker
from chestdx.errors import ChestDxError


@contextlib.contextmanager
def _spawned_with_threads(threads: int) -> Iterator[None]:
    """Processes spawned inside see ``OMP_NUM_THREADS=threads`` from their start (NumPy's BLAS reads it on import)."""
    before = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        yield
    finally:
        if before is None:
            del os.environ["OMP_NUM_THREADS"]
        else:
            os.environ["OMP_NUM_THREADS"] = before


def run_local(items: Sequence[BatchItem], options: BatchOptions, workers: int, on_row: Callable[[dict], None]) -> None:
    """Score studies in ``workers`` processes; hand each row to ``on_row`` as it finishes.

    Workers are spawned (not forked: the parent's threads and runtimes stay out of them)
    and keep at most two studies each in flight, so an interruption loses little work.

    Args:
        items: the studies.
        options: the batch options (``options.threads`` per worker).
        workers: the number of processes.
        on_row: called in this process with each finished row, in completion order.

    Raises:
        ChestDxError: a worker process died (killed for memory, crashed in native code).
    """
    pending = list(reversed(items))
    context = multiprocessing.get_context("spawn")
    with _spawned_with_threads(options.threads), \
            ProcessPoolExecutor(workers, mp_context=context, initializer=start_worker, initargs=(options,)) as pool:
        running = set()
        try:
            while pending or running:
                while pending and len(running) < 2 * workers:
                    running.add(pool.submit(score_study, pending.pop(), options))
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    on_row(future.result())
        except BrokenProcessPool as exc:
            raise ChestDxError("a worker process died (out of memory, or a crash in a reader): the finished studies "
                               "are saved; run again with --resume and fewer --workers") from exc
        finally:
            for future in running:
                future.cancel()
