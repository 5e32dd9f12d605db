"""The model card: a typed, versioned `ModelCard`, the only reader and writer of ``metadata.json``.

A card says what a checkpoint is (recipe, classes, input), how far to trust it (metrics
with confidence intervals, limitations, the training data and its fingerprint) and how to
decide (temperature, threshold, operating point). Loading validates it and names what is
wrong in one line. Importing this module does not import torch.

Schema versions: 1 is every card written before the version field existed (metrics could
be bare numbers); 2 stores every metric as ``{value, ci_low, ci_high, n_valid}``.
``read_card`` migrates version 1 on the fly.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import platform
import subprocess
from dataclasses import dataclass, field, fields
from pathlib import Path

from chestdx.errors import ChestDxError
from chestdx.models.bundled import CARD_FILE
from chestdx.models.registry import RecipeConfig

SCHEMA_VERSION = 2
INTENDED_USE = "Research only. Not a medical device; not for clinical diagnosis or patient management."
# Entries of a metrics split that describe it rather than measure it.
_SPLIT_FIELDS = ("level", "n")
# What a split's metric entries may be called (``"<name>[<class>]"`` for one class's figure);
# anything else in a split (fold tables, thresholds, notes) is kept as a detail.
METRIC_NAMES = frozenset({"auc", "macro_auc", "accuracy", "sensitivity", "specificity", "precision", "npv", "f1", "dice", "mae",
                          "kappa", "ece", "brier"})


def _number(value, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"{what} must be a number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Metric:
    """A measured figure with its bootstrap confidence interval.

    Args:
        value: the point estimate (None when undefined, e.g. AUC on one class).
        ci_low: lower end of the 95% interval, or None when none was computed.
        ci_high: upper end.
        n_valid: bootstrap resamples on which the metric was defined.
    """

    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    n_valid: int | None = None

    @classmethod
    def parse(cls, raw, what: str) -> "Metric":
        """Args: raw: a bare number, None, or a ``{value, ci_low, ci_high, n_valid}`` dict; what: its name for errors.

        Returns:
            The metric.
        """
        if raw is None:
            return cls(None)
        if isinstance(raw, dict):
            unknown = set(raw) - {"value", "ci_low", "ci_high", "n_valid"}
            if "value" not in raw or unknown:
                raise ValueError(f"{what} must have 'value' (and optionally ci_low, ci_high, n_valid), got keys {sorted(raw)}")
            n_valid = raw.get("n_valid")
            return cls(_number(raw["value"], what), _number(raw.get("ci_low"), what), _number(raw.get("ci_high"), what),
                       None if n_valid is None else int(n_valid))
        return cls(_number(raw, what))

    def to_dict(self) -> dict:
        """Returns: the JSON form (CI fields only when present)."""
        out = {"value": self.value}
        out.update({k: getattr(self, k) for k in ("ci_low", "ci_high", "n_valid") if getattr(self, k) is not None})
        return out


@dataclass
class MetricSet:
    """The metrics of one evaluation (``val``, ``test``, a cross-validation ...).

    Args:
        level: what one case is (``"patient"``, ``"study"``, ``"image"`` ...).
        n: number of cases.
        values: metric name -> `Metric`.
        details: anything else recorded with it (per-fold tables, notes), kept as written.
    """

    level: str | None = None
    n: int | None = None
    values: dict[str, Metric] = field(default_factory=dict)
    details: dict = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: dict, what: str) -> "MetricSet":
        """Args: raw: the split's dict in the card; what: its name for errors. Returns: the set."""
        if not isinstance(raw, dict):
            raise ValueError(f"{what} must be an object, got {type(raw).__name__}")
        values, details = {}, {}
        for key, entry in raw.items():
            if key in _SPLIT_FIELDS:
                continue
            aggregate = isinstance(entry, dict) and "value" not in entry and "mean" in entry  # mean ± sd over runs
            if key.split("[")[0] in METRIC_NAMES and not aggregate:
                values[key] = Metric.parse(entry, f"{what}.{key}")
            else:
                details[key] = entry
        n = raw.get("n")
        if n is not None and (isinstance(n, bool) or not isinstance(n, int)):
            details["n"], n = n, None  # counts per class or source: a detail, not the number of cases
        return cls(level=raw.get("level"), n=n, values=values, details=details)

    def get(self, name: str) -> Metric | None:
        """Args: name: metric name. Returns: the metric, or None when not recorded."""
        return self.values.get(name)

    def to_dict(self) -> dict:
        """Returns: the JSON form: ``level``, ``n``, each metric's dict, then the details."""
        out = {k: getattr(self, k) for k in _SPLIT_FIELDS if getattr(self, k) is not None}
        if "n" in self.details:
            out["n"] = self.details["n"]
        out.update({k: m.to_dict() for k, m in self.values.items()})
        out.update({k: v for k, v in self.details.items() if k != "n"})
        return out


