"""Secrets through every output channel of one real run (session 12's secrets audit).

One `pytest bench` run against loopback stand-ins (vlmcls.smoke.api_server), with canary keys and URL
credentials where a user puts them: a catalog's `options.base_url` (user:password@, a `?token=` query),
OPENAI_BASE_URL with user:password@, API keys in the environment (one read with a stray line ending),
HF_TOKEN. The servers echo them back as real ones do: a 401 naming the credentials, a 404 naming the
request path (the SDK puts a base URL's query string into it), a 400 quoting the request's Basic
header. The run writes every channel at once: terminal (-vv -rA --tb=long --full-trace -l, captured
logs at DEBUG), --junitxml (properties, failures, system-out through junit_logging), --log-file,
pytest's own cache, reports/ (results.json, report.md, summary.md, samples/, plots), the result store;
then `vlmcls report` merges, compares with --baseline and prints --summary, and `--co` and a bad
--base-url are run. Each test reads one channel; the last sweeps every file and output, byte by byte,
for each canary and its first 9 characters.

Already covered elsewhere (not repeated here): an environment key and a --base-url password kept out of
reports/ and stdout (test_runner), key-like text and exact keys in answers, error rows and caplog
(test_api, test_api_mutants), URL redaction rules (test_runner, test_mutants_session9), spec_fields'
base_url (test_report_sections).
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import pytest

from vlmcls.smoke.api_server import ApiServer, Reply

pytest.importorskip("openai")
pytest.importorskip("anthropic")

BENCH = Path(__file__).resolve().parents[1] / "bench" / "test_classify.py"

OPENAI_KEY = "sk-LEAKCANARY-1234567890abcdef"  # in the environment, sent nowhere
ANT_KEY = "sk-ant-LEAKCANARY-ANT-0987654321"  # read with a CR: httpcore's debug line quotes the header whole
COMPAT_KEY = "COMPATCANARY-5555-plainkey"  # no sk-, no Bearer: only the exact list catches it
HF = "hf_HFCANARY_0123456789abcdef"
PW_ROWS, PW_401, PW_QUERY, PW_ENV = "CATPW-CANARY-31", "CATPW-CANARY-32", "CATPW-CANARY-33", "ENVPW-CANARY-42"
QUERY = "CATQS-CANARY-19"
BASIC = base64.b64encode(f"user:{PW_ROWS}".encode()).decode()  # what httpx sends for user:password@
PROXY = base64.b64encode(b"proxy:PROXYPW-CANARY-55").decode()  # a Basic header that is no URL's: the pattern's
CANARIES = (OPENAI_KEY, ANT_KEY, COMPAT_KEY, HF, PW_ROWS, PW_401, PW_QUERY, PW_ENV, QUERY, BASIC, PROXY)
PARTS = tuple(dict.fromkeys([*CANARIES, *(c[:9] for c in CANARIES), "CANARY"]))


def catalog(rows: ApiServer, refused: ApiServer, missing: ApiServer) -> str:
    def url(server: ApiServer, password: str, query: str = "") -> str:
        return server.url.replace("://", f"://user:{password}@") + "/v1" + query

    return f"""
[models.url-rows]
backend = "openai-compatible"
weights = "served-model"
options = {{ base_url = "{url(rows, PW_ROWS)}" }}

[models.url-401]
backend = "openai-compatible"
weights = "served-model"
options = {{ base_url = "{url(refused, PW_401)}" }}

[models.url-query]
backend = "openai-compatible"
weights = "served-model"
options = {{ base_url = "{url(missing, PW_QUERY, f'?token={QUERY}')}" }}

[models.gpt-env]
backend = "openai"
weights = "gpt-test"

