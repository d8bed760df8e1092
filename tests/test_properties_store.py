"""Properties of the result store that protect published numbers and paid answers.

1. Every setting that can change an answer separates the stored rows; every setting that cannot
   (speed, the device index, the subset size, --refresh, --max-cost) shares them. The lists of
   settings are read from the dataclasses themselves, so a field added without a decision here
   fails `test_every_field_has_a_store_key_decision`.
2. The last row written for a sample wins: a retried error row that later succeeds, or a --refresh
   row, replaces the stored one (in the store, and through the runner).
"""
from __future__ import annotations

import dataclasses
import io
import random

import pytest
from PIL import Image

from vlmcls import backends, prompts
from vlmcls.catalog import ModelEntry
from vlmcls.labels import imagenet_labelset
from vlmcls.resolve import Resolver
from vlmcls.runner import CaseRunner, CaseSpec
from vlmcls.settings import BackendSettings, resolve_settings
from vlmcls.store import Store, case_key
from vlmcls.types import Answer, Prediction, Sample

LABELS = imagenet_labelset()
BACKENDS = tuple(backends.REGISTRY)  # every registered backend, so a new one is covered at once
LOCAL = ("hf-vlm", "clip", "classifier")
NO_GENERATION = ("clip", "classifier")

# ---------------------------------------------------------------- the decisions, one per field
# CaseSpec: value -> another value that must (KEY) or must not (NOT_KEY) separate stored rows.
SPEC_KEY = {"ways": 10, "dataset": "another-dataset", "seed": 1, "prompt": "label-only",
            "labels_mode": "raw", "resolver": "exact", "nli_model": "other/nli-model",
            "label_digest": "0123456789abcdef"}  # an own dataset's class names (a renamed folder is asked again)
SPEC_NOT_KEY = {"samples": 7, "max_cost": 1.0, "refresh": True, "nli_overlap": True, "nli_compile": True,
                "prompt_id": "label-only"}  # a sweep's case-id part: the prompt's text is the key, not its id
# orders: K candidate orders per image; not in the case key, each row carries its order index
# (store.row_key), so a K=3 run reuses the order-0 rows of a K=1 run (tests/test_orders.py)
SPEC_PER_ROW = {"orders"}
SPEC_COMPOSITE = {"model", "settings"}  # decided field by field below

# BackendSettings: base values are chosen so that each alternative differs.
BASE_SETTINGS = BackendSettings(device="cuda:0", base_url="http://a/v1")
SETTINGS_KEY = {"quant": "int8", "dtype": "float16", "max_new_tokens": 5, "layout": "labels-first",
                "constrained": True, "max_image_side": 512, "base_url": "http://b/v1",
                "trust_remote_code": True, "extra": {"min_pixels": 3136}, "rank": True}
SETTINGS_NOT_KEY = {"batch_size": 1, "batch_auto": True, "concurrency": 1, "timeout_s": 5.0, "max_retries": 0,
                    "device": "cuda:1"}  # the device index: cuda:0 and cuda:1 give the same answers

# ModelEntry: name, backend, weights are the key; quant, dtype, options and trust_remote_code
# reach it through the resolved settings; the rest describe the case, not its answers.
ENTRY_KEY = {"name": "other-name", "weights": "other/weights"}  # "backend": varied over BACKENDS
ENTRY_VIA_SETTINGS = {"quant": "nf4", "dtype": "bfloat16", "options": {"max_new_tokens": 7},
                      "trust_remote_code": True}
# price changes the recorded cost, not the answer: a new price must not pay for the answers again
# (study and top1 are published figures to compare with; any stand-in value shows they stay out)
ENTRY_NOT_KEY = {"reference": {10: 0.5}, "thresholds": {10: 0.4}, "price": (1.0, 2.0), "samples": 9,
                 "smoke": True, "study": ("a study row",), "top1": 0.76, "weights_problem": "folder not found: w"}


def separates_setting(backend: str, name: str, entry: ModelEntry) -> bool:
    """Whether changing settings.<name> can change an answer of this backend."""
    if name in SETTINGS_NOT_KEY:
        return False
    if name == "base_url":  # the served model behind the URL answers; other APIs have one endpoint
        return backend == "openai-compatible"
    if name in ("quant", "layout", "constrained", "max_new_tokens", "max_image_side"):
        return backend not in NO_GENERATION  # scoring baselines generate nothing
    if name == "trust_remote_code":  # remote code runs only when the entry and the user both allow it
        return entry.trust_remote_code
    return True


