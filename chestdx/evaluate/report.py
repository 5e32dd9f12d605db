"""Evaluate a model's predictions with patient-bootstrap CIs and write a self-contained HTML report."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial
from html import escape
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_curve

from chestdx.errors import ChestDxError
from chestdx.evaluate import html
from chestdx.evaluate.bootstrap import patient_bootstrap
from chestdx.evaluate.calibration import brier_score, expected_calibration_error, reliability_curve
from chestdx.evaluate.cases import worst_first
from chestdx.evaluate.metrics import binary_metrics, confusion, multiclass_metrics, threshold_sweep
from chestdx.evaluate.serialise import to_json_ready

logger = logging.getLogger(__name__)

LEVELS = ("patient", "study", "slice")
MAX_CURVE_POINTS = 200
HISTOGRAM_BINS = 20
METRIC_LABELS = {"auc": "AUC", "accuracy": "accuracy", "sensitivity": "sensitivity (recall)", "specificity": "specificity",
                 "precision": "precision (PPV)", "npv": "NPV", "f1": "F1", "kappa": "Cohen's kappa"}
MACRO_METRICS = ("auc", "sensitivity", "specificity", "precision", "npv", "f1")


def _check_inputs(y_true, probs, classes, patient_ids) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Validated arrays: labels (n,), probabilities (n, K), patient ids (n,), warnings."""
    y = np.asarray(y_true)
    probs = np.asarray(probs, dtype=float)
    if probs.ndim != 2 or probs.shape[1] != len(classes) or len(classes) < 2:
        raise ChestDxError(
            f"probabilities have shape {probs.shape} but there are {len(classes)} classes {list(classes)}: "
            "give one column per class (binary tasks: two columns, the positive class last)"
        )
    if y.shape != (len(probs),):
        raise ChestDxError(f"{y.size} labels for {len(probs)} prediction rows: give one label per case")
    if len(y) == 0:
        raise ChestDxError("no cases to evaluate: check that the dataset split is not empty")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= len(classes):
        raise ChestDxError(f"labels must be class indices 0..{len(classes) - 1} for classes {list(classes)}")
    if not np.isfinite(probs).all():
        raise ChestDxError("some predicted probabilities are nan or infinite: check the model's output")
    warnings = []
    if patient_ids is None:
        patient_ids = np.arange(len(y))
        warnings.append("no patient ids: confidence intervals treat every case as an independent patient, "
                        "which is too optimistic if several cases come from one patient")
    patient_ids = np.asarray(patient_ids)
    if patient_ids.shape != y.shape:
        raise ChestDxError(f"{patient_ids.size} patient ids for {y.size} cases: give one patient id per case")
    return y.astype(int), probs, patient_ids, warnings


