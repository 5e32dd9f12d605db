"""Speed and memory of `predict` on a generated 300-slice DICOM study, per recipe and per stage.

Stages: read (DICOM -> Study), lungs (lung mask), select (slice filter/selection, window,
resize), classify (network + aggregation). When the default model is an ensemble, its first
member alone is timed too (the speed side of the ensemble's accuracy gain). The default model
is also timed with each inference engine (fp32, bf16 autocast, ONNX Runtime), with the
largest change of any probability against fp32.

Usage:
    python benchmarks/predict.py [--slices 300] [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from chestdx.io import load_study
from chestdx.io.sample import write_sample_series
from chestdx.models.loading import LoadedModel, load_model
from chestdx.models.predict import study_probabilities
from chestdx.models.recipes import build_model, get_recipe, list_recipes
from chestdx.models.registry import RecipeConfig
from chestdx.preprocess.pipeline import needs_lung_mask, prepare_study, study_lung_mask


def _best(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def time_stages(folder: Path, model: LoadedModel, repeats: int) -> dict:
    """Returns: seconds per stage, slices classified and slices/s through the classifier."""
    read_s, study = _best(lambda: load_study(folder, progress=False), repeats)
    spec = model.config.input
    lungs_s, mask = _best(lambda: study_lung_mask(study) if needs_lung_mask(spec) else None, repeats)
    select_s, prepared = _best(lambda: prepare_study(study, spec, lung_mask=mask), repeats)
    classify_s, _ = _best(lambda: study_probabilities(model, prepared), repeats)
    n = int((prepared.indices >= 0).sum())
    return {"read": read_s, "lungs": lungs_s, "select": select_s, "classify": classify_s,
            "total": read_s + lungs_s + select_s + classify_s, "slices": n, "slices_per_s": n / classify_s,
            "prepared": prepared}


def first_member(model: LoadedModel) -> LoadedModel:
    """Args: model: an ensemble. Returns: its first member alone (network and ONNX session)."""
    config = RecipeConfig.from_dict(model.config.to_dict())
    config.params = {k: v for k, v in config.params.items() if k != "members"}
    return LoadedModel(model.net.members[0], config, model.card, model.path, model.sessions[:1])


def engines(model: LoadedModel, prepared, repeats: int) -> list[tuple[str, float, float]]:
    """Time the default model's classifier with fp32, bf16 autocast and ONNX Runtime.

    Returns:
        ``(engine, seconds, max |p - p_fp32|)`` rows.
    """
    import onnxruntime as ort

    x = torch.from_numpy(prepared.x)
    net = model.net

    def eager(bf16: bool):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return torch.cat([net(x[i:i + 32].contiguous(memory_format=torch.channels_last)).float()
                              for i in range(0, len(x), 32)]).softmax(1).numpy()

    rows = []
    fp32_s, ref = _best(lambda: eager(False), repeats)
    rows.append(("torch fp32 channels_last", fp32_s, 0.0))
    bf16_s, p = _best(lambda: eager(True), repeats)
    rows.append(("torch bf16 autocast", bf16_s, float(np.abs(p - ref).max())))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        torch.onnx.export(net, x[:1], path, input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}}, dynamo=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        onnx_s, logits = _best(lambda: np.concatenate([session.run(None, {"x": prepared.x[i:i + 32]})[0]
                                                       for i in range(0, len(x), 32)]), repeats)
    p = torch.softmax(torch.from_numpy(logits), 1).numpy()
    rows.append(("onnxruntime fp32", onnx_s, float(np.abs(p - ref).max())))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "study"
        write_sample_series(folder, n_slices=args.slices, progress=False)
        models = {"ct-default (bundled)": load_model("ct-default")}
        if hasattr(models["ct-default (bundled)"].net, "members"):
            members = len(models["ct-default (bundled)"].net.members)
            models[f"ct-default, 1 of {members} members"] = first_member(models["ct-default (bundled)"])
        for name in list_recipes():
            config = get_recipe(name, classes=("non-covid", "covid"))
            if config.input.channels == 3 and "pretrained" in config.params:
                config.params = {**config.params, "pretrained": False}
            if name == "detl":
                continue  # X-ray recipe: not for CT volumes
            models[f"{name} (untrained)"] = LoadedModel(build_model(config).eval(), config, {"name": name}, Path(name))
        print(f"{args.slices}-slice 512x512 DICOM study, {args.threads} threads, best of {args.repeats}")
        print(f"{'model':34s} {'read':>6s} {'lungs':>6s} {'select':>6s} {'classify':>8s} {'total':>6s} "
              f"{'slices':>6s} {'slices/s':>8s}")
        default_prepared = None
        for label, model in models.items():
            r = time_stages(folder, model, args.repeats)
            default_prepared = default_prepared or r["prepared"]
            print(f"{label:34s} {r['read']:6.2f} {r['lungs']:6.2f} {r['select']:6.2f} {r['classify']:8.2f} "
                  f"{r['total']:6.2f} {r['slices']:6d} {r['slices_per_s']:8.1f}")
        print("\ndefault model classifier by engine (same slices):")
        for engine, seconds, diff in engines(models["ct-default (bundled)"], default_prepared, args.repeats):
            print(f"  {engine:28s} {seconds:6.2f} s  {len(default_prepared.x) / seconds:7.1f} slices/s  "
                  f"max |dp| vs fp32 {diff:.2e}")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak resident memory of this process: {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