@dataclass
class ModelCard:
    """What a checkpoint is and how far to trust it.

    Args:
        name: the model's name (``"ct-default"``, ``"ai-corona-seed0"`` ...).
        recipe: the recipe config it was built from (classes and input spec included).
        threshold: operating threshold on the positive (last) class of a binary model.
        temperature: calibration temperature applied to logits (1.0 = none).
        date: when it was written (UTC, ISO 8601).
        git_commit: the chestdx commit that wrote it.
        libraries: versions of chestdx, torch, MONAI and Python at training time.
        intended_use: who may use it for what.
        limitations: what a user must know before reading its output.
        training: the training data, schedule, seed, time and history.
        metrics: evaluation name (``"val"``, ``"test"`` ...) -> `MetricSet`.
        operating_point: how ``threshold`` was chosen (target, split, cases).
        fingerprint: what the training data looked like (modality, intensity, pixel
            sizes, sources), so that a study outside it can be flagged.
        members: the members of a deep ensemble (name, seed, val AUC, training).
        selection: how this model was chosen among candidates.
        extra: any further documented entries, kept as written.
        schema_version: the card format version.
    """

    name: str
    recipe: RecipeConfig
    threshold: float = 0.5
    temperature: float = 1.0
    date: str | None = None
    git_commit: str | None = None
    libraries: dict = field(default_factory=dict)
    intended_use: str = INTENDED_USE
    limitations: list[str] = field(default_factory=list)
    training: dict = field(default_factory=dict)
    metrics: dict[str, MetricSet] = field(default_factory=dict)
    operating_point: dict | None = None
    fingerprint: dict | None = None
    members: list[dict] | None = None
    selection: dict | None = None
    extra: dict = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def classes(self) -> tuple[str, ...]:
        """Returns: the class names in logit order."""
        return tuple(self.recipe.classes)

    def metric(self, split: str, name: str) -> Metric | None:
        """Args: split: e.g. ``"val"``; name: e.g. ``"auc"``. Returns: that metric, or None when not recorded."""
        return self.metrics[split].get(name) if split in self.metrics else None

    def headline_auc(self, split: str) -> Metric | None:
        """Args: split: e.g. ``"test"``. Returns: its AUC (macro AUC for more than two classes), with a CI when one was recorded.

        A CI recorded apart (``"<split>_ci"``, as multi-seed cards keep it) is preferred.
        """
        for where in (f"{split}_ci", split):
            for name in ("auc", "macro_auc"):
                m = self.metric(where, name)
                if m is not None and m.value is not None and (m.ci_low is not None or where == split):
                    return m
        return None

    def source_aucs(self, split: str) -> dict[str, Metric]:
        """Args: split: e.g. ``"test"``. Returns: source -> AUC of the split's per-source results (defined ones only)."""
        raw = self.metrics[split].details if split in self.metrics else {}
        out = {}
        for source, entry in raw.items():
            if isinstance(entry, dict) and isinstance(entry.get("auc"), dict) and entry["auc"].get("value") is not None:
                out[source] = Metric.parse(entry["auc"], f"{split}.{source}.auc")
        return out

    def summary(self) -> dict:
        """Returns: what a prediction reports about its model: name, recipe, classes, data, val/test AUC (per source,
        ``<split>_auc_by_source``, for a card that records its results by source), use."""
        def value(split):
            m = self.headline_auc(split)
            return None if m is None else m.value

        out = {"name": self.name, "recipe": self.recipe.name, "classes": list(self.classes),
               "trained_on": (self.training.get("data") or {}).get("name"), "val_auc": value("val"),
               "test_auc": value("test"), "temperature": self.temperature, "intended_use": self.intended_use}
        for split in ("val", "test"):
            by_source = self.source_aucs(split)
            if by_source:
                out[f"{split}_auc_by_source"] = {s: m.value for s, m in by_source.items()}
        return out

    def to_dict(self) -> dict:
        """Returns: the JSON form written to ``metadata.json`` (``classes`` and ``input`` repeated at the top for readers)."""
        out = {"schema_version": self.schema_version, "name": self.name, "recipe": self.recipe.to_dict(),
               "classes": list(self.classes), "input": self.recipe.input.to_dict(),
               "threshold": self.threshold, "temperature": self.temperature, "date": self.date,
               "git_commit": self.git_commit, "libraries": self.libraries, "intended_use": self.intended_use,
               "limitations": self.limitations, "training": self.training,
               "metrics": {k: v.to_dict() for k, v in self.metrics.items()}}
        for key in ("operating_point", "fingerprint", "members", "selection"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: dict, source: str = "model card") -> "ModelCard":
        """Validate and build a card.

        Args:
            data: the parsed JSON.
            source: where it came from, for error messages.

        Returns:
            The card.

        Raises:
            ChestDxError: one line naming the first problem found.
        """
        try:
            return cls._parse(data)
        except (ValueError, TypeError, KeyError) as exc:
            message = exc.args[0] if exc.args else exc
            raise ChestDxError(f"{source} is not a valid chestdx model card: {message}; "
                               "re-save it with this version of chestdx or retrain the model") from None

    @classmethod
    def _parse(cls, data: dict) -> "ModelCard":
        if not isinstance(data, dict):
            raise ValueError("the file does not hold a JSON object")
        version = int(data.get("schema_version", 1))
        if version > SCHEMA_VERSION:
            raise ValueError(f"schema version {version} is newer than this chestdx reads ({SCHEMA_VERSION}): upgrade chestdx")
        for key in ("name", "recipe"):
            if key not in data:
                raise ValueError(f"'{key}' is missing")
        if not isinstance(data["recipe"], dict) or "name" not in data["recipe"]:
            raise ValueError("'recipe' must be an object with a 'name'")
        recipe = RecipeConfig.from_dict(data["recipe"])
        if "classes" in data and tuple(data["classes"]) != tuple(recipe.classes):
            raise ValueError(f"'classes' {data['classes']} differ from the recipe's {list(recipe.classes)}")
        if len(recipe.classes) < 2:
            raise ValueError(f"a model needs at least two classes, the recipe has {list(recipe.classes)}")
        threshold, temperature = _number(data.get("threshold", 0.5), "threshold"), _number(data.get("temperature", 1.0), "temperature")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold {threshold} is outside 0..1")
        if temperature <= 0:
            raise ValueError(f"temperature {temperature} must be positive")
        metrics = data.get("metrics") or {}
        if not isinstance(metrics, dict):
            raise ValueError("'metrics' must be an object of evaluations")
        limitations = data.get("limitations") or []
        if isinstance(limitations, str) or not all(isinstance(x, str) for x in limitations):
            raise ValueError("'limitations' must be a list of sentences")
        known = {f.name for f in fields(cls)} | {"classes", "input"}
        return cls(
            name=str(data["name"]), recipe=recipe, threshold=threshold, temperature=temperature,
            date=data.get("date"), git_commit=data.get("git_commit"), libraries=dict(data.get("libraries") or {}),
            intended_use=data.get("intended_use") or INTENDED_USE, limitations=list(limitations),
            training=dict(data.get("training") or {}),
            metrics={k: MetricSet.parse(v, f"metrics.{k}") for k, v in metrics.items()},
            operating_point=data.get("operating_point"), fingerprint=data.get("fingerprint"),
            members=data.get("members"), selection=data.get("selection"),
            extra={k: v for k, v in data.items() if k not in known}, schema_version=SCHEMA_VERSION)


