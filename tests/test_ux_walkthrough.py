"""What a newcomer's walkthrough tripped on (runner and report side), each as the user met it.

A case that --max-cost stopped once passed the gate on its first samples; --nli-overlap and
--orders K > N silently did less than asked; the store note read as if every answer came from the
store; the study section described a table a smoke-only run does not have; "1 unreadable images".
"""
from __future__ import annotations

import json

import pytest

from test_nli_overlap import ECHO, samples
from test_runner_mutants import LABELS, LastCandidate, Scripted, make_runner
from vlmcls import candidates as cand
from vlmcls import gate, metrics, report
from vlmcls.catalog import ModelEntry, load_catalog
from vlmcls.report import compare
from vlmcls.report.markdown import notes, unreadable_section
from vlmcls.runner import OVERLAP_NOTE, BudgetStop, CaseResult, CaseRunner, CaseSpec
from vlmcls.settings import BackendSettings
from vlmcls.store import Store
from vlmcls.types import Answer, Prediction

GATE_NEEDS_ALL = "the gate needs them all (raise --max-cost or lower --samples)"


# ---------------------------------------------------------------------------------- 1. --max-cost fails the gate
def test_a_budget_stop_is_data_on_the_result_and_fails_the_gate():
    """0.01 USD per sample, --max-cost 0.035, 8 samples: 1 sample (nothing known), then room for 2
    more, then none (as worked out in test_runner_mutants): 3 of 8 scored. The gate once passed this
    smoke case (0 is its threshold); now it fails, from `budget_stop`, with the budget's reason only."""
    result = make_runner(Scripted(cost=0.01), LastCandidate(), max_cost=0.035).run(samples(8))
    assert result.budget_stop == BudgetStop(0.035, 3, 8, 1) and result.not_run == 5
    verdict = gate.judge(result)
    assert verdict.status == "failed"
    assert verdict.reasons == (f"echo-20way: stopped by --max-cost 0.035 USD after 3 of 8 samples: {GATE_NEEDS_ALL}",)


def test_a_budget_that_pays_for_every_sample_leaves_no_stop_and_passes():
    result = make_runner(Scripted(cost=0.01), LastCandidate(), max_cost=1.0).run(samples(8))
    assert result.budget_stop is None and result.stopped == "" and gate.judge(result).status == "passed"


def test_a_budget_stop_fails_a_real_model_without_a_threshold_too():
    """Not only the smoke plumbing: a case of 3 scored samples out of 8 is no result for any gate."""
    real = ModelEntry(name="real", backend="echo", weights="smoke:echo")
    spec = CaseSpec(model=real, ways=20, settings=BackendSettings(batch_size=4), resolver="nli", max_cost=0.035)
    result = CaseRunner(spec, LABELS, Scripted(cost=0.01), LastCandidate(), None).run(samples(8))
    verdict = gate.judge(result)
    assert verdict.status == "failed" and verdict.threshold is None
    assert verdict.reason == f"real-20way: stopped by --max-cost 0.035 USD after 3 of 8 samples: {GATE_NEEDS_ALL}"


def test_with_orders_the_budget_reason_counts_requests():
    """--orders 2: 4 images are 8 requests; the stop after 3 leaves s1's second order unasked."""
    result = make_runner(Scripted(cost=0.01), LastCandidate(), orders=2, max_cost=0.035).run(samples(4))
    assert result.budget_stop == BudgetStop(0.035, 3, 8, 2)
    assert gate.judge(result).reason == ("echo-20way: stopped by --max-cost 0.035 USD after 3 of 8 requests "
                                         "(4 images x 2 orders): the gate needs them all "
                                         "(raise --max-cost, or lower --samples or --orders)")


def test_the_gate_reads_the_field_not_the_notes_words():
    """A result whose note merely reads like a budget stop is judged on what the runner recorded."""
    preds = make_runner(Scripted(), LastCandidate()).run(samples(4)).predictions
    worded = CaseResult(ECHO_SPEC, preds, metrics.compute(preds), None, not_run=2,
                        stopped="stopped by --max-cost 0.5 USD after 4 samples (spent 0.49 USD)")
    assert gate.judge(worded).reason == "echo-20way: smoke plumbing check: 0 error rows, 2 samples not run"


ECHO_SPEC = CaseSpec(model=ECHO, ways=20, settings=BackendSettings())


def rows_of(p: pytest.Pytester) -> dict[str, dict]:
    (run,) = [d for d in (p.path / "reports").iterdir() if d.is_dir()]
    return {r["case_id"]: r for r in json.loads((run / "results.json").read_text())["cases"]}


