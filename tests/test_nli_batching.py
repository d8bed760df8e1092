"""The NLI stage at batch scale: every answer of a batch goes to the model together (length-sorted,
token-budgeted passes), half precision decides as float32 does, and the time spent in each resolver
stage reaches the report. The tiny random BART's choices are chance; only their equalities count."""
from __future__ import annotations

import io
import json
import random

import pytest
from PIL import Image

from answers import ANSWERS, imagenet_labels
from vlmcls import nli, report, resolve
from vlmcls.catalog import ModelEntry
from vlmcls.resolve import Resolver, entailment_scores, token_batches
from vlmcls.runner import CaseRunner, CaseSpec
from vlmcls.settings import BackendSettings
from vlmcls.types import Answer, Sample

LABELS = imagenet_labels()
NLI = "smoke:bart-mnli"
TEXTS = [c.answer for c in ANSWERS if c.answer and c.answer.strip()]


@pytest.fixture(scope="module")
def nli_model(smoke_model) -> str:
    smoke_model("bart-mnli")
    return NLI


@pytest.fixture
def passes(nli_model):
    """Shapes (rows, width) of the float32 CPU model's forward passes."""
    shapes = []
    handle = resolve.nli_pipeline(nli_model, "cpu").model.register_forward_hook(
        lambda module, args, kwargs, out: shapes.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True)
    yield shapes
    handle.remove()


def mixed_items(n: int, seed: int = 0) -> list[tuple[str | None, list[int]]]:
    """Answers of every kind (matched, left to NLI, empty) with 10 to 37 candidates each."""
    rng = random.Random(seed)
    items = []
    for i in range(n):
        text = rng.choice(TEXTS + ["Es un animal en la imagen.", "I cannot tell.", "", None])
        items.append((text, rng.sample(range(len(LABELS)), rng.choice((10, 20, 37)))))
    return items


# ------------------------------------------------------------------ token budgets

@pytest.mark.parametrize("budget", [1, 50, 100, 1000])
def test_token_batches_fill_the_budget_and_keep_the_order(budget):
    lengths = sorted(random.Random(budget).choices(range(5, 60), k=300))
    batches = token_batches(lengths, budget)
    assert [i for b in batches for i in b] == list(range(len(lengths)))
    for b in batches:
        padded = len(b) * lengths[b[-1]]
        assert padded <= budget or len(b) == 1  # a pair longer than the budget still runs, alone
        if b[-1] + 1 < len(lengths):  # greedy: the next pair would not have fitted
            assert (len(b) + 1) * lengths[b[-1] + 1] > budget
    assert token_batches([], budget) == []


# ------------------------------------------------------------------ pairs, tokenized once per text

def _whole_pairs(tok, items):
    pairs = [(p, resolve.HYPOTHESIS.format(h)) for p, hs in items for h in hs]
    return tok([p for p, _ in pairs], [h for _, h in pairs], truncation="only_first", split_special_tokens=True)["input_ids"]


@pytest.mark.parametrize("wrong_template", [False, True])
def test_pair_ids_equal_the_tokenizers_own(nli_model, monkeypatch, wrong_template):
    tok = resolve.nli_pipeline(nli_model, "cpu").tokenizer
    if wrong_template:  # a tokenizer whose pairs are not specials + a + specials + b + specials
        monkeypatch.setattr(nli, "_pair_template", lambda t: ([0], [2], [2]))
    rng = random.Random(3)
    items = [(t, [LABELS.names[c] for c in rng.sample(range(1000), 7)]) for t in TEXTS[:10]]
    items += [("un gato </s> <pad>", ["tabby", "tiger cat"]), ("no candidates", []), ("un gato", ["Persian cat"])]
    assert resolve.pair_ids(tok, items) == _whole_pairs(tok, items)


def test_long_premise_is_truncated_as_the_tokenizer_does(nli_model):
    tok = resolve.nli_pipeline(nli_model, "cpu").tokenizer  # one token per byte, at most 512
    items = [("A cat. " * 100, ["tabby", "Egyptian cat"]), ("short", ["tabby"])]
    got = resolve.pair_ids(tok, items)
    assert got == _whole_pairs(tok, items) and max(map(len, got)) == tok.model_max_length


# ------------------------------------------------------------------ batched across answers

def test_batched_across_answers_decides_as_answer_by_answer(nli_model, passes):
    items = mixed_items(16)
    together = Resolver("thesis", LABELS, nli_model=nli_model, device="cpu")
    got = together.resolve_many(items)
    pooled = len(passes)
    alone = Resolver("thesis", LABELS, nli_model=nli_model, device="cpu")
    assert got == [alone.resolve(text, ids) for text, ids in items]
    n_nli = together.stage_counts["nli"]
    assert n_nli >= 8 and together.stage_counts == alone.stage_counts
    assert pooled < n_nli and len(passes) - pooled == n_nli  # one pass for all vs one pass per answer


