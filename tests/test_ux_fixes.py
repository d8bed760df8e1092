"""Catalog validation, reproducible smoke tokenizers, report details and local dataset splits."""
from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from vlmcls import metrics, report
from vlmcls.catalog import ModelEntry, load_catalog
from vlmcls.data import DatasetError, open_dataset
from vlmcls.runner import CaseResult, CaseSpec
from vlmcls.settings import BackendSettings
from vlmcls.types import Prediction


# ----------------------------------------------------------------------------- catalog
def write_catalog(tmp_path, body: str):
    path = tmp_path / "catalog.toml"
    path.write_text(body, encoding="utf-8")
    return path


@pytest.mark.parametrize("line, message", [
    ('backend = "hf_vlm"', r"model 'm' has backend 'hf_vlm'; allowed: .*hf-vlm.*echo"),
    ('quant = "int4"', r"model 'm' has quant 'int4'; allowed: none, int8, nf4$"),
    ('dtype = "bf16"', r"model 'm' has dtype 'bf16'; allowed: auto, bfloat16, float16, float32$"),
    ('options = { max_pixel = 3 }', r"model 'm' has unknown options \['max_pixel'\]; allowed: .*max_pixels"),
])
def test_catalog_rejects_unknown_backend_quant_dtype_and_options(tmp_path, line, message):
    lines = ['weights = "w"'] + ([] if line.startswith("backend") else ['backend = "hf-vlm"']) + [line]
    path = write_catalog(tmp_path, "[models.m]\n" + "\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=message) as info:
        load_catalog(path)
    assert "\n" not in str(info.value)


def test_catalog_accepts_every_option_the_code_reads(tmp_path):
    path = write_catalog(tmp_path, """
[models.m]
backend = "echo"
weights = "smoke:echo"
quant = "nf4"
dtype = "bfloat16"
[models.m.options]
batch_size = 2
constrained = true
min_pixels = 1
max_pixels = 2
templates = "ensemble"
workers = 1
image_backend = "pil"
styles = ["{label}"]
delay_s = 0.0
crash = false
load_log = "x"
choice_field = "guided_choice"
greedy = false
max_retry_after_s = 5
""")
    assert load_catalog(path)["m"].options["greedy"] is False
    assert load_catalog()  # the shipped catalog passes its own checks


# ----------------------------------------------------------------------------- smoke tokenizers
def test_smoke_clip_tokenizer_files_are_identical_across_builds(tmp_path):
    pytest.importorskip("torch")
    from vlmcls.smoke import VERSION
    from vlmcls.smoke.baselines import build_clip

    assert int(VERSION) >= 3  # caches built with the unordered vocabulary (v2 and before) are rebuilt
    a, b = tmp_path / "a", tmp_path / "b"
    for target in (a, b):
        target.mkdir()
        build_clip(target)
    names = sorted(p.name for p in a.iterdir() if "token" in p.name or p.name in ("vocab.json", "merges.txt"))
    assert "tokenizer.json" in names
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


# ----------------------------------------------------------------------------- report
def pred(i: int, stage: str = "match", error: str | None = None, cost: float | None = None) -> Prediction:
    return Prediction(f"s{i}", i % 3, f"c{i % 3}", (), "x", i % 3, f"c{i % 3}", stage, error=error, cost_usd=cost)


def make_row(preds, name="m", ways=20, **spec_kw):
    entry = ModelEntry(name=name, backend=spec_kw.pop("backend", "echo"), weights="smoke:echo",
                       quant=spec_kw.pop("quant", "none"))
    settings = spec_kw.pop("settings", BackendSettings())
    spec = CaseSpec(model=entry, ways=ways, settings=settings, **spec_kw)
    return report.case_row(CaseResult(spec, preds, metrics.compute(preds), images_per_s=1.0), status="passed", threshold=None)


def test_context_line_lists_every_distinct_setting_of_merged_runs():
    same = report.render_markdown([make_row([pred(0)], "a"), make_row([pred(0)], "b")])
    assert "prompt `thesis`, labels" in same and "mixed settings" not in same
    mixed = report.render_markdown([make_row([pred(0)], "a"), make_row([pred(0)], "b", prompt="label-only", seed=3)])
    assert "prompt `thesis`, `label-only`" in mixed and "seed 0, 3" in mixed
    assert "(mixed settings: see results.json)" in mixed


def test_small_stage_shares_show_below_one_percent_and_json_shares_are_rounded():
    preds = [pred(i) for i in range(299)] + [pred(299, stage="nli")]
    row = make_row(preds)
    assert row["stages"] == {"match": pytest.approx(0.996667, abs=0), "nli": 0.003333}
    assert "match &gt;99%, nli &lt;1%" in report.study_table([row])  # renders as ">99%", "<1%"
    thirds = make_row([pred(i, stage=s) for i, s in enumerate(["a", "b", "c"] * 7)])
    assert all(len(repr(v)) <= 8 for v in thirds["stages"].values())


def test_thesis_ambiguity_note_names_no_imagenet_class():
    row = {**make_row([pred(0)]), "ambiguous": 2, "labels": "thesis"}
    note = "\n".join(report._notes([row]))
    assert "crane" not in note and "maillot" not in note
    assert "a class whose raw (study) label another of its candidates shares, or an answer naming several candidates" in note


def test_notes_show_the_first_error_and_the_cost_and_the_table_a_cost_column():
    preds = [pred(0, cost=0.01), pred(1, error="HTTP 500 | <b>boom</b>\n" + "x" * 300, cost=0.0023), pred(2)]
    row = make_row(preds)
    assert row["first_error"].startswith("HTTP 500") and len(row["first_error"]) == 200
    notes = "\n".join(report._notes([row]))
    assert "first: HTTP 500 \\| &lt;b&gt;boom&lt;/b&gt; xxx" in notes and "<b>" not in notes
    assert "cost 0.0123 USD" in notes
    table = report.parse_table(report.study_table([row, make_row([pred(0)], "free")]))
    assert table[0]["Cost (USD)"] == "0.0123" and table[1]["Cost (USD)"] == ""
    assert "Cost (USD)" not in report.study_table([make_row([pred(0)], "free")])


def test_int8_note_only_off_cpu():
    on = lambda device: make_row([pred(0)], backend="hf-vlm", quant="int8",
                                 settings=BackendSettings(quant="int8", device=device))
    assert on("cuda:1")["device_kind"] == "cuda" and on("cpu")["device_kind"] == "cpu"
    gpu = "\n".join(report._notes([on("cuda:1")]))
    assert "on a GPU, bitsandbytes int8 (the study's setting) runs 4-6x slower than bf16 (shared H200 reference)" in gpu
    assert not any("int8" in line for line in report._notes([on("cpu")]))


def test_not_run_reasons_keep_code_spans_but_escape_pipes_and_html():
    spec = CaseSpec(model=ModelEntry("m", "echo", "smoke:echo"), ways=20, settings=BackendSettings())
    row = report.skipped_row(spec, "skipped", "needs `pip install vlmcls[hf]` | <i>x</i>\nnext")
    text = report.render_markdown([row])
    assert "needs `pip install vlmcls[hf]` \\| &lt;i&gt;x&lt;/i&gt; next" in text


def test_rows_carry_the_full_effective_settings():
    settings = BackendSettings(device="cpu", batch_size=3, extra={"styles": ("{label}",), "delay_s": 0.5})
    row = make_row([pred(0)], settings=settings, nli_model="smoke:bart-mnli")
    assert row["nli_model"] == "smoke:bart-mnli"
    assert row["settings"]["batch_size"] == 3 and row["settings"]["device"] == "cpu"
    assert row["settings"]["extra"] == {"styles": ["{label}"], "delay_s": 0.5}
    assert set(row["settings"]) == set(BackendSettings.__dataclass_fields__)
    assert json.loads(json.dumps(row))["settings"] == row["settings"]


# ----------------------------------------------------------------------------- dataset splits
def jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (20, 20), (10, 200, 30)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture
def saved_dict(tmp_path):
    from datasets import ClassLabel, Dataset, DatasetDict, Features
    from datasets import Image as HFImage

    feats = Features({"img": HFImage(), "label": ClassLabel(names=["a", "b"])})
    part = lambda n: Dataset.from_dict({"img": [jpeg()] * n, "label": [i % 2 for i in range(n)]}, features=feats)
    DatasetDict({"train": part(6), "validation": part(2), "test": part(4)}).save_to_disk(tmp_path / "dd")
    return tmp_path / "dd"


def test_local_dataset_split_is_chosen_with_path_colon_split(saved_dict):
    assert open_dataset(str(saved_dict)).size == 2  # validation by default
    src = open_dataset(f"{saved_dict}:train")
    assert src.size == 6 and src.name == f"{saved_dict}:train"
    assert open_dataset(f"{saved_dict}:test").size == 4
    with pytest.raises(DatasetError, match=r"has no split 'tset'; it has \['train', 'validation', 'test'\]") as info:
        open_dataset(f"{saved_dict}:tset")
    assert "\n" not in str(info.value)


def test_synset_folder_split_is_chosen_with_path_colon_split(tmp_path):
    for split, n in (("val", 2), ("train", 3)):
        d = tmp_path / split / "n01440764"
        d.mkdir(parents=True)
        for k in range(n):
            (d / f"{split}_{k}.JPEG").write_bytes(jpeg())
    assert open_dataset(str(tmp_path)).size == 2
    assert open_dataset(f"{tmp_path}:train").size == 3
    with pytest.raises(DatasetError, match=r"has no split 'test'; it has \['train', 'val'\]"):
        open_dataset(f"{tmp_path}:test")


@pytest.mark.parametrize(("amount", "shown"), [
    (0.0123, "0.0123"), (12.5, "12.5000"), (0.0, "0.0000"),
    (0.00012, "0.00012"), (0.000041, "0.000041"), (0.0000999, "0.000100")])
def test_costs_keep_two_significant_digits_below_a_hundredth_of_a_cent(amount, shown):
    """A few gpt-4o-mini images cost ~0.0002 USD; at 4 fixed decimals 0.00004 printed as 0.0000."""
    assert report.text.usd(amount) == shown


def test_a_tiny_cost_shows_in_the_table_and_the_notes():
    row = make_row([pred(0, cost=0.00002), pred(1, cost=0.00002)])
    assert "cost 0.000040 USD" in "\n".join(report._notes([row]))
    assert report.parse_table(report.study_table([row]))[0]["Cost (USD)"] == "0.000040"


def test_smoke_weights_make_a_smoke_entry_whatever_its_name(tmp_path):
    """A user's own entry on `smoke:openai` (a rehearsal of a served model) was reported as a real model:
    no *smoke* mark, its simulated cost read as money spent."""
    from vlmcls.catalog import load_catalog

    path = tmp_path / "mine.toml"
    path.write_text('[models.acme]\nbackend = "openai-compatible"\nweights = "smoke:openai"\nprice = [1.0, 2.0]\n'
                    '[models.real]\nbackend = "openai-compatible"\nweights = "acme/vlm-7b"\n')
    catalog = load_catalog(path)
    assert catalog["acme"].smoke and not catalog["real"].smoke
    path.write_text('[models.acme]\nbackend = "echo"\nweights = "smoke:echo"\nsmoke = false\n')
    with pytest.raises(ValueError, match=r"model 'acme' has weights 'smoke:echo', a random-weight or scripted stand-in, "
                                         r"and smoke = false: .* drop `smoke = false`"):
        load_catalog(path)


def test_the_smoke_note_says_when_a_smoke_entry_is_held_to_thresholds():
    """A smoke entry with `thresholds` failed its accuracy gate right above a note saying smoke gates
    check only the plumbing."""
    from vlmcls.report.markdown import smoke_note

    smoke = {**make_row([pred(0)]), "smoke": True}
    assert report.SMOKE_NOTE in smoke_note([smoke]) and "held to that accuracy gate" not in smoke_note([smoke])
    gated = {**smoke, "threshold": 0.5}
    assert "a *smoke* entry whose catalog sets `thresholds` is held to that accuracy gate as well" in smoke_note([gated]).lower()


def test_an_nli_model_that_fails_to_load_is_named_in_one_line(bench):
    """It read "cannot load the model" (the VLM had loaded), and under --strict-cases the JUnit reason
    carried pytest's "During handling of the above exception" chain."""
    (bench.path / "catalog.toml").write_text('[models.acme]\nbackend = "echo"\nweights = "smoke:echo"\n')
    broken = bench.path / "my-nli"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    out = bench.runpytest_subprocess("bench", "--catalog", "catalog.toml", "--ways", "20", "--samples", "4",
                                     "--nli-model", str(broken), "--strict-cases", "-p", "no:cacheprovider",
                                     "--junitxml", "junit.xml")
    assert out.ret == pytest.ExitCode.TESTS_FAILED
    text = out.stdout.str()
    assert f"acme-20way: cannot load the NLI model ({broken}): " in text
    junit = (bench.path / "junit.xml").read_text()
    assert "cannot load the NLI model" in junit and "During handling of the above exception" not in junit + text


def _gated(status, threshold, n=40, right=0, smoke=False, reason=None, name="m"):
    row = make_row([Prediction(f"s{i}", 1, "c1", (), "x", 1 if i < right else 2, "c1" if i < right else "c2", "match")
                    for i in range(n)], name)
    return {**row, "status": status, "threshold": threshold, "smoke": smoke, "reason": reason}


def test_the_gate_column_says_what_each_case_was_judged_against():
    rows = [_gated("passed", 0.72, right=40, name="a"), _gated("failed", 0.5, name="b"), _gated("no gate", None, name="c"),
            _gated("passed", 0.0, smoke=True, name="d"), _gated("skipped", None, name="e"),
            _gated("failed", 0.0, smoke=True, name="f")]
    gates = [r["gate"] for r in report.parse_table(report.study_table(rows))]
    # a failed smoke case: its plumbing or a baseline failed it, and only Gate failures knows which
    assert gates == ["passed (gate 0.72)", "failed (gate 0.5)", "no gate", "passed (plumbing)", "skipped", "failed"]


def test_the_report_lists_each_failed_cases_reasons_and_the_gates_that_check_nothing():
    failed = _gated("failed", 0.5, reason="m-20way: accuracy 0.000 (95% CI 0.0000-0.0881, n=40): the CI's upper bound "
                                          "0.0881 is below the gate 0.5", name="m")
    weak = _gated("passed", 0.05, name="weak")  # 0 of 40 right: upper bound 0.088 >= 0.05
    enough = _gated("passed", 0.05, n=72, name="enough")  # 1 - 0.025^(1/72) = 0.0500 < 0.05: can fail
    ungated = _gated("no gate", None, name="free")
    text = report.render_markdown([failed, weak, enough, ungated])
    assert "## Gate failures\n\n- m-20way: accuracy 0.000 (95% CI 0.0000-0.0881, n=40): the CI's upper bound 0.0881 " in text
    assert ("- `weak-20way`: at n=40 its gate 0.05 cannot fail (0 of 40 right still has a 95% upper bound of 0.088); "
            "it needs n ≥ 72 (`--samples`)") in text
    assert "`enough-20way`: at n=" not in text
    assert ("- 1 case with no accuracy gate (no threshold at its N: it passes whatever it scores, unless every sample "
            "fails): `free-20way`; set `thresholds = { N = accuracy }` in the catalog entry to gate it") in text
    assert "## Gate failures" not in report.render_markdown([weak, enough])


def test_top5_is_no_result_at_five_candidates_or_fewer_and_chance_stands_beside_each_table():
    """At N <= 5 the top 5 are all the candidates: a top-5 of 1.000 there is arithmetic, not a model."""
    scored = lambda ways: {**make_row([pred(i) for i in range(6)], ways=ways),
                           "calibration": {"n": 6, "top1_accuracy": 0.5, "top5_accuracy": 1.0, "ece": 0.1,
                                           "mean_confidence": 0.6, "bins": 15, "reliability": []}}
    small, large = scored(3), scored(20)
    assert report.parse_table(report.study_table([small]))[0]["Top-5 accuracy"] == "n/a (N ≤ 5)"
    assert report.parse_table(report.study_table([large]))[0]["Top-5 accuracy"] == "1.000"
    assert "top-1 0.500, top-5 n/a (N ≤ 5)," in "\n".join(report.calibration_section([small]))
    text = report.render_markdown([small, large])
    assert "Chance at 3-way (a uniform guess among the candidates): accuracy 0.333." in text
    assert "Chance at 20-way (a uniform guess among the candidates): accuracy 0.050, top-5 0.250." in text


def test_a_case_whose_every_answer_was_unresolved_says_what_to_try():
    lost = make_row([pred(i, stage="unresolved") for i in range(4)], "lost")
    some = make_row([pred(0, stage="unresolved"), pred(1)], "some")
    note = "\n".join(report._notes([lost, some]))
    assert "- `lost-20way`: every answer was unresolved: none named a candidate" in note
    assert "`some-20way`: every answer" not in note


def test_a_run_on_the_users_own_images_gets_no_study_comparison():
    """The study measured ImageNet: on a user's folder, "No study row was scored" and "18 study rows
    not run" were noise; the averaging conventions stay (they describe this run)."""
    from vlmcls.report.compare import study_section

    own = [make_row([pred(i) for i in range(6)], dataset="/data/mine")]
    text = study_section(own)
    assert "Compared with the study" not in text and "study rows not run" not in text
    assert text.startswith("## Averaging conventions on this run")
    imagenet = study_section([make_row([pred(i) for i in range(6)], dataset="sample")])
    assert imagenet.startswith("## Compared with the study") and "`pytest bench --study` runs the study's" in imagenet