def aggregate_to_patients(ids, probs: np.ndarray, y_true: np.ndarray, how: str = "mean") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Turn slice (or study) rows into one row per patient.

    Args:
        ids: (n,) patient id of each row.
        probs: (n, K) class probabilities.
        y_true: (n,) class index of each row; must be the same for all rows of a patient.
        how: ``"mean"`` (average probabilities) or ``"max"`` (column-wise maximum,
            renormalised to sum to 1).

    Returns:
        ``(patient_ids, patient_probs, patient_labels)``, sorted by patient id.

    Raises:
        ChestDxError: unknown ``how``, or a patient whose rows carry different labels.
    """
    if how not in ("mean", "max"):
        raise ChestDxError(f"aggregation {how!r} is unknown: use 'mean' or 'max'")
    ids = np.asarray(ids)
    probs = np.asarray(probs, dtype=float)
    y_true = np.asarray(y_true, dtype=int)
    patients, inverse = np.unique(ids, return_inverse=True)
    low = np.full(len(patients), np.iinfo(int).max)
    high = np.full(len(patients), np.iinfo(int).min)
    np.minimum.at(low, inverse, y_true)
    np.maximum.at(high, inverse, y_true)
    mixed = patients[low != high]
    if mixed.size:
        raise ChestDxError(
            f"{mixed.size} patient(s) have rows with different labels (e.g. {mixed[:3].tolist()}): "
            "patient-level evaluation needs one label per patient; fix the labels or evaluate at slice level"
        )
    if how == "mean":
        out = np.zeros((len(patients), probs.shape[1]))
        np.add.at(out, inverse, probs)
        out /= np.bincount(inverse)[:, None]
    else:
        out = np.full((len(patients), probs.shape[1]), -np.inf)
        np.maximum.at(out, inverse, probs)
        out /= out.sum(axis=1, keepdims=True)
    return patients, out, low


def _thin(*arrays: np.ndarray, max_points: int = MAX_CURVE_POINTS) -> list[list[float]]:
    """The arrays sub-sampled to at most ``max_points`` evenly spaced points (ends kept)."""
    n = len(arrays[0])
    keep = np.unique(np.round(np.linspace(0, n - 1, min(n, max_points))).astype(int))
    return [np.asarray(a, dtype=float)[keep].tolist() for a in arrays]


def _curves(y: np.ndarray, probs: np.ndarray, classes: Sequence[str], columns: Sequence[int]) -> dict:
    """ROC and precision-recall points per class (one-vs-rest), and a macro-average ROC."""
    roc, pr = {}, {}
    for k in columns:
        positive = y == k
        if positive.all() or not positive.any():
            continue
        fpr, tpr, _ = roc_curve(positive, probs[:, k])
        precision, recall, _ = precision_recall_curve(positive, probs[:, k])
        fpr_t, tpr_t = _thin(fpr, tpr)
        recall_t, precision_t = _thin(recall[::-1], precision[::-1])
        roc[classes[k]] = {"fpr": fpr_t, "tpr": tpr_t}
        pr[classes[k]] = {"recall": recall_t, "precision": precision_t,
                          "average_precision": float(average_precision_score(positive, probs[:, k])),
                          "prevalence": float(positive.mean())}
    if len(columns) > 1 and roc:
        grid = np.linspace(0.0, 1.0, 101)
        tpr = np.mean([np.interp(grid, c["fpr"], c["tpr"]) for c in roc.values()], axis=0)
        roc["macro"] = {"fpr": grid.tolist(), "tpr": tpr.tolist()}
    return {"roc": roc, "pr": pr}


def _histograms(y: np.ndarray, probs: np.ndarray, classes: Sequence[str], columns: Sequence[int]) -> dict:
    """Counts of each score column in equal bins on [0, 1], split by true class."""
    edges = np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1)
    by_score = {
        classes[k]: {classes[c]: np.histogram(probs[y == c, k], bins=edges)[0].tolist() for c in range(len(classes))}
        for k in columns
    }
    return {"bin_edges": edges.tolist(), "by_score": by_score}


def evaluate_predictions(
    y_true: np.ndarray,
    probs: np.ndarray,
    classes: Sequence[str],
    patient_ids,
    threshold: float | None = None,
    level: str = "patient",
    n_resamples: int = 2000,
    seed: int = 0,
) -> dict:
    """All metrics of one set of predictions, with 95% CIs from a patient bootstrap.

    Binary tasks (two classes): the positive class is the last one and its probability
    ``probs[:, -1]`` is the score; a case is positive when the score reaches
    ``threshold`` (0.5 when None). Multi-class tasks: the decision is the argmax, and
    per-class metrics are one-vs-rest.

    Args:
        y_true: (n,) class indices.
        probs: (n, K) class probabilities, columns in the order of ``classes``.
        classes: K class names.
        patient_ids: (n,) patient id of each case, used to resample patients; None
            treats every case as its own patient (and says so in ``warnings``).
        threshold: decision threshold (binary tasks only).
        level: what a case is: ``"patient"``, ``"study"`` or ``"slice"``.
        n_resamples: bootstrap resamples.
        seed: bootstrap seed.

    Returns:
        A JSON-ready dict (nan written as None) with ``n_cases``, ``n_patients``,
        ``level``, ``task``, ``classes``, ``class_counts``, ``threshold``, ``metrics``
        (name -> ``{value, ci_low, ci_high, n_valid}``), ``confusion_matrix``
        (``{counts, normalised}``, rows true, columns predicted), ``threshold_sweep``
        (class -> rows), ``calibration`` (``{kind, ece, brier, curve}``), ``curves``
        (``{roc, pr}``, class -> points), ``score_histograms``, ``bootstrap`` and
        ``warnings``.

    Raises:
        ChestDxError: inconsistent shapes, bad labels, unknown level, or a threshold
            given for a multi-class task.
    """
    if level not in LEVELS:
        raise ChestDxError(f"level {level!r} is unknown: use one of {', '.join(LEVELS)}")
    classes = [str(c) for c in classes]
    y, probs, patient_ids, warnings = _check_inputs(y_true, probs, classes, patient_ids)
    n_classes = len(classes)
    if n_classes == 2:
        threshold = 0.5 if threshold is None else float(threshold)
        score = probs[:, -1]
        metric_fn, data = partial(binary_metrics, threshold=threshold), score
        predicted = (score >= threshold).astype(int)
        columns = [1]
        calibration = {"kind": f"probability of {classes[-1]}", "ece": expected_calibration_error(y, score),
                       "brier": brier_score(y, score), "curve": reliability_curve(y, score)}
    else:
        if threshold is not None:
            raise ChestDxError("a threshold applies to binary tasks only; multi-class decisions use the most probable class")
        metric_fn, data = partial(multiclass_metrics, classes=classes), probs
        predicted = probs.argmax(axis=1)
        columns = list(range(n_classes))
        calibration = {"kind": "top-label confidence", "ece": expected_calibration_error(y, probs),
                       "brier": brier_score(y, probs), "curve": reliability_curve(y, probs)}
    missing = [classes[k] for k in range(n_classes) if not np.any(y == k)]
    if missing:
        warnings.append(f"no case of class(es) {missing}: metrics that need them are undefined (n/a)")
    counts, normalised = confusion(y, predicted, n_classes)
    result = {
        "n_cases": int(len(y)),
        "n_patients": int(len(np.unique(patient_ids))),
        "level": level,
        "task": "binary" if n_classes == 2 else "multiclass",
        "classes": classes,
        "class_counts": {c: int(np.sum(y == k)) for k, c in enumerate(classes)},
        "threshold": threshold,
        "metrics": patient_bootstrap(metric_fn, y, data, patient_ids, n_resamples=n_resamples, seed=seed),
        "confusion_matrix": {"counts": counts, "normalised": normalised},
        "threshold_sweep": {classes[k]: threshold_sweep(y == k, probs[:, k]) for k in columns},
        "calibration": calibration,
        "curves": _curves(y, probs, classes, columns),
        "score_histograms": _histograms(y, probs, classes, columns),
        "bootstrap": {"unit": "patient", "n_resamples": n_resamples, "seed": seed, "ci_level": 0.95},
        "warnings": warnings,
    }
    for message in warnings:
        logger.warning(message)
    return to_json_ready(result)


# ----------------------------------------------------------------------------- plots


def _legend(ax, **kwargs) -> None:
    """A small legend, only when something is labelled (a class absent from the data draws no curve)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, **kwargs)


