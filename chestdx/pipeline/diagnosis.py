"""`Diagnosis`: one study carried through the stages once — lungs, model input, classification, decision.

``diagnose`` runs each stage once and keeps what later steps need (the prepared input with
its geometry, the per-slice probabilities, the ranking of the slices), so that an
explanation (``explain``), the outputs and every front end reuse the same pass instead of
preparing and classifying the study again. Without an explanation nothing here imports
torch when the model ships its ONNX export.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from chestdx.errors import ChestDxError
from chestdx.io.study import Study
from chestdx.models.loading import LoadedModel
from chestdx.models.predict import decide, rank_rows, study_probabilities
from chestdx.preprocess.pipeline import PreparedStudy, needs_lung_mask, prepare_study, study_lung_mask

if TYPE_CHECKING:  # the segmenter's module imports torch: only when lesions are asked for
    from chestdx.models.lesion import LesionResult


@dataclass
class StudyExplanation:
    """Heat maps of the slices that drove a decision, on the stored slices.

    Args:
        method: the explanation method.
        class_index: the explained class.
        class_name: its name.
        probability: the study's probability of that class.
        slice_indices: the explained slices (indices into ``study.pixels``).
        rendered: uint8 ``(n, H, W)``: those slices as displayed.
        maps: float32 ``(n, H, W)`` in 0..1 on the stored slices.
        slice_scores: each explained slice's own probability of the class.
        lung_masks: bool ``(n, H, W)`` outlined on overlays, or None.
        boxes: per slice ``(k, 4)`` boxes ``(y0, x0, y1, x1)`` on the stored slice, or None.
        box_scores: per slice ``(k,)`` box scores, or None.
    """

    method: str
    class_index: int
    class_name: str
    probability: float
    slice_indices: list[int]
    rendered: np.ndarray
    maps: np.ndarray
    slice_scores: list[float]
    lung_masks: np.ndarray | None = None
    boxes: list[np.ndarray] | None = None
    box_scores: list[np.ndarray] | None = None


@dataclass
class Diagnosis:
    """A study after one pass through the pipeline.

    Args:
        study: the study as read.
        model: the model that classified it.
        prepared: the model input, with the geometry that maps every model pixel back onto
            the stored slices (row -> slice index, lung crop box, resize).
        probabilities: ``(K,)`` study probabilities (temperature-scaled).
        slice_probs: ``(n, K)`` probabilities of each row of ``prepared.x``.
        decision: the decided class at the model's operating point.
        ranked_rows: rows of ``prepared.x`` ordered by their probability of the decided class.
        timing: seconds per stage (``read``, ``lungs``, ``preprocess``, ``classify``, later
            ``explain_setup`` and ``explain``).
        warnings: what the reader, the preprocessing and the model card's fingerprint flagged.
        explanation: the explanation, once ``explain`` has run.
        quantification: lung and lesion volumes, involvement, severity score and CT-0..CT-4
            category, once ``quantify_lesions`` has run (`chestdx.models.quantify.quantify`).
        lesions: the lesion label map behind ``quantification`` (a
            `chestdx.models.lesion.LesionResult`), kept for outputs that draw it (the DICOM SEG).
    """

    study: Study
    model: LoadedModel
    prepared: PreparedStudy
    probabilities: np.ndarray
    slice_probs: np.ndarray
    decision: str
    ranked_rows: np.ndarray
    timing: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    explanation: StudyExplanation | None = None
    quantification: dict | None = None
    lesions: object | None = None

    @property
    def decision_index(self) -> int:
        """Returns: the index of the decided class."""
        return list(self.model.config.classes).index(self.decision)

    def top_slices(self, k: int) -> list[tuple[int, float]]:
        """Args: k: how many. Returns: ``(slice index, probability of the decided class)`` of the top ``k`` slices."""
        c = self.decision_index
        return [(int(self.prepared.indices[r]), float(self.slice_probs[r, c])) for r in self.ranked_rows[:k]]


def fingerprint_warnings(study: Study, model: LoadedModel) -> list[str]:
    """What about a study lies outside the data its model was trained on (the card's fingerprint).

    The fingerprint may list ``study_kinds`` (``"ct-volume"``, ``"ct-slice"``, ``"xray"``),
    ``intensities`` (``"hu"``, ``"8bit"``) and ``pixel_spacing_mm`` ``[low, high]``; its other
    entries describe the data for people.

    Args:
        study: the study.
        model: its model.

    Returns:
        One sentence per mismatch (empty when the card has no fingerprint).
    """
    fp = model.card.fingerprint or {}
    out = []
    kinds = fp.get("study_kinds")
    if kinds and study.kind not in kinds:
        out.append(f"this is a {study.kind} study but {model.name} was trained on {', '.join(kinds)} only: "
                   "its output is not meaningful here")
    intensity = fp.get("intensities")
    if intensity and study.intensity not in intensity:
        handled = f" ({fp['hu_input']})" if study.intensity == "hu" and isinstance(fp.get("hu_input"), str) else ""
        out.append(f"this study is {study.intensity} but {model.name} was trained on {', '.join(intensity)} images"
                   + handled)
    spacing = fp.get("pixel_spacing_mm")
    numeric = isinstance(spacing, (list, tuple)) and len(spacing) == 2 and all(
        isinstance(v, (int, float)) for v in spacing)  # a card may say in words that spacing was unknown
    if numeric and study.intensity == "hu" and study.spacing is not None:
        pixel = float(min(study.spacing[1:]))
        if not spacing[0] <= pixel <= spacing[1]:
            out.append(f"pixel spacing {pixel:.2f} mm is outside the training data's {spacing[0]}-{spacing[1]} mm")
    return out


def diagnose(study: Study, model: LoadedModel, read_seconds: float = 0.0) -> Diagnosis:
    """Carry a study through lungs -> model input -> classification -> decision, each stage once.

    Args:
        study: the loaded study.
        model: the loaded model (``chestdx.models.loading.load_model``).
        read_seconds: time spent reading the study (reported under ``timing["read"]``).

    Returns:
        The diagnosis.
    """
    t0 = time.perf_counter()
    spec = model.config.input
    lungs = study_lung_mask(study) if needs_lung_mask(spec) and study.kind != "xray" else None
    t1 = time.perf_counter()
    prepared = prepare_study(study, spec, lung_mask=lungs)
    t2 = time.perf_counter()
    probs, slice_probs = study_probabilities(model, prepared)
    decision = decide(model, probs)
    t3 = time.perf_counter()
    ranked = rank_rows(prepared, slice_probs, list(model.config.classes).index(decision))
    return Diagnosis(
        study=study, model=model, prepared=prepared, probabilities=probs, slice_probs=slice_probs,
        decision=decision, ranked_rows=ranked,
        timing={"read": read_seconds, "lungs": t1 - t0, "preprocess": t2 - t1, "classify": t3 - t2},
        warnings=list(study.warnings) + list(prepared.warnings) + fingerprint_warnings(study, model))


def explain(diagnosis: Diagnosis, method: str, n_slices: int = 3, target: str | None = None,
            restrict_to_lungs: bool = True, progress: bool = False) -> StudyExplanation:
    """Heat maps for the slices with the highest probability of the target class, from the diagnosis's pass.

    Only the explained slices go through the network again (Grad-CAM needs their
    gradients); the study is not read, segmented or prepared again. The result is also
    stored as ``diagnosis.explanation``; ``diagnosis.timing`` gets ``explain_setup`` (importing
    torch and MONAI, building the network: once per process) and ``explain`` (the maps).

    Args:
        diagnosis: the diagnosis.
        method: ``"cam"``, ``"gradcam"``, ``"gradcampp"``, ``"occlusion"``, ``"boxes"``, or
            ``"lesion"`` (the lesion segmenter's infection probability, not the classifier's evidence).
        n_slices: how many slices to explain.
        target: class name to explain (default: the decision).
        restrict_to_lungs: zero the map outside the (slightly dilated) lung mask when the
            preprocessing computed one.
        progress: report the progress of slow methods (occlusion).

    Returns:
        The explanation.
    """
    t_load = time.perf_counter()
    import torch
    from scipy.ndimage import binary_dilation

    from chestdx.explain.maps import boxes_to_original, explain_slices, map_to_original

    model, prepared = diagnosis.model, diagnosis.prepared
    lesion_model = _lesion_model() if method == "lesion" else None
    net = None if lesion_model else model.net
    t0 = time.perf_counter()
    classes = list(model.config.classes)
    name = target or diagnosis.decision
    if name not in classes:
        raise ChestDxError(f"--target {name!r} is not one of the model's classes {classes}")
    cls = classes.index(name)
    rows = diagnosis.ranked_rows if cls == diagnosis.decision_index else rank_rows(prepared, diagnosis.slice_probs, cls)
    rows = rows[:max(1, n_slices)]
    shape = prepared.rendered.shape[1:]
    if lesion_model is not None:  # the segmenter's infection probability: points at lesions by construction
        from chestdx.models.lesion import lesion_heatmaps

        result = None
        maps = lesion_heatmaps(diagnosis.study, lesion_model, prepared.indices[rows], lung_mask=_lungs(diagnosis))
    else:
        result = explain_slices(net, torch.from_numpy(np.ascontiguousarray(prepared.x[rows])), method,
                                target_class=cls, progress=progress)
        maps = np.stack([map_to_original(m, shape, prepared.crop_box, quarter_turns=prepared.quarter_turns)
                         for m in result.maps])
    masks = None
    if prepared.lung_mask is not None:
        masks = prepared.lung_mask[prepared.indices[rows]]
        if restrict_to_lungs and masks.shape[1:] == shape:
            lungs = np.stack([binary_dilation(m, iterations=5) for m in masks])
            maps = np.where(lungs.any(axis=(1, 2), keepdims=True), maps * lungs, maps)
            peak = maps.max(axis=(1, 2), keepdims=True)
            maps = np.divide(maps, peak, out=np.zeros_like(maps), where=peak > 0)
    boxes = None
    if result is not None and result.boxes is not None:
        boxes = [boxes_to_original(b, prepared.x.shape[-2:], shape, prepared.crop_box) for b in result.boxes]
    explanation = StudyExplanation(
        method=method, class_index=cls, class_name=name, probability=float(diagnosis.probabilities[cls]),
        slice_indices=[int(i) for i in prepared.indices[rows]], rendered=prepared.rendered[rows],
        maps=maps.astype(np.float32), slice_scores=[float(diagnosis.slice_probs[r, cls]) for r in rows],
        lung_masks=masks, boxes=boxes, box_scores=None if result is None else result.box_scores)
    diagnosis.explanation = explanation
    diagnosis.timing["explain_setup"] = t0 - t_load
    diagnosis.timing["explain"] = time.perf_counter() - t0
    return explanation


def _lesion_model(name: str | None = None) -> LoadedModel:
    from chestdx.models.lesion import DEFAULT_LESION_MODEL, load_lesion_model

    return load_lesion_model(name or DEFAULT_LESION_MODEL)


def _lungs(diagnosis: Diagnosis) -> np.ndarray:
    """The study's lung mask from the diagnosis's pass (computed now when the classifier needed none)."""
    if diagnosis.prepared.lung_mask is None:
        diagnosis.prepared.lung_mask = study_lung_mask(diagnosis.study)
    return diagnosis.prepared.lung_mask


def quantify_lesions(diagnosis: Diagnosis, lesion_model: str | None = None, max_slices: int | None = None) -> dict:
    """Segment the study's lesions and measure them, reusing the diagnosis's lung mask.

    Stored as ``diagnosis.quantification``, the label map as ``diagnosis.lesions`` (and the time
    under ``timing["lesions"]``).

    Args:
        diagnosis: a diagnosis of a CT study.
        lesion_model: lesion segmenter name or folder (default ``lesion-default``).
        max_slices: run the segmenter on at most this many lung slices (see
            `chestdx.models.lesion.segment_study`).

    Returns:
        The quantification (`chestdx.models.quantify.quantify`), with the segmenter's name.

    Raises:
        ChestDxError: the study is an X-ray.
    """
    from chestdx.models.lesion import measured_spacing, segment_study
    from chestdx.models.quantify import quantify

    if diagnosis.study.kind == "xray":
        raise ChestDxError("lesion quantification is for chest CT; this study is an X-ray")
    t0 = time.perf_counter()
    model = _lesion_model(lesion_model)
    result = segment_study(diagnosis.study, model, lung_mask=_lungs(diagnosis), max_slices=max_slices)
    diagnosis.quantification = {"model": model.name, **quantify(result.lung_mask, result.labels,
                                                                measured_spacing(diagnosis.study))}
    diagnosis.lesions = result
    diagnosis.warnings += result.warnings
    diagnosis.timing["lesions"] = time.perf_counter() - t0
    return diagnosis.quantification


def diagnose_source(source, model: str | None = None, *, series: str | int | None = None, kind: str | None = None,
                    progress: bool = False, keep_phi: bool = False, on_read=None) -> Diagnosis:
    """Read a study, load the model for it (bundled default by the study's kind) and diagnose it.

    Args:
        source: what ``chestdx.io.load_study`` reads (DICOM folder or zip, NIfTI, images).
        model: bundled model name or checkpoint folder; None for the default of the study's kind.
        series: series UID or index when the source holds several.
        kind: override of the detected study kind.
        progress: show a progress bar while reading.
        keep_phi: keep the patient's identifiers in ``study.metadata`` (for results returned to a PACS).
        on_read: called with the `Study` once it is read, before the diagnosis (the service starts
            writing the viewer's copy of the pixels there, beside the diagnosis).

    Returns:
        The diagnosis (``timing["read"]`` included).
    """
    from chestdx.io import load_study
    from chestdx.models.loading import load_model

    chosen = load_model(model) if model is not None else None  # a broken model is reported before any reading
    t0 = time.perf_counter()
    study = load_study(source, series=series, kind=kind, keep_phi=keep_phi, progress=progress)
    read_seconds = time.perf_counter() - t0
    if on_read is not None:
        on_read(study)
    return diagnose(study, chosen or load_model(kind=study.kind), read_seconds=read_seconds)