def test_scores_do_not_depend_on_batch_composition(nli_model):
    pipe = resolve.nli_pipeline(nli_model, "cpu")
    rng = random.Random(1)
    items = [(t, sorted({LABELS.names[c] for c in rng.sample(range(1000), 50)})) for t in TEXTS[:12]]
    pooled = entailment_scores(pipe, items)  # all pairs, few large passes
    small = entailment_scores(pipe, items, batch_tokens=300)  # many small passes, other paddings
    for (text, hyps), a, b in zip(items, pooled, small):
        one = entailment_scores(pipe, [(text, hyps)])[0]
        assert a.shape == b.shape == one.shape == (len(hyps),)
        # padding only adds masked positions: float32 noise (~1e-7 relative) at most
        assert max(float((a - one).abs().max()), float((b - one).abs().max())) <= 1e-5 * float(one.abs().max())
        assert int(a.argmax()) == int(b.argmax()) == int(one.argmax())


def test_passes_are_length_sorted_and_within_the_budget(nli_model, passes):
    r = Resolver("nli", LABELS, nli_model=nli_model, device="cpu", nli_batch_tokens=2000)
    items = [(t, list(range(i, 1000, 97))) for i, t in enumerate(TEXTS[:20])]
    r.resolve_many(items)
    widths = [w for _, w in passes]
    assert widths == sorted(widths) and len(passes) > 1
    assert all(rows * w <= 2000 for rows, w in passes)
    assert sum(rows for rows, _ in passes) == sum(len({LABELS.names[c] for c in ids}) for _, ids in items)


def test_literal_special_tokens_in_an_answer_stay_text(nli_model):
    """BART's classifier needs the same number of </s> in every row: an answer quoting "</s>" must
    neither crash the batch it shares with other answers nor change their decisions."""
    ids = list(range(0, 1000, 31))
    r = Resolver("nli", LABELS, nli_model=nli_model, device="cpu")
    got = r.resolve_many([("un gato </s></s> <s>", ids), ("A small fish.", ids)])
    assert got[0].stage == "nli" and got[1] == r.resolve("A small fish.", ids)


def test_stage_seconds_are_recorded_per_stage(nli_model):
    r = Resolver("thesis", LABELS, nli_model=nli_model, device="cpu")
    r.resolve_many([("**tabby**", list(range(281, 301)))])
    assert set(r.stage_seconds) == {"match"}  # no answer reached the model: no NLI time
    r.resolve_many(mixed_items(10))
    assert r.stage_seconds["match"] > 0 and r.stage_seconds["nli"] > 0


# ------------------------------------------------------------------ precision

def test_dtype_is_float32_on_cpu_and_half_on_gpus(monkeypatch):
    import torch

    assert resolve.nli_dtype("cpu") == "float32" and resolve.nli_dtype("cuda:1", "float32") == "float32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve.nli_dtype("cuda") == "bfloat16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # V100, T4
    assert resolve.nli_dtype("cuda:0") == "float16"
    with pytest.raises(ValueError, match="float16"):
        Resolver("nli", LABELS, nli_dtype="int8")


# bf16 keeps 8 significant bits (~0.4% steps); through the tiny model its scores differ from
# float32's by <= ~1.5% of an answer's score range, and the flips seen came from top-two gaps under
# 0.5% of it (measured, 10 to 20 candidates). Where float32's own top two are closer than TIE of the
# range, the precisions may honestly disagree: the random model is tossing a coin. 10 candidates
# keep ~80% of the answers clear of that tie zone, so the test compares most of them.
TIE = 0.02


def test_half_precision_decides_as_float32(nli_model):
    import torch

    p32 = resolve.nli_pipeline(nli_model, "cpu", "float32")
    p16 = resolve.nli_pipeline(nli_model, "cpu", "bfloat16")
    assert p16.model.dtype == torch.bfloat16 and p32.model.dtype == torch.float32
    rng = random.Random(2)
    items = [(t, sorted({LABELS.names[c] for c in rng.sample(range(1000), 10)})) for t in TEXTS[:40]]
    clear = same = 0
    for a, b in zip(entailment_scores(p32, items), entailment_scores(p16, items)):
        top = a.sort(descending=True).values
        spread = float(top[0] - top[-1])
        assert float(a.max() - a[b.argmax()]) <= TIE * spread  # half never picks a clearly worse label
        if top[0] - top[1] > TIE * spread:
            clear += 1
            same += int(a.argmax() == b.argmax())
    assert clear >= 0.6 * len(items) and same == clear


