"""Uploaded studies on disk: checked, renamed to neutral names, and found again by the worker.

File names of exported studies often carry the patient's name, so no uploaded name is kept:
image slices are renamed in the order of their original names' trailing numbers (the order
``chestdx.io`` reads them in), every other file gets a numbered name with its suffix.

An upload is written under ``<data>/.incoming/<id>/`` and moved to ``<data>/<id>/`` in one
rename once every file is complete and checked: a study folder never holds half an upload,
whatever stops the process. What a killed process leaves in ``.incoming`` is removed at the
next start (`clean_incoming`).
"""

from __future__ import annotations

import os
import shutil
import time
import zipfile
from pathlib import Path, PurePath
from typing import BinaryIO

from chestdx.errors import ChestDxError
from chestdx.io.archive import check_zip
from chestdx.io.dicom import has_dicom_magic
from chestdx.io.images import IMAGE_SUFFIXES, natural_key
from chestdx.io.load import DICOM_SUFFIXES, MAX_BYTES, MAX_FILES
from chestdx.io.nifti import NIFTI_SUFFIXES

UPLOAD_FOLDER = "upload"
INCOMING_FOLDER = ".incoming"
_CHUNK = 1 << 20
_WHAT_TO_SEND = ("send a DICOM .zip, DICOM files, one NIfTI (.nii/.nii.gz), PNG/JPG/TIFF slices or an X-ray image")


class RequestError(ChestDxError):
    """A user error in an HTTP request, with the status code it answers.

    Args:
        status: HTTP status code.
        message: the one-line message that says what to do.
    """

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def upload_too_large(limit_mb: float) -> RequestError:
    """Args: limit_mb: the service's upload limit. Returns: the 413 error of an upload over it."""
    return RequestError(413, f"the upload is larger than the limit of {limit_mb:g} MB: send one study at a time, "
                             "or start the service with a larger --max-upload-mb")


def _suffix(name: str) -> str:
    lower = name.lower()
    for suffix in (*NIFTI_SUFFIXES, ".zip", *IMAGE_SUFFIXES, *DICOM_SUFFIXES):
        if lower.endswith(suffix):
            return suffix
    return ""


def _copy(source: BinaryIO, target: Path, budget: int, limit_mb: float) -> int:
    """Copy a stream into ``target``; raise 413 once more than ``budget`` bytes came. Returns: bytes written."""
    written = 0
    with open(target, "wb") as out:
        while chunk := source.read(_CHUNK):
            written += len(chunk)
            if written > budget:
                raise upload_too_large(limit_mb)
            out.write(chunk)
    return written


def save_upload(files: list[tuple[str, BinaryIO]], folder: Path, max_bytes: int) -> str:
    """Check the uploaded files and store them under ``folder/upload`` with neutral names.

    The files are written into a staging folder (``.incoming`` beside ``folder``), which is
    renamed to ``folder`` once all of them are complete and checked. On any error the
    staging folder is removed: nothing of a refused upload stays on disk.

    Args:
        files: ``(client file name, stream)`` of each uploaded file.
        folder: the study's folder (created; it must not exist yet).
        max_bytes: largest total upload size.

    Returns:
        What was sent, without names (e.g. ``"16 files: .dcm"``), for the study's record.

    Raises:
        RequestError: no file, an unsupported type, a zip that cannot be read or is unsafe,
            a zip among other files (400, 415), or more than ``max_bytes`` (413).
        OSError: the data folder cannot be written (full, read-only); nothing is left behind.
    """
    if not files:
        raise RequestError(400, f"the request holds no file: {_WHAT_TO_SEND} in the 'files' field")
    suffixes = [_suffix(PurePath(name).name) for name, _ in files]
    if ".zip" in suffixes and len(files) > 1:
        raise RequestError(400, "a zip must come alone: send one zip per study, or the files without a zip")
    images = sorted((i for i, s in enumerate(suffixes) if s in IMAGE_SUFFIXES),
                    key=lambda i: natural_key(Path(PurePath(files[i][0]).name)))
    names = {i: f"slice_{n:05d}{suffixes[i]}" for n, i in enumerate(images)}
    staging = folder.parent / INCOMING_FOLDER / folder.name
    target_dir = staging / UPLOAD_FOLDER
    try:
        target_dir.mkdir(parents=True)
        total = 0
        for i, (_, stream) in enumerate(files):
            target = target_dir / names.get(i, f"study{suffixes[i]}" if len(files) == 1 else f"file_{i:05d}{suffixes[i]}")
            total += _copy(stream, target, max_bytes - total, max_bytes / 2**20)
            if not suffixes[i] and not has_dicom_magic(target):
                raise RequestError(415, f"file {i + 1} of the upload is not a DICOM, NIfTI, image or zip file: "
                                        f"{_WHAT_TO_SEND}")
            if suffixes[i] == ".zip":
                _check_zip(target)
        for path in target_dir.iterdir():  # on disk before the rename makes the study visible
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    kinds = sorted({s or "DICOM" for s in suffixes})
    return f"{len(files)} file{'s' if len(files) > 1 else ''}: {', '.join(kinds)}"


def clean_incoming(data_dir: Path, older_than_s: float = 3600.0) -> int:
    """Remove uploads a stopped process left half-written in ``data_dir/.incoming``.

    Only entries older than ``older_than_s`` go, so uploads in progress in another service
    process sharing the folder are left alone.

    Args:
        data_dir: the service's data folder.
        older_than_s: age (by modification time) from which an entry is abandoned.

    Returns:
        How many entries were removed.
    """
    incoming = Path(data_dir) / INCOMING_FOLDER
    incoming.mkdir(exist_ok=True)
    removed = 0
    for entry in incoming.iterdir():
        try:
            stale = time.time() - entry.stat().st_mtime >= older_than_s
        except FileNotFoundError:
            continue
        if stale:
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
    return removed


def _check_zip(path: Path) -> None:
    """Refuse a zip that cannot be read, is unsafe (``..`` or absolute paths) or too large, before it is queued."""
    try:
        with zipfile.ZipFile(path) as zf:
            check_zip(zf, "the uploaded zip", max_bytes=MAX_BYTES, max_files=MAX_FILES)  # load_study's limits, at once
    except zipfile.BadZipFile as exc:
        raise RequestError(400, f"the uploaded zip cannot be read ({exc}): check the file, or send the files "
                                "without a zip") from exc
    except RequestError:
        raise
    except ChestDxError as exc:
        raise RequestError(400, str(exc)) from exc


def upload_source(folder: Path) -> Path:
    """Args: folder: a study's folder. Returns: what ``load_study`` should read: the one uploaded file, or the folder."""
    files = sorted((folder / UPLOAD_FOLDER).iterdir())
    return files[0] if len(files) == 1 else folder / UPLOAD_FOLDER
