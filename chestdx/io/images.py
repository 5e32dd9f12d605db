"""Plain 2-D images (PNG, JPG, TIFF, BMP): single slices, X-rays and folders of slices."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from chestdx.errors import ChestDxError
from chestdx.progress import progress as progress_bar
from chestdx.io.dicom import MIN_SIDE
from chestdx.io.router import route_image
from chestdx.io.study import Study

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
_TRAILING_NUMBER = re.compile(r"(\d+(?:\.\d+)?)$")
_DIGITS = re.compile(r"(\d+)")


def natural_parts(name: str) -> tuple:
    """Returns: ``name`` split into text and integers, so that ``"a2" < "a10"``."""
    return tuple(int(p) if p.isdigit() else p.lower() for p in _DIGITS.split(name))


def natural_key(path: Path) -> tuple:
    """Sort key: the trailing number of the file stem first, then natural order of the name.

    ``slice_2.png`` < ``slice_10.png``; ``109054_26.0.jpg`` sorts by 26.0; names without a
    trailing number come last.

    Args:
        path: an image file.

    Returns:
        A tuple usable as a sort key.
    """
    stem = path.name
    for suffix in IMAGE_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    parts = natural_parts(path.name)
    match = _TRAILING_NUMBER.search(stem)
    return (0, float(match.group(1)), parts) if match else (1, 0.0, parts)


def read_image(path: Path, name: str) -> tuple[np.ndarray, bool]:
    """Read one image as grey values.

    Args:
        path: the image file.
        name: how to name it in messages.

    Returns:
        ``(grey, high_depth)``: float32 ``(y, x)`` array and whether it has more than 8 bits
        (16-bit or 32-bit integer / float images, to be rescaled to 0-255).
    """
    try:
        with Image.open(path) as img:
            if getattr(img, "n_frames", 1) > 1:
                raise ChestDxError(f"{name} holds {img.n_frames} frames: give one image per file "
                                   "(or the DICOM series it was exported from)")
            img = ImageOps.exif_transpose(img)
            if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
                return np.asarray(img, dtype=np.float32), True
            return np.asarray(img.convert("L"), dtype=np.float32), False
    except ChestDxError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ChestDxError(f"cannot read image {name} ({exc}): the file is damaged, truncated or not an image; "
                           "re-export it as PNG") from exc


def _stack_cropped(slices: list[np.ndarray], names: list[str], source: str, warnings: list[str]) -> np.ndarray:
    """Stack slices; slices cropped to slightly different sizes are padded (centred) to the largest.

    Series exported as per-slice crops of the lungs (e.g. the SIRM/Inf-Net volumes) vary by
    a few dozen pixels; sizes differing by more than a factor of 2 on a side mean
    unrelated images and are refused.

    Args:
        slices: 2-D images in slice order.
        names: their names for messages.
        source: the path the user gave.
        warnings: list that receives a warning when slices were padded.

    Returns:
        The ``(z, y, x)`` stack.
    """
    shapes = np.array([s.shape for s in slices])
    if (shapes == shapes[0]).all():
        return np.stack(slices)
    low, high = shapes.min(axis=0), shapes.max(axis=0)
    if (2 * low < high).any():
        small, large = int(shapes.prod(axis=1).argmin()), int(shapes.prod(axis=1).argmax())
        raise ChestDxError(f"images of different sizes in {source}: {names[small]} is {shapes[small][1]}x{shapes[small][0]}, "
                           f"{names[large]} is {shapes[large][1]}x{shapes[large][0]}; the slices of one series must have "
                           "one size (point at a folder holding one series, or at one image)")
    warnings.append(f"slices have {len({tuple(s) for s in shapes})} different sizes (from {low[1]}x{low[0]} to "
                    f"{high[1]}x{high[0]}, cropped per slice?): each padded with 0, centred, to {high[1]}x{high[0]}")
    padded = []
    for s in slices:
        dy, dx = high[0] - s.shape[0], high[1] - s.shape[1]
        padded.append(np.pad(s, ((dy // 2, dy - dy // 2), (dx // 2, dx - dx // 2))))
    return np.stack(padded)


def read_image_files(paths: list[Path], names: list[str], *, kind: str | None, progress: bool, source: str) -> Study:
    """Read a single image or a folder of 2-D slices (8-bit intensity, not HU).

    Slices are sorted by the trailing number of their file names (there are no positions
    in plain images). 16-bit images are rescaled to 0-255 over the whole set by min/max;
    colour images are converted to grey. Empty (0-byte) files are skipped with a warning;
    slices cropped to slightly different sizes are padded (see ``_stack_cropped``).

    Args:
        paths: image files (one, or the slices of one series).
        names: how to name each file in messages.
        kind: None, ``"xray"``, ``"ct-slice"`` or ``"ct-volume"``.
        progress: show a progress bar.
        source: the path the user gave.

    Returns:
        The Study: kind ``"ct-volume"`` for several images; for one image the kind asked
        for, else what `chestdx.io.router.route_image` reads in it (``"xray"`` or
        ``"ct-slice"``, with a warning saying so).
    """
    order = sorted(range(len(paths)), key=lambda i: natural_key(paths[i]))
    empty = [names[i] for i in order if paths[i].stat().st_size == 0]
    order = [i for i in order if paths[i].stat().st_size > 0]
    if not order:
        raise ChestDxError(f"{source}: the image file(s) are empty (0 bytes): copy the images again")
    paths, names = [paths[i] for i in order], [names[i] for i in order]
    if kind == "xray" and len(paths) > 1:
        raise ChestDxError(f"kind='xray' was asked for but {source} holds {len(paths)} images: point at one X-ray file")
    if kind == "ct-slice" and len(paths) > 1:
        raise ChestDxError(f"kind='ct-slice' was asked for but {source} holds {len(paths)} images: point at one file "
                           "or leave kind unset to read them as a volume")
    slices, high_depth = [], False
    for path, name in progress_bar(list(zip(paths, names)), "reading images", "image",
                                   enabled=progress, min_items=2):
        grey, deep = read_image(path, name)
        if min(grey.shape) < MIN_SIDE:
            raise ChestDxError(f"{name} is {grey.shape[1]}x{grey.shape[0]} pixels, too small to read "
                               f"(at least {MIN_SIDE}x{MIN_SIDE}): check the file")
        slices.append(grey)
        high_depth |= deep
    warnings = [f"skipped {len(empty)} empty file(s) (0 bytes, e.g. {empty[0]}): those slices are missing"] if empty else []
    volume = _stack_cropped(slices, names, source, warnings)
    if high_depth:
        lo, hi = float(volume.min()), float(volume.max())
        volume = (volume - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(volume)
        warnings.append(f"images deeper than 8 bits: values {lo:g}..{hi:g} rescaled to 0-255")
    if len(volume) > 1:
        warnings.append("plain images carry no slice positions: slices ordered by the number in their file names, "
                        "spacing unknown (1.0 mm)")
    metadata = {"format": paths[0].suffix.lstrip(".").upper(), "n_files": len(paths),
                "bit_depth": 16 if high_depth else 8}
    study_kind = kind or ("ct-volume" if len(volume) > 1 else None)
    if study_kind is None:  # one image without a kind: the router reads what it shows
        study_kind, p_xray = route_image(volume[0])
        metadata["router_p_xray"] = round(p_xray, 4)
        warnings.append(f"a plain image has no modality: read as {'an X-ray' if study_kind == 'xray' else 'a CT slice'} "
                        f"by the image router (P(X-ray) {p_xray:.2f}); pass --kind to override")
    return Study(volume, "8bit", (1.0, 1.0, 1.0), "OT", study_kind, source,
                 metadata=metadata, warnings=warnings)
