"""Load and fault test of ``chestdx serve``: concurrent uploads of real studies, kill -9 of the server and of a worker.

Against a ``chestdx serve`` process on 127.0.0.1 (its own data folder and SQLite database):

1. single: each study alone, upload to done (after a warm-up study: the workers have loaded their models);
2. concurrent: all studies uploaded at once, one client thread each: latency from the start of
   the upload to the job's end (p50, p95), upload answer times, peak resident memory of the
   service's processes (server and workers, sampled every 0.1 s), failed and lost jobs;
3. kill the server: studies uploaded, ``kill -9`` of the server once one is running (its workers
   follow it), an upload cut off half-way by the same kill, then the service started again;
4. kill a worker: studies uploaded, ``kill -9`` of a worker process while it diagnoses one.

After each fault every accepted study (answered 202) must end ``done`` (a readable result and
slices on disk) or ``failed`` with a reason; the cut-off upload must leave neither a row nor a
study folder; no study folder may lack its row. Targets (issue 20): p95 at most 10x the median
single-study time, peak memory at most 4 GB, 0 jobs lost.

Studies: the 20 patient series of ``../shared/data/covid-ct-volumes-sirm`` (13 to 207 JPG
slices each), each uploaded as a zip.

Usage:
    python benchmarks/load.py [--studies 20] [--workers 2] [--explain-slices 3] [--json out/load.json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fuzz import MemoryWatch, ServiceProcess, wait_for_job  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
PATIENCE_S = 1800.0
POLL_S = 0.5
"""How often each client asks for its study (20 clients polling faster would take CPU from the workers)."""


def real_studies(folder: Path, limit: int) -> list[tuple[str, bytes, int]]:
    """The slice series under ``folder`` (one sub-folder each), zipped.

    Returns:
        ``(name, zip bytes, number of slices)`` of at most ``limit`` studies, in name order.
    """
    studies = []
    for series in sorted(p for p in folder.iterdir() if p.is_dir())[:limit]:
        slices = sorted(p for p in series.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as zf:
            for path in slices:
                zf.write(path, f"{series.name}/{path.name}")
        studies.append((series.name, buffer.getvalue(), len(slices)))
    return studies


def upload(client, headers: dict, data: bytes) -> tuple[int, str | None, float]:
    """POST one zipped study. Returns: ``(HTTP status, study id or None, seconds to the answer)``."""
    started = time.perf_counter()
    answer = client.post("/studies", headers=headers, files={"files": ("study.zip", data, "application/zip")})
    study_id = answer.json().get("id") if answer.status_code == 202 else None
    return answer.status_code, study_id, time.perf_counter() - started


def _client(service: ServiceProcess):
    import httpx

    return httpx.Client(base_url=service.url, timeout=300)


def run_one(service: ServiceProcess, data: bytes) -> tuple[dict, float]:
    """Upload one study and wait for its job. Returns: the study and the seconds from upload to its end."""
    started = time.perf_counter()
    with _client(service) as client:
        status, study_id, _ = upload(client, service.headers, data)
        assert status == 202, status
        study = wait_for_job(client, service.headers, study_id, PATIENCE_S, POLL_S)
    return study, time.perf_counter() - started


def concurrent(service: ServiceProcess, studies: list[tuple[str, bytes, int]]) -> dict:
    """Upload every study at once (one thread each); returns latencies, failures, lost jobs and peak memory."""
    watch = MemoryWatch(service.process.pid, pss=True)
    barrier = threading.Barrier(len(studies))

    def one(data: bytes):
        with _client(service) as client:
            barrier.wait()
            started = time.perf_counter()
            status, study_id, answered = upload(client, service.headers, data)
            if status != 202:
                return {"status": status, "answered": answered}
            study = wait_for_job(client, service.headers, study_id, PATIENCE_S, POLL_S)
            return {"status": status, "answered": answered, "id": study_id, "seconds": time.perf_counter() - started,
                    "state": study["status"] if study else "lost", "error": study and study["error"]}

    started = time.perf_counter()
    with ThreadPoolExecutor(len(studies)) as pool:
        outcomes = list(pool.map(one, [data for _, data, _ in studies]))
    wall = time.perf_counter() - started
    watch.stop()
    latencies = [o["seconds"] for o in outcomes if o.get("state") == "done"]
    return {"n": len(studies), "wall_s": wall, "latency_s": latencies, "answer_s": [o["answered"] for o in outcomes],
            "refused": sum(o["status"] != 202 for o in outcomes), "failed": [o["error"] for o in outcomes
                                                                            if o.get("state") == "failed"],
            "lost": sum(o.get("state") == "lost" for o in outcomes), "peak_rss": watch.overall,
            "peak_pss": watch.overall_pss}


def worker_pids(server_pid: int) -> list[int]:
    """The service's worker processes (children spawned by multiprocessing, not its resource tracker)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        if parent == server_pid and "multiprocessing.spawn" in command:
            pids.append(int(entry.name))
    return pids


