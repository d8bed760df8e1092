"""Four report functions called in-process on rows built here, asserting what a reader sees: the comparison
with the study's published table (`compare.study_section`, the project's headline), the Calibration
section (`markdown.calibration_section`), the "ran on" note (`markdown.ran_on_line`) and the case fields of
results.json (`rows.spec_fields`). Fast enough for a mutation run (no subprocess, no model)."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from vlmcls import devices
from vlmcls.catalog import ModelEntry, StudyRow, load_catalog
from vlmcls.prompts import TEMPLATES, load_template
from vlmcls.report import compare
from vlmcls.report.compare import study_section
from vlmcls.report.markdown import (CALIBRATION_NOTE, calibration_section, parse_table, ran_on_line)
from vlmcls.report.rows import spec_fields
from vlmcls.runner import CaseSpec
from vlmcls.settings import BackendSettings

# ---------------------------------------------------------------------------------- the study
# A small catalog: a quantized local VLM with two study rows, a classifier whose 1000-way figure cannot be
# top-1 (top1 far below it), and an API model known only by an accuracy-only `reference`.
ALPHA = ModelEntry(name="alpha", backend="hf-vlm", weights="org/alpha", quant="int8", study=(
    StudyRow("alpha", 20, accuracy=0.80, precision=0.82, recall=0.79, f1=0.78, images=10000, quant="int8"),
    StudyRow("alpha", 100, accuracy=0.55, precision=0.60, recall=0.50, f1=0.52, images=1600, quant="int8")))
BETA = ModelEntry(name="beta", backend="classifier", weights="org/beta", top1=0.70, study=(
    StudyRow("beta", 1000, accuracy=0.90, precision=0.91, recall=0.90, f1=0.90, images=10000),))
GAMMA = ModelEntry(name="gamma", backend="openai", weights="gamma-1", reference={100: 0.66})
CATALOG = {"alpha": ALPHA, "beta": BETA, "gamma": GAMMA}
STUDY_SETTINGS = {"prompt": "thesis", "labels": "raw", "resolver": "study", "layout": "image-first"}


def conventions(p: float, r: float, f: float) -> dict:
    return {"present": {"precision": p, "recall": r, "f1": f},
            "union": {"precision": p - 0.1, "recall": r - 0.2, "f1": f - 0.05},
            "weighted": {"precision": p + 0.01, "recall": r + 0.02, "f1": f + 0.03}}


def scored(model: str, ways: int, *, p=0.851, r=0.800, f1=0.7654, acc=0.8130, ci=(0.790, 0.830), n=1234,
           conv: bool = False, tag: str | None = None, **fields) -> dict:
    metrics = {"precision": p, "recall": r, "f1": f1, "accuracy": acc, "accuracy_ci": list(ci), "n": n,
               "average": fields.pop("average", "present")}
    if conv:
        metrics["conventions"] = conventions(p, r, f1)
    quant = fields.pop("quant", "int8" if model == "alpha" else None)
    return {"case_id": f"{tag or model}-{ways}way", "model": model, "ways": ways, "status": "passed",
            "quant": quant, "dataset": "imagenet", "metrics": metrics, **STUDY_SETTINGS, **fields}


def skipped(model: str, ways: int, status: str = "skipped", **fields) -> dict:
    return {**scored(model, ways, **fields), "metrics": None, "status": status}


def table_of(text: str) -> dict[str, dict[str, str]]:
    """The comparison table (the first table), by case id."""
    return {line["Case"]: line for line in parse_table(text.split("### Averaging")[0])}


def test_each_study_figure_is_shown_beside_this_runs_with_the_difference():
    text = study_section([scored("alpha", 20)], CATALOG)
    (line,) = table_of(text).values()
    assert line["Model"] == "alpha" and line["N"] == "20" and line["Case"] == "alpha-20way"
    assert line["Precision"] == "0.851 vs 0.82 (+0.031)"
    assert line["Recall"] == "0.800 vs 0.79 (+0.010)"
    assert line["F1-score"] == "0.765 vs 0.78 (-0.015)"
    assert line["Accuracy"] == "0.813 vs 0.80 (+0.013)"
    assert line["P/R/F1 average"] == "present"
    assert line["Accuracy 95% CI"] == "0.790–0.830"
    assert line["Study inside CI"] == "yes"
    assert line["Images (run / study)"] == "1,234 / 10,000"
    assert line["Unlike the study"] == ""  # every setting the study's
    assert text.startswith("## Compared with the study\n\n" + compare.STUDY_INTRO + "\n\n" + compare.AVERAGES_TEXT + "\n\n|")


@pytest.mark.parametrize("ci, inside", [((0.80, 0.83), "yes"), ((0.70, 0.80), "yes"), ((0.801, 0.9), "no"),
                                        ((0.6, 0.799), "no")])
def test_study_inside_ci_includes_both_bounds(ci, inside):
    (line,) = table_of(study_section([scored("alpha", 20, ci=ci)], CATALOG)).values()
    assert line["Study inside CI"] == inside


def test_the_average_each_row_used_is_named():
    (line,) = table_of(study_section([scored("alpha", 20, average="weighted")], CATALOG)).values()
    assert line["P/R/F1 average"] == "weighted"


def test_settings_unlike_the_studys_are_named_each_with_the_studys_value():
    row = scored("alpha", 20, quant="none", prompt="label-only", labels="unique", resolver="exact",
                 layout="labels-first")
    (line,) = table_of(study_section([row], CATALOG)).values()
    assert line["Unlike the study"] == ("quant none (study's: int8); prompt label-only (study's: thesis); labels unique "
                                        "(study's: raw); resolver exact (study's: study); layout labels-first (study's: "
                                        "image-first)")
    # rows saved before the rename say "thesis" for the study's labels, resolver and layout: no difference
    old = scored("alpha", 20, labels="thesis", resolver="thesis", layout="thesis")
    (line,) = table_of(study_section([old], CATALOG)).values()
    assert line["Unlike the study"] == ""


def test_a_figure_that_cannot_be_top1_is_shown_but_not_compared_and_explained():
    text = study_section([scored("beta", 1000, acc=0.76, ci=(0.75, 0.77), n=10000)], CATALOG)
    (line,) = table_of(text).values()
    assert line["Accuracy"] == "0.760 vs 0.90 (see note)"
    assert line["Precision"] == "0.851 vs 0.91 (see note)"
    assert line["Study inside CI"] == "not compared: see note"
    assert line["Images (run / study)"] == "10,000 / 10,000"
    head = "Study figures that cannot be top-1 accuracy over the stated classes:"
    note = ("- beta 1000-way: the study's 1000-way accuracy 0.90 is far above the published ImageNet top-1 of beta "
            "(70.00%); at 1000-way every class is a candidate, so it cannot be top-1 accuracy over these classes: not "
            "compared, no gate")
    assert f"\n\n{head}\n\n{note}" in text
    # the note stands under any comparison, even one that does not show beta
    assert f"{head}\n\n{note}" in study_section([scored("alpha", 20)], CATALOG)


def test_an_accuracy_only_reference_has_no_other_figures_and_no_image_count():
    (line,) = table_of(study_section([scored("gamma", 100, acc=0.7, ci=(0.6, 0.65), n=300)], CATALOG)).values()
    assert line["Accuracy"] == "0.700 vs 0.66 (+0.040)"
    assert line["Precision"] == "0.851 vs –" and line["F1-score"] == "0.765 vs –"
    assert line["Study inside CI"] == "no"
    assert line["Images (run / study)"] == "300 / –"


GAMMA_LINE = ("1 accuracy-only reference not run: gamma 100-way (`pytest bench --study` runs only the study's own rows; "
              "`pytest bench -k gamma --ways 100` runs it).")


def test_rows_not_run_are_counted_and_named_with_the_hint_to_run_them():
    text = study_section([scored("alpha", 20)], CATALOG)
    assert ("\n\n2 study rows not run: alpha 100-way, beta 1000-way (`pytest bench --study` runs "
            "them all).\n\n" + GAMMA_LINE + "\n\n") in text
    # the table's rows are only those scored
    assert list(table_of(text)) == ["alpha-20way"]


def test_a_selected_row_that_did_not_run_is_told_where_its_reason_is_not_to_run_it():
    text = study_section([scored("alpha", 20), skipped("beta", 1000)], CATALOG)
    assert "1 study row not run: alpha 100-way (`pytest bench --study` runs them all)." in text
    assert GAMMA_LINE in text
    assert ("1 study row not run: beta 1000-way (skipped): this run selected it, and it did not run here (e.g. its "
            "weights or API key are not on this machine); each case's reason is under *Not run* above.") in text
    both = study_section([scored("alpha", 20), skipped("beta", 1000), skipped("gamma", 100, status="error")], CATALOG)
    assert ("2 study rows not run: beta 1000-way (skipped), gamma 100-way (error): this run selected them, and they "
            "did not run here (e.g. their weights") in both


def test_a_row_scored_at_another_n_does_not_count_as_the_studys():
    text = study_section([scored("alpha", 50), scored("alpha", 20)], CATALOG)
    assert list(table_of(text)) == ["alpha-20way"]


def test_the_dataset_is_named_when_it_is_not_the_studys():
    text = study_section([scored("alpha", 20, dataset="sample")], CATALOG)
    line = "The study measured ImageNet-1k validation; this run used sample, so differences also reflect the data."
    assert f"{compare.AVERAGES_TEXT}\n\n{line}\n\n|" in text
    assert "so differences also reflect the data" not in study_section([scored("alpha", 20)], CATALOG)


@pytest.mark.parametrize("dataset", ["imagenet", "imagenet-1k"])
def test_the_names_open_dataset_reads_as_the_studys_imagenet_are_not_other_data(dataset):
    """data.open_dataset reads both `imagenet` and `imagenet-1k` as the hub's ImageNet-1k validation stream (no
    split suffix: the stream has one split, and `imagenet:validation` is no dataset): the study's data."""
    text = study_section([scored("alpha", 20, dataset=dataset)], CATALOG)
    assert list(table_of(text)) == ["alpha-20way"] and "reflect the data" not in text
    both = study_section([scored("alpha", 20, dataset="imagenet-1k"), scored("alpha", 100, dataset="imagenet")], CATALOG)
    assert "reflect the data" not in both
    # beside other data only that is named
    mixed = study_section([scored("alpha", 20, dataset="imagenet-1k"), scored("alpha", 100, dataset="sample")], CATALOG)
    assert "The study measured ImageNet-1k validation; this run used sample, so differences also reflect the data." in mixed


