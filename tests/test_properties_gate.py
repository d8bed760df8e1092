"""Properties of the case gates (vlmcls/gate.py `judge`), on real intervals (exact, Clopper-Pearson).

The accuracy gate fails a case only when the *upper* end of its 95 % interval lies below the
threshold, so a small sample does not fail a good model by chance. The tests sit next to the
threshold, where comparing the wrong end, or `<=` for `<`, changes the verdict. A smoke case is
gated on plumbing: any error row, or any sample not run (unless --max-cost stopped it), fails.
"""
from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import pytest

from vlmcls import gate, metrics, report
from vlmcls.compare import Run
from vlmcls.catalog import ModelEntry
from vlmcls.outcomes import Case, CaseRun, case_row
from vlmcls.resolve import Resolver
from vlmcls.runner import BudgetStop, CaseResult, CaseRunner, CaseSpec
from vlmcls.settings import BackendSettings
from vlmcls.types import Prediction, Sample

from test_properties_store import LABELS, Scripted, jpeg

THRESHOLD = 0.8
SIZES = (40, 100, 400, 1000)


def reasons(r: CaseResult, baseline: gate.Baseline | None = None) -> list[str]:
    """The reasons the gate gives; also checks that judging leaves the result as it was."""
    notes = list(r.notes)
    verdict = gate.judge(r, baseline)
    assert r.notes == notes and verdict.failed == bool(verdict.reasons) == (verdict.status == "failed")
    return list(verdict.reasons)


def case(threshold: float | None = THRESHOLD, smoke: bool = False) -> Case:
    """A smoke model's gate is 0 unless given (its threshold() default), so pass None for smoke."""
    threshold = None if smoke else threshold
    model = ModelEntry(name="m", backend="echo", weights="smoke:echo", smoke=smoke,
                       thresholds={} if threshold is None else {20: threshold})
    return Case(CaseSpec(model=model, ways=20, settings=BackendSettings()))


def predictions(n: int, correct: int, errors: int = 0, error: str = "HTTP 500") -> list[Prediction]:
    """`correct` right answers, then wrong ones, then `errors` error rows; classes cycle over 10."""
    out = []
    for i in range(n):
        true = i % 10
        if i < correct:
            pred, err = true, None
        elif i >= n - errors:
            pred, err = None, error
        else:
            pred, err = (true + 1) % 10, None
        out.append(Prediction(f"s{i}", true, f"c{true}", ("a", "b"), "x", pred, None, "error" if err else "match", error=err))
    return out


def result(c: Case, preds: list[Prediction], m: metrics.Metrics | None = None, **kw) -> CaseResult:
    m = m or (metrics.compute(preds) if preds else None)
    return CaseResult(spec=c.spec, predictions=preds, metrics=m, images_per_s=None, **kw)


def accuracy_failures(c: Case, r: CaseResult) -> list[str]:
    return [w for w in reasons(r) if "below the gate" in w]


# ---------------------------------------------------------------- the accuracy gate
@pytest.mark.parametrize("n", SIZES)
def test_a_case_whose_interval_straddles_the_threshold_passes(n):
    """Accuracy just under the threshold: the point estimate is below, the interval reaches it."""
    preds = predictions(n, math.ceil(n * THRESHOLD) - 1)
    r = result(case(), preds)
    lo, hi = r.metrics.accuracy_ci
    assert r.metrics.accuracy < THRESHOLD and lo < THRESHOLD < hi  # the construction lands where meant
    assert reasons(r) == []


