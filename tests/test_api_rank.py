"""Ranking mode for OpenAI(-compatible) APIs (vlmcls.backends.api_rank): the real openai SDK against the
loopback server, scripted first-token distributions, hand-computed rankings."""
from __future__ import annotations

import json
import math
import urllib.request

import pytest
from PIL import Image

from vlmcls import prompts
from vlmcls.backends import api, api_rank
from vlmcls.errors import Unavailable
from vlmcls.backends.registry import info
from vlmcls.catalog import ModelEntry
from vlmcls.resolve import Resolver
from vlmcls.settings import BackendSettings
from vlmcls.smoke.api_server import ApiServer, Reply
from vlmcls.types import LabelSet, Query

openai = pytest.importorskip("openai")

NAMES = ("tench", "goldfish", "great white shark", "tiger shark", "hammerhead", "jellyfish", "great grey owl")
LABELS = LabelSet(names=NAMES, synonyms=tuple((n,) for n in NAMES))
COMPAT = ModelEntry(name="vllm-test", backend="openai-compatible", weights="served-vlm")
GPT = ModelEntry(name="gpt-test", backend="openai", weights="gpt-4o-test")
FISH = (0, 1, 2, 3, 4, 5)  # candidate class ids: tench, goldfish, great white shark, tiger shark, hammerhead, jellyfish
GREAT = (2, 6, 0)  # great white shark, great grey owl, tench


def query(ids, i: int = 0) -> Query:
    labels = tuple(NAMES[c] for c in ids)
    prompt = prompts.render(prompts.get_template("label-only"), labels)
    return Query(f"s{i}", Image.new("RGB", (32, 32), (i, 90, 200)), tuple(ids), labels, prompt)


def scripted(text: str, *top: tuple[str, float]) -> Reply:
    return Reply(text=text, top_logprobs=top)


def backend(server: ApiServer, entry=COMPAT, **kw):
    defaults = {"base_url": f"{server.url}/v1" if entry.backend == "openai-compatible" else None,
                "rank": True, "concurrency": 1, "max_retries": 0, "timeout_s": 5.0}
    return api.load(entry, BackendSettings(**{**defaults, **kw}), LABELS)


@pytest.fixture
def server(monkeypatch):
    with ApiServer() as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", f"{srv.url}/v1")
        monkeypatch.setenv("OPENAI_API_KEY", "sk-vlmcls-test-rank-0000")
        yield srv


def answers(server, replies, queries, **kw):
    server.script(*replies)
    b = backend(server, **kw)
    try:
        return b.answer(queries), b.notes
    finally:
        b.close()


def e(x: float) -> float:
    return math.exp(x)


# ---------------------------------------------------------------- requests and the server's replies

def test_rank_requests_ask_for_the_top_20_and_a_short_reply(server):
    for kw, limit in (({"max_new_tokens": 32}, 16), ({"max_new_tokens": 8}, 8)):
        b = backend(server, GPT, **kw)
        b.answer([query(FISH)])
        b.close()
        body = server.records[-1].body
        assert body["logprobs"] is True and body["top_logprobs"] == 20 == api_rank.TOP_LOGPROBS
        assert body["max_completion_tokens"] == limit
    b = backend(server, GPT, rank=False)
    (plain,) = b.answer([query(FISH)])
    b.close()
    assert "logprobs" not in server.records[-1].body and "top_logprobs" not in server.records[-1].body
    assert plain.text.startswith("The most probable class is") and plain.top5 is None


