"""Fine-tune only the last blocks of a network on feature maps of its frozen part, cached on disk once.

DETL trains the last block and the head; everything before is frozen, so its output for
an image never changes during training. ``cache_block_inputs`` runs the frozen part (stem
and ``blocks[:block]``) once over a dataset and stores the feature maps (float16, a
``.npy`` file beside a JSON listing the images and the input spec, reused when both
match); ``fit_tail`` then trains ``blocks[block:]`` + head on them, an epoch costing a
small fraction of a full forward pass. No image augmentation is possible on cached maps.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from chestdx.models.registry import RecipeConfig
from chestdx.train.data import build_samples, to_model_input
from chestdx.train.loop import _val_score, apply_freeze, make_optimizer, seed_everything, stages_of

log = logging.getLogger(__name__)


class Tail(nn.Module):
    """``net`` from the input of ``blocks[block]`` to the logits (EfficientNet or small ConvNet classifiers).

    Args:
        net: an ``EfficientNetClassifier`` or ``ConvNetClassifier`` (shares its modules).
        block: index of the first block the tail runs.
    """

    def __init__(self, net: nn.Module, block: int) -> None:
        super().__init__()
        self.net, self.block = net, block

    def features(self, maps: torch.Tensor) -> torch.Tensor:
        """Args: maps: block inputs ``(B, C, h, w)``. Returns: pooled features ``(B, D)``."""
        h = self.net.blocks[self.block:](maps)
        if hasattr(self.net, "conv_head"):
            h = self.net.act_head(self.net.conv_head(h))
        return self.net.pool(h).flatten(1)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """Args: maps: block inputs ``(B, C, h, w)``. Returns: logits ``(B, K)``."""
        return self.net.head(self.features(maps))


def frozen_part(net: nn.Module, block: int) -> nn.Sequential:
    """Returns: the stem (if any) and ``blocks[:block]`` of ``net`` as one module."""
    stem = [net.stem] if hasattr(net, "stem") else []
    return nn.Sequential(*stem, *net.blocks[:block])


def cache_block_inputs(records: list, config: RecipeConfig, net: nn.Module, block: int, path: str | Path,
                       transform: Callable[[torch.Tensor], torch.Tensor] | None = None, chunk: int = 128,
                       ) -> np.ndarray:
    """Feature maps entering ``blocks[block]`` for one image record each, cached in ``path`` (``.npy``).

    Images are prepared as training does (``build_samples``: the recipe's InputSpec, one
    sample per image) and normalised as the network expects.

    Args:
        records: image records (one sample each: X-ray films or single slices).
        config: the recipe config.
        net: the network (its frozen part must not change while the cache is used).
        block: index of the first trainable block.
        path: the ``.npy`` file; a ``.json`` beside it lists what it holds.
        transform: applied to each unit-range batch before normalisation (e.g. blanking); its
            ``__name__`` is part of the cache key.
        chunk: records prepared at a time (bounds memory).

    Returns:
        ``(len(records), C, h, w)`` float16 array, in memory.
    """
    path = Path(path)
    key = {"paths": [str(r.path) for r in records], "input": config.input.to_dict(), "block": block,
           "transform": getattr(transform, "__name__", None)}
    meta = path.with_suffix(".json")
    if path.is_file() and meta.is_file() and json.loads(meta.read_text()) == key:
        return np.load(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta.unlink(missing_ok=True)  # a half-written cache is never taken for a finished one
    part = frozen_part(net, block).eval()
    out = None
    start = time.time()
    for first in range(0, len(records), chunk):
        # labels play no part in the maps: any class name lets records of other label sets through
        batch = [dataclasses.replace(r, label=config.classes[0]) for r in records[first:first + chunk]]
        samples = build_samples(batch, config, "slice", progress=False)
        if len(samples) != len(records[first:first + chunk]):
            raise ValueError(f"records {first}..{first + chunk} gave {len(samples)} samples: one image per record "
                             "is needed for a feature cache")
        with torch.inference_mode():
            x = torch.from_numpy(np.stack(samples.x)).float()
            maps = part(to_model_input(transform(x) if transform else x, config)).half().numpy()
        if out is None:
            out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(len(records), *maps.shape[1:]))
        out[first:first + len(maps)] = maps
        log.info("cached %d / %d images (%.0f s)", first + len(maps), len(records), time.time() - start)
    out.flush()
    del out
    meta.write_text(json.dumps(key))
    return np.load(path)


@torch.inference_mode()
def tail_outputs(tail: Tail, maps: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Returns: ``(logits, pooled features)`` of the tail on cached maps, float32, eval mode."""
    tail.eval()
    logits, features = [], []
    for i in range(0, len(maps), batch_size):
        f = tail.features(torch.from_numpy(np.asarray(maps[i:i + batch_size])).float())
        features.append(f)
        logits.append(tail.net.head(f))
    return torch.cat(logits).numpy(), torch.cat(features).numpy()