def _wait_running(client, headers: dict, ids: list[str], patience_s: float = 600.0) -> str:
    """Wait until one of the studies is running (claimed and handed to the pool); kill at once, before it ends."""
    deadline = time.monotonic() + patience_s
    while time.monotonic() < deadline:
        for study_id in ids:
            if client.get(f"/studies/{study_id}", headers=headers).json()["status"] == "running":
                return study_id
        time.sleep(0.02)
    raise AssertionError("no study started running")


def check_store(service: ServiceProcess, accepted: list[str]) -> dict:
    """After a fault: every accepted study ended done (result and slices readable) or failed with a reason.

    Returns:
        ``done``, ``failed`` (their errors), ``lost`` (not ended), ``broken`` (done without readable
        files), ``orphans`` (study folders without a row), ``attempts`` (study id -> runs).
    """
    out = {"done": 0, "failed": [], "lost": [], "broken": [], "orphans": [], "attempts": {}}
    with _client(service) as client:
        for study_id in accepted:
            study = wait_for_job(client, service.headers, study_id, PATIENCE_S, POLL_S)
            if study is None:
                out["lost"].append(study_id)
                continue
            out["attempts"][study_id] = study["attempts"]
            folder = service.data_dir / study_id
            if study["status"] == "failed":
                out["failed"].append(study["error"])
                continue
            try:
                json.loads((folder / "result.json").read_text())
                pixels = np.load(folder / "pixels.npy")
                assert len(pixels) == study["result"]["study"]["n_slices"]
                assert not list(folder.glob(".*.partial"))
                out["done"] += 1
            except (OSError, ValueError, AssertionError, KeyError) as exc:
                out["broken"].append(f"{study_id}: {type(exc).__name__}: {exc}")
        rows = {s["id"] for s in client.get("/studies?limit=1000", headers=service.headers).json()}
    out["orphans"] = sorted(p.name for p in _study_folders(service.data_dir) if p.name not in rows)
    return out


def _slow_upload(service: ServiceProcess, data: bytes, started: threading.Event) -> None:
    """An upload whose body trickles in, so that a kill catches it half-way; its failure is expected."""
    import httpx

    def body():
        boundary = b'--b\r\nContent-Disposition: form-data; name="files"; filename="study.zip"\r\n\r\n'
        yield boundary
        for i in range(0, len(data), 2**16):
            yield data[i:i + 2**16]
            started.set()
            time.sleep(0.05)
        yield b"\r\n--b--\r\n"

    try:
        httpx.post(service.url + "/studies", headers={**service.headers, "Content-Type": "multipart/form-data; boundary=b"},
                   content=body(), timeout=120)
    except httpx.HTTPError:
        pass


def _alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _study_folders(data_dir: Path) -> list[Path]:
    return [p for p in data_dir.iterdir() if p.is_dir() and len(p.name) == 32]


def kill_server(service: ServiceProcess, studies: list[bytes]) -> dict:
    """Upload studies, kill -9 the server while one runs and one upload is half-way, start it again, check."""
    with _client(service) as client:
        accepted = [upload(client, service.headers, data)[1] for data in studies]
        _wait_running(client, service.headers, accepted)
    folders_before = len(_study_folders(service.data_dir))
    workers = worker_pids(service.process.pid)
    cut = threading.Event()
    slow = threading.Thread(target=_slow_upload, args=(service, bytes(8 * 2**20), cut), daemon=True)
    slow.start()
    cut.wait(60)
    service.kill()
    killed = time.monotonic()
    while any(_alive(pid) for pid in workers) and time.monotonic() - killed < 30:
        time.sleep(0.05)  # the kernel kills its workers with it (PR_SET_PDEATHSIG); else they notice within 2 s
    gone_s = time.monotonic() - killed
    slow.join(timeout=60)
    left = [pid for pid in workers if _alive(pid)]
    service.start()
    out = check_store(service, accepted)
    out["workers_left_after_kill"], out["workers_gone_s"] = len(left), round(gone_s, 2)
    out["study_folders_added_by_cut_upload"] = len(_study_folders(service.data_dir)) - folders_before
    out["accepted"] = len(accepted)
    return out


