"""A diagnosis as DICOM objects a PACS stores beside the images: a structured report, key-slice captures, a segmentation.

- **SR**: a Comprehensive 3D SR holding a TID 1500 measurement report: each class's
  probability, the operating threshold, the decision, the model (name and version) and the
  key (top) slices as the group's source images.
- **SC**: a Secondary Capture per key slice with the heat map burned in (when the diagnosis
  has an explanation) and a visible "NOT FOR DIAGNOSIS - research use only" caption.
- **SEG**: a DICOM Segmentation of the lung mask of the pipeline's pass and, when the lesion
  model is installed, one segment per lesion type it labels (ground-glass opacity,
  consolidation; `lesion_segments`), on the slices it examined.

Every object belongs to the source study (StudyInstanceUID, references to the source's SOP
instances; see `chestdx.io.study.DicomReferences`). By default the outputs are de-identified:
no patient name, patient id, birth date, accession number or referring physician. A PACS
files an object under the patient in its patient module, so results sent back to a PACS must
carry the source's: ``keep_patient=True`` copies it from ``Study.metadata``, which holds it
only when the study was read with ``load_study(..., keep_phi=True)``.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

import chestdx
from chestdx.errors import ChestDxError
from chestdx.explain.overlay import overlay_rgb
from chestdx.pipeline import Diagnosis

try:
    import highdicom as hd
except ImportError:  # the optional extra ``dicom-out``
    hd = None

log = logging.getLogger("chestdx.outputs")
CAPTION = "NOT FOR DIAGNOSIS - research use only"  # ASCII: the default font has no em dash
MANUFACTURER = "chestdx"
SERIES_NUMBERS = {"sr": 901, "sc": 902, "seg": 903}
CODING_SCHEME = "99CHESTDX"  # private coding scheme (the 99 prefix) for the model's classes and outputs
PROCEDURE_CT_CHEST = hd.sr.CodedConcept("24627-2", "LN", "CT Chest") if hd else None
PATIENT_TAGS = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "StudyID", "ReferringPhysicianName")
LESION_CATEGORY = codes.SCT.MorphologicallyAbnormalStructure
LESION_TYPES = {"ground-glass": ("ground-glass opacity", codes.DCM.GroundGlassOpacity),
                "consolidation": ("consolidation", Code("95436008", "SCT", "Lung consolidation"))}
"""Segment label and SegmentedPropertyTypeCode of each lesion class of the lesion model
(`chestdx.models.lesion.CLASSES`, background excluded)."""


@dataclass
class MaskSegment:
    """One segment of a DICOM Segmentation: a mask over the study's slices and what it shows.

    Args:
        label: the segment's label (e.g. ``"lung"``, ``"ground-glass opacity"``).
        mask: bool ``(z, y, x)`` on ``Study.pixels``.
        category: SegmentedPropertyCategoryCode (e.g. ``codes.SCT.AnatomicalStructure``).
        property_type: SegmentedPropertyTypeCode (e.g. ``codes.SCT.Lung``).
        description: SegmentDescription text (at most 64 characters), e.g. which slices were examined.
        algorithm: ``(name, version)`` of the model that drew it (default: the diagnosis's model).
    """

    label: str
    mask: np.ndarray
    category: object
    property_type: object
    description: str | None = None
    algorithm: tuple[str, str] | None = None


@dataclass
class DicomResults:
    """The DICOM objects of one diagnosis.

    Args:
        report: the Comprehensive 3D SR.
        captures: one Secondary Capture per key slice.
        segmentation: the Segmentation, or None when the pass computed no lung mask.
    """

    report: Dataset
    captures: list[Dataset] = field(default_factory=list)
    segmentation: Dataset | None = None

    def datasets(self) -> list[Dataset]:
        """Returns: every object, SR first."""
        return [self.report, *self.captures] + ([self.segmentation] if self.segmentation is not None else [])


def _require_highdicom() -> None:
    if hd is None:
        raise ChestDxError("DICOM outputs need highdicom: pip install 'chestdx[dicom-out]'")


def model_version(diagnosis: Diagnosis) -> str:
    """Args: diagnosis: the diagnosis. Returns: the model's version: training date and commit from its card."""
    return card_version(diagnosis.model.card)


def card_version(card) -> str:
    """Args: card: a model card. Returns: the model's version: training date and commit."""
    parts = [(card.date or "")[:10], (card.git_commit or "")[:12]]
    return " ".join(p for p in parts if p) or f"chestdx {chestdx.__version__}"


def patient_module(diagnosis: Diagnosis, keep_patient: bool) -> dict:
    """The patient and study identification the outputs carry.

    Args:
        diagnosis: the diagnosis.
        keep_patient: copy the source's patient name, id, birth date, accession number,
            study id and referring physician (for results returned to a PACS).

    Returns:
        DICOM keyword -> value; identifying values are empty strings unless ``keep_patient``.

    Raises:
        ChestDxError: ``keep_patient`` was asked for a study read without them.
    """
    metadata = diagnosis.study.metadata
    if keep_patient and not any(tag in metadata for tag in PATIENT_TAGS):
        raise ChestDxError("results for the PACS must carry the patient module, but the study was read de-identified: "
                           "read it with load_study(..., keep_phi=True)")
    module = {tag: str(metadata.get(tag, "")) if keep_patient else "" for tag in PATIENT_TAGS}
    module["PatientSex"] = str(metadata.get("PatientSex", ""))
    return module


def _references(diagnosis: Diagnosis):
    refs = diagnosis.study.dicom
    if refs is None:
        raise ChestDxError("DICOM outputs need a study read from single-frame DICOM files (they reference the source "
                           "images): point chestdx at the DICOM series, or leave out --dicom-out")
    return refs


def source_datasets(diagnosis: Diagnosis, slice_indices, keep_patient: bool) -> list[Dataset]:
    """Header-only stand-ins of source slices: what highdicom copies and references (no pixel data).

    Args:
        diagnosis: the diagnosis.
        slice_indices: indices into ``study.pixels``.
        keep_patient: see `patient_module`.

    Returns:
        One dataset per slice with the UIDs, geometry, patient and study modules.
    """
    refs = _references(diagnosis)
    study = diagnosis.study
    module = patient_module(diagnosis, keep_patient)
    out = []
    for i in slice_indices:
        ds = Dataset()
        for keyword, value in module.items():
            setattr(ds, keyword, value)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = refs.study_uid, refs.series_uid
        ds.SOPClassUID, ds.SOPInstanceUID = refs.sop_class_uid, refs.sop_instance_uids[i]
        ds.StudyDate, ds.StudyTime = refs.study_date, refs.study_time
        ds.Modality = study.modality
        ds.Rows, ds.Columns = study.pixels.shape[1:]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        if refs.frame_of_reference_uid:
            ds.FrameOfReferenceUID = refs.frame_of_reference_uid
        if refs.image_positions is not None:
            ds.ImagePositionPatient = [float(v) for v in refs.image_positions[i]]
        if refs.image_orientation is not None:
            ds.ImageOrientationPatient = list(refs.image_orientation)
        if refs.pixel_spacing is not None:
            ds.PixelSpacing = list(refs.pixel_spacing)
        if refs.slice_thickness is not None:
            ds.SliceThickness = refs.slice_thickness
        out.append(ds)
    return out


def _code(value: str, meaning: str):
    """Args: value: code value in chestdx's private scheme (at most 16 characters); meaning: its meaning. Returns: the code."""
    return hd.sr.CodedConcept(value, CODING_SCHEME, meaning)


def key_slices(diagnosis: Diagnosis, n: int) -> list[int]:
    """Args: diagnosis: the diagnosis; n: how many. Returns: the explained slices, else the top ``n`` slices."""
    if diagnosis.explanation is not None:
        return list(diagnosis.explanation.slice_indices)
    return [i for i, _ in diagnosis.top_slices(n) if i >= 0]


def structured_report(diagnosis: Diagnosis, *, keep_patient: bool = False, n_key_slices: int = 3) -> Dataset:
    """The Comprehensive 3D SR (TID 1500) of a diagnosis.

    Args:
        diagnosis: the diagnosis (of a DICOM study).
        keep_patient: see `patient_module`.
        n_key_slices: key slices to reference when there is no explanation.

    Returns:
        The SR dataset.
    """
    _require_highdicom()
    model = diagnosis.model
    slices = key_slices(diagnosis, n_key_slices)
    evidence = source_datasets(diagnosis, slices, keep_patient)
    algorithm = hd.sr.AlgorithmIdentification(name=model.name, version=model_version(diagnosis),
                                              family=codes.cid7162.ArtificialIntelligence, manufacturer=MANUFACTURER)
    measurements = [
        hd.sr.Measurement(name=_code(f"prob-{i}", f"Probability of {c}"), value=float(p), unit=codes.UCUM.NoUnits,
                          algorithm_id=algorithm)
        for i, (c, p) in enumerate(zip(model.config.classes, diagnosis.probabilities))]
    measurements.append(hd.sr.Measurement(name=_code("threshold", "Operating threshold on the last class probability"),
                                          value=float(model.threshold), unit=codes.UCUM.NoUnits, algorithm_id=algorithm))
    decision = hd.sr.QualitativeEvaluation(_code("decision", "Decision"),
                                           _code(f"class-{diagnosis.decision_index}", diagnosis.decision))
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier="chestdx study classification"),
        algorithm_id=algorithm, measurements=measurements, qualitative_evaluations=[decision],
        source_images=[hd.sr.SourceImageForMeasurementGroup(ds.SOPClassUID, ds.SOPInstanceUID) for ds in evidence])
    return _report(evidence, group, model.name, f"chestdx {model.name} report - research use only")


