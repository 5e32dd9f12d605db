"""The study report: one self-contained HTML page from a study's result and its explanation files.

It belongs with the output writers (``chestdx/outputs``) once it takes a ``Diagnosis``; here it
reads what the job wrote (``result.json``, the overlays), since the web process keeps no
diagnosis in memory.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import tempfile
from html import escape
from pathlib import Path

from chestdx.evaluate.html import mapping_table, page, table
from chestdx.outputs.explanations import overlay_name
from chestdx.serve.uploads import RequestError


def _png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def report_html(study_id: str, record: dict, explanation_dir: Path) -> str:
    """The report of a finished study.

    Args:
        study_id: the study's id (the only identifier shown).
        record: the study's result (the prediction record, with ``explanation``).
        explanation_dir: the folder of its Grad-CAM overlays.

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
        RequestError: 501 when Chromium is not installed, 500 when it fails.
    """
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise RequestError(501, "PDF reports need Chromium on the server (apt-get install chromium): "
                                "ask for format=html, or print the HTML report from a browser")
    with tempfile.TemporaryDirectory(prefix="chestdx-report-") as tmp:
        source, target = Path(tmp) / "report.html", Path(tmp) / "report.pdf"
        source.write_text(html)
        command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-pdf-header-footer",
                   f"--user-data-dir={tmp}/profile", f"--print-to-pdf={target}", source.as_uri()]
        done = subprocess.run(command, capture_output=True, timeout=timeout_s)
        if done.returncode != 0 or not target.is_file():
            raise RequestError(500, "Chromium could not print the report to PDF: ask for format=html")
        return target.read_bytes()