def test_half_precision_resolver_matches_float32_on_clear_answers(nli_model):
    ids = list(range(3, 1000, 100))  # 10 candidates
    r32 = Resolver("thesis", LABELS, nli_model=nli_model, device="cpu", nli_dtype="float32")
    r16 = Resolver("thesis", LABELS, nli_model=nli_model, device="cpu", nli_dtype="bfloat16")
    pipe = resolve.nli_pipeline(nli_model, "cpu", "float32")
    hyps = sorted({LABELS.names[c] for c in ids})
    items = [(t, ids) for t in TEXTS[:40]]
    scores = dict(zip(TEXTS[:40], entailment_scores(pipe, [(t, hyps) for t in TEXTS[:40]])))
    compared = 0
    for (text, _), a, b in zip(items, r32.resolve_many(items), r16.resolve_many(items)):
        top = scores[text].sort(descending=True).values
        if a.stage != "nli" or top[0] - top[1] > TIE * float(top[0] - top[-1]):
            compared += 1
            assert a == b
    assert compared >= 30


# ------------------------------------------------------------------ --nli-compile

def test_the_compiled_model_decides_as_the_model_uncompiled(nli_model, monkeypatch):
    """torch.compile (inductor, dynamic shapes) on the CPU: the same decisions, scores within float32
    noise (fused kernels sum in another order), through passes of many shapes (rows x width)."""
    monkeypatch.setattr(nli, "_PIPELINES", {})
    ids = list(range(0, 1000, 23))  # 44 candidates
    items = [(t, ids) for t in TEXTS[:12]]
    eager = Resolver("nli", LABELS, nli_model=nli_model, device="cpu", nli_batch_tokens=600)
    compiled = Resolver("nli", LABELS, nli_model=nli_model, device="cpu", nli_batch_tokens=600, nli_compile=True)
    assert not hasattr(eager.pipeline().model, "_orig_mod") and hasattr(compiled.pipeline().model, "_orig_mod")
    assert compiled.pipeline().model._orig_mod is not eager.pipeline().model  # its own copy: eager stays eager
    assert compiled.resolve_many(items) == eager.resolve_many(items)
    hyps = sorted({LABELS.names[c] for c in ids})
    pairs = [(t, hyps) for t in TEXTS[:12]]
    for a, b in zip(entailment_scores(eager.pipeline(), pairs, 600), entailment_scores(compiled.pipeline(), pairs, 600)):
        assert float((a - b).abs().max()) <= 1e-4 * float(a.abs().max())


def test_a_model_that_fails_to_compile_runs_uncompiled_with_one_warning(nli_model, monkeypatch):
    import torch

    def broken(graph, example_inputs):  # a compiler backend that fails, as inductor does without a C++ compiler
        raise RuntimeError("no C++ compiler\nsecond line")

    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: real(model, **{**kw, "backend": broken}))
    monkeypatch.setattr(nli, "_PIPELINES", {})
    torch._dynamo.reset()
    ids = list(range(5, 1000, 50))
    eager = Resolver("nli", LABELS, nli_model=nli_model, device="cpu")
    r = Resolver("nli", LABELS, nli_model=nli_model, device="cpu", nli_compile=True)
    wrapped = r.pipeline().model
    with pytest.warns(RuntimeWarning, match="--nli-compile") as caught:
        got = r.resolve_many([(t, ids) for t in TEXTS[:4]])
    assert [str(w.message) for w in caught if "--nli-compile" in str(w.message)] == [
        "--nli-compile: torch.compile failed (RuntimeError: no C++ compiler); the NLI model runs uncompiled"]
    # the compiler's error, its first line, once: not dynamo's wrapper around it
    assert r.pipeline().model is wrapped._orig_mod  # uncompiled from then on
    assert got == eager.resolve_many([(t, ids) for t in TEXTS[:4]])
    torch._dynamo.reset()


