"""Fuzz chestdx's entry points with mutated real inputs: each must end in a result or in one error line, in time.

Seeds are real files (generated DICOM slices, plain and RLE-compressed, pydicom's CT test
file, a PNG slice, a NIfTI volume, a zip of a series); mutation families damage them the
ways files arrive broken: random byte flips, truncation, junk in header values, a corrupted
value representation, missing tags, a wrong pixel data length, absurd rescale values and
image dimensions, a transfer syntax that does not match the encoding, NaN/inf voxels, PNGs
with absurd dimensions, odd image modes and huge headers, zip tricks (nesting, ``..`` paths,
symlinks, bombs, duplicates, encryption flags). Input ``i`` of a seed is the same bytes for
every entry point:

- ``load``: `load_study` in a worker process (address space capped at what it has mapped
  plus 2 GB): ``ok`` (a Study) or ``refused`` (`ChestDxError`, one line).
- ``predict``: ``chestdx predict FILE --json`` as a process: ``ok`` (exit 0, a JSON record) or
  ``refused`` (exit 2, exactly one line on stderr, no traceback); killed past 10 s or 2 GB.
- ``service``: ``POST /studies`` to a live ``chestdx serve`` on 127.0.0.1: ``refused`` (a 4xx
  with a one-line message, or a job that ends failed with its reason) or ``ok`` (the job ends
  done); a 5xx, an internal error, a traceback in the service's log or a service that stops
  answering is a crash (the service is then started again); 10 s per job.
- ``node``: C-STORE (pynetdicom) of the input read as a dataset to a live ``chestdx node``
  returning to a PACS played by this script: ``refused`` (a failure status, or the series
  failed and its error SR reached the PACS) or ``ok`` (the series was diagnosed); a series
  that fails without an SR, a traceback in the node's log, or a node that stops answering
  C-ECHO is a crash; 10 s per series after it is complete. Inputs that are not DICOM, or
  that pydicom cannot turn into a dataset to send, are ``n/a`` for the node (each input
  gets a new SeriesInstanceUID, when it has one, so that it is a series of its own).

Other outcomes: ``crash``, ``hang`` (time limit), ``memory`` (over 2 GB: MemoryError, the worker
killed, or the process's resident memory over its start-up size plus 2 GB). Inputs that fail
are saved under ``--corpus`` as ``ENTRY-FAMILY-INDEX-NAME``.

Usage:
    python benchmarks/fuzz.py [--n 10000] [--seed 0] [--workers 2] [--entry-points load,predict,service,node]
                              [--n-predict N] [--n-service N] [--n-node N] [--corpus tests/fuzz/corpus]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import gzip
import io
import json
import multiprocessing as mp
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TIME_LIMIT_S = 10
MEMORY_LIMIT = 2 * 2**30
FAMILIES = ("flip", "truncate", "header-value", "vr", "nifti-nonfinite", "image-dims", "zip", "missing-tag",
            "pixel-length", "rescale", "dicom-dims", "transfer-syntax", "image-mode")
SEED_SUFFIX = {"header-value": ".dcm", "vr": ".dcm", "nifti-nonfinite": ".nii.gz", "image-dims": ".png",
               "missing-tag": ".dcm", "pixel-length": ".dcm", "rescale": ".dcm", "dicom-dims": ".dcm",
               "transfer-syntax": ".dcm", "image-mode": ".png"}
"""The seeds a family applies to (by file suffix); the others take any seed."""
ENTRY_POINTS = ("load", "predict", "service", "node")
OUTCOMES = ("ok", "refused", "crash", "hang", "memory", "n/a")
# Tags a CT slice needs, or that chestdx reads; the missing-tag family removes some of them.
DICOM_TAGS = ("Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "SamplesPerPixel",
              "PhotometricInterpretation", "PixelData", "ImagePositionPatient", "ImageOrientationPatient",
              "PixelSpacing", "SliceThickness", "RescaleSlope", "RescaleIntercept", "Modality", "SOPClassUID",
              "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "InstanceNumber", "TransferSyntaxUID")


@dataclass
class Case:
    """One fuzzed input: its index, family, seed and the bytes of the file named ``file_name``."""

    index: int
    family: str
    seed: str
    file_name: str
    data: bytes


def seeds(folder: Path) -> dict[str, bytes]:
    """Args: folder: scratch folder. Returns: seed name (its suffix matters) -> file bytes."""
    import nibabel as nib
    import pydicom
    from PIL import Image
    from pydicom.data import get_testdata_file
    from pydicom.uid import RLELossless

    from chestdx.io.sample import write_sample_series

    out = {}
    series = write_sample_series(folder / "series", n_slices=3, size=64, progress=False)
    out["sample.dcm"] = Path(series[0]).read_bytes()
    rle = pydicom.dcmread(series[1])
    rle.compress(RLELossless)  # encapsulated pixel data, for the pixel-length and transfer-syntax families
    buf = io.BytesIO()
    rle.save_as(buf, enforce_file_format=True)
    out["sample-rle.dcm"] = buf.getvalue()
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


@contextlib.contextmanager
def _lenient_pydicom():
    """Let pydicom read and write invalid values (the damage is the point)."""
    from pydicom import config

    before = (config.settings.reading_validation_mode, config.settings.writing_validation_mode)
    config.settings.reading_validation_mode = config.IGNORE
    config.settings.writing_validation_mode = config.IGNORE
    try:
        yield
    finally:
        config.settings.reading_validation_mode, config.settings.writing_validation_mode = before


def _encode(ds, file_meta, implicit: bool, little: bool) -> bytes:
    """A DICOM file of ``ds`` encoded as given, whatever its file meta says (so they may disagree)."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info

    out = DicomBytesIO()
    out.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(out, file_meta, enforce_standard=False)
    pixels = ds.get_item(0x7FE00010) if 0x7FE00010 in ds else None
    if pixels is not None:  # written by hand below: pydicom refuses damaged encapsulated pixel data
        value = pixels.value if isinstance(pixels.value, bytes) else bytes(pixels.value or b"")
        undefined = getattr(pixels, "is_undefined_length", False) or getattr(pixels, "length", 0) == 0xFFFFFFFF
        del ds[0x7FE00010]
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = little, implicit
    write_dataset(body, ds)
    tail = b""
    if pixels is not None:
        order = "little" if little else "big"
        length = (0xFFFFFFFF if undefined else len(value)).to_bytes(4, order)
        tag = (0x7FE0).to_bytes(2, order) + (0x0010).to_bytes(2, order)
        tail = tag + (length if implicit else b"OB\0\0" + length) + value
        if undefined:  # the sequence delimitation item that ends encapsulated pixel data
            tail += (0xFFFE).to_bytes(2, order) + (0xE0DD).to_bytes(2, order) + bytes(4)
    return out.getvalue() + body.getvalue() + tail