def _report(evidence: list[Dataset], group, model_name: str, description: str) -> Dataset:
    """The Comprehensive 3D SR holding one TID 1500 measurement group, observed by chestdx as a device."""
    device = hd.sr.DeviceObserverIdentifyingAttributes(uid=generate_uid(entropy_srcs=[MANUFACTURER, model_name]),
                                                       name=MANUFACTURER, manufacturer_name=MANUFACTURER,
                                                       model_name=model_name)
    context = hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(codes.DCM.Device, device))
    report = hd.sr.MeasurementReport(observation_context=context, procedure_reported=PROCEDURE_CT_CHEST,
                                     imaging_measurements=[group], title=codes.cid7021.ImagingMeasurementReport)
    sr = hd.sr.Comprehensive3DSR(evidence=evidence, content=report, series_instance_uid=generate_uid(),
                                 series_number=SERIES_NUMBERS["sr"], sop_instance_uid=generate_uid(), instance_number=1,
                                 manufacturer=MANUFACTURER, is_complete=True)
    sr.SeriesDescription = description
    return sr


def failure_report(sources: list[Dataset], reason: str, model_name: str) -> Dataset:
    """An SR that tells the PACS a series could not be processed, and why.

    Args:
        sources: the received instances' headers (read without pixel data); the SR joins their
            study and patient and references them.
        reason: the one-line error, as recorded in ``status.json`` (it names no patient).
        model_name: the model that was to process the series.

    Returns:
        The SR dataset: a measurement group with the qualitative evaluation "Processing status:
        could not be processed" and the reason as text.
    """
    _require_highdicom()
    sources = [copy.deepcopy(ds) for ds in sources]  # a shallow copy shares the elements: the caller's would change
    for ds in sources:  # the patient and study module highdicom copies: empty where the sender left it out
        for keyword in (*PATIENT_TAGS, "PatientSex", "StudyDate", "StudyTime"):
            if keyword not in ds:
                setattr(ds, keyword, "")
    status = hd.sr.QualitativeEvaluation(_code("status", "Processing status"),
                                         _code("failed", "Could not be processed"))
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier="chestdx study classification"),
        qualitative_evaluations=[status],
        source_images=[hd.sr.SourceImageForMeasurementGroup(ds.SOPClassUID, ds.SOPInstanceUID) for ds in sources])
    group[0].ContentSequence.append(hd.sr.TextContentItem(_code("reason", "Reason the series was not processed"),
                                                          reason, relationship_type="CONTAINS"))
    return _report(sources, group, model_name, "chestdx could not process this series - research use only")