def test_the_study_data_names_are_those_open_dataset_streams(monkeypatch):
    """Each name compare treats as the study's data opens the hub stream, and `imagenet:validation` opens nothing."""
    from vlmcls import data, imagenet_hub
    from vlmcls.sources import DatasetError

    monkeypatch.setattr(imagenet_hub, "imagenet_stream_source", lambda: "the hub stream")
    assert [data.open_dataset(name) for name in compare.STUDY_DATA_NAMES] == ["the hub stream"] * 4
    with pytest.raises(DatasetError, match="unknown dataset"):
        data.open_dataset("imagenet:validation")


def test_every_other_dataset_is_named_but_not_one_only_a_skipped_case_had():
    rows = [scored("alpha", 20, dataset="sample"), scored("smoke-echo", 20, dataset="my-photos"),
            skipped("beta", 1000, dataset="other-set")]
    text = study_section(rows, CATALOG)
    assert "this run used my-photos, sample, so differences also reflect the data." in text
    assert "other-set" not in text


def test_a_row_written_before_the_average_was_recorded_reads_as_the_default():
    row = scored("alpha", 20)
    del row["metrics"]["average"]
    (line,) = table_of(study_section([row], CATALOG)).values()
    assert line["P/R/F1 average"] == "present"


def test_sections_come_in_order_with_blank_lines_between():
    rows = [scored("alpha", 20, conv=True), skipped("beta", 1000)]
    text = study_section(rows, CATALOG)
    order = ["## Compared with the study", compare.STUDY_INTRO, compare.AVERAGES_TEXT, "| Model", "1 study row not run: alpha",
             GAMMA_LINE, "1 study row not run: beta", "Study figures that cannot be", "### Averaging conventions on this run",
             compare.CONVENTIONS_LEAD, "\n| Case "]
    assert [text.index(s) for s in order] == sorted(text.index(s) for s in order)
    # a table needs a blank line before it to render; so do the paragraphs
    assert "|\n\n1 study row not run" in text and f"(`pytest bench --study` runs them all).\n\n{GAMMA_LINE}\n\n1 study row" in text
    assert "above.\n\nStudy figures" in text
    assert f"no gate\n\n### Averaging conventions on this run\n\n{compare.CONVENTIONS_LEAD}\n\n| Case" in text
    # the conventions are defined once, above the comparison table, not again above their own table
    assert text.count(compare.AVERAGES_DEFINED) == 1


