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


# ---------------------------------------------------------------------------------- cost, smoke, widths
class PricedBackend:
    """Answers each query with its first candidate at a cost that differs per answer (1, 2, 3 ... mUSD),
    so a total that leaves any order's answers out cannot come out right."""

    kind = "text"

    def __init__(self, costs: list[float]):
        self.costs = costs  # every cost charged, in order (what a real API would have billed)

    def answer(self, queries):
        from vlmcls.types import Answer

        out = []
        for q in queries:
            self.costs.append(0.001 * (len(self.costs) + 1))
            out.append(Answer(text=q.labels[0], cost_usd=self.costs[-1]))
        return out

    def close(self) -> None:
        pass


def priced_run(tmp_path, costs, orders=3, **spec_kw):
    from vlmcls.labels import imagenet_labelset
    from vlmcls.resolve import Resolver
    from vlmcls.runner import CaseRunner
    from vlmcls.store import Store
    from vlmcls.types import Sample

    labels = imagenet_labelset()
    entry = ModelEntry(name="paid", backend="openai-compatible", weights="paid-model", smoke=spec_kw.pop("smoke", False))
    spec = CaseSpec(model=entry, ways=20, settings=BackendSettings(concurrency=2), orders=orders, **spec_kw)
    data = [Sample(f"s{i}", i * 7, _jpeg()) for i in range(4)]
    runner = CaseRunner(spec, labels, PricedBackend(costs), Resolver("exact", labels), Store(tmp_path / "s.sqlite"))
    return runner.run(data)


def _jpeg() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), "gray").save(buf, "JPEG")
    return buf.getvalue()


def test_cost_with_orders_counts_every_order_now_and_stored(tmp_path):
    """--orders 3 once showed order 0's cost only (a third of the bill) in the Cost column and the note."""
    costs: list[float] = []
    result = priced_run(tmp_path, costs)
    assert len(costs) == 12 and len(result.predictions) == 4  # 4 images x 3 orders were paid for
    row = report.case_row(result, status="passed", threshold=None, spent_now=sum(costs))
    order0 = sum(p.cost_usd for p in result.predictions)
    assert row["cost_usd"] == pytest.approx(sum(costs)) and order0 < sum(costs)
    (cost_cell,) = [r["Cost (USD)"] for r in report.parse_table(report.study_table([row]))]
    assert cost_cell == f"{sum(costs):.4f}" and "simulated" not in cost_cell
    (note,) = [line for line in report.notes([row]) if "cost" in line]
    assert f"cost {sum(costs):.4f} USD (all 3 orders): {sum(costs):.4f} spent now, 0.0000 stored" in note
    again: list[float] = []
    rerun = priced_run(tmp_path, again)  # answered from the store: nothing paid now, the whole bill stored
    assert again == [] and rerun.resumed == 12
    stored = report.case_row(rerun, status="passed", threshold=None, spent_now=0.0)
    (note,) = [line for line in report.notes([stored]) if "cost" in line]
    assert f"0.0000 spent now, {sum(costs):.4f} stored" in note
    (resumed,) = [line for line in report.notes([stored]) if "result store" in line]
    assert "12 answers (image x order, 3 orders)" in resumed


def test_max_cost_note_with_orders_counts_requests_not_images(tmp_path):
    costs: list[float] = []
    result = priced_run(tmp_path, costs, max_cost=0.0155)  # 1+2+3+4+5 mUSD = 0.015: five requests
    assert len(costs) == 5 and len(result.predictions) == 2  # two images reached order 0
    assert result.stopped.startswith("stopped by --max-cost 0.0155 USD after 5 requests (3 per image, one per order;")


def test_smoke_note_comes_before_the_first_table_and_a_stand_ins_cost_is_simulated(tmp_path):
    costs: list[float] = []
    smoke = report.case_row(priced_run(tmp_path, costs, orders=1, smoke=True), status="passed", threshold=None,
                            spent_now=sum(costs))
    real = {**smoke, "case_id": "real-20way", "tag": "real", "smoke": False}
    text = report.render_markdown([smoke, real])
    assert text.count(report.SMOKE_NOTE) == 1 and text.index(report.SMOKE_NOTE) < text.index("| Model")
    assert "cost is simulated" in text.split("| Model")[0]
    cells = {r["Model"]: r["Cost (USD)"] for r in report.parse_table(text.split("## 20-way")[1])}
    assert cells == {"paid *smoke*": f"{sum(costs):.4f} (simulated)", "real": f"{sum(costs):.4f}"}
    notes = {line.split("`")[1]: line for line in report.notes([smoke, real]) if "cost" in line}
    assert "simulated cost" in notes[smoke["case_id"]] and "spent now" not in notes[smoke["case_id"]]
    assert "simulated" not in notes["real-20way"] and "spent now" in notes["real-20way"]
    plain = report.render_markdown([real])
    assert report.SMOKE_NOTE not in plain and "simulated" not in plain


def test_sub_millisecond_times_have_one_rendering():
    assert {report._duration(s) for s in (0.0, 0.0001, 0.0004, 0.0005, 0.00049)} == {"<1 ms"}
    assert (report._duration(0.0006), report._duration(0.012), report._duration(2.1)) == ("1 ms", "12 ms", "2.10 s")


def test_the_report_says_how_the_accuracy_interval_was_drawn_and_flags_a_bootstrapped_old_run():
    new = make_row("new", 20, random_predictions(n=40))
    old = make_row("old", 20, random_predictions(n=40, seed=1))
    del old["metrics"]["accuracy_ci_method"]  # results.json of a run written before the exact interval
    assert new["metrics"]["accuracy_ci_method"] == "exact"
    alone = report.render_markdown([new])
    assert "*Accuracy 95% CI*: exact (Clopper-Pearson)" in alone and "bootstrap" not in alone
    mixed = report.render_markdown([new, old])
    (line,) = [x for x in mixed.splitlines() if x.startswith("*Accuracy 95% CI*")]
    assert f"The interval of {old['case_id']} is a seeded percentile bootstrap" in line and new["case_id"] not in line
