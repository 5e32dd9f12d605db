"""Speed and memory of `chestdx serve`: upload-to-result latency, throughput of concurrent uploads, peak memory.

Starts ``chestdx serve`` (a real uvicorn process with its worker pool) on 127.0.0.1 with a
temporary data folder, no Grad-CAM (``--explain-slices 0``) and no lesion quantification
(``--no-quantify``: the in-process figure is ``diagnose_source`` alone), writes a ``chestdx sample``
study as a zip, and measures:

- in process: ``diagnose_source`` on the same zip with the model already loaded (best of
  ``--repeats``), the time the service's worker spends per study at the least;
- latency: from the start of ``POST /studies`` to ``GET /studies/{id}?wait=60`` answering
  ``done``, with a warm worker (after one warm-up upload), best of ``--repeats``; the
  difference to the in-process time is the service's overhead (upload, queue, worker
  hand-off, the answer). The zip is sent from its file, as a browser or ``curl -F`` streams
  it (httpx given the same bytes in memory spends 2.2-2.9 s on its own multipart encoding
  of 150 MB, a file object 0.6 s); the best run is broken down from the study's created /
  started / finished times and its diagnosis stages. Each upload writes the zip, and the
  worker the viewer's copy of the pixels (~310 MB together), into the page cache: on a VM
  whose memory the guest has not touched yet that runs at ~120 MB/s instead of GB/s, so
  ``--delete-each`` deletes each measured study, letting the next one reuse the memory it
  freed, as on a server whose memory is already in use;
- throughput: ``--concurrent`` uploads sent at once, studies per minute until all are done;
- peak memory: the largest sum of the resident memory of the service and its workers
  (sampled from /proc every 0.2 s) during the concurrent run.

Usage:
    python benchmarks/serve.py [--slices 300] [--workers 2] [--concurrent 8] [--repeats 3] [--delete-each]
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from chestdx.io.sample import write_sample_series
from chestdx.pipeline import diagnose_source
from chestdx.train.loop import cpu_name


def _tree_rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants (Linux /proc)."""
    children = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                children.setdefault(int(fields[1]), []).append(int(entry.name))
            except OSError:
                continue
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo += children.get(current, [])
        try:
            rss_pages = int((Path("/proc") / str(current) / "statm").read_text().split()[1])
            total += rss_pages * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            continue
    return total


def _wait_done(client: httpx.Client, study_id: str) -> tuple[float, dict]:
    """Wait for the study as an API client should: ``?wait=`` requests (the service answers when it is done)."""
    while True:
        study = client.get(f"/studies/{study_id}", params={"wait": 60}).json()
        if study["status"] in ("done", "failed"):
            if study["status"] == "failed":
                raise RuntimeError(study["error"])
            return time.perf_counter(), study


def _breakdown(posted: float, total: float, study: dict) -> dict:
    """Where an upload's time went: the POST, the wait for a worker, the job (its diagnosis stages and the rest), the answer."""
    moment = {k: dt.datetime.fromisoformat(study[k]).timestamp() for k in ("created", "started", "finished")}
    diagnosis = study["result"]["timing_s"]["total"]
    job = moment["finished"] - moment["started"]
    return {"post": posted, "queued": moment["started"] - moment["created"], "job": job, "diagnosis": diagnosis,
            "job_beyond_diagnosis": job - diagnosis, "rest": total - posted - (moment["finished"] - moment["created"]),
            "stages": {k: v for k, v in study["result"]["timing_s"].items() if k != "total"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrent", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--delete-each", action="store_true",
                        help="DELETE each latency study once measured, so that the next upload's files reuse the page "
                             "cache it freed (as on a server whose memory is already in use) instead of fresh memory")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="chestdx-serve-bench-") as tmp:
        tmp = Path(tmp)
        write_sample_series(tmp / "study", n_slices=args.slices, progress=False)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as zf:
            for path in sorted((tmp / "study").iterdir()):
                zf.write(path, path.name)
        (tmp / "study.zip").write_bytes(buffer.getvalue())

        diagnose_source(tmp / "study.zip")  # loads the model
        in_process, in_process_stages = min((_timed(lambda: diagnose_source(tmp / "study.zip")) for _ in range(args.repeats)),
                                            key=lambda run: run[0])

        data = tmp / "data"
        cli = [sys.executable, "-m", "chestdx.cli", "--quiet", "serve", "--data-dir", str(data)]
        token = subprocess.run([*cli, "token", "create", "bench"], capture_output=True, text=True, check=True).stdout.split()[-1]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = subprocess.Popen([*cli, "--port", str(port), "--workers", str(args.workers), "--explain-slices", "0",
                                   "--no-quantify", "--max-upload-mb", "4096"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"},
                                  timeout=600)
            while True:
                try:
                    client.get("/healthz")
                    break
                except httpx.TransportError:
                    time.sleep(0.2)

            def upload(delete: bool = False) -> tuple[float, dict]:
                t0 = time.perf_counter()
                with open(tmp / "study.zip", "rb") as zipped:
                    answer = client.post("/studies", files={"files": ("study.zip", zipped, "application/zip")})
                answer.raise_for_status()
                posted = time.perf_counter() - t0
                done, study = _wait_done(client, answer.json()["id"])
                if delete:
                    client.delete(f"/studies/{study['id']}").raise_for_status()
                return done - t0, _breakdown(posted, done - t0, study)

            upload(args.delete_each)  # warm-up: the workers have started and loaded the model
            latency, parts = min((upload(args.delete_each) for _ in range(args.repeats)), key=lambda run: run[0])

            peak, stop = [0], threading.Event()

            def sample_memory() -> None:
                while not stop.is_set():
                    peak[0] = max(peak[0], _tree_rss_bytes(server.pid))
                    time.sleep(0.2)

            sampler = threading.Thread(target=sample_memory, daemon=True)
            sampler.start()
            t0 = time.perf_counter()
            with ThreadPoolExecutor(args.concurrent) as pool:
                list(pool.map(lambda _: upload(), range(args.concurrent)))
            elapsed = time.perf_counter() - t0
            stop.set()
            sampler.join()
        finally:
            server.terminate()
            server.wait(timeout=60)

    print(f"study: chestdx sample, {args.slices} slices of 512x512, zipped {len(buffer.getvalue()) / 2**20:.1f} MB; "
          f"{os.cpu_count()} CPUs ({cpu_name()}), {args.workers} workers")
    print(f"in process (diagnose_source, model loaded): {in_process:.2f} s ({_stages(in_process_stages)})")
    print(f"service upload -> done (warm, best of {args.repeats}{', each deleted once measured' if args.delete_each else ''}): "
          f"{latency:.2f} s "
          f"(+{latency - in_process:.2f} s over in process)")
    stages = parts.pop("stages")
    print("  of which " + ", ".join(f"{k.replace('_', ' ')} {v:.2f} s" for k, v in parts.items())
          + f" (rest: the answer to the client's waiting request); the worker's diagnosis: {_stages(stages)}")
    print(f"{args.concurrent} concurrent uploads: {elapsed:.1f} s, {60 * args.concurrent / elapsed:.1f} studies/min; "
          f"peak memory of service + workers {peak[0] / 2**30:.2f} GiB")


def _timed(fn) -> tuple[float, dict]:
    """Seconds ``fn`` (a diagnosis) took, and its stage timings."""
    t0 = time.perf_counter()
    diagnosis = fn()
    return time.perf_counter() - t0, diagnosis.timing


def _stages(timing: dict) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in timing.items())


if __name__ == "__main__":
    main()
