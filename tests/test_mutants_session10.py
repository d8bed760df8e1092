"""Session 10's mutation run (run 8 in README's table): the behaviour its surviving mutants changed
unseen, each pinned by what a user sees (a number in results.json, a line of report.md, a case id,
whether a batch runs from the cache)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from vlmcls import calibration
from vlmcls.__main__ import main
from test_report_cli import _row, preds, write_run


# ---------------------------------------------------------------- calibration: the ECE noise floor
def _simulated(conf, bins, draws, seed):
    """The recipe calibration.noise documents, one simulated run at a time with the scalar `ece`."""
    rng = np.random.default_rng(seed)
    eces = [calibration.ece(conf, list(rng.random(len(conf)) < np.asarray(conf)), bins) for _ in range(draws)]
    return float(np.mean(eces)), float(np.percentile(eces, 95))


@pytest.mark.parametrize("bins", [15, 4])
def test_the_noise_floor_is_the_mean_and_95th_percentile_of_seeded_simulated_runs(bins, monkeypatch):
    """results.json's ece_noise / ece_noise_p95 can be recomputed from the README's recipe: `draws`
    runs (no more, also when a large case is simulated in chunks), at the case's own bin count."""
    conf = np.random.default_rng(3).uniform(0.05, 1, 30).tolist()
    want = _simulated(conf, bins, 41, seed=5)
    assert calibration.noise(conf, bins=bins, draws=41, seed=5) == pytest.approx(want, abs=1e-12)
    monkeypatch.setattr(calibration, "NOISE_CELLS", 4 * len(conf))  # chunks of 4 runs: 10 x 4 + 1
    assert calibration.noise(conf, bins=bins, draws=41, seed=5) == pytest.approx(want, abs=1e-12)


def test_a_confidence_rounded_just_above_one_counts_in_the_top_bin():
    """A float32 softmax can give a top probability of 1.0000001: ECE puts it in the last bin, and
    the noise floor (computed over all runs at once) must do the same, not fail the case."""
    conf = [1.0000001, 0.5, 0.9, 0.3]
    rows = np.array([[True, False, True, False], [True, True, False, False]])
    assert calibration.ece_many(conf, rows).tolist() == pytest.approx([calibration.ece(conf, list(r)) for r in rows])
    assert calibration.noise(conf, draws=9, seed=2) == pytest.approx(_simulated(conf, 15, 9, seed=2), abs=1e-12)


# ---------------------------------------------------------------- runner: stored answers asked again
def test_a_rerun_with_nothing_changed_has_no_note_and_a_stale_one_says_why(tmp_path):
    from test_runner import jpeg, runner, samples

    from vlmcls.store import Store
    from vlmcls.types import Sample

    store = Store(tmp_path / "s.sqlite")
    data = samples(4)
    runner(store=store).run(data)
    assert runner(store=store).run(data).notes == []
    changed = [Sample(data[0].sample_id, data[0].label, jpeg("yellow")), *data[1:]]
    (note,) = runner(store=store).run(changed).notes
    assert note == ("1 stored answer was asked again: the image or label changed since (for an image file: its "
                    "content; for a row an earlier vlmcls stored without a content hash, its size or modification time)")


# ---------------------------------------------------------------- hub: the revision a row records
def test_a_folder_named_like_a_commit_or_kept_under_snapshots_is_no_hub_revision(tmp_path):
    """Only a hub cache snapshot (`.../snapshots/<40 hex>`) names a commit: a local checkpoint folder
    that happens to be named by a git hash, or one under a folder called snapshots, records none."""
    from vlmcls import hub

    named = tmp_path / "ckpt" / ("a" * 40)
    kept = tmp_path / "snapshots" / "v1"
    for folder in (named, kept):
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
        assert hub.revision(str(folder)) is None
    inside = tmp_path / "models--o--m" / "snapshots" / ("b" * 40) / "sub"
    inside.mkdir(parents=True)
    assert hub.revision(str(inside)) == "b" * 40


# ---------------------------------------------------------------- vlmcls report: merging runs
def _report(tmp_path, *runs, out="out"):
    assert main(["report", *map(str, runs), "--out", str(tmp_path / out), "--no-plots"]) == 0
    text = (tmp_path / out / "report.md").read_text()
    cases = {c["case_id"]: c for c in json.loads((tmp_path / out / "results.json").read_text())["cases"]}
    return text, cases


def _replaced(text: str) -> list[str]:
    return [line for line in text.splitlines() if "replaces" in line]