def test_the_server_sends_the_openai_logprobs_shape(server):
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="k")
    ask = {"model": "m", "messages": [{"role": "user", "content": query(FISH).prompt}]}
    response = client.chat.completions.create(**ask, logprobs=True, top_logprobs=5)
    choice = response.choices[0]
    content = choice.logprobs.content
    assert all(isinstance(t, openai.types.chat.ChatCompletionTokenLogprob) for t in content)
    assert "".join(t.token for t in content) == choice.message.content and choice.message.content in NAMES
    head = content[0]
    assert len(head.top_logprobs) == 5 and head.token == head.top_logprobs[0].token
    probs = [e(t.logprob) for t in head.top_logprobs]
    assert probs == sorted(probs, reverse=True) and sum(probs) <= 1
    assert all(t.bytes == list(t.token.encode()) for t in head.top_logprobs)
    raw = urllib.request.Request(f"{server.url}/v1/chat/completions", json.dumps({**ask, "logprobs": True}).encode(),
                                 {"content-type": "application/json"})
    (entry,) = json.loads(urllib.request.urlopen(raw).read())["choices"][0]["logprobs"]["content"][:1]
    assert set(entry) == {"token", "logprob", "bytes", "top_logprobs"} and entry["top_logprobs"] == []  # none asked
    assert client.chat.completions.create(**ask).choices[0].logprobs is None  # not asked: as before


# ---------------------------------------------------------------- rankings, by hand

def test_ranked_answers_equal_hand_computed_values(server):
    replies = [
        # "Gold" and "gold" add up; "The" starts no candidate; "T" starts tench and tiger shark, so it
        # counts for neither, only in the total; great white shark is not among the tokens: not listed
        scripted("Goldfish", ("Gold", -0.3), ("gold", -2.0), ("ten", -2.5), ("Tiger", -3.0), ("ham", -3.5),
                 ("The", -4.0), ("j", -5.0), ("T", -6.0)),
        # a likely shared "T" could lift tiger shark over tench: the ranking stops after goldfish
        scripted("Goldfish", ("Gold", -0.3), ("gold", -2.0), ("T", -1.0), ("ten", -2.5), ("Tiger", -3.0)),
    ]
    (full, cut), _ = answers(server, replies, [query(FISH, 0), query(FISH, 1)])
    assert full.stage == cut.stage == "rank" and full.class_id == cut.class_id == 1
    assert full.text == "Goldfish"
    assert full.top5 == (1, 0, 3, 4, 5)
    gold = e(-0.3) + e(-2.0)
    assert full.top1_prob == pytest.approx(gold / (gold + e(-2.5) + e(-3.0) + e(-3.5) + e(-5.0) + e(-6.0)), rel=1e-12)
    assert cut.top5 == (1,)
    assert cut.top1_prob == pytest.approx(gold / (gold + e(-1.0) + e(-2.5) + e(-3.0)), rel=1e-12)


def test_ambiguous_first_token_falls_back_to_the_text_and_is_counted(server):
    replies = [
        scripted("great white shark", ("great", -0.1), ("Great", -2.5), ("ten", -4.0)),
        scripted("tench", ("ten", -0.2), ("great", -3.0)),
        scripted("The most probable class is tench.", ("The", -0.05), ("T", -4.0)),
    ]
    (shared, ranked, sentence), notes = answers(server, replies, [query(GREAT, i) for i in range(3)])
    assert (shared.class_id, shared.top5, shared.text) == (None, None, "great white shark")
    assert sentence.class_id is None and sentence.top5 is None
    assert ranked.stage == "rank" and ranked.top5 == (0,)
    assert ranked.top1_prob == pytest.approx(e(-0.2) / (e(-0.2) + e(-3.0)), rel=1e-12)
    (line,) = [n for n in notes if n.startswith("rank (3-way")]
    assert "1 of 3 answers ranked" in line and "2 not ranked, resolved from their text" in line
    assert "1 first token shared by several candidates (e.g. 'great': great white shark, great grey owl)" in line
    assert "1 reply does not start with a candidate label (e.g. 'The most probable class is tench.')" in line
    # the runner hands text answers to the resolver: match, then NLI as the study (here match decides)
    resolved = Resolver("rank", LABELS).resolve_many([(a.text, GREAT) for a in (shared, sentence)])
    assert [(r.class_id, r.stage) for r in resolved] == [(2, "match"), (0, "match")]


