"""--run-id NAME: a run folder with a name a CI job can predict (reports/pr-123), replacing an earlier
run of that name whole (no stale samples of a case the new run did not repeat), and refusing what
would lose someone's files: a folder that holds no run, the --baseline itself, a name that is a path."""
from __future__ import annotations

import json

import pytest

CATALOG = """
[models.echo-a]
backend = "echo"
weights = "smoke:echo"
smoke = true

[models.echo-b]
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
                                  "--ways", "2", "--samples", "6", *args)


def cases(folder) -> list[str]:
    return sorted(c["case_id"] for c in json.loads((folder / "results.json").read_text())["cases"])


def test_the_run_folder_takes_the_name_and_a_rerun_replaces_the_earlier_run_whole(bench):
    folder = bench.path / "reports" / "pr-7"
    out = run(bench, "--run-id", "pr-7")
    out.assert_outcomes(passed=2)
    assert json.loads((folder / "results.json").read_text())["meta"]["run_id"] == "pr-7"
    assert cases(folder) == ["echo-a-2way", "echo-b-2way"]
    assert out.outlines[-1] == f"report: {folder / 'report.md'}"
    assert sorted(p.name for p in (bench.path / "reports").iterdir()) == ["pr-7", "store.sqlite"]  # no timestamped folder

    again = run(bench, "--run-id", "pr-7", "-k", "echo-a")
    again.assert_outcomes(passed=1)
    assert cases(folder) == ["echo-a-2way"]
    assert sorted(p.name for p in (folder / "samples").iterdir()) == ["echo-a-2way.jsonl"]  # echo-b's is gone
    assert "echo-b" not in (folder / "report.md").read_text()
    assert again.outlines[-1] == f"report: {folder / 'report.md'} (it replaced the earlier run of that --run-id)"


def test_under_xdist_the_workers_write_into_the_named_folder(bench):
    run(bench, "--run-id", "nightly", "-n", "2").assert_outcomes(passed=2)
    folder = bench.path / "reports" / "nightly"
    assert cases(folder) == ["echo-a-2way", "echo-b-2way"]
    assert sorted(p.name for p in (folder / "samples").iterdir()) == ["echo-a-2way.jsonl", "echo-b-2way.jsonl"]
    assert sorted(p.name for p in (bench.path / "reports").iterdir()) == ["nightly", "store.sqlite"]


def test_a_store_kept_inside_the_run_folder_survives_the_replacement(bench):
    run(bench, "--run-id", "r", "--store", "reports/r/keep.sqlite").assert_outcomes(passed=2)
    out = run(bench, "--run-id", "r", "--store", "reports/r/keep.sqlite", "-v")
    out.assert_outcomes(passed=2)
    assert (bench.path / "reports" / "r" / "keep.sqlite").is_file()
    rows = [json.loads(line) for line in (bench.path / "reports" / "r" / "samples" / "echo-a-2way.jsonl").read_text().splitlines()]
    assert len(rows) == 6


def test_a_folder_that_holds_no_run_is_not_touched(bench):
    mine = bench.path / "reports" / "mine"
    mine.mkdir(parents=True)
    (mine / "notes.md").write_text("my notes")
    out = run(bench, "--run-id", "mine")
    assert out.ret == pytest.ExitCode.USAGE_ERROR
    out.stderr.fnmatch_lines(["*--run-id mine: *mine exists and holds no vlmcls run (no results.json): "
                              "choose another --run-id or remove the folder"])
    assert (mine / "notes.md").read_text() == "my notes"


def test_the_baseline_cannot_be_the_folder_the_run_would_replace(bench):
    run(bench, "--run-id", "main").assert_outcomes(passed=2)
    before = (bench.path / "reports" / "main" / "results.json").read_text()
    out = run(bench, "--run-id", "main", "--baseline", "reports/main")
    assert out.ret == pytest.ExitCode.USAGE_ERROR
    out.stderr.fnmatch_lines(["*--baseline reports/main is the folder --run-id main would replace: "
                              "give the new run another --run-id"])
    assert (bench.path / "reports" / "main" / "results.json").read_text() == before


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", "", "x y"])
def test_a_name_that_is_not_a_plain_folder_name_is_a_usage_error(bench, name):
    out = run(bench, "--run-id", name)
    assert out.ret == pytest.ExitCode.USAGE_ERROR
    out.stderr.fnmatch_lines([f"*--run-id takes a folder name of letters, digits, '.', '_' and '-' (got {name!r})"])
    assert not (bench.path / "escape").exists() and not (bench.path / "reports").exists()


def test_collect_only_replaces_nothing(bench):
    run(bench, "--run-id", "keep").assert_outcomes(passed=2)
    run(bench, "--run-id", "keep", "-k", "echo-a", "--collect-only")
    assert cases(bench.path / "reports" / "keep") == ["echo-a-2way", "echo-b-2way"]
