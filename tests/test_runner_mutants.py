"""What mutation testing of vlmcls/runner.py and vlmcls/pipeline.py showed untested (mutmut 3.8.1, 2026-11-27).

Each test names the mutants it kills (mutmut's names, `runner.`/`pipeline.` + function + number). The
expectations are worked out by hand from scripted backends and resolvers (answers, costs, stage
seconds chosen here), rows are read back from the store with the sqlite3 module, and the GPU path
(a CUDA stream for the NLI) runs against a stand-in `torch` module that records what it was asked.
"""
from __future__ import annotations

import contextlib
import json
import sqlite3
import types
from collections import Counter

import pytest
from PIL import Image

from test_nli_overlap import ECHO, _jpeg, samples
from vlmcls import candidates as cand
from vlmcls import metrics as metrics_mod
from vlmcls import pipeline, prompts
from vlmcls.labels import imagenet_labelset
from vlmcls.runner import CaseResult, CaseRunner, CaseSpec, OrderedSample
from vlmcls.settings import BackendSettings
from vlmcls.store import Store
from vlmcls.types import Answer, CandidateSet, Prediction, Resolution, Sample

LABELS = imagenet_labelset()


class Scripted:
    """A text backend: every answer names no candidate (so each goes to the resolver), costs `cost`,
    and records the sample ids of each call. `window` is the batch the runner asks for."""

    kind = "text"

    def __init__(self, window: int = 4, cost: float | None = None):
        self.window, self.cost = window, cost
        self.calls: list[list[str]] = []

    def answer(self, queries):
        self.calls.append([q.sample_id for q in queries])
        return [Answer(text=f"unclear {q.sample_id}", cost_usd=self.cost) for q in queries]

    def close(self):
        pass


class LastCandidate:
    """Resolves every answer to its last candidate; per call adds `seconds` to `stage_seconds`."""

    mode = "nli"

    def __init__(self, device: str = "cpu", seconds: dict[str, float] | None = None):
        self.device = device
        self.seconds = seconds or {}
        self.stage_seconds: Counter[str] = Counter()
        self.calls = 0

    def resolve_many(self, items):
        self.calls += 1
        self.stage_seconds.update(self.seconds)
        return [Resolution(ids[-1], "nli") for _, ids in items]


def make_runner(backend, resolver, store=None, batch_size=4, mode="nli", **spec) -> CaseRunner:
    case = CaseSpec(model=ECHO, ways=20, settings=BackendSettings(batch_size=batch_size), resolver=mode, **spec)
    return CaseRunner(case, LABELS, backend, resolver, store)


def prediction(sample_id: str, stage: str) -> Prediction:
    return Prediction(sample_id=sample_id, true_id=0, true_label="tench", candidates=("tench", "goldfish"),
                      answer="x", pred_id=None if stage in ("error", "unresolved") else 0,
                      pred_label=None if stage in ("error", "unresolved") else "tench", stage=stage)


# ================================================================ runner.py
# ---------------------------------------------------------------- CaseResult.stage_shares
def test_stage_shares_are_each_stages_fraction_of_the_rows():
    """Eight rows: 4 matched, 2 by NLI, 1 error, 1 unresolved -> 1/2, 1/4, 1/8, 1/8 (exact in binary).
    Kills runner.xǁCaseResultǁstage_shares__mutmut_7 (`shares.get(None, 0)`: every share 1/n)."""
    stages = ["match", "nli", "match", "error", "match", "unresolved", "nli", "match"]
    preds = [prediction(f"s{i}", st) for i, st in enumerate(stages)]
    spec = CaseSpec(model=ECHO, ways=2, settings=BackendSettings())
    shares = CaseResult(spec=spec, predictions=preds, metrics=None, images_per_s=None).stage_shares()
    assert shares == {"error": 0.125, "match": 0.5, "nli": 0.25, "unresolved": 0.125}
    assert list(shares) == ["error", "match", "nli", "unresolved"]  # sorted by stage name
    assert CaseResult(spec=spec, predictions=[], metrics=None, images_per_s=None).stage_shares() == {}


# ---------------------------------------------------------------- stage seconds of a resolver without them
def test_a_resolver_that_keeps_no_stage_seconds_still_runs_the_case():
    """A resolver is anything with resolve_many (a script's own, a notebook's): one without a
    `stage_seconds` attribute resolves every row and the case has no stage seconds. Kills
    runner.xǁCaseRunnerǁ_resolve__mutmut_5, 8, 21, 24 (the `{}` default of getattr dropped or None)."""

    class Bare:
        def resolve_many(self, items):
            return [Resolution(ids[0], "match") for _, ids in items]

    backend = Scripted()
    result = make_runner(backend, Bare(), mode="exact").run(samples(6))
    assert [p.sample_id for p in result.predictions] == [f"s{i}" for i in range(6)]
    assert all(p.stage == "match" and p.pred_id is not None for p in result.predictions)
    assert result.stage_seconds == {}


