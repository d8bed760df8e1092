"""API backends against the loopback server: the real openai / anthropic SDKs, no mocks."""
from __future__ import annotations

import base64
import io
import subprocess
import sys
import time

import pytest
from PIL import Image

from vlmcls import prompts
from vlmcls.backends import api
from vlmcls.catalog import ModelEntry, load_catalog
from vlmcls.settings import BackendSettings
from vlmcls.smoke import api_server as srvmod
from vlmcls.smoke.api_server import ApiServer, Reply, malformed, rate_limited, server_error, slow
from vlmcls.types import Answer, LabelSet, Query

pytest.importorskip("openai")
pytest.importorskip("anthropic")

FAKE_KEY = "sk-vlmcls-test-Zq9XwY7vT3pL0mN4"  # distinctive: grep for it everywhere
FAKE_ANT_KEY = "sk-ant-vlmcls-test-Hh5Jk2Lm8Nn1"
LABELS = LabelSet(names=tuple(f"class{i}" for i in range(10)), synonyms=tuple((f"class{i}",) for i in range(10)))
GPT = ModelEntry(name="gpt-test", backend="openai", weights="gpt-4o-test", price=(2.5, 10.0))
CLAUDE = ModelEntry(name="claude-test", backend="anthropic", weights="claude-test-1", price=(0.25, 1.25))
COMPAT = ModelEntry(name="vllm-test", backend="openai-compatible", weights="Qwen/Qwen2-VL-2B-Instruct")


def query(i: int = 0, size: tuple[int, int] = (64, 48), prefix: bool = False, labels=None) -> Query:
    labels = labels or (f"cat{i}", f"dog{i}", f"fox{i}")
    image = Image.new("RGB", size, (10 * i % 255, 100, 200))
    if prefix:
        before, after = prompts.render_labels_first(labels)
        return Query(f"s{i}", image, tuple(range(len(labels))), labels, after, before)
    return Query(f"s{i}", image, tuple(range(len(labels))), labels, prompts.render(prompts.get_template("thesis"), labels))


def settings(server: ApiServer, entry: ModelEntry, **kw) -> BackendSettings:
    """OpenAI / Anthropic models find the server through the SDKs' env vars (see `server`);
    --base-url (settings.base_url) is for OpenAI-compatible servers only."""
    base = f"{server.url}/v1" if entry.backend == "openai-compatible" else None
    defaults = {"base_url": base, "max_retries": 2, "timeout_s": 5.0, "concurrency": 4}
    return BackendSettings(**{**defaults, **kw})


@pytest.fixture(autouse=True)
def env(monkeypatch):
    for name in ("OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN", api.COMPAT_KEY_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", FAKE_ANT_KEY)


@pytest.fixture
def server(monkeypatch):
    with ApiServer() as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", f"{srv.url}/v1")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", srv.url)
        yield srv


def run(server, entry, queries, **kw) -> list[Answer]:
    backend = api.load(entry, settings(server, entry, **kw), LABELS)
    try:
        return backend.answer(queries)
    finally:
        backend.close()


def decode_image(url_or_b64: str) -> Image.Image:
    data = url_or_b64.split("base64,", 1)[-1]
    return Image.open(io.BytesIO(base64.b64decode(data)))


# ---------------------------------------------------------------------- module API
def test_import_stays_light():
    code = "import sys, vlmcls.backends.api; print(any(m in sys.modules for m in ('openai', 'anthropic', 'PIL')))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_requirements(monkeypatch):
    s = BackendSettings()
    assert api.requirements(GPT, s, LABELS) is None
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    assert api.requirements(GPT, s, LABELS) == "OPENAI_API_KEY is not set"
    assert api.requirements(CLAUDE, s, LABELS) == "ANTHROPIC_API_KEY is not set"
    assert "OPENAI_BASE_URL" in api.requirements(COMPAT, s, LABELS)
    assert api.requirements(COMPAT, s.with_(base_url="http://127.0.0.1:1/v1"), LABELS) is None
    smoke = load_catalog()["smoke-anthropic"]
    assert api.requirements(smoke, s, LABELS) is None
    assert "constrained" in api.requirements(smoke, s.with_(constrained=True), LABELS)
    monkeypatch.setattr(api.importlib.util, "find_spec", lambda name: None)
    assert 'pip install "vlmcls[api]"' in api.requirements(GPT, s, LABELS)


