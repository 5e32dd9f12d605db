"""The shared label space of chestdx, the synonyms dataset adapters emit, and how a label maps onto a model's classes.

Shared labels: ``normal``, ``other-pneumonia``, ``covid-19``, ``other-disease``. A binary
COVID-19 model names its negative class ``non-covid``: every label other than COVID-19
falls into it.
"""

from __future__ import annotations

from collections.abc import Sequence

from chestdx.errors import ChestDxError

LABELS = ("normal", "other-pneumonia", "covid-19", "other-disease")
"""The shared label space, in the order a multi-class model lists them."""
POSITIVE = "covid-19"
"""The positive class of a binary model (its last class)."""
NEGATIVE = "non-covid"
"""The negative class of a binary COVID-19 model: any label other than COVID-19."""
SYNONYMS = {
    "covid": "covid-19", "covid19": "covid-19", "ncp": "covid-19",
    "pneumonia": "other-pneumonia", "cp": "other-pneumonia", "cap": "other-pneumonia",
    "non-covid-pneumonia": "other-pneumonia",
    "disease": "other-disease",
    "healthy": "normal", "no-finding": "normal",
    "noncovid": NEGATIVE, "non-covid-19": NEGATIVE, "non-covid19": NEGATIVE,
}
"""Labels emitted by the dataset adapters (and common spellings), mapped onto the shared labels."""


def canonical_label(label: str) -> str:
    """The shared name of a label: ``"covid"`` -> ``"covid-19"``, ``"pneumonia"`` -> ``"other-pneumonia"``.

    Args:
        label: a dataset record's label or a model's class name (case and spaces ignored).

    Returns:
        The shared label, ``"non-covid"`` for the negative class of a binary model, or the
        cleaned label itself when it is not known.
    """
    key = "-".join(label.strip().lower().replace("_", " ").split())
    if key in LABELS or key == NEGATIVE:
        return key
    return SYNONYMS.get(key, key)


def class_index(label: str, classes: Sequence[str]) -> int:
    """The index of the model class a dataset label belongs to.

    Rules, in order: the exact class name; the same shared label (``"covid"`` is
    ``"covid-19"``); a model with a ``non-covid`` class takes every label other than
    COVID-19 as that class.

    Args:
        label: a dataset record's label.
        classes: the model's class names in logit order.

    Returns:
        The class index.

    Raises:
        ChestDxError: the label maps onto none of the classes; the message names the
            label, the classes and the ``--classes`` override.

    Example:
        >>> class_index("pneumonia", ("non-covid", "covid"))
        0
    """
    classes = list(classes)
    if label in classes:
        return classes.index(label)
    shared = canonical_label(label)
    shared_classes = [canonical_label(c) for c in classes]
    if shared in shared_classes:
        return shared_classes.index(shared)
    if NEGATIVE in shared_classes and shared != POSITIVE:
        return shared_classes.index(NEGATIVE)
    raise ChestDxError(
        f"label {label!r} maps onto none of the model's classes {classes}: pass --classes NAME,NAME,... to say what "
        f"the model's classes are in logit order (e.g. --classes {NEGATIVE},{POSITIVE} for a binary COVID-19 model), "
        f"using the shared labels {', '.join(LABELS)}")


def label_indices(labels: Sequence[str], classes: Sequence[str]) -> list[int]:
    """`class_index` of every label, checked before any study is read.

    Args:
        labels: the records' labels.
        classes: the model's class names in logit order.

    Returns:
        One class index per label.
    """
    indices = {label: class_index(label, classes) for label in dict.fromkeys(labels)}
    return [indices[label] for label in labels]


def order_positive_last(classes: Sequence[str], positive: str) -> tuple[str, ...]:
    """Move the positive class to the end (the class a binary model's threshold applies to).

    Args:
        classes: class names.
        positive: the positive class, by name or shared label (``"covid-19"`` finds ``"covid"``).

    Returns:
        The classes with the positive one last, the others in their order.

    Raises:
        ChestDxError: no class is the positive one.
    """
    shared = canonical_label(positive)
    matches = [c for c in classes if c == positive or canonical_label(c) == shared]
    if not matches:
        raise ChestDxError(f"--positive {positive!r} is none of the classes {list(classes)}: "
                           "name one of them (or its shared label, e.g. covid-19)")
    return tuple(c for c in classes if c != matches[0]) + (matches[0],)
