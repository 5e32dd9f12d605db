"""Self-supervised contrastive pre-training of a slice encoder on unlabelled CT (MoCo v2).

Self-Trans (He et al. 2020) pre-trains its ImageNet network again, without labels, on CT
slices before fine-tuning; this is that step. MoCo v2 (Chen et al. 2020) rather than
SimCLR or BYOL: its queue of past keys gives thousands of negatives with the small
batches a CPU can afford (SimCLR needs very large batches), and its key encoder runs
forward only (SimCLR back-propagates through both views, BYOL needs a predictor and
long schedules), so one step costs about two thirds of a SimCLR step.
"""

from __future__ import annotations

import copy
import logging
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from chestdx.preprocess.intensity import imagenet_normalise
from chestdx.progress import progress as progress_bar
from chestdx.train.augment import augment_batch, slice_augmenter

log = logging.getLogger(__name__)

# Two strongly augmented views of one slice: grey CT has no colour, so crop, geometry,
# intensity, blur and compression carry the invariances.
VIEW_AUGMENT = {"crop_scale": 0.4, "rotate_deg": 20.0, "elastic": 0, "blur": 0.5, "contrast": 0.8,
                "brightness": 0.8, "jpeg": 0.5}


class MoCo(nn.Module):
    """MoCo v2: query encoder + projection MLP, momentum key encoder, queue of negatives.

    Args:
        encoder: module mapping ``(N, 3, H, W)`` to ``(N, D)`` features (e.g. an
            ``EfficientNetClassifier``'s ``encode``, wrapped).
        feature_dim: ``D``.
        dim: projection size.
        queue_size: number of negative keys kept.
        momentum: key-encoder momentum.
        temperature: softmax temperature of the InfoNCE loss.
    """

    def __init__(self, encoder: nn.Module, feature_dim: int, dim: int = 128, queue_size: int = 4096,
                 momentum: float = 0.99, temperature: float = 0.2) -> None:
        super().__init__()
        self.query = nn.Sequential(encoder, nn.Linear(feature_dim, 512), nn.ReLU(inplace=True), nn.Linear(512, dim))
        self.key = copy.deepcopy(self.query)
        for p in self.key.parameters():
            p.requires_grad_(False)
        self.momentum, self.temperature = momentum, temperature
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, dim), dim=1))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def _update_key(self) -> None:
        for q, k in zip(self.query.parameters(), self.key.parameters()):
            k.mul_(self.momentum).add_(q.detach(), alpha=1 - self.momentum)
        for q, k in zip(self.query.buffers(), self.key.buffers()):
            k.copy_(q)

    @torch.no_grad()
    def _keys(self, x: torch.Tensor, chunks: int) -> torch.Tensor:
        """Keys computed in shuffled sub-batches: a one-device stand-in for MoCo's shuffled
        batch norm, so batch statistics cannot tell a query which key is its own."""
        perm = torch.randperm(len(x))
        keys = torch.cat([self.key(part) for part in x[perm].chunk(chunks)])
        return F.normalize(keys, dim=1)[torch.argsort(perm)]

    def loss(self, view_q: torch.Tensor, view_k: torch.Tensor, key_chunks: int = 4) -> torch.Tensor:
        """InfoNCE loss of one batch; updates the key encoder and the queue.

        Args:
            view_q: first views ``(N, 3, H, W)``.
            view_k: second views, same slices in the same order.
            key_chunks: sub-batches for the shuffled key pass.

        Returns:
            The scalar loss (query branch only carries gradients).
        """
        q = F.normalize(self.query(view_q), dim=1)
        self._update_key()
        k = self._keys(view_k, key_chunks)
        positives = (q * k).sum(1, keepdim=True)
        negatives = q @ self.queue.clone().T  # the queue is updated below, before backward
        logits = torch.cat([positives, negatives], 1) / self.temperature
        loss = F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long))
        with torch.no_grad():
            n, start = len(k), int(self.pointer)
            idx = (torch.arange(n) + start) % len(self.queue)
            self.queue[idx] = k
            self.pointer.fill_((start + n) % len(self.queue))
        return loss


class _Encode(nn.Module):
    """Wraps a network's ``encode`` method as a module (the pooled slice features)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.encode(x)


def scaled_lr(batch_size: int) -> float:
    """Args: batch_size: slices per step. Returns: MoCo v2's SGD rate (0.03 per 256) scaled linearly."""
    return 0.03 * batch_size / 256


def pretrain_moco(net: nn.Module, slices: list[np.ndarray], *, epochs: int = 10, batch_size: int = 32,
                  lr: float | None = None, feature_dim: int = 1280, queue_size: int = 4096, seed: int = 0,
                  max_minutes: float | None = None, progress: bool = True) -> tuple[nn.Module, list[dict]]:
    """Contrastive pre-training of ``net``'s encoder on unlabelled slices (MoCo v2).

    Args:
        net: a slice classifier with an ``encode`` method (``EfficientNetClassifier``);
            trained in place from its current (ImageNet) weights.
        slices: unit-range ``(3, H, W)`` float16/32 arrays, all the same size.
        epochs: passes over the slices.
        batch_size: slices per step.
        lr: peak SGD learning rate (cosine schedule, momentum 0.9, weight decay 1e-4); None:
            `scaled_lr` of ``batch_size``.
        feature_dim: size of ``net.encode``'s output.
        queue_size: negatives kept (at most the number of slices minus one batch; keep it under
            one epoch of slices, or every image's own previous key sits among its negatives).
        seed: seed of the data order and the augmentation.
        max_minutes: stop after the epoch that uses up this budget.
        progress: show progress bars.

    Returns:
        ``(net, history)``: the network with pre-trained encoder, and one row per epoch
        (loss, seconds).
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    size = slices[0].shape[-1]
    moco = MoCo(_Encode(net), feature_dim, queue_size=min(queue_size, max(len(slices) - batch_size, batch_size)))
    moco.query.to(memory_format=torch.channels_last)
    moco.key.to(memory_format=torch.channels_last)
    params = [p for p in moco.query.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=scaled_lr(batch_size) if lr is None else lr, momentum=0.9, weight_decay=1e-4)
    steps = epochs * (len(slices) // batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / max(steps, 1))))
    augment = slice_augmenter(size, VIEW_AUGMENT, seed=seed)
    history, start = [], time.time()
    for epoch in range(epochs):
        moco.train()
        t0, total, n = time.time(), 0.0, 0
        order = rng.permutation(len(slices))
        batches = [order[i:i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]
        bar = progress_bar(batches, f"moco epoch {epoch + 1}/{epochs}", "batch", enabled=progress)
        for idx in bar:
            batch = torch.from_numpy(np.stack([slices[i] for i in idx])).float()
            views = [torch.from_numpy(imagenet_normalise(augment_batch(batch, augment).numpy()))
                     .contiguous(memory_format=torch.channels_last) for _ in range(2)]
            loss = moco.loss(*views)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            n += len(idx)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        row = {"epoch": epoch + 1, "loss": round(total / max(n, 1), 4), "seconds": round(time.time() - t0, 1)}
        history.append(row)
        log.warning("%s", row) if not progress else tqdm.write(str(row))
        if max_minutes and time.time() - start > 60 * max_minutes:
            log.warning("MoCo stopped after epoch %d: time budget of %s minutes used", epoch + 1, max_minutes)
            break
    return net.eval(), history
