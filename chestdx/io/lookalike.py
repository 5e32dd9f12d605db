"""Look-alike images: slice groups for sets without patient ids, near-duplicates across sets.

Both work on tiny grey thumbnails (the whole image resized to 16x16, so a copy that was
resized, re-encoded or squashed to another aspect ratio still matches):

- ``ordered_lookalike_groups``: for a folder whose file order follows the scan (Soares
  CT: neighbouring slices of one patient sit next to each other), cut the file order into
  runs at the least similar neighbours, then join runs that hold near-copies of each other.
  A split by these groups leaks far fewer near-copies than a random slice split.
- ``cross_set_duplicates`` / ``drop_cross_set_duplicates``: the same film in two public
  sets (Cohen's COVID-19 films are in ieee8023 and in the COVID-19 Radiography Database;
  some RSNA normals there are NIH films) found by average hash, one copy kept by a fixed
  rule; ``join_near_duplicate_patients``: copies within a set share one patient id.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

THUMB_SIDE = 16
MAX_HASH_DISTANCE = 10


def thumbnail(path: Path, side: int = THUMB_SIDE) -> np.ndarray:
    """Returns: the image as a float32 ``(side * side,)`` grey vector (whole image resized, bilinear)."""
    with Image.open(path) as img:
        img.draft("L", (side * 4, side * 4))  # JPEG: decode at a reduced scale, much faster
        grey = img.convert("L").resize((side, side), Image.BILINEAR)
    return np.asarray(grey, np.float32).ravel()


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows centred and scaled to unit length, so a dot product is Pearson's correlation."""
    centred = vectors - vectors.mean(axis=1, keepdims=True)
    return centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-6)


