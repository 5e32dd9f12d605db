"""DICOM reading: series grouping, localizer skipping, physical slice order, HU, X-ray.

Each file is parsed once: its header, with the pixel data deferred (pydicom's ``defer_size``),
groups the files into series; only the chosen series' pixel data is then read from the
files and decoded, by pydicom's pixel handlers (pylibjpeg for compressed transfer syntaxes).
"""

from __future__ import annotations

import io
import math
import warnings as pywarnings
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pydicom.config
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import UID, RLELossless

from chestdx.errors import ChestDxError
from chestdx.progress import progress as progress_bar
from chestdx.io.study import DicomReferences, Study

XRAY_MODALITIES = ("CR", "DX", "DR")
LATERAL_VIEWS = ("LL", "RL", "LATERAL", "LAT")
MIN_SIDE = 16
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
DEFER_BYTES = 16384
"""Values larger than this (the pixel data) are left in the file by the header pass and read when decoded."""

# Tags copied into Study.metadata: technical and harmless (no names, ids, birth dates, UIDs).
SAFE_TAGS = (
    "Modality", "StudyDate", "Manufacturer", "ManufacturerModelName", "SeriesDescription",
    "StudyDescription", "BodyPartExamined", "ImageType", "SliceThickness", "SpacingBetweenSlices",
    "KVP", "XRayTubeCurrent", "ConvolutionKernel", "ReconstructionDiameter", "ContrastBolusAgent",
    "PatientPosition", "ViewPosition", "PhotometricInterpretation", "BitsStored",
    "PatientSex", "PatientAge",
)
# Extra tags only kept with ``keep_phi=True``.
PHI_TAGS = (
    "PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "InstitutionName",
    "ReferringPhysicianName", "StudyInstanceUID", "StudyID",
)
_SOP_MODALITY = {
    "1.2.840.10008.5.1.4.1.1.2": "CT",  # CT Image Storage
    "1.2.840.10008.5.1.4.1.1.2.1": "CT",  # Enhanced CT Image Storage
    "1.2.840.10008.5.1.4.1.1.1": "CR",  # Computed Radiography Image Storage
    "1.2.840.10008.5.1.4.1.1.1.1": "DX",  # Digital X-Ray Image Storage - For Presentation
    "1.2.840.10008.5.1.4.1.1.1.1.1": "DX",  # Digital X-Ray Image Storage - For Processing
}


@dataclass
class _Header:
    """One DICOM file's header (no pixel data) and what the reader needs from it."""

    path: Path | io.BytesIO
    ds: Dataset
    name: str  # path shown to the user (relative to the folder read)

    @property
    def series_uid(self) -> str:
        return str(self.ds.get("SeriesInstanceUID", "") or "")

    @property
    def size(self) -> tuple[int, int]:
        return int(self.ds.Rows), int(self.ds.Columns)

    @property
    def n_frames(self) -> int:
        return int(self.ds.get("NumberOfFrames", 1) or 1)

    @property
    def is_localizer(self) -> bool:
        image_type = self.ds.get("ImageType", [])
        image_type = [str(v).upper() for v in ([image_type] if isinstance(image_type, str) else image_type)]
        return "LOCALIZER" in image_type or "SCOUT" in image_type

    @property
    def normal(self) -> np.ndarray | None:
        iop = _finite_values(self.ds.get("ImageOrientationPatient"), 6)
        if iop is None:
            return None
        row, col = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
        normal = np.cross(row, col)
        norm = np.linalg.norm(normal)
        if norm == 0:
            return None
        normal = normal / norm
        # main component positive: ascending positions run feet -> head (axial), right -> left, front -> back
        return -normal if normal[np.argmax(np.abs(normal))] < 0 else normal


