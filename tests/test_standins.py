"""Stand-ins are reported as stand-ins: an `echo` entry whatever its weights, and any API model whose answers
came from vlmcls's own stub server (`python -m vlmcls stub-server`, the README's rehearsal), are *smoke*
rows -- their accuracy is chance, never a model's -- in results.json, report.md and the JUnit properties."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from vlmcls import prompts
from vlmcls.backends import api
from vlmcls.catalog import ModelEntry, load_catalog
from vlmcls.plugin import junit_properties
from vlmcls.settings import BackendSettings
from vlmcls.smoke.api_server import ApiServer, Reply
from vlmcls.types import LabelSet, Query

BENCH = Path(__file__).resolve().parents[1] / "bench" / "test_classify.py"
LABELS = LabelSet(names=("cat", "dog", "fox"), synonyms=(("cat",), ("dog",), ("fox",)))


# ---------------------------------------------------------------------- the catalog
def test_an_echo_entry_is_smoke_whatever_its_weights(tmp_path):
    path = tmp_path / "my.toml"
    path.write_text('[models."plain-echo"]\nbackend = "echo"\nweights = "echo"\n'
                    '[models.real]\nbackend = "openai-compatible"\nweights = "my-org/my-vlm-7b"\n')
    catalog = load_catalog(path)
    assert catalog["plain-echo"].smoke is True
    assert catalog["real"].smoke is False  # a served model stays a model


def test_smoke_false_on_an_echo_entry_is_one_line_error(tmp_path):
    path = tmp_path / "my.toml"
    path.write_text('[models."plain-echo"]\nbackend = "echo"\nweights = "echo"\nsmoke = false\n')
    with pytest.raises(ValueError) as info:
        load_catalog(path)
    message = str(info.value)
    assert "\n" not in message
    assert "model 'plain-echo' has backend 'echo', a scripted stand-in" in message
    assert "smoke = false: its results would read as a real model's; drop `smoke = false`" in message


# ---------------------------------------------------------------------- the API backend
def _query(i: int = 0) -> Query:
    labels = ("cat", "dog", "fox")
    image = Image.new("RGB", (32, 32), (10 * i, 100, 200))
    return Query(f"s{i}", image, (0, 1, 2), labels, prompts.render(prompts.get_template("thesis"), labels))


@pytest.fixture
def keys(monkeypatch):
    for name in ("OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN", api.COMPAT_KEY_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-vlmcls-standin-test-0000")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-vlmcls-standin-test-0000")
    return monkeypatch


@pytest.mark.parametrize("backend", ["openai-compatible", "anthropic"])
def test_the_backend_recognises_the_stub_servers_replies(keys, backend):
    pytest.importorskip("openai" if backend != "anthropic" else "anthropic")
    entry = ModelEntry(name="served", backend=backend, weights="my-org/my-vlm-7b")
    with ApiServer() as srv:
        keys.setenv("ANTHROPIC_BASE_URL", srv.url)
        base = f"{srv.url}/v1" if backend == "openai-compatible" else None
        backend_ = api.load(entry, BackendSettings(base_url=base, max_retries=0, timeout_s=5.0), LABELS)
        try:
            backend_.begin_case()
            assert backend_.stand_in is False and api.STAND_IN_NOTE not in backend_.notes  # nothing answered yet
            backend_.answer([_query(0), _query(1)])
            assert backend_.stand_in is True
            assert api.STAND_IN_NOTE in backend_.notes
            backend_.begin_case()  # a case's notes are its own
            assert backend_.stand_in is False
        finally:
            backend_.close()


def test_a_reply_with_another_id_is_a_models(keys):
    """A server whose replies do not carry the stub's ids (a real vLLM) is not marked."""
    pytest.importorskip("openai")
    entry = ModelEntry(name="served", backend="openai-compatible", weights="my-org/my-vlm-7b")
    body = {"id": "chatcmpl-4f2a", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "cat"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}
    with ApiServer() as srv:
        srv.script(Reply(body=json.dumps(body).encode(), headers=(("content-type", "application/json"),)))
        backend = api.load(entry, BackendSettings(base_url=f"{srv.url}/v1", max_retries=0, timeout_s=5.0), LABELS)
        try:
            backend.begin_case()
            (answer,) = backend.answer([_query()])
        finally:
            backend.close()
    assert answer.text == "cat" and backend.stand_in is False and api.STAND_IN_NOTE not in backend.notes