# ---------------------------------------------------------------- a row holds what the backend said, at its sample
class Varied:
    """Answers by sample id, each a different kind: a class with no stage, a class with its stage, a
    class outside the candidates, text to resolve, an error. Keeps every query it got."""

    kind = "text"
    window = 8

    def __init__(self):
        self.queries = {}

    def answer(self, queries):
        out = []
        for q in queries:
            self.queries[q.sample_id] = q
            outside = next(i for i in range(1000) if i not in q.class_ids)
            out.append({
                "s0": Answer(class_id=q.class_ids[2], latency_s=0.5, prompt_tokens=11, completion_tokens=3,
                             cost_usd=0.002, top5=(q.class_ids[2], q.class_ids[0]), top1_prob=0.75),
                "s1": Answer(class_id=q.class_ids[0], stage="rank", latency_s=0.25),
                "s2": Answer(class_id=outside, text="a class it was not offered"),
                "s4": Answer(text="something vague", prompt_tokens=7, completion_tokens=2),
                "s5": Answer(error="HTTP 500: upstream", latency_s=1.5),
            }[q.sample_id])
        return out

    def close(self):
        pass


def test_each_row_holds_its_own_samples_answer_read_back_from_the_store(tmp_path):
    """Six samples in one window, s3 an unreadable image (the backend gets the other five, in order).
    Each stored row, read back with sqlite3, holds its sample's answer field by field: stage "direct"
    when a class comes without a stage, the backend's stage otherwise, "unresolved" for a class outside
    the candidates (never scored), the resolver's pick for text, "error" for an error or a bad image;
    candidates, labels and fingerprints worked out here from the query and the image bytes.
    Kills runner.xǁCaseRunnerǁrecord__mutmut_39 (ambiguity None), answer_batch__mutmut_17 (no image
    handed to the backend) and resolve_batch__mutmut_4 (error answers sent to the resolver), and
    pins every field the record/answer_batch mutants could drop or misplace."""
    import hashlib

    data = samples(6)
    data[3] = Sample("s3", 7, b"not an image")
    class Asked(LastCandidate):
        def resolve_many(self, items):
            self.items = getattr(self, "items", []) + list(items)
            return super().resolve_many(items)

    backend, store, resolver = Varied(), Store(tmp_path / "s.sqlite"), Asked()
    runner = make_runner(backend, resolver, store)
    result = runner.run(data)
    assert sorted(backend.queries) == ["s0", "s1", "s2", "s4", "s5"]
    assert all(isinstance(q.image, Image.Image) for q in backend.queries.values())  # decoded images, not None
    assert resolver.items == [("something vague", backend.queries["s4"].class_ids)]  # text answers only
    with contextlib.closing(sqlite3.connect(tmp_path / "s.sqlite")) as db:
        rows = {sid: json.loads(rec) for sid, rec in db.execute("SELECT sample_id, record FROM results")}
    assert sorted(rows) == [f"s{i}" for i in range(6)]
    names = LABELS.names
    for s in data:
        row = rows[s.sample_id]
        assert row["true_id"] == s.label and row["true_label"] == names[s.label] and row["order"] == 0
        assert row["fingerprint"] == f"{s.label}:" + hashlib.sha1(s.image).hexdigest()[:16]
        if s.sample_id != "s3":
            q = backend.queries[s.sample_id]
            assert row["candidates"] == [names[i] for i in q.class_ids] and s.label in q.class_ids
    q = {k: v.class_ids for k, v in backend.queries.items()}
    expected = {
        "s0": dict(pred_id=q["s0"][2], stage="direct", answer=None, latency_s=0.5, prompt_tokens=11, completion_tokens=3,
                   cost_usd=0.002, error=None, top5=[q["s0"][2], q["s0"][0]], top1_prob=0.75),
        "s1": dict(pred_id=q["s1"][0], stage="rank", answer=None, latency_s=0.25, prompt_tokens=None, cost_usd=None,
                   error=None, top5=None, top1_prob=None),
        "s2": dict(pred_id=None, pred_label=None, stage="unresolved", answer="a class it was not offered", error=None),
        "s3": dict(pred_id=None, pred_label=None, stage="error", answer=None, candidates=[names[i] for i in runner.candidates(data[3]).class_ids]),
        "s4": dict(pred_id=q["s4"][-1], stage="nli", answer="something vague", prompt_tokens=7, completion_tokens=2, error=None),
        "s5": dict(pred_id=None, pred_label=None, stage="error", answer=None, error="HTTP 500: upstream", latency_s=1.5),
    }
    for sid, fields in expected.items():
        assert {k: rows[sid][k] for k in fields} == fields, sid
        if fields["pred_id"] is not None:
            assert rows[sid]["pred_label"] == names[fields["pred_id"]]
    assert "cannot decode image" in rows["s3"]["error"]
    assert all(r["ambiguous"] is False for r in rows.values())  # "unique" labels: no class is ambiguous
    assert [p.sample_id for p in result.predictions] == [f"s{i}" for i in range(6)]
    assert [json.loads(json.dumps(p.__dict__, default=list)) == rows[p.sample_id] for p in result.predictions] == [True] * 6