@dataclass
class _Series:
    """Files of one SeriesInstanceUID."""

    uid: str
    headers: list[_Header]
    modality: str

    @property
    def n_slices(self) -> int:
        return sum(h.n_frames for h in self.headers)

    @property
    def description(self) -> str:
        return str(self.headers[0].ds.get("SeriesDescription", "") or "")

    @property
    def normal(self) -> np.ndarray | None:
        return self.headers[0].normal

    @property
    def is_axial(self) -> bool:
        normal = self.normal
        return normal is None or abs(normal[2]) > 0.9

    def describe(self, index: int) -> dict:
        """Returns: the short description kept in ``Study.other_series``."""
        return {"index": index, "uid": self.uid or None, "n_slices": self.n_slices,
                "description": self.description, "modality": self.modality}


def modality_of(ds: Dataset) -> tuple[str, str | None]:
    """Modality of a dataset, inferred from the SOP Class when the tag is missing.

    Args:
        ds: a DICOM dataset (header is enough).

    Returns:
        ``(modality, warning)``; ``warning`` is None when the Modality tag was present.
    """
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality:
        return modality, None
    sop = str(ds.get("SOPClassUID", "") or "")
    inferred = _SOP_MODALITY.get(sop, "OT")
    name = UID(sop).name if sop else "no SOP Class UID"
    return inferred, f"Modality tag missing: inferred {inferred} from SOP Class ({name})"


def read_headers(paths: list[Path | io.BytesIO], names: list[str], *, progress: bool) -> tuple[list[_Header], list[str], list[str]]:
    """Read the headers of candidate DICOM files.

    Args:
        paths: candidate files, on disk or in memory (a zip's members); the pixel data is read
            from them later, when the chosen series is decoded.
        names: how to name each file in messages.
        progress: show a progress bar.

    Returns:
        ``(headers, unreadable, non_image)``: image headers, names of files that are not
        readable DICOM, names of DICOM objects without an image (reports, DICOMDIR ...).
    """
    headers, unreadable, non_image = [], [], []
    for path, name in progress_bar(list(zip(paths, names)), "reading DICOM headers", "file",
                                   enabled=progress, min_items=2):
        try:
            preamble = _has_preamble(path)
            if not preamble and not _starts_like_dicom(path):
                raise InvalidDicomError("neither a DICOM preamble nor a DICOM first tag")
            ds = pydicom.dcmread(path, defer_size=DEFER_BYTES, force=not preamble)
        except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError, AttributeError):
            unreadable.append(name)
            continue
        if "Rows" not in ds or "Columns" not in ds:
            (non_image if "SOPClassUID" in ds else unreadable).append(name)
            continue
        headers.append(_Header(path, ds, name))
    return headers, unreadable, non_image


def _head(file: Path | io.BytesIO, n: int) -> bytes:
    """The first ``n`` bytes of a file on disk or in memory (a zip's member)."""
    if isinstance(file, io.BytesIO):
        return bytes(file.getbuffer()[:n])
    with open(file, "rb") as fh:
        return fh.read(n)


def _has_preamble(file: Path | io.BytesIO) -> bool:
    return _head(file, 132)[128:] == b"DICM"


def _starts_like_dicom(file: Path | io.BytesIO) -> bool:
    """Whether a file without the preamble starts like a raw DICOM data set (first tag in group 0002 or 0008).

    pydicom's forced read of a file that is not DICOM can take seconds per megabyte; this
    decides from the first four bytes.
    """
    head = _head(file, 4)
    if len(head) < 4:
        return False
    little, big = int.from_bytes(head[:2], "little"), int.from_bytes(head[:2], "big")
    return little in (0x0002, 0x0008) or big in (0x0002, 0x0008)


def has_dicom_magic(path: Path) -> bool:
    """Returns: True when the file carries the DICOM preamble (``DICM`` at byte 128)."""
    try:
        return _has_preamble(path)
    except OSError:
        return False


