"""The answer resolver: the match stage on a table of realistic answers, the modes, and the NLI
stage's mechanics with a tiny random BART (its choices are chance; only the plumbing is checked)."""
from __future__ import annotations

import random
import re
import subprocess
import sys

import pytest

from answers import ANSWERS, CATS, Case, imagenet_labels
from vlmcls import nli, resolve
from vlmcls.resolve import MODES, Resolver, phrase
from vlmcls.types import Resolution

LABELS = imagenet_labels()
FIRST_ID = {name: i for i, name in reversed(list(enumerate(LABELS.names)))}  # "crane" -> 134, not 517
NLI = "smoke:bart-mnli"


def ids_of(candidates: tuple[str | int, ...]) -> list[int]:
    return [c if isinstance(c, int) else FIRST_ID[c] for c in candidates]


def expected_id(case: Case) -> int | None:
    return FIRST_ID[case.expected] if isinstance(case.expected, str) else case.expected


def case_id(case: Case) -> str:
    # ASCII letters and digits only: an id pytest escapes (non-ASCII, newlines) cannot be passed back to
    # it as a node id, which mutmut does to run the tests that cover a mutant
    return re.sub(r"[^A-Za-z0-9]+", "_", str(case.answer)).strip("_")[:40] or "other"


@pytest.fixture(scope="session")
def nli_model(smoke_model) -> str:
    smoke_model("bart-mnli")  # built once per session; the resolver finds it through the same cache
    return NLI


@pytest.fixture
def forward_calls(nli_model):
    """Counts the NLI model's forward passes (the pipeline itself is cached per process)."""
    calls = []
    handle = resolve.nli_pipeline(nli_model, "cpu").model.register_forward_hook(
        lambda module, args, out: calls.append(1))
    yield calls
    handle.remove()


# ------------------------------------------------------------------ the answer table

def test_table_is_large_and_varied():
    assert len(ANSWERS) >= 60
    assert {c.stage for c in ANSWERS} == {"match", "synonym", "unresolved"}


@pytest.mark.parametrize("case", ANSWERS, ids=case_id)
def test_exact_mode_table(case: Case):
    got = Resolver("exact", LABELS).resolve(case.answer, ids_of(case.candidates))
    assert (got.class_id, got.stage, got.ambiguous) == (expected_id(case), case.stage, case.ambiguous), got.note


@pytest.mark.parametrize("case", ANSWERS, ids=case_id)
def test_study_mode_table(case: Case, nli_model):
    """A match decides alone; whatever the match leaves open reaches the NLI, ambiguity recorded."""
    ids = ids_of(case.candidates)
    got = Resolver("study", LABELS, nli_model=nli_model, device="cpu").resolve(case.answer, ids)
    if case.answer is None or not case.answer.strip():
        assert got == Resolution(None, "unresolved", note="empty answer")
    elif case.stage != "unresolved":
        assert (got.class_id, got.stage, got.ambiguous) == (expected_id(case), case.stage, False)
    elif case.ambiguous and len(shared := _sharing_one_label(ids)) > 1:
        assert (got.class_id, got.stage, got.ambiguous) == (shared[0], "match", True), got.note
    else:
        assert got.stage == "nli" and got.class_id in ids and got.ambiguous == case.ambiguous


def _sharing_one_label(ids: list[int]) -> list[int]:
    """Candidates named "crane" or "maillot" (two ImageNet classes each), in candidate order."""
    return [c for c in ids if LABELS.names[c] in ("crane", "maillot")]


# ------------------------------------------------------------------ match details

def test_phrase_normalises_case_accents_apostrophes_and_markdown():
    assert phrase("**Jack-O'-Lantern!**") == ("jack", "o", "lantern")
    assert phrase("Pokémon_card") == ("pokemon", "card")
    assert phrase("Potter’s wheel") == ("potters", "wheel")


def test_word_boundaries():
    r = Resolver("exact", LABELS)
    assert r.resolve("a boxer", ids_of(("ox", "boxer"))).class_id == FIRST_ID["boxer"]
    assert r.resolve("a boxer", ids_of(("ox", "tiger"))).class_id is None


