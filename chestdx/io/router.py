"""Tell a chest X-ray from a CT slice in a plain image (PNG/JPG/TIFF carry no modality).

A logistic regression on cheap features of the grey image: a 32x32 thumbnail, a 16-bin
intensity histogram and the aspect ratio (`image_features`). Its weights are a small JSON
file, ``chestdx/weights/image-router/router.json``, written by ``scripts/train_router.py``
from the shared sets, with the held-out accuracy of every set in it. No torch: the router
runs while a study is read, before any model is loaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

ROUTER_FILE = Path(__file__).resolve().parents[1] / "weights" / "image-router" / "router.json"
THUMB = 32
HIST_BINS = 16


def image_features(grey: np.ndarray) -> np.ndarray:
    """The router's features of one grey image.

    Args:
        grey: ``(y, x)`` array in 0..255.

    Returns:
        float64 ``(THUMB * THUMB + HIST_BINS + 1,)``: thumbnail (0..1, resized ignoring the
        aspect ratio), intensity histogram (fractions), log of height / width.
    """
    img = np.clip(np.asarray(grey, dtype=np.float32), 0, 255)
    thumb = np.asarray(Image.fromarray(np.rint(img).astype(np.uint8)).resize((THUMB, THUMB), Image.BILINEAR),
                       dtype=np.float64) / 255.0
    hist = np.histogram(img, bins=HIST_BINS, range=(0, 256))[0] / img.size
    return np.concatenate([thumb.ravel(), hist, [np.log(img.shape[0] / img.shape[1])]])


@dataclass(frozen=True)
class ImageRouter:
    """A fitted X-ray / CT-slice logistic regression (see ``scripts/train_router.py``).

    Args:
        mean, scale: feature standardisation.
        coef, intercept: logistic regression on the standardised features; positive = X-ray.
        card: what the JSON says about training data and held-out accuracy.
    """

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    card: dict

    @classmethod
    def load(cls, path: str | Path = ROUTER_FILE) -> "ImageRouter":
        """Args: path: a router JSON. Returns: the router."""
        data = json.loads(Path(path).read_text())
        return cls(np.asarray(data["mean"]), np.asarray(data["scale"]), np.asarray(data["coef"]),
                   float(data["intercept"]), {k: v for k, v in data.items() if k not in ("mean", "scale", "coef")})

    def p_xray(self, grey: np.ndarray) -> float:
        """Args: grey: ``(y, x)`` image in 0..255. Returns: the probability that it is an X-ray."""
        z = (image_features(grey) - self.mean) / self.scale
        return float(1.0 / (1.0 + np.exp(-(z @ self.coef + self.intercept))))


@lru_cache(maxsize=1)
def _bundled_router() -> ImageRouter:
    return ImageRouter.load()


def route_image(grey: np.ndarray) -> tuple[str, float]:
    """Decide the kind of a single plain image.

    Args:
        grey: ``(y, x)`` image in 0..255.

    Returns:
        ``(kind, p_xray)``: ``"xray"`` when the router's X-ray probability is at least 0.5,
        else ``"ct-slice"``.

    Example:
        >>> route_image(np.zeros((256, 256)))[0] in ("xray", "ct-slice")
        True
    """
    p = _bundled_router().p_xray(grey)
    return ("xray" if p >= 0.5 else "ct-slice"), p
