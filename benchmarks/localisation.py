"""Do the heat maps point at the lesions? Every explanation method against radiologist infection masks.

Each of the 48 test slices of ``medseg-covid-infection`` (COVID-19 infection masks, 0/255)
is loaded with ``load_study``, prepared with the model's ``InputSpec``, explained for the
class ``covid`` and brought back to the stored slice size (``map_to_original``), where it
is compared with the mask. Per map: pointing game (the map's maximum within 15 px of the
mask; hits counted), mean fraction of the map's energy inside the mask, mean pixel AUROC
of the map against the mask, and seconds per slice. Baselines: a seeded uniform random map
and a Gaussian on the lung mask's centre (``lung_centre_prior``).

Two readings of every map:
  * lung-restricted (the headline): every map, baselines included, is zeroed outside the
    slice's lung mask dilated by ``--dilate`` pixels and min-max scaled inside it; AUROC is
    computed over that region only, so no map wins merely by lighting up the lungs;
  * unrestricted: the maps as the method returns them, scored over the whole image, with
    the number of slices whose maximum lies inside the (dilated) lung region.
Slices whose infection mask is empty are skipped (and counted). ``boxes`` runs only on
models that propose lesion boxes (recipe dre-net); methods a model does not support are
dropped with the reason. ``lesion`` is not a classifier explanation: it is the infection
probability of the lesion segmenter ``--lesion-model`` (``chestdx.models.lesion.lesion_heatmaps``),
a map that points at lesions by construction.

Usage:
    python benchmarks/localisation.py [--model ct-default] [--methods cam,gradcam,gradcampp,occlusion,boxes,lesion]
        [--lesion-model lesion-default]
        [--limit N] [--threads 2] [--patch 48 --stride 24] [--figure docs/img/localisation_overlays.png]
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.ndimage import binary_dilation
from scipy.stats import binomtest, bootstrap

from chestdx.errors import ChestDxError
from chestdx.explain.localisation import energy_inside, lung_centre_prior, peak, pixel_auroc, pointing_game, random_map
from chestdx.explain.maps import METHODS, explain_slices, map_to_original
from chestdx.explain.overlay import figure_grid
from chestdx.io import load_study
from chestdx.io.images import natural_key
from chestdx.models.lesion import lesion_heatmaps, load_lesion_model
from chestdx.models.loading import load_model
from chestdx.models.predict import study_probabilities
from chestdx.preprocess.lungs import segment_lungs
from chestdx.preprocess.pipeline import prepare_study

BASELINES = ("random", "lung-centre")
LESION = "lesion"
"""The lesion segmenter's map, scored beside the classifier's explanations."""
TOLERANCE_PX = 15
READINGS = ("lung-restricted", "unrestricted")


def within(heatmap: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Zero a map outside ``region`` and min-max scale it to 0..1 inside (all zeros if constant there).

    Args:
        heatmap: ``(H, W)`` map.
        region: ``(H, W)`` bool region, not empty.

    Returns:
        float32 ``(H, W)``.
    """
    low, high = heatmap[region].min(), heatmap[region].max()
    if high <= low:
        return np.zeros(heatmap.shape, dtype=np.float32)
    return np.where(region, (heatmap - low) / (high - low), 0.0).astype(np.float32)


def score(heatmap: np.ndarray, lesion: np.ndarray, region: np.ndarray) -> tuple[bool, float, float]:
    """Pointing game, energy inside the lesion and pixel AUROC over ``region``.

    Args:
        heatmap: ``(H, W)`` map (already restricted to ``region`` where that is meant).
        lesion: ``(H, W)`` bool lesion mask, not empty.
        region: ``(H, W)`` bool pixels the AUROC is computed over.

    Returns:
        ``(hit, energy fraction, AUROC)``.
    """
    return (pointing_game(heatmap, lesion, tolerance_px=TOLERANCE_PX), energy_inside(heatmap, lesion),
            pixel_auroc(heatmap[region], lesion[region]))


def explain_one(model, prepared, method: str, target: int, patch: int, stride: int) -> tuple[np.ndarray, float]:
    """One method on the first prepared slice, mapped back to the stored slice size.

    Returns:
        ``(map (H0, W0) in 0..1, seconds)``.
    """
    t0 = time.perf_counter()
    result = explain_slices(model.net, torch.from_numpy(prepared.x[:1]), method, target_class=target,
                            occlusion_patch=patch, occlusion_stride=stride)
    heatmap = map_to_original(result.maps[0], prepared.rendered.shape[1:], prepared.crop_box,
                              quarter_turns=prepared.quarter_turns)
    return heatmap, time.perf_counter() - t0


def supported(model, prepared, methods: list[str], target: int) -> tuple[list[str], list[str]]:
    """Split the methods into those the model supports and notes on the rest (tried on one slice).

    Returns:
        ``(usable methods, "method: reason" notes)``.
    """
    usable, notes = [], []
    for method in methods:
        if method in ("occlusion", LESION):  # any classifier / not the classifier's: trying would only cost time
            usable.append(method)
            continue
        try:
            explain_slices(model.net, torch.from_numpy(prepared.x[:1]), method, target_class=target)
            usable.append(method)
        except ChestDxError as exc:
            notes.append(f"{method}: not run: {exc}")
    return usable, notes