def test_match_finds_the_label_among_1000_candidates():
    ids = list(range(1000))
    random.Random(0).shuffle(ids)
    got = Resolver("exact", LABELS).resolve('The object belongs to "Italian greyhound".', ids)
    assert got == Resolution(FIRST_ID["Italian greyhound"], "match")


def test_answer_that_echoes_every_label_still_resolves():
    text = ("This image represents an object that belongs to one of the following classes: "
            + ", ".join(LABELS.names) + ". The most probable class is **tabby**.")
    got = Resolver("exact", LABELS).resolve(text, range(1000))
    assert got == Resolution(FIRST_ID["tabby"], "match")


def test_result_does_not_depend_on_candidate_order():
    r = Resolver("exact", LABELS)
    orders = [CATS, CATS[::-1], CATS[1:] + CATS[:1]]
    assert {r.resolve("It's a tiger cat, not a tabby.", ids_of(o)).class_id for o in orders} == {FIRST_ID["tiger cat"]}


def test_shared_label_in_study_mode_takes_the_first_candidate_without_nli(monkeypatch):
    monkeypatch.setattr(resolve, "nli_pipeline", _no_nli)
    r = Resolver("study", LABELS)
    for order in ([134, 517, 3], [3, 517, 134]):
        got = r.resolve("A crane.", order)
        assert (got.class_id, got.stage, got.ambiguous) == (_sharing_one_label(order)[0], "match", True)
        assert "share the label 'crane'" in got.note


def test_ambiguous_note_names_the_candidates():
    got = Resolver("exact", LABELS).resolve("tabby or tiger cat", ids_of(CATS))
    assert got.note == "several candidates: tabby, tiger cat"


def test_only_negated_mentions_are_unresolved_with_a_reason():
    got = Resolver("exact", LABELS).resolve("Definitely not a tabby.", ids_of(CATS))
    assert got == Resolution(None, "unresolved", note="only negated mentions")


# Every note a resolver writes, word for word: they are what a report's reader sees of a decision.
@pytest.mark.parametrize("mode, answer, candidates, expected", [
    ("constrained", "A crane", [134, 517], Resolution(None, "unresolved", ambiguous=True,
                                                      note="candidates share the label 'crane': classes 134, 517")),
    ("constrained", "a tabby cat", ids_of(CATS), Resolution(None, "unresolved", note="not a candidate label")),
    ("exact", "It is a panda.", ids_of(CATS), Resolution(None, "unresolved", note="no candidate found")),
    ("exact", "A crane.", [517, 134], Resolution(None, "unresolved", ambiguous=True,
                                               note="candidates share the label 'crane': classes 517, 134")),
    ("study", "A crane.", [517, 134], Resolution(517, "match", ambiguous=True,
                                               note="candidates share the label 'crane': classes 517, 134; took the first")),
], ids=["constrained-shared", "constrained-other", "exact-none", "exact-shared", "study-shared"])
def test_each_note_word_for_word(mode, answer, candidates, expected, monkeypatch):
    monkeypatch.setattr(resolve, "nli_pipeline", _no_nli)
    assert Resolver(mode, LABELS).resolve(answer, candidates) == expected


def test_nli_verdict_on_a_shared_label_keeps_the_earlier_note_and_takes_the_first():
    r = Resolver("study", LABELS)
    before = Resolution(None, "unresolved", ambiguous=True, note="several candidates: crane, tabby")
    got = r._nli_verdict((517, 281, 134), before, "crane")
    assert got == Resolution(517, "nli", ambiguous=True, note="several candidates: crane, tabby; "
                             "candidates share the label 'crane': classes 517, 134; took the first")
    assert r._nli_verdict((281, 134), None, "tabby") == Resolution(281, "nli", ambiguous=False, note="")


