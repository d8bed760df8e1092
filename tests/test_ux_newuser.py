"""What a new user trips on (issue 17), run as the user runs it: `pytest bench` in a temp dir.

Threads per xdist worker, one usage line for an empty catalog, each skip reason once, provenance in
report.md and results.json, readable file modes, and unreadable images kept apart from backend errors.
"""
from __future__ import annotations

import io
import json
import os
import stat
from importlib import metadata
from pathlib import Path

import pytest

from vlmcls import report
from vlmcls.catalog import ModelEntry
from vlmcls.gate import judge
from vlmcls.provenance import FIELDS
from vlmcls.resolve import Resolver
from vlmcls.runner import CaseRunner, CaseSpec
from vlmcls.settings import BackendSettings
from vlmcls.types import Answer, LabelSet, Sample

ECHO = '[models.echo-a]\nbackend = "echo"\nweights = "smoke:echo"\nsmoke = true\n'
KEYLESS = '[models.api-needs-key]\nbackend = "openai"\nweights = "gpt-4o-mini"\n'


def run(p: pytest.Pytester, catalog: str, *args: str) -> pytest.RunResult:
    p.makefile(".toml", catalog=catalog)
    return p.runpytest_subprocess("bench", "--catalog", "catalog.toml", "-p", "no:cacheprovider", *args)


def run_dir(p: pytest.Pytester) -> Path:
    (found,) = [d for d in (p.path / "reports").iterdir() if d.is_dir()]
    return found