def test_runs_of_the_same_settings_merge_without_a_warning_and_their_note_ends_there(tmp_path, capsys):
    a = write_run(tmp_path / "a", _row("m", preds(30, wrong=3)))
    b = write_run(tmp_path / "b", _row("m", preds(30, wrong=4)))
    text, _ = _report(tmp_path, a, b)
    assert "warning" not in capsys.readouterr().err and "**Warning**" not in text
    assert [line.endswith("(the later run wins)") for line in _replaced(text)] == [True]


def test_the_mixed_settings_warning_names_each_setting_that_differs(tmp_path, capsys):
    a = write_run(tmp_path / "a", _row("m", preds(30, wrong=3)))
    b = write_run(tmp_path / "b", _row("n", preds(30, wrong=3), seed=1, dataset="mine"))
    text, _ = _report(tmp_path, a, b)
    want = ("the merged runs differ in settings (dataset: mine, sample; seed: 0, 1): their cases are not directly "
            "comparable; the tables list every value and the accuracy plot draws each setting as its own line")
    assert f"vlmcls: warning: {want}" in capsys.readouterr().err
    assert f"**Warning**: {want}." in text


def test_a_replacement_with_another_nli_model_says_so_for_a_vlm_not_for_clip(tmp_path):
    """A VLM's study-resolver answers depend on the NLI model: a replacement that used another one is
    named. CLIP reads neither prompt nor resolver: its replacement under another prompt or NLI model ran alike."""
    a = write_run(tmp_path / "a", _row("m", preds(30, wrong=3), nli_model="org/nli-a"),
                  _row("c", preds(30, wrong=3), backend="clip", nli_model="org/nli-a"))
    b = write_run(tmp_path / "b", _row("m", preds(30, wrong=3), nli_model="org/nli-b"),
                  _row("c", preds(30, wrong=3), backend="clip", nli_model="org/nli-b", prompt="label-only"))
    text, cases = _report(tmp_path, a, b)
    assert set(cases) == {"m-20way", "c-20way"}
    (vlm,) = [line for line in _replaced(text) if "m-20way" in line]
    assert vlm.endswith("(the later run wins); it ran other settings (nli_model org/nli-a → org/nli-b)")
    (clip,) = [line for line in _replaced(text) if "c-20way" in line]
    assert clip.endswith("(the later run wins)")


def test_a_row_written_before_exact_runs_dropped_their_nli_model_is_no_other_setting(tmp_path):
    """Rows written before session 10 recorded --nli-model for every resolver; the same `exact` run
    recorded now has none. Merged, the later run replaces the earlier with no claim of other settings."""
    old, old_preds = _row("m", preds(30, wrong=3), resolver="exact")
    old["nli_model"] = "facebook/bart-large-mnli"
    a = write_run(tmp_path / "a", (old, old_preds))
    b = write_run(tmp_path / "b", _row("m", preds(30, wrong=3), resolver="exact"))
    text, _ = _report(tmp_path, a, b)
    assert [line.endswith("(the later run wins)") for line in _replaced(text)] == [True]


def test_a_prompt_file_names_the_merged_case_by_its_slug_and_a_row_without_tag_by_its_id(tmp_path):
    """Merging a thesis run with a run of `--prompt "My Prompt.txt"`: the cases are named as a sweep
    names them (`m-20way-my-prompt`), not by the file's name; a row whose results.json has no tag
    (hand-written, or an old run) is tagged from its case id."""
    prompt = tmp_path / "My Prompt.txt"
    prompt.write_text("Which of these is it? {labels}\nAnswer with one label.\n")
    thesis, thesis_preds = _row("m", preds(30, wrong=3))
    del thesis["tag"]
    a = write_run(tmp_path / "a", (thesis, thesis_preds))
    from vlmcls.prompts import load_template

    b = write_run(tmp_path / "b", _row("m", preds(30, wrong=6), prompt=load_template(prompt)))
    _, cases = _report(tmp_path, a, b)
    assert set(cases) == {"m-20way-thesis", "m-20way-my-prompt"}
    assert cases["m-20way-thesis"]["tag"] == "m-20way [thesis]"
    assert cases["m-20way-my-prompt"]["tag"] == "m [my-prompt]"


