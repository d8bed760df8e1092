"""The runner end to end without pytest: error rows, --max-cost, resume, and secrets in written files."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

from vlmcls import backends
from vlmcls.catalog import ModelEntry
from vlmcls.labels import imagenet_labelset
from vlmcls.resolve import Resolver
from vlmcls import runner as runner_mod
from vlmcls.runner import CaseRunner, CaseSpec, fingerprint
from vlmcls.settings import BackendSettings
from vlmcls.smoke.api_server import ApiServer
from vlmcls.store import Store
from vlmcls.types import Sample

LABELS = imagenet_labelset()
ECHO = ModelEntry(name="echo", backend="echo", weights="smoke:echo", smoke=True)


def jpeg(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (48, 48), color).save(buf, "JPEG")
    return buf.getvalue()


def samples(n: int) -> list[Sample]:
    return [Sample(f"s{i}", (i * 37) % 1000, jpeg((i % 255, 80, 160))) for i in range(n)]


def runner(entry=ECHO, settings=BackendSettings(batch_size=4), store=None, **spec) -> CaseRunner:
    case = CaseSpec(model=entry, ways=20, settings=settings, **spec)
    return CaseRunner(case, LABELS, backends.load(entry, settings, LABELS), Resolver("exact", LABELS), store)


def test_bad_images_become_error_rows_and_the_run_goes_on():
    data = samples(10)
    data[3] = Sample("broken", 5, jpeg("red")[:100])
    data[7] = Sample("missing", 6, "/no/such/file.jpg")
    result = runner().run(data)
    assert len(result.predictions) == 10 and result.metrics.n == 10 and result.metrics.errors == 2
    bad = {p.sample_id: p for p in result.predictions if p.error}
    assert set(bad) == {"broken", "missing"} and all(p.stage == "error" and p.pred_id is None for p in bad.values())
    assert "cannot decode image" in bad["broken"].error and "not found" in bad["missing"].error


def test_store_resume_recomputes_nothing_and_retries_error_rows(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    data = samples(12)
    first = runner(store=store).run(data[:8] + [Sample("bad", 1, b"junk")])
    assert first.resumed == 0 and store.count(runner().key) == 9
    second = runner(store=store).run(data + [Sample("bad", 1, b"junk")])
    assert second.resumed == 8 and len(second.predictions) == 13  # the error row was retried, not kept
    assert [p for p in second.predictions if p.sample_id in {"s0", "s5"}] == [p for p in first.predictions if p.sample_id in {"s0", "s5"}]
    assert runner(store=store, refresh=True).run(data).resumed == 0


def test_max_cost_stops_before_the_budget_is_passed():
    entry = ModelEntry(name="paid", backend="openai-compatible", weights="smoke:openai", smoke=True, price=(1000.0, 1000.0))
    settings = BackendSettings(batch_size=4, concurrency=2)
    result = runner(entry, settings, max_cost=0.5).run(samples(40))
    spent = sum(p.cost_usd for p in result.predictions)
    per_sample = spent / len(result.predictions)
    assert 0 < len(result.predictions) < 40 and "stopped by --max-cost 0.5" in result.stopped
    assert spent <= 0.5 + 1e-9 and spent + per_sample > 0.5 - per_sample * 4
    assert result.not_run == 40 - len(result.predictions)


def test_no_key_reaches_any_written_file(tmp_path):
    secret = "sk-test-VERYSECRET-0123456789abcdef"
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "test_classify.py").write_text((Path(__file__).parents[1] / "bench" / "test_classify.py").read_text())
    (tmp_path / "catalog.toml").write_text('[models.local-vllm]\nbackend = "openai-compatible"\nweights = "served-model"\nprice = [1.0, 2.0]\n')
    with ApiServer() as server:
        env = {**os.environ, "OPENAI_COMPATIBLE_API_KEY": secret, "OPENAI_API_KEY": secret}
        out = subprocess.run([sys.executable, "-m", "pytest", "bench", "--catalog", "catalog.toml", "--base-url", f"{server.url}/v1",
                              "--ways", "20", "--samples", "30", "--resolver", "exact", "-p", "no:cacheprovider"],
                             cwd=tmp_path, env=env, capture_output=True, text=True)
        assert server.records and all(secret in r.headers.get("Authorization", r.headers.get("authorization", "")) for r in server.records)
    assert out.returncode == 0, out.stdout[-2000:]
    assert secret not in out.stdout + out.stderr
    written = [p for p in (tmp_path / "reports").rglob("*") if p.is_file()]
    assert any(p.name == "store.sqlite" for p in written) and any(p.suffix == ".jsonl" for p in written)
    for path in written:
        assert secret.encode() not in path.read_bytes(), path


def test_credentials_in_a_base_url_reach_no_written_file(tmp_path):
    """`--base-url http://ci:PASSWORD@host/v1`: results.json kept it twice (the argv and each case's
    settings) and the store's key once. The request still goes to the server the URL names."""
    password = "hunter2-VERYSECRET-pass"
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "test_classify.py").write_text((Path(__file__).parents[1] / "bench" / "test_classify.py").read_text())
    (tmp_path / "catalog.toml").write_text('[models.local-vllm]\nbackend = "openai-compatible"\nweights = "served-model"\n')
    with ApiServer() as server:
        url = server.url.replace("://", f"://ci:{password}@") + "/v1"
        out = subprocess.run([sys.executable, "-m", "pytest", "bench", "--catalog", "catalog.toml", "--base-url", url,
                              "--ways", "20", "--samples", "12", "--resolver", "exact", "-p", "no:cacheprovider"],
                             cwd=tmp_path, capture_output=True, text=True)
        assert len(server.records) == 12
    assert out.returncode == 0, out.stdout[-2000:]
    assert password not in out.stdout + out.stderr
    written = [p for p in (tmp_path / "reports").rglob("*") if p.is_file()]
    assert any(p.name == "store.sqlite" for p in written)
    for path in written:
        assert password.encode() not in path.read_bytes(), path
    results = next(p for p in written if p.name == "results.json").read_text()
    assert server.url.replace("://", "://***@") + "/v1" in results  # which server answered stays on record