@pytest.mark.parametrize("text, top, why", [
    ("bowl", (("bow", -0.1),), api_rank.NOT_A_LABEL),  # "bow" is a candidate; "bowl" is not that word
    ("great white shark", (("g", -0.1), ("great", -0.2)), api_rank.SHARED),
])
def test_rules_that_refuse_a_ranking(text, top, why):
    first = api_rank.FirstToken(top[0][0], top[0][1], top)
    got = api_rank.rank(text, first, ("bow", "great white shark", "great grey owl"), (7, 8, 9))
    assert got.reason == why and not got.top5 and got.top1_prob is None


def test_a_label_shown_twice_ranks_its_first_copy_first_and_an_absent_one_is_not_listed():
    first = api_rank.FirstToken("crane", -0.1, (("crane", -0.1), ("tench", -2.0)))
    got = api_rank.rank("crane", first, ("tench", "ox", "crane", "Crane"), (0, 345, 134, 517))
    assert got.top5 == (134, 517, 0)  # ox: no token starts it, its place below the others is all we know
    assert got.top1_prob == pytest.approx(e(-0.1) / (e(-0.1) + e(-2.0)))  # one token, one label: counted once


def test_leading_spaces_are_ignored_and_distinct_tokens_starting_a_label_add_up():
    # " gold" (a leading space, as tokenizers write a word's start) and "goldf" both start goldfish
    first = api_rank.FirstToken(" gold", -0.5, ((" gold", -0.5), ("goldf", -1.5), ("ten", -2.0)))
    got = api_rank.rank(" Goldfish.", first, ("tench", "goldfish"), (0, 1))
    assert got.reason == "" and got.top5 == (1, 0)
    gold = e(-0.5) + e(-1.5)
    assert got.top1_prob == pytest.approx(gold / (gold + e(-2.0)), rel=1e-12)


def test_top5_lists_at_most_five_of_seven_scored_candidates():
    tokens = (("ten", -0.1), ("gold", -0.2), ("great w", -0.3), ("tiger", -0.4), ("ham", -0.5), ("jelly", -0.6),
              ("great g", -0.7))
    got = api_rank.rank("tench", api_rank.FirstToken("ten", -0.1, tokens), NAMES, tuple(range(10, 17)))
    assert got.top5 == (10, 11, 12, 13, 14)
    assert got.top1_prob == pytest.approx(e(-0.1) / sum(e(lp) for _, lp in tokens), rel=1e-12)


def test_the_label_is_there_but_its_first_token_runs_past_it():
    first = api_rank.FirstToken("ox,", -0.1, (("ox,", -0.1), ("The", -2.0)))  # "ox," starts no candidate
    got = api_rank.rank("ox, clearly", first, ("tench", "ox"), (0, 345))
    assert got == api_rank.Ranking(reason=api_rank.NOT_A_LABEL, example="'ox,'")


def test_a_sentence_is_shown_cut_to_40_characters():
    first = api_rank.FirstToken("The", -0.1, (("The", -0.1),))
    got = api_rank.rank("The most probable class here is surely the goldfish.", first, ("tench", "goldfish"), (0, 1))
    assert got == api_rank.Ranking(reason=api_rank.NOT_A_LABEL, example="'The most probable class here is surely t'")


def test_a_tie_that_a_shared_token_could_cause_with_an_earlier_label_is_not_ranked():
    # goldfish has e(-1); "great" (e(-1) too) might all be great grey owl's, which would then tie
    # goldfish and come first by prompt order: goldfish is not certainly first
    first = api_rank.FirstToken("gold", -1.0, (("gold", -1.0), ("great", -1.0)))
    got = api_rank.rank("goldfish", first, ("great grey owl", "goldfish", "great white shark"), (24, 1, 2))
    assert got == api_rank.Ranking(reason=api_rank.SHARED, example="'great': great grey owl, great white shark")


def test_the_shared_example_is_the_likeliest_token_that_several_labels_share():
    # "gold" is likelier but goldfish's alone; great white shark's "great w" plus all of "great"
    # (e(-1) + e(-1) > e(-0.5)) could take first place
    first = api_rank.FirstToken("gold", -0.5, (("gold", -0.5), ("great", -1.0), ("great w", -1.0)))
    got = api_rank.rank("goldfish", first, ("goldfish", "great white shark", "great grey owl"), (1, 2, 24))
    assert got == api_rank.Ranking(reason=api_rank.SHARED, example="'great': great white shark, great grey owl")


