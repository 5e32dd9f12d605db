"""The X-ray / CT-slice router for plain images, and its hook in `load_study`."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from chestdx.io import load_study
from chestdx.io.router import ROUTER_FILE, THUMB, ImageRouter, image_features, route_image
from chestdx.io.sample import write_sample_series

# Two images of every shared set: (set, glob, expected kind).
SETS = [
    ("ct-sars-cov-2-soares", "COVID/*.jpg", "ct-slice"),
    ("ct-mosmed-slices", "CT-1/*.jpg", "ct-slice"),
    ("ct-cc-ccii-normal", "Normal/*/0/*.jpg", "ct-slice"),
    ("ucsd-covid-ct", "images/CT_NonCOVID/*", "ct-slice"),
    ("covid-ct-volumes-sirm", "*/0050.jpg", "ct-slice"),
    ("medseg-covid-infection", "test/images/*.jpg", "ct-slice"),
    ("cc-ccii-sample", "CP/0/3132/*.png", "ct-slice"),
    ("dre-net-demo", "person003*/*.jpg", "ct-slice"),
    ("xray-covid19-radiography", "COVID/*.jpg", "xray"),
    ("xray-nih-pneumonia", "Pneumonia/*.jpg", "xray"),
    ("xray-kermany-pediatric", "ViralPneumonia/*.jpg", "xray"),
    ("ieee8023-cxr-frontal", "images/*.png", "xray"),
]


@pytest.mark.parametrize(("folder", "pattern", "kind"), SETS)
def test_real_images_of_every_set_are_routed(shared_data, folder, pattern, kind):
    files = sorted((shared_data / folder).glob(pattern))
    for path in (files[len(files) // 3], files[2 * len(files) // 3]):
        study = load_study(path, progress=False)
        assert study.kind == kind, path
        assert any("image router" in w and "--kind" in w for w in study.warnings)
        p = study.metadata["router_p_xray"]
        assert (p >= 0.5) == (kind == "xray")


def test_kind_overrides_the_router(shared_data):
    xray = sorted((shared_data / "xray-covid19-radiography" / "COVID").glob("*.jpg"))[0]
    study = load_study(xray, kind="ct-slice", progress=False)
    assert study.kind == "ct-slice"
    assert "router_p_xray" not in study.metadata and not any("router" in w for w in study.warnings)


def test_synthetic_ct_slice_is_a_ct_slice(tmp_path):
    """A slice of the generated phantom series, rendered in a lung window as a PNG."""
    study = load_study(write_sample_series(tmp_path / "s", n_slices=20, size=256, progress=False)[0].parent,
                       progress=False)
    hu = study.pixels[study.n_slices // 2]
    grey = np.clip((hu + 1350.0) / 1500.0 * 255.0, 0, 255).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "slice.png")
    assert load_study(tmp_path / "slice.png", progress=False).kind == "ct-slice"


def test_folders_of_slices_stay_volumes_without_routing(tmp_path):
    for i in range(3):
        Image.fromarray(np.full((40, 40), 60 * i, np.uint8)).save(tmp_path / f"s{i}.png")
    study = load_study(tmp_path, progress=False)
    assert study.kind == "ct-volume" and "router_p_xray" not in study.metadata


def test_features_and_bundled_weights_fit():
    features = image_features(np.random.default_rng(0).uniform(0, 255, (300, 200)))
    router = ImageRouter.load()
    assert features.shape == router.coef.shape == router.mean.shape == (THUMB * THUMB + 16 + 1,)
    assert features[-1] == pytest.approx(np.log(1.5))
    card = json.loads(ROUTER_FILE.read_text())
    assert card["held_out_accuracy_pooled"] >= 0.95  # measured on held-out images when it was fitted
    kind, p = route_image(np.zeros((64, 64)))
    assert kind in ("xray", "ct-slice") and 0.0 <= p <= 1.0


def test_router_does_not_import_torch():
    code = "import sys, chestdx.io.router as r, numpy as np; r.route_image(np.zeros((64, 64))); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
