"""vlmcls.plan: (catalog, run options) -> case specs, the one place for precedence.

For every option that can come from all three places: the command line wins over the catalog
entry (or, with --study, the study's row), which wins over the default. The options are parsed by
the real option declarations (vlmcls.options), so a renamed `dest` breaks these tests too.
"""
from __future__ import annotations

import argparse
from dataclasses import fields

import pytest

from vlmcls import plan
from vlmcls.catalog import ModelEntry, StudyRow
from vlmcls.options import DEFAULT_WAYS, add_options
from vlmcls.settings import BackendSettings


class _Parser:
    """pytest's Parser, as far as add_options uses it, over plain argparse."""

    def __init__(self):
        self.argparse = argparse.ArgumentParser()

    def getgroup(self, *_):
        return self

    def addoption(self, *names, **kw):
        self.argparse.add_argument(*names, **kw)


def options(*argv: str) -> plan.RunOptions:
    parser = _Parser()
    add_options(parser)
    return plan.RunOptions.from_namespace(parser.argparse.parse_args(list(argv)))


def entry(backend: str = "hf-vlm", **kw) -> ModelEntry:
    return ModelEntry(name=kw.pop("name", "m"), backend=backend, weights=kw.pop("weights", "org/m"), **kw)


def test_every_option_is_a_run_option():
    """RunOptions names each declared option by its dest (pytest's --strict-cases folds into strict)."""
    parser = _Parser()
    add_options(parser)
    dests = {a.dest for a in parser.argparse._actions if a.dest != "help"}
    assert dests - {"strict_cases"} == {f.name for f in fields(plan.RunOptions)} - {"strict"}


def test_strict_comes_from_either_flag():
    assert options("--strict-cases").strict and not options().strict
    assert plan.RunOptions.from_namespace(argparse.Namespace(strict=True)).strict  # pytest's own --strict


# (CLI argv, catalog entry fields, the BackendSettings field, CLI value, catalog value)
SETTINGS = [
    (["--quant", "nf4"], {"quant": "int8"}, "quant", "nf4", "int8"),
    (["--dtype", "float16"], {"dtype": "bfloat16"}, "dtype", "float16", "bfloat16"),
    (["--batch-size", "3"], {"options": {"batch_size": 5}}, "batch_size", 3, 5),
    (["--max-new-tokens", "7"], {"options": {"max_new_tokens": 9}}, "max_new_tokens", 7, 9),
    (["--layout", "image-first"], {"options": {"layout": "labels-first"}}, "layout", "image-first", "labels-first"),
    (["--concurrency", "2"], {"options": {"concurrency": 4}}, "concurrency", 2, 4),
    (["--max-image-side", "256"], {"options": {"max_image_side": 512}}, "max_image_side", 256, 512),
    (["--device", "cpu"], {"options": {"device": "mps"}}, "device", "cpu", "mps"),
]


@pytest.mark.parametrize("argv, catalog, name, cli_value, catalog_value", SETTINGS, ids=[s[2] for s in SETTINGS])
def test_a_setting_comes_from_the_cli_then_the_catalog_then_the_default(argv, catalog, name, cli_value, catalog_value):
    default = getattr(BackendSettings(), name)
    assert cli_value != catalog_value != default  # else the test could not tell the levels apart
    assert getattr(plan.spec(entry(**catalog), 20, options(*argv)).settings, name) == cli_value
    assert getattr(plan.spec(entry(**catalog), 20, options()).settings, name) == catalog_value
    assert getattr(plan.spec(entry(), 20, options()).settings, name) == default


def test_the_base_url_comes_from_the_cli_then_the_catalog_then_none():
    served = {"backend": "openai-compatible", "options": {"base_url": "http://catalog:1/v1"}}
    assert plan.spec(entry(**served), 20, options("--base-url", "http://cli:1/v1")).settings.base_url == "http://cli:1/v1"
    assert plan.spec(entry(**served), 20, options()).settings.base_url == "http://catalog:1/v1"
    assert plan.spec(entry("openai-compatible"), 20, options()).settings.base_url is None


def test_the_subset_size_comes_from_the_cli_then_the_catalog_then_the_whole_split():
    slow = entry(samples=12)
    assert plan.spec(slow, 20, options("--samples", "30")).samples == 30
    assert plan.spec(slow, 20, options()).samples == 12
    assert plan.spec(entry(), 20, options()).samples is None


def test_a_catalog_subset_is_capped_by_the_dataset_but_the_cli_is_taken_as_given():
    opts = options()
    assert plan.subset_size(plan.spec(entry(samples=12), 20, opts), opts, dataset_size=8) == 8
    assert plan.subset_size(plan.spec(entry(samples=12), 20, opts), opts, dataset_size=None) == 12  # size unknown
    assert plan.subset_size(plan.spec(entry(), 20, opts), opts, dataset_size=8) is None
    cli = options("--samples", "30")  # validate() refuses --samples above the dataset's size, up front
    assert plan.subset_size(plan.spec(entry(samples=12), 20, cli), cli, dataset_size=8) == 30


def test_the_nli_model_comes_from_the_cli_else_the_one_for_the_kind_of_model():
    assert plan.spec(entry(), 20, options("--nli-model", "my/nli")).nli_model == "my/nli"
    assert plan.spec(entry(), 20, options()).nli_model == plan.DEFAULT_NLI
    assert plan.spec(entry(smoke=True), 20, options()).nli_model == plan.SMOKE_NLI


def test_auto_device_is_asked_only_for_local_models_left_on_auto():
    asked = []

    def gpu() -> str:
        asked.append(1)
        return "cuda:1"

    assert plan.spec(entry(), 20, options(), auto_device=gpu).settings.device == "cuda:1"
    assert plan.spec(entry(), 20, options("--device", "cpu"), auto_device=gpu).settings.device == "cpu"
    assert plan.spec(entry("openai"), 20, options(), auto_device=gpu).settings.device == "auto"
    assert len(asked) == 1


