"""Turn dataset records into cached, model-ready training samples (per the recipe's InputSpec)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from chestdx.io import load_study
from chestdx.io.labels import class_index
from chestdx.models.registry import RecipeConfig
from chestdx.preprocess.intensity import imagenet_normalise
from chestdx.preprocess.pipeline import prepare_study
from chestdx.progress import progress as progress_bar


@dataclass
class SampleSet:
    """Training samples kept in memory as unit-range float16 arrays.

    Args:
        x: one array per sample: ``(C, H, W)`` for unit ``"slice"``, ``(S, C, H, W)`` for ``"bag"``.
        y: class index of each sample.
        patient_ids: patient of each sample (for patient-level metrics).
        case_index: index of the record each sample came from.
    """

    x: list[np.ndarray]
    y: np.ndarray
    patient_ids: list[str]
    case_index: np.ndarray

    def __len__(self) -> int:
        return len(self.x)


def build_samples(records: list, config: RecipeConfig, unit: str | None = None, progress: bool = True) -> SampleSet:
    """Load, preprocess and cache every record as the recipe's training samples.

    Slices are prepared with the recipe's InputSpec but kept in 0..1 (normalisation
    happens per batch, after augmentation).

    Args:
        records: dataset records (``path``, ``label``, ``patient_id``).
        config: the recipe config (its ``input`` spec and ``classes``).
        unit: ``"slice"`` (each selected slice a sample) or ``"bag"`` (each study, or each
            group of slices for the ``"groups"`` selection, a sample); default ``config.unit``.
        progress: show a progress bar.

    Returns:
        The samples.
    """
    unit = unit or config.unit
    spec = dataclasses.replace(config.input, normalise="unit")
    xs, ys, pids, cases = [], [], [], []
    for i, rec in enumerate(progress_bar(records, "preparing studies", "study", enabled=progress)):
        y = class_index(rec.label, config.classes)
        prepared = prepare_study(load_study(rec.path, progress=False), spec)
        x = prepared.x.astype(np.float16)
        if unit == "slice":
            parts = list(x[prepared.indices >= 0]) or list(x)
        elif prepared.groups is not None:
            parts = [x[g] for g in prepared.groups]
        else:
            parts = [x]
        xs += parts
        ys += [y] * len(parts)
        pids += [rec.patient_id] * len(parts)
        cases += [i] * len(parts)
    return SampleSet(xs, np.asarray(ys, dtype=np.int64), pids, np.asarray(cases, dtype=np.int64))


def to_model_input(batch: torch.Tensor, config: RecipeConfig) -> torch.Tensor:
    """Apply the recipe's normalisation to a unit-range batch.

    Args:
        batch: ``(..., C, H, W)`` float tensor in 0..1.
        config: the recipe config.

    Returns:
        Float32 tensor ready for the network.
    """
    batch = batch.float()
    if config.input.normalise == "imagenet":
        shape = batch.shape
        batch = torch.as_tensor(imagenet_normalise(batch.reshape(-1, *shape[-3:]).numpy())).reshape(shape)
    return batch
