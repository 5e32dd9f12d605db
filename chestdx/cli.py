"""Command-line interface: ``chestdx COMMAND ...``. Mirrors the Python API."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from chestdx.errors import ChestDxError

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
    from chestdx.io import load_study

    study = load_study(args.study, series=_series_arg(args.series), progress=not args.quiet)
    summary = study.summary()
    if args.json:
        _print_json(summary)
        return
    print(f"source      {summary['source']}")
    print(f"kind        {summary['kind']}   modality {summary['modality']}")
    print(f"slices      {summary['n_slices']}   shape {summary['shape']}   spacing (z, y, x) mm {summary['spacing']}")
    print(f"intensity   {summary['intensity']}   range {summary['min']:.1f} .. {summary['max']:.1f}")
    print(f"series      {summary['series_uid']}")
    for other in summary["other_series"]:
        print(f"  other series (--series {other.get('index', other.get('uid'))}) {other}")
    for warning in summary["warnings"]:
        print(f"warning     {warning}")


def cmd_sample(args: argparse.Namespace) -> None:
    """Write a synthetic chest CT DICOM series (demos and tests only)."""
    from chestdx.io.sample import write_sample_series

    files = write_sample_series(args.out_dir, n_slices=args.slices, seed=args.seed, progress=not args.quiet)
    print(f"wrote {len(files)} DICOM files to {args.out_dir} (synthetic, for demos and tests only)")


def cmd_preview(args: argparse.Namespace) -> None:
    """Write a contact sheet of the selected slices with the lung mask outlined."""
    from chestdx.io import load_study
    from chestdx.preprocess.preview import contact_sheet

    study = load_study(args.study, series=_series_arg(args.series), progress=not args.quiet)
    path = contact_sheet(study, args.output, max_slices=args.max_slices)
    print(f"wrote {path}")


def _diagnose(args: argparse.Namespace):
    """Diagnose the study named on the command line with the model asked for (default by study kind)."""
    from chestdx.pipeline import diagnose_source

    return diagnose_source(args.study, args.model, series=_series_arg(args.series), kind=getattr(args, "kind", None),
                           progress=not args.quiet)


def cmd_predict(args: argparse.Namespace) -> None:
    """Diagnose a study with the bundled (or a given) model."""
    from chestdx.outputs.prediction import prediction_record, prediction_text

    if args.explain and not args.out:
        raise ChestDxError("--explain needs --out DIR: the folder to write the heat maps into")
    diagnosis = _diagnose(args)
    path = None
    if args.explain:
        from chestdx.outputs.explanations import write_study_explanation
        from chestdx.pipeline import explain

        explain(diagnosis, args.explain, n_slices=args.slices)
        path = write_study_explanation(args.out, diagnosis)
    record = prediction_record(diagnosis, top_k=args.top)
    if path is not None:
        record["explanation"] = str(path)
    _print_json(record) if args.json else print(prediction_text(record))


def cmd_explain(args: argparse.Namespace) -> None:
    """Write heat maps of the slices that drove the decision."""
    from chestdx.outputs.explanations import write_study_explanation
    from chestdx.pipeline import explain

    diagnosis = _diagnose(args)
    explain(diagnosis, args.method, n_slices=args.slices, target=args.target)
    print(f"wrote {write_study_explanation(args.out, diagnosis)}")


def _records(spec: str, split: str | None = None) -> list:
    from chestdx.io.datasets import load_dataset

    records = load_dataset(spec)
    if split:
        records = [r for r in records if r.split == split]
        if not records:
            raise ChestDxError(f"dataset {spec!r} has no records in split {split!r}: "
                               "leave out --split, or use a dataset with official splits (e.g. ucsd:PATH)")
    return records


def cmd_train(args: argparse.Namespace) -> None:
    """Train a recipe on a dataset and write a checkpoint with its model card."""
    from chestdx.models.recipes import get_recipe, get_variant
    from chestdx.train.run import train_command

    if bool(args.recipe) == bool(args.variant):
        raise ChestDxError("give either --recipe NAME or --variant NAME (see `chestdx recipes`)")
    config = get_variant(args.variant).config if args.variant else get_recipe(args.recipe)
    if args.classes:
        config.classes = tuple(args.classes.split(","))
    summary = train_command(config, args.data, args.out, val_spec=args.val, source_spec=args.source,
                            seed=args.seed, epochs=args.epochs, cv=args.cv, progress=not args.quiet)
    _print_json(summary)


def cmd_evaluate(args: argparse.Namespace) -> None:
    """Score a model on a dataset with patient-level bootstrap confidence intervals."""
    from chestdx.evaluate.run import evaluate_model

    result = evaluate_model(args.model, _records(args.data, args.split), level=args.level,
                            n_resamples=args.resamples, seed=args.seed, report=args.report,
                            dataset_name=args.data, progress=not args.quiet, predictions_file=args.predictions)
    if args.json:
        _print_json(result)
    else:
        m = result["metrics"]
        print(f"{result['level']}-level, {result['n_cases']} cases, threshold {result['threshold']}")
        for key in ("auc", "f1", "sensitivity", "specificity", "accuracy", "kappa"):
            e = m.get(key) or {}
            print(f"  {key:12s} {_fmt(e.get('value'))}  (95% CI {_fmt(e.get('ci_low'))}..{_fmt(e.get('ci_high'))})")
        if args.report:
            print(f"report: {args.report}")


def cmd_batch(args: argparse.Namespace) -> None:
    """Score every study of a folder, dataset or CSV into one result table."""
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
    from chestdx.models.checkpoint import assemble_ensemble, export_onnx
    from chestdx.models.loading import load_model

    out = assemble_ensemble(args.members, args.out)
    model = load_model(out)
    files = export_onnx(model.net, out, model.config.input.size, model.config.input.channels)
    _print_json({"ensemble": str(out), "members": len(args.members), "onnx": [f.name for f in files],
                 "next": f"chestdx calibrate --model {out} --data ADAPTER:PATH --target f1"})


def _fmt(value) -> str:
    return "  n/a" if value is None else f"{value:.3f}"


def cmd_reader_study(args: argparse.Namespace) -> None:
    """Compare radiologists' reads with and without AI against the truth."""
    from chestdx.evaluate.reader_study import (load_model_scores, load_reads, reader_study,
                                               write_reader_study_report)

    truth, reads = load_reads(args.truth, args.reads)
    scores = load_model_scores(args.model_scores) if args.model_scores else None
    result = reader_study(truth, reads, model_scores=scores, n_resamples=args.resamples, seed=args.seed)
    if args.report:
        write_reader_study_report(result, args.report, model_scores=scores)
    _print_json(result)