def test_redact_urls_masks_credentials_and_query_values_only():
    from vlmcls.settings import redact_urls

    assert redact_urls("--base-url=http://ci:pw@h:8000/v1,https://k@g/v1") == "--base-url=http://***@h:8000/v1,https://***@g/v1"
    assert redact_urls("https://h/v1?token=abc&mode=x#top") == "https://h/v1?token=***&mode=***#top"
    assert redact_urls("failed on http://u:p@h/v1/chat?key (timeout)") == "failed on http://***@h/v1/chat?*** (timeout)"
    for same in ("http://127.0.0.1:8000/v1", "http://a/v1,http://b/v1", "no url here: a@b"):
        assert redact_urls(same) == same


def test_max_cost_counts_what_stored_runs_already_spent(tmp_path):
    entry = ModelEntry(name="paid", backend="openai-compatible", weights="smoke:openai", smoke=True, price=(1000.0, 1000.0))
    settings = BackendSettings(batch_size=4, concurrency=2)
    store = Store(tmp_path / "s.sqlite")
    data = samples(60)
    spent = []
    for _ in range(3):  # the same command again: it resumes, and the budget is for the case, not the run
        result = runner(entry, settings, store=store, max_cost=0.5).run(data)
        spent.append(sum(p.cost_usd for p in result.predictions))
    assert spent[0] <= 0.5 and spent[2] <= 0.5 and spent[1] == spent[2]
    assert "stopped by --max-cost" in result.stopped


def test_store_key_separates_what_changes_answers():
    vlm = ModelEntry(name="v", backend="hf-vlm", weights="smoke:qwen2-vl")
    served = ModelEntry(name="s", backend="openai-compatible", weights="m")
    key = lambda entry, **kw: CaseRunner(CaseSpec(model=entry, ways=20, settings=BackendSettings(**kw)), LABELS, None, None, None).key
    assert key(vlm, device="cpu") != key(vlm, device="cuda:0")
    assert key(vlm, device="cuda:0") == key(vlm, device="cuda:1") and key(vlm, batch_size=1) == key(vlm, batch_size=32)
    assert key(vlm) != key(vlm, layout="labels-first") != key(vlm, constrained=True)
    assert key(served, base_url="http://a/v1") != key(served, base_url="http://b/v1")
    assert key(ECHO, base_url="http://a/v1") == key(ECHO, base_url="http://b/v1")
    clip = ModelEntry(name="c", backend="clip", weights="smoke:clip")
    assert key(clip) == key(clip, layout="labels-first", max_new_tokens=5) != key(clip, device="cuda")
    assert CaseRunner(CaseSpec(model=ECHO, ways=20, settings=BackendSettings(), prompt="label-only"), LABELS, None, None, None).key \
        != CaseRunner(CaseSpec(model=ECHO, ways=20, settings=BackendSettings()), LABELS, None, None, None).key