def test_the_conventions_table_gives_each_cases_three_averages_and_the_largest_gap():
    text = study_section([scored("alpha", 20, conv=True)], CATALOG)
    (line,) = parse_table(text.split("### Averaging conventions on this run")[1])
    assert line["Case"] == "alpha-20way"
    assert line["Precision present / union / weighted"] == "0.851 / 0.751 / 0.861"
    assert line["Recall present / union / weighted"] == "0.800 / 0.600 / 0.820"
    assert line["Largest gap"] == "0.220"
    # rows written before the conventions were recorded: no such table
    assert "Averaging conventions" not in study_section([scored("alpha", 20)], CATALOG)


def test_a_run_of_no_study_row_says_so_with_the_count_to_run_and_no_list():
    smoke = scored("smoke-echo", 20, dataset="sample")
    text = study_section([smoke], CATALOG)
    # the count is of the rows --study runs (alpha's two, beta's), not gamma's accuracy-only reference, which
    # --study never runs: that gets its own line, with the run that scores it
    assert text == ("## Compared with the study\n\n" + compare.NO_STUDY_ROW
                    + " `pytest bench --study` runs the study's 3 rows.\n\n" + GAMMA_LINE)
    assert "study row not run:" not in text and "|" not in text and "cannot be top-1" not in text
    # a selected row that could not run keeps its line (and only it)
    text = study_section([smoke, skipped("beta", 1000)], CATALOG)
    assert text.splitlines()[2].endswith(" `pytest bench --study` runs the study's 3 rows.")
    assert "\n\n1 study row not run: beta 1000-way (skipped): this run selected it" in text
    assert "alpha 100-way" not in text and text.count("gamma") == GAMMA_LINE.count("gamma")
    assert "cannot be top-1" not in text  # no note on figures the section does not show