def slice_lungs(study, prepared) -> np.ndarray:
    """Returns: bool ``(H, W)`` lung mask of a one-slice study: the preprocessing's, else segmented here."""
    if prepared.lung_mask is not None:
        return prepared.lung_mask[0]
    return segment_lungs(study.pixels, study.intensity, mode="2d")[0]


def slice_paths(root: Path, limit: int | None) -> list[Path]:
    """Returns: the test images in numeric order, the first ``limit`` of them."""
    return sorted((root / "images").iterdir(), key=natural_key)[:limit]


def run(args: argparse.Namespace) -> dict:
    """Explain and score every slice.

    Returns:
        ``{"scores": {reading: {map: {"hit"|"energy"|"auroc": [...]}}}, "seconds": {method: [...]},
        "shown": [...], "notes": [...], ...}``.
    """
    model = load_model(args.model)
    classes = list(model.config.classes)
    if "covid" not in classes:
        raise ChestDxError(f"model {model.name!r} has no class 'covid' (classes {classes}): choose a COVID-19 model")
    target = classes.index("covid")
    segmenter = load_lesion_model(args.lesion_model) if LESION in args.methods else None
    root = Path(args.data) / "test"
    rng = np.random.default_rng(args.seed)
    methods, notes, skipped, shown = None, [], 0, []
    names: list[str] = []
    scores = {reading: {} for reading in READINGS}
    seconds: dict[str, list[float]] = {}
    covered, p_covid = [], []
    for path in slice_paths(root, args.limit):
        lesion = np.asarray(Image.open(root / "infection_mask" / f"{path.stem}.png").convert("L")) > 127
        if not lesion.any():
            skipped += 1
            continue
        study = load_study(path, progress=False)
        prepared = prepare_study(study, model.config.input)
        if lesion.shape != prepared.rendered.shape[1:]:
            raise ChestDxError(f"mask of {path.name} is {lesion.shape}, the slice {prepared.rendered.shape[1:]}")
        if methods is None:
            methods, notes = supported(model, prepared, args.methods, target)
            names = methods + list(BASELINES)
            for reading in READINGS:
                scores[reading] = {name: {"hit": [], "energy": [], "auroc": []} for name in names}
            seconds = {name: [] for name in methods}
        lungs = slice_lungs(study, prepared)
        region = binary_dilation(lungs, iterations=args.dilate) if lungs.any() else np.ones_like(lesion)
        covered.append((lesion & region).sum() / lesion.sum())
        p_covid.append(float(study_probabilities(model, prepared)[1][0, target]))
        maps = {"random": random_map(lesion.shape, rng), "lung-centre": lung_centre_prior(lungs)}
        for method in methods:
            if method == LESION:
                t0 = time.perf_counter()
                maps[method] = lesion_heatmaps(study, segmenter, [0], lung_mask=lungs[None])[0]
                spent = time.perf_counter() - t0
            else:
                maps[method], spent = explain_one(model, prepared, method, target, args.patch, args.stride)
            seconds[method].append(spent)
        restricted = {name: within(maps[name], region) for name in names}
        for reading, maps_read, area in (("lung-restricted", restricted, region), ("unrestricted", maps, None)):
            for name in names:
                hit, energy, auroc = score(maps_read[name], lesion, np.ones_like(lesion) if area is None else area)
                for key, value in (("hit", hit), ("energy", energy), ("auroc", auroc)):
                    scores[reading][name][key].append(value)
                if area is None:  # where does the unrestricted map put its maximum?
                    scores[reading][name].setdefault("peak_in_lungs", []).append(bool(region[peak(maps_read[name])]))
        drawn = [m for m in args.figure_methods if m in restricted]
        shown.append((path.name, prepared.rendered[0], lesion, {m: restricted[m] for m in drawn},
                      {m: scores["lung-restricted"][m]["auroc"][-1] for m in drawn}))
    return {"model": model, "methods": methods or [], "notes": notes, "skipped": skipped, "scores": scores,
            "seconds": seconds, "shown": shown, "covered": covered, "p_covid": p_covid}


def mean_ci(values, seed: int = 0) -> str:
    """Mean of the finite values with a 95% percentile bootstrap interval over slices.

    Returns:
        ``"0.512 (0.47-0.55)"``.
    """
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    ci = bootstrap((values,), np.mean, n_resamples=2000, method="percentile", random_state=seed).confidence_interval
    return f"{values.mean():.3f} ({ci.low:.2f}-{ci.high:.2f})"


