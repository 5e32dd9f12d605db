"""The typed model card: round trips, version-1 migration, and one-line errors for broken cards."""

from __future__ import annotations

import json
import shutil

import pytest

from chestdx.cli import main
from chestdx.errors import ChestDxError
from chestdx.models.bundled import WEIGHTS_DIR, list_bundled
from chestdx.models.card import SCHEMA_VERSION, Metric, MetricSet, ModelCard, read_card, write_card


@pytest.mark.parametrize("name", list_bundled())
def test_bundled_cards_are_current_and_round_trip(name, tmp_path):
    raw = json.loads((WEIGHTS_DIR / name / "metadata.json").read_text())
    assert raw["schema_version"] == SCHEMA_VERSION
    card = read_card(WEIGHTS_DIR / name)
    write_card(card, tmp_path)
    assert json.loads((tmp_path / "metadata.json").read_text()) == raw
    assert card.limitations and card.intended_use.startswith("Research only")
    for split in card.metrics.values():
        assert all(isinstance(m, Metric) for m in split.values.values())


def _minimal() -> dict:
    return {"name": "m", "recipe": {"name": "ai-corona", "classes": ["non-covid", "covid"]}}


def test_version_1_cards_are_migrated():
    card = ModelCard.from_dict({**_minimal(), "metrics": {"val": {"level": "image", "n": 10, "auc": 0.8, "f1": None,
                                                                  "folds": 5, "note": "x"}}})
    val = card.metrics["val"]
    assert val.get("auc") == Metric(0.8) and val.get("f1") == Metric(None)
    assert val.details == {"folds": 5, "note": "x"} and (val.level, val.n) == ("image", 10)
    assert card.to_dict()["metrics"]["val"]["auc"] == {"value": 0.8}
    assert card.schema_version == SCHEMA_VERSION and card.metric("test", "auc") is None


def test_metric_set_keeps_confidence_intervals():
    s = MetricSet.parse({"auc": {"value": 0.9, "ci_low": 0.8, "ci_high": 0.95, "n_valid": 2000}}, "val")
    assert s.get("auc") == Metric(0.9, 0.8, 0.95, 2000)
    assert s.to_dict() == {"auc": {"value": 0.9, "ci_low": 0.8, "ci_high": 0.95, "n_valid": 2000}}


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("name"), "'name' is missing"),
    (lambda d: d.update(threshold=1.5), "threshold 1.5 is outside 0..1"),
    (lambda d: d.update(temperature=0), "temperature 0.0 must be positive"),
    (lambda d: d.update(classes=["a", "b"]), "differ from the recipe's"),
    (lambda d: d.update(metrics={"val": {"auc": {"ci_low": 0.1}}}), "metrics.val.auc must have 'value'"),
    (lambda d: d.update(metrics={"val": {"auc": "high"}}), "metrics.val.auc must be a number"),
    (lambda d: d.update(schema_version=SCHEMA_VERSION + 1), "upgrade chestdx"),
    (lambda d: d.update(limitations="one sentence"), "'limitations' must be a list"),
])
def test_invalid_cards_are_refused_in_one_line(change, message):
    data = _minimal()
    change(data)
    with pytest.raises(ChestDxError) as err:
        ModelCard.from_dict(data, "x/metadata.json")
    text = str(err.value)
    assert message in text and "\n" not in text and text.startswith("x/metadata.json is not a valid chestdx model card")


def test_cli_says_what_is_wrong_with_a_broken_card(tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(WEIGHTS_DIR / "ct-default", model)
    data = json.loads((model / "metadata.json").read_text())
    data["threshold"] = "high"
    (model / "metadata.json").write_text(json.dumps(data))
    image = next((WEIGHTS_DIR.parents[1] / "tests").glob("*.py"))  # any path: the card is read first
    assert main(["--quiet", "predict", str(image), "--model", str(model)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "threshold must be a number" in err
    (model / "metadata.json").write_text("{not json")
    assert main(["--quiet", "predict", str(image), "--model", str(model)]) == 2
    assert "is not readable JSON" in capsys.readouterr().err