def group_series(headers: list[_Header], warnings: list[str]) -> tuple[list[_Series], list[_Series]]:
    """Group headers by SeriesInstanceUID and set localizers apart.

    Args:
        headers: image headers.
        warnings: list that receives warnings.

    Returns:
        ``(candidates, localizers)``; candidates sorted by preference (CT before others,
        axial before oblique, most slices first), so ``candidates[0]`` is the default.
    """
    groups: dict[str, list[_Header]] = defaultdict(list)
    for header in headers:
        groups[header.series_uid].append(header)
    if "" in groups:
        warnings.append(f"{len(groups[''])} file(s) have no SeriesInstanceUID: read as one series")
    series = []
    for uid, members in groups.items():
        if uid and not UID(uid).is_valid:
            warnings.append(f"SeriesInstanceUID {uid!r} is not a valid DICOM UID: used as is")
        modality, note = modality_of(members[0].ds)
        if note and note not in warnings:
            warnings.append(note)
        series.append(_Series(uid, members, modality))
    localizers = [s for s in series if all(h.is_localizer for h in s.headers)]
    rest = [s for s in series if s not in localizers]
    main_normal = max(rest, key=lambda s: s.n_slices).normal if rest else None
    for s in list(rest):
        if s.n_slices == 1 and len(rest) > 1 and main_normal is not None and s.normal is not None \
                and abs(float(s.normal @ main_normal)) < 0.99:
            rest.remove(s)
            localizers.append(s)
    for s in rest:  # localizer files mixed into an image series
        scouts = [h for h in s.headers if h.is_localizer]
        if scouts:
            s.headers = [h for h in s.headers if not h.is_localizer]
            warnings.append(f"skipped {len(scouts)} localizer image(s) inside series {s.uid}")
    for s in localizers:
        warnings.append(f"skipped localizer/scout series {s.uid or '(no UID)'} ({s.n_slices} image(s), '{s.description}')")
    rest.sort(key=lambda s: (s.modality != "CT", not s.is_axial, -s.n_slices, s.uid))
    return rest, localizers


def pick_series(candidates: list[_Series], series: str | int | None, warnings: list[str]) -> _Series:
    """Choose the series to read.

    Args:
        candidates: series sorted by preference.
        series: a SeriesInstanceUID, an index into ``candidates``, or None for the default.
        warnings: list that receives a note when a choice among several was made.

    Returns:
        The chosen series.
    """
    listing = "; ".join(f"[{i}] {s.uid} ({s.modality}, {s.n_slices} images)" for i, s in enumerate(candidates))
    if series is None:
        chosen = candidates[0]
        if len(candidates) > 1:
            warnings.append(
                f"{len(candidates)} series found; chose [0] {chosen.uid} ({chosen.modality}, {chosen.n_slices} images, "
                f"'{chosen.description}'). Others are listed in other_series; pick one with series=UID or index")
        return chosen
    if isinstance(series, int) or (isinstance(series, str) and series.isdigit() and series not in {s.uid for s in candidates}):
        index = int(series)
        if not 0 <= index < len(candidates):
            raise ChestDxError(f"series index {index} is out of range: this study has {len(candidates)} series ({listing})")
        return candidates[index]
    for s in candidates:
        if s.uid == series:
            return s
    raise ChestDxError(f"series {series!r} not found in this study: choose a UID or index among {listing}")


def _positions(headers: list[_Header], normal: np.ndarray | None) -> np.ndarray | None:
    if normal is None or any("ImagePositionPatient" not in h.ds for h in headers):
        return None
    try:
        positions = np.array([float(np.asarray(h.ds.ImagePositionPatient, float) @ normal) for h in headers])
    except (TypeError, ValueError):
        return None
    return positions if np.isfinite(positions).all() else None  # NaN positions would sort anywhere


