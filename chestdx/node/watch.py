"""Folder mode: DICOM files dropped into a folder become received instances, for sites without DICOM networking.

The folder is polled (no file-system events: they miss files on network shares and need a
further dependency). A file is taken once its size and modification time have not changed
for ``settle_seconds``; it is read with pydicom and, when it is a complete DICOM image
instance, moved into the node's store (`SeriesCollector.add_file`), where the series is
gathered by its SeriesInstanceUID and processed after the quiet period exactly as instances
received over the network are. A file that cannot be read, or holds no image, may still be
being copied: it is tried again until it has been unchanged for ``give_up_seconds``, then
moved to ``<store>/rejected/<id>.<suffix>`` beside ``<id>.json`` (its path in the folder and
why), and logged without its name (file names often carry a patient's). The node never stops
over a file.

Moving what was taken out of the folder is what makes a restart safe: files still in the
folder are taken again, series in the store without ``status.json`` are processed again,
and nothing taken is taken twice. Hidden files and names ending in ``.part``, ``.tmp``,
``.partial``, ``.crdownload`` or ``~`` (copies in progress) are left alone, as are links.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import os
import shutil
import stat
import time
import warnings
from pathlib import Path

import pydicom
from pydicom.uid import MediaStorageDirectoryStorage

from chestdx.node.collector import SeriesCollector

log = logging.getLogger("chestdx.node")
IN_PROGRESS_SUFFIXES = (".part", ".tmp", ".partial", ".crdownload", "~")
REJECTED = "rejected"


def instance_problem(ds: pydicom.Dataset) -> str | None:
    """Why a parsed file is not a complete DICOM image instance, or None when it is one.

    Args:
        ds: the file as pydicom read it (with pixel data).

    Returns:
        The reason, or None. Pixel data shorter than rows x columns x samples x bytes x frames
        (pydicom reads a cut-off file without complaint) counts as incomplete.
    """
    if ds.get("SOPClassUID") == MediaStorageDirectoryStorage or "DirectoryRecordSequence" in ds:
        return "a DICOMDIR (an index of files, not an image)"
    for keyword in ("SeriesInstanceUID", "SOPInstanceUID"):
        if not str(ds.get(keyword, "")).strip():
            return f"a DICOM file without {keyword}"
    if "PixelData" not in ds:
        return "a DICOM file without pixel data (not an image, or cut off)"
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax is not None and not syntax.is_compressed and int(ds.get("BitsAllocated", 0)) >= 8:
        expected = (int(ds.get("Rows", 0)) * int(ds.get("Columns", 0)) * int(ds.get("SamplesPerPixel", 1))
                    * (int(ds.BitsAllocated) // 8) * int(ds.get("NumberOfFrames", 1) or 1))
        if len(ds.PixelData) < expected:
            return f"pixel data cut off ({len(ds.PixelData)} of {expected} bytes)"
    return None


class FolderWatcher:
    """Takes the DICOM files dropped into a folder into a node's store.

    Args:
        watch_dir: the folder (searched recursively).
        collector: the node's store.
        settle_seconds: a file is read once unchanged for this long.
        give_up_seconds: a file that is no complete DICOM image is rejected once unchanged for this long.
        clock: seconds (monotonic); replaced in tests.
    """

    def __init__(self, watch_dir: str | Path, collector: SeriesCollector, *, settle_seconds: float = 2.0,
                 give_up_seconds: float = 10.0, clock=time.monotonic):
        self.watch_dir = Path(watch_dir)
        self.collector = collector
        self.settle_seconds = settle_seconds
        self.give_up_seconds = max(give_up_seconds, settle_seconds)
        self.clock = clock
        self._seen: dict[Path, tuple[tuple[int, int], float]] = {}  # path -> (size, mtime), when first seen so
        self._stuck: dict[Path, tuple[int, int]] = {}  # could not be moved: left until it changes
        self._ids = itertools.count(1)

    def _files(self):
        for root, dirs, names in os.walk(self.watch_dir):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in names:
                if name.startswith(".") or name.endswith(IN_PROGRESS_SUFFIXES):
                    continue
                path = Path(root) / name
                try:
                    st = path.lstat()
                except OSError:  # gone meanwhile
                    continue
                if stat.S_ISREG(st.st_mode):
                    yield path, (st.st_size, st.st_mtime_ns)

    def poll(self) -> dict[str, int]:
        """Look at the folder once; take the files that have settled.

        Returns:
            How many files were ``taken`` into the store and ``rejected``.
        """
        now = self.clock()
        counts = {"taken": 0, "rejected": 0}
        present = set()
        for path, key in self._files():
            present.add(path)
            if self._stuck.get(path) == key:
                continue
            self._stuck.pop(path, None)
            seen = self._seen.get(path)
            if seen is None or seen[0] != key:
                self._seen[path] = (key, now)
                continue
            if now - seen[1] < self.settle_seconds:
                continue
            outcome = self._take(path, key, unchanged_for=now - seen[1])
            if outcome is not None:
                counts[outcome] += 1
                self._seen.pop(path, None)
        for path in set(self._seen) - present:
            del self._seen[path]
        return counts

    def _take(self, path: Path, key: tuple[int, int], unchanged_for: float) -> str | None:
        """Move one settled file into the store, or reject it. Returns: "taken", "rejected" or None (later)."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path)
            problem = instance_problem(ds)
        except pydicom.errors.InvalidDicomError:
            problem = "not a DICOM file (no DICM prefix after the 128-byte preamble)"
        except Exception as exc:  # whatever a damaged file makes the parser raise
            problem = f"a DICOM file pydicom cannot read ({type(exc).__name__})"
        try:
            if problem is not None:
                if unchanged_for < self.give_up_seconds:
                    return None  # perhaps still being copied
                self._reject(path, problem)
                return "rejected"
            st = path.stat()
            if (st.st_size, st.st_mtime_ns) != key:
                return None  # changed while being read
            self.collector.add_file(str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID), path)
            return "taken"
        except OSError as exc:
            log.error("a dropped file could not be moved out of %s: %s (left there until it changes)",
                      self.watch_dir, exc.strerror)
            self._stuck[path] = key
            return None

    def _reject(self, path: Path, problem: str) -> None:
        folder = self.collector.store_dir / REJECTED
        folder.mkdir(parents=True, exist_ok=True)
        stamp = dt.datetime.now(dt.timezone.utc)
        name = f"{stamp:%Y%m%dT%H%M%S}-{os.getpid()}-{next(self._ids):04d}"
        suffix = path.suffix if path.suffix[1:].isalnum() and len(path.suffix) <= 8 else ""
        report = {"file": str(path.relative_to(self.watch_dir)), "error": problem,
                  "rejected_at": stamp.isoformat(timespec="seconds"), "kept_as": name + suffix}
        shutil.move(path, folder / (name + suffix))
        (folder / f"{name}.json").write_text(json.dumps(report, indent=1))
        log.warning("a dropped file was rejected (%s/%s.json): %s", REJECTED, name, problem)