def _title(result: dict) -> str:
    """Column title: the level with its case and patient counts."""
    return f"{result['level']} level: {result['n_cases']} cases, {result['n_patients']} patients"


def _auc_label(result: dict, cls: str) -> str:
    """Legend text of a class's ROC curve with its AUC and CI."""
    name = "auc" if result["task"] == "binary" else f"auc[{cls}]"
    entry = result["metrics"].get(name)
    return f"{cls} (AUC {html.fmt_ci(entry).replace('&ndash;', '-')})" if entry else cls


def _roc_figure(result: dict) -> Figure:
    """ROC curves per class (and macro), with the binary operating point marked."""
    fig = Figure(figsize=(5, 4.4))
    ax = fig.subplots()
    for cls, points in result["curves"]["roc"].items():
        style = {"linestyle": "--", "color": "0.3"} if cls == "macro" else {}
        ax.plot(points["fpr"], points["tpr"], label="macro average" if cls == "macro" else _auc_label(result, cls), **style)
    if result["task"] == "binary":
        sens, spec = result["metrics"]["sensitivity"]["value"], result["metrics"]["specificity"]["value"]
        if sens is not None and spec is not None:
            ax.plot([1 - spec], [sens], "o", color="crimson", label=f"threshold {result['threshold']:g}")
    ax.plot([0, 1], [0, 1], ":", color="0.6", linewidth=1)
    ax.set(xlabel="1 - specificity (false positive rate)", ylabel="sensitivity (true positive rate)",
           xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), title=f"ROC, {result['level']} level")
    _legend(ax, loc="lower right")
    return fig


def _pr_figure(result: dict) -> Figure:
    """Precision-recall curves per class, with the prevalence (chance) line."""
    fig = Figure(figsize=(5, 4.4))
    ax = fig.subplots()
    for cls, points in result["curves"]["pr"].items():
        line = ax.plot(points["recall"], points["precision"], label=f"{cls} (AP {points['average_precision']:.3f})")
        ax.axhline(points["prevalence"], linestyle=":", linewidth=1, color=line[0].get_color())
    ax.set(xlabel="recall (sensitivity)", ylabel="precision (PPV)", xlim=(-0.01, 1.01), ylim=(-0.01, 1.01),
           title=f"Precision-recall, {result['level']} level")
    _legend(ax, loc="lower left")
    return fig


