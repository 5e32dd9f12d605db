"""Reader studies: radiologists with and without AI help, compared with a paired bootstrap.

File formats (CSV, UTF-8, header row; header names are case-insensitive and ``yes/no``
is accepted for ``yes_no``):

* truth CSV: ``case, class`` and optionally ``patient_id`` (cases of one patient are
  resampled together; without it every case is its own patient).
* reads CSV: one row per reader, case, question and condition, with columns
  ``reader`` (name), ``case`` (as in the truth file), ``class`` (the class asked about,
  e.g. ``COVID-19``), ``yes_no`` (did the reader call the case that class: ``yes``/``no``
  or ``1``/``0``) and ``aided`` (was the AI output shown: ``yes``/``no`` or ``1``/``0``).
* model scores CSV (optional): ``case, score``, the model's probability of the
  positive class.

The bootstrap resamples patients (readers are fixed), and the aided-minus-unaided
difference is computed on the same resampled cases for both conditions (paired).
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from dataclasses import dataclass
from html import escape
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from chestdx.errors import ChestDxError
from chestdx.evaluate import html
from chestdx.evaluate.bootstrap import patient_bootstrap
from chestdx.evaluate.metrics import auc_score, metrics_from_counts
from chestdx.evaluate.serialise import to_json_ready

READ_METRICS = ("sensitivity", "specificity", "f1", "kappa")
CONDITIONS = ("unaided", "aided")
_YES = {"yes", "y", "1", "true"}
_NO = {"no", "n", "0", "false"}


@dataclass
class Truth:
    """Reference standard: the true class (and patient) of each case."""

    cases: np.ndarray
    classes: np.ndarray
    patient_ids: np.ndarray


@dataclass
class Reads:
    """Readers' answers: one entry per reader, case, class asked about and condition."""

    reader: np.ndarray
    case: np.ndarray
    cls: np.ndarray
    called: np.ndarray
    aided: np.ndarray


def _read_csv(path: str | Path, required: tuple[str, ...], what: str) -> list[dict[str, str]]:
    """Rows of a CSV as dicts with normalised header names, checking required columns."""
    path = Path(path)
    if not path.is_file():
        raise ChestDxError(f"{what} file {path} does not exist: give the path of a CSV file")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = [re.sub(r"[\s/\-]+", "_", h.strip().lower()) for h in next(reader, [])]
        rows = [dict(zip(header, (v.strip() for v in row), strict=False)) for row in reader if any(v.strip() for v in row)]
    for column in required:
        if column not in header:
            raise ChestDxError(
                f"{what} file {path} has no column '{column}' (found: {', '.join(header) or 'nothing'}): "
                f"the {what} CSV needs a header row with columns {', '.join(required)}"
            )
    if not rows:
        raise ChestDxError(f"{what} file {path} has a header but no rows: add one row per {what} entry")
    return rows


def _yes_no(value: str, column: str, path: str | Path, line: int) -> int:
    """1 for yes/1/true, 0 for no/0/false; a ChestDxError naming the cell otherwise."""
    text = value.strip().lower()
    if text in _YES:
        return 1
    if text in _NO:
        return 0
    raise ChestDxError(f"{path}, line {line}: column '{column}' holds {value!r}: write yes or no (or 1 or 0)")


def load_reads(truth_csv: str | Path, reads_csv: str | Path) -> tuple[Truth, Reads]:
    """Read and check a reader study's truth and reads files (formats in the module docstring).

    Args:
        truth_csv: CSV with ``case, class`` (+ optional ``patient_id``).
        reads_csv: CSV with ``reader, case, class, yes_no, aided``.

    Returns:
        ``(truth, reads)``.

    Raises:
        ChestDxError: a missing column, a duplicated case or read, a yes/no cell that is
            neither, or reads of cases the truth file does not list.
    """
    truth_rows = _read_csv(truth_csv, ("case", "class"), "truth")
    cases = np.array([r["case"] for r in truth_rows])
    unique, counts = np.unique(cases, return_counts=True)
    if (counts > 1).any():
        raise ChestDxError(f"truth file {truth_csv} lists case(s) {unique[counts > 1][:5].tolist()} more than once: keep one row per case")
    truth = Truth(
        cases=cases,
        classes=np.array([r["class"] for r in truth_rows]),
        patient_ids=np.array([r.get("patient_id") or r["case"] for r in truth_rows]),
    )
    read_rows = _read_csv(reads_csv, ("reader", "case", "class", "yes_no", "aided"), "reads")
    reads = Reads(
        reader=np.array([r["reader"] for r in read_rows]),
        case=np.array([r["case"] for r in read_rows]),
        cls=np.array([r["class"] for r in read_rows]),
        called=np.array([_yes_no(r["yes_no"], "yes_no", reads_csv, i + 2) for i, r in enumerate(read_rows)]),
        aided=np.array([_yes_no(r["aided"], "aided", reads_csv, i + 2) for i, r in enumerate(read_rows)], dtype=bool),
    )
    unknown = np.setdiff1d(reads.case, truth.cases)
    if unknown.size:
        raise ChestDxError(
            f"reads file {reads_csv} has {unknown.size} case(s) missing from the truth file {truth_csv} "
            f"(e.g. {unknown[:5].tolist()}): add them to the truth file or fix the case names"
        )
    keys = Counter(zip(reads.reader.tolist(), reads.case.tolist(), reads.cls.tolist(), reads.aided.tolist(), strict=True))
    repeated = [key for key, count in keys.items() if count > 1]
    if repeated:
        reader, case, cls, aided = repeated[0]
        raise ChestDxError(f"reads file {reads_csv} has reader {reader!r} answering case {case!r} ({cls}, "
                           f"{'aided' if aided else 'unaided'}) twice: keep one row per reader, case, class and aided yes/no")
    return truth, reads


