"""Load a checkpoint for inference, once per process, without importing torch unless needed.

``load_model`` reads and validates the card and opens the ONNX Runtime sessions of the
checkpoint's export; the torch network is built only when something asks for
``LoadedModel.net`` (explanations, training, checkpoints without an ONNX export). The same
checkpoint loaded twice in a process is the same object, until its files change.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

from chestdx.errors import ChestDxError
from chestdx.models.bundled import CARD_FILE, DEFAULT_MODELS, WEIGHTS_FILE, onnx_files, resolve_model_path
from chestdx.models.card import ModelCard, read_card
from chestdx.models.registry import RecipeConfig


@dataclass(eq=False)
class LoadedModel:
    """A model ready for inference: its card, its recipe config and its runtimes.

    Args:
        card: the validated model card.
        path: the checkpoint folder.
        sessions: ONNX Runtime sessions (outputs: slice features, logits) of ``model.onnx``,
            or of ``model-<i>.onnx`` for each member of an ensemble, when the checkpoint
            ships them; else empty.
    """

    card: ModelCard
    path: Path
    sessions: list = field(default_factory=list)

    @property
    def config(self) -> RecipeConfig:
        """Returns: the recipe config the network was built from."""
        return self.card.recipe

    @property
    def name(self) -> str:
        """Returns: the model's name from its card."""
        return self.card.name

    @property
    def threshold(self) -> float:
        """Returns: the operating threshold on the positive (last) class probability."""
        return self.card.threshold

    @property
    def temperature(self) -> float:
        """Returns: the calibration temperature applied to logits (1.0 = none)."""
        return self.card.temperature

    @functools.cached_property
    def net(self):
        """Returns: the torch network in eval mode, built and loaded on first use (imports torch)."""
        from chestdx.models.checkpoint import build_network

        return build_network(self.card.recipe, self.path)


def _threads() -> int:
    """``OMP_NUM_THREADS`` when set (a batch worker's share of the CPUs), else the CPUs this process may use."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        return int(os.environ["OMP_NUM_THREADS"])
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def reuse_freed_memory() -> bool:
    """Have glibc keep the memory a study frees for the next study instead of returning it to the system.

    For processes that diagnose one study after another (the service's and batch scoring's
    workers, the DICOM node). By default glibc gives every block over 32 MB its own ``mmap``
    and unmaps it when freed, so each study's volumes (hundreds of MB) are faulted in afresh:
    on a 300-slice study 80,000 page faults and 1-3 s of kernel time per study on the 2-core
    VM. With ``mmap`` off and trimming above 2 GB, from the third study on the process reuses
    its heap (no page faults, 4.4-4.8 s a study against 5.2-7.1 s). The process keeps the
    memory of its largest study resident between studies.

    Returns:
        Whether the settings took (False where the C library is not glibc).
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # glibc's <malloc.h>
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2**31 - 1))


_SHARED_ARENA: list = []


def onnx_session(path: Path, threads: int | None = None):
    """An ONNX Runtime CPU session of ``path``; every session of the process shares one memory arena.

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads (default: the CPUs this process may use).

    Returns:
        The session.
    """
    # ONNX Runtime otherwise writes telemetry files under ~/.cache/Microsoft and $TMPDIR/.ses on import:
    # chestdx writes nothing outside the paths it is given.
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import onnxruntime as ort

    if not _SHARED_ARENA:
        # One CPU arena for every session of the process: an arena per session keeps its own peak
        # activations, so the three sessions of an ensemble took 1.3 GB more than one network.
        info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, -1, -1, -1))
        _SHARED_ARENA.append(info)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or _threads()
    options.log_severity_level = 3
    options.add_session_config_entry("session.use_env_allocators", "1")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


_CACHE: dict[Path, tuple[tuple, LoadedModel]] = {}


def classifier_card(path: Path, name_or_path: str | Path) -> ModelCard:
    """The card of a classification checkpoint.

    Args:
        path: the checkpoint folder. name_or_path: what the user gave (for the message).

    Raises:
        ChestDxError: the card is invalid, or the checkpoint is a lesion segmenter.
    """
    card = read_card(path)
    if card.extra.get("task") == "lesion-segmentation":
        raise ChestDxError(f"{str(name_or_path)!r} is a lesion segmenter, not a classifier: it runs in `chestdx segment` "
                           f"and `predict --quantify`; give --model a classification model "
                           f"({', '.join(dict.fromkeys(DEFAULT_MODELS.values()))} or another of `chestdx recipes`), or leave it out")
    return card


def _stamp(path: Path) -> tuple:
    """What identifies a checkpoint's contents: its files' modification times and sizes."""
    files = [path / CARD_FILE, path / WEIGHTS_FILE, *onnx_files(path)]
    return tuple((f.name, f.stat().st_mtime_ns, f.stat().st_size) for f in files)


def load_model(name_or_path: str | Path | None = None, kind: str = "ct-volume") -> LoadedModel:
    """Load a checkpoint for inference (no download: bundled weights ship with the package).

    Args:
        name_or_path: bundled name, checkpoint folder, or None for the default of ``kind``.
        kind: study kind used when ``name_or_path`` is None.

    Returns:
        The model; the same object for the same checkpoint within a process while its files
        are unchanged.

    Raises:
        ChestDxError: no such model, or its card is invalid.
    """
    path = resolve_model_path(name_or_path, kind)
    stamp = _stamp(path)
    cached = _CACHE.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    model = LoadedModel(card=classifier_card(path, name_or_path), path=path, sessions=[onnx_session(f) for f in onnx_files(path)])
    _CACHE[path] = (stamp, model)
    return model
