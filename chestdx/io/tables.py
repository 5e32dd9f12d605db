"""Tables of per-study rows on disk: Parquet or CSV by the file's suffix, replaced atomically."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from chestdx.errors import ChestDxError

TABLE_SUFFIXES = (".parquet", ".csv")


def table_format(path: Path) -> str:
    """Args: path: a table file. Returns: ``"parquet"`` or ``"csv"`` from its suffix.

    Raises:
        ChestDxError: any other suffix.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise ChestDxError(f"{path}: the output must end in .parquet or .csv (the suffix picks the format)")
    return suffix[1:]


def read_table(path: Path) -> list[dict]:
    """Read the rows of a Parquet or CSV table.

    Args:
        path: the file (``.parquet`` or ``.csv``).

    Returns:
        One dict per row, columns in file order; missing values are None (CSV values stay
        strings, as written).

    Raises:
        ChestDxError: the file cannot be read as a table.
    """
    path = Path(path)
    fmt = table_format(path)
    if not path.is_file():
        raise ChestDxError(f"{path} does not exist: give a result file written by `chestdx batch`")
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
        with open(path, newline="", encoding="utf-8") as fh:
            return [{k: (v if v != "" else None) for k, v in row.items()} for row in csv.DictReader(fh)]
    except (OSError, ValueError, csv.Error) as exc:
        raise ChestDxError(f"cannot read {path} as a {fmt} table ({exc}): give a result file written by "
                           "`chestdx batch`") from exc


def _arrow_column(pa, values: list):
    """An Arrow array of the values; as text when they mix types Arrow cannot hold in one column."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in values])


def write_table(path: Path, rows: list[dict], columns: list[str]) -> None:
    """Write rows as a Parquet or CSV table: to a temporary file beside ``path``, then renamed over it.

    A reader (or an interrupted writer) never sees a half-written file.

    Args:
        path: the file (``.parquet`` or ``.csv``).
        rows: one dict per row; a key missing from a row is an empty value.
        columns: the columns, in order.
    """
    path = Path(path)
    fmt = table_format(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.table({c: _arrow_column(pa, [row.get(c) for row in rows]) for c in columns}), temporary)
        else:
            with open(temporary, "w", newline="", encoding="utf-8") as fh:
                writer = csv.writer(fh)
                writer.writerow(columns)
                writer.writerows([["" if row.get(c) is None else row[c] for c in columns] for row in rows])
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
