"""The command line as a new user meets it (issue 22): fail fast, labels, per-case results, progress, conventions."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from chestdx.cli import _fmt, main
from chestdx.errors import ChestDxError
from chestdx.evaluate import html
from chestdx.explain.overlay import overlay_png, overlay_rgb
from chestdx.io.datasets import folder_per_class
from chestdx.io.sample import write_sample_series
from chestdx.models.recipes import get_recipe
from chestdx.preprocess.spec import InputSpec
from chestdx.train.loop import fit

REPO = Path(__file__).resolve().parents[1]
SIZE = 48


# ----------------------------------------------------------------------------- fail fast, without torch


def _run_cli(tmp_path, *argv: str) -> tuple[int, str, bool]:
    """Run the CLI in a fresh interpreter; returns exit status, stderr and whether torch was imported."""
    code = ("import sys; from chestdx.cli import main; rc = main(sys.argv[1:]); "
            "print('TORCH', 'torch' in sys.modules); sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=tmp_path,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=120)
    return done.returncode, done.stderr, "TORCH True" in done.stdout


@pytest.fixture(scope="module")
def sample_study(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sample") / "study"
    write_sample_series(folder, n_slices=8, size=64, progress=False)
    return folder


@pytest.mark.parametrize("case", ["missing study", "explain without out", "boxes", "non-empty out", "unknown model"])
def test_predict_and_explain_fail_fast_without_importing_torch(tmp_path, sample_study, case):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    argv, expected = {
        "missing study": (["predict", str(tmp_path / "nope")], "does not exist"),
        "explain without out": (["predict", str(sample_study), "--explain", "gradcam"], "needs --out"),
        "boxes": (["explain", str(sample_study), "--method", "boxes", "--out", str(tmp_path / "o")], "boxes"),
        "non-empty out": (["predict", str(sample_study), "--explain", "cam", "--out", str(tmp_path / "full")],
                          "already holds other files"),
        "unknown model": (["predict", str(sample_study), "--model", "no-such-model"], "no model"),
    }[case]
    rc, err, torch_imported = _run_cli(tmp_path, *argv)
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("chestdx: error: ") and expected in err
    assert not torch_imported
    assert not (tmp_path / "o").exists() and (tmp_path / "full" / "notes.txt").read_text() == "mine"


def test_boxes_are_accepted_from_a_dre_net_card(tmp_path, sample_study):
    model = tmp_path / "dre"
    model.mkdir()
    (model / "metadata.json").write_text(json.dumps({"name": "dre", "recipe": {"name": "dre-net"}}))
    rc, err, _ = _run_cli(tmp_path, "explain", str(sample_study), "--method", "boxes", "--model", str(model),
                          "--out", str(tmp_path / "o"))
    assert "boxes come only from" not in err  # it gets past the check (and fails later on the missing weights)


# ----------------------------------------------------------------------------- labels


@pytest.mark.parametrize("label, classes, expected", [
    ("covid", ("non-covid", "covid"), 1),
    ("non-covid", ("non-covid", "covid"), 0),
    ("pneumonia", ("non-covid", "covid"), 0),          # dre-net-demo, cc-ccii onto the bundled CT model
    ("normal", ("non-covid", "covid"), 0),
    ("disease", ("non-covid", "covid"), 0),
    ("other-pneumonia", ("non-covid", "covid-19"), 0),
    ("covid", ("other-pneumonia", "covid-19"), 1),
    ("pneumonia", ("other-pneumonia", "covid"), 0),
    ("covid-19", ("normal", "pneumonia", "covid"), 2),
    ("other-pneumonia", ("normal", "pneumonia", "covid"), 1),
])
def test_labels_map_onto_model_classes(label, classes, expected):
    from chestdx.io.labels import class_index

    assert class_index(label, classes) == expected


def test_unmappable_label_names_label_classes_and_override():
    from chestdx.io.labels import class_index

    with pytest.raises(ChestDxError) as err:
        class_index("normal", ("other-pneumonia", "covid"))
    assert "'normal'" in str(err.value) and "other-pneumonia" in str(err.value) and "--classes" in str(err.value)


def test_adapter_labels_are_all_known():
    from chestdx.io.labels import LABELS, canonical_label

    for label in ("covid", "pneumonia", "other-pneumonia", "non-covid", "normal", "disease"):
        assert canonical_label(label) in (*LABELS, "non-covid")


def test_positive_class_goes_last():
    from chestdx.io.labels import order_positive_last

    assert order_positive_last(("covid", "non-covid"), "covid-19") == ("non-covid", "covid")
    assert order_positive_last(("covid", "normal", "pneumonia"), "covid") == ("normal", "pneumonia", "covid")
    with pytest.raises(ChestDxError, match="--positive"):
        order_positive_last(("a", "b"), "covid-19")


def _write_slices(root: Path, labels=("covid", "pneumonia"), n_per_class: int = 6) -> None:
    rng = np.random.default_rng(0)
    for label in labels:
        (root / label).mkdir(parents=True)
        for i in range(n_per_class):
            img = rng.normal(60, 15, (64, 64))
            if label == "covid":
                img[20:32, 40:52] += 140
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / label / f"p{i:02d}.png")


def test_train_error_suggests_the_positive_class_last(tmp_path, capsys):
    _write_slices(tmp_path / "data", labels=("covid", "non-covid"), n_per_class=2)
    rc = main(["train", "--recipe", "ai-corona", "--data", f"folder:{tmp_path / 'data'}", "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert rc == 2 and "--classes non-covid,covid --positive covid-19" in err


def test_train_refuses_covid_as_the_negative_class(tmp_path, capsys):
    _write_slices(tmp_path / "data", labels=("covid", "non-covid"), n_per_class=2)
    rc = main(["train", "--recipe", "dre-net", "--data", f"folder:{tmp_path / 'data'}", "--out", str(tmp_path / "m"),
               "--classes", "covid,non-covid"])
    assert rc == 2 and "--positive covid-19" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


# ----------------------------------------------------------------------------- evaluate: classes, level, cases


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A one-epoch binary (non-covid, covid) model and a folder dataset labelled covid / pneumonia."""
    root = tmp_path_factory.mktemp("eval")
    _write_slices(root / "data")
    config = get_recipe("residual-attention", classes=("non-covid", "covid"))
    config.input = InputSpec(window="lung", selection="all", size=SIZE, channels=3, normalise="unit")
    config.train = {**config.train, "epochs": 1, "batch_size": 8, "bf16": False, "augment": {"elastic": 0, "blur": 0}}
    records = folder_per_class(root / "data")
    torch.manual_seed(0)
    fit(config, records, records, root / "model", seed=0, progress=False, threads=1)
    return root / "model", root / "data"


