"""Folders that cannot be written and disks that are full, for the tests of outputs that cannot be written.

Permission bits stop nobody but root's processes, and the tests often run as root, so a
read-only folder is a read-only tmpfs mount when the tests may mount (root), and a folder
without write permission otherwise. A full disk is a tmpfs of a few hundred kilobytes.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import pytest


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


def can_mount() -> bool:
    """Returns: whether this process may mount a tmpfs (root with the capability, and ``mount`` present)."""
    return os.geteuid() == 0 and subprocess.run(["which", "mount"], capture_output=True).returncode == 0


def _write(folder: Path, files: dict[str, bytes] | None) -> None:
    for name, data in (files or {}).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)


@contextlib.contextmanager
def read_only_folder(folder: Path, files: dict[str, bytes] | None = None):
    """A folder (holding ``files``) in which nothing can be created or changed, by root either.

    Args:
        folder: where (created).
        files: name -> content written before it becomes read-only.

    Yields:
        The folder.
    """
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        _write(folder, files)
        paths = sorted(folder.rglob("*"), reverse=True) + [folder]
        for path in paths:
            path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield folder
        finally:
            for path in paths:
                path.chmod(0o755 if path.is_dir() else 0o644)
        return
    if not (can_mount() and _mount("-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder))):
        pytest.skip("a read-only folder for root needs a tmpfs mount, which this machine does not allow")
    try:
        _write(folder, files)
        assert _mount("-o", "remount,ro", str(folder))
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@contextlib.contextmanager
def small_disk(folder: Path, size: str = "2m"):
    """A file system of ``size`` mounted at ``folder`` (a tmpfs; root only, skipped otherwise).

    Yields:
        The folder.
    """
    folder.mkdir(parents=True, exist_ok=True)
    if not (can_mount() and _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder))):
        pytest.skip("a small disk needs a tmpfs mount (root)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def remount(folder: Path, mode: str) -> None:
    """Args: folder: a mount made by `small_disk`. mode: ``"ro"`` or ``"rw"``."""
    assert _mount("-o", f"remount,{mode}", str(folder))
