"""Session 10's small fixes, each with the behaviour a user sees."""
from __future__ import annotations

import pytest

from vlmcls.catalog import ModelEntry
from vlmcls.report.plots import _setting
from vlmcls.report.rows import spec_fields
from vlmcls.runner import CaseSpec
from vlmcls.settings import BackendSettings

ENTRY = ModelEntry(name="m", backend="echo", weights="smoke:echo", smoke=True)


def spec(resolver: str, nli_model: str) -> CaseSpec:
    return CaseSpec(model=ENTRY, ways=20, settings=BackendSettings(), resolver=resolver, nli_model=nli_model)


@pytest.mark.parametrize("resolver", ["exact", "constrained", "rank"])
def test_a_resolver_that_never_calls_nli_records_no_nli_model(resolver):
    """results.json said `nli_model: facebook/bart-large-mnli` for runs that never loaded it, and two such
    runs differing in --nli-model alone were drawn as two settings of one model."""
    a, b = spec_fields(spec(resolver, "facebook/bart-large-mnli")), spec_fields(spec(resolver, "my/nli"))
    assert a["nli_model"] is None and b["nli_model"] is None
    assert _setting(a) == _setting(b)


@pytest.mark.parametrize("resolver", ["study", "nli"])
def test_a_resolver_with_an_nli_stage_records_its_model(resolver):
    a, b = spec_fields(spec(resolver, "facebook/bart-large-mnli")), spec_fields(spec(resolver, "my/nli"))
    assert (a["nli_model"], b["nli_model"]) == ("facebook/bart-large-mnli", "my/nli")
    assert _setting(a) != _setting(b)


def test_merged_runs_that_differ_in_resolver_name_the_resolver_not_a_missing_nli_model():
    from vlmcls.__main__ import mixed_settings

    rows = [{**spec_fields(spec(r, "facebook/bart-large-mnli")), "metrics": {"n": 5}} for r in ("study", "exact")]
    line = mixed_settings(rows)
    assert "resolver: exact, study" in line and "nli_model" not in line
    rows = [{**spec_fields(spec("study", m)), "metrics": {"n": 5}} for m in ("facebook/bart-large-mnli", "my/nli")]
    assert "nli_model: facebook/bart-large-mnli, my/nli" in mixed_settings(rows)


# ---------------------------------------------------------------- backend notes count one case each
def test_a_case_notes_count_its_own_requests_and_ranked_answers_not_the_models_earlier_cases(tmp_path, monkeypatch):
    """A prompt sweep's second 20-way case said "rank (20-way): 20 of 20 answers ranked" with n = 10:
    the API backend is shared by a model's cases and its tallies ran from when it loaded."""
    import io

    from PIL import Image

    from vlmcls import backends, prompts
    from vlmcls.backends import api
    from vlmcls.labels import imagenet_labelset
    from vlmcls.resolve import Resolver
    from vlmcls.runner import CaseRunner
    from vlmcls.smoke.api_server import ApiServer
    from vlmcls.types import Sample

    pytest.importorskip("openai")
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", api.COMPAT_KEY_ENV):
        monkeypatch.delenv(name, raising=False)

    def jpeg(i: int) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", (32, 32), (i * 9 % 255, 60, 120)).save(buf, "JPEG")
        return buf.getvalue()

    labels = imagenet_labelset()
    served = ModelEntry(name="fleet", backend="openai-compatible", weights="served-model")
    with ApiServer() as a, ApiServer() as b:
        settings = BackendSettings(base_url=f"{a.url}/v1,{b.url}/v1", rank=True, concurrency=2, max_retries=0, timeout_s=5.0)
        backend = backends.load(served, settings, labels)
        try:
            notes = []
            for n, prompt in ((6, "thesis"), (4, "label-only")):
                spec = CaseSpec(model=served, ways=20, settings=settings, resolver="rank", prompt=prompt)
                data = [Sample(f"{prompt}{i}", (i * 37) % 1000, jpeg(i)) for i in range(n)]
                notes.append(CaseRunner(spec, labels, backend, Resolver("exact", labels), None).run(data).notes)
        finally:
            backend.close()
    for n, case_notes in zip((6, 4), notes):
        (rank,) = [x for x in case_notes if x.startswith("rank (")]
        assert f" of {n} answers ranked" in rank, rank
        (servers,) = [x for x in case_notes if x.startswith("servers (this case")]
        sent = [int(part.split(" requests")[0].rsplit(" ", 1)[1]) for part in servers.split("; ")[1:]]
        assert sum(sent) == n, servers