def test_a_merged_folder_merged_again_keeps_every_cases_samples(tmp_path):
    """Found by mutation run 10: a merged folder's rows kept the source_case_id of the run they came from,
    while the folder filed their samples under their new case id; merged again, those samples were lost."""
    thesis = write_run(tmp_path / "a", _row("m", preds(30, wrong=3)))
    label_only = write_run(tmp_path / "b", _row("m", preds(30, wrong=12), prompt="label-only"))
    _report(tmp_path, thesis, label_only, out="first")
    ranked = write_run(tmp_path / "c", _row("m", preds(30, wrong=6), resolver="rank", prompt="label-only"))
    _, cases = _report(tmp_path, tmp_path / "first", ranked, out="second")
    assert set(cases) == {"m-20way-thesis-study", "m-20way-label-only-study", "m-20way-label-only-rank"}
    samples = tmp_path / "second" / "samples"
    assert sorted(p.name for p in samples.iterdir()) == sorted(f"{c}.jsonl" for c in cases)
    assert (samples / "m-20way-thesis-study.jsonl").read_text() == (thesis / "samples" / "m-20way.jsonl").read_text()


# ---------------------------------------------------------------- the labels-first cache and padding
class _Backend:
    """The parts of an hf-vlm backend that the padding check reads (LabelsFirstCache's contract)."""

    def __init__(self, window, max_new_tokens=3, constrained=False, labels=((5, 6, 7),)):
        from types import SimpleNamespace

        from vlmcls.backends.prefix_cache import CacheLimits

        self._cache_limits = CacheLimits(window=window)
        self.settings = SimpleNamespace(max_new_tokens=max_new_tokens, constrained=constrained)
        self.labels, self.notes = labels, []

    def note(self, text):
        self.notes.append(text)

    def _label_ids(self, query):
        return {"query": self.labels}[query]  # each query's candidates

    def fits(self, mask):
        import torch

        from vlmcls.backends.prefix_cache import LabelsFirstCache

        return LabelsFirstCache._padding_fits_cache(self, {"attention_mask": torch.tensor(mask)}, ["query"])


PADDED = [[1, 1, 1, 1], [0, 1, 1, 1]]  # 4 tokens, the second row padded


@pytest.mark.parametrize("window, cached", [(None, True), (8, True), (7, True), (6, False)])
def test_a_padded_batch_runs_cached_only_where_every_window_reaches_the_prompts_first_token(window, cached):
    """4 tokens + 3 new ones: a window of 7 or more sees the whole row, so its pads are only masked
    out; a shorter window would count them (the batch runs uncached, with a note); no sliding layer: cached."""
    backend = _Backend(window)
    assert backend.fits(PADDED) is cached
    assert backend.fits([[1, 1, 1, 1]] * 2) is True  # no padding: always cached
    if cached:
        assert backend.notes == []
    else:
        assert backend.notes == ["labels-first: the sliding attention window would count the padding after the "
                                 "cached label list; batches whose images differ in token count ran without the cache"]


@pytest.mark.parametrize("window, cached", [(9, True), (8, True), (7, False)])
def test_constrained_generation_makes_room_for_the_longest_candidate_and_eos(window, cached):
    """--constrained generates up to the longest candidate (3 tokens) + EOS whatever --max-new-tokens
    says (1 here): 4 + 4 tokens must fit the window."""
    assert _Backend(window, max_new_tokens=1, constrained=True, labels=((5,), (5, 6, 7))).fits(PADDED) is cached


def test_max_new_tokens_counts_where_it_is_longer_than_the_candidates():
    assert _Backend(9, max_new_tokens=5, constrained=True, labels=((5, 6),)).fits(PADDED) is True
    assert _Backend(8, max_new_tokens=5, constrained=True, labels=((5, 6),)).fits(PADDED) is False


def test_every_row_of_a_batch_starts_from_the_whole_cached_prefix():
    """The expanded cache holds the prefix's keys and values for each image of the batch, every
    head (a model with several key-value heads), and a sliding layer's count of tokens seen."""
    import torch
    from transformers import LlamaConfig

    from vlmcls.backends.prefix_cache import LabelsFirstCache

    config = LlamaConfig(num_hidden_layers=2, hidden_size=8, num_attention_heads=2, num_key_value_heads=2,
                         head_dim=4, vocab_size=10, intermediate_size=8)

    class Backend(LabelsFirstCache):
        model = type("M", (), {"config": config})()

    backend = Backend()
    keys = [torch.randn(1, 2, 5, 4) for _ in range(2)]
    values = [torch.randn(1, 2, 5, 4) for _ in range(2)]
    backend._prefix = ((1, 2, 3, 4, 5), [(keys[0], values[0], None), (keys[1], values[1], 9)])
    cache = backend._expanded_cache(3)
    for i, layer in enumerate(cache.layers):
        assert torch.equal(layer.keys, keys[i].expand(3, -1, -1, -1))
        assert torch.equal(layer.values, values[i].expand(3, -1, -1, -1))
    assert cache.layers[1].cumulative_length == 9
    assert backend._prefix[1][0][0].shape == (1, 2, 5, 4)  # the stored prefix stays untouched