def load_model_scores(scores_csv: str | Path) -> dict[str, float]:
    """Read a ``case, score`` CSV of the model's positive-class probabilities.

    Args:
        scores_csv: the CSV path.

    Returns:
        Mapping case -> score.
    """
    scores = {}
    for i, row in enumerate(_read_csv(scores_csv, ("case", "score"), "model scores")):
        try:
            scores[row["case"]] = float(row["score"])
        except ValueError:
            raise ChestDxError(f"{scores_csv}, line {i + 2}: score {row['score']!r} is not a number") from None
    return scores


def _choose_positive_class(reads: Reads, positive_class: str | None) -> str:
    """The class the study asks about: given, or the only one in the reads."""
    asked = sorted(set(reads.cls.tolist()))
    if positive_class is None:
        if len(asked) != 1:
            raise ChestDxError(f"the reads ask about several classes {asked}: choose one with positive_class")
        return asked[0]
    if positive_class not in asked:
        raise ChestDxError(f"no read asks about class {positive_class!r} (the reads ask about {asked}): choose one of these")
    return positive_class


def _call_matrix(truth: Truth, reads: Reads, readers: list[str]) -> np.ndarray:
    """(readers x conditions, cases) array of calls: 1 yes, 0 no, -1 not read."""
    case_index = {c: i for i, c in enumerate(truth.cases)}
    calls = np.full((len(readers) * len(CONDITIONS), len(truth.cases)), -1)
    reader_index = {r: i for i, r in enumerate(readers)}
    rows = np.array([reader_index[r] * 2 + int(a) for r, a in zip(reads.reader, reads.aided, strict=True)])
    calls[rows, [case_index[c] for c in reads.case]] = reads.called
    return calls


def _study_metrics(y: np.ndarray, case_rows: np.ndarray, calls: np.ndarray, readers: list[str],
                   averaged: np.ndarray, scores: np.ndarray | None) -> dict[tuple, float]:
    """Every reader's and the average reader's metrics per condition, their differences, and the model AUC.

    ``averaged`` is a boolean mask of the readers that make up the average reader.
    """
    sub = calls[:, case_rows]
    read, yes, positive = sub >= 0, sub == 1, (y == 1)[None, :]
    counts = [np.sum(read & yes & positive, 1), np.sum(read & yes & ~positive, 1),
              np.sum(read & ~yes & positive, 1), np.sum(read & ~yes & ~positive, 1)]
    metrics = metrics_from_counts(*counts)
    out = {}
    for name in READ_METRICS:
        values = metrics[name].reshape(len(readers), len(CONDITIONS))
        for i, reader in enumerate(readers):
            for j, condition in enumerate(CONDITIONS):
                out[(reader, condition, name)] = values[i, j]
            out[(reader, "difference", name)] = values[i, 1] - values[i, 0]
        for j, condition in enumerate(CONDITIONS):
            out[("average reader", condition, name)] = float(np.mean(values[averaged, j]))
        out[("average reader", "difference", name)] = float(np.mean(values[averaged, 1] - values[averaged, 0]))
    if scores is not None:
        out[("model", "auc")] = auc_score(y, scores[case_rows])
    return out


