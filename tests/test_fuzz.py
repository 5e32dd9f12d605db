"""Damaged input never crashes the reader: saved reproducers, and a fixed-seed share of the fuzz harness."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from chestdx.errors import ChestDxError
from chestdx.io import load_study

ROOT = Path(__file__).resolve().parents[1]
CORPUS = sorted((ROOT / "tests" / "fuzz" / "corpus").iterdir())


def _fuzz_module():
    spec = importlib.util.spec_from_file_location("fuzz", ROOT / "benchmarks" / "fuzz.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["fuzz"] = module  # the worker processes find its functions by this name
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", CORPUS, ids=[p.name for p in CORPUS])
def test_saved_reproducers_end_in_a_study_or_one_error_line(path):
    # Each file once crashed, hung or blew up the reader (benchmarks/fuzz.py, seed 0, before the fix).
    try:
        study = load_study(path, progress=False)
    except ChestDxError as exc:
        assert "\n" not in str(exc) and str(exc)
    else:
        assert study.pixels.size > 0


def test_fixed_seed_share_of_the_fuzz_harness_finds_no_failure():
    result = _fuzz_module().run(n=140, seed=1, workers=1, corpus=None, progress=False)
    assert result["failures"] == []
    assert sum(sum(c.values()) for c in result["counts"].values()) == 140
    assert all(c["refused"] > 0 for c in result["counts"].values())  # every family really damages its seeds