def test_with_the_studys_raw_labels_a_row_is_ambiguous_by_its_label_or_by_its_resolution():
    """The study's raw labels name two classes "crane" (134 and 517): a row whose true class is one of
    them, with the other among its candidates, is ambiguous, so is one the resolver marks ambiguous, and no other. Kills
    runner.xǁCaseRunnerǁrecord__mutmut_19-23 (ambiguity None, needing both reasons at once, or every
    row ambiguous)."""
    raw = imagenet_labelset("thesis")
    assert raw.names[134] == raw.names[517] == "crane"

    class MarksS1(LastCandidate):
        def resolve_many(self, items):
            return [Resolution(ids[0] if ids[0] not in (134, 517) else ids[1], "nli", ambiguous=text.endswith("s1"))
                    for text, ids in items]

    # c15's 20 candidates hold both cranes; s0's only its own (the name is then as clear as any other)
    assert 517 in cand.candidate_set("c15", 134, 20, 1000, 0).class_ids and 517 not in cand.candidate_set("s0", 134, 20, 1000, 0).class_ids
    data = [Sample("c15", 134, _jpeg("red")), Sample("s0", 134, _jpeg("red")), Sample("s1", 3, _jpeg("green")),
            Sample("s2", 5, _jpeg("blue"))]
    case = CaseSpec(model=ECHO, ways=20, settings=BackendSettings(batch_size=4), resolver="nli", labels_mode="raw")
    result = CaseRunner(case, raw, Scripted(), MarksS1(), None).run(data)
    assert {p.sample_id: p.ambiguous for p in result.predictions} == {"c15": True, "s0": False, "s1": True, "s2": False}


class ClassOnly(Scripted):
    def answer(self, queries):
        self.calls.append([q.sample_id for q in queries])
        return [Answer(class_id=q.class_ids[0], stage="direct") for q in queries]


def test_a_window_with_nothing_to_resolve_never_calls_the_resolver():
    """Answers that all name a class: no resolver call at all (not even with an empty list). Kills
    runner.xǁCaseRunnerǁresolve_batch__mutmut_9 (`if need or True`)."""
    resolver = LastCandidate()
    result = make_runner(ClassOnly(), resolver).run(samples(6))
    assert resolver.calls == 0 and [p.stage for p in result.predictions] == ["direct"] * 6


def test_run_batch_reads_decodes_and_records_a_batch_by_itself():
    """run_batch (a script's or vlmcls.perf's way in, without run()) reads the images itself, makes
    error rows of the unreadable ones and fingerprints each sample. Kills
    runner.xǁCaseRunnerǁanswer_batch__mutmut_2, 3, runner.xǁCaseRunnerǁrecord__mutmut_62 and the
    run_batch mutants."""
    import hashlib

    data = samples(3) + [Sample("bad", 9, b"junk")]
    backend = Scripted()
    rows = make_runner(backend, LastCandidate()).run_batch(data)
    assert backend.calls == [["s0", "s1", "s2"]]
    assert [p.sample_id for p in rows] == ["s0", "s1", "s2", "bad"]
    assert [p.stage for p in rows] == ["nli", "nli", "nli", "error"] and "cannot decode image" in rows[3].error
    assert [p.fingerprint for p in rows] == [f"{s.label}:" + hashlib.sha1(s.image).hexdigest()[:16] for s in data]


def test_a_backend_that_returns_too_few_answers_is_an_error_that_says_so():
    """Kills runner.xǁCaseRunnerǁanswer_batch__mutmut_23 (the message dropped)."""

    class Loses(Scripted):
        def answer(self, queries):
            return super().answer(queries)[:-1]

    with pytest.raises(RuntimeError, match=r"^backend returned 3 answers for 4 queries$"):
        make_runner(Loses(), LastCandidate()).run(samples(4))


# ================================================================ pipeline.py
# ---------------------------------------------------------------- --max-cost with two orders
def test_max_cost_with_two_orders_counts_requests(tmp_path):
    """--orders 2, 0.01 USD per request, --max-cost 0.035, 4 images = 8 requests. Worked by hand:
    nothing known -> 1 request (0.01 spent, 1 done); room for int(0.025 / 0.01) = 2 more (0.03, 3);
    then int(0.005 / 0.01) = 0: stop after 3 requests. The note counts requests, two per image.
    Kills pipeline.xǁ_Loopǁ_budget_stop__mutmut_6 (`k > 2`: with K=2 it said "3 samples")."""
    backend = Scripted(cost=0.01)
    store = Store(tmp_path / "s.sqlite")
    result = make_runner(backend, LastCandidate(), store, orders=2, max_cost=0.035).run(samples(4))
    assert backend.calls == [["s0"], ["s0", "s1"]]  # s0 order 0; s0 order 1 and s1 order 0
    assert result.stopped == ("stopped by --max-cost 0.035 USD after 3 requests (2 per image, one per order; "
                              "spent 0.0300 USD, this run and stored runs of this case)")
    with contextlib.closing(sqlite3.connect(tmp_path / "s.sqlite")) as db:
        rows = db.execute("SELECT sample_id, record FROM results").fetchall()
    assert sorted((sid, json.loads(rec)["order"]) for sid, rec in rows) == [("s0", 0), ("s0\x1forder1", 1), ("s1", 0)]