def reader_study(
    truth: Truth,
    reads: Reads,
    model_scores: dict[str, float] | None = None,
    positive_class: str | None = None,
    n_resamples: int = 2000,
    seed: int = 0,
) -> dict:
    """Each reader's accuracy against the truth, unaided and AI-aided, with bootstrap CIs.

    Args:
        truth: from :func:`load_reads`.
        reads: from :func:`load_reads`.
        model_scores: optional mapping case -> model probability of ``positive_class``;
            every truth case needs a score.
        positive_class: the class whose detection is studied; None when the reads ask
            about one class only.
        n_resamples: bootstrap resamples (of patients; readers are fixed).
        seed: bootstrap seed.

    Returns:
        A JSON-ready dict: ``positive_class``, ``n_cases``, ``n_patients``, ``n_readers``,
        ``n_reads``; ``readers`` and ``average_reader``, each ``{unaided, aided,
        difference}`` of metric -> ``{value, ci_low, ci_high, n_valid}`` (difference =
        aided - unaided, paired bootstrap); ``n_cases_read`` per reader and condition;
        ``model`` (``{auc, roc}``) or None; ``case_truth`` (case -> 1 positive / 0
        negative); ``bootstrap``; ``warnings``.
    """
    positive_class = _choose_positive_class(reads, positive_class)
    keep = reads.cls == positive_class
    reads = Reads(reads.reader[keep], reads.case[keep], reads.cls[keep], reads.called[keep], reads.aided[keep])
    readers = list(dict.fromkeys(reads.reader.tolist()))
    y = (truth.classes == positive_class).astype(int)
    calls = _call_matrix(truth, reads, readers)
    scores = None
    if model_scores is not None:
        missing = [c for c in truth.cases if c not in model_scores]
        if missing:
            raise ChestDxError(f"the model scores lack {len(missing)} truth case(s) (e.g. {missing[:5]}): score every case")
        scores = np.array([model_scores[c] for c in truth.cases], dtype=float)
    warnings = []
    if y.all() or not y.any():
        warnings.append(f"the truth holds {'only' if y.all() else 'no'} {positive_class} cases: sensitivity or specificity is undefined")
    n_read = (calls >= 0).sum(axis=1).reshape(len(readers), len(CONDITIONS))
    for reader, (unaided, aided) in zip(readers, n_read, strict=True):
        if unaided == 0 or aided == 0:
            warnings.append(f"reader {reader} has no {'unaided' if unaided == 0 else 'aided'} reads: no difference "
                            "can be computed, and the reader is left out of the average reader")
    averaged = (n_read > 0).all(axis=1)
    if not averaged.any():
        averaged[:] = True

    def metric_fn(y_rows: np.ndarray, case_rows: np.ndarray) -> dict:
        return _study_metrics(y_rows, case_rows, calls, readers, averaged, scores)

    boot = patient_bootstrap(metric_fn, y, np.arange(len(y)), truth.patient_ids, n_resamples=n_resamples, seed=seed)

    def block(name: str) -> dict:
        return {part: {m: boot[(name, part, m)] for m in READ_METRICS} for part in (*CONDITIONS, "difference")}

    model = None
    if scores is not None:
        model = {"auc": boot[("model", "auc")], "roc": _roc_points(y, scores)}
    result = {
        "positive_class": positive_class,
        "n_cases": int(len(y)),
        "n_positive": int(y.sum()),
        "n_patients": int(len(np.unique(truth.patient_ids))),
        "n_readers": len(readers),
        "n_reads": int(keep.sum()),
        "readers": {r: block(r) | {"n_cases_read": dict(zip(CONDITIONS, n_read[i].tolist(), strict=True))}
                    for i, r in enumerate(readers)},
        "average_reader": block("average reader"),
        "model": model,
        "case_truth": dict(zip(truth.cases.tolist(), y.tolist(), strict=True)),
        "bootstrap": {"unit": "patient", "n_resamples": n_resamples, "seed": seed, "ci_level": 0.95, "paired": True},
        "warnings": warnings,
    }
    return to_json_ready(result)


def _roc_points(y: np.ndarray, scores: np.ndarray) -> dict | None:
    """ROC curve points of the model (None when a class is absent)."""
    if y.all() or not y.any():
        return None
    fpr, tpr, _ = roc_curve(y, scores)
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist()}


def _reader_figure(result: dict, roc: dict | None) -> Figure:
    """Readers as points in ROC space, hollow unaided and filled aided, on the model's ROC curve."""
    fig = Figure(figsize=(6.4, 5.6))
    ax = fig.subplots()
    if roc:
        auc = result["model"]["auc"] if result.get("model") else None
        ax.plot(roc["fpr"], roc["tpr"], color="0.25", label=f"model (AUC {html.fmt_ci(auc).replace('&ndash;', '-')})" if auc else "model")
    ax.plot([0, 1], [0, 1], ":", color="0.6", linewidth=1)
    for i, (name, entry) in enumerate([*result["readers"].items(), ("average reader", result["average_reader"])]):
        colour = "black" if name == "average reader" else f"C{i % 10}"
        marker = "D" if name == "average reader" else "o"
        points = {}
        for condition in CONDITIONS:
            sens, spec = entry[condition]["sensitivity"]["value"], entry[condition]["specificity"]["value"]
            if sens is not None and spec is not None:
                points[condition] = (1 - spec, sens)
        if "unaided" in points:
            ax.plot(*points["unaided"], marker, markersize=9, markerfacecolor="white", markeredgecolor=colour, markeredgewidth=2)
        if "aided" in points:
            ax.plot(*points["aided"], marker, markersize=9, color=colour)
        if len(points) == 2:
            ax.annotate("", xy=points["aided"], xytext=points["unaided"],
                        arrowprops={"arrowstyle": "->", "color": colour, "linewidth": 1})
        ax.plot([], [], marker, color=colour, label=name)
    ax.plot([], [], "o", markerfacecolor="white", markeredgecolor="0.3", markeredgewidth=2, label="unaided (hollow)")
    ax.plot([], [], "o", color="0.3", label="AI-aided (filled)")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(-0.02, 1.02), ylim=(-0.02, 1.02),
           title=f"Readers and model: {result['positive_class']}")
    ax.legend(loc="lower right", fontsize=8)
    return fig


