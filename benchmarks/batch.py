"""Studies per hour of `chestdx batch`: local process pool vs Ray on the same machine vs a shell loop of `predict`.

Generated 300-slice 512x512 DICOM studies (synthetic, different seeds). Each figure is one
whole command as a user runs it (Python start-up, model loading, worker start-up included):

- shell loop: ``chestdx --quiet predict STUDY --json`` once per study, one after the other;
- local: ``chestdx --quiet batch FOLDER --out R.parquet --workers W`` for each W asked;
- Ray: the same with ``--engine ray --address local`` (starts a one-machine Ray cluster, so
  Ray's start-up is in the figure), and in process on an already running local cluster
  (``ray.init`` first, not timed: what a user of a running cluster pays).

Peak memory: the largest resident set of any process of the command that it waited for (the
batch driver holds no model, so for the local engine this is the largest worker). Ray's
actors are children of Ray's own daemons, so their memory is not measured here. The
machine's load average is printed beside the figures: timings on a loaded machine are inflated.

Usage:
    python benchmarks/batch.py [--studies 6] [--slices 300] [--workers 1 2] [--data DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from chestdx.batch import run_batch
from chestdx.io.sample import write_sample_series
from chestdx.io.tables import read_table
from chestdx.train.loop import cpu_name


def timed(command: list[str]) -> tuple[float, float]:
    """Run a command in a fresh wrapper process. Returns: wall seconds, peak RSS (MB) of its largest process."""
    wrapper = ("import resource, subprocess, sys, time\nt0 = time.perf_counter()\n"
               "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)\n"
               "print(time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)")
    out = subprocess.run([sys.executable, "-c", wrapper, *command], capture_output=True, text=True, check=True)
    wall, peak = out.stdout.split()
    return float(wall), float(peak)


def check_scored(table: Path, n: int) -> None:
    """Refuse a figure from a run that did not score every study."""
    rows = read_table(table)
    failed = [row["error"] for row in rows if row.get("error")]
    if len(rows) != n or failed:
        raise SystemExit(f"{table}: {len(rows)} rows for {n} studies, {len(failed)} failed ({failed[:1]})")


def per_hour(n: int, seconds: float) -> float:
    """Args: n: studies; seconds: wall time. Returns: studies per hour."""
    return n / seconds * 3600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=6)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--data", help="folder to keep the generated studies in (reused when it has them)")
    args = parser.parse_args()
    cli = [sys.executable, "-m", "chestdx.cli", "--quiet"]
    cpus = len(os.sched_getaffinity(0))

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data or tmp) / f"studies-{args.studies}x{args.slices}"
        studies = [data / f"study{seed:02d}" for seed in range(args.studies)]
        for seed, folder in enumerate(studies):
            if not folder.is_dir():
                write_sample_series(folder, n_slices=args.slices, seed=seed, progress=False)
        print(f"{args.studies} generated {args.slices}-slice 512x512 studies; {cpus} CPUs "
              f"({cpu_name()}); load average before: {os.getloadavg()[0]:.2f}")
        rows = []

        t0 = time.perf_counter()
        peak = 0.0
        for folder in studies:
            peak = max(peak, timed([*cli, "predict", str(folder), "--json"])[1])
        loop_s = time.perf_counter() - t0
        rows.append(("shell loop of chestdx predict", loop_s, peak))

        local = {}
        for workers in args.workers:
            out = Path(tmp) / f"local-{workers}.parquet"
            wall, peak = timed([*cli, "batch", str(data), "--out", str(out), "--workers", str(workers)])
            check_scored(out, args.studies)
            local[workers] = wall
            rows.append((f"chestdx batch, {workers} worker(s) x {max(1, cpus // workers)} thread(s)", wall, peak))

        ray_workers = min(local, key=local.get)
        out = Path(tmp) / "ray-local.parquet"
        wall, _ = timed([*cli, "batch", str(data), "--out", str(out), "--workers", str(ray_workers),
                         "--engine", "ray", "--address", "local"])
        check_scored(out, args.studies)
        rows.append((f"batch --engine ray --address local, {ray_workers} actor(s), Ray start-up included", wall, None))

        import ray

        t0 = time.perf_counter()
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, object_store_memory=256 * 2**20)
        ray_start = time.perf_counter() - t0
        summary = run_batch(str(data), Path(tmp) / "ray-running.parquet", workers=ray_workers, engine="ray",
                            progress=False)
        ray.shutdown()
        check_scored(Path(tmp) / "ray-running.parquet", args.studies)
        ray_running = summary.seconds
        rows.append((f"Ray engine on a running cluster, {ray_workers} actor(s) (in process)", ray_running, None))

        print(f"\n{'':68s} {'wall s':>7s} {'studies/h':>9s} {'peak MB':>8s}")
        for label, wall, peak in rows:
            print(f"{label:68s} {wall:7.1f} {per_hour(args.studies, wall):9.0f} {'-' if peak is None else f'{peak:.0f}':>8s}")
        best = local[ray_workers]
        print(f"\nlocal batch ({ray_workers} worker(s)) vs shell loop: {loop_s / best:.2f}x faster")
        print(f"Ray with start-up vs local, same workers: {rows[-2][1] / best:.2f}x the time")
        print(f"Ray on a running cluster vs local, same workers: {ray_running / best:.2f}x the time "
              f"(starting the local Ray cluster took {ray_start:.1f} s)")
        print(f"load average after: {os.getloadavg()[0]:.2f}; peak RSS of this process "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