def _limits_with(monkeypatch, layers=None, **config):
    """_sliding_windows with the installed transformers' cache replaced: `layers` as its layers, or
    (None) a transformers without per-layer caches, where only the config can say."""
    from types import SimpleNamespace

    import transformers

    from vlmcls.backends import prefix_cache

    def cache(config):
        if layers is None:
            raise TypeError("DynamicCache() got an unexpected keyword argument 'config'")
        return SimpleNamespace(layers=layers)

    monkeypatch.setattr(transformers, "DynamicCache", cache)
    return prefix_cache._sliding_windows(SimpleNamespace(**config))


def test_without_per_layer_caches_the_configs_sliding_window_limits_the_prefix(monkeypatch):
    from vlmcls.backends.prefix_cache import NO_LIMITS, CacheLimits

    sliding = ["full_attention", "sliding_attention"]
    assert _limits_with(monkeypatch, layer_types=sliding, sliding_window=64) == CacheLimits(longest=63, window=64)
    assert _limits_with(monkeypatch, layer_types=["full_attention"], sliding_window=64) == NO_LIMITS
    assert _limits_with(monkeypatch, layer_types=sliding, sliding_window=None) == NO_LIMITS
    assert _limits_with(monkeypatch, layer_types=None, sliding_window=64) == NO_LIMITS
    assert _limits_with(monkeypatch, sliding_window=64) == NO_LIMITS
    assert _limits_with(monkeypatch, layer_types=["full_attention"]) == NO_LIMITS  # no window in the config at all


def test_a_sliding_layer_that_keeps_no_count_limits_the_prefix_and_the_smallest_window_counts(monkeypatch):
    from types import SimpleNamespace

    from vlmcls.backends.prefix_cache import NO_LIMITS, CacheLimits

    plain = SimpleNamespace()  # a layer class that does not say whether it slides: a full one
    full = SimpleNamespace(is_sliding=False)
    carried = SimpleNamespace(is_sliding=True, sliding_window=32, cumulative_length=0)
    uncarried = SimpleNamespace(is_sliding=True, sliding_window=64)
    assert _limits_with(monkeypatch, [plain, full, carried, uncarried]) == CacheLimits(longest=63, window=32)
    assert _limits_with(monkeypatch, [plain, carried]) == CacheLimits(longest=None, window=32)
    assert _limits_with(monkeypatch, [plain, full]) == NO_LIMITS


# ---------------------------------------------------------------- --run-id
@pytest.mark.parametrize("name", ["pr-123", "v1.2_final", "A" * 100, "0"])
def test_a_plain_folder_name_is_a_run_id(name):
    from vlmcls.options import run_id

    assert run_id(name) == name


@pytest.mark.parametrize("name", ["", ".hidden", "../up", "a/b", "a b", "A" * 101, "-dash-first", "é"])
def test_anything_else_is_refused_with_the_rule_and_the_name(name):
    import argparse

    from vlmcls.options import run_id

    with pytest.raises(argparse.ArgumentTypeError) as err:
        run_id(name)
    assert str(err.value) == f"--run-id takes a folder name of letters, digits, '.', '_' and '-' (got {name!r})"


def test_a_model_the_cache_cannot_serve_is_refused_with_one_note_that_says_why():
    from types import SimpleNamespace

    from vlmcls.backends.prefix_cache import cache_limits

    def model(top=None, text=None):
        text_config = SimpleNamespace(cross_attention_layers=text)
        return SimpleNamespace(config=SimpleNamespace(cross_attention_layers=top,
                                                      get_text_config=lambda decoder=False: text_config))

    both_ways = SimpleNamespace(name="paligemma", prefix_cache=False)
    assert cache_limits(model(), both_ways).refusal == (
        "labels-first: paligemma's prompt attends both ways, so a label list cached one way cannot be reused; "
        "ran without the cache")
    family = SimpleNamespace(name="mllama", prefix_cache=True)
    cross = ("labels-first: mllama has cross-attention layers (no cached keys for the text); ran without the cache")
    assert cache_limits(model(text=[3, 8]), family).refusal == cross
    assert cache_limits(model(top=[3, 8]), family).refusal == cross  # listed on the model's own config