def _excludes_zero(entry: dict) -> bool:
    """Whether a ``{value, ci_low, ci_high}`` interval lies entirely above or below 0."""
    low, high = entry.get("ci_low"), entry.get("ci_high")
    return low is not None and high is not None and (low > 0 or high < 0)


def _reader_table(result: dict) -> str:
    """One row per reader and condition (and difference): metrics with 95% CIs."""
    rows = []
    for name, entry in [*result["readers"].items(), ("average reader", result["average_reader"])]:
        read = entry.get("n_cases_read", {})
        for part in (*CONDITIONS, "difference"):
            label = "aided - unaided" if part == "difference" else part
            count = str(read.get(part, ""))
            cells = [html.fmt_ci(entry[part][m]) for m in READ_METRICS]
            if part == "difference":  # bold where the paired interval excludes 0
                cells = [f"<b>{c}</b>" if _excludes_zero(entry[part][m]) else c for c, m in zip(cells, READ_METRICS, strict=True)]
            rows.append([escape(name), label, count, *cells])
    header = ["reader", "condition", "cases read", "sensitivity", "specificity", "F1", "Cohen's kappa"]
    note = '<p class="muted">Bold: the paired 95% interval of the difference excludes 0.</p>'
    return html.table(header, rows, left_columns=2) + note


def write_reader_study_report(result: dict, path: str | Path, model_scores: dict[str, float] | None = None) -> Path:
    """Write a self-contained HTML reader-study report.

    Sections (stable ids): ``summary``, ``readers`` (table with CIs and paired
    differences), ``roc`` (readers on the model's ROC curve, hollow unaided, filled
    aided) and ``methods``.

    Args:
        result: from :func:`reader_study`.
        path: output file.
        model_scores: case -> score, to draw the model's ROC curve when the result was
            computed without scores (the result's ``case_truth`` gives the labels).

    Returns:
        The path written.
    """
    roc = (result.get("model") or {}).get("roc")
    if model_scores is not None:
        cases = list(result["case_truth"])
        missing = [c for c in cases if c not in model_scores]
        if missing:
            raise ChestDxError(f"the model scores lack {len(missing)} case(s) of the study (e.g. {missing[:5]}): score every case")
        roc = _roc_points(np.array([result["case_truth"][c] for c in cases]), np.array([model_scores[c] for c in cases]))
    summary = {
        "question": f"does the case show {result['positive_class']}?",
        "cases": f"{result['n_cases']} ({result['n_positive']} {result['positive_class']}, "
                 f"{result['n_cases'] - result['n_positive']} other)",
        "patients": result["n_patients"],
        "readers": f"{result['n_readers']} ({', '.join(result['readers'])})",
        "reads": result["n_reads"],
    }
    if result.get("model"):
        summary["model AUC (95% CI)"] = html.fmt_ci(result["model"]["auc"]).replace("&ndash;", "-")
    body = html.mapping_table(summary)
    if result["warnings"]:
        body += "<ul>" + "".join(f"<li>{escape(w)}</li>" for w in result["warnings"]) + "</ul>"
    b = result["bootstrap"]
    methods = (
        f"<p>Each reader's answers are compared with the reference standard. 95% confidence intervals come from "
        f"{b['n_resamples']} bootstrap resamples of {b['unit']}s (seed {b['seed']}); readers are held fixed. "
        "The aided - unaided difference is computed on the same resampled cases in both conditions (a paired "
        "bootstrap), so an interval that excludes 0 indicates a change beyond case-sampling noise. The average "
        "reader is the mean of the metrics of the readers who read in both conditions.</p>"
    )
    sections = [
        ("summary", "Study", body),
        ("readers", "Readers, unaided and AI-aided", _reader_table(result)),
        ("roc", "Readers on the model's ROC curve", html.image(_reader_figure(result, roc), "readers on the ROC curve")),
        ("methods", "Methods", methods),
    ]
    path = Path(path)
    path.write_text(html.page("chestdx reader study", sections), encoding="utf-8")
    return path