def fit_tail(tail: Tail, config: RecipeConfig, train_maps: np.ndarray, train_y: np.ndarray, val_maps: np.ndarray,
             val_y: np.ndarray, *, seed: int = 0, stage_index: int = 0, balance: bool = True) -> list[dict]:
    """Train the tail on cached maps: the recipe's stage (optimizer, lr, epochs, patience), best val epoch kept.

    Validation score: AUC (binary) or macro one-vs-rest AUC; the weights of the best
    epoch are restored. With ``balance``, the loss weights classes by inverse frequency.

    Args:
        tail: the tail to train (its parameters named as in the whole network).
        config: the recipe config (``stages_of(config)[stage_index]``).
        train_maps, train_y: training maps and class indices.
        val_maps, val_y: validation maps and class indices.
        seed: random seed (batch order, dropout).
        stage_index: which stage of the recipe to run.
        balance: weight the loss by inverse class frequency.

    Returns:
        One dict per epoch: ``epoch``, ``train_loss``, ``val_auc``, ``seconds``.
    """
    stage = stages_of(config)[stage_index]
    seed_everything(seed)
    rng = np.random.default_rng(seed)
    params = apply_freeze(tail.net, stage)
    bs = stage["batch_size"]
    opt, sched = make_optimizer(params, stage, stage["epochs"] * math.ceil(len(train_y) / bs))
    counts = np.bincount(train_y, minlength=len(config.classes)).astype(float)
    weight = torch.tensor(counts.sum() / (len(counts) * np.maximum(counts, 1)), dtype=torch.float32) if balance else None
    loss_fn = nn.CrossEntropyLoss(weight=weight, label_smoothing=stage["label_smoothing"])
    best, best_state, waited, history = -math.inf, copy.deepcopy(tail.state_dict()), 0, []
    for epoch in range(stage["epochs"]):
        t0, total = time.time(), 0.0
        tail.train()
        order = rng.permutation(len(train_y))
        for i in range(0, len(order), bs):
            idx = np.sort(order[i:i + bs])
            x = torch.from_numpy(np.asarray(train_maps[idx])).float()
            loss = loss_fn(tail(x), torch.from_numpy(train_y[idx]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        logits, _ = tail_outputs(tail, val_maps)
        score = _val_score(val_y, logits)
        history.append({"stage": stage["name"], "epoch": epoch + 1, "train_loss": round(total / len(order), 4),
                        "val_auc": round(score, 4), "seconds": round(time.time() - t0, 1)})
        log.info("%s", history[-1])
        if score > best:
            best, best_state, waited = score, copy.deepcopy(tail.state_dict()), 0
        else:
            waited += 1
            if waited >= stage["patience"]:
                break
    tail.load_state_dict(best_state)
    tail.eval()
    return history


def class_probabilities(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Returns: softmax of ``logits / temperature``."""
    return torch.softmax(torch.from_numpy(logits / temperature), 1).numpy()

