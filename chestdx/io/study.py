"""The `Study` object every later stage reads from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Intensity = Literal["hu", "8bit"]
Kind = Literal["ct-volume", "ct-slice", "xray"]


@dataclass(frozen=True)
class DicomReferences:
    """What derived DICOM objects (SR, SEG, secondary captures) reference: the source's UIDs and geometry.

    Kept even when ``Study.metadata`` is de-identified: UIDs name images, not patients, and a
    result that cannot point at its images is of no use in a PACS.

    Args:
        study_uid: StudyInstanceUID.
        series_uid: SeriesInstanceUID.
        sop_class_uid: SOPClassUID of the slices (e.g. CT Image Storage).
        sop_instance_uids: SOPInstanceUID of each slice of ``Study.pixels``, in that (physical) order.
        frame_of_reference_uid: FrameOfReferenceUID, or None when absent.
        image_positions: ``(z, 3)`` ImagePositionPatient of each slice (mm), or None when any is missing.
        image_orientation: ImageOrientationPatient (6 direction cosines), or None.
        pixel_spacing: PixelSpacing ``(row, column)`` in mm, or None.
        slice_thickness: SliceThickness in mm, or None.
        study_date: StudyDate (``YYYYMMDD``) or "".
        study_time: StudyTime or "".
    """

    study_uid: str
    series_uid: str
    sop_class_uid: str
    sop_instance_uids: tuple[str, ...]
    frame_of_reference_uid: str | None = None
    image_positions: np.ndarray | None = None
    image_orientation: tuple[float, ...] | None = None
    pixel_spacing: tuple[float, float] | None = None
    slice_thickness: float | None = None
    study_date: str = ""
    study_time: str = ""


@dataclass
class Study:
    """One imaging study, ready for preprocessing.

    Args:
        pixels: float32 array ``(z, y, x)``; Hounsfield units when ``intensity == "hu"``,
            else 0-255 intensity (``"8bit"``; 16-bit images are rescaled to 0-255).
            Slices are in physical order (feet to head for axial CT when positions are
            known). X-rays and single slices have ``z == 1``.
        intensity: ``"hu"`` or ``"8bit"``: what the pixel values mean. Never guessed later.
        spacing: voxel spacing ``(z, y, x)`` in mm; 1.0 where unknown.
        modality: DICOM modality (``"CT"``, ``"CR"``, ``"DX"``) or ``"OT"`` for plain images.
        kind: ``"ct-volume"``, ``"ct-slice"`` or ``"xray"``.
        source: the path the study was read from.
        series_uid: SeriesInstanceUID of the chosen series, or None.
        slice_positions: position of each slice along the slice normal (mm), or None.
        metadata: de-identified metadata (no patient name, id or birth date unless the
            reader was asked to keep them).
        warnings: human-readable warnings collected while reading.
        other_series: short descriptions (dicts with ``uid``, ``n_slices``,
            ``description``, ``modality``, and ``index``: the value to pass as
            ``load_study(..., series=index)``) of the series found but not chosen.
        dicom: the DICOM references of the slices (UIDs, geometry), or None when the study
            was not read from single-frame DICOM files.
    """

    pixels: np.ndarray
    intensity: Intensity
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    modality: str = "OT"
    kind: Kind = "ct-volume"
    source: str = ""
    series_uid: str | None = None
    slice_positions: np.ndarray | None = None
    metadata: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    other_series: list[dict] = field(default_factory=list)
    dicom: DicomReferences | None = None

    def __post_init__(self) -> None:
        if self.pixels.ndim == 2:
            self.pixels = self.pixels[None]
        if self.pixels.ndim != 3:
            raise ValueError(f"Study.pixels must be (z, y, x), got shape {self.pixels.shape}")
        self.pixels = np.ascontiguousarray(self.pixels, dtype=np.float32)
        if self.intensity not in ("hu", "8bit"):
            raise ValueError(f"Study.intensity must be 'hu' or '8bit', got {self.intensity!r}")
        if self.dicom is not None and len(self.dicom.sop_instance_uids) != self.n_slices:
            raise ValueError(f"Study.dicom names {len(self.dicom.sop_instance_uids)} SOP instances for {self.n_slices} slices")

    @property
    def n_slices(self) -> int:
        """Number of slices (1 for an X-ray or a single CT slice)."""
        return int(self.pixels.shape[0])

    def summary(self) -> dict:
        """A JSON-ready description, as printed by ``chestdx info --json``.

        Returns:
            dict with ``kind``, ``n_slices``, ``shape``, ``spacing``, ``modality``,
            ``intensity``, ``min``, ``max``, ``series_uid``, ``other_series``,
            ``source``, ``metadata`` and ``warnings``.
        """
        return {
            "kind": self.kind,
            "n_slices": self.n_slices,
            "shape": list(self.pixels.shape),
            "spacing": [round(float(s), 4) for s in self.spacing],
            "modality": self.modality,
            "intensity": self.intensity,
            "min": float(self.pixels.min()),
            "max": float(self.pixels.max()),
            "series_uid": self.series_uid,
            "other_series": self.other_series,
            "source": self.source,
            "metadata": self.metadata,
            "warnings": list(self.warnings),
        }