def _set_raw(ds, tag: int, vr: str, value, implicit: bool, little: bool) -> None:
    """Put an element into ``ds`` as raw bytes (written as they are, whether or not they are a valid value)."""
    from pydicom.dataelem import RawDataElement

    if vr == "US":
        raw = int(value).to_bytes(2, "little" if little else "big")
    else:
        raw = str(value).encode()
        raw += b" " * (len(raw) % 2)
    ds[tag] = RawDataElement(tag, vr, len(raw), raw, 0, implicit, little)


def _mutate_dataset(family: str, data: bytes, rng: random.Random) -> bytes:
    """The dataset-level families: damage the elements of a DICOM seed read with pydicom, then write it back."""
    import pydicom
    from pydicom import uid

    with _lenient_pydicom():
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        implicit, little = ds.original_encoding
        implicit, little = bool(implicit), little is not False
        meta = ds.file_meta
        if family == "missing-tag":
            for keyword in rng.sample(DICOM_TAGS, rng.randint(1, 3)):
                for holder in (ds, meta):
                    if keyword in holder:
                        del holder[keyword]
        elif family == "pixel-length" and "PixelData" in ds:
            pixels = bytes(ds.PixelData)
            trick = rng.choice(["cut", "empty", "odd", "double", "one"])
            pixels = {"cut": pixels[:rng.randrange(1, max(len(pixels), 2))], "empty": b"", "odd": pixels + b"\0",
                      "double": pixels * 2, "one": pixels[:1]}[trick]
            ds.PixelData = pixels
        elif family == "rescale":
            junk = ["0", "-1", "1e30", "NaN", "inf", "-inf", "1e-30", "1e308", "", "abc"]
            for keyword, tag in (("RescaleSlope", 0x00281053), ("RescaleIntercept", 0x00281052),
                                 ("WindowCenter", 0x00281050), ("WindowWidth", 0x00281051)):
                if rng.random() < 0.6:
                    _set_raw(ds, tag, "DS", rng.choice(junk), implicit, little)
        elif family == "dicom-dims":
            choices = {0x00280010: ("US", [0, 1, 2, 65535, 4097]), 0x00280011: ("US", [0, 1, 3, 65535, 4097]),
                       0x00280100: ("US", [0, 1, 7, 12, 32, 64]), 0x00280101: ("US", [0, 1, 17, 40]),
                       0x00280002: ("US", [0, 2, 3, 4]), 0x00280103: ("US", [2, 7]),
                       0x00280008: ("IS", ["0", "-1", "1000000", "2", "x"]), 0x00280006: ("US", [1, 7])}
            for tag in rng.sample(sorted(choices), rng.randint(1, 3)):
                vr, values = choices[tag]
                _set_raw(ds, tag, vr, rng.choice(values), implicit, little)
        elif family == "transfer-syntax":
            meta.TransferSyntaxUID = rng.choice([
                uid.ImplicitVRLittleEndian, uid.ExplicitVRLittleEndian, uid.ExplicitVRBigEndian,
                uid.DeflatedExplicitVRLittleEndian, uid.JPEGBaseline8Bit, uid.JPEGLossless, uid.JPEG2000,
                uid.RLELossless, uid.JPEGLSLossless, "1.2.3.4", "1.2.840.10008.1.2.4.999", ""])
        return _encode(ds, meta, implicit, little)