# ---------------------------------------------------------------- provenance
def test_provenance_records_every_field_and_a_dirty_checkouts_diff_of_the_package(monkeypatch):
    """results.json's provenance holds each field report.md lists, a date `vlmcls report` can order
    runs by, and for a checkout with uncommitted changes the hash of the diff of the package's own checkout."""
    from datetime import datetime
    from pathlib import Path

    from vlmcls import provenance

    asked = []
    monkeypatch.setattr(provenance, "git_commit", lambda where: asked.append(where) or "0123456789ab-dirty")
    monkeypatch.setattr(provenance, "git_diff", lambda where: f"diff of {where}")
    meta = provenance.collect()
    here = Path(provenance.__file__).resolve().parent
    assert set(meta) == {*provenance.FIELDS, "git_diff"} and asked == [here]
    assert meta["git_commit"] == "0123456789ab-dirty" and meta["git_diff"] == f"diff of {here}"
    assert datetime.strptime(meta["date"], "%Y-%m-%dT%H:%M:%S%z")
    assert meta["python"].count(".") == 2 and meta["cpu"]
    monkeypatch.setattr(provenance, "git_commit", lambda where: "0123456789ab")
    assert set(provenance.collect()) == set(provenance.FIELDS)  # clean: no diff to tell apart


def test_a_folder_outside_any_checkout_has_no_diff(tmp_path):
    from vlmcls import provenance

    assert provenance.git_diff(tmp_path) is None


# ---------------------------------------------------------------- several servers: the per-case line
def test_a_pool_whose_case_never_began_counts_from_zero():
    """A script that drives the backend without the runner never begins a case: the servers line
    counts everything from the start, then from each begin_case."""
    from vlmcls.backends.servers import Pool, Server

    pool = Pool([Server("http://a:1/v1", None), Server("http://b:2/v1", None)], cooldown_s=5.0, faults=(OSError,))
    for exc in (None, OSError("down"), None):
        pool.release(pool.acquire([]), exc)
    assert pool.notes() == ["servers (this case; a request that failed on one was sent to another): "
                            "http://a:1/v1 2 requests, 0 failed; http://b:2/v1 1 requests, 1 failed, taken out 1x"]
    pool.begin_case()
    pool.release(pool.acquire([]), None)  # b is cooling down: a answers
    assert pool.notes()[0].endswith("http://a:1/v1 1 requests, 0 failed; http://b:2/v1 0 requests, 0 failed")


def test_a_merged_reports_provenance_names_each_source_by_its_run_id():
    from vlmcls import provenance

    prov = {"date": "2026-11-27T10:00:00+0000", "vlmcls": "0.1.0", "git_commit": "0123456789ab"}
    meta = {"merged_from": [{"path": "/r/copy-of-pr-7", "run_id": "pr-7", "provenance": prov},
                            {"path": "/r/foreign", "run_id": None, "provenance": prov}]}
    lines = provenance.markdown(meta).splitlines()
    assert lines[:2] == ["## Provenance", ""] and len(lines) == 4
    assert lines[2].startswith("- run pr-7: date 2026-11-27T10:00:00+0000, vlmcls 0.1.0, git commit 0123456789ab")
    assert lines[3].startswith("- run /r/foreign: date ")
    own = provenance.markdown({"provenance": {**prov, "gpu": None}}).splitlines()
    assert "- gpu: none visible" in own and "- cpu: unknown" in own  # no GPU is a fact; a missing field is not
    # a run folder without provenance (written by hand, or before it was recorded): no section at all
    assert provenance.markdown({}) == "" and provenance.markdown({"merged_from": [{"path": "/r/x", "provenance": None}]}) == ""


# ---------------------------------------------------------------- results.json: what was asked
def test_a_row_records_the_prompts_text_and_a_prompt_files_path(tmp_path):
    from vlmcls.catalog import ModelEntry
    from vlmcls.prompts import TEMPLATES, load_template
    from vlmcls.report.rows import spec_fields
    from vlmcls.runner import CaseSpec
    from vlmcls.settings import BackendSettings

    entry = ModelEntry(name="m", backend="echo", weights="smoke:echo", smoke=True)
    row = spec_fields(CaseSpec(model=entry, ways=20, settings=BackendSettings(), prompt="label-only"))
    assert row["prompt_text"] == TEMPLATES["label-only"].text and "prompt_file" not in row
    path = tmp_path / "mine.txt"
    path.write_text("Which one? {labels}\n")
    mine = load_template(path)
    row = spec_fields(CaseSpec(model=entry, ways=20, settings=BackendSettings(), prompt=mine))
    assert (row["prompt_text"], row["prompt_file"]) == (mine.text, mine.path) and mine.path.endswith("mine.txt")


