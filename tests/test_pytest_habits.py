"""pytest's own habits, each leaving the report honest: a test that fails after vlmcls's gate passed (a
team's own assert), a case stopped from outside (pytest-timeout's Failed), -x / --maxfail stopping the
run, a case run twice in a session (pytest-repeat), --junitxml's figures, a --dist that splits models."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from types import SimpleNamespace

import pytest

CATALOG = """
[models.echo-a]
backend = "echo"
weights = "smoke:echo"
smoke = true
thresholds = { 2 = 0.0 }

[models.echo-b]
backend = "echo"
weights = "smoke:echo"
smoke = true
thresholds = { 2 = 0.99 }

[models.echo-c]
backend = "echo"
weights = "smoke:echo"
smoke = true
"""


@pytest.fixture
def bench(bench: pytest.Pytester) -> pytest.Pytester:
    bench.makefile(".toml", catalog=CATALOG)
    return bench


def run(p: pytest.Pytester, *args: str) -> pytest.RunResult:
    return p.runpytest_subprocess("bench", "--catalog", "catalog.toml", "-p", "no:cacheprovider",
                                  "--ways", "2", "--samples", "6", "--run-id", "r", *args)


def rows(p: pytest.Pytester) -> dict[str, dict]:
    return {c["case_id"]: c for c in json.loads((p.path / "reports" / "r" / "results.json").read_text())["cases"]}


def test_a_team_assert_after_the_gate_fails_the_row_too(bench):
    (bench.path / "bench" / "test_classify.py").write_text(
        "def test_mine(vlmcls_case, vlmcls_bench):\n"
        "    result = vlmcls_bench.run(vlmcls_case)\n"
        "    vlmcls_bench.check(result)\n"
        "    assert result.spec.model.name != 'echo-a', 'team bar: echo-a is retired'\n")
    out = run(bench, "-k", "echo-a or echo-c")
    out.assert_outcomes(failed=1, passed=1)
    got = rows(bench)
    assert got["echo-a-2way"]["status"] == "failed"  # the gate (0.0) passed; the team's assert did not
    assert got["echo-a-2way"]["reason"].startswith("the test failed after the gate passed: AssertionError: team bar")
    assert got["echo-a-2way"]["metrics"]["n"] == 6  # its figures stay
    assert got["echo-c-2way"]["status"] == "passed"  # a smoke model: its plumbing gate
    summary = (bench.path / "reports" / "r" / "summary.md").read_text()
    assert summary.startswith("### vlmcls r: **1 failed**, 1 passed")
    assert "- echo-a-2way: the test failed after the gate passed: AssertionError: team bar" in summary
    assert "failed: echo-a-2way: the test failed after the gate passed" in out.stdout.str()


def test_a_case_stopped_from_outside_is_an_error_row_not_missing(bench):
    """pytest-timeout's `--timeout` raises pytest's Failed inside the case (a BaseException): the case
    was missing from results.json and report.md while pytest said it failed."""
    bench.makeconftest(
        "import pytest, vlmcls.runner\n"
        "real = vlmcls.runner.CaseRunner.run\n"
        "def run(self, samples):\n"
        "    if self.spec.model.name == 'echo-b':\n"
        "        pytest.fail('Timeout >10.0s')\n"
        "    return real(self, samples)\n"
        "vlmcls.runner.CaseRunner.run = run\n")
    out = run(bench)
    out.assert_outcomes(failed=1, passed=2)  # echo-a (gate 0.0) and echo-c (smoke: its plumbing gate)
    got = rows(bench)
    assert set(got) == {"echo-a-2way", "echo-b-2way", "echo-c-2way"}
    assert got["echo-b-2way"]["status"] == "error" and got["echo-b-2way"]["metrics"] is None
    assert got["echo-b-2way"]["reason"] == "the test ended before the case finished: Failed: Timeout >10.0s"
    assert "`echo-b-2way` (error): the test ended before the case finished: Failed: Timeout &gt;10.0s" in \
        (bench.path / "reports" / "r" / "report.md").read_text()


@pytest.mark.parametrize("stop", [["-x"], ["--maxfail", "1"]])
def test_cases_after_an_early_stop_are_listed_as_not_reached_not_missing_nor_ctrl_c(bench, stop):
    out = run(bench, "-k", "echo-b or echo-c", *stop)
    out.assert_outcomes(failed=1)
    got = rows(bench)
    assert got["echo-b-2way"]["status"] == "failed"
    assert got["echo-c-2way"]["status"] == "not reached"
    reason = got["echo-c-2way"]["reason"]
    assert reason == ("not reached: pytest stopped the run (stopping after 1 failures); a run without -x / "
                      "--maxfail / --sw runs it") and "Ctrl-C" not in reason


def test_junitxml_carries_each_cases_figures_as_properties(bench):
    run(bench, "--junitxml", "out.xml").assert_outcomes(failed=1, passed=2)
    got = rows(bench)
    cases = {tc.get("name"): {p.get("name"): p.get("value") for p in tc.iter("property")}
             for tc in ET.parse(bench.path / "out.xml").getroot().iter("testcase")}
    for case_id, row in got.items():
        props = cases[f"test_classify[{case_id}]"]
        m = row["metrics"]
        assert float(props["vlmcls_accuracy"]) == pytest.approx(m["accuracy"])
        assert (float(props["vlmcls_accuracy_ci_low"]), float(props["vlmcls_accuracy_ci_high"])) == pytest.approx(m["accuracy_ci"])
        assert int(props["vlmcls_n"]) == m["n"] == 6 and props["vlmcls_status"] == row["status"]
        assert ("vlmcls_threshold" in props) == (row["threshold"] is not None)
        assert "vlmcls_row" not in props  # the row itself stays out of the XML


def test_a_case_run_twice_in_a_session_is_one_row_that_says_so():
    from vlmcls.session import BenchSession

    holder = SimpleNamespace(rows=[])
    first = {"case_id": "a-2way", "metrics": {"n": 6}, "notes": ["x"], "status": "passed"}
    again = {**first, "notes": ["x", "6 of 6 samples came from the result store"]}
    BenchSession._add_row(holder, first)
    BenchSession._add_row(holder, dict(first))  # the same row reported twice: nothing changes
    assert holder.rows == [first]
    BenchSession._add_row(holder, again)
    BenchSession._add_row(holder, again)
    (row,) = holder.rows
    assert row["runs"] == 3 and row["notes"] == [
        "x", "ran 3 times in this session (e.g. pytest-repeat's --count); the report keeps one run"]
    crashed = {"case_id": "b-2way", "metrics": None, "notes": [], "status": "crashed"}
    BenchSession._add_row(holder, crashed)
    BenchSession._add_row(holder, {"case_id": "b-2way", "metrics": {"n": 6}, "notes": [], "status": "passed"})
    assert holder.rows[1]["status"] == "passed" and "runs" not in holder.rows[1]  # xdist's rerun of a crash: no repeat


def test_the_stop_rule_tells_pytests_own_stops_from_ctrl_c():
    from xdist.dsession import Interrupted as XdistInterrupted

    from vlmcls.plugin import stop_rule

    assert stop_rule(KeyboardInterrupt(), 0) == ""
    assert stop_rule(pytest.Session.Interrupted("stopping after 1 failures"), 0) == "stopping after 1 failures"
    assert stop_rule(XdistInterrupted("stopping after 2 failures"), 0) == "stopping after 2 failures"
    assert stop_rule(XdistInterrupted("<WorkerController gw0> received keyboard-interrupt"), 0) == ""
    assert stop_rule(pytest.Session.Interrupted("stopping after 1 failures"), 1) == ""  # a press was counted


@pytest.mark.parametrize("dist, says", [(None, None), ("loadgroup", None), ("load", "spread over the workers"),
                                        ("worksteal", "spread over the workers"), ("loadfile", "all on one worker"),
                                        ("each", "on every worker")])
def test_a_dist_that_splits_or_piles_up_models_is_said(dist, says):
    from vlmcls.plugin import dist_note

    config = SimpleNamespace(option=SimpleNamespace(numprocesses=2 if dist else None), getvalue=lambda k: dist)
    note = dist_note(config)
    assert (note is None) if says is None else (says in note and f"--dist {dist}" in note)


def test_two_workers_crashing_at_once_leave_every_case_a_row_not_an_internalerror(pytester):
    """Two models that kill their xdist worker at once: xdist handed work to a replacement worker that had
    not collected yet (INTERNALERROR, KeyError in _assign_work_unit; exit code 3, half the cases missing)."""
    (pytester.path / "bench").mkdir()
    from conftest import BENCH

    (pytester.path / "bench" / "test_classify.py").write_text(BENCH.read_text())
    crash = '\noptions = { crash = true }'
    pytester.makefile(".toml", catalog="".join(
        f'[models.{name}]\nbackend = "echo"\nweights = "smoke:echo"\nsmoke = true{crash if name.startswith("c") else ""}\n'
        for name in ("c1", "c2", "ok")))
    out = pytester.runpytest_subprocess("bench", "--catalog", "catalog.toml", "-p", "no:cacheprovider", "--ways", "2,3",
                                        "--samples", "4", "--run-id", "r", "-n", "2")
    assert out.ret == 1 and "INTERNALERROR" not in out.stdout.str() + out.stderr.str()
    got = {c["case_id"]: c["status"] for c in json.loads((pytester.path / "reports" / "r" / "results.json").read_text())["cases"]}
    assert got == {"c1-2way": "crashed", "c1-3way": "crashed", "c2-2way": "crashed", "c2-3way": "crashed",
                   "ok-2way": "passed", "ok-3way": "passed"}


def test_a_test_failing_between_run_and_check_keeps_the_cases_figures(bench):
    (bench.path / "bench" / "test_classify.py").write_text(
        "def test_mine(vlmcls_case, vlmcls_bench):\n"
        "    result = vlmcls_bench.run(vlmcls_case)\n"
        "    assert result.metrics.n > 100, 'too few images for our bar'\n"
        "    vlmcls_bench.check(result)\n")
    run(bench, "-k", "echo-a").assert_outcomes(failed=1)
    row = rows(bench)["echo-a-2way"]
    assert row["status"] == "failed" and row["metrics"]["n"] == 6
    assert row["reason"].startswith("the test failed before the gate was checked: AssertionError: too few images")
