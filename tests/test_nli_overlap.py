"""--nli-overlap: window k's resolution runs in a thread while the backend answers window k+1.

The overlap is proven by a rendezvous, not by timing: the backend answering window k+1 and the
resolver resolving window k each wait for the other to have started, which only completes when
both run at once (serially, each wait would time out and the test fail). The rows, their order
in the store, FAIL_FAST, --max-cost and a resolver's exception are the same as without overlap.
"""
from __future__ import annotations

import io
import threading
import time
from collections import Counter
from dataclasses import asdict

import pytest
from PIL import Image

from answers import imagenet_labels
from test_plan import entry as plan_entry
from test_plan import options
from vlmcls import backends, pipeline, plan
from vlmcls.catalog import ModelEntry, load_catalog
from vlmcls.resolve import Resolver
from vlmcls.runner import FAIL_FAST, OVERLAP_NOTE, CaseRunner, CaseSpec
from vlmcls.settings import BackendSettings, resolve_settings
from vlmcls.store import Store
from vlmcls.types import Answer, Resolution, Sample

LABELS = imagenet_labels()
ECHO = ModelEntry(name="echo", backend="echo", weights="smoke:echo", smoke=True)
WAIT_S = 20.0  # a rendezvous that does not happen within this fails the test (it never should)


def _jpeg(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), color).save(buf, "JPEG")
    return buf.getvalue()


def samples(n: int) -> list[Sample]:
    return [Sample(f"s{i}", (i * 37) % 1000, _jpeg((i * 40 % 255, 80, 160))) for i in range(n)]


class Log:
    """(what, window, "start" | "end") events in the order they happened, from every thread."""

    def __init__(self):
        self.events: list[tuple[str, int, str]] = []
        self.lock = threading.Lock()

    def __call__(self, what: str, k: int, edge: str) -> None:
        with self.lock:
            self.events.append((what, k, edge))

    def at(self, what: str, k: int, edge: str) -> int:
        return self.events.index((what, k, edge))


class Meet:
    """Rendezvous between answering window k+1 and resolving window k (each `arrive`s, then `await`s the other)."""

    def __init__(self):
        self.events: dict[tuple[str, int], threading.Event] = {}
        self.lock = threading.Lock()
        self.missed: list[tuple[str, int]] = []

    def _event(self, what: str, k: int) -> threading.Event:
        with self.lock:
            return self.events.setdefault((what, k), threading.Event())

    def arrive(self, what: str, k: int) -> None:
        self._event(what, k).set()

    def wait_for(self, what: str, k: int) -> None:
        if not self._event(what, k).wait(WAIT_S):
            self.missed.append((what, k))


class SlowBackend:
    """Answers a window at a time with text that names no candidate (so every answer is resolved);
    with `meet`, window k+1 waits until window k's resolution has started."""

    kind = "text"

    def __init__(self, log: Log, window: int = 4, meet: Meet | None = None, cost: float | None = None,
                 fail: bool = False):
        self.log, self.window, self.meet, self.cost, self.fail = log, window, meet, cost, fail
        self.calls: list[int] = []  # queries per call

    def answer(self, queries):
        k = len(self.calls)
        self.calls.append(len(queries))
        self.log("answer", k, "start")
        if self.meet is not None and k > 0:
            self.meet.arrive("answer", k)
            self.meet.wait_for("resolve", k - 1)
        self.log("answer", k, "end")
        if self.fail:
            return [Answer(error="connection refused") for _ in queries]
        return [Answer(text=f"something unclear {q.sample_id}", latency_s=0.01, cost_usd=self.cost) for q in queries]

    def close(self):
        pass


class SlowResolver:
    """Resolves to the last candidate; adds fixed seconds per call to `stage_seconds` (as the real
    resolver measures them), and records how many calls ran at once."""

    mode, device = "nli", "cpu"

    def __init__(self, log: Log, meet: Meet | None = None, fail_on: int | None = None, windows: int = 0):
        self.log, self.meet, self.fail_on, self.windows = log, meet, fail_on, windows
        self.stage_seconds: Counter[str] = Counter()
        self.calls = self.running = self.most_at_once = 0
        self.lock = threading.Lock()
        self.threads: set[str] = set()

    def resolve_many(self, items):
        with self.lock:
            k, self.calls = self.calls, self.calls + 1
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        self.threads.add(threading.current_thread().name)
        self.log("resolve", k, "start")
        try:
            if self.meet is not None and k + 1 < self.windows:  # the last window has no next one to meet
                self.meet.arrive("resolve", k)
                self.meet.wait_for("answer", k + 1)
            if k == self.fail_on:
                raise RuntimeError(f"NLI exploded on window {k}")
            self.stage_seconds.update({"match": 0.25, "nli": 1.0})
            return [Resolution(ids[-1], "nli") for _, ids in items]
        finally:
            self.log("resolve", k, "end")
            with self.lock:
                self.running -= 1


