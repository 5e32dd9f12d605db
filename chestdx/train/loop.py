"""The one training loop for every recipe: stages, early stopping, best checkpoint, calibration."""

from __future__ import annotations

import copy
import logging
import math
import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from chestdx.evaluate.calibration import TemperatureScaler
from chestdx.evaluate.metrics import auc_score, binary_metrics, multiclass_metrics
from chestdx.errors import ChestDxError
from chestdx.models.card import ModelCard, new_card
from chestdx.models.checkpoint import save_checkpoint
from chestdx.models.loading import load_model
from chestdx.models.recipes import build_model
from chestdx.models.registry import RecipeConfig
from chestdx.progress import progress as progress_bar
from chestdx.train.augment import augment_batch, slice_augmenter
from chestdx.train.data import SampleSet, build_samples, to_model_input

log = logging.getLogger(__name__)

DEFAULT_TRAIN = {"epochs": 10, "lr": 3e-4, "weight_decay": 1e-4, "batch_size": 16, "optimizer": "adamw",
                 "patience": 4, "warmup_frac": 0.1, "label_smoothing": 0.0, "bf16": "auto", "max_minutes": None,
                 "mixup": 0.0, "ema": None, "distil": None}


@dataclass
class TrainResult:
    """What `fit` returns.

    Args:
        net: the trained network (best validation epoch), eval mode.
        card: its model card.
        history: one dict per epoch (stage, epoch, train loss, val loss, val AUC, seconds).
        out_dir: where the checkpoint was written, or None.
    """

    net: torch.nn.Module
    card: ModelCard
    history: list[dict] = field(default_factory=list)
    out_dir: Path | None = None


def seed_everything(seed: int) -> None:
    """Args: seed: seed for Python's, NumPy's and torch's generators."""
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX).

    Without it, bfloat16 autocast is emulated and measured about 10x slower than float32
    (AVX2 build machine: 19 s against 1.6 s for a Lite0 training step of 16 slices).

    Returns:
        True when bfloat16 autocast pays off.
    """
    cpu = torch.cpu
    return bool(getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
                or getattr(cpu, "_is_amx_tile_supported", lambda: False)())


def cpu_name() -> str:
    """Returns: the CPU model (lscpu) and whether it has native bfloat16, for a figure's context."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        name = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        name = platform.processor() or platform.machine()
    return f"{name} ({'native bf16' if native_bf16() else 'no native bf16'})"


def stages_of(config: RecipeConfig) -> list[dict]:
    """The training stages of a recipe, each with every hyper-parameter filled in.

    A recipe either gives top-level hyper-parameters (one stage) or a ``stages`` list whose
    entries may set ``unit``, ``method`` (network method to call), ``freeze`` (module
    name prefixes to freeze) or ``trainable`` (freeze everything else), and any key of
    `DEFAULT_TRAIN` (``bf16`` is True, False or ``"auto"``: bfloat16 autocast where the CPU
    has it natively; ``max_minutes`` stops a stage when that budget is used up, inside an epoch too (the
    partial epoch is validated, and its history row says how many ``samples`` it saw);
    ``augment`` overrides `chestdx.train.augment.DEFAULT_AUGMENT`, or is False for no augmentation;
    ``mixup`` is the Beta(a, a) parameter of mixup, 0 for none; ``ema`` the decay of an
    exponential moving average of the weights, which is then what is validated and kept;
    ``distil`` is ``{"teacher": model name or folder, "weight": w, "temperature": T}`` to learn
    from a trained model's outputs on the same augmented batch as well as from the labels, see
    `mixup_loss`).

    Args:
        config: the recipe config.

    Returns:
        The stages.
    """
    base = {**DEFAULT_TRAIN, **{k: v for k, v in config.train.items() if k != "stages"}}
    raw = config.train.get("stages") or [{}]
    stages = [{"name": f"stage{i + 1}", "unit": config.unit, "method": "forward", **base, **stage}
              for i, stage in enumerate(raw)]
    for stage in stages:
        if stage["bf16"] == "auto":
            stage["bf16"] = native_bf16()
    return stages


def apply_freeze(net: torch.nn.Module, stage: dict) -> list[torch.nn.Parameter]:
    """Freeze parameters as a stage asks and return the trainable ones.

    Args:
        net: the network.
        stage: a stage from `stages_of` (keys ``freeze`` / ``trainable``).

    Returns:
        The parameters left trainable.
    """
    freeze, trainable = stage.get("freeze"), stage.get("trainable")
    for name, p in net.named_parameters():
        if trainable is not None:
            p.requires_grad_(any(name.startswith(t) for t in trainable))
        else:
            p.requires_grad_(not any(name.startswith(f) for f in (freeze or [])))
    return [p for p in net.parameters() if p.requires_grad]


