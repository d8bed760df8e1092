"""The pytest plugin, run as users run it: `pytest bench` in a temp dir, serially and with -n 2."""
from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

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
options = { styles = ["I think it is a {label}.", "{label}"] }

[models.echo-gated]
backend = "echo"
weights = "smoke:echo"
thresholds = { 20 = 0.9 }

[models.echo-crash]
backend = "echo"
weights = "smoke:echo"
smoke = true
options = { crash = true }

[models.api-needs-key]
backend = "openai"
weights = "gpt-4o-mini"
"""


@pytest.fixture
def bench(bench: pytest.Pytester) -> pytest.Pytester:
    bench.makefile(".toml", catalog=CATALOG)
    return bench


def run(p: pytest.Pytester, *args: str) -> pytest.RunResult:
    return p.runpytest_subprocess("bench", "--catalog", "catalog.toml", "-p", "no:cacheprovider", *args)


def results(p: pytest.Pytester) -> list[dict]:
    (run_dir,) = [d for d in (p.path / "reports").iterdir() if d.is_dir()]
    return json.loads((run_dir / "results.json").read_text())["cases"]


def comparable(rows: list[dict]) -> list[tuple]:
    return sorted((r["case_id"], r["status"], json.dumps(r["metrics"], sort_keys=True), json.dumps(r["stages"])) for r in rows)


def test_serial_and_xdist_give_identical_rows(bench, tmp_path):
    args = ("-k", "echo-a or echo-b", "--ways", "20,50", "--samples", "120", "--refresh")
    serial = run(bench, *args, "--report-dir", "serial")
    serial.assert_outcomes(passed=4)
    rows_serial = results_in(bench.path / "serial")
    parallel = run(bench, *args, "--report-dir", "parallel", "-n", "2")
    parallel.assert_outcomes(passed=4)
    rows_parallel = results_in(bench.path / "parallel")
    assert len(rows_serial) == 4 and comparable(rows_serial) == comparable(rows_parallel)
    (run_dir,) = [d for d in (bench.path / "parallel").iterdir() if d.is_dir()]
    samples = sorted(p.name for p in (run_dir / "samples").iterdir())
    assert samples == ["echo-a-20way.jsonl", "echo-a-50way.jsonl", "echo-b-20way.jsonl", "echo-b-50way.jsonl"]
    per_class = json.loads((run_dir / "per_class" / "echo-a-20way.json").read_text())
    assert sum(r["support"] for r in per_class) == 120 and {"precision", "recall", "f1"} <= set(per_class[0])
    assert "vlmcls results" in parallel.stdout.str()


def results_in(report_dir: Path) -> list[dict]:
    (run_dir,) = [d for d in report_dir.iterdir() if d.is_dir()]
    return json.loads((run_dir / "results.json").read_text())["cases"]


def test_a_dead_worker_is_reported_not_dropped(bench):
    out = run(bench, "-k", "echo-a or echo-crash", "--ways", "20", "--samples", "30", "-n", "2", "--max-worker-restart", "1")
    assert out.ret == pytest.ExitCode.TESTS_FAILED and out.parseoutcomes()["passed"] == 1
    rows = {r["case_id"]: r for r in results(bench)}
    assert len(results(bench)) == 2  # one row per case, however often xdist retried the dead one
    assert rows["echo-a-20way"]["status"] == "passed"
    assert rows["echo-crash-20way"]["status"] == "crashed" and "crashed" in rows["echo-crash-20way"]["reason"]
    (run_dir,) = [d for d in (bench.path / "reports").iterdir() if d.is_dir()]
    assert "echo-crash-20way" in (run_dir / "report.md").read_text()


def test_a_crashing_case_under_xdist_fails_once_and_the_others_still_run(bench):
    """xdist 3.8 put a crashed worker's test back in the queue: each replacement worker ran the crashing
    case again (up to the restart limit), and beside several other models the run could hang. With the
    default restarts: each crashing case is one failure, every other case passes, the run ends."""
    out = bench.runpytest_subprocess("bench", "--catalog", "catalog.toml", "-p", "no:cacheprovider", "-k",
                                     "echo-a or echo-b or echo-crash", "--ways", "20,50", "--samples", "20",
                                     "-n", "2", timeout=150)
    outcomes = out.parseoutcomes()
    assert out.ret == pytest.ExitCode.TESTS_FAILED
    assert (outcomes.get("failed"), outcomes.get("passed")) == (2, 4), outcomes
    for case in ("echo-crash-20way", "echo-crash-50way"):  # each crashing case once, on its own worker
        assert out.stdout.str().count(f"FAILED bench/test_classify.py::test_classify[{case}]") == 1
    rows = {r["case_id"]: r for r in results(bench)}
    assert {k for k, r in rows.items() if r["status"] == "passed"} == {
        "echo-a-20way", "echo-a-50way", "echo-b-20way", "echo-b-50way"}


def test_k_selects_model_and_ways(bench):
    out = run(bench, "--collect-only", "-q", "-k", "echo-b and 100way", "--ways", "20,100")
    collected = [l for l in out.stdout.lines if "::" in l]
    assert collected == ["bench/test_classify.py::test_classify[echo-b-100way]"]


def test_failing_gate_names_model_n_accuracy_interval_threshold(bench):
    out = run(bench, "-k", "echo-gated", "--ways", "20", "--samples", "60", "--nli-model", "smoke:bart-mnli")
    out.assert_outcomes(failed=1)
    line = next(l for l in out.stdout.lines if "below the gate" in l)
    assert "echo-gated-20way: accuracy 0." in line and "95% CI" in line and "n=60" in line
    assert "upper bound" in line and line.endswith("is below the gate 0.9")


def test_missing_key_skips_with_reason_and_strict_fails(bench, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    out = run(bench, "-k", "api-needs-key", "--ways", "20", "--samples", "20")
    out.assert_outcomes(skipped=1)
    assert "OPENAI_API_KEY" in out.stdout.str()
    row = results(bench)[0]
    assert row["status"] == "skipped" and "OPENAI_API_KEY" in row["reason"]
    (run_dir,) = [d for d in (bench.path / "reports").iterdir() if d.is_dir()]
    report_md = (run_dir / "report.md").read_text()
    assert "## Not run" in report_md and "OPENAI_API_KEY" in report_md
    strict = run(bench, "-k", "api-needs-key", "--ways", "20", "--samples", "20", "--strict-cases")
    strict.assert_outcomes(failed=1)


@pytest.mark.parametrize("args, message", [
    (["--ways", "1"], "--ways needs every N >= 2"),
    (["--ways", "20,abc"], "--ways takes integers"),
    (["--samples", "0"], "--samples must be positive"),
    (["--resolver", "magic"], "--resolver must be one of"),
    (["--dataset", "nope"], "unknown dataset 'nope'"),
    (["--ways", "1001"], "--ways 1001 exceeds the 1000 classes"),
    (["--samples", "5000"], "--samples 5000 exceeds the 318 images"),
    (["--device", "gpu0"], "--device takes auto, cpu, mps, cuda or cuda:N"),
    (["--seed", "-5"], "--seed takes a non-negative integer"),
    (["--catalog", "missing.toml"], "catalog file missing.toml not found"),
])
def test_bad_options_are_one_clear_line(bench, args, message):
    out = run(bench, *args)
    assert out.ret == pytest.ExitCode.USAGE_ERROR
    err = out.stderr.str()
    assert message in err and "Traceback" not in err


def test_killed_run_resumes_without_recomputing(bench):
    """SIGKILL in the middle of a case, rerun the same command: no finished sample is lost or redone."""
    bench.makefile(".toml", slow="""
