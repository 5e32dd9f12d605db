"""Diagnose one study with a loaded model: preprocess per the card, classify, aggregate, decide."""

from __future__ import annotations

import time

import numpy as np
import torch

from chestdx.io.study import Study
from chestdx.models.aggregators import AGGREGATORS
from chestdx.models.checkpoint import LoadedModel
from chestdx.preprocess.pipeline import PreparedStudy, prepare_study


def slice_logits(model: LoadedModel, x: np.ndarray, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-slice logits (and features when the model pools features) for prepared slices.

    Runs in float32: through ONNX Runtime when the checkpoint ships its ONNX export (same
    probabilities within 1e-5, about twice as fast here), else through torch. An ensemble's
    members each run their own ONNX file: features side by side, logits averaged (as
    `EfficientNetEnsemble` does).

    Args:
        model: the loaded model.
        x: ``(n, C, H, W)`` model input.
        batch_size: slices per forward pass.

    Returns:
        ``(logits (n, K), features (n, D) or None)``; logits are before temperature.
    """
    pool_features = model.config.aggregator == "mean-features"
    if model.sessions:
        feats, logits = [], []
        for session in model.sessions:
            outs = [session.run(None, {"x": np.ascontiguousarray(x[i:i + batch_size], dtype=np.float32)})
                    for i in range(0, len(x), batch_size)]
            feats.append(np.concatenate([o[0] for o in outs]))
            logits.append(np.concatenate([o[1] for o in outs]))
        return np.mean(logits, 0), (np.concatenate(feats, 1) if pool_features else None)
    net = model.net
    per_slice = getattr(net, "forward_slices", None)
    logits, feats = [], []
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size])).contiguous(memory_format=torch.channels_last)
            if pool_features:
                f = net.encode(xb)
                feats.append(f.float())
                logits.append(net.head(f).float())
            else:
                logits.append((per_slice or net)(xb).float())
    return torch.cat(logits).numpy(), (torch.cat(feats).numpy() if feats else None)


def _softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    return torch.softmax(torch.from_numpy(logits / temperature), -1).numpy()


def study_probabilities(model: LoadedModel, prepared: PreparedStudy) -> tuple[np.ndarray, np.ndarray]:
    """The study's class probabilities and each used slice's probabilities.

    Args:
        model: the loaded model.
        prepared: output of ``prepare_study`` with the model's InputSpec.

    Returns:
        ``(study_probs (K,), slice_probs (n, K))``, temperature-scaled.
    """
    t = model.temperature
    real = prepared.indices >= 0
    logits, feats = slice_logits(model, prepared.x)
    slice_probs = _softmax(logits, t)
    agg = model.config.aggregator
    if agg == "mean-features":
        with torch.inference_mode():
            pooled = torch.from_numpy(feats[real].mean(0, keepdims=True))
            study = _softmax(model.net.head(pooled).float().numpy(), t)[0]
    elif model.config.unit == "bag" and prepared.groups is not None:
        with torch.inference_mode():
            groups = torch.from_numpy(np.stack([prepared.x[g] for g in prepared.groups]))
            group_logits = torch.cat([model.net(g[None]).float() for g in groups]).numpy()
        study = AGGREGATORS[agg](_softmax(group_logits, t))
    else:
        study = AGGREGATORS[agg](slice_probs[real])
    return np.asarray(study, dtype=np.float64), slice_probs


def decide(model: LoadedModel, probs: np.ndarray) -> str:
    """The decision at the model's operating point.

    Binary models call the positive (last) class when its probability reaches the card's
    threshold; multi-class models take the most probable class.

    Args:
        model: the loaded model.
        probs: study probabilities ``(K,)``.

    Returns:
        The decided class name.
    """
    classes = model.config.classes
    if len(classes) == 2:
        return classes[1] if probs[1] >= model.threshold else classes[0]
    return classes[int(np.argmax(probs))]


def predict_study(study: Study, model: LoadedModel, top_k: int = 5, read_seconds: float = 0.0) -> dict:
    """Diagnose a study.

    Args:
        study: the loaded study.
        model: the loaded model (see ``chestdx.models.checkpoint.load_model``).
        top_k: how many of the slices that drove the decision to report.
        read_seconds: time spent reading the study (reported under ``timing_s``).

    Returns:
        JSON-ready dict with ``kind``, ``probabilities`` (class -> p), ``decision``,
        ``threshold``, ``model``, ``slices_used``, ``top_slices`` (study slice index and
        score of the decided class), ``timing_s`` and ``warnings``.
    """
    t0 = time.perf_counter()
    prepared = prepare_study(study, model.config.input)
    t1 = time.perf_counter()
    probs, slice_probs = study_probabilities(model, prepared)
    t2 = time.perf_counter()
    decision = decide(model, probs)
    target = model.config.classes.index(decision)
    real = np.flatnonzero(prepared.indices >= 0)
    order = real[np.argsort(-slice_probs[real, target], kind="stable")][:top_k]
    card = model.card
    return {
        "kind": study.kind,
        "probabilities": {c: round(float(p), 4) for c, p in zip(model.config.classes, probs)},
        "decision": decision,
        "threshold": model.threshold,
        "model": {"name": model.name, "recipe": model.config.name, "classes": list(model.config.classes),
                  "trained_on": card.get("training", {}).get("data", {}).get("name"),
                  "val_auc": card.get("metrics", {}).get("val", {}).get("auc"),
                  "temperature": model.temperature, "intended_use": card.get("intended_use")},
        "slices_used": [int(i) for i in prepared.indices[real]],
        "top_slices": [{"index": int(prepared.indices[i]), "score": round(float(slice_probs[i, target]), 4)}
                       for i in order],
        "timing_s": {"read": round(read_seconds, 3), "preprocess": round(t1 - t0, 3),
                     "classify": round(t2 - t1, 3), "total": round(read_seconds + t2 - t0, 3)},
        "warnings": list(study.warnings) + list(getattr(prepared, "warnings", [])),
    }