def _mutate_image(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """The image-mode family: the slice in modes and formats a viewer may export, or with a huge header."""
    from PIL import Image, PngImagePlugin

    image = Image.open(io.BytesIO(data))
    trick = rng.choice(["I;16", "I", "F", "CMYK", "P", "1", "LA", "RGBA", "huge-text", "strip", "tiny", "pages"])
    buf = io.BytesIO()
    if trick == "huge-text":
        info = PngImagePlugin.PngInfo()
        info.add_text("Comment", "x" * rng.choice([2**16, 2**22]))
        image.save(buf, "PNG", pnginfo=info)
        return "slice.png", buf.getvalue()
    if trick == "strip":
        image.resize((rng.choice([1, 2]), rng.choice([5000, 20000]))).save(buf, "PNG")
        return "slice.png", buf.getvalue()
    if trick == "tiny":
        image.resize((1, 1)).save(buf, "PNG")
        return "slice.png", buf.getvalue()
    if trick == "pages":
        image.save(buf, "TIFF", save_all=True, append_images=[image.rotate(90)] * rng.randint(1, 5))
        return "slice.tif", buf.getvalue()
    converted = image.convert(trick)
    if trick in ("I", "F", "CMYK"):
        converted.save(buf, "TIFF")
        return "slice.tif", buf.getvalue()
    converted.save(buf, "PNG")
    return "slice.png", buf.getvalue()


def _mutate_zip(name: str, data: bytes, rng: random.Random) -> tuple[str, bytes]:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        trick = rng.choice(["nested", "dotdot", "bomb", "many", "empty", "symlink", "duplicate", "deep", "encrypted"])
        if trick == "nested":
            zf.writestr("inner.zip", data if name.endswith(".zip") else b"PK\x03\x04junk")
        elif trick == "dotdot":
            zf.writestr(rng.choice(["../../escape.dcm", "/abs/escape.dcm", "C:\\escape.dcm", "a/../../b.dcm"]), data)
        elif trick == "bomb":
            with zf.open("big.dcm", "w") as member:
                for _ in range(64):
                    member.write(bytes(2**20))
        elif trick == "many":
            for i in range(30):
                zf.writestr(f"s/{i}.dcm", data[:rng.randrange(1, len(data))])
        elif trick == "symlink":
            link = zipfile.ZipInfo("study/0.dcm")
            link.external_attr = (0o120777 << 16)  # a symbolic link member, pointing outside
            zf.writestr(link, rng.choice(["/etc/passwd", "../../../../etc/shadow", "/dev/zero"]))
            zf.writestr("study/1.dcm", data)
        elif trick == "duplicate":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "Duplicate name": the point
                zf.writestr("study/0.dcm", data)
                zf.writestr("study/0.dcm", data[: len(data) // 2])
        elif trick == "deep":
            zf.writestr("/".join(["d"] * rng.choice([50, 200])) + "/0.dcm", data)
    raw = bytearray(buf.getvalue())
    if trick == "encrypted" or (trick == "nested" and rng.random() < 0.3):
        # claim encryption (general purpose flag bit 0) on every local and central header
        for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
            at = raw.find(signature)
            while at >= 0:
                raw[at + offset] |= 1
                at = raw.find(signature, at + 4)
    return "fuzz.zip", bytes(raw)


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
        return _mutate_zip(name, data, rng)
    elif family in ("missing-tag", "pixel-length", "rescale", "dicom-dims", "transfer-syntax") and name.endswith(".dcm"):
        return name, _mutate_dataset(family, data, rng)
    elif family == "image-mode" and name.endswith(".png"):
        return _mutate_image(data, rng)
    return name, bytes(raw)


def make_case(originals: dict[str, bytes], seed: int, index: int) -> Case:
    """Input ``index`` of run ``seed``: the same bytes whichever entry points run, and however many inputs."""
    rng = random.Random(f"chestdx-fuzz/{seed}/{index}")
    family = FAMILIES[index % len(FAMILIES)]
    suffix = SEED_SUFFIX.get(family, "")
    name = rng.choice(sorted(n for n in originals if n.endswith(suffix)))
    file_name, data = mutate(family, name, originals[name], rng)
    return Case(index, family, name, file_name, data)


# ---------------------------------------------------------------------------------------------------- processes


def _rss(pid: int) -> int:
    """Resident bytes of a process (0 once it is gone)."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * resource.getpagesize()
    except (OSError, IndexError, ValueError):
        return 0


def _pss(pid: int) -> int:
    """Proportional set size of a process (shared pages divided among their users; 0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return 0


def _tree(pid: int) -> list[int]:
    """A process and all its descendants."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                children[int(fields[1])].append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo += children.get(current, [])
    return out


def _tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants."""
    return sum(_rss(p) for p in _tree(pid))


class MemoryWatch:
    """Samples the resident memory of a process tree in a thread; ``peak()`` since the last ``mark()``.

    ``overall`` is the peak of the summed resident sizes (shared library pages counted in every
    process); with ``pss=True`` also ``overall_pss``, the peak of the summed proportional sizes
    (each shared page divided among the processes that map it): the memory the tree really takes.
    """

    def __init__(self, pid: int, every_s: float = 0.1, pss: bool = False):
        self.pid, self.every_s, self.pss = pid, every_s, pss
        self._peak, self.overall, self.overall_pss = 0, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            pids = _tree(self.pid)
            rss = sum(_rss(p) for p in pids)
            self._peak, self.overall = max(self._peak, rss), max(self.overall, rss)
            if self.pss:
                self.overall_pss = max(self.overall_pss, sum(_pss(p) for p in pids))

    def mark(self) -> None:
        self._peak = _tree_rss(self.pid)

    def peak(self) -> int:
        return max(self._peak, _tree_rss(self.pid))

    def stop(self) -> None:
        self._stop.set()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _env() -> dict:
    """The environment of the chestdx processes: this checkout, one BLAS thread each (several run side by side)."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _launch(args: list[str], log: Path) -> subprocess.Popen:
    """Start ``chestdx ARGS`` in its own session, output appended to ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "chestdx.cli", *args], stdout=out, stderr=subprocess.STDOUT,
                                env=_env(), start_new_session=True)


def _wait_ready(process: subprocess.Popen, ready, patience_s: float, what: str, log: Path) -> None:
    """Poll ``ready()`` until it is true; raise when the process exits or ``patience_s`` passes."""
    deadline = time.monotonic() + patience_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}: see {log}")
        if ready():
            return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not answer within {patience_s} s")


class LogWatch:
    """New lines of a process's log since the last look, for tracebacks."""

    def __init__(self, path: Path):
        self.path, self.offset = path, 0

    def new(self) -> str:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                text = fh.read()
        except OSError:
            return ""
        self.offset += len(text)
        return text.decode(errors="replace")


def _traceback_in(text: str) -> str | None:
    if "Traceback (most recent call last)" not in text:
        return None
    lines = [line for line in text.splitlines() if line.strip()]
    at = next(i for i, line in enumerate(lines) if line.startswith("Traceback"))
    last = next((line for line in lines[at + 1:] if line and not line.startswith((" ", "\t"))), lines[-1])
    return f"traceback in the log: {last.strip()[:240]}"


# ---------------------------------------------------------------------------------------------------- load_study


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
    except BaseException as exc:  # a crash is what the harness looks for (a Rust panic is no Exception)
        return "crash", f"{type(exc).__name__}: {exc}"[:300]


def fuzz_load(cases, workers: int, record) -> None:
    """Each case through `load_study` in a pool of worker processes (10 s, 2 GB each)."""
    ctx = mp.get_context("fork")  # workers inherit this module, however it was loaded
    pool = ctx.Pool(workers, initializer=_limit_memory, maxtasksperchild=50)
    try:
        for case, path in cases:
            started = time.perf_counter()
            job = pool.apply_async(_run_one, (str(path),))
            try:
                outcome, detail = job.get(TIME_LIMIT_S)
            except mp.TimeoutError:
                outcome, detail = "hang", f"over {TIME_LIMIT_S} s"
                pool.terminate()
                pool = ctx.Pool(workers, initializer=_limit_memory, maxtasksperchild=50)
            except Exception as exc:  # the worker died (killed for memory)
                outcome, detail = "memory", f"worker died: {exc}"
            record(case, path, outcome, detail, time.perf_counter() - started)
    finally:
        pool.terminate()


# ---------------------------------------------------------------------------------------------------- predict


def predict_process(path: Path, argv: tuple[str, ...] = ("--json",)) -> tuple[str, str, float, int]:
    """Run ``chestdx predict PATH`` as a process under the limits.

    Returns:
        ``(outcome, detail, seconds, peak resident bytes)``.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.monotonic()
        process = subprocess.Popen([sys.executable, "-m", "chestdx.cli", "--quiet", "predict", str(path), *argv],
                                   stdout=out, stderr=err, env=_env(), cwd=path.parent, start_new_session=True)
        peak, killed = 0, None
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                process.returncode = os.waitstatus_to_exitcode(status)
                peak = max(peak, usage.ru_maxrss * 1024)
                break
            rss = _rss(process.pid)
            peak = max(peak, rss)
            if killed is None and rss > MEMORY_LIMIT:
                killed = "memory"
            elif killed is None and time.monotonic() - started > TIME_LIMIT_S:
                killed = "hang"
            if killed:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
            time.sleep(0.02)
        seconds = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if killed == "memory":
        return "memory", f"over {MEMORY_LIMIT // 2**30} GB resident", seconds, peak
    if killed == "hang":
        return "hang", f"over {TIME_LIMIT_S} s", seconds, peak
    lines = stderr.splitlines()
    if "Traceback (most recent call last)" in stderr:
        return "crash", f"exit {process.returncode}, traceback: {lines[-1][:240] if lines else ''}", seconds, peak
    if process.returncode == 0:
        try:
            record = json.loads(stdout)
        except json.JSONDecodeError:
            return "crash", "exit 0 without a JSON record on stdout", seconds, peak
        if "decision" not in record:
            return "crash", "exit 0, the record has no decision", seconds, peak
        return "ok", f"{len(lines)} stderr line(s)" if lines else "", seconds, peak
    if process.returncode == 2 and len(lines) == 1 and lines[0].startswith("chestdx: error: "):
        return "refused", lines[0][16:], seconds, peak
    shown = " | ".join(lines[:3])[:240]
    return "crash", f"exit {process.returncode}, {len(lines)} stderr line(s): {shown}", seconds, peak


def fuzz_predict(cases, workers: int, record) -> None:
    """Each case through ``chestdx predict`` as a process, ``workers`` at a time."""
    from concurrent.futures import ThreadPoolExecutor

    pending: collections.deque = collections.deque()
    with ThreadPoolExecutor(workers) as pool:
        for case, path in cases:  # a few inputs on disk at a time, not all of them
            pending.append((case, path, pool.submit(predict_process, path)))
            while len(pending) > 2 * workers or (pending and pending[0][2].done()):
                case_, path_, future = pending.popleft()
                outcome, detail, seconds, _ = future.result()
                record(case_, path_, outcome, detail, seconds)
        for case_, path_, future in pending:
            outcome, detail, seconds, _ = future.result()
            record(case_, path_, outcome, detail, seconds)


# ---------------------------------------------------------------------------------------------------- service


class ServiceProcess:
    """``chestdx serve`` on 127.0.0.1 in its own process, with a token; started again after a crash.

    Args:
        folder: its data folder and log.
        workers: its worker processes.
        extra: more ``chestdx serve`` arguments.
    """

    def __init__(self, folder: Path, workers: int = 1, extra: tuple[str, ...] = ()):
        self.folder, self.workers, self.extra = folder, workers, extra
        self.data_dir, self.log = folder / "data", folder / "serve.log"
        folder.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen | None = None
        self.token = self._token()
        self.starts = 0

    def _token(self) -> str:
        done = subprocess.run([sys.executable, "-m", "chestdx.cli", "serve", "--data-dir", str(self.data_dir),
                               "token", "create", "fuzz"], capture_output=True, text=True, env=_env(), check=True)
        return done.stdout.split()[-1]

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"}

    def start(self, patience_s: float = 120.0) -> None:
        """Start it and wait until ``/healthz`` answers."""
        import httpx

        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = _launch(["serve", "--data-dir", str(self.data_dir), "--port", str(self.port),
                                "--workers", str(self.workers), *self.extra], self.log)
        self.starts += 1

        def ready() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(self.url + "/healthz", timeout=2).status_code == 200
            return False

        _wait_ready(self.process, ready, patience_s, "chestdx serve", self.log)

    def alive(self) -> bool:
        import httpx

        try:
            return self.process.poll() is None and httpx.get(self.url + "/healthz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        """SIGKILL the server (its workers follow it within seconds)."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL to the whole process group."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def wait_for_job(client, headers: dict, study_id: str, patience_s: float, every_s: float = 0.05) -> dict | None:
    """Poll a study every ``every_s`` until its job ended. Returns: the study, or None past ``patience_s``."""
    deadline = time.monotonic() + patience_s
    while time.monotonic() < deadline:
        study = client.get(f"/studies/{study_id}", headers=headers).json()
        if study["status"] in ("done", "failed"):
            return study
        time.sleep(every_s)
    return None


_JOB_CRASHES = ("internal error", "stopped while diagnosing")


def fuzz_service(cases, folder: Path, warm_up: Path, record) -> dict:
    """Each case uploaded to a live ``chestdx serve``, one at a time. Returns: the service's figures."""
    import httpx

    service = ServiceProcess(folder, extra=("--explain-slices", "0", "--max-upload-mb", "64"))
    service.start()
    watch = MemoryWatch(service.process.pid)
    logs = LogWatch(service.log)
    client = httpx.Client(base_url=service.url, timeout=60)
    figures = {"starts": 0, "peak_rss": 0}
    try:
        answer = client.post("/studies", headers=service.headers, files={"files": (warm_up.name, warm_up.read_bytes())})
        warm = wait_for_job(client, service.headers, answer.json()["id"], 300)  # the worker loads the models
        assert warm and warm["status"] == "done", warm
        baseline = watch.peak()
        logs.new()
        for case, path in cases:
            watch.mark()
            started = time.perf_counter()
            outcome, detail = _service_case(client, service, case, path)
            if outcome != "hang" and watch.peak() > baseline + MEMORY_LIMIT:
                outcome, detail = "memory", f"service resident memory {watch.peak() / 2**30:.1f} GB"
            trace = _traceback_in(logs.new())
            if trace and outcome not in ("crash", "hang", "memory"):
                outcome, detail = "crash", trace
            record(case, path, outcome, detail, time.perf_counter() - started)
            if not service.alive():
                service.stop()
                service.start()
                client.close()
                client = httpx.Client(base_url=service.url, timeout=60)
                watch.stop()
                watch = MemoryWatch(service.process.pid)
    finally:
        client.close()
        watch.stop()
        figures.update(starts=service.starts, peak_rss=watch.overall)
        service.stop()
    return figures


def _service_case(client, service: ServiceProcess, case: Case, path: Path) -> tuple[str, str]:
    import httpx

    try:
        answer = client.post("/studies", headers=service.headers, files={"files": (case.file_name, case.data)})
    except httpx.HTTPError as exc:
        return "crash", f"upload failed: {type(exc).__name__}: {exc}"[:240]
    try:
        body = answer.json()
    except ValueError:
        return "crash", f"HTTP {answer.status_code} without a JSON body"
    if answer.status_code >= 500:
        return "crash", f"HTTP {answer.status_code}: {body.get('detail')}"[:240]
    if 400 <= answer.status_code < 500:
        detail = str(body.get("detail", ""))
        if not detail or "\n" in detail:
            return "crash", f"HTTP {answer.status_code} without a one-line message"
        return "refused", f"HTTP {answer.status_code}: {detail}"[:240]
    study = wait_for_job(client, service.headers, body["id"], TIME_LIMIT_S)
    if study is None:
        wait_for_job(client, service.headers, body["id"], 120)  # let it end, so the next case starts clean
        return "hang", f"job not ended {TIME_LIMIT_S} s after the upload"
    if study["status"] == "done":
        return "ok", study["result"]["decision"]
    error = study["error"] or ""
    if not error or "\n" in error or any(words in error for words in _JOB_CRASHES):
        return "crash", f"job failed: {error[:200]}"
    return "refused", f"job failed: {error}"[:240]


# ---------------------------------------------------------------------------------------------------- node


class NodeProcess:
    """``chestdx node`` on 127.0.0.1 in its own process, sending results to a PACS played by this process.

    Args:
        folder: its store and log.
        quiet_seconds: ``--complete-after``.
    """

    def __init__(self, folder: Path, quiet_seconds: float = 0.3):
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
        from pynetdicom.sop_class import Comprehensive3DSRStorage, SecondaryCaptureImageStorage, SegmentationStorage

        self.folder, self.quiet_seconds = folder, quiet_seconds
        self.store, self.log = folder / "store", folder / "node.log"
        folder.mkdir(parents=True, exist_ok=True)
        self.received: list = []
        pacs = AE(ae_title="FUZZPACS")
        for sop_class in (Comprehensive3DSRStorage, SecondaryCaptureImageStorage, SegmentationStorage):
            pacs.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES)
        pacs.maximum_pdu_size = 0
        self.pacs = pacs.start_server(("127.0.0.1", 0), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self._on_store)])
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def _on_store(self, event) -> int:
        self.received.append(str(event.dataset.SOPClassUID))
        return 0x0000

    def start(self, patience_s: float = 120.0) -> None:
        self.port = _free_port()
        self.process = _launch(["node", "--store-dir", str(self.store), "--port", str(self.port),
                                "--return-to", f"127.0.0.1:{self.pacs.server_address[1]}:FUZZPACS",
                                "--complete-after", str(self.quiet_seconds)], self.log)
        self.starts += 1
        _wait_ready(self.process, self.echo, patience_s, "chestdx node", self.log)

    def echo(self) -> bool:
        from pynetdicom import AE
        from pynetdicom.sop_class import Verification

        ae = AE(ae_title="FUZZER")
        ae.add_requested_context(Verification)
        ae.acse_timeout = ae.network_timeout = 10
        assoc = ae.associate("127.0.0.1", self.port, ae_title="CHESTDX")
        if not assoc.is_established:
            return False
        try:
            status = assoc.send_c_echo()
            return bool(status) and status.Status == 0
        finally:
            assoc.release()

    def send(self, ds) -> int | None:
        """C-STORE one dataset. Returns: its status, None when no association or context took it."""
        from pydicom import uid
        from pynetdicom import AE
        from pynetdicom.sop_class import CTImageStorage

        ae = AE(ae_title="FUZZER")
        ae.maximum_pdu_size = 0
        ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = 30
        for syntax in (uid.ImplicitVRLittleEndian, uid.ExplicitVRLittleEndian, uid.ExplicitVRBigEndian,
                       uid.DeflatedExplicitVRLittleEndian, uid.JPEGBaseline8Bit, uid.JPEGLossless, uid.JPEGLosslessSV1,
                       uid.JPEG2000Lossless, uid.JPEG2000, uid.RLELossless, uid.JPEGLSLossless):
            ae.add_requested_context(CTImageStorage, syntax)
        assoc = ae.associate("127.0.0.1", self.port, ae_title="CHESTDX")
        if not assoc.is_established:
            raise ConnectionError("the node refused or dropped the association")
        try:
            status = assoc.send_c_store(ds)
            return int(status.Status) if status and "Status" in status else -1
        finally:
            if assoc.is_established:
                assoc.release()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def close(self) -> None:
        self.stop()
        self.pacs.shutdown()