def entry(backend: str = "echo", **kw) -> ModelEntry:
    return ModelEntry(**{"name": "m", "backend": backend, "weights": "w", **kw})


def spec(model: ModelEntry | None = None, settings: BackendSettings = BASE_SETTINGS, **kw) -> CaseSpec:
    return CaseSpec(**{"model": model or entry(), "ways": 5, "settings": settings, **kw})


def key(s: CaseSpec) -> str:
    """The key the runner stores under (through CaseRunner, as a real run computes it)."""
    k = CaseRunner(s, LABELS, None, None, None).key
    assert k == case_key(s.key_fields())
    return k


# ---------------------------------------------------------------- 1. key separation
def test_every_field_has_a_store_key_decision():
    decided = {
        CaseSpec: set(SPEC_KEY) | set(SPEC_NOT_KEY) | SPEC_COMPOSITE | SPEC_PER_ROW,
        BackendSettings: set(SETTINGS_KEY) | set(SETTINGS_NOT_KEY),
        ModelEntry: set(ENTRY_KEY) | {"backend"} | set(ENTRY_VIA_SETTINGS) | set(ENTRY_NOT_KEY),
    }
    for cls, names in decided.items():
        fields = {f.name for f in dataclasses.fields(cls)}
        assert fields == names, f"{cls.__name__}: decide whether {sorted(fields ^ names)} enter the store key"


@pytest.mark.parametrize("name", sorted(SPEC_KEY))
@pytest.mark.parametrize("backend", BACKENDS)
def test_each_case_setting_that_changes_answers_separates_the_key(backend, name):
    base = spec(entry(backend))
    changed = dataclasses.replace(base, **{name: SPEC_KEY[name]})
    assert key(changed) != key(base), f"{name} must enter the store key of a {backend} case"


@pytest.mark.parametrize("name", sorted(SPEC_NOT_KEY))
@pytest.mark.parametrize("backend", BACKENDS)
def test_run_controls_share_the_key(backend, name):
    base = spec(entry(backend))
    assert key(dataclasses.replace(base, **{name: SPEC_NOT_KEY[name]})) == key(base)


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(BackendSettings)])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("remote", [False, True])
def test_each_backend_setting_separates_the_key_exactly_when_it_changes_answers(backend, name, remote):
    model = entry(backend, trust_remote_code=remote)
    alternative = {**SETTINGS_KEY, **SETTINGS_NOT_KEY}[name]
    base, changed = spec(model), spec(model, BASE_SETTINGS.with_(**{name: alternative}))
    assert (key(changed) != key(base)) == separates_setting(backend, name, model), (backend, name, remote)


@pytest.mark.parametrize("backend", BACKENDS)
def test_device_kind_separates_local_models_only(backend):
    """cuda and cpu run other dtypes ("auto": bf16 vs float32); an API model answers the same."""
    cpu, gpu = (spec(entry(backend), BASE_SETTINGS.with_(device=d)) for d in ("cpu", "cuda"))
    assert (key(cpu) != key(gpu)) == (backend in LOCAL)
    assert key(gpu) == key(spec(entry(backend), BASE_SETTINGS.with_(device="cuda:3")))


@pytest.mark.parametrize("backend", BACKENDS)
def test_nli_model_separates_only_when_the_resolver_uses_it(backend):
    for resolver, uses in (("study", True), ("thesis", True), ("nli", True), ("exact", False), ("constrained", False)):
        a, b = (spec(entry(backend), resolver=resolver, nli_model=m) for m in ("nli/a", "nli/b"))
        assert (key(a) != key(b)) == uses, resolver


def cli_spec(backend: str, *argv: str, catalog_options: dict | None = None) -> CaseSpec:
    """A case as `pytest bench ARGV` plans it: the real option parser, RunOptions, plan.spec."""
    import argparse

    from vlmcls import options, plan

    parser = argparse.ArgumentParser()
    parser.addoption = parser.add_argument  # pytest's parser.getgroup(...).addoption, as argparse
    parser.getgroup = lambda *a, **k: parser
    options.add_options(parser)
    opts = plan.RunOptions.from_namespace(parser.parse_args(list(argv)))
    return plan.spec(entry(backend, options=catalog_options or {}), 5, opts)


