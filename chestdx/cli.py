"""Command-line interface: ``chestdx COMMAND ...``. Mirrors the Python API."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from chestdx.errors import ChestDxError
from chestdx.writable import check_writable_file, check_writable_folder, write_error_message

log = logging.getLogger("chestdx")


def _print_json(obj: dict) -> None:
    """Print strict JSON: numpy values as numbers, nan as null, paths as strings."""
    from chestdx.evaluate.serialise import dumps

    print(dumps(obj))


def _series_arg(value: str | None):
    if value is None:
        return None
    return int(value) if value.isdigit() else value


def cmd_info(args: argparse.Namespace) -> None:
    """Print what chestdx reads from a study."""
    _check_study_path(args.study)
    from chestdx.io import load_study

    study = load_study(args.study, series=_series_arg(args.series), kind=args.kind, progress=not args.quiet)
    summary = study.summary()
    if args.json:
        _print_json(summary)
        return
    print(f"source      {summary['source']}")
    print(f"kind        {summary['kind']}   modality {summary['modality']}")
    print(f"slices      {summary['n_slices']}   shape {summary['shape']}   spacing (z, y, x) mm {summary['spacing']}")
    print(f"intensity   {summary['intensity']}   range {summary['min']:.1f} .. {summary['max']:.1f}")
    if summary["series_uid"]:
        print(f"series      {summary['series_uid']}")
    if summary["other_series"]:
        print("other series (choose one with --series INDEX):")
        for other in summary["other_series"]:
            print("  " + _describe_series(other))
    for warning in summary["warnings"]:
        print(f"warning     {warning}")


def _describe_series(series: dict) -> str:
    """One line for a series that was found but not chosen: index, modality, slices, description, UID."""
    parts = [f"{series.get('index', '?'):>3}", series.get("modality") or "",
             f"{series['n_slices']} slices" if series.get("n_slices") is not None else "",
             repr(series["description"]) if series.get("description") else "", series.get("uid") or ""]
    return "  ".join(p for p in parts if p)


def cmd_sample(args: argparse.Namespace) -> None:
    """Write a synthetic chest CT DICOM series (demos and tests only)."""
    check_writable_folder(args.out_dir, "sample")
    from chestdx.io.sample import PHANTOM_CONTENTS, write_sample_series

    files = write_sample_series(args.out_dir, n_slices=args.slices, seed=args.seed, progress=not args.quiet)
    print(f"wrote {len(files)} DICOM files to {args.out_dir}: {PHANTOM_CONTENTS}; not patient data, "
          "for demos and tests only")


def cmd_preview(args: argparse.Namespace) -> None:
    """Write a contact sheet of the selected slices (CT: with the lung mask outlined)."""
    _check_study_path(args.study)
    if not args.output.lower().endswith(".png"):
        raise ChestDxError(f"the contact sheet is a PNG image: give -o a file name ending in .png (got {args.output!r})")
    check_writable_file(args.output, "-o", make_parents=True)
    from chestdx.io import load_study
    from chestdx.preprocess.preview import contact_sheet

    study = load_study(args.study, series=_series_arg(args.series), kind=args.kind, progress=not args.quiet)
    path = contact_sheet(study, args.output, max_slices=args.max_slices)
    print(f"wrote {path}")


def _check_study_path(study: str) -> None:
    """Fail before anything heavy is imported when the study path does not exist."""
    if not Path(study).expanduser().exists():
        raise ChestDxError(f"{study} does not exist: give a DICOM folder or .zip, a .nii/.nii.gz file, "
                           "a folder of image slices, or an image")


def _check_study_args(args: argparse.Namespace, method: str | None) -> None:
    """Check a predict/explain command line against the files it names, before models or pixels are read.

    Args:
        args: the parsed command line.
        method: the explanation method asked for, or None.

    Raises:
        ChestDxError: a missing study, ``--explain`` without ``--out``, a non-empty ``--out``,
            an unknown model or an invalid card, or ``boxes`` from a model that draws none.
    """
    from chestdx.models.bundled import DEFAULT_MODELS, resolve_model_path
    from chestdx.models.card import read_card
    from chestdx.models.registry import BOX_RECIPES

    _check_study_path(args.study)
    if method and not args.out:
        raise ChestDxError(f"{'--explain' if args.command == 'predict' else 'explain'} needs --out DIR: "
                           "the folder to write the heat maps into")
    kinds = [args.kind] if args.kind else sorted(DEFAULT_MODELS)
    names = [args.model] if args.model else sorted({DEFAULT_MODELS[k] for k in kinds})
    recipes = {name: read_card(resolve_model_path(name)).recipe.name for name in names}
    if method == "boxes" and not any(r in BOX_RECIPES for r in recipes.values()):
        models = ", ".join(f"{n} ({r})" for n, r in recipes.items())
        raise ChestDxError(f"boxes come only from {', '.join(BOX_RECIPES)} models, not from {models}: "
                           "use cam, gradcam, gradcampp or occlusion, or pass --model with a dre-net checkpoint")
    if method and args.out:
        from chestdx.outputs.explanations import check_output_folder

        check_output_folder(args.out)
        check_writable_folder(args.out, "--out")
    if getattr(args, "dicom_out", None):
        check_writable_folder(args.dicom_out, "--dicom-out")


def _diagnose(args: argparse.Namespace):
    """Diagnose the study named on the command line with the model asked for (default by study kind)."""
    from chestdx.pipeline import diagnose_source

    return diagnose_source(args.study, args.model, series=_series_arg(args.series), kind=getattr(args, "kind", None),
                           progress=not args.quiet)


def cmd_predict(args: argparse.Namespace) -> None:
    """Diagnose a study with the bundled (or a given) model."""
    _check_study_args(args, args.explain)
    from chestdx.outputs.prediction import prediction_record, prediction_text

    diagnosis = _diagnose(args)
    if args.quantify:
        from chestdx.pipeline import quantify_lesions

        quantify_lesions(diagnosis, max_slices=args.quantify_slices)
    path = None
    if args.explain:
        from chestdx.outputs.explanations import write_study_explanation
        from chestdx.pipeline import explain

        explain(diagnosis, args.explain, n_slices=args.slices, progress=not args.quiet)
        path = write_study_explanation(args.out, diagnosis)
    record = prediction_record(diagnosis, top_k=args.top, explanation_file=path)
    if args.dicom_out:
        from chestdx.outputs.dicom import write_dicom_outputs

        record["dicom_outputs"] = [str(p) for p in write_dicom_outputs(args.dicom_out, diagnosis, n_key_slices=args.slices)]
    _print_json(record) if args.json else print(prediction_text(record))


def cmd_explain(args: argparse.Namespace) -> None:
    """Write heat maps of the slices that drove the decision."""
    _check_study_args(args, args.method)
    from chestdx.outputs.explanations import write_study_explanation
    from chestdx.pipeline import explain

    diagnosis = _diagnose(args)
    explain(diagnosis, args.method, n_slices=args.slices, target=args.target, progress=not args.quiet)
    print(f"wrote {write_study_explanation(args.out, diagnosis)}")


def cmd_node(args: argparse.Namespace) -> None:
    """Run the DICOM node: receive CT series (or take them from a folder), diagnose each complete one, send the DICOM results back."""
    check_writable_folder(args.store_dir, "--store-dir")
    from chestdx.node.dicomweb import DicomWebPeer
    from chestdx.models.loading import reuse_freed_memory
    from chestdx.node.listener import DicomNode, Peer

    if args.watch and (args.allow_ae or args.allow_host):
        raise ChestDxError("--allow-ae and --allow-host limit the network listener, and --watch does not listen: "
                           "leave them out, or run a second node without --watch")
    logging.getLogger("chestdx").setLevel(logging.INFO)
    peer = Peer.parse(args.return_to) if args.return_to else None
    web = DicomWebPeer.parse(args.dicomweb) if args.dicomweb else None
    reuse_freed_memory()  # it diagnoses series after series
    DicomNode(args.store_dir, ae_title=args.ae_title, host=args.host, port=args.port, return_to=peer, dicomweb=web,
              model=args.model, quiet_seconds=args.complete_after, allowed_callers=args.allow_ae,
              allowed_hosts=args.allow_host, lesions=not args.no_lesions, watch_dir=args.watch).serve_forever()


def cmd_segment(args: argparse.Namespace) -> None:
    """Segment lesions of a CT study and quantify them; write a NIfTI label map, overlays and quantify.json."""
    import time

    _check_study_path(args.study)
    check_writable_folder(args.out, "--out")
    from chestdx.io import load_study
    from chestdx.models.lesion import DEFAULT_LESION_MODEL, load_lesion_model, measured_spacing, segment_study
    from chestdx.models.quantify import quantify
    from chestdx.outputs.segmentation import write_segmentation

    study = load_study(args.study, series=_series_arg(args.series), progress=not args.quiet)
    model = load_lesion_model(args.model or DEFAULT_LESION_MODEL)
    started = time.perf_counter()
    result = segment_study(study, model, max_slices=args.max_slices)
    quantification = quantify(result.lung_mask, result.labels, measured_spacing(study))
    report = write_segmentation(study, result, quantification, args.out, n_key_slices=args.slices,
                                extra={"seconds": round(time.perf_counter() - started, 2),
                                       "study": {k: study.summary()[k] for k in ("kind", "shape", "spacing", "intensity")}})
    if args.json:
        _print_json(report)
        return
    chest, unit = quantification["chest"], quantification["volume_unit"]
    print(f"category    {chest['category']}   involvement {chest['involvement_percent']:.1f}%   "
          f"severity score {chest['severity_score']}/30")
    for side in ("right_lung", "left_lung"):
        q = quantification[side]
        print(f"{side.replace('_', ' '):11s} lung {q['lung_volume']:.1f} {unit}   lesion {q['lesion_volume']:.1f} {unit}   "
              f"involvement {q['involvement_percent']:.1f}%   score {q['score']}/15")
    print(f"lesions     ground-glass {chest['ground_glass_volume']:.1f} {unit}   "
          f"consolidation {chest['consolidation_volume']:.1f} {unit}")
    for warning in report["warnings"]:
        print(f"warning     {warning}")
    print(f"wrote       {args.out} (lesions.nii.gz, quantify.json, {len(report['files']['overlays'])} overlays)")


def _records(spec: str, split: str | None = None) -> list:
    from chestdx.io.datasets import load_dataset

    records = load_dataset(spec)
    if split:
        records = [r for r in records if r.split == split]
        if not records:
            raise ChestDxError(f"dataset {spec!r} has no records in split {split!r}: "
                               "leave out --split, or use a dataset with official splits (e.g. ucsd:PATH)")
    return records


def _class_list(text: str | None) -> tuple[str, ...] | None:
    """``--classes a,b,c`` as a tuple (None when not given)."""
    if text is None:
        return None
    classes = tuple(c.strip() for c in text.split(",") if c.strip())
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise ChestDxError(f"--classes {text!r}: name two or more different classes, comma-separated")
    return classes


def cmd_train(args: argparse.Namespace) -> None:
    """Train a recipe on a dataset and write a checkpoint with its model card."""
    check_writable_folder(args.out, "--out")
    from chestdx.io.labels import POSITIVE, canonical_label, order_positive_last
    from chestdx.models.recipes import get_recipe, get_variant
    from chestdx.train.run import train_command

    if bool(args.recipe) == bool(args.variant):
        raise ChestDxError("give either --recipe NAME or --variant NAME (see `chestdx recipes`)")
    config = get_variant(args.variant).config if args.variant else get_recipe(args.recipe)
    config.classes = _class_list(args.classes) or config.classes
    if args.positive:
        config.classes = order_positive_last(config.classes, args.positive)
    elif len(config.classes) == 2 and canonical_label(config.classes[0]) == POSITIVE:
        raise ChestDxError(f"--classes {','.join(config.classes)} would make {config.classes[1]} the positive class "
                           f"(the last, which the threshold applies to): pass --positive {POSITIVE}")
    summary = train_command(config, args.data, args.out, val_spec=args.val, source_spec=args.source,
                            seed=args.seed, epochs=args.epochs, cv=args.cv, progress=not args.quiet)
    _print_json(summary)


def _check_new_file(path: str | None, suffix: str, option: str) -> None:
    """Fail early when an output file cannot be written: wrong suffix, a folder, a missing or unwritable folder."""
    if path is not None:
        check_writable_file(path, option, suffixes=(suffix,))


def cmd_evaluate(args: argparse.Namespace) -> None:
    """Score a model on a dataset with patient-level bootstrap confidence intervals."""
    _check_new_file(args.report, ".html", "--report")
    _check_new_file(args.cases, ".csv", "--cases")
    classes = _class_list(args.classes)
    records = _records(args.data, args.split)
    from chestdx.evaluate.run import evaluate_model

    result = evaluate_model(args.model, records, level=args.level, n_resamples=args.resamples, seed=args.seed,
                            report=args.report, dataset_name=args.data, progress=not args.quiet, classes=classes,
                            cases=args.cases, predictions_file=args.predictions)
    if args.json:
        _print_json(result)
        return
    m = result["metrics"]
    print(f"model {result['model']['name']}, data {args.data}" + (f", split {args.split}" if args.split else ""))
    print(f"{result['level']} level: {result['n_cases']} cases ({result['n_patients']} patients), "
          + (f"threshold {result['threshold']:g} on {result['classes'][-1]}" if result["threshold"] is not None
             else "decision = most probable class"))
    for key in ("auc", "f1", "sensitivity", "specificity", "accuracy", "kappa"):
        e = m.get(key) or {}
        print(f"  {key:12s} {_fmt(e.get('value'))}  (95% CI {_fmt(e.get('ci_low'))}..{_fmt(e.get('ci_high'))}, "
              f"{result['level']} level)")
    for level, other in result["levels"].items():
        auc = (other["metrics"].get("auc") or {}).get("value")
        print(f"  {level} level: {other['n_cases']} cases, AUC {_fmt(auc).strip()} (--level {level})")
    for warning in result["warnings"]:
        print(f"warning     {warning}")
    if args.cases:
        print(f"cases: {args.cases}")
    if args.report:
        print(f"report: {args.report}")


def cmd_batch(args: argparse.Namespace) -> None:
    """Score every study of a folder, dataset or CSV into one result table."""
    check_writable_file(args.out, "--out", suffixes=(".parquet", ".csv"))
    if args.maps:
        check_writable_folder(args.maps, "--maps")
    from chestdx.batch import run_batch

    summary = run_batch(args.source, args.out, model=args.model, explain=None if args.explain == "none" else args.explain,
                        maps_dir=args.maps, explain_slices=args.slices, workers=args.workers, resume=args.resume,
                        engine=args.engine, address=args.address, progress=not args.quiet)
    rate = summary.scored / summary.seconds * 3600 if summary.seconds > 0 else 0.0
    print(f"{summary.out}: {summary.studies} studies, {summary.skipped} already there, {summary.scored} scored "
          f"({summary.failed} failed: see the error column) in {summary.seconds:.0f} s, {rate:.0f} studies/h, "
          f"{summary.engine} engine, {summary.workers} workers x {summary.threads} threads")


def cmd_calibrate(args: argparse.Namespace) -> None:
    """Fit temperature and operating point on validation data and store them in the model card."""
    if Path(args.model).expanduser().is_dir():  # the card is rewritten in place
        check_writable_file(Path(args.model).expanduser() / "metadata.json", "--model")
    from chestdx.evaluate.run import calibrate_model

    target, value = None, None
    if args.target:
        target, _, number = args.target.partition("=")
        try:
            value = None if target == "f1" and not number else float(number)
        except ValueError:
            raise ChestDxError(f"--target {args.target!r}: write it as specificity=0.9, sensitivity=0.95 or f1") from None
    _print_json(calibrate_model(args.model, _records(args.data, args.split), target=target, value=value,
                                split_name=args.split or args.data, progress=not args.quiet))


def cmd_ensemble(args: argparse.Namespace) -> None:
    """Put trained ai-corona checkpoints together as one ensemble checkpoint (with its ONNX export)."""
    check_writable_folder(args.out, "--out")
    from chestdx.models.checkpoint import assemble_ensemble, export_onnx
    from chestdx.models.loading import load_model

    out = assemble_ensemble(args.members, args.out)
    model = load_model(out)
    files = export_onnx(model.net, out, model.config.input.size, model.config.input.channels)
    _print_json({"ensemble": str(out), "members": len(args.members), "onnx": [f.name for f in files],
                 "next": f"chestdx calibrate --model {out} --data ADAPTER:PATH --target f1"})


def _fmt(value) -> str:
    """A metric with three decimals (never ``-0.000``), right-aligned; ``n/a`` when undefined."""
    if value is None or value != value:
        return "  n/a"
    text = f"{value:.3f}"
    return f"{text[1:] if text.startswith('-') and float(text) == 0 else text:>5}"


def cmd_reader_study(args: argparse.Namespace) -> None:
    """Compare radiologists' reads with and without AI against the truth."""
    for option, path in (("--truth", args.truth), ("--reads", args.reads), ("--model-scores", args.model_scores)):
        if path and not Path(path).is_file():
            raise ChestDxError(f"{option} {path}: no such file (the CSV columns are listed in `chestdx reader-study --help`)")
    _check_new_file(args.report, ".html", "--report")
    from chestdx.evaluate.reader_study import (load_model_scores, load_reads, reader_study,
                                               write_reader_study_report)

    truth, reads = load_reads(args.truth, args.reads)
    scores = load_model_scores(args.model_scores) if args.model_scores else None
    result = reader_study(truth, reads, model_scores=scores, n_resamples=args.resamples, seed=args.seed)
    if args.report:
        write_reader_study_report(result, args.report, model_scores=scores)
    if args.json:
        _print_json(result)
        return
    _print_reader_study(result)
    if args.report:
        print(f"report: {args.report}")


