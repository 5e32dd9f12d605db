"""NIfTI volumes (``.nii`` / ``.nii.gz``), reoriented to the same array layout as DICOM."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from chestdx.errors import ChestDxError
from chestdx.io.dicom import MIN_SIDE
from chestdx.io.study import Study

NIFTI_SUFFIXES = (".nii", ".nii.gz")
MAX_VOXELS = 2**29
"""Largest volume read (voxels of its first 3-D volume; 2 GiB as float32): a 1024x1024x512 CT is that size, and a
gzip of zeros a few megabytes long can claim far more."""


def is_nifti(path: Path) -> bool:
    """Returns: True for ``.nii`` and ``.nii.gz`` file names."""
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def read_nifti(path: Path, *, kind: str | None, source: str) -> Study:
    """Read a NIfTI CT volume.

    The image is reoriented to the closest canonical (RAS+) orientation with nibabel,
    then laid out as ``(z, y, x)`` with z from feet to head, rows from anterior to
    posterior and columns from the patient's right to left: the same layout as an
    axial DICOM series read by chestdx. Values are taken as Hounsfield units unless they
    lie within 0..255, in which case the volume is marked 8-bit.

    Args:
        path: the ``.nii`` / ``.nii.gz`` file.
        kind: None, ``"ct-volume"`` or ``"ct-slice"`` (``"xray"`` is refused).
        source: the path the user gave.

    Returns:
        The Study.
    """
    if kind == "xray":
        raise ChestDxError(f"{path.name} is a NIfTI volume, not an X-ray: leave kind unset for CT volumes")
    try:
        img = nib.load(str(path))  # the header only, so far
        voxels = int(np.prod([int(n) for n in img.shape[:3]], dtype=np.int64))
        if voxels > MAX_VOXELS:
            raise ChestDxError(f"{path.name} claims a volume of {' x '.join(map(str, img.shape))} voxels, more than "
                               f"{MAX_VOXELS} (a 1024x1024x512 CT): no chest CT is that large; check the file")
        img = nib.as_closest_canonical(img)
        data = np.asarray(img.get_fdata(dtype=np.float32))
    except ChestDxError:
        raise
    except Exception as exc:  # nibabel raises many types on damaged files
        raise ChestDxError(f"cannot read NIfTI file {path.name} ({exc}): the file is damaged or truncated; "
                           "re-export it") from exc
    warnings = []
    zooms = [float(z) for z in img.header.get_zooms()[:3]]
    if data.ndim == 4:
        warnings.append(f"4-D NIfTI ({data.shape[3]} volumes): the first volume was used")
        data = data[..., 0]
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim != 3:
        raise ChestDxError(f"{path.name} has {data.ndim} dimensions: chestdx reads 3-D CT volumes")
    zooms += [1.0] * (3 - len(zooms))
    volume = np.ascontiguousarray(data.transpose(2, 1, 0)[:, ::-1, ::-1])
    if min(volume.shape[1:]) < MIN_SIDE:
        raise ChestDxError(f"{path.name} has slices of {volume.shape[2]}x{volume.shape[1]} pixels, too small to read")
    lo, hi = float(volume.min()), float(volume.max())
    intensity = "hu"
    if lo >= 0 and hi <= 255:
        intensity = "8bit"
        warnings.append(f"values {lo:g}..{hi:g} do not look like Hounsfield units: read as 8-bit intensity")
    elif lo > -500:
        warnings.append(f"lowest value {lo:g} is far above air (-1000 HU): values assumed to be HU, check the rescaling")
    if kind == "ct-slice" and len(volume) > 1:
        raise ChestDxError(f"kind='ct-slice' was asked for but {path.name} has {len(volume)} slices")
    spacing = (zooms[2], zooms[1], zooms[0])
    positions = float(img.affine[2, 3]) + spacing[0] * np.arange(len(volume))
    metadata = {"format": "NIfTI", "orientation": "".join(nib.aff2axcodes(img.affine))}
    study_kind = kind or ("ct-volume" if len(volume) > 1 else "ct-slice")
    return Study(volume, intensity, spacing, "CT", study_kind, source, None, positions, metadata, warnings)


def write_nifti(volume: np.ndarray, spacing: tuple[float, float, float], path: str | Path, z_origin: float = 0.0) -> Path:
    """Write a ``(z, y, x)`` array laid out as chestdx reads studies: the inverse of `read_nifti`.

    The file is RAS+ (feet to head, right to left columns flipped back, anterior to posterior
    rows flipped back) with the given spacing, so ``read_nifti`` returns the array unchanged and
    a viewer lays it over a NIfTI study read by chestdx. For DICOM studies the orientation is the
    axial radiological one chestdx reads them in; the in-plane origin is not recorded.

    Args:
        volume: ``(z, y, x)`` array (a label map: uint8).
        spacing: voxel spacing ``(z, y, x)`` in mm.
        path: ``.nii`` or ``.nii.gz`` file to write.
        z_origin: position (mm) of the first slice along z.

    Returns:
        The path.
    """
    data = np.ascontiguousarray(np.asarray(volume)[:, ::-1, ::-1].transpose(2, 1, 0))
    affine = np.diag([float(spacing[2]), float(spacing[1]), float(spacing[0]), 1.0])
    affine[2, 3] = z_origin
    image = nib.Nifti1Image(data, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, str(path))
    return Path(path)
