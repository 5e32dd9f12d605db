"""Ingest benchmark: read a compressed DICOM series, segment the lungs, select slices.

Writes a synthetic 300-slice 512x512 chest CT as a lossless-compressed DICOM series
(JPEG-LS lossless by default: pydicom has no encoder for the older JPEG Lossless SV1
syntax; both decode through pylibjpeg), then times each stage and prints slices per
second and peak memory:

    .venv/bin/python benchmarks/ingest.py [--slices 300] [--size 512] [--transfer-syntax JPEGLSLossless]

Stages: read (``load_study``), lungs (``study_lung_mask``: classical segmentation in 3-D),
select (every lung filter and slice selection of the recipes on that mask) and prepare
(``prepare_study`` with the default ``InputSpec``: all slices at 224 px, ImageNet
normalisation; and with the preview spec: lung slices). Each stage runs twice: once
timed, once under ``tracemalloc`` for its peak memory (numpy buffers included; torch's
own buffers are not traced); the process's max RSS is printed too.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import torch

from chestdx.io import load_study
from chestdx.io.sample import write_sample_series
from chestdx.preprocess.pipeline import prepare_study, study_lung_mask
from chestdx.preprocess.preview import PREVIEW_SPEC
from chestdx.preprocess.select import filter_dre, filter_kara, filter_min_area, make_groups, select_equidistant, select_middle
from chestdx.preprocess.spec import InputSpec


def _timed(name: str, n_slices: int, func, rows: list):
    """Run ``func`` twice: timed, then with ``tracemalloc`` for its peak memory (tracing slows
    numpy down, so it stays out of the timing). Records (name, seconds, slices/s, peak MiB)."""
    start = time.perf_counter()
    result = func()
    seconds = time.perf_counter() - start
    del result
    tracemalloc.start()
    result = func()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rows.append((name, seconds, n_slices / seconds, peak / 2**20))
    return result


def _select_all_ways(mask) -> int:
    """Every recipe's filter and selection on one mask. Returns: slices chosen in total."""
    n = len(mask)
    chosen = [select_middle(n, 0.5), select_equidistant(n, 15), *make_groups(range(n), 50)]
    for keep in (filter_dre(mask), filter_kara(mask), filter_min_area(mask, 0.25)):
        chosen.append(keep.nonzero()[0])
    return sum(len(c) for c in chosen)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print one line per stage."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--transfer-syntax", default="JPEGLSLossless", help="pydicom keyword or UID of a lossless syntax")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    rows: list = []
    with tempfile.TemporaryDirectory(prefix="chestdx-ingest-") as tmp:
        folder = Path(tmp) / "series"
        start = time.perf_counter()
        write_sample_series(folder, n_slices=args.slices, size=args.size, seed=args.seed, transfer_syntax=args.transfer_syntax, progress=False)
        written = time.perf_counter() - start
        n = args.slices
        study = _timed("read (load_study)", n, lambda: load_study(folder, progress=False), rows)
        mask = _timed("lungs (3-D mask)", n, lambda: study_lung_mask(study), rows)
        _timed("select (all filters + selections)", n, lambda: _select_all_ways(mask), rows)
        _timed("prepare_study (default spec)", n, lambda: prepare_study(study, InputSpec(), lung_mask=mask), rows)
        _timed("prepare_study (preview spec, mask given)", n, lambda: prepare_study(study, PREVIEW_SPEC, lung_mask=mask), rows)
    print(f"chestdx ingest benchmark: {n} slices of {args.size}x{args.size}, {args.transfer_syntax}; "
          f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, python {sys.version.split()[0]}")
    print(f"(writing the series took {written:.1f} s, not counted)")
    print(f"{'stage':44s} {'seconds':>8s} {'slices/s':>10s} {'peak MiB':>9s}")
    for name, seconds, rate, peak in rows:
        print(f"{name:44s} {seconds:8.2f} {rate:10.1f} {peak:9.0f}")
    total = rows[0][1] + rows[1][1] + rows[2][1]
    print(f"{'read + lungs + select':44s} {total:8.2f} {n / total:10.1f}")
    print(f"process peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB; "
          f"lung voxels {int(mask.sum())} ({100 * mask.mean():.1f}% of the volume)")


if __name__ == "__main__":
    main()