class RecordingStore(Store):
    """A real store that also remembers the sample ids of each put, in order."""

    def __init__(self, path):
        super().__init__(path)
        self.puts: list[list[str]] = []

    def put(self, key, preds, now):
        preds = list(preds)
        self.puts.append([p.sample_id for p in preds])
        super().put(key, preds, now)


def fake_runner(backend, resolver, store=None, overlap=True, mode="nli", progress=None, **spec) -> CaseRunner:
    case = CaseSpec(model=ECHO, ways=20, settings=BackendSettings(batch_size=4), resolver=mode, nli_overlap=overlap, **spec)
    return CaseRunner(case, LABELS, backend, resolver, store, progress)


def without_latency(preds) -> list[dict]:
    return [{k: v for k, v in asdict(p).items() if k != "latency_s"} for p in preds]


# ------------------------------------------------------------------ the overlap itself

def test_resolving_window_k_overlaps_answering_window_k_plus_1(tmp_path):
    log, meet = Log(), Meet()
    backend, resolver = SlowBackend(log, meet=meet), SlowResolver(log, meet=meet, windows=4)
    store = RecordingStore(tmp_path / "s.sqlite")
    result = fake_runner(backend, resolver, store).run(samples(16))
    assert backend.calls == [4, 4, 4, 4] and resolver.calls == 4
    assert meet.missed == []  # every rendezvous happened: resolve k and answer k+1 ran at the same time
    for k in range(3):
        assert log.at("resolve", k, "start") < log.at("answer", k + 1, "end")
        assert log.at("answer", k + 1, "start") < log.at("resolve", k, "end")
    # bounded: one resolution at a time, each after the previous one, in a thread that is not the caller's
    assert resolver.most_at_once == 1
    assert all(log.at("resolve", k, "end") < log.at("resolve", k + 1, "start") for k in range(3))
    assert threading.current_thread().name not in resolver.threads
    assert store.puts == [[f"s{i}" for i in range(j, j + 4)] for j in range(0, 16, 4)]
    assert [p.sample_id for p in result.predictions] == [f"s{i}" for i in range(16)]
    assert OVERLAP_NOTE in result.notes and result.stopped == ""
    # this case's resolver seconds: what the resolver counted, every window once
    assert result.stage_seconds == {"match": 1.0, "nli": 4.0}


def test_without_overlap_each_window_is_resolved_before_the_next_is_answered(tmp_path):
    log = Log()
    backend, resolver = SlowBackend(log), SlowResolver(log)
    result = fake_runner(backend, resolver, overlap=False).run(samples(12))
    assert all(log.at("resolve", k, "end") < log.at("answer", k + 1, "start") for k in range(2))
    assert resolver.threads == {threading.current_thread().name}
    assert OVERLAP_NOTE not in result.notes and result.stage_seconds == {"match": 0.75, "nli": 3.0}


@pytest.mark.parametrize("overlap", [False, True])
def test_a_resolver_exception_propagates_and_earlier_windows_stay_stored(tmp_path, overlap):
    log = Log()
    store = RecordingStore(tmp_path / "s.sqlite")
    runner = fake_runner(SlowBackend(log), SlowResolver(log, fail_on=1), store, overlap=overlap)
    with pytest.raises(RuntimeError, match="NLI exploded on window 1"):
        runner.run(samples(16))
    assert store.puts == [["s0", "s1", "s2", "s3"]]  # window 0 stored; window 1 failed; nothing after it
    assert sorted(store.get(runner.key)) == ["s0", "s1", "s2", "s3"]


@pytest.mark.parametrize("overlap", [False, True])
def test_a_backend_exception_still_lets_the_window_in_flight_be_stored(tmp_path, overlap):
    class Breaks(SlowBackend):
        def answer(self, queries):
            if len(self.calls) == 2:
                raise ConnectionError("server went away")
            return super().answer(queries)

    log = Log()
    store = RecordingStore(tmp_path / "s.sqlite")
    with pytest.raises(ConnectionError, match="went away"):
        fake_runner(Breaks(log), SlowResolver(log), store, overlap=overlap).run(samples(16))
    assert store.puts == [["s0", "s1", "s2", "s3"], ["s4", "s5", "s6", "s7"]]