def table(scores: dict, seconds: dict, called: np.ndarray) -> str:
    """A markdown table, one row per map (methods, then baselines).

    Args:
        scores: map name -> per-slice ``hit``, ``energy`` and ``auroc`` lists (and
            ``peak_in_lungs``, shown as a column when present).
        seconds: method -> per-slice seconds.
        called: bool per slice: the model calls the slice COVID-19.

    Returns:
        The table: hit rate with hits and Wilson 95% interval, means with bootstrap 95%
        intervals, mean AUROC on the slices the model calls COVID-19, median seconds.
    """
    in_lungs = all("peak_in_lungs" in s for s in scores.values())
    lines = ["| map | pointing game: hit rate (hits, 95% CI) | energy in lesion (95% CI) | pixel AUROC (95% CI) | "
             f"AUROC, {int(called.sum())} slices called COVID | s/slice (median) |"
             + (" maximum inside the lung region |" if in_lungs else ""),
             "|---|---|---|---|---|---|" + ("---|" if in_lungs else "")]
    for name, s in scores.items():
        hits, n = int(np.sum(s["hit"])), len(s["hit"])
        ci = binomtest(hits, n).proportion_ci(method="wilson")
        spent = f"{np.median(seconds[name]):.2f}" if name in seconds else "-"
        on_called = np.nanmean(np.asarray(s["auroc"])[called]) if called.any() else float("nan")
        lines.append(f"| {name} | {hits / n:.2f} ({hits}/{n}, {ci.low:.2f}-{ci.high:.2f}) | {mean_ci(s['energy'])} | "
                     f"{mean_ci(s['auroc'])} | {on_called:.3f} | {spent} |"
                     + (f" {sum(s['peak_in_lungs'])}/{n} |" if in_lungs else ""))
    return "\n".join(lines)


def figure(shown: list, methods: list[str], n_slices: int, path: str) -> Path:
    """Overlays of ``methods`` (lung-restricted maps) on ``n_slices`` evenly spaced slices, masks below.

    Slices are spaced evenly through the list (not chosen by score); the PNG is saved
    with a 256-colour palette.

    Returns:
        The path written.
    """
    picks = [shown[i] for i in np.unique(np.linspace(0, len(shown) - 1, n_slices).round().astype(int))]
    images, heatmaps, masks, titles = [], [], [], []
    for name, image, lesion, maps, aurocs in picks:
        for method in methods:
            if method in maps:
                images.append(image)
                heatmaps.append(maps[method])
                masks.append(lesion)
                titles.append(f"{name} {method} (AUROC {aurocs[method]:.2f})")
    written = figure_grid(images, heatmaps, masks, titles, path=path)
    Image.open(written).convert("RGB").quantize(colors=256).save(written, optimize=True)  # keeps the PNG small
    return written


def main() -> None:
    """Parse options, run, print the tables and write the figure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/medseg-covid-infection")
    parser.add_argument("--model", default="ct-default", help="bundled model name or checkpoint folder")
    parser.add_argument("--methods", default=",".join(METHODS + (LESION,)), type=lambda s: s.split(","))
    parser.add_argument("--lesion-model", default="lesion-default", help="lesion segmenter for the lesion method")
    parser.add_argument("--limit", type=int, help="only the first N slices (numeric order)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--patch", type=int, default=48, help="occlusion patch side, pixels at model input size")
    parser.add_argument("--stride", type=int, default=24, help="occlusion stride, pixels at model input size")
    parser.add_argument("--dilate", type=int, default=10, help="lung mask dilation in stored-slice pixels")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random baseline")
    parser.add_argument("--figure", help="write overlays beside the masks to this PNG")
    parser.add_argument("--figure-methods", default="gradcam,occlusion", type=lambda s: s.split(","))
    parser.add_argument("--figure-slices", type=int, default=4)
    args = parser.parse_args()
    unknown = set(args.methods) - set(METHODS + (LESION,))
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}: choose from {', '.join(METHODS + (LESION,))}")
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    out = run(args)
    model = out["model"]
    n = len(out["covered"])
    if n == 0:
        raise ChestDxError(f"no slice with a lesion under {args.data}/test: check --data and --limit")
    p = np.asarray(out["p_covid"])
    print(f"date {dt.date.today()}; model {model.name} (recipe {model.config.name}, card commit "
          f"{model.card.git_commit}, trained {model.card.date})")
    print(f"{n} slices with lesions scored, {out['skipped']} with an empty infection mask skipped; "
          f"P(covid) per slice (calibrated): mean {p.mean():.2f}, {int((p >= model.threshold).sum())}/{n} "
          f">= threshold {model.threshold}")
    print(f"occlusion patch {args.patch} px, stride {args.stride} px at {model.config.input.size} px input; "
          f"lung mask dilated {args.dilate} px covers {np.mean(out['covered']):.0%} of lesion pixels "
          f"(min {np.min(out['covered']):.0%}); pointing-game tolerance {TOLERANCE_PX} px; {args.threads} threads")
    for note in out["notes"]:
        print(note)
    for reading in READINGS:
        print(f"\n{reading}:\n")
        print(table(out["scores"][reading], out["seconds"], p >= model.threshold))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    if args.figure:
        print(f"figure: {figure(out['shown'], args.figure_methods, args.figure_slices, args.figure)}")


if __name__ == "__main__":
    main()