# ---------------------------------------------------------------------------------- xdist threads
def test_each_xdist_worker_gets_its_share_of_the_cores(pytester: pytest.Pytester, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    pytester.makepyfile(test_threads="""
        import os
        import pytest

        @pytest.mark.parametrize("i", range(4))
        def test_report_threads(i):
            import torch  # imported in the worker, after the plugin set its share
            worker = os.environ["PYTEST_XDIST_WORKER"]
            with open(f"threads-{worker}.txt", "w") as fh:
                fh.write(f"{torch.get_num_threads()} {os.environ['OMP_NUM_THREADS']}")
    """)
    out = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider")
    out.assert_outcomes(passed=4)
    share = str(max(1, len(os.sched_getaffinity(0)) // 2))
    seen = {f.name: f.read_text().split() for f in pytester.path.glob("threads-gw*.txt")}
    assert seen and all(v == [share, share] for v in seen.values()), seen


def test_a_users_own_thread_count_wins(pytester: pytest.Pytester, monkeypatch):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 cores: the user's 2 threads must differ from a worker's share of 1")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # more than the share of -n 2 on 2 cores (1)
    pytester.makepyfile(test_threads="""
        import os

        def test_report_threads():
            import torch
            assert torch.get_num_threads() == 2 and os.environ["OMP_NUM_THREADS"] == "2"
    """)
    pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider").assert_outcomes(passed=1)


# ---------------------------------------------------------------------------------- usage errors
@pytest.mark.parametrize("body", ["", "[models]\n"])
def test_an_empty_catalog_is_one_usage_line(bench, body):
    out = run(bench, body)
    assert out.ret == pytest.ExitCode.USAGE_ERROR
    err = out.stderr.str()
    assert "INTERNALERROR" not in err and "Traceback" not in err
    (line,) = [l for l in err.splitlines() if l.strip()]
    assert line.startswith("ERROR: catalog catalog.toml defines no model")


# ---------------------------------------------------------------------------------- the terminal
@pytest.mark.parametrize("report_chars", [[], ["-ra"]])
def test_each_skip_reason_is_printed_once(bench, monkeypatch, report_chars):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    out = run(bench, KEYLESS, "--ways", "20,100", "--samples", "10", *report_chars)
    out.assert_outcomes(skipped=2)
    lines = [l for l in out.stdout.lines if "OPENAI_API_KEY" in l]
    assert len(lines) == 1, lines  # one line for both N of the model, whoever prints it
    if report_chars:
        assert "bench/test_classify.py" in lines[0] and "session.py" not in lines[0]
    # either way the cases are named (pytest's grouped -rs line does not name them)
    named = [l for l in out.stdout.lines if "api-needs-key-20way" in l and "api-needs-key-100way" in l]
    assert len(named) == 1, out.stdout.lines


def test_the_report_path_is_the_last_line_and_the_terminal_is_plain_text(bench):
    out = run(bench, ECHO, "--ways", "20", "--samples", "20")
    out.assert_outcomes(passed=1)
    text = [l for l in out.stdout.lines if l.strip()]
    assert text[-1] == f"report: {run_dir(bench) / 'report.md'}"
    assert "&gt;" not in out.stdout.str() and "&lt;" not in out.stdout.str()
    assert "benchmark: 1 tests" not in out.stdout.str()  # the cases are not one-round rows of a timing table


# ---------------------------------------------------------------------------------- provenance
def test_provenance_and_file_modes(bench):
    run(bench, ECHO, "--ways", "20", "--samples", "20").assert_outcomes(passed=1)
    folder = run_dir(bench)
    meta = json.loads((folder / "results.json").read_text())["meta"]
    prov = meta["provenance"]
    assert set(FIELDS) <= set(prov)
    assert prov["vlmcls"] == metadata.version("vlmcls") and prov["torch"] == metadata.version("torch")
    assert prov["transformers"] == metadata.version("transformers") and prov["cpu"]
    assert prov["date"][:4].isdigit()
    text = (folder / "report.md").read_text()
    block = text.split("## Provenance", 1)[1]
    for key in FIELDS:
        assert f"- {key.replace('_', ' ')}: " in block
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (folder / "report.md", folder / "results.json",
                                                             *folder.glob("samples/*"), *folder.glob("plots/*"))}
    assert set(modes.values()) == {0o644}, modes


# ---------------------------------------------------------------------------------- input errors
def jpeg(shade: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (shade, 40, 90)).save(buf, "JPEG")
    return buf.getvalue()


def test_unreadable_images_do_not_fail_the_smoke_plumbing_gate_and_are_listed(bench):
    folder = bench.path / "mine"
    for k, synset in enumerate(("n01440764", "n01443537", "n01484850")):
        (folder / synset).mkdir(parents=True)
        for i in range(6):
            (folder / synset / f"ok{i}.JPEG").write_bytes(jpeg(k * 60 + i))
    bad = [folder / "n01440764" / "broken.JPEG", folder / "n01443537" / "empty.JPEG", folder / "n01484850" / "text.JPEG"]
    for path, data in zip(bad, (b"\xff\xd8 not a jpeg", b"", b"hello")):
        path.write_bytes(data)
    out = run(bench, ECHO, "--ways", "3", "--dataset", "mine")
    out.assert_outcomes(passed=1)
    (row,) = json.loads((run_dir(bench) / "results.json").read_text())["cases"]
    assert row["status"] == "passed" and row["errors"] == row["input_errors"] == 3
    assert sorted(Path(f["sample_id"]).name for f in row["input_error_files"]) == sorted(p.name for p in bad)
    text = (run_dir(bench) / "report.md").read_text()
    listed = text.split("## Unreadable images", 1)[1].split("\n## ", 1)[0]
    assert all(p.name in listed for p in bad) and "3 images of the subset could not be read" in listed


LABELS = LabelSet(tuple(f"class {i}" for i in range(30)), tuple((f"class {i}",) for i in range(30)))


class Failing:
    """A backend that answers every query right, except those whose sample id it was told to fail."""

    kind = "text"

    def __init__(self, failing=()):
        self.failing = set(failing)

    def answer(self, queries):
        return [Answer(error="HTTP 500: boom") if q.sample_id in self.failing else Answer(text=q.labels[0])
                for q in queries]

    def close(self):
        pass


def gate(failing=(), corrupt=()) -> list[str]:
    spec = CaseSpec(model=ModelEntry(name="m", backend="echo", weights="smoke:echo", smoke=True), ways=5,
                    settings=BackendSettings(batch_size=4))
    samples = [Sample(f"s{i}", i, b"\xff\xd8 broken" if f"s{i}" in corrupt else jpeg(i * 8)) for i in range(12)]
    result = CaseRunner(spec, LABELS, Failing(failing), Resolver("exact", LABELS), None).run(samples)
    row = report.case_row(result, status="passed", threshold=None)
    assert row["input_errors"] == len(corrupt) and row["errors"] == len(corrupt) + len(failing)
    return list(judge(result).reasons)


def test_input_errors_pass_the_smoke_gate_but_backend_errors_fail_it():
    assert gate(corrupt={"s1", "s5"}) == []
    (why,) = gate(failing={"s2"}, corrupt={"s1", "s5"})
    assert "smoke plumbing check: 1 error row," in why  # the backend's error alone is counted
    (why,) = gate(failing={"s2", "s3"})
    assert "smoke plumbing check: 2 error rows" in why


def test_cost_is_split_into_spent_now_and_stored():
    row = {"case_id": "c", "cost_usd": 0.0141, "cost_now_usd": 0.0}
    (line,) = [l for l in report._notes([row]) if "cost" in l]
    assert "cost 0.0141 USD: 0.0000 spent now, 0.0141 stored" in line