@pytest.mark.parametrize("n", SIZES)
def test_a_case_whose_interval_lies_wholly_below_the_threshold_fails(n):
    half_width = 1.96 * math.sqrt(THRESHOLD * (1 - THRESHOLD) / n)
    preds = predictions(n, math.floor(n * (THRESHOLD - 2 * half_width)))
    r = result(case(), preds)
    lo, hi = r.metrics.accuracy_ci
    assert hi < THRESHOLD
    (why,) = reasons(r)
    assert f"accuracy {r.metrics.accuracy:.3f}" in why and f"95% CI {lo:.4f}-{hi:.4f}" in why
    assert f"n={n}" in why and f"upper bound {hi:.4f} is below the gate {THRESHOLD:.4g}" in why
    assert why.startswith(f"{r.spec.case_id}: ")


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("share", [0.3, 0.55, 0.77, 0.9])
def test_the_verdict_is_the_upper_bound_against_the_threshold(n, share):
    """For thresholds all around the interval, including exactly at its upper end."""
    preds = predictions(n, round(n * share))
    m = metrics.compute(preds)
    lo, hi = m.accuracy_ci
    grid = [lo - 0.01, lo, (lo + hi) / 2, m.accuracy, hi, hi + 1e-9, hi + 0.01, min(1.0, hi + 0.2)]
    for t in grid:
        c = case(t)
        fails = bool(accuracy_failures(c, result(c, preds, m)))
        assert fails == (hi < t), f"threshold {t} with interval {lo}-{hi}"


def test_no_threshold_means_no_accuracy_gate():
    c = case(threshold=None)
    r = result(c, predictions(100, 0))
    assert reasons(r) == []


def test_check_records_the_verdict_for_the_row_and_fails_the_test():
    for correct, status in ((79, "passed"), (40, "failed")):
        c = case()
        run = CaseRun(SimpleNamespace(baseline=None))
        r = result(c, predictions(100, correct))
        if status == "failed":
            with pytest.raises(pytest.fail.Exception, match="below the gate"):
                run.check(r)
        else:
            run.check(r)
        row = run.row()
        assert row["status"] == status and row["threshold"] == THRESHOLD and row["case_id"] == c.case_id
        assert ("below the gate" in row["reason"]) == (status == "failed")


def test_every_outcome_makes_a_row_of_the_same_shape():
    """Passed, skipped, error and crashed rows all carry the case's spec fields (a crash row once had
    `ways: 0` and no model); a test that ended before its case said anything makes none."""
    c = case()
    ran = CaseRun(SimpleNamespace(baseline=None))
    ran.check(result(c, predictions(20, 20)))
    skipped = CaseRun(None)
    with pytest.raises(pytest.skip.Exception):
        skipped.spec = c.spec
        skipped.not_run("skipped", "no key")
    rows = [ran.row(), skipped.row(), case_row(c.spec, status="error", reason="x"), case_row(c.spec, status="crashed", reason="y")]
    fields = report.spec_fields(c.spec)
    assert all(fields.items() <= r.items() and {"status", "reason", "metrics", "stages", "notes"} <= set(r) for r in rows)
    assert [r["status"] for r in rows] == ["passed", "skipped", "error", "crashed"] and rows[0]["metrics"]
    assert CaseRun(None).row() is None and case_row(None, status="crashed") is None


def test_a_case_without_a_threshold_has_no_gate():
    c = case(threshold=None)
    verdict = gate.judge(result(c, predictions(10, 3)))
    assert verdict.status == "no gate" and verdict.threshold is None and not verdict.failed


