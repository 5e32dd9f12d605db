"""Building blocks of chestdx's self-contained HTML reports (no external CSS, JS, fonts or links)."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from html import escape

from matplotlib.figure import Figure

RESEARCH_USE = (
    "Research use only. Not for clinical use: chestdx is not a medical device and must not be used "
    "to diagnose, treat or triage patients."
)

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0 auto; max-width: 1180px;
       padding: 0 16px 32px; color: #1d2430; line-height: 1.4; font-size: 14px; }
h1 { font-size: 24px; margin: 20px 0 6px; }
h2 { font-size: 18px; border-bottom: 2px solid #d8dee8; padding-bottom: 4px; margin-top: 28px; }
h3 { font-size: 15px; margin: 8px 0; }
.ruo { background: #fff3cd; border: 1px solid #e0b84c; padding: 8px 12px; font-weight: 600; border-radius: 4px; }
.muted { color: #5b6573; font-size: 12px; }
.grid { display: grid; gap: 18px; grid-template-columns: repeat(var(--cols), minmax(0, 1fr)); }
table { border-collapse: collapse; margin: 6px 0; }
th, td { border: 1px solid #d8dee8; padding: 4px 8px; text-align: right; vertical-align: top; }
th { background: #eef2f7; }
td.left, th.left { text-align: left; }
img { max-width: 100%; height: auto; }
nav a { margin-right: 12px; }
.cm td { text-align: center; min-width: 70px; }
.flow { display: flex; flex-wrap: wrap; gap: 18px; }
table.sortable th { cursor: pointer; }
"""

_SORT_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var body = table.tBodies[0], rows = Array.from(body.rows);
      var down = th.dataset.order !== "desc";
      th.dataset.order = down ? "desc" : "asc";
      rows.sort(function (a, b) {
        var x = a.cells[col].textContent, y = b.cells[col].textContent;
        var nx = parseFloat(x), ny = parseFloat(y);
        var c = (isNaN(nx) || isNaN(ny)) ? x.localeCompare(y) : nx - ny;
        return down ? -c : c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def figure_to_data_uri(fig: Figure, dpi: int = 100) -> str:
    """Encode a matplotlib figure as a ``data:image/png;base64,...`` URI.

    Args:
        fig: the figure (created with ``matplotlib.figure.Figure``; no pyplot state).
        dpi: resolution.

    Returns:
        The data URI.
    """
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def image(fig: Figure, alt: str) -> str:
    """An ``<img>`` element embedding the figure."""
    return f'<img src="{figure_to_data_uri(fig)}" alt="{escape(alt)}">'


def fmt(value: float | None, digits: int = 3) -> str:
    """A number for a table cell; ``n/a`` for an undefined (None or nan) value."""
    if value is None or value != value:
        return "n/a"
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def fmt_ci(entry: dict | None) -> str:
    """``value (low–high)`` of a ``{value, ci_low, ci_high}`` entry."""
    if not entry:
        return "n/a"
    if entry.get("ci_low") is None or entry["ci_low"] != entry["ci_low"]:
        return fmt(entry.get("value"))
    return f"{fmt(entry['value'])} ({fmt(entry['ci_low'])}&ndash;{fmt(entry['ci_high'])})"


def table(header: Sequence[str], rows: Iterable[Sequence[str]], left_columns: int = 1, css_class: str = "") -> str:
    """An HTML table; cells are inserted as given (escape user text before passing it).

    Args:
        header: column titles.
        rows: rows of cell HTML.
        left_columns: how many leading columns are left-aligned (labels).
        css_class: optional class of the table.

    Returns:
        The ``<table>`` HTML.
    """

    def cells(tag: str, values: Sequence[str]) -> str:
        return "".join(f'<{tag}{" class=left" if i < left_columns else ""}>{v}</{tag}>' for i, v in enumerate(values))

    body = "".join(f"<tr>{cells('td', r)}</tr>" for r in rows)
    cls = f' class="{css_class}"' if css_class else ""
    return f"<table{cls}><thead><tr>{cells('th', header)}</tr></thead><tbody>{body}</tbody></table>"


def mapping_table(data: dict) -> str:
    """A two-column table of a dict; nested dicts become nested tables, lists comma-separated."""
    rows = []
    for key, value in data.items():
        if isinstance(value, dict):
            cell = mapping_table(value)
        elif isinstance(value, list | tuple) and all(not isinstance(v, dict | list | tuple) for v in value):
            cell = escape(", ".join(map(str, value)))
        elif isinstance(value, str):
            cell = escape(value)
        else:
            cell = f'<span style="white-space: pre-wrap">{escape(json.dumps(value, indent=1, default=str))}</span>'
        rows.append([escape(str(key)), cell])
    return table(["field", "value"], rows, left_columns=2)


def columns(blocks: Sequence[str]) -> str:
    """Blocks side by side, one column each."""
    inner = "".join(f"<div>{b}</div>" for b in blocks)
    return f'<div class="grid" style="--cols: {len(blocks)}">{inner}</div>'


def section(section_id: str, title: str, body: str) -> str:
    """A report section with a stable ``id`` attribute."""
    return f'<section id="{section_id}"><h2>{escape(title)}</h2>{body}</section>'


def page(title: str, sections: Sequence[tuple[str, str, str]]) -> str:
    """A complete self-contained HTML page.

    Args:
        title: page title.
        sections: ``(id, title, body_html)`` of each section, in order.

    Returns:
        The HTML document.
    """
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    nav = "".join(f'<a href="#{sid}">{escape(t)}</a>' for sid, t, _ in sections)
    body = "".join(section(sid, t, b) for sid, t, b in sections)
    script = f"<script>{_SORT_SCRIPT}</script>" if 'class="sortable"' in body else ""  # inline: no network
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{_CSS}</style></head><body><h1>{escape(title)}</h1>"
        f'<p class="ruo">{RESEARCH_USE}</p><p class="muted">generated by chestdx, {stamp}</p>'
        f"<nav>{nav}</nav>{body}<p class=\"ruo\">{RESEARCH_USE}</p>{script}</body></html>"
    )