# ---------------------------------------------------------------------- as the README's rehearsal runs it
def test_a_served_model_answered_by_the_stub_server_is_reported_smoke(tmp_path):
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "test_classify.py").write_text(BENCH.read_text())
    (tmp_path / "my.toml").write_text('[models."my-served"]\nbackend = "openai-compatible"\n'
                                      'weights = "my-org/my-vlm-7b"\n')
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_BASE_URL", api.COMPAT_KEY_ENV)}
    with ApiServer() as srv:
        out = subprocess.run([sys.executable, "-m", "pytest", "bench/test_classify.py", "--catalog", "my.toml",
                              "-k", "my-served", "--base-url", f"{srv.url}/v1", "--resolver", "exact",
                              "--samples", "20", "--ways", "20", "-p", "no:cacheprovider",
                              "--junitxml", "junit.xml"],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        answered = len(srv.records)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert answered == 20
    (results,) = list((tmp_path / "reports").rglob("results.json"))
    (row,) = [r for r in json.loads(results.read_text())["cases"] if r["model"] == "my-served"]
    assert row["smoke"] is True and row["weights"] == "my-org/my-vlm-7b"
    assert api.STAND_IN_NOTE in row["notes"]
    report = (results.parent / "report.md").read_text()
    assert f"{row['tag']} *smoke*" in report
    assert '<property name="vlmcls_smoke" value="True"' in (tmp_path / "junit.xml").read_text()


def test_a_thresholded_served_model_answered_by_the_stub_is_gated_on_plumbing_and_stays_smoke_from_the_store(tmp_path):
    """The entry's gate (0.99) is the real model's, which the stub's chance answers cannot meet: the case is
    gated on its plumbing as any smoke model. A rerun answered wholly from the store loads no backend, and
    the stored rows still say a stand-in answered: smoke, the note, the same verdict."""
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "test_classify.py").write_text(BENCH.read_text())
    (tmp_path / "my.toml").write_text('[models."my-served"]\nbackend = "openai-compatible"\n'
                                      'weights = "my-org/my-vlm-7b"\nthresholds = { 20 = 0.99 }\n')
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_BASE_URL", api.COMPAT_KEY_ENV)}
    rows, answered = [], []
    with ApiServer() as srv:
        for _ in range(2):
            out = subprocess.run([sys.executable, "-m", "pytest", "bench/test_classify.py", "--catalog", "my.toml",
                                  "-k", "my-served", "--base-url", f"{srv.url}/v1", "--resolver", "exact",
                                  "--samples", "12", "--ways", "20", "-p", "no:cacheprovider"],
                                 cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
            assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
            answered.append(len(srv.records))
            (results,) = list((tmp_path / "reports").rglob("results.json"))
            (row,) = [r for r in json.loads(results.read_text())["cases"] if r["model"] == "my-served"]
            rows.append(row)
            results.unlink()
    assert answered == [12, 12]  # the second run asked the server nothing
    first, again = rows
    assert (first["resumed"], again["resumed"]) == (0, 12)
    for row in rows:
        assert row["smoke"] is True and row["status"] == "passed" and row["threshold"] == 0.0
        assert api.STAND_IN_NOTE in row["notes"]
    assert first["metrics"]["accuracy"] == again["metrics"]["accuracy"]


# ---------------------------------------------------------------------- JUnit properties
def test_junit_properties_mark_a_smoke_row_only():
    real = {"status": "no gate", "smoke": False, "threshold": None, "metrics": {"accuracy": 0.5, "n": 4}}
    smoke = {**real, "smoke": True}
    assert ("vlmcls_smoke", True) in junit_properties(smoke)
    assert [k for k, _ in junit_properties(real)] == ["vlmcls_status", "vlmcls_accuracy", "vlmcls_n"]
    assert junit_properties(smoke) == [*junit_properties(real), ("vlmcls_smoke", True)]