def node_dataset(case: Case):
    """The case as a dataset to send (with a SeriesInstanceUID of its own), or None when it is not one."""
    import pydicom
    from pydicom.uid import generate_uid

    if not case.file_name.endswith(".dcm"):
        return None
    with _lenient_pydicom():
        try:
            ds = pydicom.dcmread(io.BytesIO(case.data), force=True)
            if "SeriesInstanceUID" in ds:
                ds.SeriesInstanceUID = generate_uid(entropy_srcs=[f"fuzz-series-{case.index}-{case.seed}"])
            if "SOPInstanceUID" in ds:
                ds.SOPInstanceUID = generate_uid(entropy_srcs=[f"fuzz-instance-{case.index}-{case.seed}"])
            str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)  # what the sender needs to pick a context
        except Exception:  # noqa: BLE001 (pydicom cannot make a dataset of it: nothing to send)
            return None
    return ds


def fuzz_node(cases, folder: Path, record) -> dict:
    """Each case sent by C-STORE to a live ``chestdx node``, one at a time. Returns: the node's figures."""
    node = NodeProcess(folder)
    node.start()
    watch = MemoryWatch(node.process.pid)
    logs = LogWatch(node.log)
    baseline = watch.peak()
    figures = {"starts": 0, "peak_rss": 0, "sent": 0, "results_received": 0}
    try:
        for case, path in cases:
            ds = node_dataset(case)
            if ds is None:
                record(case, path, "n/a", "not a dataset pydicom can send", 0.0)
                continue
            watch.mark()
            started = time.perf_counter()
            outcome, detail = _node_case(node, ds)
            figures["sent"] += outcome != "n/a"
            if outcome not in ("hang", "n/a") and watch.peak() > baseline + MEMORY_LIMIT:
                outcome, detail = "memory", f"node resident memory {watch.peak() / 2**30:.1f} GB"
            trace = _traceback_in(logs.new())
            if trace and outcome not in ("crash", "hang", "memory"):
                outcome, detail = "crash", trace
            if outcome != "n/a" and not node.echo():
                outcome, detail = "crash", f"the node stopped answering C-ECHO ({detail})"[:240]
            record(case, path, outcome, detail, time.perf_counter() - started)
            if node.process.poll() is not None or not node.echo():
                node.stop()
                node.start()
                watch.stop()
                watch = MemoryWatch(node.process.pid)
    finally:
        watch.stop()
        figures.update(starts=node.starts, peak_rss=watch.overall, results_received=len(node.received))
        node.close()
    return figures


