"""vlmcls.gate: (result, threshold / baseline) -> verdict, a pure function usable from a script.

The verdict says passed / failed / no gate with its reasons; judging leaves the result untouched.
(tests/test_properties_gate.py walks the accuracy gate's boundary over many sizes.)
"""
from __future__ import annotations

import copy

from vlmcls import gate, metrics
from vlmcls.catalog import ModelEntry
from vlmcls.report import spec_fields
from vlmcls.runner import BudgetStop, CaseResult, CaseSpec
from vlmcls.settings import BackendSettings
from vlmcls.types import Prediction


def spec(threshold: float | None = None, smoke: bool = False) -> CaseSpec:
    model = ModelEntry(name="m", backend="echo", weights="smoke:echo", smoke=smoke,
                       thresholds={} if threshold is None else {20: threshold})
    return CaseSpec(model=model, ways=20, settings=BackendSettings())


def preds(n: int, correct: int, errors: int = 0, error: str = "HTTP 500: boom") -> list[Prediction]:
    """`correct` right answers, then wrong ones, the last `errors` of them error rows."""
    out = []
    for i in range(n):
        err = error if i >= n - errors else None
        pred = None if err is not None else (i % 10 if i < correct else (i + 1) % 10)  # "" is an error too
        out.append(Prediction(f"s{i}", i % 10, f"c{i % 10}", ("a", "b"), "x", pred, None,
                              "error" if err is not None else "match", error=err))
    return out


def result(s: CaseSpec, p: list[Prediction], **kw) -> CaseResult:
    return CaseResult(spec=s, predictions=p, metrics=metrics.compute(p) if p else None, images_per_s=None, **kw)


def test_an_interval_straddling_the_threshold_passes_and_one_wholly_below_fails():
    r = result(spec(0.8), preds(100, 78))
    lo, hi = r.metrics.accuracy_ci
    assert r.metrics.accuracy < 0.8 < hi  # below on the point estimate, reaching it on the interval
    assert gate.judge(r) == gate.Verdict("passed", 0.8)
    low = result(spec(0.8), preds(100, 60))
    verdict = gate.judge(low)
    assert verdict.status == "failed" and verdict.failed and verdict.threshold == 0.8
    (reason,) = verdict.reasons
    lo, hi = low.metrics.accuracy_ci
    assert reason == (f"{low.spec.case_id}: accuracy 0.600 (95% CI {lo:.4f}-{hi:.4f}, n=100): the CI's upper "
                      f"bound {hi:.4f} is below the gate 0.8") and verdict.reason == reason


def test_the_threshold_can_be_given_instead_of_the_catalogs():
    r = result(spec(0.8), preds(100, 60))
    assert gate.judge(r, threshold=0.5).status == "passed"
    assert gate.judge(r, threshold=None) == gate.Verdict("no gate", None)
    assert gate.judge(result(spec(), preds(100, 60))).status == "no gate"  # the entry has none at 20-way


def test_every_sample_an_error_fails_any_case():
    for smoke in (False, True):
        verdict = gate.judge(result(spec(smoke=smoke), preds(6, 0, errors=6)))
        assert verdict.status == "failed"
        assert verdict.reasons == (f"{spec().case_id}: every one of the 6 samples failed, e.g. HTTP 500: boom",)


def test_no_prediction_fails_with_the_reason_the_run_stopped():
    assert gate.judge(result(spec(), [])).reasons == (f"{spec().case_id}: no prediction was made (no samples)",)
    stopped = "stopped after the first 8 samples all failed"
    assert gate.judge(result(spec(), [], stopped=stopped)).reasons[0].endswith(f"({stopped})")


def test_smoke_plumbing_counts_backend_errors_not_unreadable_images():
    s = spec(smoke=True)
    unreadable = preds(10, 7, errors=3, error="cannot decode image: truncated JPEG")
    assert gate.judge(result(s, unreadable)).status == "passed"  # a smoke model's gate is 0
    backend = [*unreadable, *[Prediction(f"b{i}", 1, "c1", ("a", "b"), "", None, None, "error", error="HTTP 500")
                              for i in range(2)]]
    assert gate.judge(result(s, backend)).reasons == (f"{s.case_id}: smoke plumbing check: 2 error rows, 0 samples not run",)
    assert gate.judge(result(spec(), backend)).status == "no gate"  # a real model is judged on accuracy alone


def test_smoke_samples_not_run_fail_and_a_budget_stop_says_it_was_the_budget():
    """A --max-cost stop once passed a smoke case (and any case) on its first samples; it fails now,
    from the result's `budget_stop` (not from the note's words), with the budget's reason only."""
    s = spec(smoke=True)
    (reason,) = gate.judge(result(s, preds(10, 10), not_run=2, stopped="stopped: server gone")).reasons
    assert "0 error rows, 2 samples not run" in reason
    budget = "stopped by --max-cost 0.5 USD after 10 samples (spent 0.49 USD)"
    stop = BudgetStop(0.5, 10, 12)
    assert gate.judge(result(s, preds(10, 10), not_run=2, stopped=budget, budget_stop=stop)).reasons == (
        f"{s.case_id}: stopped by --max-cost 0.5 USD after 10 of 12 samples: the gate needs them all "
        "(raise --max-cost or lower --samples)",)