@pytest.mark.parametrize("labels", ["thesis", "raw"])
def test_the_renamed_study_settings_keep_the_keys_stored_before_the_rename(labels):
    """raw / study / image-first were all called "thesis" when earlier stores were written: a key
    computed now must equal the one computed then, written out here with the old strings."""
    before_rename = {
        "model": "m", "backend": "hf-vlm", "weights": "w",
        "settings": {"quant": "none", "dtype": "auto", "max_new_tokens": 32, "layout": "thesis",
                     "constrained": False, "max_image_side": 768, "trust_remote_code": False,
                     "extra": {"layout": "thesis"}, "device_kind": "cpu"},
        "dataset": "sample", "ways": 5, "seed": 0, "prompt": prompts.THESIS,
        "labels": "thesis", "resolver": "thesis", "nli_model": "facebook/bart-large-mnli",
    }
    for layout in ("thesis", "image-first"):
        for resolver in ("thesis", "study"):
            s = cli_spec("hf-vlm", "--labels", labels, "--resolver", resolver, "--layout", layout, "--device", "cpu",
                         catalog_options={"layout": "thesis"})
            assert (s.labels_mode, s.resolver, s.settings.layout) == ("raw", "study", "image-first")
            assert key(s) == case_key(before_rename), (labels, resolver, layout)
    assert key(cli_spec("hf-vlm", "--labels", labels, "--device", "cpu")) != case_key(before_rename)  # can fail


def test_the_prompt_enters_by_its_text_not_its_name(monkeypatch):
    before = key(spec())
    edited = dataclasses.replace(prompts.TEMPLATES["thesis"], text=prompts.THESIS + " Be brief.")
    monkeypatch.setitem(prompts.TEMPLATES, "thesis", edited)
    assert key(spec()) != before


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_catalog_field_reaches_the_key_or_stays_out(backend):
    """Through the session's own path: catalog entry -> resolve_settings -> CaseSpec."""
    def via_catalog(e: ModelEntry, cli=None) -> str:
        settings = resolve_settings({"device": "cpu", "trust_remote_code": True, **(cli or {})}, e.defaults())
        return key(spec(e, settings))

    base = entry(backend)
    assert via_catalog(base) == via_catalog(entry(backend))
    for name, value in ENTRY_KEY.items():
        assert via_catalog(dataclasses.replace(base, **{name: value})) != via_catalog(base), name
    assert len({via_catalog(entry(b)) for b in BACKENDS}) == len(BACKENDS)
    for name, value in ENTRY_NOT_KEY.items():
        assert via_catalog(dataclasses.replace(base, **{name: value})) == via_catalog(base), name
    for name, value in ENTRY_VIA_SETTINGS.items():
        changed = dataclasses.replace(base, **{name: value})
        setting = {"options": "extra"}.get(name, name)  # options land in settings.extra
        assert (via_catalog(changed) != via_catalog(base)) == separates_setting(backend, setting, changed), name
    # options that are not a named setting still reach the backend (settings.extra): they separate
    assert via_catalog(dataclasses.replace(base, options={"templates": ["a {label}"]})) != via_catalog(base)


# ---------------------------------------------------------------- 1b. the same, through a real store
def jpeg(shade: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (24, 24), (shade, 90, 200)).save(buf, "JPEG")
    return buf.getvalue()


SAMPLES = [Sample(f"s{i}", (i * 131) % 1000, jpeg(i * 20)) for i in range(6)]


def run(s: CaseSpec, store: Store, backend=None):
    backend = backend or backends.load(s.model, s.settings, LABELS)
    return CaseRunner(s, LABELS, backend, Resolver("exact", LABELS), store).run(SAMPLES)


ECHO_VARIANTS = [("spec", k, v) for k, v in SPEC_KEY.items()] + [
    ("settings", k, v) for k, v in SETTINGS_KEY.items() if separates_setting("echo", k, entry())]