# ---------------------------------------------------------------- the NLI's CUDA stream (--nli-overlap on a GPU)
class FakeTorch(types.ModuleType):
    """Stands in for torch in sys.modules: `cuda` says whether a GPU is there, makes streams that
    remember their device and what they waited on, and `cuda.stream(s)` makes s current while open."""

    def __init__(self, gpu: bool):
        super().__init__("torch")
        outer = self

        class Stream:
            def __init__(self, device=None):
                self.device, self.waited = device, []

            def wait_stream(self, other):
                self.waited.append(other)

        def current_stream(device=None):
            return ("current", device)

        @contextlib.contextmanager
        def stream(s):
            previous, outer.current = outer.current, s
            try:
                yield s
            finally:
                outer.current = previous

        self.current = None
        self.Tensor = type("Tensor", (), {})  # scipy's array-API checks (metrics) ask isinstance(x, torch.Tensor)
        self.cuda = types.SimpleNamespace(is_available=lambda: gpu, Stream=Stream, current_stream=current_stream,
                                          stream=stream)


@pytest.fixture
def fake_torch(monkeypatch):
    def install(gpu: bool) -> FakeTorch:
        torch = FakeTorch(gpu)
        monkeypatch.setitem(__import__("sys").modules, "torch", torch)
        return torch
    return install


def test_the_nli_gets_a_stream_of_its_own_on_its_gpu_after_the_work_queued_there(fake_torch):
    """On a GPU the stream is made on the resolver's device (cuda:1 as given; "cuda" when it says
    "auto" or nothing) and first waits for that device's current stream. Kills pipeline.x__nli_stream__mutmut_1-4
    (torch not found), 6, 7 (the availability test inverted), 8-19 (the device), 20 (startswith
    inverted), 24-27 (the stream or what it waits for)."""
    torch = fake_torch(gpu=True)
    stream = pipeline._nli_stream(LastCandidate(device="cuda:1"))
    assert isinstance(stream, torch.cuda.Stream) and stream.device == "cuda:1"
    assert stream.waited == [("current", "cuda:1")]

    class NoDevice:
        pass

    for resolver in (LastCandidate(device="auto"), NoDevice()):  # pick_device("auto") with a GPU -> "cuda"
        stream = pipeline._nli_stream(resolver)
        assert stream.device == "cuda" and stream.waited == [("current", "cuda")]


def test_no_nli_stream_for_a_resolver_on_the_cpu_or_without_a_gpu(fake_torch, monkeypatch):
    """Kills pipeline.x__nli_stream__mutmut_5 (`torch is None and ...`: goes on without a GPU) and 20-23
    (a cpu resolver given a CUDA stream); without torch imported at all there is no stream either."""
    fake_torch(gpu=True)
    assert pipeline._nli_stream(LastCandidate(device="cpu")) is None
    fake_torch(gpu=False)
    assert pipeline._nli_stream(LastCandidate(device="cuda:0")) is None
    monkeypatch.delitem(__import__("sys").modules, "torch")
    assert pipeline._nli_stream(LastCandidate(device="cuda:0")) is None


def test_with_overlap_on_a_gpu_every_window_is_resolved_inside_the_nli_stream(fake_torch, tmp_path):
    """12 samples, windows of 4, --nli-overlap, resolver on cuda:0: each of the 3 resolutions runs with
    the NLI's stream current (the worker thread enters it), and none outside. Kills
    pipeline.xǁ_Loopǁ_resolve_store__mutmut_1 (`_on(None)`) and pipeline.x__on__mutmut_1-4."""
    torch = fake_torch(gpu=True)

    class Seeing(LastCandidate):
        def resolve_many(self, items):
            self.seen.append(torch.current)
            return super().resolve_many(items)

    resolver = Seeing(device="cuda:0")
    resolver.seen = []
    runner = make_runner(Scripted(), resolver, Store(tmp_path / "s.sqlite"), nli_overlap=True)
    assert runner.overlaps()
    result = runner.run(samples(12))
    assert len(result.predictions) == 12 and len(resolver.seen) == 3
    streams = {id(s) for s in resolver.seen}
    assert len(streams) == 1 and all(isinstance(s, torch.cuda.Stream) and s.device == "cuda:0" for s in resolver.seen)
    assert torch.current is None  # closed again after each window
    assert isinstance(pipeline._on(None), contextlib.nullcontext)


def test_without_overlap_no_stream_is_made_even_on_a_gpu(fake_torch):
    """Kills pipeline.xǁ_Loopǁ__init____mutmut_12 (`if overlap or True`: a CUDA stream made per case
    and never used)."""
    torch = fake_torch(gpu=True)
    made = []
    torch.cuda.Stream = lambda device=None: made.append(device)
    result = make_runner(Scripted(), LastCandidate(device="cuda:0"), nli_overlap=False).run(samples(8))
    assert made == [] and len(result.predictions) == 8


