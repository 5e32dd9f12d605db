"""Find the studies of a batch: under a folder, in a dataset adapter's layout, or listed in a CSV."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from chestdx.errors import ChestDxError
from chestdx.io.datasets import ADAPTERS, load_dataset
from chestdx.io.images import natural_parts
from chestdx.io.load import file_type, skipped_folder


@dataclass(frozen=True)
class BatchItem:
    """One study to score.

    Args:
        path: what ``load_study`` reads, absolute.
        study_id: a file-name-safe id, unique in the batch (the path relative to the source,
            ``/`` written ``__``); heat maps go to ``MAPS/<study_id>/``.
    """

    path: str
    study_id: str


def _by_name(path: Path) -> tuple:
    return natural_parts(path.name)


def _studies_under(folder: Path, root: Path, found: list[Path]) -> None:
    """Add the studies under ``folder`` to ``found``, in natural name order.

    A folder holding DICOM files, or two or more images (a slice series), is one study,
    read whole (``load_study`` searches it recursively). Otherwise each NIfTI file, zip and
    single image in it is a study, and its sub-folders are searched. A folder below the
    root holding neither studies nor sub-folders is listed too, so that its row says why
    it could not be read (empty, or no readable files).
    """
    entries = sorted(folder.iterdir(), key=_by_name)
    files = [e for e in entries if e.is_file()]
    types = {}
    for path in files:
        types[path] = file_type(path)
        if types[path] == "dicom":
            found.append(folder)
            return
    if sum(t == "image" for t in types.values()) >= 2:
        found.append(folder)
        return
    subfolders = [e for e in entries if e.is_dir() and not skipped_folder(e.name)]
    if folder != root and not subfolders and not any(types.values()):
        found.append(folder)
        return
    for entry in entries:
        if entry in subfolders:
            _studies_under(entry, root, found)
        elif types.get(entry) in ("image", "nifti", "zip"):
            found.append(entry)


def _csv_paths(csv_file: Path) -> list[Path]:
    """The ``path`` column of a CSV, relative paths taken from the CSV's folder."""
    with open(csv_file, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = [(c or "").strip() for c in reader.fieldnames or []]
        if "path" not in columns:
            raise ChestDxError(f"{csv_file} has columns {columns}: a batch CSV needs a 'path' column "
                               "(one study per row, relative to the CSV's folder)")
        paths = [Path(value.strip()).expanduser() for row in reader
                 if (value := {(k or "").strip(): v for k, v in row.items()}.get("path") or "").strip()]
    return [p if p.is_absolute() else csv_file.parent / p for p in paths]


def _study_id(path: Path, root: Path | None) -> str:
    """The path relative to ``root`` (when under it) as one file-name-safe word."""
    try:
        relative = path.resolve().relative_to(root.resolve()).as_posix() if root is not None else ""
    except ValueError:
        relative = ""
    if relative in ("", "."):
        relative = path.name
    return re.sub(r"[^A-Za-z0-9._-]", "_", relative.replace("/", "__")) or "study"


def discover_studies(source: str) -> list[BatchItem]:
    """List the studies of a batch source.

    Args:
        source: a folder (every DICOM series folder or zip, NIfTI file, slice folder or
            single image under it is one study; see `_studies_under`), ``ADAPTER:PATH``
            (a dataset adapter of ``chestdx.io.datasets``), a ``.csv`` file with a ``path``
            column, or one study file.

    Returns:
        The studies in discovery order (the order of the result file), never empty.

    Raises:
        ChestDxError: the source does not exist, names an unknown adapter, or holds no study.
    """
    path = Path(source).expanduser()
    root: Path | None = path
    if not path.exists() and ":" in source:
        name = source.partition(":")[0]
        if name not in ADAPTERS:
            raise ChestDxError(f"{source} is neither a path nor ADAPTER:PATH with ADAPTER one of {', '.join(ADAPTERS)}")
        root = Path(source.partition(":")[2]).expanduser()
        paths = [record.path for record in load_dataset(source)]
        root = root.parent if root.is_file() else root
    elif not path.exists():
        raise ChestDxError(f"{source} does not exist: give a folder of studies, ADAPTER:PATH or a CSV with a 'path' column")
    elif path.is_dir():
        paths = []
        _studies_under(path, path, paths)
    elif path.suffix.lower() == ".csv":
        paths, root = _csv_paths(path), path.parent
    else:
        paths, root = [path], path.parent
    if not paths:
        raise ChestDxError(f"no studies found in {source}: it should hold DICOM series folders or zips, NIfTI files, "
                           "folders of image slices or single images")
    items, seen = [], set()
    for study in paths:
        study_id = base = _study_id(study, root)
        n = 1
        while study_id in seen:
            n += 1
            study_id = f"{base}-{n}"
        seen.add(study_id)
        items.append(BatchItem(str(study.resolve()), study_id))
    return items