@pytest.mark.parametrize("where, name, value", ECHO_VARIANTS, ids=[v[1] for v in ECHO_VARIANTS])
def test_a_run_that_differs_in_one_answer_setting_reuses_no_stored_row(tmp_path, where, name, value):
    """The planted-bug scenario: a 10-way run after a 5-way run on the same store must not report
    the 5-way answers."""
    store = Store(tmp_path / "s.sqlite")
    base = spec(settings=BASE_SETTINGS.with_(device="cpu"))
    first = run(base, store)
    other = (dataclasses.replace(base, **{name: value}) if where == "spec"
             else dataclasses.replace(base, settings=base.settings.with_(**{name: value})))
    second = run(other, store)
    assert first.resumed == 0 and second.resumed == 0, f"{name} changed but stored rows were reused"
    assert store.count(key(base)) == store.count(key(other)) == len(SAMPLES)
    assert store.get(key(base)) == {p.sample_id: p for p in first.predictions}  # untouched by the second run
    if name == "ways":
        assert all(len(p.candidates) == value for p in second.predictions)


@pytest.mark.parametrize("where, name, value",
                         [("spec", k, v) for k, v in SPEC_NOT_KEY.items() if k != "refresh"]
                         + [("settings", k, v) for k, v in SETTINGS_NOT_KEY.items()])
def test_a_run_that_differs_only_in_speed_settings_resumes_every_row(tmp_path, where, name, value):
    store = Store(tmp_path / "s.sqlite")
    base = spec(settings=BASE_SETTINGS.with_(device="cpu"))
    first = run(base, store)
    other = (dataclasses.replace(base, **{name: value}) if where == "spec"
             else dataclasses.replace(base, settings=base.settings.with_(**{name: value})))
    second = run(other, store, backend=Refuses())
    assert second.resumed == len(SAMPLES) and second.predictions == first.predictions


# ---------------------------------------------------------------- 2. the last row wins
def pred(sid: str, version: int, error: str | None = None) -> Prediction:
    return Prediction(sid, version % 5, f"c{version % 5}", ("a", "b"), f"answer {version}",
                      None if error else version % 5, None if error else "x", "error" if error else "match",
                      cost_usd=0.001 * version, error=error)


@pytest.mark.parametrize("seed", range(5))
def test_the_store_keeps_the_last_row_written_for_each_sample(tmp_path, seed):
    rng = random.Random(seed)
    store, expected = Store(tmp_path / "s.sqlite"), {"k1": {}, "k2": {}}
    for version in range(40):
        k = rng.choice(["k1", "k2"])
        batch = [pred(f"s{i}", version, error="HTTP 500" if rng.random() < 0.3 else None)
                 for i in rng.sample(range(8), rng.randint(1, 4))]
        store.put(k, batch, now=float(version))
        expected[k].update({p.sample_id: p for p in batch})
        assert store.get(k) == expected[k] and store.count(k) == len(expected[k])
    for k in expected:  # and the same from a new connection (another process later)
        assert Store(tmp_path / "s.sqlite").get(k) == expected[k]


class Scripted:
    """A backend whose answers tests decide: the candidate at `pick` (an index into the offered
    labels), or an error for the sample ids in `failing`. Counts the queries it was sent."""

    kind = "text"

    def __init__(self, pick: int = 0, failing=()):
        self.pick, self.failing, self.asked = pick, set(failing), []

    def answer(self, queries):
        self.asked += [q.sample_id for q in queries]
        return [Answer(error="HTTP 503: overloaded") if q.sample_id in self.failing
                else Answer(text=q.labels[self.pick % len(q.labels)], cost_usd=0.01) for q in queries]

    def close(self):
        pass


class Refuses(Scripted):
    """A store hit must not reach the backend."""

    def answer(self, queries):
        raise AssertionError(f"asked {[q.sample_id for q in queries]} although the store holds them")