@pytest.mark.parametrize("labels, example", [
    (("great white shark", "great grey owl", "great egret"), "'Great': great white shark, great grey owl, great egret"),
    (("great white shark", "great grey owl", "great egret", "Great Dane"),
     "'Great': great white shark, great grey owl, great egret, ..."),
])
def test_the_shared_example_names_three_labels_at_most(labels, example):
    first = api_rank.FirstToken(" Great", -0.1, ((" Great", -0.1),))
    got = api_rank.rank("great white shark", first, labels, tuple(range(len(labels))))
    assert got == api_rank.Ranking(reason=api_rank.SHARED, example=example)


def test_first_token_reads_the_sdk_choice(server):
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="k")
    ask = {"model": "m", "messages": [{"role": "user", "content": query(FISH).prompt}]}
    server.script(scripted("Goldfish", ("ten", -2.5), ("Gold", -0.3)), scripted("Goldfish", ("Gold", -0.3)))
    choice = client.chat.completions.create(**ask, logprobs=True, top_logprobs=20).choices[0]
    # the server sends the likeliest scripted token as the reply's first, the alternatives likeliest first
    assert api_rank.first_token(choice) == api_rank.FirstToken("Gold", -0.3, (("Gold", -0.3), ("ten", -2.5)))
    assert api_rank.first_token(client.chat.completions.create(**ask).choices[0]) is None  # not asked
    assert api_rank.first_token(object()) is None  # a choice without the field at all


# ---------------------------------------------------------------- ranking not available

def test_a_model_without_logprobs_is_not_available_for_ranking():
    with ApiServer(logprobs=False) as srv:
        b = backend(srv)
        with pytest.raises(Unavailable, match="not available for this model: the server sent no logprobs"):
            b.answer([query(FISH, i) for i in range(3)])
        with pytest.raises(RuntimeError, match="ranking is not available"):
            b.answer([query(FISH)])
        assert len(srv.records) == 3  # the second batch was not sent
        b.close()


def test_a_server_refusing_logprobs_is_not_available_for_ranking(server):
    error = {"error": {"message": "logprobs is not supported with this model", "type": "invalid_request_error"}}
    server.script(Reply(400, body=json.dumps(error).encode()))
    b = backend(server)
    with pytest.raises(RuntimeError, match=r"not available for this model: the server refused logprobs \(HTTP 400"):
        b.answer([query(FISH)])
    b.close()


def test_some_answers_without_logprobs_fall_back_one_by_one():
    tally = api_rank.Tally()
    tally.add(20, api_rank.Ranking(reason=api_rank.NO_LOGPROBS))
    assert tally.unavailable()
    tally.add(20, api_rank.Ranking((3,), 0.9))
    assert not tally.unavailable() and "1 of 2 answers ranked" in tally.notes()[0]


def test_tally_notes_count_every_answer_per_candidate_count():
    tally = api_rank.Tally()
    assert not tally.unavailable() and tally.notes() == []  # no answers yet: nothing is known
    for ranking in (api_rank.Ranking((0,), 0.9), api_rank.Ranking(reason=api_rank.SHARED, example="'great': a, b"),
                    api_rank.Ranking(reason=api_rank.SHARED, example="'t': c, d"),
                    api_rank.Ranking(reason=api_rank.NOT_A_LABEL, example="'The cat'"),
                    api_rank.Ranking(reason=api_rank.NO_LOGPROBS), api_rank.Ranking(reason=api_rank.NO_LOGPROBS)):
        tally.add(3, ranking)
    tally.add(20, api_rank.Ranking((5, 4), 0.5))
    tally.add(20, api_rank.Ranking(reason=api_rank.NO_LOGPROBS))
    assert tally.notes() == [
        "rank (3-way): 1 of 6 answers ranked by the first token's top-20 log-probabilities; "
        "5 not ranked, resolved from their text instead: 2 first token shared by several candidates "
        "(e.g. 'great': a, b); 1 reply does not start with a candidate label (e.g. 'The cat'); 2 no logprobs "
        "(--prompt label-only asks for the bare label)",
        "rank (20-way): 1 of 2 answers ranked by the first token's top-20 log-probabilities; "
        "1 not ranked, resolved from their text instead: 1 no logprobs",
    ]
    assert not tally.unavailable()


