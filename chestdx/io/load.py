"""``load_study``: one entry point for every source a user may bring."""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.errors import BytesLengthException, InvalidDicomError

from chestdx.errors import ChestDxError
from chestdx.io.archive import extracted_zip, member_parts, zip_members
from chestdx.io.dicom import has_dicom_magic, read_dicom, reason
from chestdx.io.images import IMAGE_SUFFIXES, read_image_files
from chestdx.io.nifti import NIFTI_SUFFIXES, is_nifti, read_nifti
from chestdx.io.study import Study
from chestdx.progress import progress as progress_bar

KINDS = ("xray", "ct-slice", "ct-volume")
MAX_BYTES = 4 * 2**30
"""Default largest uncompressed size of a zip that `load_study` unpacks."""
MAX_FILES = 20000
"""Default largest number of files in a zip or folder that `load_study` reads."""
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic", ".ima")
# Files never taken for images (no need to open them to check for DICOM).
_IGNORED_SUFFIXES = (".txt", ".csv", ".json", ".xml", ".md", ".html", ".pdf", ".py", ".log", ".ini", ".db", ".zip",
                     ".gz", ".tar", ".mat", ".npy", ".npz", ".h5", ".mhd", ".raw", ".nrrd")


@dataclass
class _FolderContents:
    """Files found under a folder, by type."""

    dicom: list[Path] = field(default_factory=list)
    images: list[Path] = field(default_factory=list)
    nifti: list[Path] = field(default_factory=list)
    n_files: int = 0


def file_type(path: Path) -> str | None:
    """What ``load_study`` takes a file for, from its name (and the DICOM preamble when it has no known suffix).

    Args:
        path: a file.

    Returns:
        ``"image"``, ``"nifti"``, ``"dicom"``, ``"zip"``, or None (hidden files, ``DICOMDIR``,
        and files of no study type).
    """
    name = path.name
    lower = name.lower()
    if name.startswith(".") or name.upper() == "DICOMDIR":
        return None
    if lower.endswith(IMAGE_SUFFIXES):
        return "image"
    if is_nifti(path):
        return "nifti"
    if lower.endswith(".zip"):
        return "zip"
    if lower.endswith(DICOM_SUFFIXES) or (not lower.endswith(_IGNORED_SUFFIXES) and has_dicom_magic(path)):
        return "dicom"
    return None


def skipped_folder(name: str) -> bool:
    """Args: name: a folder's name. Returns: whether readers skip it (hidden folders, ``__MACOSX``)."""
    return name.startswith(".") or name == "__MACOSX"


def scan_folder(root: Path, *, max_files: int) -> _FolderContents:
    """Sort the files under a folder (recursively) into DICOM, images and NIfTI.

    Hidden files, ``__MACOSX`` folders and ``DICOMDIR`` are skipped. Files with a DICOM
    suffix are DICOM candidates; files with no known suffix are DICOM when they carry
    the ``DICM`` preamble.

    Args:
        root: the folder.
        max_files: refuse folders holding more files than this.

    Returns:
        The files by type, each list in sorted path order.
    """
    found = _FolderContents()
    for dirpath, dirnames, filenames in os.walk(root, onerror=_raise):
        dirnames[:] = sorted(d for d in dirnames if not skipped_folder(d))
        for filename in sorted(filenames):
            if filename.startswith(".") or filename.upper() == "DICOMDIR":
                continue
            found.n_files += 1
            if found.n_files > max_files:
                raise ChestDxError(f"{root} holds more than {max_files} files: point chestdx at one study's folder "
                                   "(or raise max_files if this is expected)")
            path = Path(dirpath) / filename
            found_as = file_type(path)
            if found_as == "image":
                found.images.append(path)
            elif found_as == "nifti":
                found.nifti.append(path)
            elif found_as == "dicom":
                found.dicom.append(path)
    return found