def test_fail_fast_stops_at_the_same_window_with_overlap(tmp_path):
    runs = {}
    for overlap in (False, True):
        log = Log()
        backend = SlowBackend(log, fail=True)
        store = RecordingStore(tmp_path / f"{overlap}.sqlite")
        result = fake_runner(backend, SlowResolver(log), store, overlap=overlap).run(samples(24))
        runs[overlap] = (backend.calls, store.puts, result.stopped, without_latency(result.predictions))
    assert runs[True] == runs[False]
    calls, puts, stopped, preds = runs[True]
    assert calls == [4, 4] and len(preds) == FAIL_FAST  # no window answered past the stop
    assert stopped.startswith(f"stopped after the first {FAIL_FAST} samples all failed")


def test_max_cost_runs_do_not_overlap(tmp_path):
    runs = {}
    for overlap in (False, True):
        log = Log()
        backend, resolver = SlowBackend(log, cost=0.01), SlowResolver(log)
        runner = fake_runner(backend, resolver, overlap=overlap, max_cost=0.095)
        assert not runner.overlaps()
        result = runner.run(samples(16))
        runs[overlap] = (backend.calls, log.events, result.stopped, without_latency(result.predictions), result.notes)
        assert resolver.threads == {threading.current_thread().name}
    # the same run, except that the one asked for --nli-overlap says it was not applied, and why
    assert runs[True][:4] == runs[False][:4] and runs[False][4] == []
    calls, _, stopped, preds, notes = runs[True]
    assert calls == [1, 4, 4] and len(preds) == 9
    assert stopped == "stopped by --max-cost 0.095 USD after 9 samples (spent 0.0900 USD, this run and stored runs of this case)"
    assert OVERLAP_NOTE not in notes
    assert notes == ["--nli-overlap: not applied: --max-cost sizes each window from the cost of the ones before, "
                     "so windows run one after another"]


@pytest.mark.parametrize("overlap", [False, True])
def test_progress_counts_stored_and_fresh_samples_window_by_window(tmp_path, overlap):
    store, seen = Store(tmp_path / "s.sqlite"), []
    fake_runner(SlowBackend(Log()), SlowResolver(Log()), store, overlap=overlap,
                progress=lambda done, total: seen.append((done, total))).run(samples(4))
    assert seen == [(0, 4), (4, 4)]
    seen.clear()  # the same case again, 8 samples more: the first 4 come from the store
    fake_runner(SlowBackend(Log()), SlowResolver(Log()), store, overlap=overlap,
                progress=lambda done, total: seen.append((done, total))).run(samples(12))
    assert seen == [(4, 12), (8, 12), (12, 12)]


@pytest.mark.parametrize("overlap", [False, True])
def test_the_case_seconds_count_every_window_once(overlap):
    """The work seconds (images/s) hold each window's answer time once, and its resolution time when it
    is not overlapped: at least the sleeps, at most the wall time of the whole call (an invariant, not a
    speed goal)."""
    class Sleepy(SlowBackend):
        def answer(self, queries):
            time.sleep(0.05)  # sleeps at least this long
            return super().answer(queries)

    class SleepyResolver(SlowResolver):
        def resolve_many(self, items):
            time.sleep(0.05)
            return super().resolve_many(items)

    t0 = time.perf_counter()
    result = fake_runner(Sleepy(Log()), SleepyResolver(Log()), overlap=overlap).run(samples(16))
    wall = time.perf_counter() - t0
    assert (4 * 0.05 if overlap else 4 * (0.05 + 0.05)) <= result.wall_s <= wall
    assert result.images_per_s == pytest.approx(16 / result.wall_s)


@pytest.mark.parametrize("overlap", [False, True])
def test_fail_fast_names_the_first_error_cut_to_200_characters(overlap):
    class Refused(SlowBackend):
        def answer(self, queries):
            super().answer(queries)
            return [Answer(error=f"{q.sample_id}: " + "x" * 250) for q in queries]

    result = fake_runner(Refused(Log()), SlowResolver(Log()), overlap=overlap).run(samples(24))
    assert result.stopped == f"stopped after the first {FAIL_FAST} samples all failed (e.g. s0: {'x' * 196})"


