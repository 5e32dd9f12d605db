"""The Ray engine: the same rows on a Ray cluster, through Ray Data with an actor pool (``pip install chestdx[ray]``)."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence

import numpy as np

from chestdx.batch.discover import BatchItem
from chestdx.batch.rows import BatchOptions, score_study, start_worker
from chestdx.errors import ChestDxError


class ScoreStudies:
    """Ray Data callable class: each actor sets itself up once (threads, model), then scores batches of studies."""

    def __init__(self, options: BatchOptions):
        start_worker(options)
        self.options = options

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Args: batch: ``index``, ``path``, ``study_id`` columns. Returns: ``index`` and each row as JSON."""
        rows = [score_study(BatchItem(str(path), str(study_id)), self.options)
                for path, study_id in zip(batch["path"], batch["study_id"])]
        return {"index": batch["index"], "row": np.array([json.dumps(row) for row in rows], dtype=object)}


def _connect(address: str):
    """Connect to (or for ``local`` start) a Ray cluster unless connected. Returns: ``ray``, whether this call connected."""
    try:
        import ray
    except ImportError as exc:
        raise ChestDxError("--engine ray needs Ray: pip install 'chestdx[ray]' (or ray[data])") from exc
    if ray.is_initialized():
        return ray, False
    options = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address == "local":
        ray.init(num_cpus=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                 object_store_memory=256 * 2**20, **options)  # rows are small: keep Ray's shared memory small
    else:
        try:
            ray.init(address=address, **options)
        except ConnectionError as exc:
            raise ChestDxError(f"no Ray cluster at {address!r} ({exc}): start one (`ray start --head`), give its "
                               "address (ray://HOST:10001), or use --address local") from exc
    return ray, True


def run_ray(items: Sequence[BatchItem], options: BatchOptions, workers: int | None, address: str,
            on_row: Callable[[dict], None]) -> tuple[int, int]:
    """Score studies on a Ray cluster with a pool of actors.

    The study list becomes a Ray Dataset (one block per study, so that the actor pool
    shares them out); ``map_batches`` with the `ScoreStudies` class runs on a fixed-size
    actor pool, each actor loading the model once; rows stream back to this process, which
    writes the result file (the same file, resume and order as the local engine). Every
    node must see the studies at the same paths (a shared file system) and have chestdx
    installed.

    Args:
        items: the studies.
        options: the batch options.
        workers: actors in the pool (default: one per CPU of the cluster); each reserves its
            share of the cluster's CPUs (at most one node's) as its threads.
        address: ``auto`` (the cluster this machine belongs to), ``ray://HOST:PORT``, or
            ``local`` (start a one-machine cluster for this run).
        on_row: called with each finished row, in completion order.

    Returns:
        The actors and the threads of each.
    """
    ray, connected = _connect(address)
    try:
        per_node = [n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")]
        total = max(1, int(sum(per_node)))
        workers = min(workers or total, len(items))
        options = dataclasses.replace(options, threads=max(1, min(int(max(per_node)), total // workers)))
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the batch shows its own
        context.print_on_execution_start = False
        dataset = ray.data.from_items([{"index": i, "path": item.path, "study_id": item.study_id}
                                       for i, item in enumerate(items)], override_num_blocks=len(items))
        scored = dataset.map_batches(ScoreStudies, fn_constructor_kwargs={"options": options}, batch_size=1,
                                     compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=options.threads)
        for batch in scored.iter_batches(batch_size=1, batch_format="numpy", prefetch_batches=0):
            for row in batch["row"]:
                on_row(json.loads(row))
        return workers, options.threads
    finally:
        if connected:
            ray.shutdown()
