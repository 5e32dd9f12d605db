"""Load and faults of a live ``chestdx serve`` (the short form of benchmarks/load.py): concurrent uploads of real
studies, kill -9 of the server and of a worker mid-job, an upload cut off by the kill; nothing lost or half-written."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

ROOT = Path(__file__).resolve().parents[1]


def _load_module():
    spec = importlib.util.spec_from_file_location("load_benchmark", ROOT / "benchmarks" / "load.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["load_benchmark"] = module
    spec.loader.exec_module(module)
    return module


def test_concurrent_real_uploads_and_kill_9_of_server_and_worker_lose_nothing(shared_data, tmp_path):
    load = _load_module()
    studies = load.real_studies(shared_data / "dre-net-demo", 4)  # 4 persons, 9 to 15 real CT slices each
    figures = load.run(studies, tmp_path, workers=1, explain_slices=0, single=False)
    print("\n".join(load.summary(figures)))
    c = figures["concurrent"]
    assert (c["refused"], c["failed"], c["lost"]) == (0, [], 0) and len(c["latency_s"]) == 4
    for fault in ("kill_server", "kill_worker"):
        k = figures[fault]
        assert k["done"] == k["accepted"] == 3, (fault, k)  # every accepted study ended done, after the kill
        assert (k["lost"], k["broken"], k["orphans"]) == ([], [], []), (fault, k)
    assert figures["kill_server"]["workers_left_after_kill"] == 0  # no worker outlives its killed server
    assert figures["kill_server"]["study_folders_added_by_cut_upload"] == 0  # the cut upload left no study
    assert figures["kill_server"]["attempts"] and max(figures["kill_server"]["attempts"].values()) == 2
    assert figures["kill_worker"]["killed_study_status_at_kill"] == "running"
    assert figures["kill_worker"]["killed_study_attempts"] == 2  # run again in a new worker, not failed