# ---------------------------------------------------------------- what a paper needs to reproduce a run
def test_revision_is_the_cached_snapshot_commit_of_a_repo_or_of_a_folder_inside_one(tmp_path, monkeypatch):
    import huggingface_hub.constants as constants

    from vlmcls import hub

    commit = "0123456789abcdef0123456789abcdef01234567"
    snap = tmp_path / "models--org--vlm" / "snapshots" / commit
    snap.mkdir(parents=True)
    (snap / "model.safetensors").write_bytes(b"weights")
    (snap / "config.json").write_text("{}")
    (tmp_path / "models--org--vlm" / "refs").mkdir()
    (tmp_path / "models--org--vlm" / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.revision("org/vlm") == commit
    assert hub.revision(str(snap)) == commit  # a catalog pointing into the cache
    assert hub.revision("org/not-cached") is None
    assert hub.revision(str(tmp_path)) is None  # a plain folder
    assert hub.revision("smoke:qwen2-vl") is None


def test_a_case_row_records_the_revisions_it_can_know(tmp_path, monkeypatch):
    from vlmcls.report.rows import revisions

    monkeypatch.setattr("vlmcls.hub.revision", lambda w: f"rev-of-{w}")
    local = ModelEntry(name="v", backend="hf-vlm", weights="org/vlm")
    served = ModelEntry(name="s", backend="openai-compatible", weights="served-model")
    study = CaseSpec(model=local, ways=20, settings=BackendSettings(), resolver="study", nli_model="org/nli")
    assert revisions(study) == {"weights": "rev-of-org/vlm", "nli_model": "rev-of-org/nli"}
    exact = CaseSpec(model=served, ways=20, settings=BackendSettings(), resolver="exact")
    assert revisions(exact) == {"weights": None, "nli_model": None}  # a served name is no hub repo; no NLI stage


def test_a_dirty_checkout_is_identified_by_its_diff(tmp_path):
    import hashlib
    import subprocess

    from vlmcls import provenance

    git = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git("add", "a.py")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "one")
    assert provenance.git_diff(tmp_path) == hashlib.sha256(b"").hexdigest()[:12]
    (tmp_path / "a.py").write_text("x = 2\n")
    first = provenance.git_diff(tmp_path)
    (tmp_path / "a.py").write_text("x = 3\n")
    second = provenance.git_diff(tmp_path)
    assert first != second and provenance.git_commit(tmp_path).endswith("-dirty")
    diff = subprocess.run(["git", "diff", "HEAD", "--binary"], cwd=tmp_path, capture_output=True).stdout
    assert second == hashlib.sha256(diff).hexdigest()[:12]  # matches a diff saved beside the results


def test_provenance_names_the_libraries_the_metrics_come_from():
    from importlib import metadata

    from vlmcls import provenance

    prov = provenance.collect()
    for package in ("scikit-learn", "scipy", "numpy"):
        assert prov[package] == metadata.version(package)
    assert ("git_diff" in prov) == bool(prov["git_commit"] and prov["git_commit"].endswith("-dirty"))
    text = provenance.markdown({"provenance": {**prov, "git_diff": "abc123def456"}})
    assert "- scikit-learn: " in text and "- git diff: abc123def456" in text
    assert "git diff" not in provenance.markdown({"provenance": {k: v for k, v in prov.items() if k != "git_diff"}})


# ---------------------------------------------------------------- a laptop user's walkthrough
def test_a_catalog_that_is_a_folder_or_not_utf8_is_one_line(tmp_path):
    from vlmcls.catalog import load_catalog

    with pytest.raises(ValueError, match=r"^catalog .* is a folder: --catalog takes a TOML file \(e\.g\. my\.toml\)$"):
        load_catalog(tmp_path)
    latin = tmp_path / "my.toml"
    latin.write_bytes('[models."caf\xe9"]\nbackend = "echo"\n'.encode("latin-1"))
    with pytest.raises(ValueError, match=r"my\.toml is not UTF-8 text \(invalid .* at byte 12\): save it as UTF-8$"):
        load_catalog(latin)


def test_mps_asked_for_where_there_is_none_is_a_reason_to_skip(monkeypatch):
    import torch

    from vlmcls import devices

    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert devices.unavailable("mps") == "--device mps but this machine has no Apple GPU (MPS) torch can use"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert devices.unavailable("mps") is None
    assert devices.unavailable("cpu") is None


def test_a_stored_row_from_a_newer_vlmcls_is_read_without_its_unknown_fields():
    from dataclasses import asdict

    from vlmcls.store import from_record
    from vlmcls.types import Prediction

    p = Prediction("s1", 3, "cat", ("cat", "dog"), "cat", 3, "cat", "match")
    assert from_record({**asdict(p), "newfield": 1}) == p


STORE_FAILS = """
import sqlite3
import vlmcls.store

def get(self, key):
    raise sqlite3.DatabaseError("database disk image is malformed")

vlmcls.store.Store.get = get
"""


