"""Progress reports: a bar when stderr is a terminal, plain periodic lines otherwise (logs, pipes, CI)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator

from tqdm.auto import tqdm

PLAIN_INTERVAL_S = 10.0
"""Seconds between two plain progress lines."""


class PlainProgress:
    """Iterate and write ``chestdx: DESC i/n UNIT`` to stderr at most every ``interval_s`` seconds.

    Args:
        iterable: what to iterate over.
        desc: what is being done.
        unit: what one item is.
        total: number of items (default ``len(iterable)`` when it has one).
        interval_s: seconds between lines (default ``PLAIN_INTERVAL_S``); once a line was
            written, the last item gets one too.
    """

    def __init__(self, iterable: Iterable, desc: str, unit: str = "item", total: int | None = None,
                 interval_s: float | None = None) -> None:
        self.iterable, self.desc, self.unit = iterable, desc, unit
        self.interval_s = PLAIN_INTERVAL_S if interval_s is None else interval_s
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.postfix = ""

    def set_postfix(self, **values) -> None:
        """Show ``key=value`` pairs after the count on the next line (as tqdm does)."""
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def _line(self, done: int) -> None:
        count = f"{done}/{self.total}" if self.total is not None else str(done)
        extra = f" ({self.postfix})" if self.postfix else ""
        print(f"chestdx: {self.desc} {count} {self.unit}{extra}", file=sys.stderr, flush=True)

    def __iter__(self) -> Iterator:
        last = time.monotonic()
        written = done = 0  # written: the count on the last line (0: none yet)
        for done, item in enumerate(self.iterable, start=1):
            yield item
            now = time.monotonic()
            if now - last >= self.interval_s:
                self._line(done)
                last, written = now, done
        if 0 < written < done:
            self._line(done)


def progress(iterable: Iterable, desc: str, unit: str = "item", *, enabled: bool = True, total: int | None = None,
             leave: bool = False, min_items: int = 1):
    """Report progress over ``iterable`` the way the terminal allows.

    Args:
        iterable: what to iterate over.
        desc: what is being done (``"reading DICOM headers"``).
        unit: what one item is.
        enabled: False: no report at all (``--quiet``).
        total: number of items, when ``iterable`` has no length.
        leave: keep the finished bar on screen.
        min_items: report only when there are at least this many items.

    Returns:
        A tqdm bar when stderr is a terminal, else a `PlainProgress` (silent when disabled);
        both iterate over the same items and take ``set_postfix``.
    """
    size = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
    if not enabled or (size is not None and size < min_items):
        return PlainProgress(iterable, desc, unit, total, interval_s=float("inf"))
    if sys.stderr.isatty():
        return tqdm(iterable, desc=desc, unit=unit, total=total, leave=leave)
    return PlainProgress(iterable, desc, unit, total)