def order_slices(headers: list[_Header], warnings: list[str]) -> tuple[list[_Header], np.ndarray | None]:
    """Put single-frame slices in physical order and drop repeated SOP instances.

    Sorts by ImagePositionPatient projected on the slice normal; falls back to
    InstanceNumber, then to file order, each with a warning. Never by file name.

    Args:
        headers: headers of one series.
        warnings: list that receives warnings.

    Returns:
        ``(headers, positions)``: sorted headers and their positions along the normal
        (None when positions are unknown).
    """
    seen, unique = set(), []
    for h in headers:
        sop = str(h.ds.get("SOPInstanceUID", "") or "")
        if sop and sop in seen:
            continue
        seen.add(sop)
        unique.append(h)
    if len(unique) < len(headers):
        warnings.append(f"dropped {len(headers) - len(unique)} duplicate file(s) (same SOPInstanceUID)")
    headers = unique
    normal = headers[0].normal
    positions = _positions(headers, normal)
    if positions is not None:
        order = np.argsort(positions, kind="stable")
        return [headers[i] for i in order], positions[order]
    if len(headers) > 1:
        numbers = [h.ds.get("InstanceNumber") for h in headers]
        if all(n is not None and str(n).strip() != "" for n in numbers):
            warnings.append("ImagePositionPatient/ImageOrientationPatient missing: slices ordered by InstanceNumber")
            order = np.argsort([int(n) for n in numbers], kind="stable")
            return [headers[i] for i in order], None
        warnings.append("no slice positions and no InstanceNumber: slices kept in file order, which may be wrong")
    return headers, None


def drop_duplicate_slices(pixels: list[np.ndarray], positions: np.ndarray | None, warnings: list[str]) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Drop slices that repeat the previous slice's position and pixels exactly.

    Same pixels at another position, or another image at the same position, are kept
    with a warning.

    Args:
        pixels: 2-D slices in physical order.
        positions: their positions along the normal, or None.
        warnings: list that receives warnings.

    Returns:
        ``(pixels, positions)`` without the repeats.
    """
    if positions is None or len(pixels) < 2:
        return pixels, positions
    keep, same_position, copies = [0], 0, 0
    for i in range(1, len(pixels)):
        identical = np.array_equal(pixels[i], pixels[keep[-1]])
        if abs(positions[i] - positions[keep[-1]]) < 1e-3:
            if identical:
                continue
            same_position += 1
        copies += identical
        keep.append(i)
    if copies:
        warnings.append(f"{copies} slice(s) repeat the previous slice's image: identical pixels at different positions "
                        "(copied slices?)")
    if len(keep) < len(pixels):
        warnings.append(f"dropped {len(pixels) - len(keep)} duplicate slice(s) (same position and identical pixels)")
    if same_position:
        warnings.append(f"{same_position} slice(s) share a position with a different image (several acquisitions in one "
                        "series?); all kept")
    return [pixels[i] for i in keep], positions[keep]


def _finite(value) -> float | None:
    """A header's number as a finite float, or None (missing, empty, not a number, NaN or infinite)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _finite_values(value, count: int) -> tuple[float, ...] | None:
    """A header's ``count`` numbers as finite floats, or None when any is missing or not finite."""
    try:
        if value is None or isinstance(value, (str, bytes)) or len(value) != count:
            return None
    except TypeError:
        return None
    numbers = tuple(_finite(v) for v in value)
    return None if any(n is None for n in numbers) else numbers


def slice_spacing(positions: np.ndarray | None, ds: Dataset, warnings: list[str]) -> float:
    """Spacing between slices in mm.

    Args:
        positions: sorted positions along the slice normal, or None.
        ds: a header of the series (for SpacingBetweenSlices / SliceThickness).
        warnings: list that receives warnings.

    Returns:
        The median step between positions, else SpacingBetweenSlices, SliceThickness or 1.0.
    """
    if positions is not None and len(positions) > 1:
        steps = np.diff(positions)
        steps = steps[steps > 1e-3]
        if steps.size:
            median = float(np.median(steps))
            if steps.max() > 1.5 * median or steps.min() < 0.5 * median:
                warnings.append(f"uneven slice spacing ({steps.min():.2f} to {steps.max():.2f} mm, median {median:.2f}): "
                                "slices may be missing")
            return median
        warnings.append("all slices have the same position")
    for tag in ("SpacingBetweenSlices", "SliceThickness"):
        value = _finite(ds.get(tag))
        if value is not None and value > 0:
            if positions is not None and len(positions) > 1:
                warnings.append(f"slice spacing taken from {tag} ({float(value)} mm)")
            return float(value)
    warnings.append("slice spacing unknown: 1.0 mm assumed")
    return 1.0