def _calibration_figure(result: dict) -> Figure:
    """Reliability diagram above a histogram of how many cases fall in each bin."""
    calibration = result["calibration"]
    curve = calibration["curve"]
    fig = Figure(figsize=(5, 5))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], ":", color="0.6", label="perfect calibration")
    top.plot(curve["prob_pred"], curve["prob_true"], "o-", label="model")
    top.set(ylabel="observed frequency", xlim=(0, 1), ylim=(-0.01, 1.01),
            title=f"Reliability, {result['level']} level ({calibration['kind']})")
    _legend(top, loc="upper left")
    bottom.bar(curve["prob_pred"], curve["count"], width=0.06, color="0.5")
    bottom.set(xlabel="predicted probability", ylabel="cases")
    return fig


def _histogram_figure(result: dict) -> Figure:
    """Score histograms per true class, one panel per score column."""
    hist = result["score_histograms"]
    edges = np.asarray(hist["bin_edges"])
    panels = list(hist["by_score"].items())
    fig = Figure(figsize=(4.6 * len(panels), 3.4))
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (score_cls, by_true) in zip(axes, panels, strict=True):
        for true_cls, counts in by_true.items():
            ax.stairs(counts, edges, label=f"true {true_cls}", linewidth=1.6)
        if result["task"] == "binary":
            ax.axvline(result["threshold"], color="crimson", linestyle="--", linewidth=1, label="threshold")
        ax.set(xlabel=f"predicted probability of {score_cls}", ylabel="cases", xlim=(0, 1))
        _legend(ax)
    fig.suptitle(f"Score distributions, {result['level']} level")
    return fig


# ----------------------------------------------------------------------------- HTML sections


def _dataset_section(results: list[dict], dataset_summary: dict | None) -> str:
    """Cases, patients and class balance per level, and the caller's dataset description."""
    classes = results[0]["classes"]
    rows = []
    for r in results:
        balance = [f"{r['class_counts'].get(c, 0)} ({100 * r['class_counts'].get(c, 0) / r['n_cases']:.0f}%)" for c in classes]
        rows.append([escape(r["level"]), str(r["n_cases"]), str(r["n_patients"]), *balance])
    body = html.table(["level", "cases", "patients", *map(escape, classes)], rows)
    if dataset_summary:
        body += html.mapping_table(dataset_summary)
    warnings = [w for r in results for w in r.get("warnings", [])]
    if warnings:
        body += "<ul>" + "".join(f"<li>{escape(w)}</li>" for w in dict.fromkeys(warnings)) + "</ul>"
    return body


def _metric_label(name: str, task: str) -> str:
    """Readable name of a metric key; macro averages are marked in multi-class tasks."""
    base = METRIC_LABELS.get(name, name)
    return f"{base} (macro average)" if task == "multiclass" and name in MACRO_METRICS else base


def _metrics_section(results: list[dict]) -> str:
    """Overall metrics (one row per metric, one column per level) and per-class tables."""
    task = results[0]["task"]
    names = list(dict.fromkeys(name for r in results for name in r["metrics"] if "[" not in name))
    rows = [[escape(_metric_label(name, task)), *(html.fmt_ci(r["metrics"].get(name)) for r in results)] for name in names]
    body = html.table(["metric", *(escape(_title(r)) for r in results)], rows)
    if task == "multiclass":
        blocks = []
        for r in results:
            class_rows = [[escape(METRIC_LABELS[m]), *(html.fmt_ci(r["metrics"].get(f"{m}[{c}]")) for c in r["classes"])]
                          for m in MACRO_METRICS]
            blocks.append(f"<h3>Per class, one vs rest: {escape(_title(r))}</h3>"
                          + html.table(["metric", *map(escape, r["classes"])], class_rows))
        body += html.columns(blocks)
    for r in results:
        b = r["bootstrap"]
        decision = f"positive when p({escape(r['classes'][-1])}) &ge; {r['threshold']:g}" if r["threshold"] is not None else "most probable class"
        body += (f'<p class="muted">{escape(r["level"])} level: decision = {decision}; 95% CI from {b["n_resamples"]} '
                 f"bootstrap resamples of {b['unit']}s (seed {b['seed']}); n/a = undefined on these data.</p>")
    return body