def test_api_constrained_concerns_served_models_that_can_constrain():
    opts = options("--api-constrained")
    assert plan.spec(entry("openai-compatible"), 20, opts).settings.constrained
    assert not plan.spec(entry("openai"), 20, opts).settings.constrained
    assert not plan.spec(entry("hf-vlm"), 20, opts).settings.constrained
    assert plan.spec(entry("hf-vlm"), 20, options("--resolver", "constrained")).settings.constrained


# ---------------------------------------------------------------------------------- the matrix and --study
STUDIED = entry(name="v", quant="none", study=(StudyRow("v", 20, 0.9, images=100, quant="int8"),
                                               StudyRow("v", 100, 0.8, images=40)))
CATALOG = {"v": STUDIED, "api": entry("openai", name="api", weights="gpt-x")}


def test_the_matrix_is_every_model_at_every_n():
    ids = [s.case_id for s in plan.cases(CATALOG, options("--ways", "5,20"))]
    assert ids == ["v-none-5way", "v-none-20way", "api-5way", "api-20way"]
    assert [s.ways for s in plan.cases(CATALOG, options())] == [*DEFAULT_WAYS, *DEFAULT_WAYS]


def test_study_rows_bring_their_own_n_images_and_quant():
    by_id = {s.case_id: s for s in plan.cases(CATALOG, options("--study"))}
    assert set(by_id) == {"v-int8-20way", "v-none-100way"}  # only the study's rows; the API model has none
    assert by_id["v-int8-20way"].samples == 100 and by_id["v-int8-20way"].settings.quant == "int8"
    assert by_id["v-none-100way"].samples == 40 and by_id["v-none-100way"].settings.quant == "none"  # the catalog's
    assert all(s.labels_mode == "raw" and s.resolver == "study" for s in by_id.values())  # the study's label names


def test_an_option_given_with_study_still_wins():
    (spec,) = plan.cases(CATALOG, options("--study", "--ways", "20", "--quant", "nf4", "--samples", "7", "--labels", "unique"))
    assert (spec.ways, spec.settings.quant, spec.samples, spec.labels_mode) == (20, "nf4", 7, "unique")
    assert plan.cases(CATALOG, options("--study", "--ways", "1000")) == []


def test_the_labels_default_to_unique_without_study():
    assert {s.labels_mode for s in plan.cases(CATALOG, options())} == {"unique"}
    assert {s.labels_mode for s in plan.cases(CATALOG, options("--labels", "raw"))} == {"raw"}


# "thesis" named the study's label mode, resolver and layout before each had its own name
@pytest.mark.parametrize("flag, field, canonical", [("--labels", "labels_mode", "raw"), ("--resolver", "resolver", "study"),
                                                    ("--layout", "layout", "image-first")])
def test_thesis_is_an_alias_of_the_canonical_name(flag, field, canonical):
    for spec in plan.cases(CATALOG, options(flag, "thesis")) + plan.cases(CATALOG, options("--study", flag, "thesis")):
        assert getattr(spec.settings if field == "layout" else spec, field) == canonical
    assert getattr(options(flag, "thesis"), field) == getattr(options(flag, canonical), field) == canonical
    assert getattr(plan.RunOptions(**{field: "thesis"}), field) == canonical  # a script's RunOptions too
    with pytest.raises(SystemExit):
        options(flag, "thesis-nonsense")


def test_a_catalog_layout_of_thesis_reads_as_image_first(tmp_path):
    from vlmcls.catalog import load_catalog

    toml = tmp_path / "c.toml"
    toml.write_text('[models.m]\nbackend = "hf-vlm"\nweights = "org/m"\noptions = { layout = "thesis" }\n')
    (spec,) = plan.cases(load_catalog(toml), options("--ways", "5"))
    assert spec.settings.layout == "image-first"
    toml.write_text('[models.m]\nbackend = "hf-vlm"\nweights = "org/m"\noptions = { layout = "sideways" }\n')
    with pytest.raises(ValueError, match="layout 'sideways'"):
        load_catalog(toml)


def test_run_wide_options_reach_every_spec():
    argv = ("--seed", "3", "--orders", "2", "--dataset", "d", "--prompt", "label-only", "--resolver", "exact",
            "--max-cost", "0.5", "--refresh")
    priced = entry("openai", name="api", weights="gpt-x", price=(2.5, 10.0))
    (spec,) = plan.cases({"api": priced}, options(*argv, "--ways", "5"))
    assert (spec.seed, spec.orders, spec.dataset, spec.prompt, spec.resolver, spec.max_cost, spec.refresh) == \
        (3, 2, "d", "label-only", "exact", 0.5, True)
    # a budget binds priced models only: an unpriced one (a local model, a server without a price) has no cost
    # to count, and the budget would only trim its first batch and turn --nli-overlap off
    (unpriced,) = plan.cases({"api": CATALOG["api"]}, options(*argv, "--ways", "5"))
    (local,) = plan.cases({"v": CATALOG["v"]}, options(*argv, "--ways", "20"))
    assert (unpriced.max_cost, local.max_cost, local.seed) == (None, None, 3)


@pytest.mark.parametrize("given, dtype", [("bf16", "bfloat16"), ("fp16", "float16"), ("half", "float16"),
                                          ("fp32", "float32"), ("bfloat16", "bfloat16")])
def test_dtype_option_takes_the_short_names_the_readme_uses(given, dtype):
    """--dtype bf16 once failed with 'must be one of' although the README and devices.pick_dtype use it."""
    assert plan.spec(entry(), 20, options("--dtype", given)).settings.dtype == dtype