[models.claude-env]
backend = "anthropic"
weights = "claude-test"
options = {{ max_retries = 0 }}
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> SimpleNamespace:
    here = tmp_path_factory.mktemp("secrets")
    (here / "bench").mkdir()
    shutil.copy(BENCH, here / "bench")
    echo = f"Authorization: Basic {BASIC}; proxy Authorization: Basic {PROXY}; user:{PW_ROWS}"
    outputs: dict[str, subprocess.CompletedProcess] = {}
    with ApiServer() as rows, ApiServer() as refused, ApiServer() as missing, ApiServer() as gpt, ApiServer() as claude:
        rows.script(Reply(400, body=json.dumps({"error": {"message": echo}}).encode()))
        gpt.script(Reply(400, body=json.dumps({"error": {"message": f"user:{PW_ENV} may not use gpt-test"}}).encode()))
        refused.script(*[Reply(401, body=json.dumps({"error": {"message": (
            f"Incorrect API key provided: {COMPAT_KEY}; credentials user:{PW_401} rejected")}}).encode())] * 10)
        # url-query: the query goes with every request (the SDK's default_query), and a server that echoes
        # the URL it refused names the token
        missing.script(*[Reply(404, body=json.dumps({"error": {"message": (
            f"no model at /v1/chat/completions?token={QUERY}")}}).encode())] * 10)
        (here / "catalog.toml").write_text(catalog(rows, refused, missing))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "OPENAI_", "ANTHROPIC_"))}
        env.update(OPENAI_API_KEY=OPENAI_KEY, OPENAI_COMPATIBLE_API_KEY=COMPAT_KEY, ANTHROPIC_API_KEY=ANT_KEY + "\r",
                   OPENAI_BASE_URL=gpt.url.replace("://", f"://user:{PW_ENV}@") + "/v1", ANTHROPIC_BASE_URL=claude.url,
                   HF_TOKEN=HF)
        common = ["--catalog", "catalog.toml", "--ways", "20", "--samples", "4", "--resolver", "exact", "--concurrency", "1"]

        def call(name: str, *args: str) -> None:
            outputs[name] = subprocess.run([sys.executable, "-m", *args], cwd=here, env=env, capture_output=True,
                                           text=True, timeout=300)

        # pytest's cache provider on (its files are swept too); -l -vv --full-trace: frames' locals, whole
        call("run", "pytest", "bench", *common, "--run-id", "a", "-vv", "-rA", "--tb=long", "--full-trace", "-l",
             "--junitxml=junit.xml", "-o", "junit_logging=all", "--log-level=DEBUG",
             "--log-file=log.txt", "--log-file-level=DEBUG")
        served = rows.records + gpt.records
        queried = [r.path for r in missing.records]
    shutil.copytree(here / "reports" / "a", here / "reports" / "base")
    call("merge", "vlmcls", "report", "reports/base", "reports/a", "--out", "reports/merged")
    call("summary", "vlmcls", "report", "reports/a", "--baseline", "reports/base", "--summary")
    credentials = f"http://user:{PW_ROWS}@127.0.0.1:1/v1?api_key={QUERY}"
    call("collect", "pytest", "bench", *common, "-p", "no:cacheprovider", "--co", "--base-url", credentials)
    call("bad-url", "pytest", "bench", *common, "-p", "no:cacheprovider", "--base-url", "h" + credentials)
    return SimpleNamespace(path=here, out={k: p.stdout + p.stderr for k, p in outputs.items()},
                           rc={k: p.returncode for k, p in outputs.items()}, served=served, queried=queried)


def leaks(data: bytes | str) -> list[str]:
    text = data.decode("latin-1") if isinstance(data, bytes) else data
    return [c for c in PARTS if c in text]


def test_the_run_reached_every_channel(run):
    """The checks below look at something: the cases ran, failed and wrote what they are meant to."""
    assert run.rc["run"] == 1 and len(run.served) == 8, run.out["run"][-3000:]
    rows = {r["case_id"]: r for r in json.loads((run.path / "reports" / "a" / "results.json").read_text())["cases"]}
    for case in ("url-rows-20way", "gpt-env-20way"):
        # the loopback stub answered: a smoke row, gated on its plumbing, which the one error row fails
        assert rows[case]["smoke"] is True and rows[case]["metrics"]["errors"] == 1, rows[case]
        assert rows[case]["status"] == "failed" and "smoke plumbing check: 1 error row" in rows[case]["reason"]
    assert {rows[c]["status"] for c in ("url-401-20way", "url-query-20way", "claude-env-20way")} == {"error", "failed"}
    assert "HTTP 401" in rows["url-401-20way"]["reason"] and "HTTP 404" in rows["url-query-20way"]["reason"]
    assert run.queried and set(run.queried) == {f"/v1/chat/completions?token={QUERY}"}  # the path, then the query
    assert run.rc["merge"] == 0 and run.rc["summary"] == 0 and run.rc["collect"] == 0, run.out
    assert (run.path / ".pytest_cache").is_dir() and (run.path / "log.txt").stat().st_size > 0


def test_a_catalog_base_url_reaches_results_json_without_its_credentials(run):
    """`options.base_url` is a setting and stays in `extra` too: results.json kept it whole there."""
    for folder in ("a", "merged"):
        cases = json.loads((run.path / "reports" / folder / "results.json").read_text())["cases"]
        for case in (c for c in cases if c["model"].startswith("url-")):
            for url in (case["settings"]["base_url"], case["settings"]["extra"]["base_url"]):
                assert url.startswith("http://***@127.0.0.1:") and not leaks(url), (folder, case["case_id"], url)
        assert not leaks((run.path / "reports" / folder / "results.json").read_bytes())


