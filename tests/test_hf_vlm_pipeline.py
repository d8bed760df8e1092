"""How the hf-vlm backend feeds the model: batches prepared in a background thread while the previous one
generates, length-ordered batches with answers in query order, the image processor on the model's device,
the label-list prefix tokenized once, and --batch-size auto. Tiny random Qwen2-VL / LLaVA-NeXT models."""
from __future__ import annotations

import threading
import time

import pytest

from vlmcls.settings import BackendSettings
from vlmcls.types import Query

pytest.importorskip("torch")
pytest.importorskip("transformers")

from vlmcls.backends import autobatch, hf_vlm  # noqa: E402

from test_hf_vlm import _record  # noqa: E402
from vlm_inputs import LABELS, NAMES, one_torch_thread  # noqa: E402
from vlm_inputs import queries as _queries  # noqa: E402

pytestmark = pytest.mark.slow
one_thread = pytest.fixture(scope="module", autouse=True)(one_torch_thread)


@pytest.fixture(scope="module")
def qwen(smoke_model):
    from vlmcls.catalog import load_catalog

    smoke_model("qwen2-vl")
    return load_catalog()["smoke-qwen2-vl"]


def _load(entry, **settings):
    settings.setdefault("max_new_tokens", 4)
    settings.setdefault("device", "cpu")  # these tests compare code paths; CUDA speed is gpu_check.sh's
    return hf_vlm.load(entry, BackendSettings(**settings), LABELS)


class SlowProcessor:
    """The real processor behind a delay, recording when each call starts and ends."""

    def __init__(self, inner, events: list, delay: float) -> None:
        self.inner, self.events, self.delay = inner, events, delay

    def __call__(self, *args, **kwargs):
        self.events.append(("prepare", "start", time.perf_counter(), threading.current_thread().name))
        time.sleep(self.delay)
        out = self.inner(*args, **kwargs)
        self.events.append(("prepare", "end", time.perf_counter(), threading.current_thread().name))
        return out

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _slow_generate(backend, events: list, delay: float) -> None:
    generate = backend.model.generate

    def slow(**kwargs):
        events.append(("generate", "start", time.perf_counter(), threading.current_thread().name))
        time.sleep(delay)
        out = generate(**kwargs)
        events.append(("generate", "end", time.perf_counter(), threading.current_thread().name))
        return out

    backend.model.generate = slow


def _times(events, kind, edge) -> list[float]:
    return [t for k, e, t, _ in events if k == kind and e == edge]


def test_next_batch_is_prepared_while_this_one_generates(qwen):
    queries = _queries(8)
    events: list = []
    backend = _load(qwen, batch_size=2)
    backend.processor = SlowProcessor(backend.processor, events, delay=0.3)
    _slow_generate(backend, events, delay=0.3)
    t0 = time.perf_counter()
    answers = backend.answer(queries)
    wall = time.perf_counter() - t0
    assert all(a.error is None for a in answers)
    prep_start, gen_start, gen_end = (_times(events, "prepare", "start"), _times(events, "generate", "start"),
                                      _times(events, "generate", "end"))
    assert len(prep_start) == len(gen_start) == 4
    # batch k+1's preparation begins before batch k's generation ends, for every k: they overlap
    assert all(prep_start[k + 1] < gen_end[k] for k in range(3)), events
    # ... in another thread than generation
    assert {n for k, _, _, n in events if k == "prepare"}.isdisjoint({n for k, _, _, n in events if k == "generate"})
    # for the record (not a speed goal): serial would take 4 x (0.3 + 0.3) s plus the model's time
    print(f"wall {wall:.2f} s for 4 batches of 0.3 s preparation + 0.3 s generation")


def test_prefetch_changes_no_answer_and_keeps_query_order(qwen):
    # labels of different lengths, interleaved: length ordering regroups them, answers come back in order
    queries = [q for i in range(3) for q in (_queries(1, ways=9, seed=i) + _queries(1, ways=3, seed=10 + i))]
    queries = [Query(f"q{i}", q.image, q.class_ids, q.labels, q.prompt) for i, q in enumerate(queries)]
    one = _load(qwen, batch_size=1)
    rows_one = _record(one)
    plain = one.answer(queries)
    batched = _load(qwen, batch_size=3)
    seen = []
    prepare = batched._prepare
    batched._prepare = lambda batch: seen.append([len(q.labels) for q in batch]) or prepare(batch)
    rows_by_batch = _record(batched)
    answers = batched.answer(queries)
    assert [a.text for a in answers] == [a.text for a in plain]
    assert sorted(map(tuple, rows_by_batch)) == sorted(map(tuple, rows_one))
    assert sorted(seen) == [[3, 3, 3], [9, 9, 9]], "batches group prompts of similar length"
    # option prefetch 0 (each batch prepared just before it generates): the same answers
    assert [a.text for a in _load(qwen, batch_size=3, extra={"prefetch": 0}).answer(queries)] == [a.text for a in plain]