def test_evaluate_maps_pneumonia_says_the_level_and_writes_cases(tiny_model, tmp_path, capsys):
    model, data = tiny_model
    cases, report = tmp_path / "cases.csv", tmp_path / "r.html"
    rc = main(["--quiet", "evaluate", "--model", str(model), "--data", f"folder:{data}", "--level", "study",
               "--resamples", "20", "--cases", str(cases), "--report", str(report)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "study level: 12 cases" in out and "(95% CI" in out and "study level)" in out
    assert "patient level:" in out  # the other level, named
    rows = list(csv.DictReader(cases.open()))
    assert len(rows) == 12
    assert set(rows[0]) >= {"id", "patient", "label", "truth", "p(non-covid)", "p(covid)", "decision", "source"}
    assert {r["truth"] for r in rows} == {"covid", "non-covid"} and {r["label"] for r in rows} == {"covid", "pneumonia"}
    text = report.read_text()
    assert 'id="cases"' in text and 'class="sortable"' in text and "<script>" in text
    errors = [float(e) for e in _column(text, "error")]
    assert errors == sorted(errors, reverse=True) and len(errors) == 12


def _column(html_text: str, name: str) -> list[str]:
    """The cells of one column of the cases table."""
    table = html_text[html_text.index('class="sortable"'):]
    table = table[:table.index("</table>")]
    header = [h.split(">")[-1] for h in table.split("</th>")[:-1]]
    col = header.index(name)
    body = table[table.index("<tbody>"):]
    return [row.split("</td>")[col].split(">")[-1] for row in body.split("<tr>")[1:]]


def test_evaluate_classes_override(tiny_model, tmp_path, capsys):
    model, data = tiny_model
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    for f in model.iterdir():
        (renamed / f.name).write_bytes(f.read_bytes())
    card = json.loads((model / "metadata.json").read_text())
    card["classes"] = card["recipe"]["classes"] = ["normal", "covid"]
    (renamed / "metadata.json").write_text(json.dumps(card))
    argv = ["--quiet", "evaluate", "--model", str(renamed), "--data", f"folder:{data}", "--resamples", "20"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "'pneumonia'" in err and "--classes" in err
    assert main([*argv, "--classes", "non-covid,covid-19"]) == 0
    assert main([*argv, "--classes", "a,b,c"]) == 2


def test_predict_reads_the_chosen_series(tiny_model, tmp_path, capsys):
    model, _ = tiny_model
    write_sample_series(tmp_path / "a", n_slices=6, size=64, seed=1, progress=False)
    write_sample_series(tmp_path / "b", n_slices=4, size=64, seed=2, progress=False)
    assert main(["--quiet", "predict", str(tmp_path), "--model", str(model), "--series", "1", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert max(answer["slices_used"]) < 4  # the 4-slice series, not the default 6-slice one


def test_single_class_report_raises_no_matplotlib_warning(tiny_model, tmp_path):
    model, data = tiny_model
    for f in (data / "covid").iterdir():
        f.unlink()
    (data / "covid").rmdir()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert main(["--quiet", "evaluate", "--model", str(model), "--data", f"folder:{data}", "--resamples", "20",
                         "--report", str(tmp_path / "r.html")]) == 0
    finally:
        _write_slices(data, labels=("covid",))


def test_no_negative_zero():
    assert html.fmt(-0.0001) == "0.000" and _fmt(-0.0004).strip() == "0.000"
    assert html.fmt(-0.01) == "-0.010"


# ----------------------------------------------------------------------------- reader study


def _reader_files(tmp_path: Path) -> tuple[Path, Path]:
    truth = tmp_path / "truth.csv"
    truth.write_text("case,class\n" + "".join(f"c{i},{'COVID-19' if i % 2 else 'normal'}\n" for i in range(10)))
    reads = tmp_path / "reads.csv"
    lines = ["reader,case,class,yes_no,aided"]
    for reader in ("r1", "r2"):
        for i in range(10):
            for aided in ("no", "yes"):
                called = "yes" if (i % 2 or (aided == "no" and i == 2)) else "no"
                lines.append(f"{reader},c{i},COVID-19,{called},{aided}")
    reads.write_text("\n".join(lines) + "\n")
    return truth, reads


def test_reader_study_prints_a_summary_and_json_on_request(tmp_path, capsys):
    truth, reads = _reader_files(tmp_path)
    argv = ["reader-study", "--truth", str(truth), "--reads", str(reads), "--resamples", "50"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert not out.lstrip().startswith("{")
    assert "average reader" in out and "aided - unaided" in out and "sensitivity" in out
    assert main([*argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_readers"] == 2


def test_reader_study_help_documents_the_csv_columns(capsys):
    with pytest.raises(SystemExit):
        main(["reader-study", "--help"])
    out = capsys.readouterr().out
    assert "reader, case, class, yes_no, aided" in out and "case, class [, patient_id]" in out and "case, score" in out


# ----------------------------------------------------------------------------- progress


def test_progress_is_plain_lines_when_stderr_is_not_a_terminal(monkeypatch, capsys):
    from chestdx import progress

    monkeypatch.setattr(progress, "PLAIN_INTERVAL_S", 0.0)
    bar = progress.progress(range(3), "reading slices", "slice")
    assert not isinstance(bar, progress.tqdm)
    assert list(bar) == [0, 1, 2]
    err = capsys.readouterr().err
    assert "\r" not in err and err.splitlines() == [f"chestdx: reading slices {i}/3 slice" for i in (1, 2, 3)]
    assert list(progress.progress(range(3), "x", enabled=False)) == [0, 1, 2] and not capsys.readouterr().err


def test_occlusion_reports_progress(monkeypatch, capsys):
    from chestdx import progress
    from chestdx.explain.maps import explain_slices

    monkeypatch.setattr(progress, "PLAIN_INTERVAL_S", 0.0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    explain_slices(net, torch.rand(1, 1, 16, 16), "occlusion", target_class=0, occlusion_patch=8, occlusion_stride=8,
                   batch_size=2, progress=True)
    assert "chestdx: occlusion of 1 slice(s) 2/2 batch" in capsys.readouterr().err


# ----------------------------------------------------------------------------- conventions


def test_version_and_flags_after_the_command(sample_study, capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("chestdx ")
    assert main(["info", str(sample_study), "--quiet", "--verbose"]) == 0


def test_info_lists_other_series_readably(tmp_path, capsys):
    write_sample_series(tmp_path / "a", n_slices=6, size=64, seed=1, progress=False)
    write_sample_series(tmp_path / "b", n_slices=4, size=64, seed=2, progress=False)
    assert main(["--quiet", "info", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "other series (choose one with --series INDEX):" in out
    assert "{" not in out and "series None" not in out
    line = out.split("--series INDEX):\n")[1].splitlines()[0]
    assert line.split()[0] == "1" and "4 slices" in line
    assert main(["--quiet", "info", str(tmp_path), "--series", "1"]) == 0
    assert "slices      4" in capsys.readouterr().out


def test_info_of_an_image_has_no_series_none(tmp_path, capsys):
    Image.fromarray(np.full((64, 64), 90, np.uint8)).save(tmp_path / "x.png")
    assert main(["--quiet", "info", str(tmp_path / "x.png"), "--kind", "xray"]) == 0
    out = capsys.readouterr().out
    assert "kind        xray" in out and "None" not in out


def test_preview_of_an_xray_draws_no_lung_outline(tmp_path):
    yy, xx = np.mgrid[:256, :256]
    chest = np.full((256, 256), 200, np.uint8)
    chest[((yy - 128) / 90) ** 2 + ((xx - 80) / 40) ** 2 < 1] = 30  # two dark "lungs"
    chest[((yy - 128) / 90) ** 2 + ((xx - 176) / 40) ** 2 < 1] = 30
    Image.fromarray(chest).save(tmp_path / "cxr.png")
    assert main(["--quiet", "preview", str(tmp_path / "cxr.png"), "--kind", "xray", "-o", str(tmp_path / "s.png")]) == 0
    sheet = np.asarray(Image.open(tmp_path / "s.png").convert("RGB")).astype(int)
    green = (sheet[..., 1] > 200) & (sheet[..., 0] < 120) & (sheet[..., 2] < 120)
    assert not green.any()


def test_recipes_shows_classes_data_and_headline(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert "ct-ucsd" in out and "non-covid, covid" in out and "UCSD COVID-CT" in out
    assert "test AUC 0.867" in out and "level image" in out
    assert "test AUC per source (study level): soares 0.909 (0.818-0.970)" in out  # ct-default: per-source results


# ----------------------------------------------------------------------------- overlays


def test_overlay_low_end_is_transparent_with_colour_bar_and_caption(tmp_path):
    grey = np.full((64, 64), 100, dtype=np.uint8)
    heat = np.zeros((64, 64), dtype=np.float32)
    heat[:, 32:] = 1.0
    rgb = overlay_rgb(grey, heat, alpha=0.5)
    assert tuple(rgb[0, 0]) == (100, 100, 100)  # no heat: the slice unchanged, not tinted navy
    assert rgb[0, 63, 0] > rgb[0, 63, 2]
    path = overlay_png(grey, heat, tmp_path / "o.png", title="gradcam | class covid (p 0.93) | model ct-default")
    image = np.asarray(Image.open(path).convert("RGB")).astype(int)
    assert image.shape[1] > 64 and image.shape[0] > 64  # colour bar beside, caption above
    bar = image[image.shape[0] // 2:, 66:70]
    assert (np.abs(bar[..., 0] - bar[..., 2]) > 40).any()  # coloured ramp beside the slice
    caption = image[: image.shape[0] - 64, :64]
    assert (caption > 200).any()  # white caption text


@pytest.mark.parametrize("command", [["predict", "STUDY"], ["explain", "STUDY", "--out", "OUT"], ["batch", "STUDY", "--out", "OUT.parquet"],
                                     ["serve", "--data-dir", "OUT"]])
def test_a_lesion_segmenter_given_as_the_classifier_is_refused_in_one_line(command, tmp_path, capsys):
    write_sample_series(tmp_path / "study", n_slices=4, size=64, progress=False)
    args = [a.replace("STUDY", str(tmp_path / "study")).replace("OUT", str(tmp_path / "out")) for a in command]
    assert main(["--quiet", *args, "--model", "lesion-default"]) == 2
    error = capsys.readouterr().err.strip()
    assert "'lesion-default' is a lesion segmenter, not a classifier" in error and "\n" not in error