def test_the_store_keeps_no_credential_in_any_table_or_column(run):
    """Every table and column of the result store, the key's text (`cases.spec`) included."""
    db = sqlite3.connect(run.path / "reports" / "store.sqlite")
    tables = [t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    seen = ""
    for table in tables:
        for row in db.execute(f"SELECT * FROM {table}"):
            text = " ".join(v.decode("latin-1") if isinstance(v, bytes) else str(v) for v in row)
            assert not leaks(text), (table, leaks(text), text[:300])
            seen += text
    db.close()
    assert {"cases", "results"} <= set(tables) and '"base_url": "http://***@127.0.0.1:' in seen
    assert "Authorization: ***" in seen  # the 400's error row is stored, masked


def test_error_rows_and_reasons_mask_a_server_urls_credentials(run):
    """A server that echoes user:password, a Basic header or the query string: the secrets list had
    only API keys, and `Authorization: Basic x` lost only the word Basic."""
    a = run.path / "reports" / "a"
    errors = [json.loads(line).get("error") or "" for line in (a / "samples" / "url-rows-20way.jsonl").read_text().splitlines()]
    (error,) = [e for e in errors if e]
    assert error.startswith("HTTP 400") and "Authorization: ***; proxy Authorization: ***; user:***" in error
    gpt = [json.loads(line).get("error") for line in (a / "samples" / "gpt-env-20way.jsonl").read_text().splitlines()]
    assert "HTTP 400: Error code: 400 - user:*** may not use gpt-test" in gpt  # OPENAI_BASE_URL's user:password
    rows = {r["case_id"]: r for r in json.loads((a / "results.json").read_text())["cases"]}
    assert "Incorrect API key provided: ***; credentials user:*** rejected" in rows["url-401-20way"]["reason"]
    assert "no model at /v1/chat/completions?token=***" in rows["url-query-20way"]["reason"]
    for path in [*a.rglob("*"), *(run.path / "reports" / "merged").rglob("*")]:
        if path.is_file():
            assert not leaks(path.read_bytes()), (path, leaks(path.read_bytes()))


def test_the_terminal_carries_no_secret(run):
    """-vv -rA --tb=long --full-trace -l with captured DEBUG logs, `vlmcls report`'s merge and --summary,
    --co, and a --base-url refused for its scheme."""
    out = run.out["run"]
    assert "HTTP 401" in out and "Captured log call" in out  # the failures and their logs were shown
    assert "base_url='http://***@127.0.0.1:" in out  # -l showed the settings of a failing case's frames
    assert "HTTP 401" in run.out["summary"]
    assert "--base-url takes http(s) URLs" in run.out["bad-url"] and "hhttp://***@127.0.0.1:1/v1?api_key=***" in run.out["bad-url"]
    for name, text in run.out.items():
        assert not leaks(text), (name, leaks(text))


def test_junitxml_properties_failures_and_system_out_carry_no_secret(run):
    xml = (run.path / "junit.xml").read_text()
    tree = ET.fromstring(xml)
    props = {p.get("name") for p in tree.iter("property")}
    assert {"vlmcls_status", "vlmcls_accuracy", "vlmcls_n"} <= props
    assert any("HTTP 401" in (f.get("message") or "") for f in tree.iter("failure"))
    assert "HTTP Request: POST http://***@127.0.0.1:" in xml  # junit_logging=all wrote the captured logs
    assert not leaks(xml), leaks(xml)


def test_log_lines_mask_keys_and_url_credentials(run):
    """httpx names the request URL with user:password@ (INFO), and httpcore quotes a header it refuses
    whole: a key read with its line ending (DEBUG)."""
    log = (run.path / "log.txt").read_text()
    assert "HTTP Request: POST http://***@127.0.0.1:" in log
    assert "Illegal header value b'Bearer ***'" in log
    assert not leaks(log), leaks(log)


def test_every_file_written_and_every_output_holds_no_canary(run):
    """Recursively, as bytes: reports (plots and provenance included), the store and its WAL, junit.xml,
    log.txt, .pytest_cache; every command's output. HF_TOKEN is read and recorded nowhere."""
    files = [p for p in run.path.rglob("*") if p.is_file() and p.name != "catalog.toml"]
    assert any(p.suffix == ".png" for p in files) and any(".pytest_cache" in p.parts for p in files)
    found = {str(p.relative_to(run.path)): leaks(p.read_bytes()) for p in files}
    found.update({f"<output of {k}>": leaks(v) for k, v in run.out.items()})
    assert not {k: v for k, v in found.items() if v}
