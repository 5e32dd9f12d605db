"""Fuzz `load_study` with mutated real inputs: every input must end in a Study or in one project error line.

Seeds are real files (a generated DICOM slice, pydicom's CT and JPEG-lossless test files, a
PNG slice, a NIfTI volume, a zip of a series); mutation families damage them the ways files
arrive broken: random byte flips, truncation, junk in header values, a corrupted value
representation, NaN/inf voxels, absurd image dimensions, zip tricks (nesting, ``..`` paths,
bombs). Each input runs in a worker process with a time limit (10 s) and an address-space
limit (2 GB). Outcomes: ``ok`` (a Study), ``refused`` (`ChestDxError`, one line), ``crash``
(any other exception, or a message over several lines), ``hang`` (time limit), ``memory``
(MemoryError or the worker killed). Crashing inputs are saved under ``--corpus``.

Usage:
    python benchmarks/fuzz.py [--n 10000] [--seed 0] [--workers 2] [--corpus tests/fuzz/corpus]
"""

from __future__ import annotations

import argparse
import collections
import io
import multiprocessing as mp
import random
import resource
import shutil
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

TIME_LIMIT_S = 10
MEMORY_LIMIT = 2 * 2**30
FAMILIES = ("flip", "truncate", "header-value", "vr", "nifti-nonfinite", "image-dims", "zip")
SEED_SUFFIX = {"header-value": ".dcm", "vr": ".dcm", "nifti-nonfinite": ".nii.gz", "image-dims": ".png"}
"""The seeds a family applies to (by file suffix); the others take any seed."""


def seeds(folder: Path) -> dict[str, bytes]:
    """Args: folder: scratch folder. Returns: seed name (its suffix matters) -> file bytes."""
    import nibabel as nib
    from PIL import Image
    from pydicom.data import get_testdata_file

    from chestdx.io.sample import write_sample_series

    out = {}
    series = write_sample_series(folder / "series", n_slices=3, size=64, progress=False)
    out["sample.dcm"] = Path(series[0]).read_bytes()
    for name in ("CT_small.dcm", "JPEGLosslessP14SV1_1s_1f_8b.dcm"):
        path = get_testdata_file(name)
        if path:
            out[name] = Path(path).read_bytes()
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 96), dtype=np.uint8)).save(buf, "PNG")
    out["slice.png"] = buf.getvalue()
    nib.save(nib.Nifti1Image(np.full((40, 40, 12), -700, np.int16), np.eye(4)), folder / "v.nii.gz")
    out["volume.nii.gz"] = (folder / "v.nii.gz").read_bytes()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i, path in enumerate(series):
            zf.write(path, f"study/{i}.dcm")
    out["series.zip"] = buf.getvalue()
    return out


def mutate(family: str, name: str, data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One damaged input of a family from a seed. Returns: ``(file name, bytes)``."""
    raw = bytearray(data)
    if family == "flip":
        for _ in range(rng.randint(1, 20)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
    elif family == "truncate":
        raw = raw[:rng.randrange(1, len(raw))]
    elif family == "header-value" and name.endswith(".dcm"):
        # Replace the value of a random decimal/integer string element with junk of the same length.
        starts = [m for m in range(132, min(len(raw), 4000) - 8) if raw[m + 4:m + 6] in (b"DS", b"IS")]
        if starts:
            at = rng.choice(starts) + 6
            n = int.from_bytes(raw[at:at + 2], "little")
            junk = rng.choice([b"0>", b"NaN", b"1e999", b"-", b"\\\\", b"1.5.6", b"\x00\xff"])
            raw[at + 2:at + 2 + n] = junk[:n].ljust(n, b" ")
    elif family == "vr" and name.endswith(".dcm"):
        starts = [m for m in range(132, min(len(raw), 4000) - 6) if raw[m + 4:m + 6].isalpha()
                  and raw[m + 4:m + 6].isupper()]
        if starts:
            at = rng.choice(starts) + 4
            raw[at:at + 2] = bytes(rng.choice(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(2))
    elif family == "nifti-nonfinite":
        import gzip

        import nibabel as nib

        img = nib.Nifti1Image.from_bytes(gzip.decompress(data)) if name.endswith(".nii.gz") else None
        if img is not None:
            vol = np.asarray(img.dataobj, dtype=np.float32)
            vol.flat[rng.randrange(vol.size)] = rng.choice([np.nan, np.inf, -np.inf])
            return name, gzip.compress(nib.Nifti1Image(vol, np.eye(4)).to_bytes())
    elif family == "image-dims" and name.endswith(".png") and len(raw) > 24:
        # Claim absurd dimensions in the IHDR chunk (the CRC then fails, or the decoder is asked for gigapixels).
        raw[16:24] = rng.choice([2**31 - 1, 100000, 0, 1]).to_bytes(4, "big") * 2
    elif family == "zip":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            trick = rng.choice(["nested", "dotdot", "bomb", "many", "empty"])
            if trick == "nested":
                zf.writestr("inner.zip", data if name.endswith(".zip") else b"PK\x03\x04junk")
            elif trick == "dotdot":
                zf.writestr("../../escape.dcm", data)
            elif trick == "bomb":
                with zf.open("big.dcm", "w") as member:
                    for _ in range(64):
                        member.write(bytes(2**20))
            elif trick == "many":
                for i in range(30):
                    zf.writestr(f"s/{i}.dcm", data[:rng.randrange(1, len(data))])
        return "fuzz.zip", buf.getvalue()
    return name, bytes(raw)


def _limit_memory() -> None:
    """Cap the worker's address space at what it has mapped already plus ``MEMORY_LIMIT``."""
    mapped = int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (mapped + MEMORY_LIMIT, mapped + MEMORY_LIMIT))