# ---------------------------------------------------------------- --max-cost counts the stored rows of this run's samples only
def test_max_cost_counts_stored_spending_of_the_samples_in_this_run_only(tmp_path):
    """A first run stores s0..s7 at 0.01 USD each (0.08 in all). A second run of s0, s1 and four new
    samples with --max-cost 0.035 counts 0.02 spent on 2 done (the other six stored rows are not
    this run's), so by hand: room for int(0.015 / 0.01) = 1 request (s8: 0.03 on 3), then
    int(0.005 / 0.01) = 0: stop. Kills runner.xǁCaseRunnerǁrun__mutmut_37 (every stored row counted)
    and 33-35, 38."""
    store = Store(tmp_path / "s.sqlite")
    first = Scripted(cost=0.01)
    make_runner(first, LastCandidate(), store).run(samples(8))
    assert sum(len(c) for c in first.calls) == 8
    data = samples(12)
    backend = Scripted(cost=0.01)
    result = make_runner(backend, LastCandidate(), store, max_cost=0.035).run(data[:2] + data[8:])
    assert backend.calls == [["s8"]]
    assert result.resumed == 2 and [p.sample_id for p in result.predictions] == ["s0", "s1", "s8"]
    assert result.not_run == 3
    assert result.stopped == ("stopped by --max-cost 0.035 USD after 3 samples "
                              "(spent 0.0300 USD, this run and stored runs of this case)")


def test_stored_rows_without_a_price_count_as_free_toward_max_cost(tmp_path):
    """Rows stored while the model had no price (cost None) spent nothing: a run with a price and
    --max-cost 0.05 over s0, s1 (stored) and four new samples asks all four in one window (0.04 USD)
    and is not stopped. Kills runner.xǁCaseRunnerǁrun__mutmut_36 (`cost_usd or 1.0`: 2 USD "spent")."""
    store = Store(tmp_path / "s.sqlite")
    make_runner(Scripted(cost=None), LastCandidate(), store).run(samples(2))
    data = samples(12)
    backend = Scripted(cost=0.01)
    result = make_runner(backend, LastCandidate(), store, max_cost=0.05).run(data[:2] + data[8:])
    assert backend.calls == [["s8", "s9", "s10", "s11"]]
    assert result.stopped == "" and result.resumed == 2 and len(result.predictions) == 6


# ---------------------------------------------------------------- the case's seconds on a scripted clock
class Clock:
    """time.perf_counter, scripted: it moves only when a backend answers or a resolver resolves."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class TimedBackend(Scripted):
    load_s = 0.5  # model loading, inside the work seconds but not the case's

    def __init__(self, clock: Clock, **kw):
        super().__init__(**kw)
        self.clock = clock

    def answer(self, queries):
        self.clock.now += 1.0
        return super().answer(queries)


class TimedResolver(LastCandidate):
    def __init__(self, clock: Clock | None):
        super().__init__(seconds={"match": 0.125, "nli": 0.25})
        self.clock = clock

    def resolve_many(self, items):
        if self.clock is not None:
            self.clock.now += 0.5
        return super().resolve_many(items)


def test_the_case_seconds_add_each_windows_answer_and_resolution_once(monkeypatch):
    """12 samples in 3 windows; answering a window takes 1 s, resolving it 0.5 s (scripted). Without
    overlap the work is 3 x 1.5 = 4.5 s, the case's 4.5 - 0.5 (loading) = 4.0 s, 12 / 4.0 = 3.0 images/s;
    the resolver's stage seconds are its own per-call figures, 3 x (0.125, 0.25). Pins on a scripted
    clock what tests/test_nli_overlap.py bounds with sleeps: the `elapsed` mutants (`=`, `-=`, `+ t0`
    in _finish and run) and runner.run's wall_s / images_per_s / load_s ones."""
    clock = Clock()
    monkeypatch.setattr(pipeline.time, "perf_counter", clock)
    result = make_runner(TimedBackend(clock), TimedResolver(clock)).run(samples(12))
    assert result.wall_s == 4.0 and result.images_per_s == 3.0
    assert result.stage_seconds == {"match": 0.375, "nli": 0.75}


def test_with_overlap_the_case_seconds_are_the_answers(monkeypatch):
    """The same with --nli-overlap and a resolver that takes no scripted time (it runs in the worker):
    3 x 1 s of answers, 3.0 - 0.5 = 2.5 s for the case, 12 / 2.5 = 4.8 images/s: the `elapsed`
    mutants of _window, exactly."""
    clock = Clock()
    monkeypatch.setattr(pipeline.time, "perf_counter", clock)
    runner = make_runner(TimedBackend(clock), TimedResolver(None), nli_overlap=True)
    assert runner.overlaps()
    result = runner.run(samples(12))
    assert result.wall_s == 2.5 and result.images_per_s == 4.8
    assert result.stage_seconds == {"match": 0.375, "nli": 0.75} and len(result.predictions) == 12


# ---------------------------------------------------------------- images: each read once, a window ahead
class CountingReads:
    """A runner's read_image that counts reads per sample id and signals when `watch` is read."""

    def __init__(self, read, watch: str | None = None):
        import threading

        self.read, self.watch, self.counts, self.lock = read, watch, Counter(), threading.Lock()
        self.seen = threading.Event()

    def __call__(self, s):
        with self.lock:
            self.counts[s.sample_id] += 1
        if s.sample_id == self.watch:
            self.seen.set()
        return self.read(s)


