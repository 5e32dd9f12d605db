"""Uploaded studies on disk: streamed in while they arrive, checked, renamed to neutral names, found by the worker.

An upload is written to the study's folder chunk by chunk as the request body comes in
(`StreamedUpload`), never held whole in memory, and stopped at the size limit. File names of
exported studies often carry the patient's name, so no uploaded name is kept: image slices
are renamed in the order of their original names' trailing numbers (the order ``chestdx.io``
reads them in), every other file gets a numbered name with its suffix.

While it arrives an upload is written under ``<data>/.incoming/<id>/`` (a staging folder), and
moved to ``<data>/<id>/`` in one rename once every file is complete, checked and on disk: a
study folder never holds half an upload, whatever stops the process. What a killed process
leaves in ``.incoming`` is removed at the next start (`clean_incoming`).
"""

from __future__ import annotations

import os
import shutil
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import BinaryIO

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from chestdx.errors import ChestDxError
from chestdx.io.archive import check_zip
from chestdx.io.dicom import has_dicom_magic
from chestdx.io.images import IMAGE_SUFFIXES, natural_key
from chestdx.io.load import DICOM_SUFFIXES, MAX_BYTES, MAX_FILES
from chestdx.io.nifti import NIFTI_SUFFIXES

UPLOAD_FOLDER = "upload"
INCOMING_FOLDER = ".incoming"
HEADER_BYTES = 16 << 10
"""Most bytes of the headers of one part of an upload (a file's name and type are short)."""
FIELD_BYTES = 1 << 20
"""Most bytes of the form fields of an upload together (``kind`` and ``model`` are short); the 1 MiB
per field that Starlette's form parser allowed before uploads were streamed."""
MAX_UPLOAD_FILES = 1000
"""Most files in one upload (as Starlette's form parser allowed); more go in a zip."""
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


@dataclass
class _Part:
    """One file of an upload while it arrives: its stream on disk and the client's name (kept in memory only)."""

    client_name: str
    suffix: str
    path: Path
    out: BinaryIO | None = None