def test_prefetch_0_prepares_each_batch_only_after_the_last_one_generated(qwen):
    """Nothing is prepared beside generate: for a host-bound generate the two would share the GIL."""
    events: list = []
    backend = _load(qwen, batch_size=2, extra={"prefetch": 0})
    backend.processor = SlowProcessor(backend.processor, events, delay=0.05)
    _slow_generate(backend, events, delay=0.05)
    assert all(a.error is None for a in backend.answer(_queries(6)))
    prep_start, gen_start, gen_end = (_times(events, "prepare", "start"), _times(events, "generate", "start"),
                                      _times(events, "generate", "end"))
    assert len(prep_start) == len(gen_start) == 3
    assert all(gen_end[k] <= prep_start[k + 1] for k in range(2)), events
    with pytest.raises(ValueError, match="option prefetch must be 0 or more batches, got -1"):
        _load(qwen, batch_size=2, extra={"prefetch": -1})


def _workers(backend) -> list:
    """The `worker` (preparing process id) of each batch the backend generates."""
    seen: list = []
    answer_prepared = backend._answer_prepared
    backend._answer_prepared = lambda batch, prep: seen.append(prep.worker) or answer_prepared(batch, prep)
    return seen


@pytest.mark.parametrize("layout", ["image-first", "labels-first"])
def test_prefetch_process_prepares_elsewhere_and_changes_no_answer(qwen, layout):
    """Option prefetch_process: every batch prepared in one spawned process (not this one), the same
    answers and token counts as the thread's, a bad image still one error row, the process gone at close."""
    import os

    from PIL import Image

    queries = _queries(6, labels_first=layout == "labels-first")
    bad = Query("bad", Image.new("RGB", (600, 2)), queries[0].class_ids, queries[0].labels, queries[0].prompt,
                queries[0].prefix)
    queries = queries[:3] + [bad] + queries[3:]
    thread = _load(qwen, batch_size=2, layout=layout).answer(queries)
    backend = _load(qwen, batch_size=2, layout=layout, extra={"prefetch_process": True})
    workers = _workers(backend)
    answers = backend.answer(queries)
    assert [(a.text, a.prompt_tokens, a.error) for a in answers] == [(a.text, a.prompt_tokens, a.error) for a in thread]
    assert answers[3].error and "aspect ratio" in answers[3].error
    # 4 batches prepared by one other process; the one with the bad image failed there as a whole, and its
    # two images were then prepared one at a time here (None), as in the thread
    assert len(workers) == 6 and workers.count(None) == 2 and len(set(workers) - {None}) == 1
    assert os.getpid() not in workers
    pool = backend._pool
    backend.close()
    assert backend._pool is None
    with pytest.raises(RuntimeError, match="after shutdown"):  # the process pool was shut down
        pool.submit(print)


def test_prefetch_process_that_cannot_take_a_batch_falls_back_to_the_thread_and_says_so(qwen):
    """A query the process cannot receive (here: of a class defined in this function, which pickle cannot
    name) is prepared here instead; the rest of the run uses the thread; the answers are unchanged."""
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class LocalQuery(Query):
        pass

    queries = [LocalQuery(**q.__dict__) for q in _queries(4)]
    expected = [a.text for a in _load(qwen, batch_size=2).answer(queries)]
    backend = _load(qwen, batch_size=2, extra={"prefetch_process": True})
    assert [a.text for a in backend.answer(queries)] == expected
    [note] = [n for n in backend.notes if n.startswith("prefetch_process: the preparing process failed (")]
    assert note.endswith("); batches were prepared in a thread instead") and "\n" not in note
    assert "LocalQuery" in note  # why: the first batch's query could not be pickled (the later ones: cancelled)
    assert backend.prefetch_process is False and backend._pool is None


def test_a_bad_image_is_still_one_error_row_with_prefetch(qwen):
    from PIL import Image

    queries = _queries(6)
    bad = Query("bad", Image.new("RGB", (600, 2)), queries[0].class_ids, queries[0].labels, queries[0].prompt)
    answers = _load(qwen, batch_size=2).answer(queries[:3] + [bad] + queries[3:])
    assert [a.error is None for a in answers] == [True, True, True, False, True, True, True]
    assert "aspect ratio" in answers[3].error


