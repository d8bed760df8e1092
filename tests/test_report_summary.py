"""The publishing path of `python -m vlmcls report`: the PR-comment summary (`--summary`, summary.md),
each case's baseline verdict in results.json, re-rendering with the run's own catalog, and the
loopback stand-in server (`python -m vlmcls stub-server`) for an offline rehearsal of a served model.

Run folders are written by the plugin itself (`pytest bench` in a subprocess) or through vlmcls.report."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from vlmcls import report
from vlmcls.__main__ import main
from vlmcls.catalog import DEFAULT_CATALOG, ModelEntry
from vlmcls.runner import CaseSpec
from vlmcls.settings import BackendSettings

from test_report_cli import case, preds, write_run

BENCH = Path(__file__).resolve().parents[1] / "bench"
ROOT = Path(__file__).resolve().parents[1]
CATALOG = """
[models."acme-echo"]
backend = "echo"
weights = "smoke:echo"
thresholds = { 20 = 0.5, 2 = 0.05 }
{options}
[models."acme|pipe"]
backend = "echo"
weights = "smoke:echo"
smoke = true

[models."acme-gpt"]
backend = "openai"
weights = "gpt-4o-mini"
"""
# the later run's acme-echo answers "no idea" to every image: all wrong, where the first run was at chance
WORSE = 'options = { styles = ["no idea"] }\n'


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}  # acme-gpt must skip everywhere
    env["PYTHONPATH"] = str(ROOT)  # the checkout under test, wherever the subprocess runs
    return env


def _pytest(root: Path, *args: str) -> Path:
    """`pytest bench ...` in `root`; returns the new run folder."""
    before = set((root / "reports").glob("2*")) if (root / "reports").is_dir() else set()
    proc = subprocess.run([sys.executable, "-m", "pytest", "bench", "-p", "no:cacheprovider", "-q", *args],
                          cwd=root, capture_output=True, text=True, timeout=300, env=_env())
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]
    (run,) = set((root / "reports").glob("2*")) - before
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(the folder pytest ran in, a baseline run, a later run compared with it), both made with
    `--catalog ci.toml`: 2- and 20-way, an echo model with thresholds, a smoke model named with a
    pipe, and an API model that skips for want of a key."""
    root = tmp_path_factory.mktemp("walk")
    shutil.copytree(BENCH, root / "bench", ignore=shutil.ignore_patterns("__pycache__"))
    common = ["-k", "acme", "--ways", "2,20", "--resolver", "exact"]
    (root / "ci.toml").write_text(CATALOG.replace("{options}", ""))
    base = _pytest(root, "--catalog", "ci.toml", "--samples", "40", *common)
    (root / "ci.toml").write_text(CATALOG.replace("{options}", WORSE))
    now = _pytest(root, "--catalog", "ci.toml", "--samples", "60", "--baseline", str(base.relative_to(root)), *common)
    return root, base, now


@pytest.fixture
def copied(runs, tmp_path) -> tuple[Path, Path, Path]:
    """A private copy of the folder pytest ran in (rendering writes into the runs)."""
    root, base, now = runs
    new = Path(shutil.copytree(root, tmp_path / "walk", ignore=shutil.ignore_patterns("bench", "store.sqlite")))
    for run in (base, now):  # as if the runs had been made here (meta's absolute paths: baseline, catalog)
        results = new / run.relative_to(root) / "results.json"
        data = json.loads(results.read_text())
        data["meta"] = json.loads(json.dumps(data["meta"]).replace(json.dumps(str(root))[1:-1], str(new)))
        results.write_text(json.dumps(data))
    return new, new / base.relative_to(root), new / now.relative_to(root)


def _outcomes(path: Path) -> dict[str, bool]:
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["sample_id"]: r["pred_id"] is not None and r["pred_id"] == r["true_id"] for r in records}


def _lost_gained(now: Path, base: Path, case_id: str) -> tuple[int, int, int]:
    """(paired n, lost, gained), counted here from the two samples files."""
    a, b = _outcomes(now / "samples" / f"{case_id}.jsonl"), _outcomes(base / "samples" / f"{case_id}.jsonl")
    shared = a.keys() & b.keys()
    return len(shared), sum(b[s] and not a[s] for s in shared), sum(a[s] and not b[s] for s in shared)