def make_optimizer(params: list, stage: dict, steps: int):
    """The stage's optimizer (``sgd`` with momentum, ``adam`` or ``adamw``) and its one-cycle schedule.

    Args:
        params: the trainable parameters.
        stage: a stage from `stages_of` (``optimizer``, ``lr``, ``momentum``, ``weight_decay``, ``warmup_frac``).
        steps: optimizer steps of the whole stage.

    Returns:
        ``(optimizer, scheduler)``; call ``scheduler.step()`` after every optimizer step.
    """
    if stage["optimizer"] == "sgd":
        opt = torch.optim.SGD(params, lr=stage["lr"], momentum=stage.get("momentum", 0.9),
                              weight_decay=stage["weight_decay"])
    else:
        opt_cls = torch.optim.Adam if stage["optimizer"] == "adam" else torch.optim.AdamW
        opt = opt_cls(params, lr=stage["lr"], weight_decay=stage["weight_decay"])
    # OneCycleLR divides by (warm-up steps - 1): short stages (tiny data) get at least 2 warm-up steps
    total = max(steps, 4)
    warmup = min(max(stage["warmup_frac"], 2 / total), 0.5)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=stage["lr"], total_steps=total, pct_start=warmup,
                                                anneal_strategy="cos")
    return opt, sched


def hold_frozen_norms(net: torch.nn.Module) -> None:
    """Put batch-norm layers whose parameters are all frozen in eval mode.

    Frozen means frozen: their running mean and variance must not drift either.

    Args:
        net: the network, already in training mode.
    """
    for module in net.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                module.eval()


def _batches(n: int, batch_size: int, rng: np.random.Generator | None):
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for i in range(0, n, batch_size):
        yield order[i:i + batch_size]


def _stack(samples: SampleSet, idx: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.stack([samples.x[i] for i in idx]))


def mixup_loss(fn, x: torch.Tensor, y: torch.Tensor, n_classes: int, alpha: float, label_smoothing: float,
               rng: np.random.Generator, bf16: bool, teacher: torch.nn.Module | None = None,
               distil: dict | None = None) -> torch.Tensor:
    """Cross-entropy of a batch, with mixup (Zhang et al. 2018) when ``alpha > 0`` and
    knowledge distillation (Hinton et al. 2015) when a teacher is given.

    With a teacher the loss is ``(1 - w) * CE(labels) + w * T^2 * KL(teacher_T || student_T)``,
    both softened by the temperature ``T``; the teacher sees exactly the (augmented, mixed)
    batch the student sees, as in "function matching" (Beyer et al. 2022).

    Args:
        fn: the network method to call.
        x: model input batch.
        y: class indices.
        n_classes: number of classes.
        alpha: Beta(alpha, alpha) parameter of the mixing weight; 0 for plain cross-entropy.
        label_smoothing: label smoothing of the targets.
        rng: generator for the mixing weight and partner order.
        bf16: run the forward pass under bfloat16 autocast.
        teacher: a trained network in eval mode, or None.
        distil: ``{"weight": w, "temperature": T}`` (with ``teacher``).

    Returns:
        The scalar loss.
    """
    target = F.one_hot(y, n_classes).float() * (1 - label_smoothing) + label_smoothing / n_classes
    if alpha > 0:
        lam = float(rng.beta(alpha, alpha))
        perm = torch.from_numpy(rng.permutation(len(y)))
        x = lam * x + (1 - lam) * x[perm]
        target = lam * target + (1 - lam) * target[perm]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = fn(x).float()
    loss = torch.sum(-target * F.log_softmax(logits, 1), 1).mean()
    if teacher is None:
        return loss
    weight, temperature = distil["weight"], distil["temperature"]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        soft = F.softmax(teacher(x).float() / temperature, 1)
    kd = F.kl_div(F.log_softmax(logits / temperature, 1), soft, reduction="batchmean")
    return (1 - weight) * loss + weight * temperature ** 2 * kd


