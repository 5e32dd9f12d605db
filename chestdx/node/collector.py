"""Received instances on disk, grouped by series; a series is complete after a quiet period.

Layout under the store folder, one folder per SeriesInstanceUID::

    <store>/<series uid>/images/<sop instance uid>.dcm   as received (written before the C-STORE is acknowledged)
    <store>/<series uid>/results/*.dcm                   the SR, secondary captures and segmentation sent back
    <store>/<series uid>/status.json                     written once the series was processed (done or failed)
    <store>/<series uid>/prediction.json                 the diagnosis as ``chestdx predict --json`` gives it (done)
    <store>/rejected/<id>.*, <id>.json                   folder mode: a dropped file that is no DICOM instance, and why

A series folder without ``status.json`` is unfinished: a restarted node processes it again.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import threading
import time
from pathlib import Path

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
STATUS = "status.json"


def _safe_name(uid: str) -> str:
    """Args: uid: a UID from the network. Returns: it as a file name, or its hash when it is not a valid UID."""
    uid = uid.strip().rstrip("\0")
    return uid if _UID.match(uid) and len(uid) <= 64 else "x" + hashlib.sha256(uid.encode()).hexdigest()[:32]


class SeriesCollector:
    """Keeps received instances on disk by series and says which series have gone quiet.

    Args:
        store_dir: the store folder (created when missing).
        quiet_seconds: a series is complete when nothing arrived for it for this long.
        clock: seconds (monotonic); replaced in tests.
    """

    def __init__(self, store_dir: str | Path, quiet_seconds: float, clock=time.monotonic):
        self.store_dir = Path(store_dir)
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.quiet_seconds = quiet_seconds
        self.clock = clock
        self._lock = threading.Lock()
        # unfinished series left by an earlier run count as just received; a write it did not finish is dropped
        self._last_arrival = {p.name: clock() for p in self.store_dir.iterdir()
                              if p.is_dir() and (p / "images").is_dir() and not (p / STATUS).exists()}
        for name in self._last_arrival:
            for partial in (self.store_dir / name / "images").glob("*.part"):
                partial.unlink()

    def add(self, series_uid: str, sop_instance_uid: str, encoded: bytes) -> Path:
        """Write one received instance to disk and note its arrival.

        A series that was already processed is processed again with the new instance.

        Args:
            series_uid: its SeriesInstanceUID.
            sop_instance_uid: its SOPInstanceUID.
            encoded: the instance as a DICOM file (preamble and file meta included).

        Returns:
            The file written.
        """
        return self._put(series_uid, sop_instance_uid, lambda partial: partial.write_bytes(encoded))

    def add_file(self, series_uid: str, sop_instance_uid: str, source: Path) -> Path:
        """Move one instance file into the store (folder mode) and note its arrival, as `add` does.

        Args:
            series_uid: its SeriesInstanceUID.
            sop_instance_uid: its SOPInstanceUID.
            source: the file; it is gone from there afterwards (renamed, or copied then removed
                when the store is on another file system).

        Returns:
            The file in the store.
        """
        return self._put(series_uid, sop_instance_uid, lambda partial: shutil.move(source, partial))

    def _put(self, series_uid: str, sop_instance_uid: str, write) -> Path:
        folder = self.store_dir / _safe_name(series_uid)
        path = folder / "images" / f"{_safe_name(sop_instance_uid)}.dcm"
        with self._lock:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".part")
            write(partial)
            partial.replace(path)
            if (folder / STATUS).exists():
                (folder / STATUS).unlink()
                shutil.rmtree(folder / "results", ignore_errors=True)
            self._last_arrival[folder.name] = self.clock()
        return path

    def complete(self) -> list[Path]:
        """Returns: the folders of series quiet for ``quiet_seconds``, no longer tracked (process each once)."""
        now = self.clock()
        with self._lock:
            quiet = [name for name, t in self._last_arrival.items() if now - t >= self.quiet_seconds]
            for name in quiet:
                del self._last_arrival[name]
        return [self.store_dir / name for name in sorted(quiet)]

    @property
    def pending(self) -> int:
        """Returns: how many series are still receiving (not yet quiet)."""
        with self._lock:
            return len(self._last_arrival)


def write_status(folder: Path, status: dict) -> Path:
    """Mark a series as processed.

    Args:
        folder: the series folder.
        status: JSON-ready outcome (``state``: ``"done"`` or ``"failed"``, and details).

    Returns:
        The status file.
    """
    path = folder / STATUS
    path.write_text(json.dumps(status, indent=1))
    return path