def kill_worker(service: ServiceProcess, studies: list[bytes]) -> dict:
    """Upload studies, kill -9 the worker process of a running one, check every study ends."""
    with _client(service) as client:
        accepted = [upload(client, service.headers, data)[1] for data in studies]
        victim = _wait_running(client, service.headers, accepted)
        workers = worker_pids(service.process.pid)
        assert workers, "no worker process found"
        os.kill(workers[0], signal.SIGKILL)
        killed_while = client.get(f"/studies/{victim}", headers=service.headers).json()["status"]
    out = check_store(service, accepted)
    out["accepted"], out["killed_study_attempts"] = len(accepted), out["attempts"].get(victim)
    out["killed_study_status_at_kill"] = killed_while
    return out


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (linear interpolation); nan for no values."""
    return float(np.percentile(values, q)) if values else float("nan")


def run(studies: list[tuple[str, bytes, int]], folder: Path, workers: int, explain_slices: int,
        single: bool = True, faults: bool = True) -> dict:
    """All phases against one service. Returns: the figures (see the module docstring)."""
    service = ServiceProcess(folder, workers=workers, extra=("--explain-slices", str(explain_slices)))
    service.start()
    figures: dict = {"workers": workers, "explain_slices": explain_slices, "studies": len(studies),
                     "slices": [n for *_, n in studies], "cpus": os.cpu_count(),
                     "load_average_start": os.getloadavg()}
    try:
        warm, warm_s = run_one(service, studies[0][1])
        assert warm["status"] == "done", warm["error"]
        figures["warm_up_s"] = warm_s
        if single:
            times = []
            for _, data, _ in studies:
                study, seconds = run_one(service, data)
                assert study["status"] == "done", study["error"]
                times.append(seconds)
            figures["single_s"] = times
            figures["single_median_s"] = statistics.median(times)
        result = concurrent(service, studies)
        figures["concurrent"] = {**{k: v for k, v in result.items() if k not in ("latency_s", "answer_s")},
                                 "p50_s": percentile(result["latency_s"], 50),
                                 "p95_s": percentile(result["latency_s"], 95),
                                 "answer_p95_s": percentile(result["answer_s"], 95),
                                 "latency_s": result["latency_s"]}
        if faults:
            few = [data for _, data, _ in studies[: max(3, workers + 1)]]
            figures["kill_server"] = kill_server(service, few)
            figures["kill_worker"] = kill_worker(service, few)
        figures["load_average_end"] = os.getloadavg()
    finally:
        service.stop()
    return figures


def summary(f: dict) -> list[str]:
    """The figures as lines of text, with the issue's targets."""
    c = f["concurrent"]
    lines = [f"service: {f['workers']} worker(s), --explain-slices {f['explain_slices']}, {f['cpus']} CPUs, load "
             f"{f['load_average_start'][0]:.1f} at the start, {f.get('load_average_end', [float('nan')])[0]:.1f} at the end",
             f"studies: {f['studies']} ({min(f['slices'])}-{max(f['slices'])} slices)"]
    if "single_s" in f:
        lines.append(f"single study, upload to done: median {f['single_median_s']:.1f} s "
                     f"(min {min(f['single_s']):.1f}, max {max(f['single_s']):.1f})")
    lines.append(f"{c['n']} concurrent uploads: wall {c['wall_s']:.1f} s, upload to done p50 {c['p50_s']:.1f} s, "
                 f"p95 {c['p95_s']:.1f} s; upload answered p95 {c['answer_p95_s']:.2f} s; refused {c['refused']}, "
                 f"failed {len(c['failed'])}, lost {c['lost']}; peak memory {c['peak_rss'] / 2**30:.2f} GB resident "
                 f"(summed RSS), {c['peak_pss'] / 2**30:.2f} GB proportional (summed PSS)")
    if "single_median_s" in f:
        ratio = c["p95_s"] / f["single_median_s"]
        lines.append(f"target p95 <= 10x single: {ratio:.1f}x -> {'met' if ratio <= 10 else 'MISSED'}; "
                     f"peak <= 4 GB: {'met' if c['peak_pss'] <= 4 * 2**30 else 'MISSED'} (PSS)")
    for fault in ("kill_server", "kill_worker"):
        if fault in f:
            k = f[fault]
            extra = (f", workers left after the kill {k['workers_left_after_kill']} (all gone after "
                     f"{k['workers_gone_s']:.2f} s), study folders added by the cut "
                     f"upload {k['study_folders_added_by_cut_upload']}" if fault == "kill_server"
                     else f", the killed study ran {k['killed_study_attempts']} times")
            lines.append(f"{fault.replace('_', ' ')}: {k['accepted']} accepted, {k['done']} done, {len(k['failed'])} "
                         f"failed with a reason, {len(k['lost'])} lost, {len(k['broken'])} half-written, "
                         f"{len(k['orphans'])} orphan folders{extra}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "covid-ct-volumes-sirm"), help="folder of slice-series folders")
    parser.add_argument("--studies", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2, help="the service's worker processes")
    parser.add_argument("--explain-slices", type=int, default=3, help="the service's Grad-CAM maps per study")
    parser.add_argument("--no-single", action="store_true", help="skip the one-at-a-time reference")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    studies = real_studies(Path(args.data), args.studies)
    if not studies:
        sys.exit(f"no studies under {args.data}")
    with tempfile.TemporaryDirectory(prefix="chestdx-load-") as tmp:
        figures = run(studies, Path(tmp), args.workers, args.explain_slices, single=not args.no_single)
    print("\n".join(summary(figures)))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