def test_image_processor_is_torchvision_on_the_model_device(qwen):
    pytest.importorskip("torchvision")
    from transformers import Qwen2VLProcessor

    from vlmcls import perf
    from vlmcls.smoke.vlm import qwen_processor, qwen_tokenizer

    backend = _load(qwen)
    assert backend.processor.image_processor.backend == "torchvision"
    assert backend._image_kwargs() == {"images_kwargs": {"device": "cpu"}}
    bounded = _load(qwen, extra={"max_pixels": 28 * 28})._image_kwargs()["images_kwargs"]
    assert bounded["device"] == "cpu" and bounded["size"]["longest_edge"] == 28 * 28
    # the full-size model of vlmcls.perf is built with the same processor class as the smoke checkpoints
    built = qwen_processor(Qwen2VLProcessor, qwen_tokenizer(), template=perf.SYSTEM)
    assert built.image_processor.backend == "torchvision"


def test_label_prefix_is_tokenized_once_and_not_sent_again(qwen):
    queries = _queries(6, labels_first=True)
    backend = _load(qwen, batch_size=2, layout="labels-first")
    texts: list = []

    class Spy(SlowProcessor):
        def __call__(self, *args, text=None, **kwargs):
            texts.extend(text)
            return super().__call__(*args, text=text, **kwargs)

    backend.processor = Spy(backend.processor, [], delay=0)
    splits = []
    prefix_ids = backend._prefix_ids
    backend._prefix_ids = lambda *a: splits.append(a[0]) or prefix_ids(*a)
    answers = backend.answer(queries)
    assert all(a.error is None for a in answers) and backend.notes == []
    assert len(splits) == 1, "the prefix is tokenized once per case"
    assert len(texts) == 6 and not any(", ".join(NAMES) in t for t in texts), "the label list is not re-tokenized"
    assert all(a.prompt_tokens > len(", ".join(NAMES)) for a in answers), "prompt tokens still count the prefix"


def test_batch_size_auto_learns_from_the_first_batch(qwen, monkeypatch):
    assert not _load(qwen).auto and _load(qwen).batch_size == 8  # CPU default: 8, as before
    on_cpu = _load(qwen, batch_auto=True)  # asked for on the CPU: it cannot measure there, and says so
    assert on_cpu.batch_size == autobatch.AUTO_FIRST
    assert on_cpu.notes == [f"batch size auto: sized from CUDA memory, so on cpu every batch is {autobatch.AUTO_FIRST}"]
    mib = 2**20

    def memory(device, reset_peak=False):  # a GPU where 8 images peak at 100 MiB each over 1000 MiB of weights
        return dict(allocated=1000 * mib, peak=(1000 + 8 * 100) * mib, reserved=0, free=3000 * mib)

    monkeypatch.setattr(autobatch, "_is_cuda", lambda device: True)
    monkeypatch.setattr(autobatch, "_gpu_memory", memory)
    backend = _load(qwen, batch_auto=True)
    assert backend.auto and backend.batch_size == autobatch.AUTO_FIRST
    sizes = []
    generate = backend._generate
    backend._generate = lambda batch, prep: sizes.append(len(batch)) or generate(batch, prep)
    answers = backend.answer(_queries(8 + 2 * 24 + 3))
    assert all(a.error is None for a in answers)
    expected = int(autobatch.AUTO_HEADROOM * (3000 - 1000) / 100)  # of the memory not held by the weights
    assert sizes[:3] == [8, 8, 8]  # cut before the first one had run (prefetch)
    assert set(sizes[3:-1]) == {expected} and sum(sizes) == len(answers)
    assert backend.notes == [f"batch size auto: {expected} at 5-way (100 MiB per image at batch 8)"]
    assert backend.window == expected * hf_vlm.WINDOW_BATCHES


def test_runner_hands_a_prefetching_backend_several_batches():
    from vlmcls.catalog import ModelEntry
    from vlmcls.runner import CaseRunner, CaseSpec

    class Backend:
        window = 96

    spec = CaseSpec(model=ModelEntry(name="m", backend="hf-vlm", weights="x"), ways=2,
                    settings=BackendSettings(batch_size=8))
    assert CaseRunner(spec, LABELS, Backend(), resolver=None, store=None).batch_size() == 96
    assert CaseRunner(spec, LABELS, object(), resolver=None, store=None).batch_size() == 8


def test_batch_size_option_takes_auto():
    import argparse

    from vlmcls import options

    assert options.batch_size("auto") == "auto" and options.batch_size("16") == 16
    with pytest.raises(argparse.ArgumentTypeError):
        options.batch_size("0")
    for given, (size, auto) in (("auto", (None, True)), (16, (16, False)), (None, (None, None))):
        opt = argparse.Namespace(quant=None, dtype=None, device=None, batch_size=given, max_new_tokens=None,
                                 layout=None, concurrency=None, max_image_side=None, base_url=None,
                                 resolver="thesis", trust_remote_code=False)
        got = options.cli_settings(opt)
        assert (got["batch_size"], got["batch_auto"]) == (size, auto)
