"""Speed and memory of `predict`: whole processes as a user runs them, and the pipeline's stages in process.

Whole process: ``chestdx --quiet predict STUDY --json`` (start-up, model loading and
everything) on the 120-slice ``chestdx sample`` study and on a generated 300-slice study,
with and without ``--explain gradcam``, and the stages the command itself reports.
In process (`chestdx.pipeline.diagnose`): read (DICOM -> Study), lungs (lung mask),
preprocess (slice filter/selection, window, crop, resize), classify (network + aggregation),
for every bundled CT model (a recipe with no bundled model: its untrained network), with the
seconds per 50-slice group of a grouped recipe (Kara et al.'s figure: 0.409 s on a 6-core CPU).
When the default model is an ensemble, its first member alone is timed too. The
default model is also timed with torch fp32 and ONNX Runtime, with the largest change of any
probability between them.

Usage:
    python benchmarks/predict.py [--slices 300] [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from chestdx.io import load_study
from chestdx.io.sample import write_sample_series
from chestdx.models.bundled import list_bundled
from chestdx.models.card import new_card
from chestdx.models.checkpoint import save_checkpoint
from chestdx.models.loading import LoadedModel, load_model
from chestdx.models.recipes import build_model, get_recipe, list_recipes
from chestdx.models.registry import RecipeConfig
from chestdx.pipeline import diagnose


def _best(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def whole_process(study: Path, repeats: int, *extra: str) -> tuple[float, dict]:
    """Best wall time of ``chestdx --quiet predict STUDY --json [extra]`` in a fresh process, and its ``timing_s``."""
    best, timing = float("inf"), {}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            args = [a.replace("{tmp}", f"{tmp}/{i}") for a in extra]
            t0 = time.perf_counter()
            out = subprocess.run([sys.executable, "-m", "chestdx.cli", "--quiet", "predict", str(study), "--json", *args],
                                 capture_output=True, text=True, check=True)
            wall = time.perf_counter() - t0
            if wall < best:
                best, timing = wall, json.loads(out.stdout)["timing_s"]
    return best, timing


def time_stages(folder: Path, model: LoadedModel, repeats: int) -> dict:
    """Returns: best seconds per stage of `diagnose`, slices classified and slices/s through the classifier."""
    read_s, study = _best(lambda: load_study(folder, progress=False), repeats)
    runs = [diagnose(study, model) for _ in range(repeats)]
    stage = {k: min(d.timing[k] for d in runs) for k in ("lungs", "preprocess", "classify")}
    n = int((runs[0].prepared.indices >= 0).sum())
    return {"read": read_s, **stage, "total": read_s + sum(stage.values()), "slices": n,
            "slices_per_s": n / stage["classify"], "prepared": runs[0].prepared}


def first_member(model: LoadedModel) -> LoadedModel:
    """Args: model: an ensemble with one ONNX export per member. Returns: its first member alone."""
    config = RecipeConfig.from_dict(model.config.to_dict())
    config.params = {k: v for k, v in config.params.items() if k != "members"}
    return LoadedModel(dataclasses.replace(model.card, recipe=config), model.path, model.sessions[:1])


def untrained(name: str, folder: Path) -> LoadedModel:
    """Args: name: a CT recipe; folder: where to write its checkpoint. Returns: the untrained network, loaded."""
    config = get_recipe(name, classes=("non-covid", "covid"))
    if "pretrained" in config.params:
        config.params = {**config.params, "pretrained": False}
    save_checkpoint(build_model(config).eval(), new_card(config, name), folder)
    return load_model(folder)


def engines(model: LoadedModel, prepared, repeats: int) -> list[tuple[str, float, float]]:
    """Time the default model's classifier with torch fp32 (and bf16 autocast where the CPU has it) and ONNX Runtime.

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
    if torch.backends.cpu.get_cpu_capability() in ("AVX512_BF16", "AMX"):
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
    print(f"CPU capability (torch): {torch.backends.cpu.get_cpu_capability()}, {args.threads} threads, best of {args.repeats}")

    with tempfile.TemporaryDirectory() as tmp:
        sample, folder = Path(tmp) / "sample", Path(tmp) / "study"
        write_sample_series(sample, n_slices=120, progress=False)
        write_sample_series(folder, n_slices=args.slices, progress=False)
        print("\nwhole `chestdx predict --json` process (start-up included), wall s, and the stages it reports:")
        for label, study in (("120-slice chestdx sample", sample), (f"{args.slices}-slice study", folder)):
            for extra in ((), ("--explain", "gradcam", "--out", "{tmp}")):
                wall, timing = whole_process(study, args.repeats, *extra)
                stages = "  ".join(f"{k} {v:.2f}" for k, v in timing.items())
                print(f"  {label:26s} {' '.join(extra[:2]) or 'predict':18s} {wall:6.2f} s   ({stages})")

        models = {"ct-default (bundled)": load_model("ct-default")}
        if len(models["ct-default (bundled)"].sessions) > 1:
            members = len(models["ct-default (bundled)"].sessions)
            models[f"ct-default, 1 of {members} members"] = first_member(models["ct-default (bundled)"])
        bundled = {name: load_model(name) for name in list_bundled() if name not in ("ct-default", "lesion-default")}
        bundled = {name: m for name, m in bundled.items() if m.config.name != "detl"}  # X-ray: not for CT volumes
        for name, model in bundled.items():
            models[f"{name} ({model.config.name})"] = model
        for name in list_recipes():
            if name != "detl" and name not in {m.config.name for m in bundled.values()}:
                models[f"{name} (untrained)"] = untrained(name, Path(tmp) / name)
        print(f"\nin process, {args.slices}-slice 512x512 DICOM study (chestdx.pipeline.diagnose)")
        print(f"{'model':34s} {'read':>6s} {'lungs':>6s} {'prep':>6s} {'classify':>8s} {'total':>6s} "
              f"{'slices':>6s} {'slices/s':>8s}")
        default_prepared, grouped = None, []
        for label, model in models.items():
            r = time_stages(folder, model, args.repeats)
            default_prepared = default_prepared or r["prepared"]
            print(f"{label:34s} {r['read']:6.2f} {r['lungs']:6.2f} {r['preprocess']:6.2f} {r['classify']:8.2f} "
                  f"{r['total']:6.2f} {r['slices']:6d} {r['slices_per_s']:8.1f}")
            if r["prepared"].groups is not None:
                grouped.append((label, r, len(r["prepared"].groups)))
        for label, r, n_groups in grouped:  # Kara et al.: 0.409 s per 50-slice group on a 6-core CPU
            work = r["lungs"] + r["preprocess"] + r["classify"]
            print(f"{label}: {n_groups} groups of {len(r['prepared'].groups[0])} slices; lung segmentation + "
                  f"preparation + classification {work / n_groups:.3f} s per group ({r['classify'] / n_groups:.3f} s "
                  f"classification alone)")
        print("\ndefault model classifier by engine (same slices):")
        for engine, seconds, diff in engines(models["ct-default (bundled)"], default_prepared, args.repeats):
            print(f"  {engine:28s} {seconds:6.2f} s  {len(default_prepared.x) / seconds:7.1f} slices/s  "
                  f"max |dp| vs fp32 {diff:.2e}")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak resident memory of this process: {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