def test_a_damaged_store_is_named_not_blamed_on_the_model(bench):
    bench.makeconftest(STORE_FAILS)
    bench.makefile(".toml", catalog='[models.echo-a]\nbackend = "echo"\nweights = "smoke:echo"\nsmoke = true\n')
    out = bench.runpytest_subprocess("bench", "--catalog", "catalog.toml", "-p", "no:cacheprovider",
                                     "--ways", "2", "--samples", "4")
    out.assert_outcomes(failed=1)
    text = out.stdout.str()
    assert "cannot load the model" not in text
    assert ("echo-a-2way: the result store " in text and "store.sqlite failed: DatabaseError: database disk image is "
            "malformed (if it is damaged, move it aside or pass --store NEW" in text)


def test_through_the_plugin_a_sweeps_second_case_counts_its_own_ranked_answers(bench):
    """The session wraps each case's backend (loaded once per model) in a LazyBackend: the per-case
    tallies must restart there too, not only when a script drives the runner itself."""
    import json

    pytest.importorskip("openai")
    out = bench.runpytest_subprocess("bench", "-p", "no:cacheprovider", "-k", "smoke-openai", "--resolver", "rank",
                                     "--prompt", "thesis,label-only", "--ways", "20", "--samples", "6")
    out.assert_outcomes(passed=2)
    (results,) = (bench.path / "reports").glob("*/results.json")
    cases = json.loads(results.read_text())["cases"]
    assert len(cases) == 2
    for case in cases:
        (rank,) = [n for n in case["notes"] if n.startswith("rank (")]
        assert " of 6 answers ranked" in rank, (case["case_id"], rank)


def test_the_report_says_where_local_models_ran_and_in_what_precision():
    import torch

    from vlmcls import devices
    from vlmcls.report.markdown import notes

    model = torch.nn.Linear(2, 2)
    model.device, model.dtype = torch.device("cpu"), torch.float32  # what a transformers model exposes
    assert devices.ran_on(model) == "cpu, float32"
    model.dtype = torch.bfloat16
    assert devices.ran_on(model) == "cpu, bfloat16 (half precision on the CPU: slower than float32 there)"
    rows = [{"case_id": "a-20way", "ran_on": "cuda:0, bfloat16"}, {"case_id": "b-20way", "ran_on": "cuda:0, bfloat16"},
            {"case_id": "gpt-20way", "ran_on": None}]
    assert "- local models ran on cuda:0, bfloat16" in notes(rows)
    rows[1]["ran_on"] = "cuda:1, float16"
    text = notes(rows)
    assert "- ran on cuda:0, bfloat16: `a-20way`" in text and "- ran on cuda:1, float16: `b-20way`" in text
    assert not any("ran on" in n for n in notes([rows[2]]))


def test_results_record_where_a_loaded_model_ran_and_nothing_for_a_stand_in(bench):
    import json

    out = bench.runpytest_subprocess("bench", "-p", "no:cacheprovider", "-k", "smoke-qwen2-vl or smoke-echo",
                                     "--ways", "20", "--samples", "4", "--dtype", "bfloat16")
    out.assert_outcomes(passed=2)
    (results,) = (bench.path / "reports").glob("*/results.json")
    ran = {c["model"]: c["ran_on"] for c in json.loads(results.read_text())["cases"]}
    assert ran == {"smoke-qwen2-vl": "cpu, bfloat16 (half precision on the CPU: slower than float32 there)",
                   "smoke-echo": None}
    rerun = bench.runpytest_subprocess("bench", "-p", "no:cacheprovider", "-k", "smoke-qwen2-vl",
                                       "--ways", "20", "--samples", "4", "--dtype", "bfloat16")
    rerun.assert_outcomes(passed=1)
    newest = max((bench.path / "reports").glob("*/results.json"), key=lambda p: p.stat().st_mtime)
    (case,) = json.loads(newest.read_text())["cases"]
    assert case["ran_on"] is None  # every answer from the store: no model was loaded


def test_loading_real_weights_is_said_before_the_wait_and_smoke_models_stay_quiet(bench):
    from vlmcls import smoke

    folder = smoke.ensure("clip")  # a local folder of weights, as a user's own checkpoint is
    bench.makefile(".toml", catalog=f'[models.my-clip]\nbackend = "clip"\nweights = "{folder}"\n\n'
                                    '[models.smoke-clip]\nbackend = "clip"\nweights = "smoke:clip"\nsmoke = true\n')
    out = bench.runpytest_subprocess("bench", "--catalog", "catalog.toml", "-p", "no:cacheprovider",
                                     "--ways", "20,100", "--samples", "4")
    out.assert_outcomes(passed=4)
    loading = [line for line in out.stdout.lines if ": loading " in line]
    assert loading == [f"  my-clip-20way: loading {folder} on cpu"], loading  # once per model, not per case


def test_the_nli_model_follows_the_case_onto_its_accelerator():
    from vlmcls.session import nli_device

    assert [nli_device(d) for d in ("cuda:3", "cuda", "mps", "cpu", "auto")] == ["cuda:3", "cuda", "mps", "auto", "auto"]