def _print_reader_study(result: dict) -> None:
    """The reader study as a table: each reader and the average reader, unaided, aided and the difference."""
    print(f"reader study: {result['positive_class']} vs rest, {result['n_cases']} cases ({result['n_positive']} positive), "
          f"{result['n_patients']} patients, {result['n_readers']} readers; 95% CIs from "
          f"{result['bootstrap']['n_resamples']} paired bootstrap resamples of patients")
    if result["model"]:
        auc = result["model"]["auc"]
        print(f"model AUC {_fmt(auc['value']).strip()} (95% CI {_fmt(auc['ci_low']).strip()}..{_fmt(auc['ci_high']).strip()})")
    print(f"{'reader':18s} {'condition':16s} {'sensitivity':>22s} {'specificity':>22s}")
    for name, entry in [*result["readers"].items(), ("average reader", result["average_reader"])]:
        for part in ("unaided", "aided", "difference"):
            cells = [f"{_fmt(entry[part][m]['value'])} ({_fmt(entry[part][m]['ci_low']).strip()}.."
                     f"{_fmt(entry[part][m]['ci_high']).strip()})" for m in ("sensitivity", "specificity")]
            label = "aided - unaided" if part == "difference" else part
            print(f"{name:18s} {label:16s} {cells[0]:>22s} {cells[1]:>22s}")
    for warning in result["warnings"]:
        print(f"warning     {warning}")