def test_failed_requests_cost_nothing_toward_max_cost():
    class HalfFail(SlowBackend):
        def answer(self, queries):
            ok = super().answer(queries)
            return [a if int(q.sample_id[1:]) % 2 == 0 else Answer(error="HTTP 500") for q, a in zip(queries, ok)]

    backend = HalfFail(Log(), cost=0.01)
    result = fake_runner(backend, SlowResolver(Log()), overlap=False, max_cost=0.095).run(samples(16))
    # spent/done after each batch: 0.01/1 -> 4 more (room for 8); 0.03/5 -> 4 (10); 0.05/9 -> 4 (8);
    # 0.07/13 -> the last 3 (room for 4): the 8 failures added nothing, the 8 answers 0.08 < 0.095
    assert backend.calls == [1, 4, 4, 4, 3] and len(result.predictions) == 16 and result.stopped == ""


@pytest.mark.parametrize("mode, overlaps", [("nli", True), ("study", True), ("thesis", True), ("exact", False),
                                            ("constrained", False), ("rank", False)])
def test_only_resolvers_with_a_model_overlap(mode, overlaps):
    assert fake_runner(SlowBackend(Log()), SlowResolver(Log()), mode=mode).overlaps() is overlaps
    assert fake_runner(SlowBackend(Log()), SlowResolver(Log()), mode=mode, overlap=False).overlaps() is False


def test_direct_backends_have_nothing_to_overlap():
    clip = load_catalog()["smoke-clip"]
    case = CaseSpec(model=clip, ways=20, settings=BackendSettings(), resolver="study", nli_overlap=True)
    assert not CaseRunner(case, LABELS, None, None, None).overlaps()


def test_no_nli_stream_off_the_gpu():
    assert pipeline._nli_stream(SlowResolver(Log())) is None


# ------------------------------------------------------------------ the option

def test_the_option_is_off_unless_given_and_stays_out_of_the_store_key():
    assert options().nli_overlap is False and options("--nli-overlap").nli_overlap is True
    e = plan_entry()
    on, off = plan.spec(e, 20, options("--nli-overlap")), plan.spec(e, 20, options())
    assert on.nli_overlap and not off.nli_overlap
    assert on.key_fields() == off.key_fields()  # speed only: stored rows are reused either way


# ------------------------------------------------------------------ a real run: smoke VLM + tiny NLI

@pytest.fixture(scope="module")
def smoke_vlm(smoke_model):
    smoke_model("bart-mnli")
    entry = load_catalog()["smoke-qwen2-vl"]
    settings = resolve_settings({"device": "cpu", "batch_size": 2, "batch_auto": False}, entry.defaults())
    backend = backends.load(entry, settings, LABELS)
    yield entry, settings, backend
    backend.close()


def test_a_real_run_stores_the_same_rows_in_the_same_order(smoke_vlm, tmp_path):
    entry, settings, backend = smoke_vlm
    items = samples(19) + [Sample("bad", 5, str(tmp_path / "missing.jpg"))]  # an error row, the same in both
    runs = {}
    for overlap in (False, True):
        case = CaseSpec(model=entry, ways=20, settings=settings, resolver="study", nli_model="smoke:bart-mnli",
                        nli_overlap=overlap)
        store = RecordingStore(tmp_path / f"{overlap}.sqlite")
        resolver = Resolver("study", LABELS, nli_model="smoke:bart-mnli", device="cpu")
        runner = CaseRunner(case, LABELS, backend, resolver, store)
        result = runner.run(items)
        stored = [asdict(store.get(runner.key)[p.sample_id]) for p in result.predictions]
        runs[overlap] = dict(preds=without_latency(result.predictions), puts=store.puts,
                             stored=[{k: v for k, v in row.items() if k != "latency_s"} for row in stored],
                             stages=set(result.stage_seconds), shares=result.stage_shares(), notes=result.notes)
    on, off = runs[True], runs[False]
    assert len(on["puts"]) == 3 and on["puts"][0] == [f"s{i}" for i in range(8)]  # windows of 4 batches of 2
    assert on["preds"] == off["preds"] and on["puts"] == off["puts"] and on["stored"] == off["stored"]
    assert on["shares"] == off["shares"] and on["shares"].get("nli", 0) > 0 and on["shares"]["error"] == 0.05
    assert on["stages"] == off["stages"] == {"match", "nli"}
    assert OVERLAP_NOTE in on["notes"] and OVERLAP_NOTE not in off["notes"]