def test_the_case_notes_say_what_nli_compile_did(nli_model, monkeypatch):
    """A case whose answers reached the NLI model says whether it ran compiled (dynamo with its eager
    backend here: a real compiled module, without inductor's minutes) or fell back; one with no NLI
    answer says nothing."""
    import dataclasses

    import torch

    def broken(graph, example_inputs):
        raise RuntimeError("no C++ compiler")

    real = torch.compile
    entry = ModelEntry(name="talker", backend="echo", weights="smoke:echo", smoke=True)
    spec = CaseSpec(model=entry, ways=20, settings=BackendSettings(batch_size=4), resolver="study", nli_model=nli_model,
                    nli_compile=True)
    samples = [Sample(f"s{i}", i * 7, _jpeg()) for i in range(4)]

    def notes(backend, case=spec) -> list[str]:
        monkeypatch.setattr(torch, "compile", lambda model, **kw: real(model, **{**kw, "backend": backend}))
        monkeypatch.setattr(nli, "_PIPELINES", {})
        torch._dynamo.reset()
        resolver = Resolver(case.resolver, LABELS, nli_model=nli_model, device="cpu", nli_compile=True)
        return [n for n in CaseRunner(case, LABELS, _Talker(), resolver, None).run(samples).notes if "nli-compile" in n]

    assert notes("eager") == ["--nli-compile: the NLI model ran through torch.compile (compiled by the process's "
                              "first NLI pass, whose time is in the resolver's NLI seconds)"]
    with pytest.warns(RuntimeWarning, match="--nli-compile"):
        assert notes(broken) == ["--nli-compile: torch.compile failed (RuntimeError: no C++ compiler); the NLI model "
                                 "ran uncompiled"]
    assert notes("eager", dataclasses.replace(spec, resolver="exact")) == []  # nothing reached the NLI model
    torch._dynamo.reset()


def test_the_option_reaches_the_resolver_and_stays_out_of_the_store_key():
    from test_plan import entry, options
    from vlmcls import plan
    from vlmcls.session import BenchSession

    assert options().nli_compile is False and options("--nli-compile").nli_compile is True
    on, off = plan.spec(entry(), 20, options("--nli-compile")), plan.spec(entry(), 20, options())
    assert on.nli_compile and not off.nli_compile
    assert on.key_fields() == off.key_fields()  # speed only: stored rows are reused either way
    session = BenchSession(None, options("--nli-compile"))
    assert session.resolver(on).nli_compile and not session.resolver(off).nli_compile


# ------------------------------------------------------------------ stage times in the report

class _Talker:
    """A text backend: every other answer names its first candidate, the rest need the NLI."""

    kind = "text"

    def answer(self, queries):
        return [Answer(text=f"**{q.labels[0]}**" if i % 2 else "Es un animal en la imagen.", latency_s=0.01)
                for i, q in enumerate(queries)]

    def close(self):
        pass


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), "teal").save(buf, "JPEG")
    return buf.getvalue()


def test_report_shows_resolver_stage_times(nli_model, tmp_path):
    entry = ModelEntry(name="talker", backend="echo", weights="smoke:echo", smoke=True)
    spec = CaseSpec(model=entry, ways=20, settings=BackendSettings(batch_size=4), resolver="thesis", nli_model=nli_model)
    resolver = Resolver("thesis", LABELS, nli_model=nli_model, device="cpu")
    resolver.resolve("un gato", list(range(20)))  # a shared resolver's earlier time is not this case's
    before = resolver.stage_seconds["nli"]
    result = CaseRunner(spec, LABELS, _Talker(), resolver, None).run(
        [Sample(f"s{i}", i * 7, _jpeg()) for i in range(8)])
    secs = result.stage_seconds
    assert set(secs) == {"match", "nli"} and result.stage_shares()["nli"] == 0.5
    assert 0 < secs["nli"] <= result.wall_s and secs["nli"] == pytest.approx(resolver.stage_seconds["nli"] - before)

    row = report.case_row(result, status="passed", threshold=None)
    report.write_report([row], tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())["cases"][0]
    assert saved["resolver_s"] == {k: round(v, 4) for k, v in secs.items()} and saved["wall_s"] == result.wall_s
    cell = report.parse_table((tmp_path / "report.md").read_text())[0]["resolver time"]
    stored = saved["resolver_s"]  # the report reads the stored (rounded) seconds: 0.03150 vs 0.031499 is 32 vs 31 ms
    share = report._share(stored["nli"] / saved["wall_s"])
    expected = f"match {report._duration(stored['match'])}, nli {report._duration(stored['nli'])} (NLI {share} of wall)"
    assert cell == report.cell(expected)  # html-escaped like every cell: "&gt;99%" renders as ">99%"
    assert [report._duration(x) for x in (0.0001, 0.0123, 2.345)] == ["<1 ms", "12 ms", "2.35 s"]
    # the report says what the column holds: summed seconds per stage, fresh samples only
    assert "*resolver time*: seconds spent in each stage over the case's fresh samples, summed" in \
        (tmp_path / "report.md").read_text()


def test_report_has_no_time_column_without_a_resolver(tmp_path):
    rows = [{"case_id": "clip-20way", "model": "clip", "ways": 20, "smoke": False, "status": "passed",
             "metrics": {"precision": 1, "recall": 1, "f1": 1, "accuracy": 1, "accuracy_ci": [1, 1], "n": 1},
             "stages": {"direct": 1.0}, "resolver_s": {}}]
    assert "resolver time" not in report.study_table(rows)
    note = report.render_markdown(rows)
    assert "*resolver stages*: the share" in note and "*resolver time*" not in note