def _tables_are_valid(text: str) -> None:
    """Every table line has the header's number of unescaped pipes, and the separator follows the header."""
    blocks = re.findall(r"(?m)(?:^\|.*\n?)+", text)
    assert blocks
    for block in blocks:
        lines = block.splitlines()
        assert len({len(re.findall(r"(?<!\\)\|", l)) for l in lines}) == 1, lines
        assert set(lines[1]) <= {"|", "-", ":", " "}, lines[1]


def _summary(capsys, *args: str) -> str:
    capsys.readouterr()
    assert main(["report", *args, "--summary"]) == 0
    out = capsys.readouterr()
    assert out.err == ""
    return out.out


# ---------------------------------------------------------------------------------- --summary
def test_summary_of_a_plugin_run_is_a_short_table_with_gate_threshold_and_baseline(copied, capsys):
    root, base, now = copied
    before = {p: p.stat().st_mtime_ns for p in now.rglob("*")}
    text = _summary(capsys, str(now))
    assert {p: p.stat().st_mtime_ns for p in now.rglob("*")} == before  # --summary writes nothing
    cases = {c["case_id"]: c for c in json.loads((now / "results.json").read_text())["cases"]}
    assert text.startswith(f"### vlmcls {now.name}: **2 failed**, 2 passed, 2 skipped\n")
    table = report.parse_table(text)
    assert list(table[0]) == ["Case", "Accuracy", "95 % CI", "n", "Threshold", "Gate", "vs baseline"]
    ran = [c for c in cases.values() if c["metrics"]]
    assert len(table) == len(ran) == 4  # the skipped API model has no row
    for line in table:
        smoke = line["Case"].endswith(" *smoke*")
        c = cases[line["Case"].removesuffix(" *smoke*")]
        assert smoke == bool(c["smoke"])
        m = c["metrics"]
        assert (line["Accuracy"], line["n"]) == (f"{m['accuracy']:.3f}", str(m["n"]))
        assert line["95 % CI"] == f"{m['accuracy_ci'][0]:.3f}–{m['accuracy_ci'][1]:.3f}"
        assert line["Threshold"] == ("–" if c["threshold"] is None else "plumbing" if smoke and not c["threshold"]
                                     else f"{c['threshold']:g}")
        assert line["Gate"] == (f"**{c['status']}**" if c["status"] == "failed" else c["status"])
        n, lost, gained = _lost_gained(now, base, c["case_id"])
        assert f": lost {lost}, gained {gained}, p=" in line["vs baseline"] and line["vs baseline"].endswith(f"(n={n})")
    worse = table[[l["Case"] for l in table].index("acme-echo-2way *smoke*")]
    assert worse["Gate"] == "**failed**" and worse["vs baseline"].startswith("**worse**: lost ")
    assert "acme|pipe-2way *smoke*" in [l["Case"] for l in table] and "| acme\\|pipe-2way" in text  # escaped
    _tables_are_valid(text)
    # why each failing case failed, once, without repeating its id; the skips in one line
    reasons = [l for l in text.splitlines() if l.startswith("- ")]
    assert reasons == [f"- {cid}: {report.cell(cases[cid]['reason'].replace(cid + ': ', ''))}"
                       for cid in ("acme-echo-2way", "acme-echo-20way")]
    assert "significantly worse than the baseline" in reasons[0] and "below the gate 0.5" in reasons[1]
    assert "Not run (2 skipped): acme-gpt-2way (OPENAI_API_KEY is not set); acme-gpt-20way (OPENAI_API_KEY" in text
    assert "chance in expectation" in text and f"Baseline {base.name}: 4 cases compared" in text
    assert "1 significantly worse" in text
    assert str(root) not in text and "/tmp" not in text and "![" not in text and len(text.splitlines()) < 25


def test_every_render_writes_summary_md_the_same_as_summary_prints(copied, capsys):
    _, _, now = copied
    assert main(["report", str(now), "--no-plots"]) == 0
    assert (now / "summary.md").read_text() == _summary(capsys, str(now))
    merged = now.parent / "merged"
    assert main(["report", str(now), str(copied[1]), "--out", str(merged), "--no-plots"]) == 0
    assert (merged / "summary.md").read_text().startswith("### vlmcls merged: ")