def pixel_spacing(ds: Dataset, warnings: list[str]) -> tuple[float, float]:
    """Returns: in-plane spacing ``(row, column)`` in mm from PixelSpacing (1.0 with a warning when absent)."""
    for tag in ("PixelSpacing", "ImagerPixelSpacing"):
        value = _finite_values(ds.get(tag), 2)
        if value is not None and value[0] > 0 and value[1] > 0:
            return value[0], value[1]
    warnings.append("PixelSpacing missing: 1.0 mm assumed")
    return 1.0, 1.0


def deidentified_metadata(ds: Dataset, keep_phi: bool) -> dict:
    """Copy harmless technical tags (and, when asked, identifying ones) into a plain dict.

    Args:
        ds: a dataset of the chosen series.
        keep_phi: also copy patient name, id, birth date, accession number, institution.

    Returns:
        JSON-ready dict keyed by DICOM keyword.
    """
    out = {}
    for tag in SAFE_TAGS + (PHI_TAGS if keep_phi else ()):
        value = ds.get(tag)
        if value is None or value == "":
            continue
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            out[tag] = [_plain(v) for v in value]
        else:
            out[tag] = _plain(value)
    if transfer_syntax_name(ds):
        out["TransferSyntax"] = transfer_syntax_name(ds)
    return out


def _plain(value):
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)


def transfer_syntax_name(ds: Dataset) -> str:
    """Returns: the name of the dataset's transfer syntax, or "" when it has no file meta."""
    transfer = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    return UID(str(transfer)).name if transfer else ""


def reason(exc: BaseException) -> str:
    """Args: exc: a library's exception. Returns: its first line, at most 200 characters (decoders' messages run long)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _read_full(header: _Header) -> Dataset:
    """The header's data set with its deferred values (the pixel data) read from the file."""
    try:
        for keyword in PIXEL_KEYWORDS:
            if keyword in header.ds:
                header.ds[keyword]  # reads the deferred value now, so that a failure is named as the file's
        return header.ds
    except Exception as exc:  # pydicom raises many types on damaged files
        raise ChestDxError(f"cannot read DICOM file {header.name} ({reason(exc)}): the file is damaged or truncated; "
                           "re-export the series or remove that file") from exc


def _release_pixels(ds: Dataset) -> None:
    """Drop a decoded file's pixel data and pydicom's cached array: the headers outlive the reading of a series."""
    for keyword in PIXEL_KEYWORDS:
        if keyword in ds:
            delattr(ds, keyword)


def _pixels(ds: Dataset, name: str) -> np.ndarray:
    try:
        if getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None) == RLELossless:
            # pydicom's own RLE decoder: pylibjpeg-rle's (Rust) panics on a damaged frame, printing the panic
            # and a backtrace straight to stderr and raising an exception that is no Exception
            ds.pixel_array_options(decoding_plugin="pydicom")
        return ds.pixel_array
    except Exception as exc:  # decoders raise ValueError, RuntimeError, NotImplementedError ...
        raise _undecodable(ds, name, exc) from exc
    except BaseException as exc:
        if type(exc).__name__ != "PanicException":  # a Rust decoder's panic (pyo3) derives from BaseException
            raise
        raise _undecodable(ds, name, exc) from None


def _undecodable(ds: Dataset, name: str, exc: BaseException) -> ChestDxError:
    return ChestDxError(f"cannot decode the pixels of {name} (transfer syntax {transfer_syntax_name(ds) or '?'}): "
                        f"{reason(exc)}. The file may be truncated, or compressed in a way the installed decoders "
                        "(pylibjpeg) do not handle; re-export it uncompressed or remove it")