def _wrapped(lines: list[str], font, width: int) -> list[tuple[str, int]]:
    """Args: lines: caption lines; font: the font; width: pixels available. Returns: ``(text, source line)`` fitting the width."""
    out = []
    for n, line in enumerate(lines):
        current = ""
        for word in line.split(" "):
            candidate = f"{current} {word}".strip()
            if current and font.getlength(candidate) > width:
                out.append((current, n))
                current = word
            else:
                current = candidate
        out.append((current, n))
    return out


def _captioned(rgb: np.ndarray, lines: list[str]) -> np.ndarray:
    """Args: rgb: uint8 ``(H, W, 3)``; lines: caption lines, the first in yellow. Returns: the image under a black caption strip."""
    width = rgb.shape[1]
    font = ImageFont.load_default(size=max(10, width // 36))
    line_height = int(font.size * 1.3)
    margin = line_height // 4
    wrapped = _wrapped(lines, font, width - 2 * margin)
    strip = Image.new("RGB", (width, line_height * len(wrapped) + 2 * margin), (0, 0, 0))
    draw = ImageDraw.Draw(strip)
    for n, (text, source) in enumerate(wrapped):
        draw.text((margin, margin + n * line_height), text, fill=(255, 255, 0) if source == 0 else (255, 255, 255),
                  font=font)
    return np.concatenate([np.asarray(strip), rgb], axis=0)


def key_slice_images(diagnosis: Diagnosis, n_key_slices: int = 3) -> list[tuple[int, np.ndarray]]:
    """The pictures of the key slices: heat map over the slice when explained, else the slice, with the caption.

    Args:
        diagnosis: the diagnosis.
        n_key_slices: how many when there is no explanation.

    Returns:
        ``(slice index, uint8 (H', W, 3))`` per key slice.
    """
    e = diagnosis.explanation
    p = float(diagnosis.probabilities[diagnosis.decision_index])
    head = f"chestdx {diagnosis.model.name}: {diagnosis.decision} (p={p:.2f})"
    out = []
    if e is not None:
        for n, index in enumerate(e.slice_indices):
            rgb = overlay_rgb(e.rendered[n], e.maps[n], None if e.lung_masks is None else e.lung_masks[n])
            out.append((index, _captioned(rgb, [CAPTION, f"{head}; slice {index}, {e.method} map of {e.class_name}"])))
        return out
    prepared = diagnosis.prepared
    for row in diagnosis.ranked_rows[:n_key_slices]:
        index = int(prepared.indices[row])
        if index >= 0:
            grey = np.repeat(prepared.rendered[row][..., None], 3, axis=2)
            out.append((index, _captioned(grey, [CAPTION, f"{head}; key slice {index}"])))
    return out


def secondary_captures(diagnosis: Diagnosis, *, keep_patient: bool = False, n_key_slices: int = 3) -> list[Dataset]:
    """Secondary Capture images of the key slices (see `key_slice_images`), referencing their source slices.

    Args:
        diagnosis: the diagnosis (of a DICOM study).
        keep_patient: see `patient_module`.
        n_key_slices: how many when there is no explanation.

    Returns:
        One SC dataset per key slice.
    """
    _require_highdicom()
    refs = _references(diagnosis)
    module = patient_module(diagnosis, keep_patient)
    series_uid = generate_uid()
    out = []
    for number, (index, rgb) in enumerate(key_slice_images(diagnosis, n_key_slices), start=1):
        sc = hd.sc.SCImage(
            pixel_array=rgb, photometric_interpretation="RGB", bits_allocated=8, coordinate_system="PATIENT",
            study_instance_uid=refs.study_uid, series_instance_uid=series_uid, series_number=SERIES_NUMBERS["sc"],
            sop_instance_uid=generate_uid(), instance_number=number, manufacturer=MANUFACTURER,
            patient_id=module["PatientID"], patient_name=module["PatientName"],
            patient_birth_date=module["PatientBirthDate"], patient_sex=module["PatientSex"] or None,
            accession_number=module["AccessionNumber"], study_id=module["StudyID"], study_date=refs.study_date or None,
            study_time=refs.study_time or None, referring_physician_name=module["ReferringPhysicianName"],
            patient_orientation=("L", "P"))
        source = Dataset()
        source.ReferencedSOPClassUID, source.ReferencedSOPInstanceUID = refs.sop_class_uid, refs.sop_instance_uids[index]
        sc.SourceImageSequence = [source]
        sc.ImageType = ["DERIVED", "SECONDARY"]
        sc.BurnedInAnnotation = "NO"  # the caption names no patient
        sc.Laterality = ""  # both lungs (type 2C: present, empty)
        sc.SeriesDescription = f"chestdx {diagnosis.model.name} key slices - NOT FOR DIAGNOSIS"
        sc.ImageComments = f"{CAPTION}; key slice {index} of series {refs.series_uid}"
        out.append(sc)
    return out


def lung_segment(diagnosis: Diagnosis) -> MaskSegment | None:
    """Returns: the lung mask of the diagnosis's pass as a segment, or None when the pass computed none."""
    mask = diagnosis.prepared.lung_mask
    if mask is None:
        return None
    return MaskSegment("lung", np.asarray(mask, bool), codes.SCT.AnatomicalStructure, codes.SCT.Lung)


def lesion_model_or_none(name: str | None = None):
    """The lesion segmenter for the DICOM SEG, or None when it is not installed.

    Args:
        name: bundled name or checkpoint folder (default ``lesion-default``).

    Returns:
        The loaded segmenter (`chestdx.models.lesion.load_lesion_model`), or None.
    """
    from chestdx.models.bundled import resolve_model_path
    from chestdx.models.lesion import DEFAULT_LESION_MODEL, load_lesion_model

    try:
        resolve_model_path(name or DEFAULT_LESION_MODEL)
    except ChestDxError:
        log.info("no lesion model %s: the DICOM Segmentation holds the lungs only", name or DEFAULT_LESION_MODEL)
        return None
    return load_lesion_model(name or DEFAULT_LESION_MODEL)


def lesion_segments(diagnosis: Diagnosis, lesion_model=None) -> list[MaskSegment]:
    """One segment per lesion type of the lesion model (ground-glass opacity, consolidation).

    When ``quantify_lesions`` ran, its label map is used on the slices the segmenter ran on.
    Otherwise the segmenter runs now, on the lung slices the classifier used
    (``diagnosis.prepared.indices``): that bounds the cost (48 of the 300 slices of the
    benchmark study) at the price of lesions outside those slices. Slices not examined hold no
    lesion in the segmentation; each lesion segment's description says how many were.
    A lesion type absent from the examined slices is still a segment, without frames.

    Args:
        diagnosis: the diagnosis of a CT study.
        lesion_model: the segmenter (`lesion_model_or_none`); None: ``lesion-default`` if installed.

    Returns:
        The segments (``[]`` for an X-ray, or when no lesion model is installed). Their time
        is added to ``diagnosis.timing["dicom_lesions"]``.
    """
    if diagnosis.study.kind == "xray":
        return []
    from chestdx.models.lesion import CLASSES, segment_study
    from chestdx.preprocess.pipeline import study_lung_mask

    t0 = time.perf_counter()
    result = diagnosis.lesions
    if result is None:
        lesion_model = lesion_model or lesion_model_or_none()
        if lesion_model is None:
            return []
        study = diagnosis.study
        if diagnosis.prepared.lung_mask is None:
            diagnosis.prepared.lung_mask = study_lung_mask(study)
        lungs = diagnosis.prepared.lung_mask
        used = np.unique(np.asarray(diagnosis.prepared.indices)[np.asarray(diagnosis.prepared.indices) >= 0])
        examined_lungs = np.zeros_like(lungs)
        examined_lungs[used] = lungs[used]
        result = segment_study(study, lesion_model, lung_mask=examined_lungs)
        where, version = "those the classifier used", card_version(lesion_model.card)
    else:
        where, version = "as quantified", _version_of(result.model)
    examined = np.asarray(result.segmented, dtype=int)
    labels = np.zeros_like(result.labels)
    labels[examined] = result.labels[examined]  # sampled quantification fills the others in: not shown as found
    n = diagnosis.study.n_slices
    description = f"{result.model}: {len(examined)} of {n} slices, {where}"
    if len(description) > 64:  # LO
        description = f"{result.model}: {len(examined)} of {n} slices"[:64]
    segments = [MaskSegment(LESION_TYPES[name][0], labels == value, LESION_CATEGORY, LESION_TYPES[name][1],
                            description=description, algorithm=(result.model, version))
                for value, name in enumerate(CLASSES) if name in LESION_TYPES]
    diagnosis.timing["dicom_lesions"] = diagnosis.timing.get("dicom_lesions", 0.0) + time.perf_counter() - t0
    return segments


def _version_of(model_name: str) -> str:
    """Args: model_name: a bundled model's name. Returns: its version, or "" when its card cannot be read."""
    from chestdx.models.bundled import resolve_model_path
    from chestdx.models.card import read_card

    try:
        return card_version(read_card(resolve_model_path(model_name)))
    except ChestDxError:
        return ""


def has_segmentation_geometry(refs) -> bool:
    """Args: refs: a study's `DicomReferences`. Returns: whether a Segmentation can be placed on its slices."""
    # highdicom takes the pixel measures, SliceThickness included, from the source images
    return all(value is not None for value in (refs.frame_of_reference_uid, refs.image_positions,
                                               refs.image_orientation, refs.pixel_spacing, refs.slice_thickness))


def segmentation(diagnosis: Diagnosis, segments: list[MaskSegment], *, keep_patient: bool = False) -> Dataset:
    """A binary DICOM Segmentation of masks over the study's slices, one segment each.

    Args:
        diagnosis: the diagnosis (of a DICOM study with slice positions).
        segments: the masks, e.g. ``[lung_segment(diagnosis)]`` followed by one segment per
            label of a lesion model's label map.
        keep_patient: see `patient_module`.

    Returns:
        The SEG dataset (frames without any segment are left out).
    """
    _require_highdicom()
    refs = _references(diagnosis)
    study = diagnosis.study
    if not has_segmentation_geometry(refs):
        raise ChestDxError("a DICOM Segmentation needs the source's FrameOfReferenceUID, ImagePositionPatient, "
                           "ImageOrientationPatient and PixelSpacing, and this series lacks one: leave out the segmentation")
    shape = study.pixels.shape
    for s in segments:
        if s.mask.shape != shape:
            raise ValueError(f"segment {s.label!r} has shape {s.mask.shape}, the study {shape}")
    # (z, y, x, segments), each segment contiguous: highdicom's overlap check sums over the last axis, which on a
    # C-ordered (300, 512, 512, 3) array took 6.5 s of the SEG's 9 s
    labels = np.stack([s.mask for s in segments], axis=0).astype(np.uint8).transpose(1, 2, 3, 0)
    algorithm = hd.AlgorithmIdentificationSequence(name=diagnosis.model.name, version=model_version(diagnosis),
                                                   family=codes.cid7162.ArtificialIntelligence)
    descriptions = []
    for number, s in enumerate(segments, start=1):
        drawn_by = algorithm if s.algorithm is None else hd.AlgorithmIdentificationSequence(
            name=s.algorithm[0], version=s.algorithm[1] or "unknown", family=codes.cid7162.ArtificialIntelligence)
        description = hd.seg.SegmentDescription(number, s.label, s.category, s.property_type, "AUTOMATIC",
                                                algorithm_identification=drawn_by)
        if s.description:
            description.SegmentDescription = s.description[:64]
        descriptions.append(description)
    seg = hd.seg.Segmentation(
        source_images=source_datasets(diagnosis, range(study.n_slices), keep_patient), pixel_array=labels,
        segmentation_type="BINARY", segment_descriptions=descriptions, series_instance_uid=generate_uid(),
        series_number=SERIES_NUMBERS["seg"], sop_instance_uid=generate_uid(), instance_number=1,
        manufacturer=MANUFACTURER, manufacturer_model_name=diagnosis.model.name,
        software_versions=f"chestdx {chestdx.__version__}", device_serial_number=model_version(diagnosis)[:64])
    seg.SeriesDescription = f"chestdx {diagnosis.model.name} segmentation - research use only"
    return seg


def dicom_results(diagnosis: Diagnosis, *, keep_patient: bool = False, n_key_slices: int = 3,
                  extra_segments: list[MaskSegment] = ()) -> DicomResults:
    """The SR, the key-slice captures and (with a lung mask) the segmentation of a diagnosis.

    Args:
        diagnosis: the diagnosis of a DICOM CT study.
        keep_patient: carry the source's patient module (results returned to a PACS); see `patient_module`.
        n_key_slices: how many key slices when there is no explanation.
        extra_segments: further masks for the segmentation (lesions), after the lung.

    Returns:
        The objects.
    """
    segments = [s for s in [lung_segment(diagnosis), *extra_segments] if s is not None]
    with_geometry = has_segmentation_geometry(_references(diagnosis))
    if segments and not with_geometry:
        log.warning("no DICOM Segmentation: the series lacks its frame of reference or slice geometry")
    return DicomResults(
        report=structured_report(diagnosis, keep_patient=keep_patient, n_key_slices=n_key_slices),
        captures=secondary_captures(diagnosis, keep_patient=keep_patient, n_key_slices=n_key_slices),
        segmentation=segmentation(diagnosis, segments, keep_patient=keep_patient) if segments and with_geometry else None)


def write_dicom_outputs(out_dir: str | Path, diagnosis: Diagnosis, *, keep_patient: bool = False,
                        n_key_slices: int = 3, lesions: bool = True, lesion_model=None) -> list[Path]:
    """Write `dicom_results` as ``sr.dcm``, ``sc_slice_NNNN.dcm`` and ``seg.dcm`` into a folder.

    Args:
        out_dir: output folder (created when missing).
        diagnosis: the diagnosis of a DICOM CT study.
        keep_patient: carry the source's patient module; see `patient_module`.
        n_key_slices: how many key slices when there is no explanation.
        lesions: add the lesion segments (`lesion_segments`) to the segmentation when a lesion
            model is installed (or given).
        lesion_model: the segmenter (`lesion_model_or_none`); None: ``lesion-default`` if installed.

    Returns:
        The written files.

    Raises:
        ChestDxError: one of the files already exists, or the study was not read from DICOM.
    """
    out = Path(out_dir)
    for name in ("sr.dcm", "seg.dcm"):  # checked again below; here before the lesion model runs
        if (out / name).exists():
            raise ChestDxError(f"{out / name} already exists: give a new or empty folder for --dicom-out")
    extra = []
    if lesions and has_segmentation_geometry(_references(diagnosis)):
        extra = lesion_segments(diagnosis, lesion_model)
    results = dicom_results(diagnosis, keep_patient=keep_patient, n_key_slices=n_key_slices, extra_segments=extra)
    indices = key_slices(diagnosis, n_key_slices)
    named = [("sr.dcm", results.report)] + [(f"sc_slice_{i:04d}.dcm", sc) for i, sc in zip(indices, results.captures)]
    if results.segmentation is not None:
        named.append(("seg.dcm", results.segmentation))
    clash = [name for name, _ in named if (out / name).exists()]
    if clash:
        raise ChestDxError(f"{out / clash[0]} already exists: give a new or empty folder for --dicom-out")
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, ds in named:
        ds.save_as(out / name, enforce_file_format=True)
        paths.append(out / name)
    return paths
