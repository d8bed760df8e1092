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