def test_anthropic_cannot_rank_and_says_why():
    assert info("openai").rank and info("openai-compatible").rank and not info("anthropic").rank
    claude = ModelEntry(name="c", backend="anthropic", weights="smoke:anthropic")
    reason = api.requirements(claude, BackendSettings(rank=True), LABELS)
    assert "ranking is not available for Anthropic models" in reason and "no token log-probabilities" in reason
    assert api.requirements(claude, BackendSettings(), LABELS) is None


# ---------------------------------------------------------------- the benchmark, as users run it

def test_bench_smoke_openai_runs_in_rank_mode(pytester):
    from pathlib import Path

    (pytester.path / "bench").mkdir()
    bench = Path(__file__).parents[1] / "bench" / "test_classify.py"
    (pytester.path / "bench" / "test_classify.py").write_text(bench.read_text())
    out = pytester.runpytest_subprocess("bench", "-k", "smoke-openai or smoke-anthropic", "--resolver", "rank",
                                        "--ways", "20", "--samples", "24", "-p", "no:cacheprovider")
    out.assert_outcomes(passed=1, skipped=1)
    (run_dir,) = [d for d in (pytester.path / "reports").iterdir() if d.is_dir()]
    rows = {r["case_id"]: r for r in json.loads((run_dir / "results.json").read_text())["cases"]}
    openai_row, claude_row = rows["smoke-openai-20way"], rows["smoke-anthropic-20way"]
    assert "no token log-probabilities" in claude_row["reason"]
    samples = [json.loads(line) for f in run_dir.rglob("*.jsonl") for line in f.read_text().splitlines()]
    ranked = [s for s in samples if s["stage"] == "rank"]
    assert ranked and all(s["top5"] and 0 < s["top1_prob"] <= 1 and s["pred_id"] == s["top5"][0] for s in ranked)
    assert all(s["top5"] is None for s in samples if s["stage"] != "rank")
    assert openai_row["calibration"]["n"] == len(ranked)
    (note,) = [n for n in openai_row["notes"] if n.startswith("rank (20-way")]
    assert f"{len(ranked)} of {len(samples)} answers ranked" in note


def test_bench_skips_a_model_found_without_logprobs_with_the_reason(pytester):
    """Found only once the server answers: the case is skipped (failed under --strict-cases) with the
    reason in its row, not failed as a backend error. The smoke server is made to send no logprobs."""
    from pathlib import Path

    (pytester.path / "bench").mkdir()
    bench = Path(__file__).parents[1] / "bench" / "test_classify.py"
    (pytester.path / "bench" / "test_classify.py").write_text(bench.read_text())
    pytester.makeconftest("""
        import vlmcls.smoke.api_server as s
        _init = s.ApiServer.__init__
        def init(self, *args, **kwargs):
            kwargs["logprobs"] = False
            _init(self, *args, **kwargs)
        s.ApiServer.__init__ = init
    """)
    args = ("bench", "-k", "smoke-openai", "--resolver", "rank", "--ways", "20", "--samples", "8", "-p", "no:cacheprovider")
    pytester.runpytest_subprocess(*args).assert_outcomes(skipped=1)
    (run_dir,) = [d for d in (pytester.path / "reports").iterdir() if d.is_dir()]
    (row,) = json.loads((run_dir / "results.json").read_text())["cases"]
    assert row["status"] == "skipped" and "ranking is not available for this model: the server sent no logprobs" in row["reason"]
    strict = pytester.runpytest_subprocess(*args, "--strict-cases")
    strict.assert_outcomes(failed=1)
    strict.stdout.fnmatch_lines(["*cannot run here (--strict-cases / --strict): *ranking is not available*"])