def test_with_one_study_row_in_the_catalog_and_none_scored_it_is_named():
    solo = {"alpha": ModelEntry(name="alpha", backend="hf-vlm", weights="org/alpha", study=ALPHA.study[:1])}
    text = study_section([], solo)
    assert text.startswith("## Compared with the study\n\n" + compare.NO_STUDY_ROW
                           + "\n\n1 study row not run: alpha 20-way (`pytest bench --study` runs them all).")
    assert "runs the study's" not in text


def test_a_reference_only_row_is_not_sent_to_study_which_never_runs_it():
    """`--study` runs `catalog.study_cases`, the `study` rows only: a model known by an accuracy-only
    `reference` was once listed as a study row not run, "(`pytest bench --study` runs them all)"."""
    from vlmcls.catalog import study_cases

    assert study_cases({"gamma": GAMMA}) == []  # what --study would run: nothing
    text = study_section([], {"gamma": GAMMA})
    assert text == "## Compared with the study\n\n" + compare.NO_STUDY_ROW + "\n\n" + GAMMA_LINE
    assert "study row not run" not in text and "runs them all" not in text and "runs the study's" not in text
    # two models, one with two N: one run per model, each at its N
    delta = ModelEntry(name="delta", backend="anthropic", weights="delta-1", reference={20: 0.5, 1000: 0.2})
    text = study_section([scored("alpha", 20)], {**CATALOG, "delta": delta})
    assert ("3 accuracy-only references not run: gamma 100-way, delta 20-way, delta 1000-way (`pytest bench --study` "
            "runs only the study's own rows; `pytest bench -k gamma --ways 100`, `pytest bench -k delta --ways 20,1000` "
            "run them).") in text
    assert "2 study rows not run: alpha 100-way, beta 1000-way (`pytest bench --study` runs them all)." in text
    # smoke-only beside them: the count is of the study's rows alone
    text = study_section([scored("smoke-echo", 20, dataset="sample")], {**CATALOG, "delta": delta})
    assert " `pytest bench --study` runs the study's 3 rows.\n\n3 accuracy-only references not run:" in text
    # a reference row this run selected and could not run: where its reason is, as for a study row
    text = study_section([skipped("gamma", 100)], {"gamma": GAMMA})
    assert "1 study row not run: gamma 100-way (skipped): this run selected it" in text and "-k gamma" not in text
    # scored: compared, and not listed
    text = study_section([scored("gamma", 100)], CATALOG)
    assert "gamma-100way" in table_of(text) and "accuracy-only reference not run" not in text


def test_with_two_study_rows_and_none_scored_the_count_replaces_the_list():
    text = study_section([], {"alpha": ALPHA})
    assert text.startswith("## Compared with the study\n\n" + compare.NO_STUDY_ROW
                           + " `pytest bench --study` runs the study's 2 rows.")
    assert "not run:" not in text and "alpha 100-way" not in text


def test_a_model_name_that_looks_like_a_number_is_shown_as_written():
    """tabulate would read "1.10" as the number 1.1 (and "007" as 7) unless told not to parse numbers."""
    entry = ModelEntry(name="1.10", backend="openai", weights="v1.10", study=(
        StudyRow("1.10", 20, accuracy=0.80, precision=0.82, recall=0.79, f1=0.78, images=10000),))
    (line,) = table_of(study_section([scored("1.10", 20)], {"1.10": entry})).values()
    assert line["Model"] == "1.10" and line["N"] == "20"