def _node_case(node: NodeProcess, ds) -> tuple[str, str]:
    from chestdx.node.collector import STATUS, _safe_name

    with _lenient_pydicom():
        try:
            status = node.send(ds)
        except ConnectionError as exc:
            return "crash", str(exc)
        except Exception as exc:  # noqa: BLE001 (the sender could not encode it, or no context takes it)
            return "n/a", f"not sendable: {type(exc).__name__}: {exc}"[:240]
        if status != 0:
            return "refused", f"C-STORE status 0x{status & 0xFFFF:04X}" if status is not None else "no status"
        series = node.store / _safe_name(str(ds.SeriesInstanceUID))
    deadline = time.monotonic() + node.quiet_seconds + 1.0 + TIME_LIMIT_S
    while time.monotonic() < deadline:
        if (series / STATUS).is_file():
            with contextlib.suppress(json.JSONDecodeError):
                result = json.loads((series / STATUS).read_text())
                break
        time.sleep(0.05)
    else:
        return "hang", f"no status {TIME_LIMIT_S} s after the series was complete"
    if result["state"] == "done":
        return "ok", f"{result.get('decision')}, results {result.get('store_statuses')}"
    error, report = str(result.get("error", "")), str(result.get("failure_report", ""))
    sent = result.get("failure_report_sent") or {}  # destination -> "sent" or why not (the fuzz node has one)
    if not report.startswith("results/") or not sent or any(how != "sent" for how in sent.values()):
        return "crash", f"failed without an error SR sent back ({report}; {sent}): {error}"[:240]
    if not error or "\n" in error:
        return "crash", "failed without a one-line reason"
    return "refused", f"error SR: {error}"[:240]