def _zip_dicom(path: Path, *, max_bytes: int, max_files: int, progress: bool) -> tuple[list[io.BytesIO], list[str]] | None:
    """The DICOM files of a zip read into memory, in the order `scan_folder` would list them unpacked.

    The common upload (a zipped DICOM series) is read without writing it to disk and back:
    on the 300-slice benchmark study that write and read cost 1-3 s of kernel time.

    Returns:
        ``(files, names)``, or None when the zip holds images, NIfTI or zips, or no DICOM
        candidate: then it is unpacked and read as a folder.
    """
    with zip_members(path, max_bytes=max_bytes, max_files=max_files) as (members, read):
        wanted = []
        for member in members:
            parts = member_parts(member)
            name = parts[-1] if parts else ""
            if any(skipped_folder(part) for part in parts[:-1]) or name.startswith(".") or name.upper() == "DICOMDIR":
                continue
            lower = name.lower()
            if lower.endswith(IMAGE_SUFFIXES) or lower.endswith((".zip", *NIFTI_SUFFIXES)):
                return None
            if not lower.endswith(_IGNORED_SUFFIXES):
                wanted.append((parts, member, lower.endswith(DICOM_SUFFIXES)))
        # os.walk's order: a folder's files (sorted) before its sub-folders (sorted)
        wanted.sort(key=lambda item: [(1, part) for part in item[0][:-1]] + [(0, item[0][-1])])
        files, names = [], []
        for parts, member, named_dicom in progress_bar(wanted, "unpacking", "file", enabled=progress, min_items=2):
            data = read(member)
            if named_dicom or data[128:132] == b"DICM":
                files.append(io.BytesIO(data))
                names.append("/".join(parts))
    return (files, names) if files else None


def _raise(error: OSError) -> None:
    raise error  # an unreadable folder is not an empty one


def _names(paths: list[Path], root: Path) -> list[str]:
    return [str(p.relative_to(root)) for p in paths]


def _load_folder(root: Path, *, source: str, series, kind, keep_phi, progress, max_files) -> Study:
    found = scan_folder(root, max_files=max_files)
    if found.n_files == 0:
        raise ChestDxError(f"folder {source} is empty: point chestdx at a folder of DICOM files or image slices")
    if found.dicom:
        study = read_dicom(found.dicom, _names(found.dicom, root), series=series, kind=kind, keep_phi=keep_phi,
                           progress=progress, source=source)
        if found.images or found.nifti:
            study.warnings.append(f"ignored {len(found.images) + len(found.nifti)} non-DICOM image file(s) beside the DICOM files")
        return study
    if found.images:
        folders = sorted({p.parent for p in found.images})
        if len(folders) > 1:
            listing = ", ".join(str(f.relative_to(root)) or "." for f in folders[:5])
            raise ChestDxError(f"{source} holds images in {len(folders)} folders ({listing}{', ...' if len(folders) > 5 else ''}): "
                               "point chestdx at the one folder that holds the slices of one series")
        return read_image_files(found.images, _names(found.images, root), kind=kind, progress=progress, source=source)
    if len(found.nifti) == 1:
        return read_nifti(found.nifti[0], kind=kind, source=source)
    if found.nifti:
        raise ChestDxError(f"{source} holds {len(found.nifti)} NIfTI files: point chestdx at one of them")
    raise ChestDxError(f"{source} holds no DICOM, NIfTI or image files ({found.n_files} other file(s)): point chestdx "
                       "at a DICOM folder or .zip, a .nii/.nii.gz file, or PNG/JPG/TIFF slices")


