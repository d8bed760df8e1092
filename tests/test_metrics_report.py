"""Metrics equal scikit-learn; tables render in the study's shape and parse back; hostile answers stay data."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

from vlmcls import metrics, report
from vlmcls.catalog import ModelEntry
from vlmcls.runner import CaseResult, CaseSpec
from vlmcls.settings import BackendSettings
from vlmcls.types import Prediction


def random_predictions(n=400, classes=30, seed=0, unresolved=0.1):
    rng = random.Random(seed)
    preds = []
    for i in range(n):
        t = rng.randrange(classes)
        r = rng.random()
        p = None if r < unresolved else (t if r < 0.5 else rng.randrange(classes))
        preds.append(Prediction(f"s{i}", t, f"c{t}", (), "x", p, None, "match" if p is not None else "unresolved"))
    return preds


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_equal_sklearn_on_random_predictions(seed):
    preds = random_predictions(seed=seed)
    m = metrics.compute(preds, seed=0)
    y_true = [p.true_id for p in preds]
    y_pred = [-1 if p.pred_id is None else p.pred_id for p in preds]
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=sorted(set(y_true)), average="macro", zero_division=0)
    assert (m.precision, m.recall, m.f1) == pytest.approx((p, r, f))
    assert m.accuracy == pytest.approx(accuracy_score(y_true, y_pred))
    assert m.unresolved == sum(p.pred_id is None for p in preds)


def test_unresolved_counts_as_wrong_and_intervals_are_seeded():
    preds = random_predictions(unresolved=0.0)
    worse = [Prediction(**{**p.__dict__, "pred_id": None}) if i % 2 else p for i, p in enumerate(preds)]
    assert metrics.compute(worse).accuracy < metrics.compute(preds).accuracy
    a, b = metrics.compute(preds, seed=5), metrics.compute(preds, seed=5)
    assert a.accuracy_ci == b.accuracy_ci and a.accuracy_ci[0] < a.accuracy < a.accuracy_ci[1]
    assert a.f1_ci[0] <= a.f1 <= a.f1_ci[1]


def test_per_class_rows():
    preds = random_predictions()
    rows = metrics.per_class(preds, [f"c{i}" for i in range(30)])
    assert sum(r["support"] for r in rows) == len(preds)
    assert np.mean([r["recall"] for r in rows]) == pytest.approx(metrics.compute(preds).recall)


def make_row(name, ways, preds, smoke=False):
    entry = ModelEntry(name=name, backend="echo", weights="smoke:echo", smoke=smoke)
    spec = CaseSpec(model=entry, ways=ways, settings=BackendSettings())
    result = CaseResult(spec, preds, metrics.compute(preds), images_per_s=12.5)
    return report.case_row(result, status="passed", threshold=0.1)


def test_tables_parse_back_to_the_same_numbers(tmp_path):
    rows = [make_row("m-a", 20, random_predictions(seed=1)), make_row("m-b", 20, random_predictions(seed=2), smoke=True),
            make_row("m-a", 100, random_predictions(seed=3))]
    path = report.write_report(rows, tmp_path)
    text = path.read_text()
    assert "## 20-way" in text and "## 100-way" in text and "*smoke*" in text and "chance" in text
    table = report.parse_table(text.split("## 20-way")[1])
    assert list(table[0])[:5] == ["Model", "Precision", "Recall", "F1-score", "Accuracy"]
    for parsed, row in zip(table, rows[:2]):
        for col, key in [("Precision", "precision"), ("Recall", "recall"), ("F1-score", "f1"), ("Accuracy", "accuracy")]:
            assert float(parsed[col]) == float(f"{row['metrics'][key]:.3f}")
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["cases"][0]["metrics"]["accuracy"] == rows[0]["metrics"]["accuracy"]


def test_hostile_answer_cannot_break_a_table():
    hostile = "cat | dog\n\n| --- |\n<script>alert(1)</script> **bold** `x`"
    rows = [make_row(hostile, 20, random_predictions())]
    table = report.parse_table(report.study_table(rows))
    assert len(table) == 1 and len(table[0]) == 12
    assert table[0]["P/R/F1 average"] == "present"  # the table states its averaging convention
    assert "<script>" not in report.study_table(rows)
    assert table[0]["Model"].startswith("cat | dog")


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "r.md"
    report.atomic_write(target, "old")
    monkeypatch.setattr("os.replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        report.atomic_write(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["r.md"]
