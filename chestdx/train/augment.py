"""Training augmentations from the papers, as MONAI transforms on unit-range slices."""

from __future__ import annotations

import numpy as np
import torch
from monai.transforms import (
    Compose,
    Rand2DElastic,
    RandAdjustContrast,
    RandAffine,
    RandFlip,
    RandGaussianSmooth,
    RandScaleIntensity,
    RandShiftIntensity,
)

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
}


def slice_augmenter(size: int, options: dict | None = None, seed: int = 0) -> Compose:
    """Random rotation, scale, skew (shear), shift, flip, elastic distortion, blur, contrast, brightness.

    Args:
        size: slice height/width in pixels (for the shift and elastic grid).
        options: overrides of `DEFAULT_AUGMENT` (probabilities and ranges); a value of 0
            switches that augmentation off.
        seed: random seed of the transform chain.

    Returns:
        A MONAI ``Compose`` acting on one ``(C, H, W)`` float tensor in 0..1.
    """
    o = {**DEFAULT_AUGMENT, **(options or {})}
    transforms = [
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