def to_hu(stored: np.ndarray, ds: Dataset) -> np.ndarray:
    """Stored pixel values to Hounsfield units (the modality LUT), as float32.

    Plain rescale slope/intercept, the usual case, is computed in float32 directly; a
    Modality LUT Sequence or an enhanced multi-frame object goes through pydicom's
    ``apply_modality_lut``.

    Args:
        stored: stored values of one image (or frames).
        ds: its dataset.

    Returns:
        float32 HU, same shape.
    """
    if "ModalityLUTSequence" in ds or "RescaleSlope" not in ds or "RescaleIntercept" not in ds:
        return np.asarray(apply_modality_lut(stored, ds), dtype=np.float32)
    hu = stored.astype(np.float32)
    hu *= np.float32(ds.RescaleSlope)
    hu += np.float32(ds.RescaleIntercept)
    return hu


def _check_sizes(headers: list[_Header]) -> None:
    sizes = defaultdict(list)
    for h in headers:
        sizes[h.size].append(h.name)
    if len(sizes) > 1:
        detail = ", ".join(f"{r}x{c}: {len(n)} (e.g. {n[0]})" for (r, c), n in sizes.items())
        raise ChestDxError(f"the series mixes image sizes ({detail}): one series must have one size; "
                           "remove the odd files or pick another series")
    rows, cols = next(iter(sizes))
    if min(rows, cols) < MIN_SIDE:
        raise ChestDxError(f"images of {rows}x{cols} pixels are too small to read (at least {MIN_SIDE}x{MIN_SIDE} needed)")


def read_ct(series: _Series, *, kind: str | None, keep_phi: bool, progress: bool, warnings: list[str], source: str) -> Study:
    """Read one CT series as float32 Hounsfield units in physical slice order.

    Args:
        series: the chosen series (modality CT).
        kind: None, ``"ct-volume"`` or ``"ct-slice"``.
        keep_phi: keep identifying tags in the metadata.
        progress: show a progress bar.
        warnings: warnings collected so far (extended in place).
        source: the path the user gave.

    Returns:
        The Study.
    """
    if series.modality != "CT":
        hint = " (it is an X-ray: load it with kind='xray')" if series.modality in XRAY_MODALITIES else ""
        raise ChestDxError(f"series {series.uid or '(no UID)'} is {series.modality}, not CT{hint}: chestdx reads chest CT "
                           "and chest X-ray only; point it at a CT series")
    _check_sizes(series.headers)
    headers, positions = order_slices(series.headers, warnings)
    slices, frame_positions, frame_headers = [], [], []
    first = None
    for i, header in enumerate(progress_bar(headers, "reading slices", "slice", enabled=progress, min_items=2)):
        ds = _read_full(header)
        if first is None:
            first = ds
        hu = to_hu(_pixels(ds, header.name), ds)
        _release_pixels(ds)
        if hu.ndim == 2:
            slices.append(hu)
            frame_positions.append(None if positions is None else positions[i])
            frame_headers.append(header)
        else:  # multi-frame: frames kept in stored order
            if len(headers) == 1:
                warnings.append(f"multi-frame file ({hu.shape[0]} frames): frames kept in stored order")
            slices.extend(list(hu))
            frame_positions.extend([None] * hu.shape[0])
            frame_headers.extend([None] * hu.shape[0])
    if "RescaleIntercept" not in first and "SharedFunctionalGroupsSequence" not in first:
        warnings.append("RescaleIntercept missing: stored values used as HU")
    positions = None if any(p is None for p in frame_positions) else np.array(frame_positions, float)
    header_of = {id(image): header for image, header in zip(slices, frame_headers)}
    slices, positions = drop_duplicate_slices(slices, positions, warnings)
    references = dicom_references([header_of[id(image)] for image in slices])
    volume = np.stack(slices)
    if kind == "ct-slice" and len(volume) > 1:
        raise ChestDxError(f"kind='ct-slice' was asked for but the series has {len(volume)} slices: "
                           "leave kind unset to read the volume, or point at a single slice file")
    spacing_z = slice_spacing(positions, first, warnings)
    spacing_y, spacing_x = pixel_spacing(first, warnings)
    if series.normal is not None and not series.is_axial:
        warnings.append(f"series is not axial (slice normal {np.round(series.normal, 2).tolist()}): slices kept as acquired")
    study_kind = kind or ("ct-volume" if len(volume) > 1 else "ct-slice")
    metadata = deidentified_metadata(first, keep_phi)
    metadata["Modality"] = "CT"
    return Study(volume, "hu", (spacing_z, spacing_y, spacing_x), "CT", study_kind, source,
                 series.uid or None, positions, metadata, warnings, dicom=references)


