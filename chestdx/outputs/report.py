"""The study report: one self-contained HTML page (and its PDF) from a prediction record and the files beside it.

Like `chestdx.outputs.prediction.prediction_text`, it renders a `prediction_record` (the web
service keeps records, not diagnoses, between the job and the request), here with the Grad-CAM
overlays of ``write_study_explanation`` and the lesion overlays of ``write_segmentation`` embedded.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import tempfile
from html import escape
from pathlib import Path

from chestdx.errors import ChestDxError
from chestdx.evaluate.html import mapping_table, page, table
from chestdx.outputs.explanations import overlay_name
from chestdx.outputs.prediction import LESION_LABELS
from chestdx.outputs.segmentation import LESION_COLOURS
from chestdx.outputs.segmentation import overlay_name as lesion_overlay_name


class ChromiumMissing(ChestDxError):
    """PDF reports need Chromium, and it is not installed."""


def _png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _number(value, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def quantification_html(record: dict, lesion_dir: Path | None = None) -> str:
    """The quantification of a record as HTML: headline, per-lung and zone tables, key-slice overlays.

    Args:
        record: a prediction record with ``quantification`` (and ``lesions``).
        lesion_dir: the folder ``write_segmentation`` wrote (its overlays are embedded), or None.

    Returns:
        The HTML fragment.
    """
    q = record["quantification"]
    unit = q["volume_unit"]
    sides = (("right lung", q["right_lung"]), ("left lung", q["left_lung"]), ("both lungs", q["chest"]))
    chest = q["chest"]
    out = (f'<p class="quantification"><b>{escape(chest["category"])}</b>: involvement '
           f'{chest["involvement_percent"]:.1f}% of the lung volume, severity score {chest["severity_score"]}/30 '
           f'(segmenter {escape(q["model"])})</p>')
    rows = [(f"lung volume ({unit})", *(_number(s["lung_volume"]) for _, s in sides)),
            (f"lesion volume ({unit})", *(_number(s["lesion_volume"]) for _, s in sides)),
            (f"ground-glass volume ({unit})", *(_number(s["ground_glass_volume"]) for _, s in sides)),
            (f"consolidation volume ({unit})", *(_number(s["consolidation_volume"]) for _, s in sides)),
            ("involvement (%)", *(_number(s["involvement_percent"], 2) for _, s in sides)),
            ("ground-glass share of lesion (%)", *(_number(s["ground_glass_share_percent"]) for _, s in sides)),
            ("consolidation share of lesion (%)", *(_number(s["consolidation_share_percent"]) for _, s in sides)),
            ("score", f"{q['right_lung']['score']}/15", f"{q['left_lung']['score']}/15", f"{chest['severity_score']}/30")]
    out += table(["", *(name for name, _ in sides)], rows, left_columns=1)
    zones = [(zone, *(f"{q[side]['zones'][zone]['involvement_percent']:.1f}% (score {q[side]['zones'][zone]['score']})"
                      for side in ("right_lung", "left_lung")))
             for zone in ("upper", "middle", "lower")]
    out += "<h3>Zones</h3>" + table(["zone", "right lung", "left lung"], zones, left_columns=1)
    out += f'<p class="muted">{escape(q["scoring"])}; lungs split by {escape(q["lung_split"])}.</p>'
    lesions = record.get("lesions") or {}
    if lesion_dir is not None and lesions.get("key_slices"):
        legend = ", ".join(f'<span style="color: rgb{LESION_COLOURS[int(v)]}">&#9632;</span> {escape(name)}'
                           for v, name in LESION_LABELS.items())
        figures = "".join(
            f'<figure><img src="{_png_data_uri(lesion_dir / lesion_overlay_name(s["index"]))}" '
            f'alt="lesions on slice {s["index"]}" width="256"><figcaption>slice {s["index"]}: '
            f'{s["lesion_pixels"]} lesion pixels</figcaption></figure>'
            for s in lesions["key_slices"] if (lesion_dir / lesion_overlay_name(s["index"])).is_file())
        out += f'<h3>Slices with the most lesion</h3><p class="muted">{legend}</p><div class="flow">{figures}</div>'
    return out


def report_html(study_id: str, record: dict, explanation_dir: Path, lesion_dir: Path | None = None) -> str:
    """The report of a finished study.

    Args:
        study_id: the study's id (the only identifier shown).
        record: the study's prediction record (with ``study``; ``explanation`` and
            ``quantification`` when they were made).
        explanation_dir: the folder of its Grad-CAM overlays.
        lesion_dir: the folder of its lesion segmentation (overlays), or None.

    Returns:
        The HTML document.
    """
    probabilities = record["probabilities"]
    rows = [(escape(c), f"{p:.3f}", "decision" if c == record["decision"] else "") for c, p in probabilities.items()]
    classes = list(probabilities)
    rule = f"threshold {record['threshold']:.2f} on {classes[-1]}" if len(classes) == 2 else "most probable class"
    result = (f"<p><b>Decision: {escape(record['decision'])}</b> ({escape(rule)})</p>"
              + table(["class", "probability", ""], rows, left_columns=1))
    if record["warnings"]:
        result += "<ul>" + "".join(f"<li>{escape(w)}</li>" for w in record["warnings"]) + "</ul>"
    top = ", ".join(f"{s['index']} ({s['score']:.2f})" for s in record["top_slices"])
    study = record.get("study") or {}
    result += f"<p>Study {escape(study_id)}: {study.get('n_slices', '?')} slices, kind {escape(record['kind'])}; " \
              f"slices that drove the decision: {escape(top)}</p>"
    sections = [("result", "Result", result)]
    if record.get("quantification"):
        sections.append(("lesions", "Lesions and lung involvement", quantification_html(record, lesion_dir)))
    explanation = record.get("explanation")
    if explanation:
        figures = "".join(
            f'<figure><img src="{_png_data_uri(explanation_dir / overlay_name(i))}" alt="Grad-CAM on slice {i}" '
            f'width="256"><figcaption>slice {i}: {escape(explanation["class"])} {score:.2f}</figcaption></figure>'
            for i, score in zip(explanation["slices"], explanation["slice_scores"]))
        sections.append(("evidence", "Evidence (Grad-CAM)", f'<div class="flow">{figures}</div>'))
    model = {k: round(v, 3) if isinstance(v, float) else v for k, v in record["model"].items() if v is not None}
    limitations = "".join(f"<li>{escape(text)}</li>" for text in record["limitations"])
    sections.append(("model", "Model", mapping_table(model) + (f"<h3>Limitations</h3><ul>{limitations}</ul>"
                                                               if limitations else "")))
    sections.append(("timing", "Timing (s)", mapping_table(record["timing_s"])))
    return page(f"chestdx report: study {study_id}", sections)


def html_to_pdf(html: str, timeout_s: float = 60.0) -> bytes:
    """Print an HTML page to PDF with headless Chromium (Debian's ``chromium`` package).

    Args:
        html: the document.
        timeout_s: longest wait for Chromium.

    Returns:
        The PDF bytes.

    Raises:
        ChromiumMissing: Chromium is not installed.
        ChestDxError: Chromium could not print the page.
    """
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise ChromiumMissing("PDF reports need Chromium on the server (apt-get install chromium): "
                              "ask for format=html, or print the HTML report from a browser")
    with tempfile.TemporaryDirectory(prefix="chestdx-report-") as tmp:
        source, target = Path(tmp) / "report.html", Path(tmp) / "report.pdf"
        source.write_text(html)
        command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-pdf-header-footer",
                   f"--user-data-dir={tmp}/profile", f"--print-to-pdf={target}", source.as_uri()]
        done = subprocess.run(command, capture_output=True, timeout=timeout_s)
        if done.returncode != 0 or not target.is_file():
            raise ChestDxError("Chromium could not print the report to PDF: ask for format=html")
        return target.read_bytes()