def test_changed_images_or_labels_are_recomputed_not_served_stale(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    data = samples(6)
    runner(store=store).run(data)
    changed = [Sample(s.sample_id, s.label, jpeg("yellow")) if i == 0 else s for i, s in enumerate(data)]
    changed[1] = Sample(data[1].sample_id, data[1].label + 1, data[1].image)
    again = runner(store=store).run(changed)
    assert again.resumed == 4
    assert {p.sample_id: p.true_id for p in again.predictions}[data[1].sample_id] == data[1].label + 1
    assert "2 stored answers were asked again: the image or label changed since" in "\n".join(again.notes)
    assert not any("asked again" in n for n in runner(store=store).run(changed).notes)  # nothing stale now


def test_a_copied_or_touched_image_file_keeps_its_stored_answer_and_a_changed_one_is_asked_again(tmp_path):
    """`cp -r` without -p gives every file a new modification time: the rows' content hashes still match,
    so nothing is asked (or paid) again; a file whose bytes changed is asked again, and the notes say so."""
    import shutil

    store = Store(tmp_path / "s.sqlite")
    (tmp_path / "a").mkdir()
    for i in range(3):
        (tmp_path / "a" / f"img{i}.jpg").write_bytes(jpeg((i * 40, 90, 30)))

    def data(folder):
        return [Sample(f"img{i}.jpg", i, str(tmp_path / folder / f"img{i}.jpg")) for i in range(3)]

    first = runner(store=store).run(data("a"))
    assert first.resumed == 0
    assert all(p.fingerprint.partition("#")[2] == hashlib.sha1((tmp_path / "a" / p.sample_id).read_bytes()).hexdigest()[:16]
               for p in first.predictions)
    os.utime(tmp_path / "a" / "img1.jpg", ns=(1, 1))
    shutil.copytree(tmp_path / "a", tmp_path / "b", copy_function=shutil.copy)  # new mtimes, same bytes
    real_sha, hashed = runner_mod._file_sha, []
    for folder in ("a", "b", "b"):
        reads = []
        runner_mod._file_sha = lambda path: reads.append(path) or real_sha(path)
        try:
            again = runner(store=store).run(data(folder))
        finally:
            runner_mod._file_sha = real_sha
        assert again.resumed == 3 and again.notes == []
        hashed.append(len(reads))
    # the touched file, then the three copies, are read once each: their rows then take the size + mtime of
    # the file now there, so the next run reads nothing
    assert hashed == [1, 3, 0]
    (tmp_path / "b" / "img2.jpg").write_bytes(jpeg("yellow"))
    changed = runner(store=store).run(data("b"))
    assert changed.resumed == 2 and "1 stored answer was asked again" in "\n".join(changed.notes)
    relabelled = [Sample(s.sample_id, (s.label + 1) % 3, s.image) for s in data("b")]
    assert runner(store=store).run(relabelled).resumed == 0  # same bytes, another label: every row asked again


def test_a_row_stored_without_a_content_hash_is_asked_again_when_its_file_is_touched(tmp_path):
    """Rows an earlier vlmcls wrote carry size + mtime only: a touched file cannot be told from a changed
    one, so it is asked again (as before), and the rows written then carry the content hash."""
    store = Store(tmp_path / "s.sqlite")
    f = tmp_path / "img.jpg"
    f.write_bytes(jpeg("red"))
    data = [Sample("img.jpg", 0, str(f))]
    r = runner(store=store)
    old = dataclasses.replace(r.run(data).predictions[0], fingerprint=fingerprint(data[0]))
    store.put(r.key, [old], 0.0)
    assert runner(store=store).run(data).resumed == 1  # untouched: the quick fingerprint still agrees
    os.utime(f, ns=(1, 1))
    again = runner(store=store).run(data)
    assert again.resumed == 0 and "its size or modification time" in again.notes[0]
    assert "#" in again.predictions[0].fingerprint
    os.utime(f, ns=(2, 2))
    assert runner(store=store).run(data).resumed == 1


def test_a_dead_endpoint_stops_the_case_after_a_few_samples():
    entry = ModelEntry(name="dead", backend="openai-compatible", weights="m")
    settings = BackendSettings(batch_size=4, concurrency=4, base_url="http://127.0.0.1:9/v1", max_retries=0, timeout_s=2)
    result = runner(entry, settings).run(samples(40))
    assert len(result.predictions) == 8 and all(p.error for p in result.predictions)
    assert result.stopped.startswith("stopped after the first 8 samples all failed") and result.not_run == 32


def test_each_xdist_worker_takes_its_own_gpu(monkeypatch):
    import torch

    from vlmcls.session import worker_device

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw3")
    assert worker_device() == "cuda:1"
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    assert worker_device() == "cuda:0"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # one GPU: every worker shares it
    assert worker_device() == "auto"
    monkeypatch.delenv("PYTEST_XDIST_WORKER")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)  # not under xdist: the model's own placement
    assert worker_device() == "auto"


