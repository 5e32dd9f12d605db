"""Zipped studies, checked before anything is unpacked: read member by member in memory, or unpacked into a temporary folder that is removed afterwards."""

from __future__ import annotations

import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath, PureWindowsPath


from chestdx.errors import ChestDxError
from chestdx.progress import progress as progress_bar

_CHUNK = 1 << 20
MAX_MEMBER_BYTES = 2 * 2**30
"""Largest single file unpacked from a zip (an enhanced multi-frame CT is well below it)."""
MAX_RATIO = 100
"""Largest compression ratio of a member over 16 MiB (pixel data compresses a few times, zeros a thousand)."""


def check_zip(zf: zipfile.ZipFile, name: str, *, max_bytes: int, max_files: int) -> list[zipfile.ZipInfo]:
    """Check a zip's directory before anything is extracted.

    Refuses members with absolute paths or ``..`` parts (zip-slip), more than
    ``max_files`` members, more than ``max_bytes`` declared uncompressed bytes, and
    members that no real study holds: one over ``MAX_MEMBER_BYTES``, or a large one
    compressed more than ``MAX_RATIO`` times (zip bombs; image data does not compress so
    far).

    Args:
        zf: the open zip file.
        name: the zip's name for messages.
        max_bytes: largest total uncompressed size accepted.
        max_files: largest number of members accepted.

    Returns:
        The file members (folders left out).
    """
    members = [m for m in zf.infolist() if not m.is_dir()]
    if len(members) > max_files:
        raise ChestDxError(f"{name} holds {len(members)} files, more than the limit of {max_files}: "
                           "zip one study at a time, or raise max_files if this is expected")
    total = sum(m.file_size for m in members)
    if total > max_bytes:
        raise ChestDxError(f"{name} would unpack to {total / 2**30:.2f} GiB, more than the limit of "
                           f"{max_bytes / 2**30:.2f} GiB: zip one study at a time, or raise max_bytes if this is expected")
    for member in members:
        if member.file_size > MAX_MEMBER_BYTES or (
                member.file_size > 16 * 2**20 and member.file_size > MAX_RATIO * max(member.compress_size, 1)):
            raise ChestDxError(f"{name} holds {member.filename!r}, which unpacks to {member.file_size / 2**20:.0f} MiB "
                               f"from {member.compress_size / 2**20:.2f} MiB: no study file looks like that (a zip bomb?); "
                               "refusing to unpack it")
    for member in zf.infolist():
        posix, windows = PurePosixPath(member.filename), PureWindowsPath(member.filename)
        if posix.is_absolute() or windows.is_absolute() or windows.drive or ".." in posix.parts or ".." in windows.parts:
            raise ChestDxError(f"{name} contains the unsafe path {member.filename!r} (absolute or with '..'): "
                               "refusing to unpack it; re-create the zip with relative paths")
    return members


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ChestDxError(f"{path.name} is not a readable zip file ({exc}): check the file or unzip it yourself") from exc


class _Unpacker:
    """Unpacks members of one checked zip, counting the bytes so that a zip whose directory understates
    its sizes is stopped at ``max_bytes``."""

    def __init__(self, zf: zipfile.ZipFile, name: str, max_bytes: int):
        self.zf, self.name, self.max_bytes, self.written = zf, name, max_bytes, 0

    def chunks(self, member: zipfile.ZipInfo) -> Iterator[bytes]:
        """Yields: the member's bytes, ``_CHUNK`` at a time."""
        try:
            with self.zf.open(member) as src:
                while chunk := src.read(_CHUNK):
                    self.written += len(chunk)
                    if self.written > self.max_bytes:
                        raise ChestDxError(f"{self.name} unpacks to more than {self.max_bytes / 2**30:.2f} GiB: refusing it")
                    yield chunk
        except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError) as exc:
            raise ChestDxError(f"cannot unpack {member.filename!r} from {self.name} ({exc}): the zip is damaged "
                               "or encrypted; unzip it yourself and point chestdx at the folder") from exc


def member_parts(member: zipfile.ZipInfo) -> tuple[str, ...]:
    """Returns: the member's path as parts (``\\`` taken for ``/``, as zips made on Windows have it)."""
    return PurePosixPath(member.filename.replace("\\", "/")).parts


@contextmanager
def zip_members(path: Path, *, max_bytes: int, max_files: int) -> Iterator[tuple[list[zipfile.ZipInfo], Callable]]:
    """Open a zip and check it (`check_zip`) without unpacking anything.

    Args:
        path: the ``.zip`` file.
        max_bytes: largest total uncompressed size accepted.
        max_files: largest number of members accepted.

    Yields:
        ``(members, read)``: the file members, and ``read(member) -> bytes`` (bytes counted
        against ``max_bytes``), valid inside the ``with`` block.
    """
    with _open_zip(path) as zf:
        members = check_zip(zf, path.name, max_bytes=max_bytes, max_files=max_files)
        unpacker = _Unpacker(zf, path.name, max_bytes)
        yield members, lambda member: b"".join(unpacker.chunks(member))


@contextmanager
def extracted_zip(path: Path, *, max_bytes: int, max_files: int, progress: bool = False) -> Iterator[Path]:
    """Unpack a zip into a temporary folder, checked first, removed on exit.

    Bytes are counted while unpacking too, so a zip whose directory understates its
    sizes is stopped at ``max_bytes``.

    Args:
        path: the ``.zip`` file.
        max_bytes: largest total uncompressed size accepted.
        max_files: largest number of members accepted.
        progress: show a progress bar.

    Yields:
        The temporary folder holding the members.
    """
    with _open_zip(path) as zf, tempfile.TemporaryDirectory(prefix="chestdx-zip-") as tmp:
        root = Path(tmp)
        members = check_zip(zf, path.name, max_bytes=max_bytes, max_files=max_files)
        unpacker = _Unpacker(zf, path.name, max_bytes)
        for member in progress_bar(members, "unpacking", "file", enabled=progress, min_items=2):
            target = root.joinpath(*member_parts(member))
            if not target.resolve().is_relative_to(root.resolve()):
                raise ChestDxError(f"{path.name} contains the unsafe path {member.filename!r}: refusing to unpack it")
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as dst:
                for chunk in unpacker.chunks(member):
                    dst.write(chunk)
        yield root