def dicom_references(headers: list[_Header | None]) -> DicomReferences | None:
    """The UIDs and geometry derived DICOM objects reference, one entry per slice.

    Args:
        headers: the header of each slice in physical order (None for a frame of a multi-frame file).

    Returns:
        The references, or None when a slice has no file of its own or the UIDs are missing.
    """
    if not headers or any(h is None for h in headers):
        return None
    ds = headers[0].ds
    uids = tuple(str(h.ds.get("SOPInstanceUID", "") or "") for h in headers)
    if not all(uids) or not ds.get("StudyInstanceUID") or not ds.get("SeriesInstanceUID"):
        return None
    # geometry only where every number is finite: DICOM results cannot encode NaN or infinity
    positions = [_finite_values(h.ds.get("ImagePositionPatient"), 3) for h in headers]
    positions = np.array(positions) if all(p is not None for p in positions) else None
    return DicomReferences(
        study_uid=str(ds.StudyInstanceUID), series_uid=str(ds.SeriesInstanceUID),
        sop_class_uid=str(ds.get("SOPClassUID", "") or ""), sop_instance_uids=uids,
        frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "") or "") or None, image_positions=positions,
        image_orientation=_finite_values(ds.get("ImageOrientationPatient"), 6),
        pixel_spacing=_finite_values(ds.get("PixelSpacing"), 2),
        slice_thickness=_finite(ds.get("SliceThickness")),
        study_date=str(ds.get("StudyDate", "") or ""), study_time=str(ds.get("StudyTime", "") or ""))