def _run_one(path: str) -> tuple[str, str]:
    from chestdx.errors import ChestDxError
    from chestdx.io import load_study

    try:
        load_study(path, progress=False)
        return "ok", ""
    except ChestDxError as exc:
        text = str(exc)
        return ("refused", text) if "\n" not in text else ("crash", "multi-line message: " + text[:300])
    except MemoryError:
        return "memory", "MemoryError"
    except Exception as exc:  # a crash is what the harness looks for
        return "crash", f"{type(exc).__name__}: {exc}"[:300]


def run(n: int, seed: int, workers: int, corpus: Path | None, progress: bool = True) -> dict:
    """Fuzz ``n`` inputs; returns counts per family and outcome, the failures and the seconds taken."""
    rng = random.Random(seed)
    counts: dict[str, collections.Counter] = {f: collections.Counter() for f in FAMILIES}
    failures = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        originals = seeds(tmp / "seeds")
        ctx = mp.get_context("fork")  # workers inherit this module, however it was loaded
        pool = ctx.Pool(workers, initializer=_limit_memory, maxtasksperchild=50)
        try:
            for i in range(n):
                family = FAMILIES[i % len(FAMILIES)]
                suffix = SEED_SUFFIX.get(family, "")
                name = rng.choice(sorted(n for n in originals if n.endswith(suffix)))
                file_name, data = mutate(family, name, originals[name], rng)
                case = tmp / f"case{i}"
                case.mkdir()
                path = case / file_name
                path.write_bytes(data)
                job = pool.apply_async(_run_one, (str(path),))
                try:
                    outcome, detail = job.get(TIME_LIMIT_S)
                except mp.TimeoutError:
                    outcome, detail = "hang", f"over {TIME_LIMIT_S} s"
                    pool.terminate()
                    pool = ctx.Pool(workers, initializer=_limit_memory, maxtasksperchild=50)
                except Exception as exc:  # the worker died (killed for memory)
                    outcome, detail = "memory", f"worker died: {exc}"
                counts[family][outcome] += 1
                if outcome in ("crash", "hang", "memory"):
                    failures.append({"case": i, "family": family, "seed": name, "outcome": outcome, "detail": detail})
                    if corpus is not None:
                        corpus.mkdir(parents=True, exist_ok=True)
                        shutil.copy(path, corpus / f"{family}-{i}-{file_name}")
                shutil.rmtree(case, ignore_errors=True)
                if progress and (i + 1) % 200 == 0:
                    print(f"  {i + 1}/{n} inputs, {len(failures)} failures, {time.perf_counter() - start:.0f} s", flush=True)
        finally:
            pool.terminate()
    return {"counts": counts, "failures": failures, "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--corpus", default="tests/fuzz/corpus", help="where crashing inputs are saved")
    args = parser.parse_args()
    result = run(args.n, args.seed, args.workers, Path(args.corpus))
    total = collections.Counter()
    print(f"{args.n} inputs through load_study in {result['seconds']:.0f} s ({args.workers} workers, "
          f"limits {TIME_LIMIT_S} s and {MEMORY_LIMIT // 2**30} GB per input)")
    for family, c in result["counts"].items():
        total.update(c)
        print(f"  {family:16s} " + "  ".join(f"{k} {c[k]}" for k in ("ok", "refused", "crash", "hang", "memory")))
    print("  total            " + "  ".join(f"{k} {total[k]}" for k in ("ok", "refused", "crash", "hang", "memory")))
    for f in result["failures"][:20]:
        print(f"  FAIL {f}")


if __name__ == "__main__":
    main()
