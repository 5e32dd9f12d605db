"""Training augmentations from the papers, as MONAI transforms on unit-range slices."""

from __future__ import annotations

import io

import numpy as np
import torch
from monai.transforms import (
    Compose,
    Rand2DElastic,
    RandAdjustContrast,
    RandAffine,
    RandFlip,
    RandGaussianSmooth,
    RandomizableTransform,
    RandScaleCrop,
    RandScaleIntensity,
    RandShiftIntensity,
    Resize,
)
from PIL import Image

DEFAULT_AUGMENT = {
    "rotate_deg": 15.0,
    "scale": 0.15,
    "shear": 0.1,
    "translate_frac": 0.06,
    "flip": 0.5,
    "elastic": 0.1,
    "blur": 0.15,
    "contrast": 0.3,
    "brightness": 0.3,
    "crop_scale": 0,
    "jpeg": 0,
    "jpeg_quality": (40, 95),
}


class RandJPEG(RandomizableTransform):
    """Re-encode a unit-range slice as an 8-bit JPEG of random quality and decode it again.

    Training images whose classes come in different file formats (UCSD COVID-CT: COVID-19
    slices are PNG, non-COVID slices JPEG) let a network learn compression artefacts
    instead of disease; re-encoding every training slice at a random quality hides them.

    Args:
        prob: probability of re-encoding a slice.
        quality: ``(low, high)`` JPEG quality range, drawn uniformly.

    Example:
        >>> RandJPEG(prob=1.0)(torch.rand(3, 64, 64)).shape
        torch.Size([3, 64, 64])
    """

    def __init__(self, prob: float = 1.0, quality: tuple[int, int] = (40, 95)) -> None:
        RandomizableTransform.__init__(self, prob)
        self.quality = quality
        self._q = quality[1]

    def randomize(self, data=None) -> None:
        """Draw whether to re-encode and at which quality."""
        super().randomize(None)
        self._q = int(self.R.randint(self.quality[0], self.quality[1] + 1))

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        """Args: img: ``(C, H, W)`` float tensor in 0..1. Returns: the re-encoded slice, same shape."""
        self.randomize()
        if not self._do_transform:
            return img
        x = torch.as_tensor(img)
        grey = (x.mean(0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        buffer = io.BytesIO()
        Image.fromarray(grey).save(buffer, format="JPEG", quality=self._q)
        decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())), dtype=np.float32) / 255.0
        return torch.from_numpy(decoded)[None].expand_as(x).to(x.dtype).clone()


def slice_augmenter(size: int, options: dict | None = None, seed: int = 0) -> Compose:
    """Random crop, rotation, scale, skew (shear), shift, flip, elastic distortion, blur, contrast,
    brightness and JPEG re-encoding.

    Args:
        size: slice height/width in pixels (for the shift and elastic grid).
        options: overrides of `DEFAULT_AUGMENT` (probabilities and ranges); a value of 0
            switches that augmentation off.
        seed: random seed of the transform chain.

    Returns:
        A MONAI ``Compose`` acting on one ``(C, H, W)`` float tensor in 0..1.
    """
    o = {**DEFAULT_AUGMENT, **(options or {})}
    transforms = []
    if o["crop_scale"]:
        # Random resized crop: each side crop_scale..1 of its length (drawn separately), resized back.
        transforms += [RandScaleCrop(roi_scale=o["crop_scale"], max_roi_scale=1.0, random_size=True),
                       Resize((size, size))]
    transforms += [
        RandAffine(prob=0.9, rotate_range=np.deg2rad(o["rotate_deg"]), scale_range=o["scale"],
                   shear_range=o["shear"], translate_range=o["translate_frac"] * size, padding_mode="zeros"),
        RandFlip(prob=o["flip"], spatial_axis=1),
    ]
    if o["elastic"]:
        transforms.append(Rand2DElastic(prob=o["elastic"], spacing=(size // 7, size // 7), magnitude_range=(1, 2),
                                        padding_mode="zeros"))
    if o["blur"]:
        transforms.append(RandGaussianSmooth(prob=o["blur"], sigma_x=(0.3, 1.0), sigma_y=(0.3, 1.0)))
    if o["contrast"]:
        transforms.append(RandAdjustContrast(prob=o["contrast"], gamma=(0.75, 1.35)))
    if o["brightness"]:
        transforms += [RandScaleIntensity(factors=0.15, prob=o["brightness"]),
                       RandShiftIntensity(offsets=0.08, prob=o["brightness"])]
    if o["jpeg"]:
        transforms.append(RandJPEG(prob=o["jpeg"], quality=tuple(o["jpeg_quality"])))
    chain = Compose(transforms)
    chain.set_random_state(seed=seed)
    return chain


def augment_batch(batch: torch.Tensor, augmenter: Compose) -> torch.Tensor:
    """Apply ``augmenter`` to every slice of a batch.

    Args:
        batch: ``(B, C, H, W)`` or ``(B, S, C, H, W)`` unit-range tensor.
        augmenter: from `slice_augmenter`.

    Returns:
        The augmented batch, same shape, clipped to 0..1.
    """
    flat = batch.reshape(-1, *batch.shape[-3:])
    out = torch.stack([torch.as_tensor(augmenter(s)) for s in flat])
    return out.clamp_(0, 1).reshape(batch.shape)
