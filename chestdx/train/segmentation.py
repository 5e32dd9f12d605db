"""Training of the lesion segmenter on labelled slices (MedSeg / Inf-Net layout).

A few dozen labelled slices are all there is, so augmentation is heavy (quarter turns and flips,
since MedSeg slices are stored transposed; affine; gamma, contrast, noise, blur), the weights
are averaged (EMA) and the averaged network is scored on the validation slices every few
epochs; the best of those is kept. The learning rate follows a cosine over whichever runs
out first, the epochs or the CPU-time budget, so a run stopped by its budget still ends cold.
Runs are resumable: the state is saved after every epoch.

Semi-supervised training (Semi-Inf-Net's idea, Fan et al. 2020): a trained segmenter (the
teacher) labels unlabelled slices (`pseudo_label`), and the new network trains on the labelled
slices plus a fresh random draw of the pseudo-labelled ones every epoch.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from monai.losses import DiceCELoss, DiceLoss
from monai.transforms import (
    Compose,
    RandAdjustContrastd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
)
from PIL import Image
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from chestdx.errors import ChestDxError
from chestdx.evaluate.segmentation import class_dice, infection_scores, mean_scores
from chestdx.io.images import natural_key
from chestdx.models.lesion import LesionUNet, lesion_labels, predict_slices
from chestdx.preprocess.resize import resize_slices
from chestdx.train.loop import seed_everything

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"
BEST_FILE = "best.pt"


@dataclass
class LabelledSlices:
    """8-bit slices with label maps (0 background, 1 ground-glass, 2 consolidation).

    Args:
        images: uint8 ``(h, w)`` per slice (sizes may differ).
        labels: uint8 ``(h, w)`` per slice.
        names: file names, for logs and split records.
    """

    images: list[np.ndarray]
    labels: list[np.ndarray]
    names: list[str]

    def subset(self, names: list[str]) -> LabelledSlices:
        """Args: names: names to keep. Returns: those slices, in the order given."""
        index = {n: i for i, n in enumerate(self.names)}
        missing = [n for n in names if n not in index]
        if missing:
            raise ChestDxError(f"slices {missing[:3]} are not in this set: check the split file")
        return LabelledSlices([self.images[index[n]] for n in names], [self.labels[index[n]] for n in names], list(names))


def read_medseg(root: str | Path, split: str) -> LabelledSlices:
    """Read one split of the MedSeg COVID-19 set as Inf-Net distributes it.

    Args:
        root: folder holding ``<split>/images/*.jpg`` and ``<split>/multiclass_mask/*.png``.
        split: ``"train"`` or ``"test"``.

    Returns:
        The slices with their ground-glass / consolidation label maps.

    Raises:
        ChestDxError: the folder does not have that layout.
    """
    folder = Path(root) / split
    paths = sorted((folder / "images").glob("*.jpg"), key=natural_key)
    if not paths:
        raise ChestDxError(f"no slices in {folder / 'images'}: give the MedSeg folder holding train/ and test/")
    images, labels = [], []
    for path in paths:
        images.append(np.asarray(Image.open(path).convert("L")))
        mask = np.asarray(Image.open(folder / "multiclass_mask" / f"{path.stem}.png"))
        if mask.shape != images[-1].shape:
            raise ChestDxError(f"mask of {path.name} is {mask.shape}, the image {images[-1].shape}")
        labels.append(mask.astype(np.uint8))
    return LabelledSlices(images, labels, [p.stem for p in paths])


def read_unlabelled(root: str | Path) -> list[tuple[str, np.ndarray]]:
    """Read every slice image (JPG or PNG) under a folder, e.g. ``covid-ct-volumes-sirm/``.

    Args:
        root: folder of slice series (one sub-folder per patient) or of slices.

    Returns:
        ``(name, uint8 slice)`` pairs, names relative to ``root``, in natural order.

    Raises:
        ChestDxError: no slice image there.
    """
    root = Path(root)
    paths = sorted((p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")),
                   key=lambda p: natural_key(p.relative_to(root)))
    if not paths:
        raise ChestDxError(f"no JPG or PNG slices under {root}: give a folder of CT slice images")
    return [(str(p.relative_to(root).with_suffix("")), np.asarray(Image.open(p).convert("L"))) for p in paths]


def pseudo_label(teacher, slices: list[tuple[str, np.ndarray]], batch_size: int = 8) -> LabelledSlices:
    """Label unlabelled slices with a trained segmenter at its own threshold (hard pseudo-labels).

    Args:
        teacher: a lesion segmenter (`chestdx.models.lesion.load_lesion_model`).
        slices: ``(name, uint8 slice)`` pairs (lung-cropped, as the teacher was trained).
        batch_size: slices per forward pass.

    Returns:
        The slices with the teacher's label maps.
    """
    images = [im for _, im in slices]
    session = teacher.sessions[0] if teacher.sessions else None
    labels = [lesion_labels(p, teacher.threshold)
              for p in predict_slices(teacher.net, images, teacher.config.input.size, batch_size, session)]
    return LabelledSlices(images, labels, [name for name, _ in slices])


def _resized(data: LabelledSlices, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Args: data: slices. size: side. Returns: images ``(n, 1, size, size)`` in 0-1 and labels ``(n, 1, size, size)``."""
    x = np.stack([resize_slices(im[None].astype(np.float32), size, keep_aspect=False)[0] for im in data.images]) / 255.0
    y = np.stack([np.asarray(Image.fromarray(lb).resize((size, size), Image.NEAREST)) for lb in data.labels])
    return x[:, None].astype(np.float32), y[:, None].astype(np.int64)


def segmentation_augmenter(size: int, seed: int = 0) -> Compose:
    """Random transforms of ``{"image", "label"}`` pairs, ``(1, size, size)`` tensors.

    Args:
        size: image side (translations are a fraction of it).
        seed: seed of the transforms' random state.

    Returns:
        A MONAI ``Compose``.
    """
    keys = ("image", "label")
    augment = Compose([
        RandRotate90d(keys, prob=0.75, max_k=3),
        RandFlipd(keys, prob=0.5, spatial_axis=0),
        RandFlipd(keys, prob=0.5, spatial_axis=1),
        RandAffined(keys, prob=0.9, rotate_range=math.radians(15), scale_range=0.2, shear_range=0.05,
                    translate_range=0.08 * size, mode=("bilinear", "nearest"), padding_mode="zeros"),
        RandAdjustContrastd("image", prob=0.4, gamma=(0.7, 1.5)),
        RandScaleIntensityd("image", prob=0.4, factors=0.15),
        RandShiftIntensityd("image", prob=0.4, offsets=0.08),
        RandGaussianSmoothd("image", prob=0.15, sigma_x=(0.3, 1.0), sigma_y=(0.3, 1.0)),
        RandGaussianNoised("image", prob=0.2, std=0.02),
    ])
    augment.set_random_state(seed)
    return augment


class LesionLoss(torch.nn.Module):
    """Dice + cross-entropy over the three classes, plus Dice of infection (any lesion) vs background.

    The infection term weighs the question the main metric asks (is this pixel a lesion) apart
    from the harder ground-glass / consolidation split.
    """

    def __init__(self) -> None:
        super().__init__()
        self.multiclass = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
        self.infection = DiceLoss(batch=True)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Args: logits: ``(N, 3, H, W)``. labels: ``(N, 1, H, W)`` int. Returns: the scalar loss."""
        infected = 1 - torch.softmax(logits, 1)[:, :1]
        return self.multiclass(logits, labels) + self.infection(infected, (labels > 0).float())


def score_segmenter(net: torch.nn.Module, data: LabelledSlices, size: int, threshold: float = 0.5,
                    probs: list[np.ndarray] | None = None) -> dict:
    """Inf-Net's scores of a segmenter on labelled slices, at their own resolution.

    Args:
        net: the network (eval mode).
        data: the slices.
        size: network input side.
        threshold: infection probability threshold.
        probs: class probabilities per slice, when already predicted (then ``net`` is unused).

    Returns:
        Mean ``dice``, ``sensitivity``, ``specificity``, ``mae``, ``dice_ground_glass`` and
        ``dice_consolidation`` (means over the slices whose ground truth has that class), with counts.
    """
    probs = probs if probs is not None else predict_slices(net, data.images, size)
    rows = []
    for p, truth in zip(probs, data.labels):
        row = infection_scores(1 - p[0], truth > 0, threshold)
        labels = lesion_labels(p, threshold)
        row["dice_ground_glass"] = class_dice(labels, truth, 1)
        row["dice_consolidation"] = class_dice(labels, truth, 2)
        rows.append(row)
    return mean_scores(rows)


def choose_threshold(probs: list[np.ndarray], data: LabelledSlices, grid=np.arange(0.2, 0.81, 0.05)) -> float:
    """The infection threshold with the best mean Dice on (validation) slices.

    Args:
        probs: class probabilities per slice.
        data: the slices' ground truth.
        grid: candidate thresholds.

    Returns:
        The best threshold (the lowest one on ties).
    """
    scores = [np.mean([infection_scores(1 - p[0], t > 0, float(th))["dice"] for p, t in zip(probs, data.labels)])
              for th in grid]
    return round(float(grid[int(np.argmax(scores))]), 2)


@dataclass
class SegmenterFit:
    """What `fit_segmenter` returns.

    Args:
        net: the best EMA network (eval mode).
        history: one dict per epoch (loss, seconds, learning rate, validation scores when scored).
        best_epoch: the epoch whose EMA network scored best on validation.
        val_scores: its validation scores (threshold 0.5).
        seconds: training CPU time, resumed runs included.
    """

    net: torch.nn.Module
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    val_scores: dict = field(default_factory=dict)
    seconds: float = 0.0


def fit_segmenter(train: LabelledSlices, val: LabelledSlices, out_dir: str | Path | None = None, *,
                  encoder: bool | str = "ct-moco-lite0", normalise: str = "unit", size: int = 288,
                  epochs: int = 100, batch_size: int = 8, lr: float = 1e-3, weight_decay: float = 1e-4,
                  ema_decay: float = 0.98, eval_every: int = 5, max_minutes: float | None = None,
                  max_wall_minutes: float | None = None, seed: int = 0, pseudo: LabelledSlices | None = None,
                  pseudo_per_epoch: int = 0) -> SegmenterFit:
    """Train a `LesionUNet`; keep the EMA network that scores best on ``val`` (infection Dice).

    Args:
        train: training slices (all of them in every epoch).
        val: validation slices (scored every ``eval_every`` epochs and at the last epoch).
        out_dir: folder for ``state.pt`` (resume point, written every epoch) and ``best.pt``;
            a run finding ``state.pt`` there continues from it. None: nothing is written.
        encoder: encoder weights (see `LesionUNet`).
        normalise: input normalisation (see `LesionUNet`).
        size: input side.
        epochs: epochs at most.
        batch_size: slices per step.
        lr: peak learning rate (AdamW, linear warm-up over the first 3% then cosine).
        weight_decay: AdamW weight decay.
        ema_decay: decay of the weight average that is scored and kept.
        eval_every: epochs between validation scores.
        max_minutes: compute budget in minutes of this process's CPU time (a shared machine then
            stretches the run instead of shortening it); training stops when it is spent, and the
            learning-rate schedule follows it.
        max_wall_minutes: a wall-clock budget as well (whichever is spent first ends the run).
        seed: seed of weights, batches and augmentation.
        pseudo: pseudo-labelled slices (`pseudo_label`), drawn from as well.
        pseudo_per_epoch: how many of ``pseudo`` join each epoch (a new random draw each time).

    Returns:
        The fit.
    """
    seed_everything(seed)
    net = LesionUNet(encoder=encoder, normalise=normalise)
    net.to(memory_format=torch.channels_last)
    ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)
    optimiser = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = LesionLoss()
    x_all, y_all = _resized(train, size)
    n_pseudo = min(pseudo_per_epoch, len(pseudo.names)) if pseudo is not None else 0
    if n_pseudo:
        x_extra, y_extra = _resized(pseudo, size)
        x_all, y_all = np.concatenate([x_all, x_extra]), np.concatenate([y_all, y_extra])
        del x_extra, y_extra
    augment = segmentation_augmenter(size, seed)
    rng = np.random.default_rng(seed)
    history: list[dict] = []
    best = {"epoch": 0, "dice": -1.0, "scores": {}}
    spent, wall, start_epoch = 0.0, 0.0, 0
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        if (out / STATE_FILE).is_file():
            state = torch.load(out / STATE_FILE, map_location="cpu", weights_only=False)
            net.load_state_dict(state["net"])
            ema.load_state_dict(state["ema"])
            optimiser.load_state_dict(state["optimiser"])
            history, best, spent, start_epoch = state["history"], state["best"], state["seconds"], state["epoch"]
            wall = state.get("wall_seconds", spent)
            rng.bit_generator.state = state["rng"]
            torch.set_rng_state(state["torch_rng"])
            augment.set_random_state(int(rng.integers(2**31)))
            log.info("resumed at epoch %d (%.0f CPU s spent)", start_epoch, spent)
    budget = max_minutes * 60 if max_minutes else math.inf
    wall_budget = max_wall_minutes * 60 if max_wall_minutes else math.inf
    n_train = len(train.names)
    steps_per_epoch = math.ceil((n_train + n_pseudo) / batch_size)
    for epoch in range(start_epoch, epochs):
        if spent >= budget or wall >= wall_budget:  # a finished run resumed: nothing left to train
            break
        started, wall_started = time.process_time(), time.time()
        net.train()
        order = rng.permutation(n_train)
        if n_pseudo:
            drawn = n_train + rng.choice(len(x_all) - n_train, n_pseudo, replace=False)
            order = rng.permutation(np.concatenate([order, drawn]))
        losses = []
        for step in range(steps_per_epoch):
            progress = max((epoch + step / steps_per_epoch) / epochs, spent / budget, wall / wall_budget)
            rate = lr * min(1.0, progress / 0.03) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
            for group in optimiser.param_groups:
                group["lr"] = rate
            idx = order[step * batch_size:(step + 1) * batch_size]
            pairs = [augment({"image": torch.from_numpy(x_all[i]), "label": torch.from_numpy(y_all[i])}) for i in idx]
            x = torch.stack([p["image"].as_tensor().clamp(0, 1) for p in pairs]).contiguous(memory_format=torch.channels_last)
            y = torch.stack([p["label"].as_tensor().round().long() for p in pairs])
            loss = loss_fn(net(x), y)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            ema.update_parameters(net)
            losses.append(loss.item())
        spent += time.process_time() - started
        wall += time.time() - wall_started
        row = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "lr": rate, "cpu_seconds": round(spent, 1),
               "wall_seconds": round(time.time() - wall_started, 1)}
        last = epoch + 1 == epochs or spent >= budget or wall >= wall_budget
        if (epoch + 1) % eval_every == 0 or last:
            ema.module.eval()
            scores = score_segmenter(ema.module, val, size)
            row["val"] = {k: v for k, v in scores.items() if not k.startswith("n_")}
            if scores["dice"] > best["dice"]:
                best = {"epoch": epoch + 1, "dice": scores["dice"], "scores": scores}
                if out is not None:
                    torch.save(ema.module.state_dict(), out / BEST_FILE)
                else:
                    best["state"] = copy.deepcopy(ema.module.state_dict())
        history.append(row)
        log.info("epoch %s", row)
        if out is not None:
            torch.save({"net": net.state_dict(), "ema": ema.state_dict(), "optimiser": optimiser.state_dict(),
                        "history": history, "best": best, "seconds": spent, "wall_seconds": wall, "epoch": epoch + 1,
                        "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state()}, out / STATE_FILE)
        if last:
            break
    final = LesionUNet(encoder=False, normalise=normalise)
    if out is not None and (out / BEST_FILE).is_file():
        final.load_state_dict(torch.load(out / BEST_FILE, map_location="cpu", weights_only=True))
    elif "state" in best:
        final.load_state_dict(best.pop("state"))
    else:
        final.load_state_dict(ema.module.state_dict())
    return SegmenterFit(net=final.eval(), history=history, best_epoch=best["epoch"], val_scores=best["scores"],
                        seconds=round(spent, 1))
