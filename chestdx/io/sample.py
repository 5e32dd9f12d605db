"""A synthetic chest CT written as a real DICOM series, for demos and tests.

The phantom is drawn, not scanned: it is NOT patient data and must never be used to
train or evaluate a model. Every file says so in SeriesDescription.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pydicom
import pydicom.uid
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.pixels import get_encoder
from pydicom.uid import UID, generate_uid

from chestdx.errors import ChestDxError
from chestdx.progress import progress as progress_bar

SAMPLE_DESCRIPTION = "chestdx synthetic sample - not patient data"
PHANTOM_CONTENTS = ("a drawn chest CT phantom, two lungs with vessels and a few peripheral ground-glass patches "
                    "(the look of COVID-19 pneumonia)")
"""What the sample shows, for the message of ``chestdx sample``."""
_SOP_CLASS = {
    "CT": pydicom.uid.CTImageStorage,
    "CR": pydicom.uid.ComputedRadiographyImageStorage,
    "DX": pydicom.uid.DigitalXRayImageStorageForPresentation,
    "MR": pydicom.uid.MRImageStorage,
}
_LOSSLESS = ("RLELossless", "JPEGLSLossless", "JPEG2000Lossless")


@dataclass
class _Phantom:
    """Random shape parameters of one synthetic chest, drawn once per seed."""

    vessels: np.ndarray  # (n, 6): side (0 left / 1 right), u0, v0, du, dv, radius (lung-relative units)
    patches: np.ndarray  # (n, 6): side, t centre, u, v, radius in (u, v), half-height in t


def _draw_phantom(rng: np.random.Generator) -> _Phantom:
    n_vessels = 24
    vessels = np.column_stack([
        rng.integers(0, 2, n_vessels), rng.uniform(-0.7, 0.7, (n_vessels, 2)),
        rng.uniform(-0.3, 0.3, (n_vessels, 2)), rng.uniform(0.025, 0.05, n_vessels)])
    n_patches = 4
    angle = rng.uniform(0.2, 1.2, n_patches)  # peripheral, posterior-lateral
    patches = np.column_stack([
        rng.integers(0, 2, n_patches), rng.uniform(0.15, 0.35, n_patches),
        0.65 * np.cos(angle), 0.65 * np.sin(angle), rng.uniform(0.15, 0.25, n_patches),
        rng.uniform(0.04, 0.08, n_patches)])
    return _Phantom(vessels, patches)


@lru_cache(maxsize=2)
def _grid(size: int) -> np.ndarray:
    return np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5


def _phantom_slice(phantom: _Phantom, t: float, size: int, noise: np.ndarray) -> np.ndarray:
    """HU image of the phantom at relative height ``t`` (0 = feet end, 1 = head end)."""
    yy, xx = _grid(size)
    hu = np.full((size, size), -1000.0, np.float32)
    body_a, body_b = 0.42, 0.30 - 0.02 * t
    body = (xx / body_a) ** 2 + (yy / body_b) ** 2
    hu[body <= 1.0] = -100.0  # subcutaneous fat
    hu[(xx / (body_a - 0.03)) ** 2 + (yy / (body_b - 0.03)) ** 2 <= 1.0] = 40.0  # soft tissue
    hu[(np.abs(yy - 0.33) < 0.012) & (np.abs(xx) < 0.45)] = 250.0  # table
    spine = np.hypot(xx, yy - 0.2)
    hu[spine < 0.05] = 300.0
    hu[(spine >= 0.04) & (spine < 0.05)] = 900.0
    scale = 0.15 + 0.85 * np.sin(np.pi * np.clip(t, 0.0, 1.0)) ** 0.6  # small lungs at both ends
    lung_a, lung_b = 0.12 * scale, 0.19 * scale
    for side, cx in enumerate((-0.17, 0.17)):
        box = (slice(int((0.49 - lung_b) * size), int((0.49 + lung_b) * size) + 2),
               slice(int((0.5 + cx - lung_a) * size), int((0.5 + cx + lung_a) * size) + 2))
        u, v = (xx[box] - cx) / lung_a, (yy[box] + 0.01) / lung_b
        lung = u ** 2 + v ** 2 <= 1.0
        image = np.full(u.shape, -850.0, np.float32)
        for s, u0, v0, du, dv, radius in phantom.vessels:
            if int(s) == side:
                cu, cv = u0 + du * (t - 0.5), v0 + dv * (t - 0.5)
                image[(u - cu) ** 2 + (v - cv) ** 2 < (radius / scale) ** 2] = 40.0
        for s, tc, pu, pv, radius, half_height in phantom.patches:
            pu = -pu if side == 0 else pu  # lateral on both sides
            if int(s) == side and abs(t - tc) < half_height:
                r2 = radius ** 2 * (1.0 - ((t - tc) / half_height) ** 2)
                patch = (u - pu) ** 2 + (v - pv) ** 2 < r2
                image[patch & (image < -600)] = -500.0
        hu[box][lung] = image[lung]
    return hu + noise


def synthetic_chest_ct(n_slices: int = 120, size: int = 512, seed: int = 0) -> np.ndarray:
    """A synthetic chest CT volume in Hounsfield units (NOT patient data).

    Body with a fat layer, two lungs (about -850 HU) with vessels (+40 HU) and a few
    ground-glass patches (about -500 HU) low and peripheral in the lungs, spine, table,
    air (-1000 HU) outside; lungs shrink towards both ends.

    Args:
        n_slices: number of axial slices, slice 0 at the feet end.
        size: rows and columns.
        seed: seed of the numpy generator (same seed, same volume).

    Returns:
        float32 array ``(n_slices, size, size)`` in HU.
    """
    return np.stack(list(_phantom_slices(n_slices, size, seed)))


def _phantom_slices(n_slices: int, size: int, seed: int) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    phantom = _draw_phantom(rng)
    for i in range(n_slices):
        noise = rng.normal(0, 12, (size, size)).astype(np.float32)
        yield _phantom_slice(phantom, (i + 0.5) / n_slices, size, noise)


def new_dataset(pixels: np.ndarray, *, modality: str = "CT", uid_seed: str | None = None, **tags) -> FileDataset:
    """A minimal valid DICOM image dataset holding ``pixels`` (uncompressed).

    Args:
        pixels: 2-D ``int16`` or ``uint16`` stored values.
        modality: ``"CT"``, ``"CR"``, ``"DX"`` or ``"MR"`` (sets the SOP Class).
        uid_seed: makes the SOP Instance UID deterministic (random when None).
        **tags: further DICOM keywords and values (e.g. ``SeriesInstanceUID``,
            ``ImagePositionPatient``, ``RescaleIntercept``).

    Returns:
        A FileDataset ready for ``save_as``.
    """
    sop_class = _SOP_CLASS[modality]
    sop_instance = generate_uid(entropy_srcs=[uid_seed]) if uid_seed else generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = sop_class, sop_instance, modality
    ds.PatientName, ds.PatientID = "Synthetic^Phantom", "CHESTDX-SYNTHETIC"
    ds.SeriesDescription = SAMPLE_DESCRIPTION
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["study", str(uid_seed)]) if uid_seed else generate_uid()
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["series", str(uid_seed)]) if uid_seed else generate_uid()
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    return ds


def _transfer_syntax(value: str) -> UID:
    uid = UID(value) if value[:1].isdigit() else UID(getattr(pydicom.uid, value, value))
    try:
        available = get_encoder(uid).is_available
    except (NotImplementedError, ValueError, KeyError):
        available = False
    if not available:
        raise ChestDxError(f"cannot write transfer syntax {value!r} here: use one of {', '.join(_LOSSLESS)} "
                           "(JPEGLSLossless needs the pyjpegls package)")
    return uid


def _prepare_folder(out: Path) -> list[Path]:
    """Refuse a folder holding anything but an earlier chestdx sample; return that sample's files."""
    if out.exists() and not out.is_dir():
        raise ChestDxError(f"{out} exists and is not a folder: give a new or empty folder for the sample")
    old = []
    for entry in sorted(out.iterdir()) if out.exists() else []:
        ours = entry.is_file() and entry.suffix == ".dcm"
        if ours:
            try:
                ours = pydicom.dcmread(entry, stop_before_pixels=True).get("SeriesDescription") == SAMPLE_DESCRIPTION
            except Exception:  # any unreadable file is not ours
                ours = False
        if not ours:
            raise ChestDxError(f"{out} already holds other files (e.g. {entry.name}): give a new or empty folder; "
                               "chestdx never overwrites data")
        old.append(entry)
    return old