def test_estimate_cost():
    assert api.estimate_cost(GPT, 1_000_000, 100_000) == pytest.approx(2.5 + 1.0)
    assert api.estimate_cost(COMPAT, 10, 10) is None
    assert api.estimate_cost(GPT, None, 10) is None


def test_scrub_masks_key_like_strings():
    text = f"bad key {FAKE_KEY} / Authorization: Bearer abc.def / api_key='xyz123' / sk-proj-AbCd****wxyz / k=hunter22"
    out = api.scrub(text, ["hunter22"])
    for secret in (FAKE_KEY, "abc.def", "xyz123", "AbCd", "hunter22"):
        assert secret not in out


def test_encode_jpeg_bounds_the_long_side_without_upscaling():
    big = Image.new("RGBA", (1000, 400))
    small = Image.new("L", (30, 20))
    out = Image.open(io.BytesIO(api.encode_jpeg(big, 256)))
    assert (out.format, out.mode, out.size) == ("JPEG", "RGB", (256, 102))
    assert Image.open(io.BytesIO(api.encode_jpeg(small, 256))).size == (30, 20)
    assert big.size == (1000, 400) and big.mode == "RGBA"  # the query's image is untouched


# ---------------------------------------------------------------------- OpenAI
def test_openai_request_shape(server):
    run(server, GPT, [query(0, size=(1200, 300), prefix=True)], max_image_side=256, max_new_tokens=17)
    (rec,) = server.records
    body = rec.body
    assert rec.path == "/v1/chat/completions"
    assert rec.headers["authorization"] == f"Bearer {FAKE_KEY}"
    assert (body["model"], body["temperature"], body["max_completion_tokens"]) == ("gpt-4o-test", 0, 17)
    kinds = [p["type"] for p in body["messages"][0]["content"]]
    assert kinds == ["text", "image_url", "text"]  # labels-first: prefix, image, question
    prefix, image, question = body["messages"][0]["content"]
    assert "cat0, dog0, fox0" in prefix["text"] and question["text"] == prompts.QUESTION
    assert image["image_url"]["url"].startswith("data:image/jpeg;base64,")
    decoded = decode_image(image["image_url"]["url"])
    assert decoded.format == "JPEG" and max(decoded.size) == 256


def test_openai_answers_usage_and_cost(server):
    queries = [query(i) for i in range(6)]
    answers = run(server, GPT, queries)
    assert len(server.records) == 6  # nothing sent twice after a success
    for q, a in zip(queries, answers):  # order kept: each answer names one of its own candidates
        assert a.error is None and a.class_id is None
        assert any(f'"{label}"' in a.text for label in q.labels)
        assert a.prompt_tokens > 85 and a.completion_tokens > 0
        assert a.cost_usd == pytest.approx((a.prompt_tokens * 2.5 + a.completion_tokens * 10.0) / 1e6)


def test_retry_after_ms_is_honoured_once(server):
    server.script(rate_limited(150))
    t0 = time.monotonic()
    (answer,) = run(server, GPT, [query()])
    assert answer.error is None and len(server.records) == 2
    assert server.records[1].start - server.records[0].start >= 0.14
    assert time.monotonic() - t0 < 1.5


@pytest.mark.parametrize("fault", [server_error(500), server_error(503), malformed()], ids=["500", "503", "malformed"])
def test_transient_faults_are_retried(server, fault):
    server.script(fault)
    (answer,) = run(server, GPT, [query()])
    assert answer.error is None and answer.text
    assert [r.status for r in server.records] == [fault.status, 200]