def test_each_image_is_read_once_and_the_next_window_while_this_one_is_answered():
    """12 samples, windows of 4: while the backend answers window 0, window 1's first image (s4) is
    read (a rendezvous: answer 0 waits up to 20 s for it; read after window 0 it would never come in
    time), and no image is read twice. Kills pipeline.xǁ_Loopǁrun__mutmut_31, 34, 56, 58 and
    runner.xǁCaseRunnerǁanswer_batch__mutmut_1 (images read again, or not ahead)."""
    class WaitsForRead(Scripted):
        def answer(self, queries):
            if not self.calls:
                self.read_ahead = reads.seen.wait(20.0)
            return super().answer(queries)

    backend = WaitsForRead()
    runner = make_runner(backend, LastCandidate())
    reads = runner.read_image = CountingReads(runner.read_image, watch="s4")
    result = runner.run(samples(12))
    assert backend.read_ahead is True
    assert reads.counts == Counter({f"s{i}": 1 for i in range(12)}) and len(result.predictions) == 12


def test_under_max_cost_each_image_is_read_once():
    """With --max-cost the next window's size waits for this one's cost, so nothing is read ahead
    for a window that may be trimmed: each image read once (windows 1, then 4: 0.01 on 1 done, room
    for int(0.09 / 0.01) = 9). Kills pipeline.xǁ_Loopǁrun__mutmut_38 (`if ahead or True`: a window
    guessed before the cost was known is read too)."""
    backend = Scripted(cost=0.01)
    runner = make_runner(backend, LastCandidate(), max_cost=0.1)
    reads = runner.read_image = CountingReads(runner.read_image)
    runner.run(samples(6))
    assert backend.calls == [["s0"], ["s1", "s2", "s3", "s4"], ["s5"]]
    assert reads.counts == Counter({f"s{i}": 1 for i in range(6)})


def test_run_batch_uses_the_images_it_is_given():
    """Images handed in (decoded ahead by a caller) are used, not read again: an ImageError given for
    s1 makes its row an error although its bytes decode. Kills runner.xǁCaseRunnerǁrun_batch__mutmut_3, 5."""
    from vlmcls.images import ImageError, decode

    data = samples(3)
    images = [decode(data[0].image), ImageError("given: unreadable"), decode(data[2].image)]
    rows = make_runner(Scripted(), LastCandidate()).run_batch(data, images)
    assert [p.stage for p in rows] == ["nli", "error", "nli"] and rows[1].error == "given: unreadable"


def test_images_per_second_only_when_there_are_images_and_seconds():
    """3 images in 1.5 s: 2.0 per second; none without fresh images or without seconds (a fully
    resumed case, a clock that did not move). Kills runner.x__rate__mutmut_2, 4, 5."""
    from vlmcls.runner import _rate

    assert _rate(3, 1.5) == 2.0
    assert _rate(0, 2.0) is None and _rate(3, 0.0) is None and _rate(0, 0.0) is None


def test_one_order_leaves_the_sample_list_itself():
    """K=1: the samples themselves (plain Samples, no order field). Kills runner.x_with_orders__mutmut_1."""
    from vlmcls.runner import with_orders

    data = samples(3)
    assert with_orders(data, 1) is data
    assert [(s.sample_id, s.order) for s in with_orders(data, 2)] == [("s0", 0), ("s0", 1), ("s1", 0), ("s1", 1), ("s2", 0), ("s2", 1)]


def test_decoding_threads_are_the_cpus_up_to_eight(monkeypatch):
    """Kills runner.xǁCaseRunnerǁ__init____mutmut_11, 12, 13 (9 threads on a 16-CPU machine; 1 thread
    whatever the CPUs; 2 when the CPU count is unknown)."""
    from vlmcls import runner as runner_mod

    for cpus, threads in ((16, 8), (3, 3), (None, 1)):
        monkeypatch.setattr(runner_mod.os, "cpu_count", lambda cpus=cpus: cpus)
        assert make_runner(Scripted(), LastCandidate()).decode_workers == threads
    assert CaseRunner(CaseSpec(model=ECHO, ways=20, settings=BackendSettings()), LABELS, Scripted(), LastCandidate(),
                      None, decode_workers=5).decode_workers == 5


def test_the_case_is_registered_in_the_store_under_its_key_with_its_settings(tmp_path):
    """The cases table says what each key was made from (the report reads it). Kills
    runner.xǁCaseRunnerǁrun__mutmut_27, 28 (registered under None, or with no settings)."""
    runner = make_runner(Scripted(), LastCandidate(), Store(tmp_path / "s.sqlite"), seed=7)
    runner.run(samples(2))
    with contextlib.closing(sqlite3.connect(tmp_path / "s.sqlite")) as db:
        ((key, spec),) = db.execute("SELECT case_key, spec FROM cases").fetchall()
    spec = json.loads(spec)
    assert key == runner.key and len(key) == 24
    assert (spec["model"], spec["backend"], spec["ways"], spec["seed"], spec["resolver"]) == ("echo", "echo", 20, 7, "nli")


