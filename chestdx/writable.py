"""Can an output be written? Checked before the work starts, so a bad path costs a second, not the whole run.

A leaf (standard library only): the command line calls it before anything heavy is imported.
The check writes and removes a probe file in the target folder (or in the nearest folder that
exists, when the target's folders are still to be made), since permission bits tell nothing
to root and nothing about read-only or full file systems.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from chestdx.errors import ChestDxError

_PROBE_PREFIX = ".chestdx-write-check-"
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
"""``OSError`` numbers that only writing raises: a full disk, a quota, a read-only file system."""


def _probe(folder: Path, option: str, shown: str) -> None:
    """Write and remove a small file in ``folder``; raise the one-line error when that fails."""
    try:
        handle, name = tempfile.mkstemp(prefix=_PROBE_PREFIX, dir=folder)
        try:
            os.write(handle, b"x")  # a full file system accepts the name but not the bytes
        finally:
            os.close(handle)
            os.unlink(name)
    except OSError as exc:
        raise ChestDxError(f"{option} {shown}: cannot write in {folder} ({exc.strerror or exc}): "
                           "give a path in a folder you can write to") from None


def _existing_ancestor(path: Path) -> Path:
    """The nearest folder above ``path`` (or ``path`` itself) that exists."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(path.anchor or ".")


def check_writable_folder(path: str | os.PathLike, option: str) -> Path:
    """Check that an output folder can be created (if missing) and written.

    Args:
        path: the folder the command will write into (it may not exist yet).
        option: the option that named it, for the message (e.g. ``"--out"``).

    Returns:
        The folder as a ``Path`` (``~`` expanded).

    Raises:
        ChestDxError: the path is a file, lies under a file, or its folder (or the nearest
            existing one above it) cannot be written.
    """
    target = Path(path).expanduser()
    if target.exists() and not target.is_dir():
        raise ChestDxError(f"{option} {path}: is a file, not a folder: give a folder to write into")
    ancestor = _existing_ancestor(target)
    if not ancestor.is_dir():
        raise ChestDxError(f"{option} {path}: {ancestor} is a file, so no folder can be made under it: "
                           "give a folder to write into")
    _probe(ancestor, option, str(path))
    return target


def check_writable_file(path: str | os.PathLike, option: str, *, suffixes: tuple[str, ...] = (),
                        make_parents: bool = False) -> Path:
    """Check that an output file can be written (created, or replaced when it exists).

    Args:
        path: the file the command will write.
        option: the option that named it, for the message (e.g. ``"--report"``).
        suffixes: accepted endings (lower case, e.g. ``(".html",)``); empty: any.
        make_parents: the command creates missing parent folders; otherwise the parent must exist.

    Returns:
        The file as a ``Path`` (``~`` expanded).

    Raises:
        ChestDxError: a wrong suffix, a folder in its place, a missing parent folder (unless
            ``make_parents``), or a folder that cannot be written.
    """
    target = Path(path).expanduser()
    if suffixes and not target.name.lower().endswith(suffixes):
        raise ChestDxError(f"{option} {path!r}: give a file name ending in {' or '.join(suffixes)}")
    if target.is_dir():
        raise ChestDxError(f"{option} {path!r} is a folder: give a file name"
                           + (f" ending in {' or '.join(suffixes)}" if suffixes else ""))
    if not make_parents and not target.parent.is_dir():
        if target.parent.exists():
            raise ChestDxError(f"{option} {path!r}: {target.parent} is a file, not a folder")
        raise ChestDxError(f"{option} {path!r}: the folder {target.parent} does not exist; create it first")
    if target.exists():
        try:
            with open(target, "ab"):
                pass  # opening for appending changes nothing, but fails where the file cannot be written
        except OSError as exc:
            raise ChestDxError(f"{option} {path}: cannot write {target} ({exc.strerror or exc}): "
                               "give a file you can write") from None
    ancestor = _existing_ancestor(target.parent)
    if not ancestor.is_dir():
        raise ChestDxError(f"{option} {path!r}: {ancestor} is a file, not a folder")
    _probe(ancestor, option, str(path))
    return target


def write_error_message(exc: OSError) -> str | None:
    """The one-line message of an output that could not be written after the checks passed (the disk filled up).

    Args:
        exc: the error raised while writing.

    Returns:
        The message, or None when the error is not about writing.
    """
    if exc.errno not in WRITE_ERRNOS:
        return None
    where = exc.filename or "the output"
    return f"cannot write {where} ({exc.strerror or exc}): free space or choose another output folder, then run again"