def test_timeout_is_retried(server):
    server.script(slow(1.5))
    (answer,) = run(server, GPT, [query()], timeout_s=0.3)
    assert answer.error is None
    assert len(server.records) == 2


def test_persistent_failure_is_an_error_row_after_bounded_retries(server):
    fast_500 = Reply(500, (("retry-after-ms", "10"),))
    server.script(*[fast_500] * 10)
    answers = run(server, GPT, [query()], max_retries=2, concurrency=1)
    assert len(server.records) == 3  # first try + max_retries
    assert answers[0].text is None and answers[0].error.startswith("HTTP 500")


def test_persistent_malformed_body_is_an_error_row(server):
    server.script(*[malformed()] * 5)
    (answer,) = run(server, GPT, [query()], max_retries=1)
    assert len(server.records) == 2 and answer.error and answer.text is None


@pytest.mark.parametrize("entry", [GPT, CLAUDE], ids=["openai", "anthropic"])
def test_retry_after_above_the_cap_is_not_waited_for(server, entry):
    server.script(rate_limited(3000))
    t0 = time.monotonic()
    (answer,) = run(server, entry, [query()], extra={"max_retry_after_s": 0.5})
    assert time.monotonic() - t0 < 2.0
    assert len(server.records) == 1 and answer.error.startswith("HTTP 429")


def test_one_failure_does_not_stop_the_others(server):
    server.script(Reply(400))  # a per-sample rejection, not retried
    answers = run(server, GPT, [query(i) for i in range(4)], concurrency=1)
    assert [a.error is None for a in answers] == [False, True, True, True]
    assert len(server.records) == 4


def test_requests_overlap_under_concurrency(server):
    server.state.delay_s = 0.15
    answers = run(server, GPT, [query(i) for i in range(8)], concurrency=4)
    assert all(a.error is None for a in answers)
    assert server.max_overlap() >= 2


def test_concurrency_one_is_serial(server):
    server.state.delay_s = 0.05
    run(server, GPT, [query(i) for i in range(4)], concurrency=1)
    assert server.max_overlap() == 1 and len(server.records) == 4


def test_constrained_request_carries_the_choice_list(server):
    labels = ("tabby cat", "red fox", "tabby cat", "wolf")  # a repeated label (thesis-mode collision)
    queries = [query(i, labels=labels) for i in range(6)]
    answers = run(server, COMPAT, queries, constrained=True)
    for rec in server.records:
        assert rec.body["structured_outputs"] == {"choice": ["tabby cat", "red fox", "wolf"]}
        assert rec.body["max_tokens"] == 32 and "guided_choice" not in rec.body
    for a in answers:
        assert a.text in labels
        if a.text == "tabby cat":  # two candidates share it: the resolver decides
            assert a.class_id is None
        else:
            assert (a.stage, labels[a.class_id]) == ("constrained", a.text)


def test_constrained_legacy_field_and_free_text_fallback(server):
    server.script(Reply(text="I think it is a fox"))  # a server that ignored the constraint
    (answer,) = run(server, COMPAT, [query()], constrained=True, extra={"choice_field": "guided_choice"})
    assert server.records[0].body["guided_choice"] == ["cat0", "dog0", "fox0"]
    assert (answer.text, answer.class_id, answer.stage) == ("I think it is a fox", None, None)


@pytest.mark.parametrize("entry", [GPT, CLAUDE], ids=["openai", "anthropic"])
def test_greedy_false_sends_no_temperature(server, entry):
    run(server, entry, [query()], extra={"greedy": False})
    assert "temperature" not in server.records[0].body


