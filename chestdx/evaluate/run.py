"""Run a model over dataset records: the predictions `evaluate_predictions` scores."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from chestdx.errors import ChestDxError
from chestdx.progress import progress as progress_bar

from chestdx.io import load_study
from chestdx.io.labels import label_indices
from chestdx.models.loading import LoadedModel
from chestdx.pipeline import diagnose


@dataclass
class DatasetPredictions:
    """Study-level predictions over a dataset.

    Args:
        probs: ``(n, K)`` study probabilities in the model's class order.
        y: ``(n,)`` true class index.
        patient_ids: patient of each study.
        paths: study paths.
        slice_probs: per study, ``(s, K)`` probabilities of its used slices.
    """

    probs: np.ndarray
    y: np.ndarray
    patient_ids: list[str]
    paths: list[str]
    slice_probs: list[np.ndarray]


def predict_records(model: LoadedModel, records: list, progress: bool = True,
                    classes: Sequence[str] | None = None) -> DatasetPredictions:
    """Predict every record with ``model``.

    Args:
        model: the loaded model.
        records: dataset records whose labels map onto the model's classes
            (`chestdx.io.labels.class_index`); checked before any study is read.
        progress: show a progress bar.
        classes: what the model's classes are, in logit order, when its own names do not
            match the dataset's labels (``--classes``); default the model's.

    Returns:
        The predictions.
    """
    ys = label_indices([rec.label for rec in records], classes or model.config.classes)
    probs, slice_probs = [], []
    for rec in progress_bar(records, "predicting", "study", enabled=progress):
        diagnosis = diagnose(load_study(rec.path, progress=False), model)
        probs.append(diagnosis.probabilities)
        slice_probs.append(diagnosis.slice_probs[diagnosis.prepared.indices >= 0])
    return DatasetPredictions(np.asarray(probs), np.asarray(ys), [r.patient_id for r in records],
                              [str(r.path) for r in records], slice_probs)


def probability_column(class_name: str) -> str:
    """Args: class_name: a model class. Returns: the column of its study probability in a batch result table."""
    return f"p_{class_name}"


def predictions_from_rows(rows: list[dict], records: list, model: LoadedModel, source: str = "",
                          classes: Sequence[str] | None = None) -> DatasetPredictions:
    """The predictions of dataset records read from a ``chestdx batch`` result table instead of running the model.

    Rows are matched to records by resolved path. No slice probabilities: slice-level
    results need the model to run.

    Args:
        rows: the table's rows (``path``, ``model``, ``error``, ``p_<class>`` columns).
        records: dataset records whose labels are among the model's classes.
        model: the model the table should have been scored with.
        source: the table's file name, for messages.
        classes: the model's classes as the dataset names them (``--classes``); default the model's.

    Returns:
        The predictions, in record order.

    Raises:
        ChestDxError: the table's classes or model differ, or a record has no row or a failed one.
    """
    from pathlib import Path

    classes = list(model.config.classes)
    columns = list(dict.fromkeys(c for row in rows for c in row if c.startswith(probability_column(""))))
    if sorted(columns) != sorted(probability_column(c) for c in classes):
        raise ChestDxError(f"{source} has probability columns {columns} but {model.name} has the classes {classes}: "
                           "pass the --model the batch was scored with")
    by_path = {str(Path(row["path"]).resolve()): row for row in rows}
    matched = [by_path.get(str(Path(rec.path).resolve())) for rec in records]
    missing = [str(rec.path) for rec, row in zip(records, matched) if row is None or row.get("error")]
    if missing:
        raise ChestDxError(f"{len(missing)} of {len(records)} studies have no scored row in {source} (e.g. {missing[0]}): "
                           "run chestdx batch on this dataset (--resume adds missing studies to the file)")
    other_models = sorted({row.get("model") for row in matched} - {model.name})
    if other_models:
        raise ChestDxError(f"{source} was scored with {', '.join(map(str, other_models))}, not {model.name}: "
                           "pass the --model the batch was scored with")
    probs = np.array([[float(row[probability_column(c)]) for c in classes] for row in matched])
    return DatasetPredictions(probs, label_indices([rec.label for rec in records], classes or model.config.classes),
                              [r.patient_id for r in records], [str(r.path) for r in records],
                              [np.zeros((0, len(classes)))] * len(records))


def evaluate_model(model_name: str | None, records: list, *, level: str = "patient", n_resamples: int = 2000,
                   seed: int = 0, report: str | None = None, dataset_name: str = "", progress: bool = True,
                   classes: Sequence[str] | None = None, cases: str | None = None,
                   predictions_file: str | None = None) -> dict:
    """``chestdx evaluate``: predict every record, score at the asked level, optionally write the HTML report.

    Study-level and patient-level results are both computed (patients pool their studies'
    probabilities by the mean); the report shows them side by side. Slice-level results
    are added when studies have several slices.

    Args:
        model_name: bundled model name or checkpoint folder (None: the default CT model;
            pass ``"xray-default"`` for X-ray datasets).
        records: dataset records.
        level: ``"patient"``, ``"study"`` or ``"slice"``: which result is returned on top.
        n_resamples: bootstrap resamples (patients are resampled).
        seed: bootstrap seed.
        report: path of an HTML report to write, or None.
        dataset_name: shown in the report.
        progress: show a progress bar.
        classes: what the model's classes are, in logit order (``--classes``), when its own
            names do not match the dataset's labels; default the model's.
        cases: path of a per-case CSV to write (see `chestdx.evaluate.cases.case_rows`), or None.
        predictions_file: a ``chestdx batch`` result table (Parquet or CSV) to score instead of
            running the model (see `predictions_from_rows`; no slice level then).

    Returns:
        The result of the chosen level (see ``evaluate_predictions``), with the other
        levels under ``"levels"``.
    """
    from chestdx.evaluate.cases import case_rows, write_cases_csv
    from chestdx.evaluate.report import aggregate_to_patients, evaluate_predictions, write_html_report
    from chestdx.models.loading import load_model

    model = load_model(model_name)
    if classes and len(classes) != len(model.config.classes):
        raise ChestDxError(f"--classes names {len(classes)} classes but model {model.name!r} has "
                           f"{len(model.config.classes)} ({', '.join(model.config.classes)}): name each in logit order")
    classes = list(classes or model.config.classes)
    if predictions_file is None:
        preds = predict_records(model, records, progress, classes)
    else:
        from chestdx.io.tables import read_table

        preds = predictions_from_rows(read_table(predictions_file), records, model, str(predictions_file), classes)
    common = {"classes": classes, "n_resamples": n_resamples, "seed": seed,
              "threshold": model.threshold if len(classes) == 2 else None}
    rows = case_rows(records, preds.probs, preds.y, classes, common["threshold"])
    if cases:
        write_cases_csv(rows, cases)
    results = {"study": evaluate_predictions(preds.y, preds.probs, patient_ids=preds.patient_ids, level="study", **common)}
    ids, p, y = aggregate_to_patients(preds.patient_ids, preds.probs, preds.y)
    results["patient"] = evaluate_predictions(y, p, patient_ids=ids, level="patient", **common)
    n_slices = np.array([len(s) for s in preds.slice_probs])
    if n_slices.max() > 1:
        slice_y = np.repeat(preds.y, n_slices)
        slice_ids = np.repeat(np.asarray(preds.patient_ids, dtype=object), n_slices)
        results["slice"] = evaluate_predictions(slice_y, np.concatenate(preds.slice_probs), patient_ids=list(slice_ids),
                                                level="slice", **common)
    chosen = level if level in results else "study"
    if report:
        counts = {c: int((preds.y == i).sum()) for i, c in enumerate(classes)}
        write_html_report([results[k] for k in ("slice", "study", "patient") if k in results], report,
                          model_card=model.card.to_dict(),
                          dataset_summary={"dataset": dataset_name, "studies": len(records),
                                           "patients": len(set(preds.patient_ids)), "class balance": counts,
                                           "split": sorted({r.split or "-" for r in records})},
                          cases=rows)
    out = dict(results[chosen])
    out["levels"] = {k: {"n_cases": v["n_cases"], "metrics": v["metrics"]} for k, v in results.items() if k != chosen}
    out["model"] = {"name": model.name, "recipe": model.config.name}
    return out


def calibrate_model(model_name: str, records: list, *, target: str | None = None, value: float | None = None,
                    split_name: str = "val", progress: bool = True) -> dict:
    """Fit the study-level temperature and (optionally) the operating point on validation data; store both in the card.

    Use the validation split only: the stored threshold is then applied unchanged to test
    data by ``chestdx evaluate`` and ``chestdx predict``.

    Args:
        model_name: bundled model name or checkpoint folder (its ``metadata.json`` is rewritten).
        records: validation records.
        target: ``"specificity"``, ``"sensitivity"`` or ``"f1"`` (the best F1) for a binary
            model's operating point; None keeps the threshold.
        value: the minimum the target must reach (e.g. 0.9); not used for ``"f1"``.
        split_name: what ``records`` are, recorded in the card.
        progress: show a progress bar.

    Returns:
        What was written: ``temperature``, ``threshold`` and ``operating_point``.
    """
    import dataclasses

    from chestdx.evaluate.calibration import TemperatureScaler, expected_calibration_error, logits_from_probs
    from chestdx.evaluate.metrics import choose_operating_point
    from chestdx.models.card import write_card
    from chestdx.models.loading import load_model

    model = load_model(model_name)
    preds = predict_records(model, records, progress)
    # Study probabilities at the current temperature T0 are softmax(z / T0): T0 * log p
    # recovers the study logits z up to a per-row constant, which softmax ignores.
    logits = model.temperature * logits_from_probs(preds.probs)
    scaler = TemperatureScaler().fit(logits, preds.y)
    calibrated = scaler.transform(logits)
    card = dataclasses.replace(model.card, temperature=round(float(scaler.temperature_), 4))
    written = {"temperature": card.temperature, "threshold": card.threshold,
               "ece_before": expected_calibration_error(preds.y, preds.probs),
               "ece_after": expected_calibration_error(preds.y, calibrated)}
    if target is not None:
        if len(model.config.classes) != 2:
            raise ChestDxError("an operating point needs a binary model; this one has "
                               f"{len(model.config.classes)} classes")
        threshold = choose_operating_point(preds.y, calibrated[:, 1], target, value)
        card.threshold = round(float(threshold), 4)
        card.operating_point = {"target": target, **({} if target == "f1" else {"value": value}),
                                "fitted_on": split_name, "n_studies": int(len(preds.y))}
        written.update(threshold=card.threshold, operating_point=card.operating_point)
    write_card(card, model.path)
    return written