def load_teacher(distil: dict, config: RecipeConfig) -> tuple[torch.nn.Module, dict]:
    """The teacher network of a distillation stage, checked against the student's recipe.

    Args:
        distil: the stage's ``distil`` dict (``teacher``: bundled model name or folder).
        config: the student's recipe config.

    Returns:
        The teacher in eval mode (float32, channels-last), and what identifies it for the
        student's card (name, folder, date, commit and val AUC of its card).

    Raises:
        ChestDxError: the teacher reads other input or predicts other classes than the student.
    """
    teacher = load_model(distil["teacher"])
    if teacher.config.input != config.input or tuple(teacher.config.classes) != tuple(config.classes):
        raise ChestDxError(f"teacher {distil['teacher']} does not fit this recipe: it needs the same input spec "
                           f"and classes as the student (teacher {teacher.config.input}, "
                           f"{list(teacher.config.classes)}); train or pick a teacher of the same recipe input")
    for p in teacher.net.parameters():
        p.requires_grad_(False)
    card = teacher.card
    auc = card.metric("val", "auc")
    provenance = {"name": card.name, "path": str(teacher.path), "date": card.date, "git_commit": card.git_commit,
                  "val_auc": None if auc is None else auc.value}
    return teacher.net.to(memory_format=torch.channels_last).eval(), provenance


def predict_samples(net: torch.nn.Module, samples: SampleSet, config: RecipeConfig, method: str = "forward",
                    batch_size: int = 32, bf16: bool = True) -> np.ndarray:
    """Logits of every sample (no augmentation).

    Args:
        net: the network.
        samples: the samples.
        config: the recipe config (normalisation).
        method: network method to call.
        batch_size: samples per forward pass.
        bf16: use bfloat16 autocast.

    Returns:
        ``(n, K)`` float32 logits.
    """
    net.eval()
    fn = getattr(net, method)
    bs = batch_size if samples.x[0].ndim == 3 else 1
    out = []
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for idx in _batches(len(samples), bs, None):
            x = to_model_input(_stack(samples, idx), config)
            if x.ndim == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            out.append(fn(x).float())
    return torch.cat(out).numpy()


def _val_score(y: np.ndarray, logits: np.ndarray) -> float:
    probs = torch.softmax(torch.from_numpy(logits), 1).numpy()
    if probs.shape[1] == 2:
        return auc_score(y, probs[:, 1])
    return float(multiclass_metrics(y, probs, [str(i) for i in range(probs.shape[1])])["auc"])