# ---------------------------------------------------------------- error rows and the plumbing gate
@pytest.mark.parametrize("n", (2, 5, 40))
def test_a_smoke_case_with_some_error_rows_fails_the_plumbing_gate(n):
    for errors in sorted({1, n // 2, n - 1}):
        c = case(smoke=True)
        why = reasons(result(c, predictions(n, n - errors, errors=errors)))
        rows = "1 error row," if errors == 1 else f"{errors} error rows,"
        assert any(f"smoke plumbing check: {rows}" in w for w in why), (n, errors, why)
    c = case(smoke=True)
    assert reasons(result(c, predictions(n, 0))) == []  # wrong answers are not plumbing


@pytest.mark.parametrize("n", (3, 40))
def test_every_sample_failing_fails_any_case(n):
    for smoke in (False, True):
        c = case(threshold=None, smoke=smoke)
        (why,) = reasons(result(c, predictions(n, 0, errors=n)))
        assert f"every one of the {n} samples failed, e.g. HTTP 500" in why


def test_the_first_error_is_quoted_up_to_200_characters():
    c = case(threshold=None)
    long = "E" * 200 + "Z" * 100
    (why,) = reasons(result(c, predictions(5, 0, errors=5, error=long)))
    assert why.endswith("e.g. " + "E" * 200)


def test_a_case_with_no_prediction_fails_and_says_why():
    c = case()
    assert reasons(result(c, [])) == [f"{c.case_id}: no prediction was made (no samples)"]
    stopped = "stopped after the first 8 samples all failed"
    assert reasons(result(c, [], stopped=stopped)) == [f"{c.case_id}: no prediction was made ({stopped})"]


def test_unreadable_images_are_the_data_not_the_plumbing():
    """A smoke case fails on backend error rows, not on input errors (listed in the report instead)."""
    c = case(smoke=True)
    bad_input = "cannot decode image: truncated JPEG"
    assert reasons(result(c, predictions(10, 7, errors=3, error=bad_input))) == []
    preds = predictions(10, 5, errors=3, error=bad_input) + predictions(2, 0, errors=2)
    preds = [dataclasses.replace(p, sample_id=f"x{i}") for i, p in enumerate(preds)]
    (why,) = reasons(result(c, preds))
    assert "smoke plumbing check: 2 error rows, 0 samples not run" in why


def baseline_of(tmp_path, c: Case, preds: list[Prediction], **row) -> gate.Baseline:
    """This case in a saved --baseline run holding `preds` (written by the report writer)."""
    report.write_samples(tmp_path / "samples" / f"{c.case_id}.jsonl", preds)
    return gate.baseline_of(Run(tmp_path, {}, [{**report.spec_fields(c.spec), **row}]), c.case_id)


def test_a_case_significantly_worse_than_its_baseline_fails(tmp_path):
    c = case(threshold=None)
    base = baseline_of(tmp_path, c, predictions(100, 90), prompt="label-only")
    worse = result(c, predictions(100, 60))
    (reason,) = reasons(worse, base)
    assert reason.startswith(f"{c.case_id}: ") and "McNemar" in reason
    assert gate.judge(worse, base).notes == ("the --baseline run differs in prompt (label-only vs thesis)",)
    assert worse.notes == []  # said in the verdict (and so in the row), not written into the result
    assert reasons(result(c, predictions(100, 89)), base) == []  # one sample lost: not significant
    assert reasons(worse) == []  # without --baseline, no paired test
    assert reasons(worse, gate.Baseline(None, {})) == []  # a baseline run without this case


def test_a_real_model_with_a_few_error_rows_is_judged_on_accuracy_alone():
    """Error rows count as wrong answers in the accuracy; only smoke models fail on them outright."""
    c = case(threshold=0.5)
    assert reasons(result(c, predictions(100, 95, errors=3))) == []


def test_a_smoke_case_with_samples_not_run_fails_and_a_budget_stop_with_the_budgets_reason():
    c = case(smoke=True)
    preds = predictions(10, 10)
    (why,) = reasons(result(c, preds, not_run=3, stopped="stopped after the first 8 samples all failed"))
    assert "0 error rows, 3 samples not run" in why
    budget = "stopped by --max-cost 0.5 USD after 10 samples (spent 0.49 USD)"
    (why,) = reasons(result(c, preds, not_run=3, stopped=budget, budget_stop=BudgetStop(0.5, 10, 13)))
    assert why == f"{c.case_id}: stopped by --max-cost 0.5 USD after 10 of 13 samples: the gate needs them all (raise --max-cost or lower --samples)"
    assert "no prediction was made (stopped by --max-cost" in reasons(result(c, [], stopped=budget))[0]


@pytest.mark.parametrize("failing", [{"s1"}, {"s0", "s3", "s5"}])
def test_a_smoke_run_with_backend_error_rows_fails_end_to_end(failing):
    """Through the runner: a backend that answers some samples with an error."""
    c = case(smoke=True)
    samples = [Sample(f"s{i}", i * 7, jpeg(i * 30)) for i in range(6)]
    r = CaseRunner(c.spec, LABELS, Scripted(failing=failing), Resolver("exact", LABELS), None).run(samples)
    assert r.metrics.errors == len(failing) < r.metrics.n
    why = reasons(r)
    rows = "1 error row" if len(failing) == 1 else f"{len(failing)} error rows"
    assert why == [f"{c.case_id}: smoke plumbing check: {rows}, 0 samples not run"]
    healthy = CaseRunner(c.spec, LABELS, Scripted(), Resolver("exact", LABELS), None).run(samples)
    assert reasons(healthy) == []
