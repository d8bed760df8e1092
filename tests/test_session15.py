"""Session 15: the report's settings line names the models that decode only candidate names."""
from __future__ import annotations

from vlmcls import metrics, report
from vlmcls.catalog import ModelEntry
from vlmcls.plan import CaseSpec
from vlmcls.runner import CaseResult
from vlmcls.settings import BackendSettings

from tests.test_metrics_report import random_predictions


def _row(name: str, constrained: bool, resolver: str = "study", seed: int = 0) -> dict:
    entry = ModelEntry(name=name, backend="echo", weights="smoke:echo", smoke=True)
    spec = CaseSpec(model=entry, ways=20, settings=BackendSettings(constrained=constrained), resolver=resolver)
    preds = random_predictions(seed=seed)
    return report.case_row(CaseResult(spec, preds, metrics.compute(preds), images_per_s=1.0),
                           status="passed", threshold=0.0)


def _settings_line(rows) -> str:
    text = report.render_markdown(rows)
    return next(line for line in text.splitlines() if line.startswith("dataset "))


def test_the_settings_line_names_the_constrained_models_and_no_other():
    line = _settings_line([_row("free", False), _row("tied", True, seed=1), _row("also", True, seed=2)])
    assert "resolver `study` (constrained decoding for tied, also)," in line
    assert "mixed settings" not in line and "free" not in line


def test_without_constrained_models_or_under_resolver_constrained_the_line_is_as_before():
    assert "constrained decoding" not in _settings_line([_row("free", False)])
    line = _settings_line([_row("c", True, resolver="constrained")])
    assert "resolver `constrained`," in line and "constrained decoding" not in line


def _named(name: str, digest: str, seed: int = 0) -> dict:
    return {**_row(name, False, seed=seed), "label_names": digest or None}


def test_the_settings_line_says_the_label_names_only_where_a_row_has_them():
    assert "label names" not in _settings_line([_named("a", ""), _named("b", "", seed=1)])
    line = _settings_line([_named("a", "0123abcd"), _named("b", "0123abcd", seed=1)])
    assert "label names `0123abcd`, resolver" in line and "mixed settings" not in line
    line = _settings_line([_named("a", "0123abcd"), _named("b", "", seed=1)])
    assert "label names `0123abcd`, `None`" in line and line.endswith("(mixed settings: see results.json)")


def test_a_row_names_its_spec_label_digest_or_none():
    from dataclasses import replace

    row = _row("x", False)
    assert row["label_names"] is None
    entry = ModelEntry(name="y", backend="echo", weights="smoke:echo", smoke=True)
    spec = replace(CaseSpec(model=entry, ways=20, settings=BackendSettings()), label_digest="feedface")
    preds = random_predictions()
    named = report.case_row(CaseResult(spec, preds, metrics.compute(preds), images_per_s=1.0), status="passed",
                             threshold=0.0)
    assert named["label_names"] == "feedface"


def test_small_classes_and_empty_folders_are_quoted_so_a_comma_in_a_name_reads_as_one_name():
    from vlmcls.report.dataset import dataset_section

    d = {"name": "mine", "classes": 3, "label_set": 3, "images": 12, "per_class": [1, 10],
         "small_classes": [["crane, heron", 1], ["fox (red)", 1]], "ignored_folders": ["misc, old"]}
    text = dataset_section({"dataset": d}, [])
    assert 'steps of 1/n): "crane, heron" (1), "fox (red)" (1); ' in text
    assert 'left out of the classes: "misc, old"\n' in text