def test_summary_of_several_runs_is_one_block_each(copied, capsys):
    _, base, now = copied
    text = _summary(capsys, str(base), str(now))
    assert [l for l in text.splitlines() if l.startswith("### ")] == [
        f"### vlmcls {base.name}: **1 failed**, 3 passed, 2 skipped", f"### vlmcls {now.name}: **2 failed**, 2 passed, 2 skipped"]
    first = text.split(f"### vlmcls {now.name}")[0]
    assert "vs baseline" not in first  # the first run had no baseline


def test_summary_counts_many_skipped_cases_in_one_line_and_hides_absolute_paths(tmp_path, capsys):
    def skipped(name: str, ways: int, why: str, status: str = "skipped") -> tuple[dict, None]:
        spec = CaseSpec(model=ModelEntry(name, "openai", "gpt-4o-mini"), ways=ways, settings=BackendSettings())
        return report.skipped_row(spec, status, why), None

    failed, predictions = case("bad|name", 20, preds(20, wrong=20))
    failed = {**failed, "status": "failed", "threshold": 0.5,
              "reason": "bad|name-20way: cannot load /home/ci/.cache/vlmcls/weights/model.bin | <b>x</b>\nnext"}
    run = write_run(tmp_path / "run", (failed, predictions),
                    *[skipped(f"api{i}", 20, f"no key; see /home/ci/secret{i}/x.toml") for i in range(5)])
    text = _summary(capsys, str(run))
    assert "Not run: 5 cases (5 skipped); each one's reason is in report.md." in text
    assert "api0" not in text and "/home/ci" not in text
    (reason,) = [l for l in text.splitlines() if l.startswith("- ")]
    assert reason == "- bad\\|name-20way: cannot load …/model.bin \\| &lt;b&gt;x&lt;/b&gt; next"
    assert report.parse_table(text)[0]["Case"] == "bad|name-20way" and "vs baseline" not in text
    _tables_are_valid(text)
    few = write_run(tmp_path / "few", case("m", 20, preds(10))[:2], skipped("api", 20, "no key"),
                    skipped("api", 100, "the run was interrupted", "interrupted"))
    assert "Not run (1 skipped, 1 interrupted): api-20way (no key); api-100way (the run was interrupted)." in _summary(capsys, str(few))


def test_summary_refuses_out(copied, capsys):
    assert main(["report", str(copied[2]), "--summary", "--out", str(copied[0] / "x")]) == 2
    assert "--summary prints to stdout and writes nothing" in capsys.readouterr().err


# ---------------------------------------------------------------------------------- baseline in results.json
def test_rerender_stores_each_cases_baseline_verdict_and_a_relative_baseline_path(copied, capsys):
    root, base, now = copied
    assert main(["report", str(now), "--no-plots"]) == 0  # the baseline the run recorded
    data = json.loads((now / "results.json").read_text())
    assert data["meta"]["baseline_relative"] == f"../{base.name}"
    for c in data["cases"]:
        if not c["metrics"]:
            assert "baseline" not in c
            continue
        n, lost, gained = _lost_gained(now, base, c["case_id"])
        b = c["baseline"]
        assert (b["run_id"], b["compared"], b["paired_n"], b["lost"], b["gained"]) == (base.name, True, n, lost, gained)
        assert b["worse"] == (b["verdict"] == "significantly worse than the baseline")
        assert 0 <= b["p"] <= 1 and b["only_here"] == 20 and b["only_in_baseline"] == 0
    assert {c["case_id"] for c in data["cases"] if (c.get("baseline") or {}).get("worse")} == {"acme-echo-2way"}
    # the reports folder moved as a whole (a CI cache, an artifact): the relative path still finds the baseline
    moved = root.parent / "moved"
    shutil.move(root, moved)
    run = moved / now.relative_to(root)
    data["meta"]["baseline"] = "/nonexistent/old/place"
    (run / "results.json").write_text(json.dumps(data))
    assert main(["report", str(run), "--no-plots"]) == 0
    again = json.loads((run / "results.json").read_text())
    assert again["meta"]["baseline"] == str((moved / base.relative_to(root)).resolve())
    assert [c.get("baseline") for c in again["cases"]] == [c.get("baseline") for c in data["cases"]]
    assert f"## Compared with the baseline {base.name}" in (run / "report.md").read_text()


