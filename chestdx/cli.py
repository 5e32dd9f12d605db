"""Command-line interface: ``chestdx COMMAND ...``. Mirrors the Python API."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from chestdx.errors import ChestDxError

log = logging.getLogger("chestdx")


def _print_json(obj: dict) -> None:
    print(json.dumps(obj, indent=2, default=_json_default))


def _json_default(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


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
    for i, other in enumerate(summary["other_series"]):
        print(f"  other series [{i}] {other}")
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