def test_a_backend_that_decodes_images_itself_gets_the_encoded_bytes(tmp_path):
    """`decodes_images` backends get each sample's image as stored (bytes as given, a file's bytes),
    and a missing file or one that cannot be read (a folder) is that sample's error row. Kills runner.xǁCaseRunnerǁ__init____mutmut_32
    (every backend handed decoded images) and the runner.x__read_one mutants."""
    data = samples(2)
    path = tmp_path / "s2.jpg"
    path.write_bytes(_jpeg("yellow"))
    data += [Sample("s2", 11, str(path)), Sample("s3", 12, str(tmp_path / "missing.jpg")), Sample("s4", 13, str(tmp_path))]

    class Encoded(Scripted):
        decodes_images = True

        def answer(self, queries):
            self.images = {q.sample_id: q.image for q in queries}
            return super().answer(queries)

    backend = Encoded()
    result = make_runner(backend, LastCandidate()).run(data)
    assert backend.images == {"s0": data[0].image, "s1": data[1].image, "s2": path.read_bytes()}
    rows = {p.sample_id: p for p in result.predictions}
    assert rows["s3"].stage == "error" and rows["s3"].error == f"image file not found: {tmp_path / 'missing.jpg'}"
    assert rows["s4"].stage == "error" and rows["s4"].error.startswith("cannot read image file: ")  # a folder
    assert str(tmp_path) in rows["s4"].error


def test_only_labels_first_at_every_class_lists_the_classes_in_class_order():
    """Labels-first at N = all classes: one list for every image (class order, so its KV cache is
    shared); any other case keeps the per-sample shuffle. Kills runner.xǁCaseRunnerǁcandidates__mutmut_12-14."""
    def runner(ways, layout):
        case = CaseSpec(model=ECHO, ways=ways, settings=BackendSettings(layout=layout))
        return CaseRunner(case, LABELS, Scripted(), LastCandidate(), None)

    data = samples(3)
    for s in data:
        assert runner(1000, "labels-first").candidates(s).class_ids == tuple(range(1000))
        full = runner(1000, "image-first").candidates(s).class_ids
        assert sorted(full) == list(range(1000)) and full != tuple(range(1000))
        assert runner(20, "labels-first").candidates(s).class_ids == cand.candidate_set(s.sample_id, s.label, 20, 1000, 0).class_ids
    assert any(list(runner(20, "labels-first").candidates(s).class_ids) != sorted(runner(20, "labels-first").candidates(s).class_ids)
               for s in data)


def test_the_backends_notes_reach_the_case():
    """Kills runner.xǁCaseRunnerǁrun__mutmut_54, 60, 61 (the backend's notes dropped)."""

    class Noted(Scripted):
        notes = ["prefix cache: 3 hits"]

    assert make_runner(Noted(), LastCandidate()).run(samples(2)).notes == ["prefix cache: 3 hits"]


# ================================================================ run 6: the rest of runner.py
# ---------------------------------------------------------------- CaseSpec.__post_init__
def test_a_spec_given_the_older_name_thesis_holds_the_canonical_names():
    """A script may still build a CaseSpec with "thesis" (the study's label mode and resolver before
    they had their own names). Kills runner.xǁCaseSpecǁ__post_init____mutmut_7, 8 (the canonical label
    mode written to another attribute: the spec kept "thesis")."""
    spec = CaseSpec(model=ECHO, ways=20, settings=BackendSettings(), labels_mode="thesis", resolver="thesis")
    assert (spec.labels_mode, spec.resolver) == ("raw", "study")


# ---------------------------------------------------------------- query: the prompt around the image
class Recording(Scripted):
    """Scripted, keeping every query it was asked."""

    def answer(self, queries):
        self.queries = getattr(self, "queries", []) + list(queries)
        return super().answer(queries)


@pytest.mark.parametrize("layout", ["image-first", "labels-first"])
def test_each_query_holds_its_candidates_and_the_prompt_the_layout_asks_for(layout):
    """Image-first: nothing before the image, the whole prompt (the candidates listed) after it.
    Labels-first: the list before the image, only the question after it. Kills
    runner.xǁCaseRunnerǁquery__mutmut_3 (the layouts swapped), 10 (text before the image in image-first),
    25 (the prompt dropped: image-first asked nothing) and 26 (labels-first lost its list)."""
    backend = Recording()
    case = CaseSpec(model=ECHO, ways=20, settings=BackendSettings(layout=layout, batch_size=4))
    CaseRunner(case, LABELS, backend, LastCandidate(), None).run(samples(3))
    template = prompts.get_template(case.prompt)
    assert [q.sample_id for q in backend.queries] == ["s0", "s1", "s2"]
    for q in backend.queries:
        assert q.labels == tuple(LABELS.names[i] for i in q.class_ids) and len(q.labels) == 20
        listed = ", ".join(q.labels)
        if layout == "image-first":
            assert q.prefix == "" and q.prompt == prompts.render(template, q.labels) and listed in q.prompt
        else:
            assert (q.prefix, q.prompt) == prompts.render_split(template, q.labels)
            assert listed in q.prefix and listed not in q.prompt and q.prompt


