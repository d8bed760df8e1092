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