# ---------------------------------------------------------------- --device cuda:N checked before the run
@pytest.mark.parametrize("device, gpus, reason", [
    ("cuda", 1, None), ("cuda:0", 1, None), ("cuda:1", 2, None),
    ("cuda:1", 1, "--device cuda:1 but this machine has 1 CUDA GPU(s)"),
    ("cuda:2", 2, "--device cuda:2 but this machine has 2 CUDA GPU(s)"),
    ("cuda:12", 4, "--device cuda:12 but this machine has 4 CUDA GPU(s)"),
    ("cuda:0", 0, "--device cuda:0 but no CUDA GPU is visible here"),
    ("cpu", 0, None),
])
def test_a_cuda_device_past_the_gpus_there_are_is_one_line(device, gpus, reason, monkeypatch):
    import torch

    from vlmcls import devices

    monkeypatch.setattr(devices, "device_kind", lambda d: ("cuda" if gpus else "cpu") if d == "auto" else d)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    assert devices.unavailable(device) == reason


def test_float16_on_the_cpu_is_flagged_as_half_precision_too():
    import torch

    from vlmcls import devices

    model = torch.nn.Linear(2, 2)
    model.device, model.dtype = torch.device("cpu"), torch.float16
    assert devices.ran_on(model) == "cpu, float16 (half precision on the CPU: slower than float32 there)"
    model.device = torch.device("cuda", 0)
    assert devices.ran_on(model) == "cuda:0, float16"


def test_a_missing_catalog_file_is_one_line_naming_it(tmp_path):
    from vlmcls.catalog import load_catalog

    with pytest.raises(ValueError) as err:
        load_catalog(tmp_path / "nope.toml")
    assert str(err.value) == f"catalog file {tmp_path / 'nope.toml'} not found"


def test_a_catalog_error_names_the_file_and_one_without_models_is_empty(tmp_path):
    from vlmcls.catalog import load_catalog

    bad = tmp_path / "bad.toml"
    bad.write_text("[models.x\nbackend = 1")
    with pytest.raises(ValueError, match=rf"^catalog file {bad} is not valid TOML: "):
        load_catalog(bad)
    lacking = tmp_path / "lacking.toml"
    lacking.write_text('[models.x]\nbackend = "echo"\n')
    with pytest.raises(ValueError, match=rf"^{lacking}: model 'x' lacks "):
        load_catalog(lacking)
    empty = tmp_path / "empty.toml"
    empty.write_text("# no models yet\n")
    assert load_catalog(empty) == {}


# ---------------------------------------------------------------- report.md: the Calibration section
def test_a_noise_floor_of_exactly_the_threshold_is_spelled_out():
    """README: the case's line gives the floor "where it is 0.01 or more"."""
    from test_calibration_report import SMALL, row

    from vlmcls import report

    r = row(SMALL)
    r["calibration"] = {**r["calibration"], "ece": 0.02, "ece_noise": 0.01, "ece_noise_p95": 0.015}
    text = "\n".join(report.calibration_section([r]))
    assert ("ECE (15 bins) 0.020; a perfectly calibrated model would show ~0.010 on these 20 samples by sampling "
            "noise alone (95% of simulated runs ≤ 0.015); this ECE is more than sampling noise") in text
    assert text.count("biased upward on few samples") == 1


def test_a_merged_folder_rendered_elsewhere_keeps_its_samples(tmp_path):
    """The same bug, simplest path: `vlmcls report MERGED --out OTHER` wrote no samples/."""
    thesis = write_run(tmp_path / "a", _row("m", preds(30, wrong=3)))
    label_only = write_run(tmp_path / "b", _row("m", preds(30, wrong=12), prompt="label-only"))
    _report(tmp_path, thesis, label_only, out="first")
    _, cases = _report(tmp_path, tmp_path / "first", out="copy")
    assert sorted(p.name for p in (tmp_path / "copy" / "samples").glob("*.jsonl")) == sorted(f"{c}.jsonl" for c in cases)
