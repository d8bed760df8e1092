"""What mutation testing of vlmcls.backends.api found untested (README, "How it is tested", run 7): exact
costs and messages, every Retry-After form and the cap's boundary, max_retries as the SDK gets it, the
malformed-body backoff, the keys an answer or error row must not show (a client's own, every API's in
the environment, longest first), the server an error row names, latencies, the usage and cost of
constrained and ranked answers, the cool-down option and one-try-per-server rule of several servers.

The real openai / anthropic SDKs against the loopback server, as in test_api.py and test_api_rank.py,
whose helpers and fixtures these reuse. Two tests call a private helper (`_server_of`, `_describe`):
no request made offline has a URL without a port, and no SDK error has an empty message."""
from __future__ import annotations

import email.utils
import json
import types

import pytest

import test_api
from test_api import CLAUDE, COMPAT, FAKE_ANT_KEY, FAKE_KEY, GPT, LABELS, query, run, settings
from test_api_rank import FISH, scripted
from test_api_rank import backend as rank_backend
from test_api_rank import query as fish_query
from vlmcls.backends import api
from vlmcls.backends.api_protocols import AnthropicProtocol, OpenAIProtocol
from vlmcls.backends.servers import Pool, Server
from vlmcls.catalog import ModelEntry
from vlmcls.errors import Unavailable
from vlmcls.settings import BackendSettings
from vlmcls.smoke.api_server import ApiServer, Reply, malformed

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")

env, server = test_api.env, test_api.server  # the fixtures: SDK environment, loopback server
PRICED = ModelEntry(name="vllm-priced", backend="openai-compatible", weights="served-vlm", price=(3.0, 15.0))


# ---------------------------------------------------------------------- cost
def test_cost_is_exactly_the_price_per_million_tokens():
    # exact, not approx: a price off by one part in a million is a wrong price
    assert api.estimate_cost(GPT, 1_000_000, 100_000) == 3.5
    assert api.estimate_cost(GPT, 4, 2) == (4 * 2.5 + 2 * 10.0) / 1_000_000


# ---------------------------------------------------------------------- Retry-After and the SDK's retries
def test_retry_after_reads_milliseconds_then_seconds_then_an_http_date(monkeypatch):
    assert api.retry_after_s({"retry-after-ms": "1500"}) == 1.5
    assert api.retry_after_s({"retry-after": "7"}) == 7.0
    assert api.retry_after_s({"retry-after-ms": "250", "retry-after": "7"}) == 0.25  # the finer one first
    # an HTTP date: seconds from now, on a clock the test holds still
    monkeypatch.setattr(api, "time", types.SimpleNamespace(time=lambda: 1_700_000_000.0))
    date = email.utils.formatdate(1_700_000_120, usegmt=True)
    assert api.retry_after_s({"retry-after": date}) == 120.0
    assert api.retry_after_s({"retry-after": "soon"}) is None
    assert api.retry_after_s({}) is None


@pytest.mark.parametrize("entry", [GPT, CLAUDE], ids=["openai", "anthropic"])
def test_a_wait_of_exactly_the_cap_is_still_waited_for(server, entry):
    server.script(Reply(429, (("retry-after-ms", "50"),)))
    (answer,) = run(server, entry, [query()], extra={"max_retry_after_s": 0.05})
    assert answer.error is None and [r.status for r in server.records] == [429, 200]


@pytest.mark.parametrize("retries", [0, 1, 3])
def test_the_sdk_retries_a_server_error_max_retries_times(server, retries):
    fast_500 = Reply(500, (("retry-after-ms", "1"),))
    server.script(*[fast_500] * 5)
    (answer,) = run(server, GPT, [query()], max_retries=retries)
    assert len(server.records) == retries + 1 and answer.error.startswith("HTTP 500")


# ---------------------------------------------------------------------- requirements and load
def test_requirements_say_why_word_for_word():
    s = BackendSettings()
    assert api.requirements(GPT, s.with_(constrained=True), LABELS) == (
        "constrained decoding needs an OpenAI-compatible server that takes a choice list (vLLM)")
    assert api.requirements(CLAUDE, s.with_(rank=True), LABELS) == (
        "--resolver rank: ranking is not available for Anthropic models: the Messages API returns "
        "no token log-probabilities to score the candidates with")
    assert api.requirements(COMPAT, s, LABELS) == (
        "no server URL for an OpenAI-compatible backend: pass --base-url or set OPENAI_BASE_URL")