class StreamedUpload:
    """A ``multipart/form-data`` body written into a study's staging folder while it arrives.

    Every file part goes straight to ``upload/`` of the staging folder (``<data>/.incoming/<id>``,
    beside ``folder``) under a neutral name as its bytes come
    in (nothing holds a whole file in memory: only the chunk at hand); the total is checked
    against ``max_bytes`` with every chunk, so an upload over the limit is refused (413) as soon
    as it passes it, and nothing more is written. Form fields (``kind``, ``model``) are small
    and kept in memory, at most `FIELD_BYTES` in all. `finish` checks the files and gives them
    their final names and renames the staging folder to ``folder`` (so the study appears whole or
    not at all); `discard` removes both: a refused or broken-off upload leaves nothing.

    Args:
        folder: the study's folder (it must not exist yet; made by `finish`).
        max_bytes: largest total size of the files.
        limit_mb: the limit as the service was given it (for the message).
        boundary: the multipart boundary of the request's ``Content-Type``.
    """

    def __init__(self, folder: Path, max_bytes: int, limit_mb: float, boundary: bytes):
        self.folder, self.max_bytes, self.limit_mb = folder, max_bytes, limit_mb
        self.staging = folder.parent / INCOMING_FOLDER / folder.name
        self._header_bytes = 0
        self.fields: dict[str, str] = {}
        self.parts: list[_Part] = []
        self.received = 0
        self._field_bytes = 0
        self._headers: dict[bytes, bytes] = {}
        self._header_name = self._header_value = b""
        self._field: tuple[str, bytearray] | None = None
        self._ended = False
        callbacks = {"on_part_begin": self._part_begin, "on_header_field": self._header_field,
                     "on_header_value": self._header_value_chunk, "on_header_end": self._header_end,
                     "on_headers_finished": self._headers_finished, "on_part_data": self._part_data,
                     "on_part_end": self._part_end, "on_end": self._end}
        self._parser = MultipartParser(boundary, callbacks)

    def feed(self, chunk: bytes) -> None:
        """Parse the next chunk of the body, writing its file bytes to disk.

        Raises:
            RequestError: the body is not valid multipart, a file is not a DICOM/NIfTI/image/zip,
                a zip comes with other files (400, 415), or the files passed the limit (413).
        """
        try:
            self._parser.write(chunk)
        except FormParserError as exc:
            raise RequestError(400, f"the upload is not valid multipart/form-data ({exc}): {_WHAT_TO_SEND} "
                                    "in the 'files' field") from exc

    def finish(self) -> str:
        """Check the complete upload and give its files their neutral final names.

        Then every file is flushed to disk and the staging folder renamed to the study's folder.
        Image slices are named in the order of their original names' trailing numbers (the order
        ``chestdx.io`` reads them in); one file is ``study<suffix>``, several ``file_<n><suffix>``.

        Returns:
            What was sent, without names (e.g. ``"16 files: .dcm"``), for the study's record.

        Raises:
            RequestError: the body ended early, held no file, or holds an unreadable or unsafe zip.
            OSError: the data folder cannot be written (full, read-only); `discard` removes what is left.
        """
        if not self._ended:
            raise RequestError(400, "the upload ended before its last part: send it again")
        if not self.parts:
            raise RequestError(400, f"the request holds no file: {_WHAT_TO_SEND} in the 'files' field")
        if self.parts[0].suffix == ".zip":
            _check_zip(self.parts[0].path)
        images = sorted((i for i, part in enumerate(self.parts) if part.suffix in IMAGE_SUFFIXES),
                        key=lambda i: natural_key(Path(self.parts[i].client_name)))
        names = {i: f"slice_{n:05d}{self.parts[i].suffix}" for n, i in enumerate(images)}
        for i, part in enumerate(self.parts):
            final = names.get(i, f"study{part.suffix}" if len(self.parts) == 1 else f"file_{i:05d}{part.suffix}")
            part.path = part.path.rename(part.path.with_name(final))
        for part in self.parts:  # on disk before the rename makes the study visible
            with open(part.path, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(self.staging, self.folder)
        kinds = sorted({part.suffix or "DICOM" for part in self.parts})
        n = len(self.parts)
        return f"{n} file{'s' if n > 1 else ''}: {', '.join(kinds)}"

    def discard(self) -> None:
        """Close and remove everything written so far (the staging folder, and the study's folder if `finish` made it)."""
        for part in self.parts:
            if part.out is not None:
                try:
                    part.out.close()
                except OSError:  # a full disk fails the flush too: the file goes anyway
                    pass
                part.out = None
        shutil.rmtree(self.staging, ignore_errors=True)
        shutil.rmtree(self.folder, ignore_errors=True)

    # ---- python-multipart callbacks
    def _part_begin(self) -> None:
        self._headers = {}
        self._header_bytes = 0

    def _count_header(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > HEADER_BYTES:
            raise RequestError(400, f"the headers of a part of the upload hold more than {HEADER_BYTES} bytes: "
                                    f"{_WHAT_TO_SEND} in the 'files' field")

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._header_name += data[start:end]

    def _header_value_chunk(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header_name.lower()] = self._header_value
        self._header_name = self._header_value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" not in options:
            if name == "files":
                raise RequestError(400, f"the 'files' field holds text, not a file: {_WHAT_TO_SEND}")
            self._field = (name, bytearray())
            return
        if name != "files":
            raise RequestError(400, f"files go in the 'files' field, not {name!r}: {_WHAT_TO_SEND}")
        client_name = PurePath(options[b"filename"].decode("utf-8", "replace").replace("\\", "/")).name
        suffix = _suffix(client_name)
        if self.parts and ".zip" in (suffix, self.parts[0].suffix):
            raise RequestError(400, "a zip must come alone: send one zip per study, or the files without a zip")
        if len(self.parts) >= MAX_UPLOAD_FILES:
            raise RequestError(400, f"the upload holds more than {MAX_UPLOAD_FILES} files: send them in a zip")
        target_dir = self.staging / UPLOAD_FOLDER
        target_dir.mkdir(parents=True, exist_ok=True)
        path = target_dir / f"part_{len(self.parts):05d}{suffix}"
        self.parts.append(_Part(client_name, suffix, path, open(path, "wb")))
        self._field = None

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._field is not None:
            self._field_bytes += end - start
            if self._field_bytes > FIELD_BYTES:
                raise RequestError(400, f"the form fields hold more than {FIELD_BYTES} bytes: send the study in "
                                        "'files', and only 'kind' and 'model' beside it")
            self._field[1].extend(data[start:end])
            return
        self.received += end - start
        if self.received > self.max_bytes:
            raise upload_too_large(self.limit_mb)
        self.parts[-1].out.write(data[start:end])

    def _part_end(self) -> None:
        if self._field is not None:
            name, value = self._field
            self.fields[name] = value.decode("utf-8", "replace")
            self._field = None
            return
        part = self.parts[-1]
        out, part.out = part.out, None
        out.close()
        if not part.suffix and not has_dicom_magic(part.path):
            raise RequestError(415, f"file {len(self.parts)} of the upload is not a DICOM, NIfTI, image or zip "
                                    f"file: {_WHAT_TO_SEND}")

    def _end(self) -> None:
        self._ended = True


def multipart_boundary(content_type: str | None) -> bytes:
    """Args: content_type: the request's ``Content-Type``. Returns: its multipart boundary.

    Raises:
        RequestError: 415 when the body is not ``multipart/form-data`` with a boundary.
    """
    kind, options = parse_options_header(content_type or "")
    if kind != b"multipart/form-data" or not options.get(b"boundary"):
        raise RequestError(415, f"send the study as multipart/form-data (curl -F files=@study.zip): {_WHAT_TO_SEND} "
                                "in the 'files' field")
    return options[b"boundary"]


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