@pytest.mark.parametrize("failing", [{"s0"}, {"s1", "s4"}, {s.sample_id for s in SAMPLES[:5]}])
def test_a_retried_error_row_that_succeeds_replaces_the_stored_error(tmp_path, failing):
    store, s = Store(tmp_path / "s.sqlite"), spec(settings=BASE_SETTINGS.with_(device="cpu"))
    first = run(s, store, Scripted(failing=failing))
    assert {p.sample_id for p in first.predictions if p.error} == failing
    retry = Scripted()
    second = run(s, store, retry)
    assert sorted(retry.asked) == sorted(failing) and second.resumed == len(SAMPLES) - len(failing)
    stored = store.get(key(s))
    assert len(stored) == len(SAMPLES) and not any(p.error for p in stored.values())
    assert stored == {p.sample_id: p for p in second.predictions}
    third = run(s, store, Refuses())  # nothing is paid again on the next resume
    assert third.resumed == len(SAMPLES) and third.predictions == second.predictions


def test_a_refresh_run_replaces_every_stored_row(tmp_path):
    store, s = Store(tmp_path / "s.sqlite"), spec(settings=BASE_SETTINGS.with_(device="cpu"))
    old = run(s, store, Scripted(pick=0))
    fresh = Scripted(pick=1)
    new = run(dataclasses.replace(s, refresh=True), store, fresh)
    assert new.resumed == 0 and sorted(fresh.asked) == sorted(x.sample_id for x in SAMPLES)
    assert [p.pred_id for p in new.predictions] != [p.pred_id for p in old.predictions]
    assert store.get(key(s)) == {p.sample_id: p for p in new.predictions} and store.count(key(s)) == len(SAMPLES)
    after = run(s, store, Refuses())  # the next plain run serves the refreshed rows
    assert after.predictions == new.predictions and after.resumed == len(SAMPLES)


def test_a_failed_batch_commits_nothing_and_the_store_stays_usable(tmp_path):
    """A batch is one transaction: a row the table refuses (no sample id) rolls the whole batch back,
    and the next batch on the same connection commits as usual."""
    import sqlite3

    store = Store(tmp_path / "s.sqlite")
    with pytest.raises(sqlite3.IntegrityError):
        store.put("k", [pred("s1", 1), dataclasses.replace(pred("s2", 2), sample_id=None)], now=0.0)
    assert store.count("k") == 0
    store.put("k", [pred("s1", 3)], now=1.0)
    assert store.get("k") == {"s1": pred("s1", 3)}


def test_each_case_key_records_the_settings_it_was_made_from(tmp_path):
    """The cases table lets a reader tell which settings a key stands for (audit, cleanup)."""
    import json
    import sqlite3
    from pathlib import Path

    s = spec(settings=BASE_SETTINGS.with_(device="cpu"))
    fields = {**s.key_fields(), "where": Path("/data/imagenet")}  # default=str, as in case_key
    store = Store(tmp_path / "s.sqlite")
    store.register(case_key(fields), fields)
    store.register(case_key(fields), {"something": "else"})  # a key's record is written once
    rows = sqlite3.connect(tmp_path / "s.sqlite").execute("SELECT case_key, spec FROM cases").fetchall()
    assert [(k, json.loads(text)) for k, text in rows] == [(case_key(fields), json.loads(json.dumps(fields, default=str)))]


def test_a_closed_store_reopens_on_next_use(tmp_path):
    """The session closes the store at the end; a later use (another case, a report) must still work."""
    store = Store(tmp_path / "s.sqlite")
    store.put("k", [pred("s1", 1)], now=0.0)
    store.close()
    store.close()  # twice is harmless
    assert store.get("k") == {"s1": pred("s1", 1)}
    store.put("k", [pred("s2", 2)], now=1.0)
    store.close()
    assert Store(tmp_path / "s.sqlite").count("k") == 2


def test_close_releases_the_database_file(tmp_path):
    """The last connection closed checkpoints the WAL into the database and removes it: the
    .sqlite file alone then holds every row (to copy or archive). A thread that never used the
    store may close it too."""
    import threading

    store = Store(tmp_path / "s.sqlite")
    store.put("k", [pred("s1", 1)], now=0.0)
    assert (tmp_path / "s.sqlite-wal").exists()
    errors = []

    def close_elsewhere():
        try:
            store.close()
        except Exception as exc:  # a thread's exception would not reach the test
            errors.append(exc)

    closer = threading.Thread(target=close_elsewhere)
    closer.start()
    closer.join()
    assert errors == []
    store.close()
    assert not (tmp_path / "s.sqlite-wal").exists()
