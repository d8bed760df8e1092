"""What a newcomer's walkthrough of the command line tripped on: `vlmcls report` re-rendering the
run re-rendered last instead of the newest, percent typos in catalog accuracies, a bad --report-dir /
--store failing every case with a traceback, a silent Ctrl-C, and a -k that matches no case."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vlmcls import metrics, report
from vlmcls.__main__ import latest_run, main
from vlmcls.catalog import ModelEntry, load_catalog
from vlmcls.runner import CaseResult, CaseSpec
from vlmcls.settings import BackendSettings
from vlmcls.types import Prediction

CATALOG = """
[models.echo-a]
backend = "echo"
weights = "smoke:echo"
smoke = true

[models.vlm-q]
backend = "hf-vlm"
weights = "smoke:qwen2-vl"
smoke = true
"""


@pytest.fixture
def bench(bench: pytest.Pytester) -> pytest.Pytester:
    bench.makefile(".toml", catalog=CATALOG)
    return bench


def run(p: pytest.Pytester, *args: str) -> pytest.RunResult:
    return p.runpytest_subprocess("bench", "--catalog", "catalog.toml", "-p", "no:cacheprovider", *args)


# ------------------------------------------------------------------ 1. `vlmcls report`: the newest run
def write_run(root: Path, run_id: str, meta: dict | None = None) -> Path:
    preds = [Prediction(f"s{i}", 1, "cat", ("cat", "dog"), "cat", 1, "cat", "match") for i in range(5)]
    spec = CaseSpec(model=ModelEntry(name="m", backend="echo", weights="smoke:echo", smoke=True), ways=2,
                    settings=BackendSettings())
    row = report.case_row(CaseResult(spec, preds, metrics.compute(preds), images_per_s=1.0), status="passed", threshold=None)
    report.write_run(root / run_id, [row], {"run_id": run_id, **(meta or {})}, plots=False)
    return root / run_id


def test_report_without_a_folder_takes_the_newest_run_not_the_last_rerendered(tmp_path, monkeypatch, capsys):
    reports = tmp_path / "reports"
    older = write_run(reports, "20251127-182806-3421f9", {"provenance": {"date": "2025-11-27T18:29:00+0000"}})
    newer = write_run(reports, "20251128-090000-aaaaaa", {"provenance": {"date": "2025-11-28T09:01:00+0000"}})
    hour_ago = time.time() - 3600  # the newer run finished an hour before the user re-rendered the older
    os.utime(newer / "results.json", (hour_ago, hour_ago))
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(older), "--no-plots"]) == 0
    assert (older / "results.json").stat().st_mtime > (newer / "results.json").stat().st_mtime
    capsys.readouterr()
    assert main(["report", "--no-plots"]) == 0
    assert capsys.readouterr().out.strip() == f"report: {Path('reports', newer.name, 'report.md')}"


def test_the_newest_run_comes_from_the_run_id_without_provenance_and_a_merge_counts_when_merged(tmp_path, monkeypatch):
    reports = tmp_path / "reports"
    old = write_run(reports, "20251127-182806-3421f9")  # written before provenance was recorded
    new = write_run(reports, "20251128-090000-aaaaaa")
    os.utime(old / "results.json")  # touched last
    assert latest_run(reports) == new
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(old), str(new), "--out", "reports/combined", "--no-plots"]) == 0
    assert latest_run(reports) == reports / "combined"  # merged after both ran, and named without a time
    later = write_run(reports, "merged-29991231-000000-bbbbbb")  # an older merge, before merged_at
    assert latest_run(reports) == later


# ------------------------------------------------------------------ 2. catalog accuracies in [0, 1]
@pytest.mark.parametrize("line, what, given", [
    ("thresholds = { 20 = 1.5 }", "thresholds at 20-way", "1.5"),
    ("thresholds = { 20 = 85 }", "thresholds at 20-way", "85"),
    ("thresholds = { 100 = -0.1 }", "thresholds at 100-way", "-0.1"),
    ("thresholds = { 20 = nan }", "thresholds at 20-way", "nan"),
    ("reference = { 20 = 92 }", "reference at 20-way", "92"),
    ("top1 = 79.26", "top1", "79.26"),
    ('study = [{ ways = 20, images = 10, precision = 0.9, recall = 0.9, f1 = 0.9, accuracy = 90 }]',
     "the 20-way study row's accuracy", "90"),
    ('study = [{ ways = 20, images = 10, precision = 93.0, recall = 0.9, f1 = 0.9, accuracy = 0.9 }]',
     "the 20-way study row's precision", "93.0"),
])
def test_a_catalog_accuracy_outside_0_1_is_one_error_at_load(tmp_path, line, what, given):
    path = tmp_path / "catalog.toml"
    path.write_text(f'[models.m]\nbackend = "echo"\nweights = "smoke:echo"\n{line}\n')
    with pytest.raises(ValueError) as err:
        load_catalog(path)
    assert str(err.value) == f"{path}: model 'm': {what} is {given}; it must be a fraction in [0, 1] (0.85, not 85)"


def test_catalog_accuracies_at_the_ends_of_0_1_load(tmp_path):
    path = tmp_path / "catalog.toml"
    path.write_text('[models.m]\nbackend = "echo"\nweights = "smoke:echo"\nthresholds = { 20 = 0, 100 = 1 }\n'
                    'reference = { 20 = 0.85 }\ntop1 = 1.0\n')
    entry = load_catalog(path)["m"]
    assert entry.thresholds == {20: 0.0, 100: 1.0} and entry.reference == {20: 0.85} and entry.top1 == 1.0


def test_a_percent_threshold_stops_the_bench_before_any_case(bench):
    bench.makefile(".toml", typo='[models.m]\nbackend = "echo"\nweights = "smoke:echo"\nthresholds = { 20 = 85 }\n')
    out = bench.runpytest_subprocess("bench", "--catalog", "typo.toml", "-p", "no:cacheprovider")
    err = out.stderr.str()
    assert out.ret == pytest.ExitCode.USAGE_ERROR and "thresholds at 20-way is 85" in err and "Traceback" not in err
    assert not (bench.path / "reports").exists()


# ------------------------------------------------------------------ 3. --report-dir / --store
@pytest.mark.parametrize("args, message", [
    (["--report-dir", "afile"], "ERROR: --report-dir afile: it is a file, where a folder is needed"),
    (["--report-dir", "afile/runs"], "ERROR: --report-dir afile/runs: {path}/afile is a file, where a folder is needed"),
    (["--store", "/proc/nope/store.sqlite"],
     "ERROR: --store /proc/nope/store.sqlite: the folder /proc/nope cannot be created (No such file or directory)"),
    (["--store", "adir"], "ERROR: --store adir: it is a folder, where the store's SQLite file is needed"),
    (["--store", "afile/store.sqlite"], "ERROR: --store afile/store.sqlite: {path}/afile is a file, where a folder is needed"),
    (["--store", "notes.txt"], "ERROR: --store notes.txt: cannot open it as the result store (SQLite: file is not a database)"),
])
def test_a_bad_report_dir_or_store_is_one_usage_line_before_any_case(bench, args, message):
    if args[1].startswith("/proc/") and not Path("/proc").is_dir():
        pytest.skip("needs /proc (a folder no one can create a folder in)")
    (bench.path / "afile").write_text("not a folder")
    (bench.path / "adir").mkdir()
    (bench.path / "notes.txt").write_text("not a database, " * 100)
    out = run(bench, "-k", "echo-a", "--ways", "20", "--samples", "10", *args)
    err = out.stderr.str()
    assert out.ret == pytest.ExitCode.USAGE_ERROR, out.stdout.str()[-2000:]
    assert message.format(path=bench.path) in err.splitlines() and "Traceback" not in err
    assert (bench.path / "notes.txt").read_text() == "not a database, " * 100


def test_a_file_in_place_of_the_default_reports_folder_is_a_usage_line_too(bench):
    (bench.path / "reports").write_text("my notes")
    out = run(bench, "-k", "echo-a", "--ways", "20", "--samples", "10")
    assert out.ret == pytest.ExitCode.USAGE_ERROR and "Traceback" not in out.stderr.str()
    assert "ERROR: --report-dir reports: it is a file, where a folder is needed" in out.stderr.lines


def test_other_test_suites_never_see_the_report_paths(pytester: pytest.Pytester):
    """The plugin is installed for every pytest run: a project's own `reports` file is none of its business."""
    (pytester.path / "reports").write_text("someone else's file")
    pytester.makepyfile(test_plain="def test_ok():\n    pass\n")
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)