def test_load_refuses_an_entry_that_cannot_run(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(RuntimeError) as info:
        api.load(GPT, BackendSettings(), LABELS)
    assert str(info.value) == "model 'gpt-test' cannot run: OPENAI_API_KEY is not set"


def test_a_compatible_model_uses_the_base_url_and_says_nothing_of_it(server):
    backend = api.load(COMPAT, settings(server, COMPAT), LABELS)
    # nothing of the URL: the one note is that the loopback stub answered (a stand-in, not a model)
    assert backend.answer([query()])[0].error is None and backend.notes == [api.STAND_IN_NOTE]
    backend.close()


# ---------------------------------------------------------------------- keys
def test_mask_replaces_secrets_of_four_characters_or_more():
    assert api.mask("pin 1234, code 123, again 1234", ["1234", "123"]) == "pin ***, code 123, again ***"
    assert api.mask("nothing here", ["", "abc"]) == "nothing here"  # an empty or short value is no secret


def direct(entry: ModelEntry, client, server: ApiServer) -> api.ApiBackend:
    """A backend around a client given its key directly, not through the environment."""
    s = settings(server, entry)
    protocol = AnthropicProtocol if entry.backend == "anthropic" else OpenAIProtocol
    return api.ApiBackend(entry, s, Pool([Server(server.url, client)], 30.0, ()), protocol(entry, s))


def test_a_client_given_its_key_directly_never_shows_it(server):
    key, token = "direct-key-Pq7Rs8", "direct-token-Tu9Vw0"
    server.script(Reply(text=f"key {key}"), Reply(text=f"token {token}"))
    gpt = direct(GPT, openai.OpenAI(base_url=f"{server.url}/v1", api_key=key), server)
    claude = direct(CLAUDE, anthropic.Anthropic(base_url=server.url, auth_token=token), server)
    assert gpt.answer([query()])[0].text == "key ***"
    assert claude.answer([query()])[0].text == "token ***"
    gpt.close()
    claude.close()


def test_every_api_key_in_the_environment_is_masked_longest_first(server, monkeypatch):
    # an OpenAI model's answer showing the Anthropic key; and a key that ends another one (and sorts
    # after it) must not leave the longer one's head behind
    tail = FAKE_KEY[3:]  # "vlmcls-test-...": after "sk-vlmcls-..." in plain string order
    monkeypatch.setenv(api.COMPAT_KEY_ENV, tail)
    server.script(Reply(text=f"ant {FAKE_ANT_KEY} compat {tail} openai {FAKE_KEY}"))
    (answer,) = run(server, GPT, [query()])
    assert answer.text == "ant *** compat *** openai ***"


def test_an_error_row_masks_a_key_that_looks_like_no_key(server, monkeypatch):
    token = "plain7788token"  # no sk-, no Bearer: only the exact secret list catches it
    monkeypatch.setenv(api.COMPAT_KEY_ENV, token)
    server.script(Reply(400, body=json.dumps({"error": {"message": f"token {token} is not allowed"}}).encode()))
    (answer,) = run(server, COMPAT, [query()])
    assert token not in answer.error and "token *** is not allowed" in answer.error


def test_the_placeholder_key_of_a_keyless_server_is_no_secret(server):
    # env leaves OPENAI_COMPATIBLE_API_KEY unset: the client sends NO_KEY, which must not blank the word
    server.script(Reply(text=f"{api.NO_KEY} box"))
    (answer,) = run(server, COMPAT, [query()])
    assert answer.text == "EMPTY box"


# ---------------------------------------------------------------------- error rows
def test_a_refused_connection_names_the_server(server):
    url = f"{server.url}/v1/chat/completions"
    server.stop()  # refused: no reply, so the SDK's text alone would not say which server
    (answer,) = run(server, COMPAT, [query()], max_retries=0)
    assert answer.error == f"APIConnectionError: Connection error. ({url})"


def test_an_error_with_no_request_names_no_server(server):
    server.script(*[malformed()] * 2)
    (answer,) = run(server, COMPAT, [query()], max_retries=1)
    assert answer.error == "JSONDecodeError: Unterminated string starting at: line 1 column 8 (char 7)"


def test_the_server_named_has_no_query_string_and_no_default_port():
    request = openai.DefaultHttpxClient().build_request("POST", "http://api.example/v1/chat/completions?api-version=1")
    refused = openai.APIConnectionError(request=request)  # the SDK's own request type, whatever its httpx
    assert api._server_of(refused) == " (http://api.example/v1/chat/completions)"
    assert api._server_of(ValueError("no request")) == ""


def test_an_exception_without_a_message_is_named_by_its_type(server):
    backend = api.load(COMPAT, settings(server, COMPAT), LABELS)
    assert backend._describe(TimeoutError()) == "TimeoutError: TimeoutError"
    backend.close()


def test_a_400_that_mentions_logprobs_is_one_error_row_when_not_ranking(server):
    # only a ranking request can be refused for its logprobs; elsewhere the word proves nothing
    error = {"error": {"message": "logprobs field looked odd, request rejected"}}
    server.script(Reply(400, body=json.dumps(error).encode()))
    answers = run(server, GPT, [query(i) for i in range(3)], concurrency=1)
    assert [a.error is None for a in answers] == [False, True, True] and len(server.records) == 3


# ---------------------------------------------------------------------- latency and retries
def test_latency_is_the_time_from_sending_to_the_reply(server):
    clock = api.time.monotonic
    server.script(Reply(400, delay_s=0.05), Reply(delay_s=0.05))
    start = clock()
    answers = run(server, GPT, [query(i) for i in range(2)], concurrency=1)
    elapsed = clock() - start
    # bounds, not timings: each waited for the server's delay, and took no longer than the whole call
    assert all(0.05 <= a.latency_s <= elapsed for a in answers) and answers[0].error and not answers[1].error


def test_a_malformed_body_is_not_retried_with_max_retries_0(server):
    server.script(malformed())
    (answer,) = run(server, GPT, [query()], max_retries=0)
    assert len(server.records) == 1 and answer.error.startswith("JSONDecodeError")


def test_malformed_bodies_are_retried_with_a_doubling_backoff_up_to_4_s(server, monkeypatch):
    waits = []
    real = api.time
    stand_in = types.SimpleNamespace(sleep=waits.append, monotonic=real.monotonic, time=real.time)
    monkeypatch.setattr(api, "time", stand_in)  # the module's own clock only: the SDK and server keep theirs
    server.script(*[malformed()] * 7)
    (answer,) = run(server, GPT, [query()], max_retries=6)
    assert waits == [0.25, 0.5, 1.0, 2.0, 4.0, 4.0] and len(server.records) == 7 and answer.error


# ---------------------------------------------------------------------- several servers
def test_server_cooldown_s_sets_how_long_a_failed_server_stays_out():
    with ApiServer() as a, ApiServer() as b:
        urls = f"{a.url}/v1,{b.url}/v1"
        a.stop()  # refused: taken out, the request moves to b
        backend = api.load(COMPAT, BackendSettings(base_url=urls, max_retries=0, concurrency=1,
                                                   extra={"server_cooldown_s": 5.0}), LABELS)
        now = [1000.0]
        backend._pool.clock = lambda: now[0]  # the cool-down ends when the test says, not after a sleep
        assert backend.answer([query(0)])[0].error is None
        a.revive()
        now[0] += 6.0  # past the 5 s asked for, well inside the default 30 s
        assert backend.answer([query(1)])[0].error is None
        assert [r.status for r in a.records] == [200] and len(b.records) == 1
        assert backend.notes == [api.STAND_IN_NOTE, f"servers (this case; a request that failed on one was sent to "
                                 f"another): {a.url}/v1 2 requests, 1 failed, taken out 1x; "
                                 f"{b.url}/v1 1 requests, 0 failed"]
        backend.close()


def test_a_request_tries_each_server_once_even_when_all_are_out():
    with ApiServer() as a, ApiServer() as b:
        for srv in (a, b):
            srv.script(*[Reply(500, (("retry-after-ms", "1"),))] * 4)
        backend = api.load(COMPAT, BackendSettings(base_url=f"{a.url}/v1,{b.url}/v1", max_retries=0, concurrency=1),
                           LABELS)
        backend._pool.clock = lambda: 1000.0  # both out until the same moment: neither is "back sooner"
        answers = backend.answer([query(0), query(1)])
        backend.close()
    assert all(x.error.startswith("HTTP 500") for x in answers)
    assert (len(a.records), len(b.records)) == (2, 2)


# ---------------------------------------------------------------------- usage of decided answers
def test_constrained_and_ranked_answers_keep_usage_and_cost(server):
    (constrained,) = run(server, PRICED, [query()], constrained=True)
    server.script(scripted("Goldfish", ("Gold", -0.3), ("ten", -2.5)))
    (ranked,) = run(server, PRICED, [fish_query(FISH)], rank=True)
    for a in (constrained, ranked):
        assert a.stage in ("constrained", "rank") and a.class_id is not None
        assert a.prompt_tokens > 0 and a.completion_tokens > 0 and a.latency_s > 0
        assert a.cost_usd == (a.prompt_tokens * 3.0 + a.completion_tokens * 15.0) / 1e6


def test_a_model_without_logprobs_is_skipped_with_the_whole_reason():
    with ApiServer(logprobs=False) as srv:
        backend = rank_backend(srv)
        with pytest.raises(Unavailable) as info:
            backend.answer([fish_query(FISH)])
        backend.close()
    assert str(info.value) == ("vllm-test: --resolver rank: ranking is not available for this model: the server sent "
                               "no logprobs with its answers (the model does not provide them)")