def test_stage_seconds_add_up_over_calls_and_count_each_stage_from_its_own_start(monkeypatch):
    """With a scripted clock: the match stage is the rules' time, the NLI stage the model's, and a
    resolver's totals grow with every call (the report divides them by the case's wall time)."""
    clock = iter([10.0, 10.5, 100.0, 100.25, 200.0, 200.125, 203.0, 300.0, 300.5, 301.0])
    monkeypatch.setattr(resolve.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(Resolver, "_nli", lambda self, work: [Resolution(ids[0], "nli") for _, ids, _ in work])
    r = Resolver("study", LABELS)
    r.resolve("tabby", ids_of(CATS))
    r.resolve("tiger cat", ids_of(CATS))
    assert r.stage_seconds == {"match": 0.75}
    r.resolve("a small striped animal", ids_of(CATS))  # no candidate named: to the NLI
    assert r.stage_seconds == {"match": 0.875, "nli": 2.875}
    r.resolve("a furry thing", ids_of(CATS))
    assert r.stage_seconds == {"match": 1.375, "nli": 3.375}


def test_the_nli_model_is_loaded_with_the_resolvers_model_device_dtype_and_compile(monkeypatch):
    calls = []
    monkeypatch.setattr(resolve, "nli_pipeline", lambda *args: calls.append(args) or "pipe")
    assert Resolver("study", LABELS, nli_model="m", device="cpu", nli_dtype="float32").pipeline() == "pipe"
    assert Resolver("study", LABELS).pipeline() == "pipe"
    assert Resolver("nli", LABELS, nli_compile=True).pipeline() == "pipe"
    assert calls == [("m", "cpu", "float32", False), ("facebook/bart-large-mnli", "auto", "auto", False),
                     ("facebook/bart-large-mnli", "auto", "auto", True)]


@pytest.mark.parametrize("kwargs, message", [
    ({"nli_impl": "fast"}, "unknown NLI implementation 'fast'; choose 'batched' or 'pipeline'"),
    ({"nli_dtype": "int4"}, "unknown NLI dtype 'int4'; choose one of: auto, bfloat16, float16, float32"),
], ids=["impl", "dtype"])
def test_bad_nli_settings_are_one_line_naming_the_choices(kwargs, message):
    with pytest.raises(ValueError) as info:
        Resolver("study", LABELS, **kwargs)
    assert str(info.value) == message


# ------------------------------------------------------------------ modes

def test_unknown_mode_names_the_valid_ones():
    with pytest.raises(ValueError, match="study, exact, nli, constrained, rank"):
        Resolver("fuzzy", LABELS)
    assert MODES == ("study", "exact", "nli", "constrained", "rank")
    assert Resolver("thesis", LABELS).mode == "study"  # the older name, still accepted


@pytest.mark.parametrize("answer, expected", [
    ("tabby", "tabby"), ("The Tabby.", "tabby"), ("  tiger cat\n", "tiger cat"),
    ("tabby cat", None), ("It is a tabby.", None), ("tabbies", None),
], ids=["bare", "article_dot", "spaces_newline", "extra_word", "sentence", "plural"])
def test_constrained_mode_is_label_equality(answer, expected):
    got = Resolver("constrained", LABELS).resolve(answer, ids_of(CATS))
    stage = "constrained" if expected else "unresolved"
    assert (got.class_id, got.stage) == (expected and FIRST_ID[expected], stage)


def test_constrained_mode_shared_label_is_ambiguous():
    got = Resolver("constrained", LABELS).resolve("crane", [517, 134])
    assert (got.class_id, got.stage, got.ambiguous) == (None, "unresolved", True)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("answer", [None, "", " \t\n"], ids=["none", "empty", "whitespace"])
def test_empty_answer_is_unresolved_without_nli(mode, answer, monkeypatch):
    monkeypatch.setattr(resolve, "nli_pipeline", _no_nli)
    assert Resolver(mode, LABELS).resolve(answer, ids_of(CATS)) == Resolution(None, "unresolved", note="empty answer")


def test_matched_answer_never_loads_nli(monkeypatch):
    monkeypatch.setattr(resolve, "nli_pipeline", _no_nli)
    assert Resolver("study", LABELS).resolve("**tabby**", ids_of(CATS)).stage == "match"


def test_stage_counts_and_resolve_many(nli_model):
    r = Resolver("study", LABELS, nli_model=nli_model, device="cpu")
    got = r.resolve_many([("tabby", ids_of(CATS)), ("gray whale", ids_of(("grey whale", "dugong"))),
                          ("un gato", ids_of(CATS)), (None, ids_of(CATS))])
    assert [g.stage for g in got] == ["match", "synonym", "nli", "unresolved"]
    assert r.stage_counts == {"match": 1, "synonym": 1, "nli": 1, "unresolved": 1}


def test_rank_mode_resolves_an_unranked_text_answer_as_the_study_does(nli_model):
    """An API answer its first token could not rank reaches the resolver as text: match, then NLI."""
    r = Resolver("rank", LABELS, nli_model=nli_model, device="cpu")
    got = r.resolve_many([("tabby", ids_of(CATS)), ("un gato", ids_of(CATS))])
    assert [g.stage for g in got] == ["match", "nli"] and got[1].class_id in ids_of(CATS)
    assert Resolver("exact", LABELS).resolve("un gato", ids_of(CATS)).stage == "unresolved"


def test_import_does_not_load_torch():
    code = "import sys, vlmcls.resolve; sys.exit('torch' in sys.modules or 'transformers' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def _no_nli(*args, **kwargs):
    raise AssertionError("the NLI stage must not run here")


# ------------------------------------------------------------------ NLI mechanics (tiny random BART)

def test_nli_returns_a_candidate(nli_model):
    ids = ids_of(CATS)
    got = Resolver("nli", LABELS, nli_model=nli_model, device="cpu").resolve("**tabby**", ids)
    assert got.stage == "nli" and got.class_id in ids and not got.ambiguous


def test_nli_winner_does_not_depend_on_candidate_order(nli_model):
    ids = list(range(0, 1000, 50))
    # Small batches (~7 pairs): a permutation could change which pairs share a batch (and its padding).
    r = Resolver("nli", LABELS, nli_model=nli_model, device="cpu", nli_batch_tokens=400)
    winners = set()
    for seed in range(4):
        random.Random(seed).shuffle(ids)
        winners.add(r.resolve("A small fish with an orange fin.", ids).class_id)
    assert len(winners) == 1


def test_nli_runs_one_forward_pass_per_answer(nli_model, forward_calls):
    r = Resolver("nli", LABELS, nli_model=nli_model, device="cpu")
    r.resolve("some fish", list(range(100)))
    assert len(forward_calls) == 1  # 100 pairs of ~40 byte tokens: far below the token budget
    Resolver("nli", LABELS, nli_model=nli_model, device="cpu", nli_batch_tokens=1000).resolve("fish", list(range(100)))
    assert len(forward_calls) > 3  # the budget reaches the model: ~4,000 tokens in passes of <= 1,000


def test_nli_pipeline_loads_once_per_process(nli_model, monkeypatch):
    loads = []
    real = nli._load_pipeline
    monkeypatch.setattr(nli, "_PIPELINES", {})
    monkeypatch.setattr(nli, "_load_pipeline", lambda *a: loads.append(a) or real(*a))
    for _ in range(2):
        r = Resolver("study", LABELS, nli_model=nli_model, device="cpu")
        r.resolve_many([("un gato", ids_of(CATS)), ("ein Hund", ids_of(("pug", "beagle")))])
    assert loads == [(nli_model, "cpu", "auto", False)]


def test_nli_shared_label_takes_the_first_and_says_so(nli_model):
    r = Resolver("nli", LABELS, nli_model=nli_model, device="cpu")
    for order in ([134, 517], [517, 134]):
        got = r.resolve("a bird", order)  # one distinct hypothesis: "crane"
        assert (got.class_id, got.stage, got.ambiguous) == (order[0], "nli", True)
        assert "share the label 'crane'" in got.note


def test_study_ambiguity_falls_through_to_nli_and_is_recorded(nli_model):
    got = Resolver("study", LABELS, nli_model=nli_model, device="cpu").resolve(
        "It could be a tabby or a tiger cat.", ids_of(CATS))
    assert got.stage == "nli" and got.ambiguous and got.note.startswith("several candidates: tabby, tiger cat")


@pytest.mark.parametrize("answer", ["A small fish with an orange fin.", "un gato", "It could be a tabby or a tiger cat.",
                                    "I cannot tell from this picture."])
def test_batched_nli_decides_exactly_as_the_zero_shot_pipeline(nli_model, answer):
    ids = list(range(0, 1000, 7))
    fast = Resolver("nli", LABELS, nli_model=nli_model, device="cpu")
    slow = Resolver("nli", LABELS, nli_model=nli_model, device="cpu", nli_impl="pipeline")
    assert fast.resolve(answer, ids) == slow.resolve(answer, ids)
    # and the scores themselves: the pipeline's softmax over entailment logits
    import torch

    pipe = resolve.nli_pipeline(nli_model, "cpu")
    hyps = sorted({LABELS.names[c] for c in ids})
    out = pipe(answer, candidate_labels=hyps, hypothesis_template=resolve.HYPOTHESIS, multi_label=False, batch_size=1024)
    mine = torch.softmax(resolve.entailment_scores(pipe, [(answer, hyps)])[0], 0)
    theirs = torch.tensor([dict(zip(out["labels"], out["scores"]))[h] for h in hyps])
    assert torch.allclose(mine, theirs, atol=1e-5)


# ---------------------------------------------------------------- --nli-model reachable (one-line skip reasons)


def test_nli_model_typo_is_one_line_not_a_validation_traceback():
    # `--nli-model /nonexistent` once failed the case with 99 lines ending in HFValidationError
    assert nli.model_reason("/nonexistent") == "--nli-model '/nonexistent': no such folder, and not a hub repo id"
    assert nli.model_reason("~/my nli") == "--nli-model '~/my nli': no such folder, and not a hub repo id"


def test_nli_model_folder_smoke_name_and_cached_hub_id_are_accepted(nli_model, smoke_model, tmp_path):
    import shutil
    import uuid
    from pathlib import Path

    from huggingface_hub import constants

    assert nli.model_reason(nli_model) is None
    assert nli.model_reason(str(smoke_model("bart-mnli"))) is None
    name = f"someone/cached-nli-{uuid.uuid4().hex[:8]}"  # a fresh id: the hub cache outlives one run of this test
    reason = nli.model_reason(name)  # offline (tests/conftest.py) and not cached
    assert reason == (f"NLI model {name} is not reachable offline (run `hf download {name}`); "
                      "use --resolver exact, or --nli-model PATH (smoke:bart-mnli: a tiny random one, to rehearse)")
    assert nli.model_reason("smoke:bart-mnli") is None
    assert nli.model_reason("smoke:nli") == "--nli-model smoke:nli: no such smoke model; the tiny random NLI model is smoke:bart-mnli"
    repo = Path(constants.HF_HUB_CACHE) / ("models--" + name.replace("/", "--"))  # what `hf download` leaves
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text("0" * 40)
    shutil.copytree(smoke_model("bart-mnli"), repo / "snapshots" / ("0" * 40), dirs_exist_ok=True)
    assert nli.model_reason(name) is None


def test_bench_skips_with_the_one_line_nli_model_reason(pytester: pytest.Pytester):
    from pathlib import Path

    bench = Path(__file__).resolve().parents[1] / "bench" / "test_classify.py"
    (pytester.path / "bench").mkdir()
    (pytester.path / "bench" / "test_classify.py").write_text(bench.read_text())
    pytester.makefile(".toml", catalog='[models.echo-a]\nbackend = "echo"\nweights = "smoke:echo"\nsmoke = true\n')
    out = pytester.runpytest_subprocess("bench", "--catalog", "catalog.toml", "-p", "no:cacheprovider", "-rs",
                                        "--ways", "20", "--samples", "20", "--nli-model", "/nonexistent")
    text = out.stdout.str()
    assert out.ret == 0 and "HFValidationError" not in text and "Traceback" not in text, text[-3000:]
    out.assert_outcomes(skipped=1)
    assert "--nli-model '/nonexistent': no such folder, and not a hub repo id" in text