def test_a_case_the_baseline_cannot_pair_says_why_and_a_dropped_baseline_leaves_no_stale_verdict(tmp_path, capsys):
    base = write_run(tmp_path / "base", case("m", 20, preds(30)), run_id="base-run")
    now = write_run(tmp_path / "now", case("m", 20, preds(30, wrong=12)), case("fresh", 20, preds(10)))
    assert main(["report", str(now), "--baseline", str(base), "--no-plots"]) == 0
    cases = {c["case_id"]: c for c in json.loads((now / "results.json").read_text())["cases"]}
    assert cases["fresh-20way"]["baseline"] == {"run_id": "base-run", "compared": False, "verdict": "not compared",
                                                "why": "not in the baseline"}
    assert (cases["m-20way"]["baseline"]["lost"], cases["m-20way"]["baseline"]["gained"]) == (12, 0)
    text = _summary(capsys, str(now))
    assert "| not compared: not in the baseline" in text
    assert "Baseline base-run: 1 case compared by McNemar's test on the images both runs scored, 1 significantly worse; 1 not compared" in text
    shutil.rmtree(base)
    assert main(["report", str(now), "--no-plots"]) == 0
    assert all("baseline" not in c for c in json.loads((now / "results.json").read_text())["cases"])


# ---------------------------------------------------------------------------------- the run's catalog
def test_rerender_follows_the_catalog_the_run_was_made_with(copied, capsys):
    root, _, now = copied
    bundled = now.parent / "bundled"
    assert main(["report", str(now), "--out", str(bundled), "--no-plots", "--catalog", str(DEFAULT_CATALOG)]) == 0
    assert "`pytest bench --study` runs the study's 18 rows" in (bundled / "report.md").read_text()  # the bundled catalog's
    capsys.readouterr()
    out = now.parent / "rr"
    assert main(["report", str(now), "--out", str(out), "--no-plots"]) == 0
    assert capsys.readouterr().err == ""
    text = (out / "report.md").read_text()
    assert "runs the study's" not in text and "cannot be top-1 accuracy" not in text
    meta = json.loads((out / "results.json").read_text())["meta"]
    assert meta["catalog"] == str((root / "ci.toml").resolve())
    # --out copies every per-case file: samples and per-class metrics
    for name in ("samples", "per_class"):
        assert sorted(p.name for p in (out / name).iterdir()) == sorted(p.name for p in (now / name).iterdir())
        assert len(list((out / name).iterdir())) == 4
    assert (out / "per_class" / "acme|pipe-20way.json").read_text() == (now / "per_class" / "acme|pipe-20way.json").read_text()
    # the catalog file gone: one note, and no study rows rather than the bundled catalog's
    (root / "ci.toml").unlink()
    assert main(["report", str(out), "--no-plots"]) == 0
    err = capsys.readouterr().err
    assert err == (f"vlmcls: note: the catalog this run was made with, {(root / 'ci.toml').resolve()}, is gone: "
                   "the report compares with no study row (--catalog FILE gives one)\n")
    assert "runs the study's" not in (out / "report.md").read_text()


def test_a_recorded_catalog_that_changed_is_followed_with_a_note(tmp_path, capsys):
    catalog = tmp_path / "cat.toml"
    catalog.write_text('[models.m]\nbackend = "echo"\nweights = "smoke:echo"\n')
    run = write_run(tmp_path / "run", case("m", 20, preds(10)))
    data = json.loads((run / "results.json").read_text())
    data["meta"].update(report.runs.catalog_meta(catalog))
    (run / "results.json").write_text(json.dumps(data))
    assert main(["report", str(run), "--no-plots"]) == 0 and capsys.readouterr().err == ""
    catalog.write_text(catalog.read_text() + 'thresholds = { 20 = 0.5 }\n')
    assert main(["report", str(run), "--no-plots"]) == 0
    assert capsys.readouterr().err == f"vlmcls: note: the catalog {catalog.resolve()} changed since the run: its current study rows are used\n"