def test_a_case_gets_only_the_resolver_stages_that_ran_in_its_own_calls():
    """The resolver is shared by the cases of a process: a case whose answers all matched once showed
    "nli <1 ms" serially (another case had used the NLI before it) and no NLI under -n 2."""
    from vlmcls.runner import add_stage_seconds

    case: dict[str, float] = {}
    add_stage_seconds(case, {"match": 1.0, "nli": 4.0}, {"match": 1.5, "nli": 4.0})
    assert case == {"match": 0.5}
    add_stage_seconds(case, {"match": 1.5, "nli": 4.0}, {"match": 1.75, "nli": 4.5})
    assert case == {"match": 0.75, "nli": 0.5}
    add_stage_seconds(case, {}, {"match": 0.25})  # a stage new to the resolver counts from zero
    assert case == {"match": 1.0, "nli": 0.5}


def test_raw_labels_count_a_prediction_ambiguous_only_where_its_namesake_is_a_candidate():
    """Under --labels raw, 134 and 517 are both "crane": an answer cannot tell them apart when both
    are offered. With one of them alone among the candidates the name is as clear as any other, and
    counting it inflated the report's ambiguity note (about every 20-way prediction of a crane)."""
    from vlmcls.candidates import CandidateSet
    from vlmcls.types import Answer

    raw = imagenet_labelset("raw")
    spec = CaseSpec(model=ECHO, ways=3, settings=BackendSettings(), labels_mode="raw")
    r = CaseRunner(spec, raw, None, None, None)
    crane = Sample("s", 134, b"")
    both, alone = CandidateSet("s", 3, 134, (134, 517, 1)), CandidateSet("s", 3, 134, (134, 7, 1))
    pick = lambda cs, cid: r.record(crane, cs, Answer(class_id=cid, stage="direct")).ambiguous
    assert pick(both, 134) and pick(both, 1)  # the true class's namesake is offered: whatever is picked
    assert not pick(alone, 134) and not pick(alone, 1)
    cardigans = CandidateSet("s", 3, 264, (264, 474, 1))  # "Cardigan" and "cardigan": alike but for case
    assert r.record(Sample("s", 264, b""), cardigans, Answer(class_id=1, stage="direct")).ambiguous
    unique = CaseRunner(CaseSpec(model=ECHO, ways=3, settings=BackendSettings()), LABELS, None, None, None)
    assert not unique.record(crane, both, Answer(class_id=134, stage="direct")).ambiguous


_OPENED: list[str] = []


def _count_opens(event, args):
    if event == "open" and _OPENED and isinstance(args[0], (str, os.PathLike)):
        _OPENED.append(os.fspath(args[0]))


sys.addaudithook(_count_opens)  # audit hooks cannot be removed: it records only while _OPENED holds a marker


def test_a_fresh_row_opens_its_image_file_once_for_both_decode_and_content_hash(tmp_path):
    """The read-ahead threads decode a file and hash it for the row's fingerprint from one read (it was
    read twice: PIL opened the path, then the hash read it again). A corrupt file is one read and an
    error row that still records its content hash; the stored rows match the files' bytes."""
    store = Store(tmp_path / "s.sqlite")
    files = []
    for i in range(4):
        f = tmp_path / f"img{i}.jpg"
        f.write_bytes(jpeg((i * 50, 90, 30)) if i != 2 else b"not a jpeg")
        files.append(f)
    data = [Sample(f.name, i, str(f)) for i, f in enumerate(files)]
    _OPENED[:] = ["<marker>"]
    try:
        result = runner(store=store).run(data)
    finally:
        opened, _OPENED[:] = _OPENED[1:], []
    assert sorted(p for p in opened if p.startswith(str(tmp_path / "img"))) == sorted(map(str, files))
    rows = {p.sample_id: p for p in result.predictions}
    assert rows["img2.jpg"].error and "cannot decode image" in rows["img2.jpg"].error
    for f in files:
        assert rows[f.name].fingerprint.partition("#")[2] == hashlib.sha1(f.read_bytes()).hexdigest()[:16]
    assert runner(store=store).run(data).resumed == 3  # the error row is asked again, the others resume
