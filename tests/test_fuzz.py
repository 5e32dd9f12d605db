"""Damaged input never crashes the reader: saved reproducers, and a fixed-seed share of the fuzz harness."""

from __future__ import annotations

import collections
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
    fuzz = _fuzz_module()
    result = fuzz.run(n=156, seed=1, workers=1, corpus=None, progress=False)
    assert result["failures"] == []
    counts = result["counts"]["load"]
    assert sum(sum(c.values()) for c in counts.values()) == 156
    assert all(c["refused"] > 0 for c in counts.values())  # every family really damages its seeds
    assert sum(c["ok"] for c in counts.values()) > 0


REPRODUCER_ENTRIES = sorted({e for p in CORPUS for e in ("predict", "service", "node") if p.name.startswith(e + "-")})


@pytest.mark.parametrize("entry", REPRODUCER_ENTRIES)
def test_saved_reproducers_of_an_entry_point_end_in_a_result_or_one_line_there(entry):
    # predict: pydicom's own log line about the damaged file came before chestdx's error (two lines on stderr);
    # a Rust decoder's panic on damaged RLE data. node: a decoder's traceback, logged by pydicom, filled the node's
    # log; a NaN SliceThickness could not be written into the results; instances without StudyInstanceUID were
    # accepted though no failure SR could be filed; a patient name pydicom cannot decode kept the failure SR from
    # being made
    paths = [p for p in CORPUS if p.name.startswith(entry + "-")]
    if entry != "predict":
        pytest.importorskip("fastapi" if entry == "service" else "pynetdicom")
    result = _fuzz_module().replay(paths, (entry,))
    assert result["failures"] == []
    total = sum(result["counts"][entry].values(), collections.Counter())
    assert total["ok"] + total["refused"] == len(paths), total


def test_the_same_inputs_through_predict_the_service_and_the_node_end_in_a_result_or_one_line():
    """A fixed-seed share: 2 inputs per mutation family through each entry point as a process (benchmarks/fuzz.py)."""
    pytest.importorskip("fastapi")
    pytest.importorskip("pynetdicom")
    fuzz = _fuzz_module()
    entries = ("predict", "service", "node")
    result = fuzz.run(n=2 * len(fuzz.FAMILIES), seed=1, workers=2, corpus=None, progress=False, entry_points=entries)
    assert result["failures"] == []
    for entry in entries:
        total = sum(result["counts"][entry].values(), collections.Counter())
        assert total["ok"] > 0 and total["refused"] > 0, (entry, total)  # results and refusals both happen
        assert sum(total.values()) == 2 * len(fuzz.FAMILIES)
    node = sum(result["counts"]["node"].values(), collections.Counter())
    assert node["ok"] + node["refused"] >= len(fuzz.FAMILIES)  # at least half the inputs reached the node
    assert result["figures"]["node"]["results_received"] > 0  # results and error SRs came back to the PACS