# ---------------------------------------------------------------------------------------------------- the run


def run(n: int, seed: int, workers: int, corpus: Path | None, progress: bool = True,
        entry_points: tuple[str, ...] = ("load",), n_per_entry: dict[str, int] | None = None) -> dict:
    """Fuzz the entry points with inputs ``0 .. n-1`` (fewer for an entry point in ``n_per_entry``).

    Args:
        n: inputs (each entry point takes the first ``n_per_entry.get(entry, n)`` of them).
        seed: the run's seed.
        workers: parallel workers for ``load`` and ``predict``.
        corpus: folder to save failing inputs in, or None.
        progress: print progress.
        entry_points: which of `ENTRY_POINTS`.
        n_per_entry: entry point -> how many inputs.

    Returns:
        ``counts`` (entry point -> family -> Counter of outcomes), ``seconds`` (entry point ->
        family -> seconds), ``failures`` (dicts), ``entry_seconds``, ``figures`` (service and
        node: starts, peak memory) and ``seconds`` in all.
    """
    unknown = set(entry_points) - set(ENTRY_POINTS)
    if unknown:
        raise ValueError(f"unknown entry points {sorted(unknown)}: use {', '.join(ENTRY_POINTS)}")

    def inputs(originals, entry):
        return (make_case(originals, seed, i) for i in range(min(n, (n_per_entry or {}).get(entry, n))))

    return _fuzz(inputs, entry_points, workers, corpus, progress)