def test_no_study_row_but_conventions_defines_them_above_their_table():
    text = study_section([scored("smoke-echo", 20, dataset="sample", conv=True)], CATALOG)
    assert (compare.NO_STUDY_ROW + " `pytest bench --study` runs the study's 3 rows.\n\n" + GAMMA_LINE
            + "\n\n### Averaging conventions on this "
            "run\n\n" + compare.AVERAGES_DEFINED + " `--average` picks the one reported.\n\n" + compare.CONVENTIONS_LEAD
            + "\n\n| Case") in text
    assert text.count(compare.AVERAGES_DEFINED) == 1


def test_the_users_own_images_get_no_study_pointer_only_the_conventions():
    own = scored("smoke-echo", 20, dataset="my-photos", conv=True)
    text = study_section([own], CATALOG)
    assert text.startswith("## Averaging conventions on this run\n\n" + compare.AVERAGES_DEFINED
                           + " `--average` picks the one reported.\n\n" + compare.CONVENTIONS_LEAD + "\n\n| Case")
    assert "study" not in text.replace(compare.AVERAGES_DEFINED, "")
    (line,) = parse_table(text)
    assert line["Case"] == "smoke-echo-20way" and line["Largest gap"] == "0.220"
    # without the conventions there is nothing to say at all
    assert study_section([scored("smoke-echo", 20, dataset="my-photos")], CATALOG) == ""
    # a skipped case's row on the user's data: still no pointer
    assert study_section([skipped("smoke-echo", 20, dataset="my-photos")], CATALOG) == ""


@pytest.mark.parametrize("dataset", ["imagenet", "imagenet-1k", "sample", None])
def test_imagenet_and_its_sample_get_the_pointer_to_the_study(dataset):
    row = scored("smoke-echo", 20, dataset=dataset)
    assert study_section([row], CATALOG).startswith("## Compared with the study\n\n" + compare.NO_STUDY_ROW)


def test_a_mixed_run_with_own_images_and_a_study_row_still_compares():
    text = study_section([scored("smoke-echo", 20, dataset="my-photos"), scored("alpha", 20)], CATALOG)
    assert list(table_of(text)) == ["alpha-20way"]
    assert "this run used my-photos, so differences also reflect the data" in text


def test_without_a_catalog_the_bundled_one_with_the_studys_published_rows_is_used():
    row = scored("qwen2-vl-2b", 20, tag="qwen2-vl-2b-none", quant="none", acc=0.90, ci=(0.88, 0.91),
                 n=2000, labels="unique")
    text = study_section([row])
    (line,) = table_of(text).values()
    assert line["Precision"] == "0.851 vs 0.93 (-0.079)" and line["Accuracy"] == "0.900 vs 0.92 (-0.020)"
    assert line["Study inside CI"] == "no" and line["Images (run / study)"] == "2,000 / 10,000"
    assert line["Unlike the study"] == "labels unique (study's: raw)"
    assert "- resnet-50 1000-way: the study's 1000-way accuracy 0.94 is far above the published ImageNet top-1" in text
    count = len(compare.study_rows(load_catalog()))
    assert f"{count - 1} study rows not run: qwen2-vl-2b 100-way, qwen2-vl-2b 1000-way, qwen2-vl-7b 20-way" in text
    smoke = study_section([scored("smoke-echo", 20, dataset="sample")])
    assert smoke.endswith(f" `pytest bench --study` runs the study's {count} rows.")


def test_untrusted_text_in_a_row_cannot_break_the_table():
    row = scored("alpha", 20, tag="alpha|x", prompt="my|prompt")
    (line,) = table_of(study_section([row], CATALOG)).values()
    assert line["Case"] == "alpha|x-20way" and line["Unlike the study"] == "prompt my|prompt (study's: thesis)"


# ---------------------------------------------------------------------------------- Calibration
def bins(*filled: tuple[float, float, int, float, float]) -> list[dict]:
    """15 bins; `filled`: (low, high, n, mean confidence, accuracy) of those holding samples."""
    out = [{"low": i / 15, "high": (i + 1) / 15, "n": 0, "confidence": None, "accuracy": None} for i in range(15)]
    for low, high, n, conf, acc in filled:
        i = round(low * 15)
        out[i] = {"low": low, "high": high, "n": n, "confidence": conf, "accuracy": acc}
    return out


def calib(n=17, **over) -> dict:
    return {"n": n, "top1_accuracy": 0.5294, "top5_accuracy": 0.8236, "mean_confidence": 0.6123, "ece": 0.1234,
            "bins": 15, "reliability": bins((0.6, 2 / 3, 5, 0.63, 0.4), (14 / 15, 1.0, 12, 0.9712, 0.75)),
            "ece_noise": 0.05, "ece_noise_p95": 0.09, "ece_noise_draws": 500, **over}


