"""Fit the X-ray / CT-slice image router on the shared sets and measure it on held-out images.

Every CT and X-ray set in ``../shared/data`` is split 70/30 by group (patient, scan or
person where the set has one; look-alike neighbours of Soares by runs of 20 file numbers;
otherwise each image alone), with a fixed seed. At most ``--per-set`` training images per set
(volumes: at most 10 equidistant slices per scan) fit a logistic regression on
`chestdx.io.router.image_features`; the held-out images of each set (at most 1,000, drawn
at random) are then read once. The weights, the data and every set's held-out accuracy go to
``chestdx/weights/image-router/router.json``.

Usage:
    python scripts/train_router.py [--data ../shared/data] [--per-set 300] [--out chestdx/weights/image-router]
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupShuffleSplit
from sklearn.preprocessing import StandardScaler

from chestdx.io.images import IMAGE_SUFFIXES, natural_key, read_image
from chestdx.io.router import image_features

SLICES_PER_SCAN = 10
MAX_TEST = 1000


def _images(folder: Path, pattern: str) -> list[Path]:
    return sorted(p for p in folder.glob(pattern) if p.suffix.lower() in IMAGE_SUFFIXES)


def _scan_slices(scan: Path) -> list[Path]:
    files = sorted(_images(scan, "*"), key=natural_key)
    return [files[i] for i in np.linspace(0, len(files) - 1, min(SLICES_PER_SCAN, len(files))).round().astype(int)]


def _by_scan(folder: Path, pattern: str) -> list[tuple[Path, str]]:
    return [(f, str(scan)) for scan in sorted(folder.glob(pattern)) if scan.is_dir() for f in _scan_slices(scan)]


def _patients_from_csv(root: Path, meta: str, path_key: str, folder: str = "") -> list[tuple[Path, str]]:
    with open(root / meta, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    out = [(root / folder / row[path_key], row["patient_id"]) for row in rows]
    return [(p, g) for p, g in out if p.is_file()]


def _soares_groups(root: Path) -> list[tuple[Path, str]]:
    out = []
    for path in _images(root, "*/*"):
        number = re.search(r"(\d+)", path.stem)
        out.append((path, f"{path.parent.name}/{int(number.group(1)) // 20 if number else path.stem}"))
    return out


def collect(data: Path) -> dict[str, tuple[str, list[tuple[Path, str]]]]:
    """Returns: set name -> (kind, [(image path, group id)]) for every set found under ``data``."""
    sets = {
        "ct-sars-cov-2-soares": ("ct-slice", lambda r: _soares_groups(r)),
        "ct-mosmed-slices": ("ct-slice", lambda r: [(p, str(p)) for p in _images(r, "*/*")]),
        "ct-cc-ccii-normal": ("ct-slice", lambda r: [(f, str(s.parent)) for f, s in
                                                     ((f, Path(g)) for f, g in _by_scan(r, "Normal/*/*"))]),
        "ucsd-covid-ct": ("ct-slice", lambda r: [(p, str(p)) for p in _images(r, "images/*/*")]),
        "covid-ct-volumes-sirm": ("ct-slice", lambda r: _by_scan(r, "*")),
        "medseg-covid-infection": ("ct-slice", lambda r: [(p, str(p)) for p in _images(r, "*/images/*")]),
        "cc-ccii-sample": ("ct-slice", lambda r: _by_scan(r, "CP/*/*")),
        "dre-net-demo": ("ct-slice", lambda r: _by_scan(r, "*")),
        "xray-covid19-radiography": ("xray", lambda r: [(p, str(p)) for p in _images(r, "*/*")]),
        "xray-nih-pneumonia": ("xray", lambda r: _patients_from_csv(r, "metadata.csv", "path")),
        "xray-kermany-pediatric": ("xray", lambda r: [(p, str(p)) for p in _images(r, "*/*")]),
        "ieee8023-cxr-frontal": ("xray", lambda r: _patients_from_csv(r, "metadata.csv", "image", "images")),
    }
    return {name: (kind, lister(data / name)) for name, (kind, lister) in sets.items() if (data / name).is_dir()}


def _features(paths: list[Path]) -> tuple[np.ndarray, list[Path]]:
    feats, kept = [], []
    for path in paths:
        try:
            grey, _ = read_image(path, path.name)
        except Exception:  # damaged files of the shared sets (one CC-CCII slice) are skipped
            continue
        feats.append(image_features(grey))
        kept.append(path)
    return np.asarray(feats), kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--per-set", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="chestdx/weights/image-router")
    args = parser.parse_args()
    t0 = time.time()
    rng = np.random.default_rng(args.seed)
    train_x, train_y, held_out, data_card = [], [], {}, {}
    for name, (kind, items) in collect(Path(args.data)).items():
        groups = [g for _, g in items]
        splitter = GroupShuffleSplit(n_splits=1, test_size=0.3, random_state=args.seed)
        tr, te = next(splitter.split(np.zeros(len(items)), groups=groups))
        tr = rng.permutation(tr)[:args.per_set]
        te = rng.permutation(te)[:MAX_TEST]
        x, kept = _features([items[i][0] for i in tr])
        train_x.append(x)
        train_y += [kind == "xray"] * len(kept)
        held_out[name] = (kind, [items[i][0] for i in te])
        data_card[name] = {"kind": kind, "images": len(items), "groups": len(set(groups)), "train": len(kept)}
    scaler = StandardScaler().fit(np.concatenate(train_x))
    model = LogisticRegression(C=0.05, max_iter=2000).fit(scaler.transform(np.concatenate(train_x)), train_y)
    results = {}
    for name, (kind, paths) in held_out.items():
        x, kept = _features(paths)
        p = model.predict_proba(scaler.transform(x))[:, 1]
        right = (p >= 0.5) == (kind == "xray")
        results[name] = {"kind": kind, "n": len(kept), "accuracy": round(float(right.mean()), 4),
                         "errors": [str(q) for q, ok in zip(kept, right) if not ok][:5]}
        print(f"{name:26s} {kind:8s} held-out n={len(kept):5d} accuracy {right.mean():.4f}", flush=True)
    all_right = sum(r["accuracy"] * r["n"] for r in results.values())
    all_n = sum(r["n"] for r in results.values())
    card = {"what": "X-ray vs CT-slice router for plain images: logistic regression on a 32x32 thumbnail, a "
                    "16-bin histogram and log(height/width) (chestdx.io.router.image_features); positive = X-ray",
            "trained": time.strftime("%Y-%m-%d"), "command": "python scripts/train_router.py",
            "split": "70/30 by group per set (patient, scan or person where known; Soares: runs of 20 file "
                     "numbers; else image), seed 0; at most 10 slices per CT scan",
            "data": data_card, "held_out": results,
            "held_out_accuracy_pooled": round(all_right / all_n, 4), "seconds": round(time.time() - t0, 1),
            "mean": scaler.mean_.round(6).tolist(), "scale": scaler.scale_.round(6).tolist(),
            "coef": model.coef_[0].round(6).tolist(), "intercept": round(float(model.intercept_[0]), 6)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "router.json").write_text(json.dumps(card) + "\n")
    print(f"pooled held-out accuracy {card['held_out_accuracy_pooled']:.4f} (n={all_n}); written {out / 'router.json'}")


if __name__ == "__main__":
    main()