def cmd_recipes(args: argparse.Namespace) -> None:
    """List recipes and bundled models."""
    from chestdx.models.bundled import list_bundled
    from chestdx.models.recipes import get_variant, list_recipes, list_variants

    print("recipes:        " + ", ".join(list_recipes()))
    for name in list_variants():
        variant = get_variant(name)
        print(f"variant        {name} = {variant.config.name} on {variant.data}, seeds "
              f"{', '.join(map(str, variant.seeds))}: {variant.notes}")
    print("bundled models: " + ", ".join(list_bundled()))


def _terminated(signum, frame) -> None:
    """SIGTERM ends the command the way Ctrl-C does: temporary folders are removed on the way out."""
    raise SystemExit(128 + signum)


def build_parser() -> argparse.ArgumentParser:
    """Returns: the argument parser with every sub-command."""
    parser = argparse.ArgumentParser(prog="chestdx", description=__doc__.splitlines()[0] + " Research use only, not for clinical use.")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--verbose", action="store_true", help="log details and show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="describe a study (DICOM folder/zip, NIfTI, image slices, X-ray)")
    p.add_argument("study")
    p.add_argument("--series", help="series UID or index (see the 'other series' list) instead of the default choice")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("sample", help="write a synthetic chest CT DICOM series for demos and tests")
    p.add_argument("out_dir")
    p.add_argument("--slices", type=int, default=120)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("preview", help="contact sheet of the selected slices with the lung mask outlined")
    p.add_argument("study")
    p.add_argument("-o", "--output", required=True, help="PNG file to write")
    p.add_argument("--series")
    p.add_argument("--max-slices", type=int, default=24)
    p.set_defaults(func=cmd_preview)

    for name, func, text in (("predict", cmd_predict, "diagnose a study: class probabilities, decision, slices that drove it"),
                             ("explain", cmd_explain, "heat maps of the slices that drove the decision")):
        p = sub.add_parser(name, help=text)
        p.add_argument("study")
        p.add_argument("--model", help="bundled model name or checkpoint folder (default: chosen by study kind)")
        p.add_argument("--series")
        p.add_argument("--kind", choices=["ct-volume", "ct-slice", "xray"], help="override the detected study kind")
        p.add_argument("--slices", type=int, default=3, help="how many top slices to explain")
        p.add_argument("--out", help="output folder for heat maps")
        p.set_defaults(func=func)
        if name == "predict":
            p.add_argument("--json", action="store_true", help="print one JSON object")
            p.add_argument("--top", type=int, default=5, help="how many top slices to list")
            p.add_argument("--explain", choices=["cam", "gradcam", "gradcampp", "occlusion", "boxes"],
                           help="also write heat maps with this method (needs --out)")
        else:
            p.add_argument("--method", default="gradcam", choices=["cam", "gradcam", "gradcampp", "occlusion", "boxes"])
            p.add_argument("--target", help="class to explain (default: the decided class)")

    p = sub.add_parser("train", help="train a recipe; writes model.pt + metadata.json")
    p.add_argument("--recipe", help="recipe name with its default config (see `chestdx recipes`)")
    p.add_argument("--variant", help="a registered variant, e.g. ct-default: the full config a bundled model was "
                                     "trained with (one network; see `chestdx recipes` for how it was assembled)")
    p.add_argument("--data", required=True, help="ADAPTER:PATH, e.g. ucsd:../shared/data/ucsd-covid-ct")
    p.add_argument("--val", help="ADAPTER:PATH for validation (default: the data's official split or a patient split)")
    p.add_argument("--source", help="ADAPTER:PATH of the source task (two-stage recipes such as detl)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--classes", help="comma-separated class names in logit order (default: the recipe's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, help="override the recipe's epochs")
    p.add_argument("--cv", type=int, help="patient-grouped K-fold cross-validation instead of one split")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="metrics with patient-level bootstrap CIs, curves, calibration, HTML report")
    p.add_argument("--model", help="bundled model name or checkpoint folder (default: the CT model)")
    p.add_argument("--data", required=True, help="ADAPTER:PATH")
    p.add_argument("--split", help="only records of this split (train/val/test)")
    p.add_argument("--level", default="patient", choices=["patient", "study", "slice"])
    p.add_argument("--resamples", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.add_argument("--report", help="write a self-contained HTML report here")
    p.add_argument("--predictions", help="score this `chestdx batch` result file (.parquet/.csv) instead of running "
                                         "the model (rows matched by path; no slice level)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("batch", help="score a whole archive (folder, ADAPTER:PATH or CSV) into one Parquet/CSV table")
    p.add_argument("source", help="folder of studies, ADAPTER:PATH, or a CSV with a 'path' column")
    p.add_argument("--out", required=True, help="result file: .parquet or .csv (one row per study)")
    p.add_argument("--model", help="bundled model name or checkpoint folder (default: chosen by each study's kind)")
    p.add_argument("--explain", default="none", choices=["none", "cam", "gradcam", "gradcampp", "occlusion", "boxes"],
                   help="also write heat maps with this method (needs --maps)")
    p.add_argument("--maps", help="folder for the heat maps: one sub-folder per study id")
    p.add_argument("--slices", type=int, default=3, help="how many top slices to explain per study")
    p.add_argument("--workers", type=int, help="worker processes / Ray actors (default: one per CPU, 2 GB each)")
    p.add_argument("--resume", action="store_true", help="keep the rows in --out and score only the studies it lacks")
    p.add_argument("--engine", default="local", choices=["local", "ray"], help="local process pool, or a Ray cluster")
    p.add_argument("--address", default="auto", help="Ray cluster: auto, ray://HOST:PORT, or local (start one here)")
    p.set_defaults(func=cmd_batch)

    p = sub.add_parser("calibrate", help="fit temperature (and an operating point) on validation data into the model card")
    p.add_argument("--model", required=True, help="checkpoint folder (its metadata.json is updated)")
    p.add_argument("--data", required=True, help="ADAPTER:PATH of validation data")
    p.add_argument("--split", default="val", help="records of this split only (default val; '' for all)")
    p.add_argument("--target", help="operating point: specificity=0.9, sensitivity=0.95 or f1 (best F1; binary models)")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("ensemble", help="put ai-corona checkpoints trained with different seeds together as one model")
    p.add_argument("members", nargs="+", help="checkpoint folders (same recipe, classes and input)")
    p.add_argument("--out", required=True, help="folder of the ensemble checkpoint")
    p.set_defaults(func=cmd_ensemble)

    p = sub.add_parser("reader-study", help="readers' sensitivity/specificity, unaided vs AI-aided, on the model ROC")
    p.add_argument("--truth", required=True)
    p.add_argument("--reads", required=True)
    p.add_argument("--model-scores")
    p.add_argument("--report")
    p.add_argument("--resamples", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_reader_study)

    p = sub.add_parser("recipes", help="list the registered recipes and bundled models")
    p.set_defaults(func=cmd_recipes)
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
    signal.signal(signal.SIGTERM, _terminated)
    try:
        args.func(args)
    except ChestDxError as exc:
        if args.verbose:
            raise
        print(f"chestdx: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("chestdx: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