def read_card(folder: str | Path) -> ModelCard:
    """Read and validate ``folder/metadata.json``.

    Args:
        folder: a checkpoint folder.

    Returns:
        The card (a version-1 card is migrated in memory).

    Raises:
        ChestDxError: the file is missing, not JSON, or not a valid card.
    """
    path = Path(folder) / CARD_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ChestDxError(f"{path} not found: a model folder holds the weights and their {CARD_FILE}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ChestDxError(f"{path} is not readable JSON ({exc}); restore it from the model's source") from None
    return ModelCard.from_dict(data, str(path))


def write_card(card: ModelCard, folder: str | Path) -> Path:
    """Write ``folder/metadata.json`` (strict JSON; the folder is created).

    Args:
        card: the card.
        folder: the checkpoint folder.

    Returns:
        The file written.
    """
    path = Path(folder) / CARD_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(card.to_dict(), indent=2, allow_nan=False) + "\n")
    return path


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def new_card(config: RecipeConfig, name: str, **entries) -> ModelCard:
    """A card for a freshly trained model: date, commit and library versions filled in.

    Args:
        config: the recipe config.
        name: model name.
        **entries: further `ModelCard` fields (``training``, ``metrics`` as `MetricSet` or
            plain dicts, ``limitations`` ...); unknown names go to ``extra``.

    Returns:
        The card.
    """
    import monai
    import torch

    import chestdx

    known = {f.name for f in fields(ModelCard)}
    metrics = {k: v if isinstance(v, MetricSet) else MetricSet.parse(v, f"metrics.{k}")
               for k, v in (entries.pop("metrics", None) or {}).items()}
    extra = {k: entries.pop(k) for k in list(entries) if k not in known}
    return ModelCard(name=name, recipe=config, metrics=metrics, extra=extra,
                     date=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), git_commit=_git_commit(),
                     libraries={"chestdx": chestdx.__version__, "torch": torch.__version__, "monai": monai.__version__,
                                "python": platform.python_version()}, **entries)
