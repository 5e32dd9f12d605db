"""`InputSpec`: how a study is turned into model input. Stored in every model card."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Literal


@dataclass
class InputSpec:
    """Everything a model needs to know about its input, as data.

    Args:
        window: HU window applied to ``"hu"`` studies before anything else, to render them
            like the 8-bit training images: ``"lung"`` (-600/1500) or ``"mediastinal"``
            (40/400). Ignored for ``"8bit"`` studies (the HU steps are skipped, not faked).
        clip_top_percent: ai-corona's clip of the brightest ``p`` percent, then rescale
            to 0-255; None to skip.
        clahe: apply CLAHE (Kara et al.).
        selection: which slices of a volume are used: ``"all"``, ``"middle"`` (central
            ``middle_fraction``), ``"equidistant"`` (``n_slices`` at i*n/N),
            ``"groups"`` (groups of ``group_size``, Kara) or ``"lung"`` (every slice whose
            lung area passes ``lung_filter``).
        middle_fraction: fraction kept by ``"middle"``.
        n_slices: count kept by ``"equidistant"``.
        group_size: group length for ``"groups"``.
        lung_filter: drop slices with little lung: ``"dre"`` (< 50% of the lung bounding
            box), ``"kara"`` (area ratio to the largest lung slice, 0.4 top / 0.9 bottom),
            ``"min-area"`` (< ``min_lung_fraction`` of the largest slice's lung area) or None.
        min_lung_fraction: threshold for ``"min-area"``.
        max_slices: cap on the slices a study sends to the model (not for ``"groups"``):
            when the selection keeps more, that many equidistant ones among them are used.
            None for no cap.
        lung_crop: crop each slice to the study's lung bounding box before resizing.
        lungs_only: black out everything but the lungs and stretch each slice's lung
            intensities to 0-255 (``chestdx.preprocess.intensity.lungs_only``), so that
            sources rendered, cropped or masked differently reach the model alike.
        upright: turn a study whose lungs lie one above the other by 90 degrees, so that
            the lungs lie side by side (``chestdx.preprocess.select.lungs_stacked``); the
            turn is recorded in ``PreparedStudy.quarter_turns``.
        size: output height and width in pixels.
        channels: 1 or 3 (grey repeated).
        normalise: ``"imagenet"`` (mean/std of ImageNet) or ``"unit"`` (0-1).
    """

    window: Literal["lung", "mediastinal"] = "lung"
    clip_top_percent: float | None = None
    clahe: bool = False
    selection: Literal["all", "middle", "equidistant", "groups", "lung"] = "all"
    middle_fraction: float = 0.5
    n_slices: int = 15
    group_size: int = 50
    lung_filter: Literal["dre", "kara", "min-area"] | None = None
    min_lung_fraction: float = 0.25
    max_slices: int | None = None
    lung_crop: bool = False
    lungs_only: bool = False
    upright: bool = False
    size: int = 224
    channels: int = 3
    normalise: Literal["imagenet", "unit"] = "imagenet"

    def to_dict(self) -> dict:
        """Returns: the spec as a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "InputSpec":
        """Build a spec from a dict, ignoring unknown keys (cards written by newer versions).

        Args:
            data: as written by ``to_dict``.

        Returns:
            The spec.
        """
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