def test_base_url_server_never_gets_the_openai_key(server, monkeypatch):
    run(server, COMPAT, [query()])  # OPENAI_API_KEY is set, but this URL came from --base-url
    monkeypatch.setenv(api.COMPAT_KEY_ENV, "token-abc123")
    run(server, COMPAT, [query()])
    assert [r.headers["authorization"] for r in server.records] == [f"Bearer {api.NO_KEY}", "Bearer token-abc123"]
    assert server.records[0].body["model"] == "Qwen/Qwen2-VL-2B-Instruct"


def test_compatible_server_from_the_sdk_environment_gets_its_key_pair(server):
    run(server, COMPAT, [query()], base_url=None)  # OPENAI_BASE_URL + OPENAI_API_KEY, as the SDK pairs them
    assert server.records[0].headers["authorization"] == f"Bearer {FAKE_KEY}"


def test_base_url_does_not_redirect_openai_or_anthropic_models(server):
    dead = "http://127.0.0.1:9/v1"  # a --base-url meant for some compatible server
    for entry in (GPT, CLAUDE):
        assert run(server, entry, [query()], base_url=dead, max_retries=0)[0].error is None
    assert [r.path for r in server.records] == ["/v1/chat/completions", "/v1/messages"]


# ---------------------------------------------------------------------- secrets
@pytest.mark.parametrize("entry", [GPT, CLAUDE], ids=["openai", "anthropic"])
def test_no_key_in_any_answer_error_or_log(server, entry, caplog):
    caplog.set_level("DEBUG")  # the SDKs' own debug logging included
    key = FAKE_ANT_KEY if entry is CLAUDE else FAKE_KEY
    echo = f'{{"error": {{"message": "bad request from {key} (Bearer {key})"}}}}'.encode()
    fast_500 = Reply(500, (("retry-after-ms", "10"),), body=echo)
    server.script(Reply(400, body=echo), fast_500, fast_500, fast_500, Reply(text=f"my key is {key}"))
    answers = run(server, entry, [query(i) for i in range(3)], concurrency=1, max_retries=2)
    assert [bool(a.error) for a in answers] == [True, True, False] and len(server.records) == 5
    assert key not in repr(answers) and key[:12] not in repr(answers)
    assert key not in caplog.text


@pytest.mark.parametrize("entry", [GPT, CLAUDE], ids=["openai", "anthropic"])
def test_bad_key_fails_the_backend_once_without_the_key(server, entry):
    key = FAKE_ANT_KEY if entry is CLAUDE else FAKE_KEY
    server.script(*[Reply(401, body=f'{{"error": {{"message": "Incorrect API key provided: {key}"}}}}'.encode())] * 20)
    backend = api.load(entry, settings(server, entry, concurrency=2), LABELS)
    with pytest.raises(RuntimeError) as info:
        backend.answer([query(i) for i in range(10)])
    assert "401" in str(info.value) and key not in str(info.value)
    assert info.value.__cause__ is None and len(server.records) <= 2  # the rest were never sent
    with pytest.raises(RuntimeError):
        backend.answer([query()])
    backend.close()


# ---------------------------------------------------------------------- Anthropic
def test_anthropic_request_shape_usage_and_cost(server):
    (answer,) = run(server, CLAUDE, [query(size=(900, 1800))], max_image_side=300, max_new_tokens=9)
    (rec,) = server.records
    assert rec.path == "/v1/messages"
    assert FAKE_ANT_KEY in (rec.headers.get("x-api-key"), rec.headers.get("authorization", "")[len("Bearer "):])
    body = rec.body
    assert (body["model"], body["temperature"], body["max_tokens"]) == ("claude-test-1", 0, 9)  # greedy
    image, text = body["messages"][0]["content"]
    assert image["type"] == "image" and image["source"]["media_type"] == "image/jpeg"
    decoded = decode_image(image["source"]["data"])
    assert decoded.format == "JPEG" and decoded.size == (150, 300)
    assert text == {"type": "text", "text": query().prompt}
    assert answer.error is None and '"' in answer.text
    assert answer.cost_usd == pytest.approx((answer.prompt_tokens * 0.25 + answer.completion_tokens * 1.25) / 1e6)