[models.echo-slow]
backend = "echo"
weights = "smoke:echo"
smoke = true
options = { delay_s = 0.02 }
""")
    cmd = [sys.executable, "-m", "pytest", "bench", "--catalog", "slow.toml", "--ways", "20", "-p", "no:cacheprovider",
           "--batch-size", "10", "--samples", "150", "--report-dir", "runs"]
    proc = subprocess.Popen(cmd, cwd=bench.path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = bench.path / "runs" / "store.sqlite"
    deadline = time.time() + 60
    while time.time() < deadline and stored(db) < 40:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = stored(db)
    assert 40 <= before < 150, "the kill must land in the middle of the case"
    subprocess.run(cmd, cwd=bench.path, check=True, capture_output=True)
    (row,) = results_in(bench.path / "runs")
    assert row["resumed"] == before and row["metrics"]["n"] == 150 and stored(db) == 150
    subprocess.run(cmd[:-2] + ["--report-dir", "clean"], cwd=bench.path, check=True, capture_output=True)
    (fresh,) = results_in(bench.path / "clean")
    assert fresh["resumed"] == 0 and fresh["metrics"] == row["metrics"]


def stored(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=1) as con:
            return con.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_api_constrained_only_touches_served_models(pytester: pytest.Pytester):
    from vlmcls import plan
    from vlmcls.catalog import ModelEntry

    opts = plan.RunOptions.from_namespace(pytester.parseconfigure("--api-constrained").option)
    served = ModelEntry(name="s", backend="openai-compatible", weights="m")
    local = ModelEntry(name="v", backend="hf-vlm", weights="smoke:qwen2-vl")
    paid = ModelEntry(name="p", backend="openai", weights="gpt-4o")
    assert plan.spec(served, 20, opts).settings.constrained
    assert not plan.spec(local, 20, opts).settings.constrained and not plan.spec(paid, 20, opts).settings.constrained


def test_a_case_where_every_sample_fails_fails_its_gate(bench):
    for k in range(4):  # a synset folder of corrupt files: every sample becomes an error row
        d = bench.path / "broken" / "n01440764"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"img{k}.JPEG").write_bytes(b"\xff\xd8 not really a jpeg")
    out = run(bench, "-k", "echo-gated", "--ways", "20", "--dataset", "broken", "--nli-model", "smoke:bart-mnli")
    out.assert_outcomes(failed=1)
    assert "every one of the 4 samples failed, e.g. cannot decode image" in out.stdout.str()
    (row,) = results(bench)
    assert row["errors"] == 4 and row["status"] == "failed"


def test_each_model_loads_once_per_process_and_stays_on_one_worker(bench):
    log = bench.path / "loads.txt"
    bench.makefile(".toml", logged=f"""