def test_the_walkthroughs_max_cost_run_fails_with_the_reason(bench):
    """The walkthrough's command, as the user ran it: the row showed `passed` on n 3 of 8."""
    out = bench.runpytest_subprocess("bench", "-k", "smoke-openai", "--max-cost", "0.0001", "--refresh",
                                     "--ways", "20", "--samples", "8", "-p", "no:cacheprovider")
    out.assert_outcomes(failed=1)
    row = rows_of(bench)["smoke-openai-20way"]
    n = row["metrics"]["n"]
    assert row["status"] == "failed" and 0 < n < 8
    assert row["reason"] == f"smoke-openai-20way: stopped by --max-cost 0.0001 USD after {n} of 8 samples: {GATE_NEEDS_ALL}"
    out.stdout.fnmatch_lines([f"smoke-openai-20way: stopped by --max-cost 0.0001 USD after {n} of 8 samples: *"])


# ---------------------------------------------------------------------------------- 2. --nli-overlap not applied
class Direct(Scripted):
    """A backend that names a class itself (CLIP, a classifier): nothing goes to the resolver."""

    def answer(self, queries):
        return [Answer(class_id=q.class_ids[0], stage="direct") for q in queries]


def overlap_notes(result) -> list[str]:
    return [n for n in result.notes if n.startswith("--nli-overlap")]


@pytest.mark.parametrize("spec, why", [
    ({"max_cost": 5.0}, "--max-cost sizes each window from the cost of the ones before, so windows run one after another"),
    ({"mode": "exact"}, "it applies to --resolver study and nli only, not exact"),
    ({"mode": "rank"}, "it applies to --resolver study and nli only, not rank"),
    ({"mode": "constrained"}, "it applies to --resolver study and nli only, not constrained"),
])
def test_overlap_asked_for_and_not_applied_says_why(spec, why):
    runner = make_runner(Scripted(cost=0.01), LastCandidate(), nli_overlap=True, **spec)
    assert not runner.overlaps()
    assert overlap_notes(runner.run(samples(4))) == [f"--nli-overlap: not applied: {why}"]


def test_overlap_with_a_model_that_scores_candidates_itself_says_why():
    clip = ModelEntry(name="clip", backend="clip", weights="smoke:clip")
    spec = CaseSpec(model=clip, ways=20, settings=BackendSettings(batch_size=4), nli_overlap=True)
    result = CaseRunner(spec, LABELS, Direct(), LastCandidate(), None).run(samples(4))
    assert overlap_notes(result) == ["--nli-overlap: not applied: a clip model scores the candidates itself: "
                                     "no answer goes through the NLI"]