def replay(paths: list[Path], entry_points: tuple[str, ...] = ENTRY_POINTS, workers: int = 1,
           progress: bool = False) -> dict:
    """Feed saved inputs (a corpus's files, named ``ENTRY-FAMILY-INDEX-NAME`` or ``FAMILY-INDEX-NAME``) to entry points.

    Returns:
        What `run` returns.
    """
    cases = []
    for i, path in enumerate(paths):
        name = path.name
        for entry in ENTRY_POINTS:
            if name.startswith(entry + "-"):
                name = name[len(entry) + 1:]
        family = next(f for f in sorted(FAMILIES, key=len, reverse=True) if name.startswith(f + "-"))
        file_name = name[len(family) + 1:].split("-", 1)[-1]
        cases.append(Case(i, family, path.name, file_name, path.read_bytes()))
    return _fuzz(lambda originals, entry: iter(cases), entry_points, workers, None, progress)


def _fuzz(inputs, entry_points: tuple[str, ...], workers: int, corpus: Path | None, progress: bool) -> dict:
    """Run each entry point over ``inputs(seed files, entry point)`` (Cases); see `run`."""
    counts = {e: {f: collections.Counter() for f in FAMILIES} for e in entry_points}
    seconds = {e: collections.defaultdict(float) for e in entry_points}
    failures: list[dict] = []
    entry_seconds, figures = {}, {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="chestdx-fuzz-") as tmp:
        tmp = Path(tmp)
        originals = seeds(tmp / "seeds")
        warm_up = tmp / "seeds" / "warm-up.zip"
        warm_up.write_bytes(originals["series.zip"])
        for entry in entry_points:
            done = [0]
            entry_start = time.perf_counter()

            def cases(entry=entry):
                for case in inputs(originals, entry):
                    folder = tmp / entry / f"case{case.index}"
                    folder.mkdir(parents=True)
                    path = folder / case.file_name
                    path.write_bytes(case.data)
                    yield case, path

            def record(case, path, outcome, detail, took, entry=entry, entry_start=entry_start):
                counts[entry][case.family][outcome] += 1
                seconds[entry][case.family] += took
                if outcome in ("crash", "hang", "memory"):
                    failures.append({"entry": entry, "case": case.index, "family": case.family, "seed": case.seed,
                                     "outcome": outcome, "detail": detail})
                    if corpus is not None:
                        corpus.mkdir(parents=True, exist_ok=True)
                        shutil.copy(path, corpus / f"{entry}-{case.family}-{case.index}-{case.file_name}")
                shutil.rmtree(path.parent, ignore_errors=True)
                done[0] += 1
                if progress and done[0] % 100 == 0:
                    print(f"  {entry}: {done[0]} inputs, {sum(f['entry'] == entry for f in failures)} "
                          f"failures, {time.perf_counter() - entry_start:.0f} s", flush=True)

            if entry == "load":
                fuzz_load(cases(), workers, record)
            elif entry == "predict":
                fuzz_predict(cases(), workers, record)
            elif entry == "service":
                figures["service"] = fuzz_service(cases(), tmp / "service", warm_up, record)
            else:
                figures["node"] = fuzz_node(cases(), tmp / "node", record)
            entry_seconds[entry] = time.perf_counter() - entry_start
    return {"counts": counts, "seconds": seconds, "failures": failures, "entry_seconds": entry_seconds,
            "figures": figures, "total_seconds": time.perf_counter() - start}