def cmd_recipes(args: argparse.Namespace) -> None:
    """List recipes, named variants and, for each bundled model, its classes, training data and headline figure."""
    from chestdx.models.bundled import list_bundled, resolve_model_path
    from chestdx.models.card import read_card
    from chestdx.models.recipes import get_variant, list_recipes, list_variants

    print("recipes: " + ", ".join(list_recipes()))
    for name in list_variants():
        variant = get_variant(name)
        print(f"variant {name}: {variant.config.name} on {variant.data}, seeds {', '.join(map(str, variant.seeds))}: "
              f"{variant.notes}")
    print("bundled models:")
    for name in list_bundled():
        card = read_card(resolve_model_path(name))
        data = card.training.get("data") or {}
        members = f", ensemble of {len(card.members)}" if card.members else ""
        print(f"  {name}: recipe {card.recipe.name}{members}")
        print(f"    classes   {', '.join(card.classes)} (decision on {card.classes[-1]})")
        print(f"    trained   {data.get('name', 'not recorded') if isinstance(data, dict) else data}")
        print(f"    headline  {_headline(card)}")


def _headline(card) -> str:
    """The card's headline figure: test AUC with its CI, else cross-validated AUC, else validation AUC."""
    test = card.headline_auc("test")
    if test is not None and test.ci_low is not None:
        split = card.metrics["test"]
        return (f"test AUC {test.value:.3f} (95% CI {test.ci_low:.3f}-{test.ci_high:.3f}), "
                f"level {split.level or 'not recorded'}, n={split.n}")
    per_source = card.source_aucs("test")
    if per_source:
        return "test AUC per source (study level): " + ", ".join(
            f"{source} {m.value:.3f}" + (f" ({m.ci_low:.3f}-{m.ci_high:.3f})" if m.ci_low is not None else "")
            for source, m in per_source.items())
    cv = card.metrics.get("cross_validation")
    if cv is not None and (cv.details.get("mean_sd") or {}).get("auc"):
        auc = cv.details["mean_sd"]["auc"]
        return (f"AUC {auc['mean']:.3f} ± {auc['sd']:.3f} over {cv.details.get('folds')} patient-grouped "
                f"cross-validation folds, level {cv.level or 'not recorded'}")
    val = card.headline_auc("val")
    if val is None or val.value is None:
        return "none recorded"
    return f"validation AUC {val.value:.3f}, level {card.metrics['val'].level or 'not recorded'}"