def _confusion_block(result: dict) -> str:
    """Confusion matrix as a table: counts and row percentages, shaded by row fraction."""
    classes = result["classes"]
    counts, normalised = result["confusion_matrix"]["counts"], result["confusion_matrix"]["normalised"]
    rows = []
    for i, cls in enumerate(classes):
        cells = []
        for j in range(len(classes)):
            shade = int(255 - 150 * normalised[i][j])
            cells.append(f'<span style="display:block;background:rgb({shade},{shade},255)">'
                         f"{counts[i][j]}<br><small>{100 * normalised[i][j]:.0f}%</small></span>")
        rows.append([f"true {escape(cls)}", *cells])
    header = [escape(_title(result)), *(f"predicted {escape(c)}" for c in classes)]
    return html.table(header, rows, css_class="cm")


def _threshold_block(result: dict) -> str:
    """Threshold sweep table(s) of one result."""
    tables = []
    for cls, sweep in result["threshold_sweep"].items():
        rows = [[html.fmt(row["threshold"], 1), *(html.fmt(row[k]) for k in ("sensitivity", "specificity", "precision", "f1"))]
                for row in sweep]
        others = " or ".join(c for c in result["classes"] if c != cls)
        tables.append(f"<div><p>{escape(cls)} vs {escape(others)}: positive when p({escape(cls)}) &ge; threshold</p>"
                      + html.table(["threshold", "sensitivity", "specificity", "precision", "F1"], rows) + "</div>")
    return f"<h3>{escape(_title(result))}</h3>" + f'<div class="flow">{"".join(tables)}</div>'


def _cases_section(rows: list[dict]) -> str:
    """The per-case table, worst errors first; a click on a column title sorts by it."""
    header = [k for k in rows[0] if k != "source" or any(r["source"] for r in rows)]
    cells = [[escape(html.fmt(r[k]) if isinstance(r[k], float) else str(r[k])) for k in header] for r in worst_first(rows)]
    note = ('<p class="muted">study level; error = 1 &minus; the probability of the true class. '
            "Click a column title to sort by it.</p>")
    return note + html.table(list(map(escape, header)), cells, left_columns=3, css_class="sortable")


def write_html_report(
    results: dict | list[dict],
    path: str | Path,
    model_card: dict | None = None,
    dataset_summary: dict | None = None,
    cases: list[dict] | None = None,
) -> Path:
    """Write one self-contained HTML report (plots embedded as PNG, no network needed).

    Sections (each with a stable ``id``): ``dataset``, ``metrics``, ``confusion``,
    ``roc``, ``pr``, ``calibration``, ``histograms``, ``thresholds``, ``cases`` (when
    given), ``model-card``;
    a research-use-only notice sits at the top and the bottom.

    Args:
        results: one :func:`evaluate_predictions` result, or several (e.g. slice and
            patient level) shown side by side.
        path: output file.
        model_card: the model card to show (classes, input spec, training data, ...).
        dataset_summary: free-form description of the data (name, split, source, ...).
        cases: per-case rows (`chestdx.evaluate.cases.case_rows`), shown as a sortable
            table (section ``cases``) with the worst errors first; None leaves it out.

    Returns:
        The path written.
    """
    results = [results] if isinstance(results, dict) else list(results)
    if not results:
        raise ChestDxError("no evaluation results to report: pass the dict returned by evaluate_predictions")

    def plots(make, alt: str) -> str:
        return html.columns([html.image(make(r), f"{alt}, {r['level']} level") for r in results])

    calibration_notes = html.table(
        ["level", "ECE", "Brier score", "calibrated quantity"],
        [[escape(r["level"]), html.fmt(r["calibration"]["ece"]), html.fmt(r["calibration"]["brier"]),
          escape(r["calibration"]["kind"])] for r in results])
    sections = [
        ("dataset", "Dataset", _dataset_section(results, dataset_summary)),
        ("metrics", "Metrics with 95% confidence intervals", _metrics_section(results)),
        ("confusion", "Confusion matrix", html.columns([_confusion_block(r) for r in results])),
        ("roc", "ROC curves", plots(_roc_figure, "ROC curve")),
        ("pr", "Precision-recall curves", plots(_pr_figure, "Precision-recall curve")),
        ("calibration", "Calibration", calibration_notes + plots(_calibration_figure, "Reliability diagram")),
        ("histograms", "Score histograms by true class", plots(_histogram_figure, "Score histograms")),
        ("thresholds", "Threshold sweep", html.columns([_threshold_block(r) for r in results])),
        *([("cases", "Cases, worst errors first", _cases_section(cases))] if cases else []),
        ("model-card", "Model card", html.mapping_table(model_card) if model_card else "<p>No model card was given.</p>"),
    ]
    path = Path(path)
    path.write_text(html.page("chestdx evaluation report", sections), encoding="utf-8")
    return path