def report(result: dict, n_per_entry: dict[str, int]) -> str:
    """The counts per entry point and family, with the seconds taken, as text."""
    lines = [f"limits: {TIME_LIMIT_S} s and {MEMORY_LIMIT // 2**30} GB per input; "
             f"{result['total_seconds']:.0f} s in all"]
    for entry, by_family in result["counts"].items():
        total = collections.Counter()
        lines.append(f"{entry}: {n_per_entry[entry]} inputs in {result['entry_seconds'][entry]:.0f} s"
                     + (f"; {json.dumps(_figures(result['figures'][entry]))}" if entry in result["figures"] else ""))
        for family, c in by_family.items():
            total.update(c)
            n = sum(c.values())
            lines.append(f"  {family:16s} " + "  ".join(f"{k} {c[k]}" for k in OUTCOMES)
                         + f"   {result['seconds'][entry][family]:.1f} s" + (f" ({result['seconds'][entry][family] / n:.2f} s each)" if n else ""))
        lines.append("  total            " + "  ".join(f"{k} {total[k]}" for k in OUTCOMES))
    for f in result["failures"][:30]:
        lines.append(f"  FAIL {f}")
    return "\n".join(lines)


def _figures(figures: dict) -> dict:
    return {k: (f"{v / 2**30:.2f} GB" if k == "peak_rss" else v) for k, v in figures.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000, help="inputs (for every entry point unless --n-ENTRY says)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="parallel load_study workers and predict processes")
    parser.add_argument("--entry-points", default=",".join(ENTRY_POINTS))
    for entry in ENTRY_POINTS[1:]:
        parser.add_argument(f"--n-{entry}", type=int, help=f"inputs for {entry} (the first ones of --n)")
    parser.add_argument("--corpus", default="tests/fuzz/corpus", help="where failing inputs are saved")
    parser.add_argument("--replay", nargs="+", metavar="FILE", help="feed these saved inputs instead (e.g. the corpus)")
    args = parser.parse_args()
    entry_points = tuple(e for e in args.entry_points.split(",") if e)
    if args.replay:
        result = replay([Path(p) for p in args.replay], entry_points, args.workers)
        print(report(result, {e: len(args.replay) for e in entry_points}))
        return
    n_per_entry = {e: min(args.n, getattr(args, f"n_{e}", None) or args.n) for e in entry_points}
    result = run(args.n, args.seed, args.workers, Path(args.corpus), entry_points=entry_points, n_per_entry=n_per_entry)
    print(report(result, n_per_entry))


if __name__ == "__main__":
    main()