def xray_to_8bit(ds: Dataset, name: str, warnings: list[str]) -> np.ndarray:
    """Turn an X-ray dataset's pixels into a 0-255 display image.

    Applies the modality LUT, the VOI LUT or window when present, inverts MONOCHROME1,
    converts colour to grey and rescales min..max to 0..255.

    Args:
        ds: a full dataset (with pixel data).
        name: the file name for messages.
        warnings: list that receives warnings.

    Returns:
        float32 array ``(y, x)`` in 0..255.
    """
    arr = _pixels(ds, name)
    if int(ds.get("SamplesPerPixel", 1)) == 3:
        arr = arr[0] if arr.ndim == 4 else arr
        grey = arr[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        photometric = "MONOCHROME2"
    else:
        if arr.ndim == 3:
            warnings.append(f"multi-frame X-ray ({arr.shape[0]} frames): first frame used")
            arr = arr[0]
        grey = apply_modality_lut(arr, ds)
        if "VOILUTSequence" in ds or "WindowCenter" in ds:
            grey = apply_voi_lut(grey, ds)
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    grey = np.asarray(grey, np.float32)
    lo, hi = float(grey.min()), float(grey.max())
    if hi <= lo:
        warnings.append("the X-ray has a single grey value")
        return np.zeros_like(grey)
    scaled = (grey - lo) * (255.0 / (hi - lo))
    return 255.0 - scaled if photometric == "MONOCHROME1" else scaled


def read_xray(series: _Series, *, keep_phi: bool, warnings: list[str], source: str) -> Study:
    """Read a chest X-ray DICOM (CR/DX) as an 8-bit frontal image.

    Args:
        series: the chosen series; its first image is used.
        keep_phi: keep identifying tags in the metadata.
        warnings: warnings collected so far (extended in place).
        source: the path the user gave.

    Returns:
        The Study (kind ``"xray"``, intensity ``"8bit"``).
    """
    header = series.headers[0]
    view = str(header.ds.get("ViewPosition", "") or "").strip().upper()
    if view in LATERAL_VIEWS:
        raise ChestDxError(f"{header.name} is a lateral view (ViewPosition {view}): chestdx reads frontal (PA/AP) chest "
                           "X-rays only; give the frontal image of the study")
    if series.modality not in XRAY_MODALITIES:
        warnings.append(f"read as an X-ray although the modality is {series.modality}")
    if len(series.headers) > 1:
        warnings.append(f"series has {len(series.headers)} images: the first ({header.name}) was used")
    _check_sizes([header])
    ds = _read_full(header)
    if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
        warnings.append("BurnedInAnnotation is YES: text burned into the image may identify the patient or bias a model")
    image = xray_to_8bit(ds, header.name, warnings)
    spacing_y, spacing_x = pixel_spacing(ds, warnings)
    return Study(image, "8bit", (1.0, spacing_y, spacing_x), series.modality, "xray", source, series.uid or None,
                 None, deidentified_metadata(ds, keep_phi), warnings)


@contextmanager
def _quiet_pydicom() -> Iterator[None]:
    """Silence pydicom's value-validation warnings while reading; chestdx reports what matters itself."""
    mode = pydicom.config.settings.reading_validation_mode
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    try:
        with pywarnings.catch_warnings():
            pywarnings.simplefilter("ignore")
            yield
    finally:
        pydicom.config.settings.reading_validation_mode = mode


def read_dicom(paths: list[Path | io.BytesIO], names: list[str], *, series: str | int | None, kind: str | None, keep_phi: bool,
               progress: bool, source: str, single_file: bool = False) -> Study:
    """Read DICOM files (one file, a folder's or a zip's) into a Study.

    Args:
        paths: candidate DICOM files, on disk or in memory (a zip's members).
        names: how to name each file in messages.
        series: SeriesInstanceUID or index to read instead of the default choice.
        kind: None (decide from the modality), ``"xray"``, ``"ct-slice"`` or ``"ct-volume"``.
        keep_phi: keep identifying tags in the metadata.
        progress: show progress bars.
        source: the path the user gave.
        single_file: the user pointed at one file (unreadable -> error, not warning).

    Returns:
        The Study.
    """
    with _quiet_pydicom():
        warnings: list[str] = []
        headers, unreadable, non_image = read_headers(paths, names, progress=progress)
        if single_file and unreadable:
            raise ChestDxError(f"{names[0]} is not a readable DICOM file (not DICOM, or truncated): check the file, "
                               "or re-export it from the PACS/viewer")
        if not headers:
            detail = f"{len(unreadable)} unreadable (e.g. {unreadable[0]})" if unreadable else ""
            detail += f"{', ' if detail else ''}{len(non_image)} without an image (e.g. {non_image[0]})" if non_image else ""
            raise ChestDxError(f"no readable DICOM image in {source} ({detail}): the files are not DICOM images or are "
                               "damaged; point chestdx at a folder of CT slices or an X-ray file")
        if unreadable:
            warnings.append(f"skipped {len(unreadable)} file(s) that are not readable DICOM (e.g. {unreadable[0]})")
        if non_image:
            warnings.append(f"skipped {len(non_image)} DICOM object(s) without an image (e.g. {non_image[0]})")
        candidates, _ = group_series(headers, warnings)
        if not candidates:
            raise ChestDxError(f"{source} holds only localizer/scout images: point chestdx at the axial CT series")
        chosen = pick_series(candidates, series, warnings)
        others = [s.describe(i) for i, s in enumerate(candidates) if s is not chosen]
        if kind == "xray" or (kind is None and chosen.modality in XRAY_MODALITIES):
            study = read_xray(chosen, keep_phi=keep_phi, warnings=warnings, source=source)
        else:
            study = read_ct(chosen, kind=kind, keep_phi=keep_phi, progress=progress, warnings=warnings, source=source)
        study.other_series = others
        return study