def _connected(n: int, pairs: np.ndarray) -> np.ndarray:
    """Returns: component id (0..) of each of ``n`` nodes joined by the ``(k, 2)`` index pairs (union-find)."""
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        ra, rb = root(int(a)), root(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([root(i) for i in range(n)])
    return np.unique(roots, return_inverse=True)[1]


def ordered_lookalike_groups(paths: Sequence[Path], slices_per_run: int = 20, link_correlation: float = 0.97,
                             ) -> np.ndarray:
    """Group the slices of a folder whose file order follows the scans, when no patient id exists.

    1. Thumbnails (16x16 grey, correlation of neighbours in file order).
    2. The file order is cut into ``len(paths) // slices_per_run`` runs at the least
       correlated neighbours (new patients start where the picture jumps).
    3. Runs holding a pair of slices with correlation >= ``link_correlation`` (a near-copy:
       the same patient elsewhere in the order, or a repeated image) are joined.

    Args:
        paths: image files in their file order.
        slices_per_run: mean run length of step 2 (a scan's slice count in the set).
        link_correlation: thumbnail correlation above which two slices count as near-copies.

    Returns:
        ``(len(paths),)`` int group ids 0.. in file order.
    """
    n = len(paths)
    if n < 2:
        return np.zeros(n, int)
    unit = _unit_rows(np.stack([thumbnail(p) for p in paths]))
    neighbour = (unit[1:] * unit[:-1]).sum(axis=1)
    n_runs = max(1, n // slices_per_run)
    cuts = np.zeros(n, int)
    cuts[np.sort(np.argsort(neighbour, kind="stable")[: n_runs - 1]) + 1] = 1
    runs = np.cumsum(cuts)
    similar = unit @ unit.T
    i, j = np.nonzero(np.triu(similar >= link_correlation, k=1))
    links = np.stack([runs[i], runs[j]], axis=1)
    return _connected(n_runs, links[links[:, 0] != links[:, 1]])[runs]


def average_hash(path: Path, side: int = THUMB_SIDE) -> np.ndarray:
    """Returns: the ``side * side`` bool average hash (thumbnail pixel above the thumbnail's mean)."""
    grey = thumbnail(path, side)
    return grey > grey.mean()


@dataclass(frozen=True)
class Duplicate:
    """A film found in two sets: ``dropped`` is removed, ``kept`` stays; ``distance`` in hash bits."""

    kept: object
    dropped: object
    distance: int


def near_duplicate_pairs(records: Sequence, max_distance: int = MAX_HASH_DISTANCE) -> list[tuple[int, int, int]]:
    """Find pairs of near-duplicate images by average hash.

    Args:
        records: ``CaseRecord`` rows of image files.
        max_distance: most differing bits of the 256-bit average hashes for a match. On the
            shared X-ray sets copies of one film differ by 0-7 bits and different films by
            13 or more (a few follow-up films of one patient by 8-12); 10 keeps the copies.

    Returns:
        ``(i, j, distance)`` index pairs with ``i < j``.
    """
    if len(records) < 2:
        return []
    hashes = np.stack([average_hash(r.path) for r in records]).astype(np.float32)
    found = []
    for start in range(0, len(records), 512):  # block-wise: memory stays small for ~10k images
        block = hashes[start:start + 512]
        distance = block @ (1 - hashes).T + (1 - block) @ hashes.T
        rows, cols = np.nonzero(distance <= max_distance)
        found.extend((int(r), int(c), int(distance[r - start, c])) for r, c in zip(rows + start, cols) if r < c)
    return found


def cross_set_duplicates(records: Sequence, max_distance: int = MAX_HASH_DISTANCE) -> list[tuple[int, int, int]]:
    """Returns: the ``near_duplicate_pairs`` whose two records come from different ``source`` sets."""
    return [(i, j, d) for i, j, d in near_duplicate_pairs(records, max_distance)
            if records[i].source != records[j].source]


def join_near_duplicate_patients(records: Sequence, max_distance: int = MAX_HASH_DISTANCE) -> list:
    """Give near-duplicate images one patient id, so that no split puts copies of a film on both sides.

    Sets without patient ids (fallback ``"img:"`` ids) hold repeated films (the COVID-19
    Radiography Database has hundreds). Each cluster of near-duplicates (joined
    transitively) takes the smallest of its ids, a real patient id before a fallback id.

    Args:
        records: ``CaseRecord`` rows of image files.
        max_distance: see ``near_duplicate_pairs``.

    Returns:
        The records in the input order, patient ids replaced where joined.
    """
    pairs = np.array([(i, j) for i, j, _ in near_duplicate_pairs(records, max_distance)], int).reshape(-1, 2)
    components = _connected(len(records), pairs)
    chosen: dict[int, str] = {}
    for record, component in zip(records, components):
        key = (record.patient_id.startswith("img:"), record.patient_id)
        if component not in chosen or key < (chosen[component].startswith("img:"), chosen[component]):
            chosen[component] = record.patient_id
    return [dataclasses.replace(r, patient_id=chosen[c]) if chosen[c] != r.patient_id else r
            for r, c in zip(records, components)]


def drop_cross_set_duplicates(records: Sequence, source_priority: Sequence[str],
                              max_distance: int = MAX_HASH_DISTANCE,
                              ) -> tuple[list, list[Duplicate]]:
    """Keep one copy of each film found in more than one source.

    Rule: the copy with a real patient id (not an ``"img:"`` fallback) is kept; between two
    such (or two without), the copy whose source comes first in ``source_priority``. A
    copy is dropped once even when it matches several films.

    Args:
        records: ``CaseRecord`` rows with ``source`` set.
        source_priority: source names, most trusted first (e.g. the set that holds the
            original with metadata before a set that re-collected it).
        max_distance: see ``cross_set_duplicates``.

    Returns:
        ``(kept_records, duplicates)``; kept records in the input order.
    """
    rank = {name: k for k, name in enumerate(source_priority)}

    def preference(record) -> tuple[int, int]:
        return (record.patient_id.startswith("img:"), rank.get(record.source, len(rank)))

    dropped: dict[int, Duplicate] = {}
    for i, j, distance in cross_set_duplicates(records, max_distance):
        keep, drop = (i, j) if preference(records[i]) <= preference(records[j]) else (j, i)
        if drop not in dropped and keep not in dropped:
            dropped[drop] = Duplicate(records[keep], records[drop], distance)
    if dropped:
        log.info("dropped %d cross-set duplicate(s)", len(dropped))
    return [r for k, r in enumerate(records) if k not in dropped], list(dropped.values())