def load_study(path, *, series: str | int | None = None, kind: str | None = None, keep_phi: bool = False,
               progress: bool = True, max_bytes: int = MAX_BYTES, max_files: int = MAX_FILES) -> Study:
    """Read a chest CT or X-ray study from whatever the user points at.

    Accepts a DICOM folder (searched recursively) or a ``.zip`` of one, a ``.nii`` /
    ``.nii.gz`` volume, a folder of 2-D slices (PNG/JPG/TIFF, ordered by the trailing
    number in their names), a single image (a CT slice, or an X-ray with ``kind="xray"``)
    or a single DICOM file (CR/DX are read as X-rays).

    Args:
        path: the file or folder.
        series: SeriesInstanceUID, or index into the study's series (see
            ``Study.other_series``), to read instead of the default choice (the axial
            CT series with the most slices).
        kind: force ``"xray"``, ``"ct-slice"`` or ``"ct-volume"``; None decides from the data.
        keep_phi: keep patient name, id, birth date and other identifying tags in
            ``Study.metadata`` (left out by default).
        progress: show progress bars while reading many files.
        max_bytes: largest uncompressed size of a zip.
        max_files: largest number of files in a zip or folder.

    Returns:
        The Study.

    Raises:
        ChestDxError: the input cannot be read, or its pixels are not finite numbers; the
            message (one line) says why and what to do. A parser's or decoder's own error on
            damaged input (a malformed value, an unknown value representation) becomes one too.

    Example:
        >>> study = load_study("scans/patient1/")   # doctest: +SKIP
        >>> study.kind, study.intensity, study.pixels.shape   # doctest: +SKIP
        ('ct-volume', 'hu', (120, 512, 512))
    """
    try:
        study = _read(path, series=series, kind=kind, keep_phi=keep_phi, progress=progress, max_bytes=max_bytes,
                      max_files=max_files)
    except ChestDxError:
        raise
    except PermissionError as exc:
        raise ChestDxError(f"{exc.filename or path} cannot be read (permission denied): give chestdx read access") from exc
    except DAMAGED_INPUT_ERRORS as exc:
        raise ChestDxError(f"{path} could not be read: {reason(exc)} ({type(exc).__name__}); the file is damaged or "
                           "written in a way chestdx does not handle: check it, or re-export it") from exc
    check_finite(study)
    return study


DAMAGED_INPUT_ERRORS = (ValueError, TypeError, KeyError, IndexError, AttributeError, NotImplementedError, OverflowError,
                        EOFError, RuntimeError, struct.error, zlib.error, MemoryError, OSError, BytesLengthException,
                        InvalidDicomError)
"""What readers and decoders raise on damaged input (besides their own project error)."""


def check_finite(study: Study) -> None:
    """Refuse a study whose pixels are not all finite numbers (NaN or infinite values are never diagnosed).

    Args:
        study: the study.

    Raises:
        ChestDxError: some pixels are NaN or infinite.
    """
    pixels = study.pixels
    if np.issubdtype(pixels.dtype, np.integer):
        return
    step = 16  # a few slices at a time: no volume-sized temporary
    if not all(np.isfinite(pixels[i:i + step]).all() for i in range(0, len(pixels), step)):
        bad = int(pixels.size - np.count_nonzero(np.isfinite(pixels)))
        raise ChestDxError(f"{study.source} has {bad} of {pixels.size} pixel values that are NaN or infinite: chestdx "
                           "does not guess them; fix or re-export the image (e.g. fill missing voxels with air, -1000 HU)")


def _read(path, *, series, kind, keep_phi, progress, max_bytes, max_files) -> Study:
    """The body of `load_study`, without its error translation and finite check."""
    if kind not in (None, *KINDS):
        raise ChestDxError(f"unknown kind {kind!r}: use one of {', '.join(KINDS)}, or leave it unset")
    path = Path(path).expanduser()
    source = str(path)
    if not path.exists():
        raise ChestDxError(f"{source} does not exist: check the path (a DICOM folder or .zip, a NIfTI file or images)")
    options = dict(series=series, kind=kind, keep_phi=keep_phi, progress=progress)
    if path.is_dir():
        return _load_folder(path, source=source, max_files=max_files, **options)
    lower = path.name.lower()
    if lower.endswith(".zip"):
        in_memory = _zip_dicom(path, max_bytes=max_bytes, max_files=max_files, progress=progress)
        if in_memory is not None:
            return read_dicom(*in_memory, source=source, **options)
        with extracted_zip(path, max_bytes=max_bytes, max_files=max_files, progress=progress) as folder:
            return _load_folder(folder, source=source, max_files=max_files, **options)
    if is_nifti(path):
        return read_nifti(path, kind=kind, source=source)
    if lower.endswith(IMAGE_SUFFIXES):
        return read_image_files([path], [path.name], kind=kind, progress=progress, source=source)
    return read_dicom([path], [path.name], source=source, single_file=True, **options)
