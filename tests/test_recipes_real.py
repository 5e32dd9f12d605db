"""Every seed CT recipe on a handful of real slices, the way `scripts/train_recipes.py` trains it: its cache gives
the samples `chestdx predict` would prepare, a few training steps give a checkpoint, and predict, explain and
evaluate run end to end with it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import train_recipes as script  # noqa: E402

from chestdx.cli import main  # noqa: E402
from chestdx.train.data import SampleSet, build_samples  # noqa: E402
from chestdx.train.loop import fit, stages_of  # noqa: E402
from chestdx.train.real_ct import prepare_source, source_records  # noqa: E402

SOURCES = {"soares": 6, "sirm": 1}
EXPLANATION = {"cnn-bilstm": "gradcam", "dre-net": "boxes", "residual-attention": "gradcam"}


def _subset(samples: SampleSet, n: int) -> SampleSet:
    """Up to ``n`` samples of each class, spread over the set."""
    keep = np.concatenate([idx[np.linspace(0, len(idx) - 1, min(n, len(idx))).round().astype(int)]
                           for idx in (np.flatnonzero(samples.y == c) for c in np.unique(samples.y))])
    return SampleSet([samples.x[i] for i in keep], samples.y[keep], [samples.patient_ids[i] for i in keep],
                     samples.case_index[keep])


@pytest.fixture(scope="module", params=sorted(script.SCHEDULES))
def trained(request, shared_data, tmp_path_factory):
    recipe = request.param
    out = tmp_path_factory.mktemp(recipe)
    config = script.recipe_config(recipe, None)
    for source, limit in SOURCES.items():
        prepare_source(shared_data, source, out, limit=limit, spec=config.input, tag=recipe)
    cache = script.RecipeCache(out, recipe, config.input.channels, sources=tuple(SOURCES))
    records = source_records(shared_data)
    studies = [r for s in ("soares", "sirm") for r in records[s] if str(Path(r.path).resolve()) in cache.rows]
    samples = {u: cache.samples(studies, u) for u in {s["unit"] for s in stages_of(config)}}
    small = {u: _subset(s, 4 if u == "slice" else 2) for u, s in samples.items()}
    result = fit(config, [], [], out / "model", epochs=1, progress=False, threads=1, train_samples=small,
                 val_samples=small)
    return recipe, config, cache, studies, out / "model", result


def _matched(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    """Whether every slice of ``a`` equals one of ``b`` up to the cache's uint8 rounding."""
    bs = np.stack(b).astype(np.float32).reshape(len(b), -1)
    return all(np.abs(bs - x.astype(np.float32).reshape(1, -1)).max(1).min() <= 1 / 255 + 1e-3 for x in a)


def test_cache_gives_the_samples_predict_prepares(trained):
    _, config, cache, studies, _, _ = trained
    for rec in studies[:1] + studies[-1:]:  # a Soares slice and a SIRM volume
        for unit in {s["unit"] for s in stages_of(config)}:
            cached, direct = cache.samples([rec], unit), build_samples([rec], config, unit, progress=False)
            assert len(cached) > 0
            if unit == "slice" and config.input.selection == "groups":
                # the pipeline repeats slices to fill Kara's groups; the cache keeps each slice once
                assert _matched(cached.x, direct.x) and _matched(direct.x, cached.x)
                continue
            assert len(cached) == len(direct)
            for a, b in zip(cached.x, direct.x):
                assert a.shape == b.shape
                assert np.abs(a.astype(np.float32) - b.astype(np.float32)).max() <= 1 / 255 + 1e-3  # uint8 cache


def test_predict_explain_evaluate_run_with_the_trained_recipe(trained, shared_data, tmp_path, capsys):
    recipe, config, _, studies, folder, _ = trained
    volume = studies[-1].path
    assert main(["--quiet", "predict", str(volume), "--model", str(folder), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"]["recipe"] == recipe and set(out["probabilities"]) == set(config.classes)
    assert abs(sum(out["probabilities"].values()) - 1) < 1e-4 and out["decision"] in config.classes
    maps = tmp_path / "maps"
    assert main(["--quiet", "explain", str(volume), "--model", str(folder), "--method", EXPLANATION[recipe],
                 "--slices", "1", "--out", str(maps)]) == 0
    assert list(maps.glob("*.png"))
    capsys.readouterr()
    assert main(["--quiet", "evaluate", "--model", str(folder), "--data", f"dre-net-demo:{shared_data / 'dre-net-demo'}",
                 "--resamples", "50", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n_cases"] == 4 and result["model"]["recipe"] == recipe


@pytest.mark.parametrize("name", ["ct-cnn-bilstm", "ct-dre-net", "ct-residual-attention"])
def test_bundled_recipe_models_predict_by_name_and_carry_per_source_test_figures(name, shared_data, capsys):
    from chestdx.models.bundled import resolve_model_path
    from chestdx.models.card import read_card

    card = read_card(resolve_model_path(name))
    assert {"soares", "mosmed", "ucsd"} <= set(card.source_aucs("test"))
    slice_path = sorted((shared_data / "ct-sars-cov-2-soares").glob("*/*"))[0]
    assert main(["--quiet", "predict", str(slice_path), "--model", name, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"]["name"] == name and out["model"]["recipe"] == card.recipe.name