[models.logged-a]
backend = "echo"
weights = "smoke:echo"
smoke = true
options = {{ load_log = "{log}" }}

[models.logged-b]
backend = "echo"
weights = "smoke:echo"
smoke = true
options = {{ load_log = "{log}" }}
""")
    out = bench.runpytest_subprocess("bench", "--catalog", "logged.toml", "--ways", "20,30,40", "--samples", "20",
                                     "-p", "no:cacheprovider", "-n", "2")
    out.assert_outcomes(passed=6)
    loads = [line.split() for line in log.read_text().splitlines()]
    assert sorted(model for model, _ in loads) == ["logged-a", "logged-b"]  # three cases each, one load each


def test_baseline_gate_fails_a_case_significantly_worse_than_the_saved_run(bench):
    run(bench, "-k", "echo-a", "--ways", "20", "--samples", "100", "--report-dir", "first").assert_outcomes(passed=1)
    (first,) = [d for d in (bench.path / "first").iterdir() if d.is_dir()]
    # A better baseline on the same samples: every prediction right.
    samples = first / "samples" / "echo-a-20way.jsonl"
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    samples.write_text("".join(json.dumps({**r, "pred_id": r["true_id"], "pred_label": r["true_label"]}) + "\n" for r in rows))
    same = run(bench, "-k", "echo-a", "--ways", "20", "--samples", "100", "--baseline", str(first), "--report-dir", "second")
    same.assert_outcomes(failed=1)
    assert "significantly worse" in same.stdout.str()
    # the terminal says what the comparison found, and it does for a run that passes too
    assert f"Baseline {first.name}: 1 case compared by McNemar's test on the images both runs scored, 1 significantly worse." \
        in same.stdout.lines
    other = run(bench, "-k", "echo-a", "--ways", "20", "--samples", "100", "--baseline", str(first),
                "--prompt", "label-only", "--report-dir", "third")
    assert "the --baseline run differs in prompt (thesis vs label-only)" in other.stdout.str()
    assert f"Baseline {first.name}: 1 case compared by McNemar's test on the images both runs scored, 1 significantly worse." \
        in other.stdout.lines
    # its gate cell names no plumbing: the baseline failed it (the reasons are under Gate failures)
    assert "| failed " in other.stdout.str() and "failed (plumbing)" not in other.stdout.str()
    missing = run(bench, "-k", "echo-a", "--ways", "20", "--baseline", "no-such-run")
    assert missing.ret == pytest.ExitCode.USAGE_ERROR and "--baseline" in missing.stderr.str()


@pytest.mark.parametrize("body, message", [
    ("[models.x\nbackend = 1", "is not valid TOML"),
    ('[models.x]\nbackend = "echo"\nweights = "w"\nflavour = "x"', "unknown keys ['flavour']"),
])
def test_a_bad_catalog_is_one_usage_line(bench, body, message):
    bench.makefile(".toml", bad=body)
    out = bench.runpytest_subprocess("bench", "--catalog", "bad.toml", "-p", "no:cacheprovider")
    assert out.ret == pytest.ExitCode.USAGE_ERROR and message in out.stderr.str() and "Traceback" not in out.stderr.str()


def test_a_case_answered_by_the_store_loads_no_model(bench):
    log = bench.path / "loads.txt"
    bench.makefile(".toml", logged=f'[models.logged]\nbackend = "echo"\nweights = "smoke:echo"\nsmoke = true\noptions = {{ load_log = "{log}" }}\n')
    for _ in range(2):
        bench.runpytest_subprocess("bench", "--catalog", "logged.toml", "--ways", "20", "--samples", "30",
                                   "-p", "no:cacheprovider").assert_outcomes(passed=1)
    assert len(log.read_text().splitlines()) == 1


def _table_blocks(lines: list[str]) -> list[list[str]]:
    """The markdown-style tables among terminal lines: runs of lines starting with '|'."""
    blocks: list[list[str]] = []
    for prev, line in zip([""] + lines, lines):
        if line.startswith("|"):
            if not prev.startswith("|"):
                blocks.append([])
            blocks[-1].append(line)
    return blocks


def test_terminal_table_columns_are_sized_on_the_printed_text_and_the_smoke_note_follows_once():
    """A `<1 ms` cell was sized as `&lt;1 ms` (3 characters more) and printed short; only report.md said
    that smoke models score at chance."""
    from vlmcls import report
    from vlmcls.outcomes import summary_lines

    base = {"model": "m", "metrics": {"precision": 0.5, "recall": 0.5, "f1": 0.5, "accuracy": 0.5, "n": 10,
                                      "accuracy_ci": (0.2, 0.8)}, "stages": {"match": 1.0}, "status": "passed"}
    rows = [{**base, "case_id": f"{name}-{ways}way", "tag": name, "ways": ways, "smoke": smoke, "resolver_s": secs}
            for name, ways, smoke, secs in [("a&b<c>", 20, True, {"match": 0.0001}), ("b", 20, False, {"match": 0.0}),
                                            ("c", 20, False, {"match": 0.25, "nli": 3.0}), ("a&b<c>", 50, True, {"match": 0.0005})]]
    lines = summary_lines(rows, [], skips_shown=True)
    tables = _table_blocks(lines)
    assert len(tables) == 2
    for table in tables:
        assert len({len(line) for line in table}) == 1, "\n".join(table)
    text = "\n".join(lines)
    assert "a&b<c> *smoke*" in text and "&lt;" not in text and "&amp;" not in text and " 0 ms" not in text
    assert text.count("chance in expectation") == 1 and text.index("chance in expectation") > text.rindex("| a&b<c>")
    assert "chance in expectation" not in "\n".join(summary_lines([{**r, "smoke": False} for r in rows], [], True))
    assert report.SMOKE_NOTE in lines


def test_the_terminal_summary_of_a_real_run_lines_up_and_says_chance_once(bench):
    out = run(bench, "-k", "echo-a", "--ways", "20,50", "--samples", "30", "--refresh")
    out.assert_outcomes(passed=2)
    section = out.stdout.str().split("vlmcls results")[1].splitlines()
    tables = _table_blocks(section)
    assert len(tables) == 2 and all(len({len(line) for line in t}) == 1 for t in tables)
    assert out.stdout.str().count("chance in expectation") == 1


CLOCK = """
import time as real_time
import types

import vlmcls.session


class Clock(types.SimpleNamespace):
    # vlmcls.session's clock, 11 s later at each look: the progress line shows without waiting
    now = 0.0

    def monotonic(self):
        Clock.now += 11.0
        return Clock.now


vlmcls.session.time = Clock(**{k: getattr(real_time, k) for k in ("strftime", "perf_counter", "time")})
"""


def test_a_case_prints_its_progress_with_pace_and_time_left(bench):
    bench.makeconftest(CLOCK)
    out = run(bench, "-k", "echo-a", "--ways", "20", "--samples", "40")
    text = out.stdout.str()
    first = re.search(r"echo-a-20way: (\d+)/40 samples after (\d+) s\n", text)
    paced = re.search(r"echo-a-20way: (\d+)/40 samples after \d+ s, ([\d.]+) samples/s, about (\d+) s left", text)
    assert first and paced, text
    done, rate, left = int(paced[1]), float(paced[2]), int(paced[3])
    assert 0 < done < 40 and left == pytest.approx((40 - done) / rate, abs=1)
