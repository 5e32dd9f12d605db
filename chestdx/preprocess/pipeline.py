"""`prepare_study`: a `Study` becomes model input exactly as its recipe's `InputSpec` says.

Order: lung mask (only when the spec needs it) -> slice filter -> slice selection ->
render 8-bit (HU window) -> clip of the top intensities -> CLAHE -> lungs only -> lung
crop -> upright turn -> resize -> channels -> normalisation. The lungs are segmented on
the study's own values (HU or 8-bit), so rendering only the selected slices gives the
same result as rendering first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from chestdx.errors import ChestDxError
from chestdx.io.study import Study
from chestdx.preprocess.intensity import clahe, clip_top_percent, imagenet_normalise, lungs_only, render_8bit
from chestdx.preprocess.lungs import segment_lungs
from chestdx.preprocess.resize import resize_slices
from chestdx.preprocess.select import (
    filter_dre,
    filter_kara,
    filter_min_area,
    lung_bbox,
    lungs_stacked,
    make_groups,
    select_equidistant,
    select_middle,
)
from chestdx.preprocess.spec import InputSpec

@dataclass
class PreparedStudy:
    """A study turned into model input.

    Args:
        x: float32 ``(n, C, size, size)``: the model input, one row per selected slice.
        indices: int ``(n,)``: the slice of ``study.pixels`` behind each row of ``x``;
            ``-1`` for a black padding slice (``"groups"`` selection).
        rendered: uint8 ``(n, H, W)``: each row's slice as displayed (after the HU window,
            before clipping, CLAHE, crop and resize), for overlays; zeros for padding rows.
        lung_mask: bool ``(z, y, x)`` for the whole study (given or computed), or None when
            the spec needed none and none was given.
        groups: for ``"groups"`` selection, the rows of ``x`` of each group; else None.
        crop_box: ``(y0, y1, x0, x1)`` of the lung crop in ``rendered`` coordinates, or None.
        quarter_turns: counter-clockwise quarter turns (``np.rot90``) applied after the crop
            (``InputSpec.upright``); maps at input size are turned back by ``-quarter_turns``.
        warnings: what went differently from the spec (for example a fallback slice).
    """

    x: np.ndarray
    indices: np.ndarray
    rendered: np.ndarray
    lung_mask: np.ndarray | None = None
    groups: list[np.ndarray] | None = None
    crop_box: tuple[int, int, int, int] | None = None
    quarter_turns: int = 0
    warnings: list[str] = field(default_factory=list)


def needs_lung_mask(spec: InputSpec) -> bool:
    """Args: spec: the input spec. Returns: whether ``prepare_study`` segments the lungs for it."""
    return (spec.lung_filter is not None or spec.lung_crop or spec.lungs_only or spec.upright
            or spec.selection == "lung")


def study_lung_mask(study: Study) -> np.ndarray:
    """Lung mask of a study with the right settings for its kind.

    Volumes are segmented in 3-D, single slices in 2-D; the spacing is used for HU studies
    only (8-bit images have no trustworthy spacing).

    Args:
        study: the study.

    Returns:
        bool ``(z, y, x)``.
    """
    mode = "3d" if study.kind == "ct-volume" and study.n_slices > 1 else "2d"
    spacing = study.spacing if study.intensity == "hu" else None
    return segment_lungs(study.pixels, study.intensity, spacing=spacing, mode=mode)


def prepare_study(study: Study, spec: InputSpec, lung_mask: np.ndarray | None = None) -> PreparedStudy:
    """Turn a study into model input following ``spec``.

    Never returns zero slices: when the lung filter keeps nothing, the middle half of the
    study is used instead and a warning is recorded.

    Args:
        study: the study.
        spec: how to prepare it (window, selection, filters, size, normalisation).
        lung_mask: a precomputed lung mask ``(z, y, x)``; computed here when the spec needs
            one and none is given.

    Returns:
        The prepared study.

    Example:
        >>> prepared = prepare_study(study, InputSpec(selection="middle", clip_top_percent=0.5))
        >>> prepared.x.shape  # (n, 3, 224, 224)
    """
    warnings: list[str] = []
    n = study.n_slices
    use_lungs = needs_lung_mask(spec)
    if use_lungs and study.kind == "xray":
        warnings.append("lung filtering and cropping are for CT; skipped for this X-ray")
        use_lungs = False
    if use_lungs and lung_mask is None:
        lung_mask = study_lung_mask(study)
    if lung_mask is not None and lung_mask.shape != study.pixels.shape:
        raise ValueError(f"lung_mask shape {lung_mask.shape} does not match the study's {study.pixels.shape}")

    candidates = np.arange(n)
    if use_lungs and (spec.lung_filter is not None or spec.selection == "lung"):
        candidates = np.flatnonzero(_slice_filter(lung_mask, spec))
        if candidates.size == 0:
            candidates = select_middle(n, 0.5)
            warnings.append(
                f"no slice passed the lung filter {spec.lung_filter or 'min-area'!r}; "
                f"used the middle {len(candidates)} of {n} slices instead (is this a chest CT?)"
            )

    groups = None
    if spec.selection == "middle":
        indices = candidates[select_middle(len(candidates), spec.middle_fraction)]
    elif spec.selection == "equidistant":
        # fewer candidates than n_slices: each once (a repeat would only cost time; the mean is the same)
        indices = candidates[np.unique(select_equidistant(len(candidates), spec.n_slices))]
    elif spec.selection == "groups":
        index_groups = make_groups(candidates, spec.group_size)
        indices = np.concatenate(index_groups)
        groups = [np.arange(i * spec.group_size, (i + 1) * spec.group_size) for i in range(len(index_groups))]
    elif spec.selection in ("all", "lung"):
        indices = candidates
    else:
        raise ChestDxError(f"unknown slice selection {spec.selection!r}: use all, middle, equidistant, groups or lung")
    if groups is None and spec.max_slices and len(indices) > spec.max_slices:
        indices = indices[select_equidistant(len(indices), spec.max_slices)]

    real = indices >= 0
    shown = np.zeros((len(indices),) + study.pixels.shape[1:], dtype=np.uint8)
    shown[real] = render_8bit(study, spec.window, slices=indices[real])
    images = shown.astype(np.float32)
    if spec.clip_top_percent is not None and real.any():
        images[real] = clip_top_percent(images[real], spec.clip_top_percent)
    if spec.clahe and real.any():
        images[real] = clahe(np.rint(images[real]).astype(np.uint8))

    if use_lungs and spec.lungs_only and real.any():
        images[real] = lungs_only(images[real], lung_mask[indices[real]])

    crop_box = None
    if use_lungs and spec.lung_crop:
        if lung_mask.any():
            crop_box = lung_bbox(lung_mask)
            y0, y1, x0, x1 = crop_box
            images = images[:, y0:y1, x0:x1]
        else:
            warnings.append("no lung found to crop to; used the whole slices")
    quarter_turns = 0
    if use_lungs and spec.upright and lungs_stacked(lung_mask):
        quarter_turns = 1
        images = np.ascontiguousarray(np.rot90(images, quarter_turns, axes=(1, 2)))

    x01 = resize_slices(images, spec.size, keep_aspect=True) / 255.0
    x01 = np.repeat(x01[:, None], spec.channels, axis=1) if spec.channels > 1 else x01[:, None]
    x = imagenet_normalise(x01) if spec.normalise == "imagenet" else x01.astype(np.float32)
    return PreparedStudy(
        x=np.ascontiguousarray(x, dtype=np.float32),
        indices=indices.astype(int),
        rendered=shown,
        lung_mask=lung_mask,
        groups=groups,
        crop_box=crop_box,
        quarter_turns=quarter_turns,
        warnings=warnings,
    )


def _slice_filter(mask: np.ndarray, spec: InputSpec) -> np.ndarray:
    """bool per slice: the spec's lung filter (``"min-area"`` when only ``selection="lung"`` asks).

    Kara's filter reads the index as growing towards the head, ``Study``'s physical order.
    """
    name = spec.lung_filter or "min-area"
    if name == "dre":
        return filter_dre(mask)
    if name == "kara":
        return filter_kara(mask, head_last=True)
    if name == "min-area":
        return filter_min_area(mask, spec.min_lung_fraction)
    raise ChestDxError(f"unknown lung filter {name!r}: use dre, kara or min-area")
