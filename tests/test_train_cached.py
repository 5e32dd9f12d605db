"""Fine-tuning the last blocks on cached feature maps: the split network equals the whole, the cache is reused, a tiny tail learns."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from chestdx.evaluate.metrics import auc_score
from chestdx.io.datasets import CaseRecord
from chestdx.models.recipes.detl import build_detl, detl_config
from chestdx.train.cached import Tail, cache_block_inputs, fit_tail, frozen_part, tail_outputs
from chestdx.train.data import build_samples, to_model_input


def _films(folder, n: int, seed: int = 0) -> list[CaseRecord]:
    """Synthetic films: "covid" ones carry a bright blob in the left half, "normal" ones in the right half."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        label = ("normal", "covid")[i % 2]
        img = rng.normal(90, 12, (48, 48))
        col = 8 if label == "covid" else 30
        img[18:30, col:col + 10] += 110
        path = folder / f"{i:03d}.png"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)
        records.append(CaseRecord(path, label, f"p{i}", source="synthetic"))
    return records


def _config():
    config = detl_config("vgg", classes=("normal", "covid"), epochs=12, batch_size=8)
    config.input.size = 32
    config.params["pretrained"] = False
    config.train["stages"][0].update(optimizer="adamw", lr=3e-3)
    config.train["patience"] = 12
    return config


def test_tail_after_frozen_part_equals_the_whole_network(tmp_path):
    torch.manual_seed(0)
    config = _config()
    net = build_detl(config).eval()
    records = _films(tmp_path, 4)
    samples = build_samples(records, config, "slice", progress=False)
    x = to_model_input(torch.from_numpy(np.stack(samples.x)).float(), config)
    with torch.inference_mode():
        whole = net(x)
        split = Tail(net, 4)(frozen_part(net, 4)(x))
    torch.testing.assert_close(split, whole, atol=1e-5, rtol=1e-4)


def test_cache_is_reused_and_a_tail_learns(tmp_path):
    torch.manual_seed(0)
    config = _config()
    net = build_detl(config)
    (tmp_path / "films").mkdir()
    records = _films(tmp_path / "films", 48)
    cache = tmp_path / "cache" / "maps.npy"
    maps = np.asarray(cache_block_inputs(records, config, net, 4, cache, chunk=20))
    assert maps.shape[0] == 48 and maps.dtype == np.float16
    written = cache.stat().st_mtime_ns
    again = cache_block_inputs(records, config, net, 4, cache)
    assert cache.stat().st_mtime_ns == written and np.array_equal(np.asarray(again), maps)
    cache_block_inputs(records[:40], config, net, 4, cache)  # other images: rebuilt
    assert np.load(cache).shape[0] == 40
    y = np.array([r.label == "covid" for r in records], np.int64)
    before = dict((k, v.clone()) for k, v in net.blocks[3].state_dict().items())
    tail = Tail(net, 4)
    history = fit_tail(tail, config, maps[:32], y[:32], maps[32:], y[32:], seed=0)
    logits, _ = tail_outputs(tail, maps[32:])
    assert auc_score(y[32:], logits[:, 1] - logits[:, 0]) > 0.9
    assert round(auc_score(y[32:], logits[:, 1] - logits[:, 0]), 4) == max(h["val_auc"] for h in history)  # best kept
    # the frozen part is untouched by training the tail
    assert all(torch.equal(before[k], v) for k, v in net.blocks[3].state_dict().items())