def crow(case_id="m-20way", ways=20, n=20, **c) -> dict:
    return {"case_id": case_id, "ways": ways, "metrics": None if n is None else {"n": n},
            "calibration": calib(**c)}


NOISE_HEAD = "ECE over 15 bins is biased upward on few samples"


def test_the_calibration_line_gives_each_figure_and_over_how_many_samples():
    out = calibration_section([crow()])
    assert out[:4] == ["## Calibration", "", CALIBRATION_NOTE, ""]
    (line,) = [l for l in out if l.startswith("`m-20way`")]
    assert line == ("`m-20way`: 17 of 20 samples scored, top-1 0.529, top-5 0.824, mean confidence 0.612, ECE (15 bins) "
                    "0.123; a perfectly calibrated model would show ~0.050 on these 17 samples by sampling noise alone "
                    "(95% of simulated runs ≤ 0.090); this ECE is more than sampling noise")
    i = out.index(line)
    assert out[i + 1] == "" and out[i + 3] == "" and out[-1] == ""


def test_the_reliability_table_lists_only_bins_that_hold_samples():
    out = calibration_section([crow()])
    (table,) = [l for l in out if l.startswith("| confidence")]
    assert parse_table(table) == [
        {"confidence": "0.60–0.67", "n": "5", "mean confidence": "0.630", "accuracy": "0.400"},
        {"confidence": "0.93–1.00", "n": "12", "mean confidence": "0.971", "accuracy": "0.750"}]


@pytest.mark.parametrize("n, shown", [(17, "17 samples"), (None, "17 samples"), (30, "17 of 30 samples")])
def test_of_n_only_where_fewer_samples_were_scored_than_the_case_has(n, shown):
    (line,) = [l for l in calibration_section([crow(n=n)]) if l.startswith("`m-20way`")]
    assert line.startswith(f"`m-20way`: {shown} scored, top-1")


def test_top5_is_not_a_figure_at_five_ways_or_fewer():
    (line,) = [l for l in calibration_section([crow("m-5way", ways=5)]) if l.startswith("`m-5way`")]
    assert ", top-5 n/a (N ≤ 5), " in line
    (line,) = [l for l in calibration_section([crow("m-6way", ways=6)]) if l.startswith("`m-6way`")]
    assert ", top-5 0.824, " in line


def test_the_noise_floor_note_is_given_once_before_the_cases_from_the_first_noisy_case():
    rows = [crow("a-20way", bins=10, ece_noise_draws=200), crow("b-20way", ece_noise_draws=300)]
    out = calibration_section(rows)
    notes = [l for l in out if "is biased upward on few samples" in l]
    assert len(notes) == 1
    note = notes[0]
    assert out.index(note) == 4 and out[5] == ""  # after the section's note, before the first case
    assert note.startswith("ECE over 10 bins is biased upward")
    assert "Where that floor is 0.01 or more" in note and "the mean ECE of 200 simulated perfectly calibrated runs" in note
    assert [l.split(":")[0] for l in out if l.startswith("`")] == ["`a-20way`", "`b-20way`"]


def test_the_noise_floor_is_shown_from_0_01_and_the_draws_default_to_words():
    at = calibration_section([crow(ece_noise=0.01)])
    text = "\n".join(at)
    assert "~0.010 on these 17 samples" in text and NOISE_HEAD in text
    row = crow()
    del row["calibration"]["ece_noise_draws"]
    assert "the mean ECE of several hundred simulated" in "\n".join(calibration_section([row]))
    below = "\n".join(calibration_section([crow(ece_noise=0.0099)]))
    assert "biased upward" not in below and "perfectly calibrated" not in below
    older = crow()
    for k in ("ece_noise", "ece_noise_p95", "ece_noise_draws"):
        del older["calibration"][k]
    text = "\n".join(calibration_section([older]))
    assert "biased upward" not in text and text.count("ECE (15 bins) 0.123\n") == 1


def test_without_the_noise_percentile_the_floor_is_given_without_a_verdict():
    (line,) = [l for l in calibration_section([crow(ece_noise_p95=None)]) if l.startswith("`m-20way`")]
    assert line.endswith("ECE (15 bins) 0.123; a perfectly calibrated model would show ~0.050 on these 17 samples by "
                         "sampling noise alone")