# ---------------------------------------------------------------- candidates: order k of a sample
@pytest.mark.parametrize("layout, ways, shared", [("image-first", 20, False), ("labels-first", 20, False),
                                                  ("image-first", 1000, False), ("labels-first", 1000, True)])
def test_order_k_lists_order_0s_candidates_in_permutation_k(layout, ways, shared):
    """--orders: order k of a sample is its order-0 list in candidates.order_permutation(id, N, k, seed);
    only labels-first at every class (one list, class order, for the KV cache) shares the permutation
    of the id "" between images, so order k is one list there too. Kills runner.xǁCaseRunnerǁcandidates__mutmut_16-18
    (the class-order set's sample id, N or true class None), 27, 28, 34, 35 (the order never read:
    every order the same list), 37-40, 54, 55 (shared where it is not or not where it is), 46, 49, 56
    (another permutation: None for the id, no seed, "XXXX" for "")."""
    case = CaseSpec(model=ECHO, ways=ways, settings=BackendSettings(layout=layout), seed=3, orders=3)
    runner = CaseRunner(case, LABELS, Scripted(), LastCandidate(), None)
    data = samples(2)
    for s in data:
        base = tuple(range(1000)) if shared else cand.candidate_set(s.sample_id, s.label, ways, 1000, 3).class_ids
        assert runner.candidates(s) == CandidateSet(s.sample_id, ways, s.label, base)
        for k in (1, 2):
            perm = cand.order_permutation("" if shared else s.sample_id, ways, k, 3)
            got = runner.candidates(OrderedSample(s.sample_id, s.label, s.image, k))
            assert got == CandidateSet(s.sample_id, ways, s.label, tuple(base[i] for i in perm))
            assert got.class_ids != base
    order_1 = {runner.candidates(OrderedSample(s.sample_id, s.label, s.image, 1)).class_ids for s in data}
    assert len(order_1) == (1 if shared else 2)


# ---------------------------------------------------------------- run: notes, metrics, order rows
class Compiled(LastCandidate):
    """A resolver whose NLI model went through torch.compile (what the real one's note says is its own)."""

    def compile_note(self) -> str:
        return "--nli-compile: compiled"


def test_nli_compile_is_noted_only_when_the_nli_model_ran():
    """The note says what the compiler did, so it needs NLI seconds in this case: none when every answer
    matched, none without --nli-compile. Kills runner.xǁCaseRunnerǁrun__mutmut_65-67 (the stage looked up
    under None, "XXnliXX", "NLI": never noted) and 68 (None noted)."""
    ran = make_runner(Scripted(), Compiled(seconds={"nli": 0.25}), nli_compile=True).run(samples(2))
    assert ran.notes == ["--nli-compile: compiled"]
    assert make_runner(Scripted(), Compiled(seconds={"match": 0.25}), nli_compile=True).run(samples(2)).notes == []
    assert make_runner(Scripted(), Compiled(seconds={"nli": 0.25})).run(samples(2)).notes == []


def test_a_case_with_no_samples_has_no_metrics():
    """An empty subset is a result with no rows, not a crash in scoring. Kills runner.xǁCaseRunnerǁrun__mutmut_104
    (metrics computed even with no rows: "no predictions to score")."""
    result = make_runner(Scripted(), LastCandidate()).run([])
    assert (result.predictions, result.metrics, result.not_run, result.resumed) == ([], None, 0, 0)


def test_the_metrics_intervals_are_drawn_with_the_cases_seed():
    """The bootstrap's F1 intervals use the case's seed (seeds 3 and 0 give different intervals on these
    rows, half of them right). Kills runner.xǁCaseRunnerǁrun__mutmut_106 (seed None: a fresh draw each
    run) and 108 (the default seed 0)."""
    data = samples(12)
    truth = {s.sample_id: s.label for s in data}

    class HalfRight(LastCandidate):
        def resolve_many(self, items):  # the true class for even samples, another candidate for odd ones
            out = []
            for text, ids in items:
                sid = text.split()[-1]
                wrong = next(i for i in ids if i != truth[sid])
                out.append(Resolution(truth[sid] if int(sid[1:]) % 2 == 0 else wrong, "nli"))
            return out

    result = make_runner(Scripted(), HalfRight(), seed=3).run(data)
    assert result.metrics.accuracy == 0.5
    assert result.metrics == metrics_mod.compute(result.predictions, 3)
    assert metrics_mod.compute(result.predictions, 0).f1_ci != result.metrics.f1_ci


def test_with_two_orders_the_case_keeps_the_rows_of_both():
    """K=2: `order_rows` holds both orders of each image, `predictions` order 0; K=1 keeps no order rows.
    Kills runner.xǁCaseRunnerǁrun__mutmut_139 (`orders > 2`: K=2 lost its order-1 rows)."""
    result = make_runner(Scripted(), LastCandidate(), orders=2).run(samples(3))
    assert [(p.sample_id, p.order) for p in result.order_rows] == [(f"s{i}", k) for i in range(3) for k in (0, 1)]
    assert [(p.sample_id, p.order) for p in result.predictions] == [("s0", 0), ("s1", 0), ("s2", 0)]
    assert make_runner(Scripted(), LastCandidate()).run(samples(3)).order_rows == []