@pytest.mark.parametrize("fault", [rate_limited(100), server_error(529), malformed()], ids=["429", "529", "malformed"])
def test_anthropic_transient_faults_are_retried(server, fault):
    server.script(fault)
    (answer,) = run(server, CLAUDE, [query()])
    assert answer.error is None and len(server.records) == 2


def test_anthropic_timeout_is_retried(server):
    server.script(slow(1.5))
    (answer,) = run(server, CLAUDE, [query()], timeout_s=0.3)
    assert answer.error is None and len(server.records) == 2


def test_anthropic_concurrency(server):
    server.state.delay_s = 0.15
    answers = run(server, CLAUDE, [query(i) for i in range(8)], concurrency=4)
    assert all(a.error is None for a in answers) and server.max_overlap() >= 2


# ---------------------------------------------------------------------- smoke models
@pytest.mark.parametrize("name", ["smoke-openai", "smoke-anthropic"])
def test_smoke_models_answer_one_candidate_deterministically(name, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    entry = load_catalog()[name]
    s = BackendSettings(max_retries=0)
    assert api.requirements(entry, s, LABELS) is None
    backend = api.load(entry, s, LABELS)
    queries = [query(i) for i in range(5)]
    first, second = backend.answer(queries), backend.answer(queries)
    backend.close()
    assert [a.text for a in first] == [a.text for a in second]
    for q, a in zip(queries, first):
        assert sum(f'"{label}"' in a.text for label in q.labels) == 1
        assert a.cost_usd is not None


@pytest.mark.parametrize("template", ["thesis", "label-only", "numbered"])
def test_server_parses_every_template(template):
    labels = ["tabby cat", "St. Bernard", "red fox"]
    text = prompts.render(prompts.get_template(template), labels)
    assert srvmod.parse_candidates(text) == labels


def test_server_parses_labels_first_layout():
    labels = ("a", "b c", "d")
    before, after = prompts.render_labels_first(labels)
    request = {"messages": [{"role": "user", "content": [{"type": "text", "text": before}, {"type": "text", "text": after}]}]}
    assert srvmod.parse_candidates("\n\n".join(srvmod.prompt_texts(request))) == list(labels)


def test_smoke_openai_constrained_answers_a_candidate():
    entry = load_catalog()["smoke-openai"]
    backend = api.load(entry, BackendSettings(max_retries=0, constrained=True), LABELS)
    answers = backend.answer([query(i) for i in range(4)])
    backend.close()
    assert all(a.stage == "constrained" and a.text == query(i).labels[a.class_id] for i, a in enumerate(answers))


def test_a_base_url_the_model_does_not_use_is_named_in_the_notes(monkeypatch):
    """--base-url goes to openai-compatible models only: a smoke model still answers from the loopback
    stand-in and gpt-4o from OpenAI, and the case notes say the URL was ignored (it once went unsaid,
    while results.json recorded the URL as a setting of the run)."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-real")
    dead = "http://127.0.0.1:9/v1"
    smoke = api.load(load_catalog()["smoke-openai"], BackendSettings(max_retries=0, base_url=dead), LABELS)
    assert smoke.answer([query()])[0].error is None  # answered: the dead URL was not asked
    assert smoke.notes == ["--base-url ignored: smoke-openai is a smoke model, answered by the loopback stand-in"]
    smoke.close()
    paid = api.load(load_catalog()["gpt-4o"], BackendSettings(max_retries=0, base_url=dead), LABELS)
    assert paid.notes == ["--base-url ignored: gpt-4o uses the openai API (only openai-compatible models use it)"]
    paid.close()
    assert api.ignored_base_url(load_catalog()["gpt-4o"], BackendSettings()) is None