def test_a_baseline_significantly_better_fails_the_case_by_mcnemar():
    s = spec()
    base = gate.Baseline(preds(100, 90), {**spec_fields(s), "seed": 7})
    worse = result(s, preds(100, 60))
    before = copy.deepcopy(worse)
    verdict = gate.judge(worse, base)
    assert verdict.status == "failed" and "McNemar" in verdict.reason and verdict.reason.startswith(f"{s.case_id}: ")
    assert verdict.notes == ("the --baseline run differs in seed (7 vs 0)",)
    assert worse == before  # pure: the note is in the verdict, not written into the result
    assert not gate.judge(result(s, preds(100, 89)), base).failed  # one sample lost: not significant
    assert not gate.judge(result(s, preds(100, 89)), gate.Baseline(preds(100, 90), spec_fields(s))).notes
    assert gate.judge(worse, gate.Baseline(None, {})).status == "no gate"  # the baseline run lacks this case




def test_a_baseline_of_other_weights_or_another_server_is_named_beside_the_verdict():
    """What a served model's regression gate compares is a new deployment: the notes say which, as
    they do for another prompt (found by the ninth walkthrough: a weights change passed unremarked)."""
    from vlmcls.settings import BackendSettings as Settings

    served = CaseSpec(model=ModelEntry("acme", "openai-compatible", "acme/vlm-8b"), ways=20,
                      settings=Settings(base_url="http://new:8000/v1"))
    old = {**spec_fields(served), "weights": "acme/vlm-7b",
           "settings": {**spec_fields(served)["settings"], "base_url": "http://old:8000/v1"}}
    assert gate.judge(result(served, preds(100, 60)), gate.Baseline(preds(100, 60), old)).notes == (
        "the --baseline run differs in weights (acme/vlm-7b vs acme/vlm-8b), server (http://old:8000/v1 vs "
        "http://new:8000/v1)",)
    assert not gate.judge(result(served, preds(100, 60)), gate.Baseline(preds(100, 60), spec_fields(served))).notes


def test_a_baseline_saved_under_the_old_thesis_names_is_the_same_context():
    """Runs stored before the rename say "thesis" for the study's labels, resolver and layout: they
    compare as the same setting, while a real difference in one of them is still named."""
    study = CaseSpec(model=spec().model, ways=20, settings=BackendSettings(), labels_mode="raw")
    old = {**spec_fields(study), "labels": "thesis", "resolver": "thesis", "layout": "thesis"}
    assert (spec_fields(study)["labels"], spec_fields(study)["resolver"]) == ("raw", "study")
    assert not gate.judge(result(study, preds(100, 60)), gate.Baseline(preds(100, 60), old)).notes
    unique = spec()  # unique labels against the old baseline's study labels: that difference is kept
    assert gate.judge(result(unique, preds(100, 60)), gate.Baseline(preds(100, 60), old)).notes == (
        "the --baseline run differs in labels (thesis vs unique)",)


def test_a_baseline_with_nothing_to_compare_fails_the_case_only_under_strict_cases():
    """A --baseline that pairs no sample with the case checked nothing: it passes (the run's summary
    warns) unless --strict-cases asks for every case to be really compared."""
    s = spec(0.05)
    now = result(s, preds(100, 60))
    ran, skipped = spec_fields(s) | {"metrics": {"n": 100}}, spec_fields(s) | {"metrics": None, "status": "skipped"}
    unpaired = {
        "no per-sample records in the baseline": gate.Baseline(None, ran),  # a committed report without samples/
        "not in the baseline": gate.Baseline(None, {}),
        "the baseline has no result for it (skipped)": gate.Baseline(None, skipped),
        "no sample in common with the baseline (100 only in this run, 10 only in the baseline)":
            gate.Baseline([p.__class__(**{**p.__dict__, "sample_id": f"old-{p.sample_id}"}) for p in preds(10, 10)], ran),
    }
    for why, base in unpaired.items():
        assert gate.judge(now, base) == gate.Verdict("passed", 0.05)
        strict = gate.judge(now, base, strict=True)
        assert strict.status == "failed"
        assert strict.reasons == (f"{s.case_id}: --baseline gave nothing to compare ({why}{': cannot compare' if 'common' in why else ''}) (--strict-cases)",)
    paired = gate.Baseline(preds(100, 60), ran)  # compared, and not worse: strict changes nothing
    assert gate.judge(now, paired, strict=True) == gate.Verdict("passed", 0.05)
    assert gate.judge(result(s, []), gate.Baseline(None, {}), strict=True).reasons == (
        f"{s.case_id}: no prediction was made (no samples)",)  # no result: nothing to add