READER_STUDY_FILES = """input CSVs (UTF-8, header row, names case-insensitive):
  --truth         case, class [, patient_id]   (cases of one patient are resampled together)
  --reads         reader, case, class, yes_no, aided   (one row per reader, case, class asked about and
                  condition; yes_no: did the reader call the case that class; aided: was the AI shown;
                  both yes/no or 1/0)
  --model-scores  case, score   (the model's probability of the positive class; optional)"""


def _chestdx_records_only(record: logging.LogRecord) -> bool:
    """Logging filter: chestdx's own records, and no library's."""
    return record.name == "chestdx" or record.name.startswith("chestdx.")


def _library_records_one_line(record: logging.LogRecord) -> bool:
    """Logging filter of the long-running commands: chestdx's records, and libraries' warnings as one line each."""
    if _chestdx_records_only(record):
        return True
    if record.levelno < logging.WARNING:
        return False
    record.msg, record.args = " ".join(record.getMessage().split()), None
    record.exc_info = record.exc_text = record.stack_info = None
    return True


def _drop_stdout() -> None:
    """Point standard output at /dev/null, so the interpreter's flush at exit has nothing left to fail on."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):  # not a real file (tests capture it)
        pass


def _terminated(signum, frame) -> None:
    """SIGTERM ends the command the way Ctrl-C does: temporary folders are removed on the way out."""
    raise SystemExit(128 + signum)


def cmd_serve(args: argparse.Namespace) -> None:
    """Run the web service and viewer, or ``token create NAME``: make an API token (printed once)."""
    if args.action and (len(args.action) != 3 or args.action[:2] != ["token", "create"]):
        raise ChestDxError("unknown serve action: use `chestdx serve token create NAME`, or no action to start the service")
    check_writable_folder(args.data_dir, "--data-dir")
    if args.db and args.db.startswith("sqlite:///"):
        check_writable_file(args.db[len("sqlite:///"):], "--db")
    if args.request_timeout <= 0:
        raise ChestDxError("--request-timeout must be a positive number of seconds")
    model = None
    if args.model:
        from chestdx.models.bundled import WEIGHTS_DIR, resolve_model_path
        from chestdx.models.loading import classifier_card

        path = resolve_model_path(args.model)
        classifier_card(path, args.model)  # refused here, in one line, not by every job
        model = path.name if path.parent == WEIGHTS_DIR else str(path)  # workers may run elsewhere than the cwd
    from chestdx.serve import Settings

    settings = Settings(data_dir=Path(args.data_dir), db_url=args.db, max_upload_mb=args.max_upload_mb,
                        workers=args.workers, explain_slices=args.explain_slices, quantify=args.quantify,
                        quantify_slices=args.quantify_slices, request_timeout_s=args.request_timeout,
                        cors_origins=tuple(args.cors_origin or ()), model=model)
    if args.action:
        from chestdx.serve.store import create_token, open_database

        Path(args.data_dir).mkdir(parents=True, exist_ok=True)
        token = create_token(open_database(settings.database_url), args.action[2])
        print(f"token for {args.action[2]} (shown once, stored only as a salted hash):\n{token}")
        return
    import uvicorn

    from chestdx.serve import create_app

    logging.getLogger("chestdx").setLevel(logging.INFO)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="info")


def build_parser() -> argparse.ArgumentParser:
    """Returns: the argument parser with every sub-command."""
    from chestdx import __version__

    parser = argparse.ArgumentParser(prog="chestdx", description=__doc__.splitlines()[0] + " Research use only, not for clinical use.")
    parser.add_argument("--version", action="version", version=f"chestdx {__version__}")
    parser.add_argument("--quiet", action="store_true", help="no progress reports")
    parser.add_argument("--verbose", action="store_true", help="log details and show tracebacks")
    # The same flags after the command name; SUPPRESS keeps a flag given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress reports")
    common.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="log details and show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, **kwargs) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kwargs)

    kinds = ["ct-volume", "ct-slice", "xray"]
    series_help = "series UID or index (see the 'other series' list of `chestdx info`) instead of the default choice"
    kind_help = "override the detected study kind (a PNG/JPG has no modality: pass xray for an X-ray)"

    p = command("info", help="describe a study (DICOM folder/zip, NIfTI, image slices, X-ray)")
    p.add_argument("study")
    p.add_argument("--series", help=series_help)
    p.add_argument("--kind", choices=kinds, help=kind_help)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_info)

    p = command("sample", help="write a synthetic chest CT DICOM series for demos and tests")
    p.add_argument("out_dir")
    p.add_argument("--slices", type=int, default=120)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_sample)

    p = command("preview", help="contact sheet of the selected slices (CT: lung mask outlined)")
    p.add_argument("study")
    p.add_argument("-o", "--output", required=True, help="PNG file to write")
    p.add_argument("--series", help=series_help)
    p.add_argument("--kind", choices=kinds, help=kind_help)
    p.add_argument("--max-slices", type=int, default=24)
    p.set_defaults(func=cmd_preview)

    methods = ["cam", "gradcam", "gradcampp", "occlusion", "boxes", "lesion"]
    for name, func, text in (("predict", cmd_predict, "diagnose a study: class probabilities, decision, slices that drove it"),
                             ("explain", cmd_explain, "heat maps of the slices that drove the decision")):
        p = command(name, help=text)
        p.add_argument("study")
        p.add_argument("--model", help="bundled model name or checkpoint folder (default: chosen by study kind)")
        p.add_argument("--series", help=series_help)
        p.add_argument("--kind", choices=kinds, help=kind_help)
        p.add_argument("--slices", type=int, default=3, help="how many top slices to explain")
        p.add_argument("--out", help="output folder for heat maps (new or empty)")
        p.set_defaults(func=func)
        if name == "predict":
            p.add_argument("--json", action="store_true", help="print one JSON object")
            p.add_argument("--top", type=int, default=5, help="how many top slices to list")
            p.add_argument("--explain", choices=methods, help="also write heat maps with this method (needs --out; "
                           "boxes: dre-net models only)")
            p.add_argument("--quantify", action="store_true", help="also segment lesions (lesion-default) and report "
                           "lung/lesion volumes, involvement, severity score and CT-0..CT-4 (CT only; slower)")
            p.add_argument("--quantify-slices", type=int, help="run the lesion segmenter on at most this many lung "
                                                               "slices (faster; see `chestdx segment --max-slices`)")
            p.add_argument("--dicom-out", help="also write a DICOM SR, key-slice secondary captures and a "
                                               "segmentation of the lungs and (with lesion-default installed) lesions, "
                                               "de-identified, into this folder")
        else:
            p.add_argument("--method", default="gradcam", choices=methods, help="boxes: dre-net models only")
            p.add_argument("--target", help="class to explain (default: the decided class)")

    p = command("node", help="DICOM node: receive CT series (C-STORE, or files dropped into a folder), send back SR, "
                             "key slices and segmentation (C-STORE and/or DICOMweb)")
    p.add_argument("--ae-title", default="CHESTDX")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=11112)
    p.add_argument("--store-dir", required=True, help="folder for received series and results (kept on disk)")
    p.add_argument("--return-to", help="HOST:PORT:AET of the PACS that receives the results (they carry its patient "
                                       "module); without it and --dicomweb results stay in --store-dir")
    p.add_argument("--dicomweb", metavar="URL",
                   help="DICOMweb service root that stores the results by STOW-RS, e.g. http://127.0.0.1:8042/dicom-web "
                        "(user:password@ in the URL for basic authentication); with --return-to, both get them")
    p.add_argument("--watch", metavar="DIR",
                   help="folder mode: take the DICOM files dropped into DIR (moved into --store-dir) instead of "
                        "listening on the network")
    p.add_argument("--no-lesions", action="store_true",
                   help="segmentation of the lungs only (default: lesions too when lesion-default is installed)")
    p.add_argument("--model", help="bundled model name or checkpoint folder (default: the CT model)")
    p.add_argument("--complete-after", type=float, default=10.0,
                   help="seconds without a new instance after which a series is complete")
    p.add_argument("--allow-ae", action="append", metavar="AET",
                   help="calling AE title allowed to associate (repeat for more; default: any); others are rejected")
    p.add_argument("--allow-host", action="append", metavar="ADDRESS",
                   help="peer IP address whose instances are stored (repeat for more; default: any); others are "
                        "refused with 'not authorized'")
    p.set_defaults(func=cmd_node)

    p = command("segment", help="lesion segmentation and quantification of a CT study (NIfTI, overlays, JSON)")
    p.add_argument("study")
    p.add_argument("--out", required=True, help="output folder (lesions.nii.gz, quantify.json, slice_*.png)")
    p.add_argument("--model", help="lesion segmenter: bundled name or checkpoint folder (default: lesion-default)")
    p.add_argument("--series", help=series_help)
    p.add_argument("--slices", type=int, default=3, help="overlays of this many slices with the most lesion")
    p.add_argument("--max-slices", type=int, help="run the network on at most this many lung slices (faster)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_segment)

    p = command("train", help="train a recipe; writes model.pt + metadata.json")
    p.add_argument("--recipe", help="recipe name with its default config (see `chestdx recipes`)")
    p.add_argument("--variant", help="a registered variant, e.g. ct-ucsd: the full config a bundled model was "
                                     "trained with (one network; see `chestdx recipes` for how it was assembled)")
    p.add_argument("--data", required=True, help="ADAPTER:PATH, e.g. ucsd:../shared/data/ucsd-covid-ct")
    p.add_argument("--val", help="ADAPTER:PATH for validation (default: the data's official split or a patient split)")
    p.add_argument("--source", help="ADAPTER:PATH of the source task (two-stage recipes such as detl)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--classes", help="comma-separated class names (default: the recipe's); dataset labels map onto "
                   "them by name or shared label (covid = covid-19, pneumonia = other-pneumonia); a non-covid class "
                   "takes every label other than COVID-19")
    p.add_argument("--positive", help="the positive class, put last (a binary model's threshold applies to it), "
                   "e.g. --positive covid-19")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, help="override the recipe's epochs")
    p.add_argument("--cv", type=int, help="patient-grouped K-fold cross-validation instead of one split")
    p.set_defaults(func=cmd_train)

    p = command("evaluate", help="metrics with patient-level bootstrap CIs, curves, calibration, HTML report")
    p.add_argument("--model", help="bundled model name or checkpoint folder (default: the CT model)")
    p.add_argument("--data", required=True, help="ADAPTER:PATH")
    p.add_argument("--split", help="only records of this split (train/val/test)")
    p.add_argument("--level", default="patient", choices=["patient", "study", "slice"],
                   help="level of the figures printed on top (default patient: a patient's studies are averaged)")
    p.add_argument("--classes", help="what the model's classes are, comma-separated in logit order, when its own "
                   "names do not match the dataset's labels (e.g. non-covid,covid-19)")
    p.add_argument("--resamples", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.add_argument("--report", help="write a self-contained HTML report here (with a sortable per-case table)")
    p.add_argument("--cases", help="write one CSV row per study here: id, patient, truth, probabilities, decision, "
                   "correct, error, source")
    p.add_argument("--predictions", help="score this `chestdx batch` result file (.parquet/.csv) instead of running "
                                         "the model (rows matched by path; no slice level)")
    p.set_defaults(func=cmd_evaluate)

    p = command("batch", help="score a whole archive (folder, ADAPTER:PATH or CSV) into one Parquet/CSV table")
    p.add_argument("source", help="folder of studies, ADAPTER:PATH, or a CSV with a 'path' column")
    p.add_argument("--out", required=True, help="result file: .parquet or .csv (one row per study)")
    p.add_argument("--model", help="bundled model name or checkpoint folder (default: chosen by each study's kind)")
    p.add_argument("--explain", default="none", choices=["none", "cam", "gradcam", "gradcampp", "occlusion", "boxes", "lesion"],
                   help="also write heat maps with this method (needs --maps)")
    p.add_argument("--maps", help="folder for the heat maps: one sub-folder per study id")
    p.add_argument("--slices", type=int, default=3, help="how many top slices to explain per study")
    p.add_argument("--workers", type=int, help="worker processes / Ray actors (default: one per CPU, 2 GB each)")
    p.add_argument("--resume", action="store_true", help="keep the rows in --out and score only the studies it lacks")
    p.add_argument("--engine", default="local", choices=["local", "ray"], help="local process pool, or a Ray cluster")
    p.add_argument("--address", default="auto", help="Ray cluster: auto, ray://HOST:PORT, or local (start one here)")
    p.set_defaults(func=cmd_batch)

    p = command("calibrate", help="fit temperature (and an operating point) on validation data into the model card")
    p.add_argument("--model", required=True, help="checkpoint folder (its metadata.json is updated)")
    p.add_argument("--data", required=True, help="ADAPTER:PATH of validation data")
    p.add_argument("--split", default="val", help="records of this split only (default val; '' for all)")
    p.add_argument("--target", help="operating point: specificity=0.9, sensitivity=0.95 or f1 (best F1; binary models)")
    p.set_defaults(func=cmd_calibrate)

    p = command("ensemble", help="put ai-corona checkpoints trained with different seeds together as one model")
    p.add_argument("members", nargs="+", help="checkpoint folders (same recipe, classes and input)")
    p.add_argument("--out", required=True, help="folder of the ensemble checkpoint")
    p.set_defaults(func=cmd_ensemble)

    p = command("reader-study", help="readers' sensitivity/specificity, unaided vs AI-aided, on the model ROC",
                epilog=READER_STUDY_FILES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--truth", required=True, help="CSV: case, class [, patient_id]")
    p.add_argument("--reads", required=True, help="CSV: reader, case, class, yes_no, aided")
    p.add_argument("--model-scores", help="CSV: case, score")
    p.add_argument("--report", help="write an HTML report here")
    p.add_argument("--json", action="store_true", help="print the full result as one JSON object")
    p.add_argument("--resamples", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_reader_study)

    p = command("recipes", help="list the recipes, and each bundled model's classes, training data and headline figure")
    p.set_defaults(func=cmd_recipes)

    p = sub.add_parser("serve", help="web service and viewer (FastAPI); `serve token create NAME` makes an API token")
    p.add_argument("action", nargs="*", help="token create NAME: make an API token (printed once)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--db", help="SQLAlchemy database URL (default: SQLite file chestdx.db in --data-dir)")
    p.add_argument("--data-dir", default="chestdx-data", help="folder of uploaded studies and results")
    p.add_argument("--max-upload-mb", type=float, default=1024.0)
    p.add_argument("--workers", type=int, default=1, help="worker processes that run the diagnoses")
    p.add_argument("--model", help="bundled model name or checkpoint folder for uploads that name none (default: "
                                   "chosen by each study's kind); every worker loads it at start")
    p.add_argument("--explain-slices", type=int, default=3, help="top slices with a Grad-CAM map per study (0: none)")
    p.add_argument("--request-timeout", type=float, default=900.0,
                   help="seconds a client may take to send one request (an upload); slower ones get 408")
    p.add_argument("--cors-origin", action="append", metavar="ORIGIN",
                   help="a web origin (https://host:port) whose pages may call the API from a browser (repeat for "
                        "more; default: none, cross-origin calls are refused by the browser)")
    p.add_argument("--quantify", action=argparse.BooleanOptionalAction, default=True,
                   help="segment the lesions of CT studies and quantify them (volumes, involvement, severity score, "
                        "CT-0..CT-4); the viewer overlays them (--no-quantify: off)")
    p.add_argument("--quantify-slices", type=int, help="run the lesion segmenter on at most this many lung slices per "
                   "study (default: all; fewer is faster, the others take the nearest slice's labels)")
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI.

    Args:
        argv: arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        Exit status: 0 on success, 2 on a user error (message printed, no traceback).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="chestdx: %(message)s")
    # A library's log line about a damaged file (pydicom: "the number of bytes ... matches ...", or a decoder's
    # traceback) is not chestdx's message: a command ends with its result or with one error line, and the log of
    # the service or the node keeps one line per library warning, without tracebacks (--verbose shows them all).
    record_filter = None if args.verbose else (
        _library_records_one_line if args.command in ("serve", "node") else _chestdx_records_only)
    if record_filter is not None:
        logging.captureWarnings(True)  # Python warnings of libraries too (they become "py.warnings" records)
        for handler in logging.getLogger().handlers:
            handler.addFilter(record_filter)
    signal.signal(signal.SIGTERM, _terminated)
    try:
        return _run(args)
    finally:
        if record_filter is not None:
            logging.captureWarnings(False)
            for handler in logging.getLogger().handlers:
                handler.removeFilter(record_filter)


def _run(args: argparse.Namespace) -> int:
    """Run the parsed command. Returns: its exit status."""
    try:
        args.func(args)
        sys.stdout.flush()  # output to a full disk or a closed pipe fails here, not at exit
    except ChestDxError as exc:
        if args.verbose:
            raise
        print(f"chestdx: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        _drop_stdout()  # the reader went away (`| head`): nothing more to say
        return 141
    except OSError as exc:
        message = write_error_message(exc)  # checked before the work, but the disk filled up during it
        if message is None or args.verbose:
            raise
        _drop_stdout()
        print(f"chestdx: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("chestdx: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