def test_a_quiet_case_after_a_noisy_one_keeps_the_note_and_only_the_noisy_one_gets_the_clause():
    out = calibration_section([crow("a-20way", ece_noise=0.002), crow("b-20way")])
    text = "\n".join(out)
    assert text.count(NOISE_HEAD) == 1 and text.count("a perfectly calibrated model would show") == 1
    (a,) = [l for l in out if l.startswith("`a-20way`")]
    assert a.endswith("ECE (15 bins) 0.123")


def test_the_verdict_is_noise_when_the_ece_is_within_the_95th_percentile():
    (line,) = [l for l in calibration_section([crow(ece=0.09)]) if l.startswith("`m-20way`")]
    assert line.endswith("(95% of simulated runs ≤ 0.090); this ECE alone does not show miscalibration")


def test_cases_without_scores_have_no_calibration_section():
    assert calibration_section([]) == []
    assert calibration_section([{"case_id": "x", "ways": 20, "metrics": {"n": 4}, "calibration": None},
                                {"case_id": "y", "ways": 20, "metrics": {"n": 4}}]) == []
    out = calibration_section([{"case_id": "x", "ways": 20, "metrics": {"n": 4}, "calibration": None}, crow()])
    assert [l for l in out if l.startswith("`")] != [] and not any(l.startswith("`x`") for l in out)


def test_a_case_id_is_escaped_in_its_code_span():
    out = calibration_section([crow("m`x-20way")])
    assert any(l.startswith("`m\\`x-20way`: ") for l in out)


# ---------------------------------------------------------------------------------- ran on
def loaded(device: str, dtype: str) -> str:
    return devices.ran_on(SimpleNamespace(device=device, dtype=f"torch.{dtype}"))


def test_one_device_for_every_local_model_is_said_once():
    rows = [{"case_id": "a-20way", "ran_on": loaded("cuda:0", "bfloat16")},
            {"case_id": "api-20way", "ran_on": None}, {"case_id": "c-20way"},
            {"case_id": "b-20way", "ran_on": loaded("cuda:0", "bfloat16")}]
    assert ran_on_line(rows) == ["- local models ran on cuda:0, bfloat16"]


def test_several_devices_are_each_listed_with_their_cases_in_order():
    rows = [{"case_id": "a-20way", "ran_on": loaded("cuda:0", "bfloat16")},
            {"case_id": "b-20way", "ran_on": loaded("cpu", "float16")},
            {"case_id": "c-20way", "ran_on": loaded("cuda:0", "bfloat16")}]
    assert ran_on_line(rows) == [
        "- ran on cuda:0, bfloat16: `a-20way`, `c-20way`",
        "- ran on cpu, float16 (half precision on the CPU: slower than float32 there): `b-20way`"]


@pytest.mark.parametrize("device, dtype, flagged", [("cpu", "float16", True), ("cpu", "bfloat16", True),
                                                    ("cpu", "float32", False), ("cuda:1", "float16", False)])
def test_half_precision_on_the_cpu_is_flagged(device, dtype, flagged):
    (line,) = ran_on_line([{"case_id": "a-20way", "ran_on": loaded(device, dtype)}])
    assert line.startswith(f"- local models ran on {device}, {dtype}")
    assert ("(half precision on the CPU: slower than float32 there)" in line) is flagged


def test_no_local_model_no_line():
    assert ran_on_line([]) == []
    assert ran_on_line([{"case_id": "api-20way", "ran_on": None}, {"case_id": "x", "ran_on": ""}]) == []


def test_ran_on_text_and_case_ids_are_escaped():
    assert ran_on_line([{"case_id": "a", "ran_on": "cuda|0, bf16"}]) == ["- local models ran on cuda\\|0, bf16"]
    lines = ran_on_line([{"case_id": "a`b", "ran_on": "x|y"}, {"case_id": "c", "ran_on": "z"}])
    assert lines == ["- ran on x\\|y: `a\\`b`", "- ran on z: `c`"]


# ---------------------------------------------------------------------------------- spec_fields
VLM = ModelEntry(name="vlm", backend="hf-vlm", weights="org/vlm", quant="int8", reference={20: 0.8},
                 trust_remote_code=True)
ECHO = ModelEntry(name="m", backend="echo", weights="smoke:echo", smoke=True)
KEYS = {"case_id", "tag", "model", "backend", "weights", "smoke", "ways", "quant", "layout", "dataset", "samples",
        "seed", "prompt", "prompt_text", "labels", "resolver", "reference", "trust_remote_code", "device_kind",
        "nli_model", "settings", "label_names"}