# ------------------------------------------------------------------ 4. Ctrl-C
def stored(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=1) as con:
            return con.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    except sqlite3.Error:  # not created yet
        return 0


def interrupted_run(bench: pytest.Pytester, *extra: str, presses: int = 1) -> tuple[int, str, Path]:
    """`pytest bench --catalog slow.toml` in a subprocess, sent SIGINT (what Ctrl-C sends) once 40 samples
    are stored, `presses` times 0.05 s apart: (exit code, its output, the store's path)."""
    cmd = [sys.executable, "-m", "pytest", "bench", "--catalog", "slow.toml", "--ways", "20", "-p", "no:cacheprovider",
           "--batch-size", "10", "--samples", "150", "--report-dir", "runs", *extra]
    proc = subprocess.Popen(cmd, cwd=bench.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    db = bench.path / "runs" / "store.sqlite"
    deadline = time.time() + 60
    while time.time() < deadline and stored(db) < 40 and proc.poll() is None:
        time.sleep(0.05)
    for i in range(presses):
        if i:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    return proc.returncode, out, db


def test_ctrl_c_says_what_the_store_kept_and_that_the_same_command_resumes(bench):
    bench.makefile(".toml", slow='[models.echo-slow]\nbackend = "echo"\nweights = "smoke:echo"\nsmoke = true\n'
                                 'options = { delay_s = 0.02 }\n')
    returncode, out, db = interrupted_run(bench)
    kept = stored(db)
    assert returncode == pytest.ExitCode.INTERRUPTED and 40 <= kept < 150, out[-3000:]
    *_, line, written = out.splitlines()
    assert line == (f"interrupted: {kept} finished samples of the selected cases are in the result "
                    f"store {db} ({kept} from this run); the same command resumes from there")
    # the report, which would look complete, names the case left undone
    report_md = Path(written.removeprefix("report: ")).read_text()
    assert (f"- `echo-slow-20way` (interrupted): interrupted (Ctrl-C) after {kept} of its answers were stored; "
            "the same command resumes it from there") in report_md


SECOND_CTRL_C = """
import os, signal
import vlmcls.report

write_run = vlmcls.report.write_run

def pressed_again(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C again while the report is being written
    return write_run(*args, **kwargs)

vlmcls.report.write_run = pressed_again
"""


def test_a_second_ctrl_c_waits_for_the_report_and_a_case_not_reached_says_so(bench):
    bench.makeconftest(SECOND_CTRL_C)
    bench.makefile(".toml", slow='[models.echo-first]\nbackend = "echo"\nweights = "smoke:echo"\nsmoke = true\n'
                                 'options = { delay_s = 0.02 }\n\n[models.echo-then]\nbackend = "echo"\n'
                                 'weights = "smoke:echo"\nsmoke = true\n')
    returncode, out, _ = interrupted_run(bench)
    assert returncode == pytest.ExitCode.INTERRUPTED, out[-3000:]
    assert "vlmcls: writing the report of what ran, a moment (Ctrl-C again stops at once" in out
    assert "Traceback" not in out
    written = out.splitlines()[-1]
    report_md = Path(written.removeprefix("report: ")).read_text()
    assert ("- `echo-then-20way` (interrupted): not reached before the run was interrupted (Ctrl-C); "
            "the same command runs it") in report_md
    assert "- `echo-first-20way` (interrupted): interrupted (Ctrl-C) after " in report_md


@pytest.mark.parametrize("extra", [(), ("--refresh",)])
def test_two_quick_ctrl_c_still_leave_a_report_that_names_every_case_left_undone(bench, extra):
    """A second press 0.05 s after the first once landed while pytest was handling the first: the report
    was written as if complete ("1 passed") and the unfinished cases were missing from it."""
    bench.makefile(".toml", slow='[models.echo-first]\nbackend = "echo"\nweights = "smoke:echo"\nsmoke = true\n'
                                 'options = { delay_s = 0.02 }\n\n[models.echo-then]\nbackend = "echo"\n'
                                 'weights = "smoke:echo"\nsmoke = true\n')
    returncode, out, _ = interrupted_run(bench, *extra, presses=2)
    assert returncode == pytest.ExitCode.INTERRUPTED, out[-3000:]
    assert "Traceback" not in out
    written = out.splitlines()[-1]
    results = json.loads((Path(written.removeprefix("report: ")).parent / "results.json").read_text())
    status = {c["case_id"]: (c["status"], c["reason"]) for c in results["cases"]}
    assert status["echo-first-20way"][0] == status["echo-then-20way"][0] == "interrupted", status
    resumes = ("a rerun without --refresh resumes from them, with --refresh it starts over" if extra
               else "the same command resumes it from there")
    assert status["echo-first-20way"][1].endswith(resumes)


def test_ctrl_c_counts_this_runs_rows_apart_and_under_refresh_only_them(tmp_path):
    """What the store held before the run is not this run's work; under --refresh it is what the user
    asked to replace, so the line counts only this run's rows and says how each rerun treats them."""
    from vlmcls.session import BenchSession
    from vlmcls.store import Store, case_key
    from vlmcls.types import Prediction

    store = Store(tmp_path / "store.sqlite")
    pred = lambda i: Prediction(f"s{i}", 1, "cat", ("cat", "dog"), "cat", 1, "cat", "match")
    store.put("k", [pred(i) for i in range(5)], now=100.0)  # an earlier run
    store.put("k", [pred(i) for i in range(3, 7)], now=200.0)  # this one: replaces s3, s4; adds s5, s6
    assert store.count("k") == 7 and store.count("k", since=150.0) == 4 and store.count("k", since=201.0) == 0

    class Case:  # what interrupted() reads of the session's cases
        case_id = "m-20way"
        spec = type("Spec", (), {"key_fields": lambda self: {}})()

    for refresh in (False, True):
        s = object.__new__(BenchSession)  # only what interrupted() reads
        s.__dict__.update(started=150.0, selected=["m-20way"], _cases=(Case(),), store=store, is_worker=False, was_interrupted=False,
                          opt=type("O", (), {"refresh": refresh, "store": str(tmp_path / "store.sqlite")})(),
                          config=type("C", (), {"invocation_params": type("I", (), {"dir": tmp_path})()})())
        key = case_key({})
        store.put(key, [pred(i) for i in range(2)], now=100.0)
        store.put(key, [pred(i) for i in range(1, 4)], now=200.0)
        s.interrupted()
        if refresh:
            assert s.interrupt_line.startswith("interrupted: 3 samples finished in this run are in the result store ")
            assert s.interrupt_line.endswith("with --refresh it starts over")
        else:
            assert s.interrupt_line.endswith("(3 from this run); the same command resumes from there")
            assert s.interrupt_line.startswith("interrupted: 4 finished samples of the selected cases")


def test_ctrl_c_in_a_run_without_cases_says_nothing_of_a_store(pytester: pytest.Pytester):
    pytester.makepyfile(test_plain="def test_interrupted():\n    raise KeyboardInterrupt\n")
    out = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert out.ret == pytest.ExitCode.INTERRUPTED and "result store" not in out.stdout.str()
    assert not (pytester.path / "reports").exists()


# ------------------------------------------------------------------ 5. a selection that matches no case
def test_a_selection_matching_no_case_says_how_to_list_the_ids(bench):
    out = run(bench, "-k", "smoke-gpt")
    assert out.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    hint = [line for line in out.stdout.lines if line.startswith("vlmcls: ")]
    # the listing command is this one without its -k: same catalog, so it lists these very cases (pytester
    # adds its own --basetemp first)
    (line,) = hint
    assert line.startswith("vlmcls: the selection matched none of the 4 benchmark cases; list their ids with `pytest ")
    assert line.endswith(" bench --catalog catalog.toml -p no:cacheprovider --co -q`. An id is "
                         "<model>[-<quant>]-<N>way, the quantization only for local VLMs (e.g. vlm-q-none-20way); "
                         "-k matches any part of it") and "smoke-gpt" not in line
    listed = run(bench, "--co", "-q")
    assert "bench/test_classify.py::test_classify[vlm-q-none-20way]" in listed.stdout.lines


def test_under_xdist_the_controller_gives_the_hint_too(bench):
    """The workers deselect there, and the controller, which prints the summary, saw none of it."""
    out = run(bench, "-k", "smoke-gpt", "-n", "2")
    (line,) = [line for line in out.stdout.lines if line.startswith("vlmcls: ")]
    assert line.startswith("vlmcls: the selection matched none of the 4 benchmark cases; list their ids with `pytest ")
    assert " -n 2 --co -q`" in line
    matched = run(bench, "-k", "20way", "-n", "2")
    assert matched.ret == pytest.ExitCode.OK and not [x for x in matched.stdout.lines if "matched none" in x]


def test_in_a_sweep_the_hint_gives_the_prompt_part_and_keeps_the_prompts(bench):
    out = run(bench, "-k", "mine.txt", "--prompt", "thesis,label-only")
    (hint,) = [line for line in out.stdout.lines if line.startswith("vlmcls: ")]
    assert " bench --catalog catalog.toml -p no:cacheprovider --prompt thesis,label-only --co -q`" in hint
    assert "An id is <model>[-<quant>]-<N>way-<prompt>, the quantization only for local VLMs, then the prompt" in hint
    assert "(e.g. vlm-q-none-20way-thesis)" in hint


def test_the_listing_command_drops_every_form_of_selection():
    from vlmcls.session import without_selection

    assert without_selection(["bench", "-k", "a and b", "-kx", "-m", "slow", "--max-cost", "1", "-mfoo", "-n", "2"]) == \
        ["bench", "--max-cost", "1", "-n", "2"]
    assert without_selection(["bench", "--prompt", "my file.txt"]) == ["bench", "--prompt", "'my file.txt'"]


def test_a_selection_matching_a_case_gives_no_hint(bench):
    out = run(bench, "-k", "echo-a and 20way", "--samples", "10", "--co", "-q")
    assert out.ret == pytest.ExitCode.OK and not any(line.startswith("vlmcls: ") for line in out.stdout.lines)


def test_leaving_the_cases_out_on_purpose_gets_no_hint_and_setup_plan_writes_nothing(bench):
    """`-m "not vlmcls_case"` runs a team's other tests in bench/ (the micro-benchmarks, say): no "the
    selection matched none" hint for a choice made on purpose. --setup-plan / --setup-only run no case:
    they left an empty result store behind (--collect-only already wrote nothing)."""
    bench.makepyfile(**{"bench/test_other": "def test_other():\n    assert True\n"})
    out = run(bench, "-m", "not vlmcls_case")
    out.assert_outcomes(passed=1)
    assert not [line for line in out.stdout.lines if "matched none" in line]
    typo = run(bench, "-k", "smoke-gpt")  # a -k that matches nothing still gets it
    assert [line for line in typo.stdout.lines if "matched none" in line]
    for flag in ("--setup-plan", "--setup-only", "--collect-only"):
        out = run(bench, "-k", "echo-a", flag)
        assert out.ret == pytest.ExitCode.OK, out.stdout.str()
        assert not (bench.path / "reports").exists(), flag


def test_qq_prints_a_narrow_table_and_the_report_keeps_every_column(bench):
    """-qq asks for little: the terminal table keeps model, accuracy, interval, n, errors and gate (and the
    smoke models' note, which says their accuracy is chance); report.md keeps every column and note."""
    quiet = run(bench, "-k", "echo-a and 20way", "--samples", "20", "-qq")
    (header,) = [line for line in quiet.stdout.lines if line.startswith("| Model")]
    assert [c.strip() for c in header.split("|")[1:-1]] == ["Model", "Accuracy", "Accuracy 95% CI", "n", "errors", "gate"]
    assert any(line.startswith("*smoke* marks a random-weight model") for line in quiet.stdout.lines)
    assert not any("local models ran on" in line for line in quiet.stdout.lines)
    report_md = next((bench.path / "reports").glob("*/report.md")).read_text()
    md_header = next(line for line in report_md.splitlines() if line.startswith("| Model"))
    assert [c.strip() for c in md_header.split("|")[1:6]] == ["Model", "Precision", "Recall", "F1-score", "Accuracy"]
    normal = run(bench, "-k", "echo-a and 20way", "--samples", "20", "-q")
    (full,) = [line for line in normal.stdout.lines if line.startswith("| Model")]
    assert [c.strip() for c in full.split("|")[1:6]] == ["Model", "Precision", "Recall", "F1-score", "Accuracy"]