def fit(config: RecipeConfig, train_records: list, val_records: list, out_dir: str | Path | None = None, *,
        seed: int = 0, name: str | None = None, epochs: int | None = None, progress: bool = True,
        threads: int | None = None, data_description: dict | None = None,
        train_samples: dict | None = None, val_samples: dict | None = None) -> TrainResult:
    """Train a recipe: every stage, early stopping on validation AUC, best weights kept.

    After training, a temperature is fitted on the validation logits (calibration) and the
    card records validation metrics at the 0.5 threshold of the calibrated positive class.

    Args:
        config: the recipe config (``train`` holds the hyper-parameters).
        train_records: training records (``path``, ``label``, ``patient_id``).
        val_records: validation records (model selection and calibration only).
        out_dir: where to write ``model.pt`` + ``metadata.json`` (None: do not write).
        seed: random seed (data order, augmentation, initialisation).
        name: model name for the card (default ``<recipe>-seed<seed>``).
        epochs: override every stage's epoch count (quick runs, tests).
        progress: show progress bars.
        threads: torch threads (default: all cores).
        data_description: what to record as training data in the card.
        train_samples: pre-built `SampleSet` per unit (``{"slice": ..., "bag": ...}``),
            to skip loading (tests, repeated runs).
        val_samples: likewise for validation.

    Returns:
        The trained network, its card and the per-epoch history.
    """
    seed_everything(seed)
    torch.set_num_threads(threads or os.cpu_count() or 1)
    net = build_model(config).to(memory_format=torch.channels_last)
    rng = np.random.default_rng(seed)
    cache_train, cache_val = dict(train_samples or {}), dict(val_samples or {})
    history: list[dict] = []
    teachers: dict[str, dict] = {}
    start = time.time()
    for stage in stages_of(config):
        unit = stage["unit"]
        if unit not in cache_train:
            cache_train[unit] = build_samples(train_records, config, unit, progress)
            cache_val[unit] = build_samples(val_records, config, unit, progress)
        tr, va = cache_train[unit], cache_val[unit]
        params = apply_freeze(net, stage)
        n_epochs = epochs or stage["epochs"]
        bs = stage["batch_size"]
        opt, sched = make_optimizer(params, stage, n_epochs * math.ceil(len(tr) / bs))
        augmenter = (slice_augmenter(config.input.size, stage.get("augment"), seed=seed)
                     if stage.get("augment") is not False else None)
        fn = getattr(net, stage["method"])
        teacher = None
        if stage["distil"]:
            teacher, teachers[stage["name"]] = load_teacher(stage["distil"], config)
        ema = (AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(stage["ema"]), use_buffers=True)
               if stage["ema"] else None)
        scored = ema.module if ema is not None else net
        best, best_state, waited = -math.inf, copy.deepcopy(net.state_dict()), 0
        stage_start = time.time()
        for epoch in range(n_epochs):
            net.train()
            hold_frozen_norms(net)
            t0, total, seen = time.time(), 0.0, 0
            bar = progress_bar(list(_batches(len(tr), bs, rng)), f"{stage['name']} epoch {epoch + 1}/{n_epochs}", "batch",
                               enabled=progress)
            for idx in bar:
                batch = _stack(tr, idx)
                x = to_model_input(augment_batch(batch, augmenter) if augmenter is not None else batch, config)
                if x.ndim == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                y = torch.from_numpy(tr.y[idx])
                loss = mixup_loss(fn, x, y, len(config.classes), stage["mixup"], stage["label_smoothing"], rng,
                                  stage["bf16"], teacher, stage["distil"])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                if ema is not None:
                    ema.update_parameters(net)
                total += loss.item() * len(idx)
                seen += len(idx)
                bar.set_postfix(loss=f"{loss.item():.3f}")
                if stage["max_minutes"] and time.time() - stage_start > 60 * stage["max_minutes"]:
                    break  # the budget ends the stage inside an epoch too; the partial epoch is validated
            val_logits = predict_samples(scored, va, config, stage["method"], bf16=stage["bf16"])
            val_loss = float(F.cross_entropy(torch.from_numpy(val_logits), torch.from_numpy(va.y)))
            score = _val_score(va.y, val_logits)
            score_key = score if not math.isnan(score) else -val_loss
            row = {"stage": stage["name"], "epoch": epoch + 1, "train_loss": round(total / seen, 4),
                   "val_loss": round(val_loss, 4), "val_auc": None if math.isnan(score) else round(score, 4),
                   "seconds": round(time.time() - t0, 1), **({"samples": seen} if seen < len(tr) else {})}
            history.append(row)
            log.warning("%s", row) if not progress else tqdm.write(str(row))
            if score_key > best:
                best, best_state, waited = score_key, copy.deepcopy(scored.state_dict()), 0
            else:
                waited += 1
                if waited >= stage["patience"]:
                    break
            if stage["max_minutes"] and time.time() - stage_start > 60 * stage["max_minutes"]:
                log.warning("stage %s stopped after epoch %d: time budget of %s minutes used",
                            stage["name"], epoch + 1, stage["max_minutes"])
                break
        net.load_state_dict(best_state)
    for p in net.parameters():
        p.requires_grad_(True)
    net.eval()
    last = stages_of(config)[-1]
    card = _card(net, config, cache_val[last["unit"]], last, seed, name, history, time.time() - start, data_description,
                 teachers)
    if out_dir is not None:
        save_checkpoint(net, card, out_dir)
    return TrainResult(net=net, card=card, history=history, out_dir=Path(out_dir) if out_dir else None)


def _card(net, config, val: SampleSet, stage: dict, seed: int, name: str | None, history: list[dict],
          seconds: float, data_description: dict | None, teachers: dict[str, dict]) -> ModelCard:
    logits = predict_samples(net, val, config, stage["method"], bf16=False)  # as prediction runs: float32
    scaler = TemperatureScaler().fit(logits, val.y)
    probs = scaler.transform(logits)
    if probs.shape[1] == 2:
        val_metrics = binary_metrics(val.y, probs[:, 1], 0.5)
    else:
        val_metrics = {k: v for k, v in multiclass_metrics(val.y, probs, list(config.classes)).items()
                       if not isinstance(v, (dict, list))}
    return new_card(
        config, name or f"{config.name}-seed{seed}",
        temperature=round(float(scaler.temperature_), 4),
        threshold=0.5,
        training={"seed": seed, "seconds": round(seconds, 1), "epochs_run": len(history),
                  "stages": [{k: v for k, v in s.items()} for s in stages_of(config)],
                  "data": data_description or {}, "history": history,
                  **({"teachers": teachers} if teachers else {})},
        metrics={"val": {"level": "sample", "n": int(len(val)),
                         **{k: {"value": None if isinstance(v, float) and math.isnan(v) else round(float(v), 4)}
                            for k, v in val_metrics.items()}}},
    )