def test_every_field_of_a_local_vlm_case():
    settings = BackendSettings(quant="nf4", device="cuda:1", layout="labels-first", trust_remote_code=True,
                               max_new_tokens=9, extra={"min_pixels": 5, "where": Path("/x/y")})
    spec = CaseSpec(model=VLM, ways=20, settings=settings, dataset="imagenet", samples=40, seed=3,
                    prompt="label-only", labels_mode="raw", resolver="exact", nli_model="my/nli",
                    prompt_id="label-only")
    f = spec_fields(spec)
    assert set(f) == KEYS
    assert f["case_id"] == "vlm-nf4-20way-label-only"
    assert f["tag"] == "vlm-nf4 [label-only]"  # a sweep's rows differ only in their prompt
    assert (f["model"], f["backend"], f["weights"], f["smoke"]) == ("vlm", "hf-vlm", "org/vlm", False)
    assert (f["ways"], f["quant"], f["layout"]) == (20, "nf4", "labels-first")  # the run's quant, not the entry's
    assert (f["dataset"], f["samples"], f["seed"]) == ("imagenet", 40, 3)
    assert (f["prompt"], f["prompt_text"]) == ("label-only", TEMPLATES["label-only"].text)
    assert (f["labels"], f["resolver"]) == ("raw", "exact")
    assert f["reference"] == 0.8
    assert f["trust_remote_code"] is True
    assert f["device_kind"] == "cuda"
    assert f["nli_model"] is None  # exact never calls NLI
    s = f["settings"]
    assert (s["quant"], s["device"], s["max_new_tokens"], s["layout"]) == ("nf4", "cuda:1", 9, "labels-first")
    assert s["extra"] == {"min_pixels": 5, "where": "/x/y"}  # JSON-safe


def test_the_defaults_of_a_non_quantized_smoke_model():
    f = spec_fields(CaseSpec(model=ECHO, ways=100, settings=BackendSettings(quant="int8", device="cpu")))
    assert set(f) == KEYS
    assert (f["case_id"], f["tag"]) == ("m-100way", "m")
    assert f["smoke"] is True
    assert f["quant"] is None  # quantization means nothing to this backend
    assert (f["dataset"], f["samples"], f["seed"]) == ("sample", None, 0)
    assert (f["prompt"], f["labels"], f["resolver"], f["layout"]) == ("thesis", "unique", "study", "image-first")
    assert f["prompt_text"] == TEMPLATES["thesis"].text
    assert f["reference"] is None and f["trust_remote_code"] is False and f["label_names"] is None
    assert f["device_kind"] == "cpu"
    assert f["nli_model"] == "facebook/bart-large-mnli"  # the study's resolver ends in NLI


@pytest.mark.parametrize("device, kind", [("cuda", "cuda"), ("cuda:3", "cuda"), ("cpu", "cpu"), ("auto", "auto"),
                                          ("mps", "mps")])
def test_device_kind(device, kind):
    assert spec_fields(CaseSpec(model=ECHO, ways=20, settings=BackendSettings(device=device)))["device_kind"] == kind


@pytest.mark.parametrize("entry_allows, user_allows", [(True, False), (False, True), (False, False)])
def test_remote_code_only_when_the_entry_and_the_user_both_allow_it(entry_allows, user_allows):
    entry = ModelEntry(name="vlm", backend="hf-vlm", weights="org/vlm", trust_remote_code=entry_allows)
    spec = CaseSpec(model=entry, ways=20, settings=BackendSettings(trust_remote_code=user_allows))
    assert spec_fields(spec)["trust_remote_code"] is False


@pytest.mark.parametrize("resolver, nli", [("study", "my/nli"), ("nli", "my/nli"), ("exact", None),
                                           ("constrained", None), ("rank", None)])
def test_the_nli_model_only_where_the_resolver_calls_it(resolver, nli):
    spec = CaseSpec(model=ECHO, ways=20, settings=BackendSettings(), resolver=resolver, nli_model="my/nli")
    assert spec_fields(spec)["nli_model"] == nli


def test_a_prompt_file_records_its_text_and_path_and_a_served_url_loses_its_credentials(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("Which one? {labels}\n")
    mine = load_template(path)
    served = ModelEntry(name="srv", backend="openai-compatible", weights="acme/vlm")
    settings = BackendSettings(base_url="http://ci:secret@host:8000/v1")
    f = spec_fields(CaseSpec(model=served, ways=20, settings=settings, prompt=mine))
    assert set(f) == KEYS | {"prompt_file"}
    assert (f["prompt"], f["prompt_text"], f["prompt_file"]) == (mine.name, "Which one? {labels}", mine.path)
    assert f["prompt"].startswith("mine.txt@")
    assert f["settings"]["base_url"] == "http://***@host:8000/v1"
    assert f["tag"] == "srv" and f["quant"] is None