def write_sample_series(out_dir, n_slices: int = 120, size: int = 512, seed: int = 0,
                        transfer_syntax: str | None = None, progress: bool = True) -> list[Path]:
    """Write a synthetic chest CT as a DICOM series (for demos and tests only, NOT patient data).

    int16 pixels with RescaleIntercept -1024 and RescaleSlope 1, 0.7 mm pixels, 2.5 mm
    between axial slices, file names shuffled (random, not in slice order). The same
    seed gives the same files. An earlier chestdx sample in ``out_dir`` is replaced; any
    other content makes it refuse.

    Args:
        out_dir: folder to write (created when missing).
        n_slices: number of slices.
        size: rows and columns.
        seed: seed of the numpy generator.
        transfer_syntax: None for uncompressed, or a lossless transfer syntax UID or
            pydicom keyword (``RLELossless``, ``JPEGLSLossless``, ``JPEG2000Lossless``).
        progress: show a progress bar.

    Returns:
        The written files, in slice order (feet to head).
    """
    out = Path(out_dir).expanduser()
    if n_slices < 1 or size < 16:
        raise ChestDxError("the sample needs at least 1 slice of at least 16x16 pixels")
    syntax = _transfer_syntax(transfer_syntax) if transfer_syntax else None
    old = _prepare_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    for path in old:
        path.unlink()
    names = np.random.default_rng([seed, 1]).choice(16**8, n_slices, replace=False)
    key = f"chestdx-sample-{seed}-{n_slices}-{size}"
    spacing, pixel = 2.5, 0.7
    files = []
    slices = _phantom_slices(n_slices, size, seed)
    for i, hu in enumerate(progress_bar(slices, "writing sample", "slice", total=n_slices, enabled=progress)):
        stored = np.clip(np.round(hu) + 1024, 0, 4095).astype(np.int16)
        ds = new_dataset(
            stored, modality="CT", uid_seed=f"{key}-{i}",
            StudyInstanceUID=generate_uid(entropy_srcs=[key, "study"]),
            SeriesInstanceUID=generate_uid(entropy_srcs=[key, "series"]),
            FrameOfReferenceUID=generate_uid(entropy_srcs=[key, "frame"]),
            ImageType=["ORIGINAL", "PRIMARY", "AXIAL"], SeriesNumber=1, InstanceNumber=i + 1,
            ImagePositionPatient=[-pixel * size / 2, -pixel * size / 2, -300.0 + spacing * i],
            ImageOrientationPatient=[1, 0, 0, 0, 1, 0], PixelSpacing=[pixel, pixel],
            SliceThickness=spacing, RescaleIntercept=-1024, RescaleSlope=1, RescaleType="HU",
            WindowCenter=-600, WindowWidth=1500, KVP=120, BodyPartExamined="CHEST",
            Manufacturer="chestdx", StudyDate="20200101", PatientSex="O",
        )
        if syntax is not None:
            ds.compress(syntax)
        path = out / f"{names[i]:08x}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files