# ---------------------------------------------------------------------------------- stub-server
def test_stub_server_serves_a_real_pytest_run_of_a_served_model_until_ctrl_c(tmp_path):
    shutil.copytree(BENCH, tmp_path / "bench", ignore=shutil.ignore_patterns("__pycache__"))
    server = subprocess.Popen([sys.executable, "-m", "vlmcls", "stub-server", "--port", "0"], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        first = server.stdout.readline()
        match = re.fullmatch(r"base URL: (http://127\.0\.0\.1:(\d+)/v1)\n", first)
        assert match, first + server.stderr.read()
        url = match.group(1)
        (tmp_path / "mine.toml").write_text('[models."acme-served"]\nbackend = "openai-compatible"\n'
                                            'weights = "acme/vlm-7b"\nthresholds = { 20 = 0.01 }\n')
        proc = subprocess.run([sys.executable, "-m", "pytest", "bench", "--catalog", "mine.toml", "-k", "acme",
                               "--ways", "20", "--samples", "12", "--resolver", "exact", "--base-url", url,
                               "-p", "no:cacheprovider", "-q"], cwd=tmp_path, capture_output=True, text=True,
                              timeout=300, env=_env())
        assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout[-3000:]
        (run,) = (tmp_path / "reports").glob("2*")
        (row,) = json.loads((run / "results.json").read_text())["cases"]
        # the stub server's answers are a stand-in's: the row is smoke, whatever the catalog calls the model
        assert (row["status"], row["smoke"], row["errors"], row["metrics"]["n"]) == ("passed", True, 0, 12)
        records = [json.loads(l) for l in (run / "samples" / "acme-served-20way.jsonl").read_text().splitlines()]
        # the stand-in's answers, each naming one candidate, resolved from the text
        assert all(r["pred_label"] in r["candidates"] and r["pred_label"] in r["answer"] and r["stage"] == "match"
                   for r in records)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)  # its few lines fit the pipe: read them after it ended
        out, err = first + server.stdout.read(), server.stderr.read()
    assert server.returncode == 0, err
    assert out.strip().splitlines()[-1] == "vlmcls stub-server: stopped after 12 requests"  # every sample asked it
    assert f"--base-url {url}" in out and 'backend = "openai-compatible"' in out and err == ""


def test_stub_server_on_a_port_in_use_is_one_line(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "vlmcls", "stub-server", "--port", str(port)],
                              capture_output=True, text=True, timeout=60, env=_env())
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith(f"vlmcls: error: cannot listen on 127.0.0.1:{port}: ") and len(proc.stderr.splitlines()) == 1


def test_a_plugin_run_records_its_catalog_each_cases_baseline_and_writes_summary_md(runs):
    """(needs the writer/session wiring) the pytest path writes what `vlmcls report` does."""
    root, base, now = runs
    data = json.loads((now / "results.json").read_text())
    assert data["meta"]["catalog"] == str((root / "ci.toml").resolve()) and len(data["meta"]["catalog_sha256"]) == 64
    assert data["meta"]["baseline_relative"] == f"../{base.name}"
    done = [c for c in data["cases"] if c["metrics"]]
    assert done and all(c["baseline"]["compared"] and c["baseline"]["run_id"] == base.name for c in done)
    for c in done:
        assert (c["baseline"]["paired_n"], c["baseline"]["lost"], c["baseline"]["gained"]) == _lost_gained(now, base, c["case_id"])
    assert (now / "summary.md").read_text().startswith(f"### vlmcls {now.name}: **2 failed**")
    assert json.loads((base / "results.json").read_text())["meta"]["catalog"] == str((root / "ci.toml").resolve())


def test_a_smoke_case_gated_on_its_plumbing_shows_no_threshold_of_zero():
    """The smoke gate is every sample answered, no error row: a Threshold of 0 read as an accuracy gate."""
    from vlmcls.report.summary import summary_markdown

    row = {"case_id": "s-20way", "smoke": True, "threshold": 0.0, "status": "passed", "ways": 20,
           "metrics": {"accuracy": 0.05, "accuracy_ci": [0.01, 0.2], "n": 40}}
    (line,) = report.parse_table(summary_markdown([row, {**row, "case_id": "t-20way", "threshold": 0.3}]))[:1]
    assert line["Threshold"] == "plumbing"
    assert report.parse_table(summary_markdown([{**row, "threshold": 0.3}]))[0]["Threshold"] == "0.3"