def test_overlap_with_every_answer_from_the_store_says_so(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    first = make_runner(Scripted(), LastCandidate(), store, nli_overlap=True).run(samples(4))
    assert overlap_notes(first) == [OVERLAP_NOTE]  # it ran: the note it always had
    again = make_runner(Scripted(), LastCandidate(), store, nli_overlap=True).run(samples(4))
    assert again.resumed == 4
    assert overlap_notes(again) == ["--nli-overlap: not applied: every answer came from the result store: nothing was resolved"]


def test_no_overlap_note_when_it_was_not_asked_for():
    assert overlap_notes(make_runner(Scripted(cost=0.01), LastCandidate(), mode="exact", max_cost=5.0).run(samples(4))) == []


# ---------------------------------------------------------------------------------- 3. --orders K > N
def test_more_orders_than_candidates_get_a_note_that_matches_the_permutations():
    """At 20-way, orders 0-19 keep every label off its earlier positions; order 20 cannot."""
    result = make_runner(Scripted(), LastCandidate(), orders=21).run(samples(1))
    (note,) = [n for n in result.notes if n.startswith("--orders")]
    assert note == ("--orders 21 at 20-way: only orders 0-19 keep every label off the positions it held in the "
                    "other orders; order 20 is a seeded shuffle, distinct from the earlier orders, in which a label "
                    "can sit where it sat before")
    perms = cand.order_permutations("s0", 20, 21, 0)
    assert all(len({p[j] for p in perms[:20]}) == 20 for j in range(20))  # the Latin rectangle
    assert len(set(perms)) == 21  # order 20 is new as a whole ...
    assert any(perms[20][j] == p[j] for p in perms[:20] for j in range(20))  # ... but repeats a position
    assert not [n for n in make_runner(Scripted(), LastCandidate(), orders=20).run(samples(1)).notes if n.startswith("--orders")]


@pytest.mark.parametrize("orders, ways, tail", [
    (3, 2, "2 candidates have only 2 orders, so order 2 repeats one of them"),
    (9, 3, "3 candidates have only 6 orders, so orders 6-8 repeat them"),
])
def test_more_orders_than_exist_say_that_they_repeat(orders, ways, tail):
    note = cand.orders_note(orders, ways)
    assert note.startswith(f"--orders {orders} at {ways}-way: ") and note.endswith(tail)
    perms = cand.order_permutations("s0", ways, orders, 0)
    distinct = 2 if ways == 2 else 6
    assert len(set(perms[:distinct])) == distinct and all(p in perms[:distinct] for p in perms[distinct:])


# ---------------------------------------------------------------------------------- 4. the store note
def store_line(row: dict) -> str:
    (line,) = [n for n in notes([row]) if "came from the result store" in n]
    return line


def test_the_store_note_says_how_many_of_how_many(tmp_path):
    """6 images asked once, then with --orders 3: 6 of the 18 answers came from the store."""
    store = Store(tmp_path / "s.sqlite")
    make_runner(Scripted(), LastCandidate(), store).run(samples(6))
    three = make_runner(Scripted(), LastCandidate(), store, orders=3).run(samples(6))
    row = report.case_row(three, status="passed", threshold=0.0)
    assert store_line(row) == ("- `echo-20way`: 6 of 18 answers (image x order, 3 orders) came from the result "
                               "store (not recomputed; images/s counts only the fresh ones)")
    more = make_runner(Scripted(), LastCandidate(), store).run(samples(8))  # K=1: 6 of 8 samples
    assert "`echo-20way`: 6 of 8 samples came from the result store" in store_line(
        report.case_row(more, status="passed", threshold=0.0))


# ---------------------------------------------------------------------------------- 5. the study section
def smoke_row() -> dict:
    result = make_runner(Scripted(), LastCandidate()).run(samples(4))
    return report.case_row(result, status="passed", threshold=0.0)


def test_a_run_that_scored_no_study_row_says_so_first():
    text = compare.study_section([smoke_row()], load_catalog())
    lead = text.split("## Compared with the study\n\n")[1].splitlines()[0]
    assert lead.startswith("No study row was scored in this run, so there is no comparison table")
    assert "Each row of the study's tables that this run scored" not in text  # the intro of a table not there
    assert "the table below the comparison" not in text and "Study inside CI" not in text
    # a smoke-only run: one pointer to the study's rows, not a list of all 18 nor notes on figures it does not show
    assert lead.endswith("`pytest bench --study` runs the study's 18 rows.") and "study rows not run" not in text
    assert "cannot be top-1 accuracy" not in text
    assert "*present* = macro over the classes" in text.split("### Averaging conventions on this run")[1]


def test_a_run_that_scored_a_study_row_keeps_the_comparison_intro():
    entry = load_catalog()["qwen2-vl-7b"]
    preds = make_runner(Scripted(), LastCandidate()).run(samples(4)).predictions
    spec = CaseSpec(model=entry, ways=20, settings=BackendSettings(quant="none"), dataset="imagenet")
    row = report.case_row(CaseResult(spec, preds, metrics.compute(preds), 1.0), status="passed", threshold=None)
    text = compare.study_section([row], load_catalog())
    assert "No study row was scored" not in text
    assert "Each row of the study's tables that this run scored" in text
    (line,) = report.parse_table(text.split("### Averaging")[0])
    assert line["Case"] == row["case_id"] and line["Study inside CI"] in ("yes", "no")


# ---------------------------------------------------------------------------------- "1 unreadable images"
def unreadable_row(n: int) -> dict:
    preds = [Prediction(f"s{i}", 1, "goldfish", ("tench", "goldfish"), "", None, None, "error",
                        error="cannot decode image: truncated JPEG") for i in range(n)]
    preds += [Prediction("ok", 1, "goldfish", ("tench", "goldfish"), "goldfish", 1, "goldfish", "match")]
    return report.case_row(CaseResult(ECHO_SPEC, preds, metrics.compute(preds), None), status="passed", threshold=0.0)


def test_one_unreadable_image_is_singular():
    one, two = unreadable_row(1), unreadable_row(2)
    assert "- `echo-20way`: 1 unreadable image (see Unreadable images), counted as wrong predictions" in notes([one])
    assert "- `echo-20way`: 2 unreadable images (see Unreadable images), counted as wrong predictions" in notes([two])
    assert "1 image of the subset could not be read; it is an error row" in "\n".join(unreadable_section([one]))
    assert "2 images of the subset could not be read; each is an error row" in "\n".join(unreadable_section([two]))
