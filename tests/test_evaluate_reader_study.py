"""Reader study on generated reads with known answers."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest

from chestdx.errors import ChestDxError
from chestdx.evaluate.reader_study import load_model_scores, load_reads, reader_study, write_reader_study_report

N = 40  # cases C00..C39; the first 20 are COVID-19; two cases per patient
FLIPPED = [0, 1, 2, 3, 4]  # positives the "helped" reader misses unaided and finds aided


def _write(path, header, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _truth_positive(i):
    return i < 20


@pytest.fixture()
def study_files(tmp_path):
    truth = _write(tmp_path / "truth.csv", ["case", "class", "patient_id"],
                   [[f"C{i:02d}", "COVID-19" if _truth_positive(i) else "other", f"P{i // 2}"] for i in range(N)])
    rows = []
    for aided in ("no", "yes"):
        for i in range(N):
            right = "yes" if _truth_positive(i) else "no"
            rows.append(["perfect", f"C{i:02d}", "COVID-19", right, aided])
            # "helped": unaided misses the FLIPPED positives; in both conditions misses C05, C06
            # and calls the negatives C20-C23 positive
            call = right
            if aided == "no" and i in FLIPPED:
                call = "no"
            if 20 <= i < 24:
                call = "yes"  # four false positives in both conditions
            if i in (5, 6):
                call = "no"  # two misses in both conditions
            rows.append(["helped", f"C{i:02d}", "COVID-19", call, aided])
    reads = _write(tmp_path / "reads.csv", ["Reader", "Case", "Class", "Yes/No", "Aided"], rows)
    scores = _write(tmp_path / "scores.csv", ["case", "score"],
                    [[f"C{i:02d}", 0.9 - 0.01 * i if _truth_positive(i) else 0.1] for i in range(N)])
    return truth, reads, scores


def test_known_answers(study_files):
    truth_csv, reads_csv, scores_csv = study_files
    truth, reads = load_reads(truth_csv, reads_csv)
    result = reader_study(truth, reads, load_model_scores(scores_csv), n_resamples=300)
    json.dumps(result, allow_nan=False)
    assert (result["n_cases"], result["n_patients"], result["n_readers"], result["positive_class"]) == (40, 20, 2, "COVID-19")
    perfect = result["readers"]["perfect"]
    for condition in ("unaided", "aided"):
        for metric in ("sensitivity", "specificity", "f1", "kappa"):
            assert perfect[condition][metric]["value"] == 1.0
            assert perfect[condition][metric]["ci_low"] == 1.0
    assert perfect["difference"]["sensitivity"] == {"value": 0.0, "ci_low": 0.0, "ci_high": 0.0, "n_valid": 300}

    helped = result["readers"]["helped"]
    # unaided: tp 13, fn 7, fp 4, tn 16; aided: tp 18, fn 2, fp 4, tn 16
    assert helped["unaided"]["sensitivity"]["value"] == pytest.approx(13 / 20)
    assert helped["aided"]["sensitivity"]["value"] == pytest.approx(18 / 20)
    assert helped["difference"]["sensitivity"]["value"] == pytest.approx(5 / 20)
    assert helped["difference"]["specificity"]["value"] == 0.0
    assert helped["difference"]["f1"]["value"] == pytest.approx(36 / 42 - 26 / 37)
    # kappa: unaided po = 29/40, pe = (20*17 + 20*23)/1600 = 0.5; aided po = 34/40, pe = (20*22 + 20*18)/1600 = 0.5
    assert helped["difference"]["kappa"]["value"] == pytest.approx((34 / 40 - 0.5) / 0.5 - (29 / 40 - 0.5) / 0.5)
    # paired: the aided reader is never worse on any resample, so the interval stays >= 0
    assert helped["difference"]["sensitivity"]["ci_low"] >= 0 and helped["difference"]["sensitivity"]["ci_high"] > 0.2
    assert helped["difference"]["specificity"]["ci_low"] == helped["difference"]["specificity"]["ci_high"] == 0.0
    average = result["average_reader"]["difference"]["sensitivity"]["value"]
    assert average == pytest.approx(5 / 40)
    assert result["model"]["auc"]["value"] == 1.0


def test_report_draws_readers_on_the_roc_curve(study_files, tmp_path):
    truth, reads = load_reads(*study_files[:2])
    result = reader_study(truth, reads, n_resamples=50)
    assert result["model"] is None
    path = write_reader_study_report(result, tmp_path / "rs.html", model_scores=load_model_scores(study_files[2]))
    text = path.read_text(encoding="utf-8")
    for section in ("summary", "readers", "roc", "methods"):
        assert f'id="{section}"' in text
    assert len(re.findall(r'src="data:image/png;base64,', text)) == 1
    assert not re.search(r"https?://", text)
    assert "not for clinical use" in text.lower() and "helped" in text


def test_missing_column_is_named(tmp_path, study_files):
    bad = _write(tmp_path / "bad.csv", ["reader", "case", "class", "aided"], [["r", "C00", "COVID-19", "no"]])
    with pytest.raises(ChestDxError, match="no column 'yes_no'"):
        load_reads(study_files[0], bad)


def test_unknown_case_and_bad_answer_are_user_errors(tmp_path, study_files):
    unknown = _write(tmp_path / "u.csv", ["reader", "case", "class", "yes_no", "aided"], [["r", "X99", "COVID-19", "yes", "no"]])
    with pytest.raises(ChestDxError, match="X99"):
        load_reads(study_files[0], unknown)
    bad = _write(tmp_path / "b.csv", ["reader", "case", "class", "yes_no", "aided"], [["r", "C00", "COVID-19", "maybe", "no"]])
    with pytest.raises(ChestDxError, match="line 2.*'maybe'"):
        load_reads(study_files[0], bad)
    twice = _write(tmp_path / "t.csv", ["reader", "case", "class", "yes_no", "aided"],
                   [["r", "C00", "COVID-19", "yes", "no"], ["r", "C00", "COVID-19", "no", "0"]])
    with pytest.raises(ChestDxError, match="twice"):
        load_reads(study_files[0], twice)


def test_positive_class_must_be_chosen_when_several(tmp_path, study_files):
    two = _write(tmp_path / "two.csv", ["reader", "case", "class", "yes_no", "aided"],
                 [["r", "C00", "COVID-19", "1", "0"], ["r", "C00", "other", "0", "0"]])
    truth, reads = load_reads(study_files[0], two)
    with pytest.raises(ChestDxError, match="positive_class"):
        reader_study(truth, reads, n_resamples=10)
    result = reader_study(truth, reads, positive_class="other", n_resamples=10)
    assert result["n_reads"] == 1 and result["readers"]["r"]["unaided"]["specificity"]["value"] == 1.0


def test_reader_without_aided_reads_is_left_out_of_the_average(tmp_path, study_files):
    rows = [["perfect", f"C{i:02d}", "COVID-19", "yes" if _truth_positive(i) else "no", aided]
            for aided in ("no", "yes") for i in range(N)]
    rows += [["solo", f"C{i:02d}", "COVID-19", "no", "no"] for i in range(N)]  # never says yes, never aided
    reads_csv = _write(tmp_path / "solo.csv", ["reader", "case", "class", "yes_no", "aided"], rows)
    result = reader_study(*load_reads(study_files[0], reads_csv), n_resamples=30)
    assert result["readers"]["solo"]["unaided"]["sensitivity"]["value"] == 0.0
    assert result["readers"]["solo"]["difference"]["sensitivity"]["value"] is None
    assert result["readers"]["solo"]["n_cases_read"] == {"unaided": 40, "aided": 0}
    assert result["average_reader"]["unaided"]["sensitivity"]["value"] == 1.0
    assert any("solo" in w and "average" in w for w in result["warnings"])
