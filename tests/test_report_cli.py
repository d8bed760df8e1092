"""`python -m vlmcls report`: re-rendering, merging, the study and baseline comparisons, plots."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from scipy import stats

from vlmcls import compare, metrics, plots, report
from vlmcls.__main__ import main
from vlmcls.catalog import ModelEntry, load_catalog
from vlmcls.runner import CaseResult, CaseSpec
from vlmcls.settings import BackendSettings
from vlmcls.types import Prediction

BENCH = Path(__file__).resolve().parents[1] / "bench"
PNG = b"\x89PNG\r\n\x1a\n"
HOSTILE = "cat | dog\n\n| --- |\n<script>alert(1)</script> $\\frac{a"


# ---------------------------------------------------------------------------------- run folders
@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> Path:
    """A run folder written by the plugin itself (echo smoke model, 20- and 100-way, 60 images).

    At 100-way, 60 images may well score 0 and fail the smoke gate (rc 1): the report is written anyway."""
    root = tmp_path_factory.mktemp("bench")
    shutil.copytree(BENCH, root / "bench", ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run([sys.executable, "-m", "pytest", "bench", "-k", "echo", "--ways", "20,100", "--samples", "60",
                           "-p", "no:cacheprovider", "-q"], cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]
    (run,) = [d for d in (root / "reports").iterdir() if d.is_dir()]
    assert all(c["metrics"] for c in json.loads((run / "results.json").read_text())["cases"])
    return run


@pytest.fixture
def run_copy(real_run, tmp_path) -> Path:
    """A private copy: rendering in place must not change what the other tests see."""
    return Path(shutil.copytree(real_run, tmp_path / "runs" / real_run.name))


def preds(n: int, wrong: int = 0, prefix: str = "s", true_label: str = "cat", pred_label: str = "dog",
          ids: tuple[int, int] = (1, 2)) -> list[Prediction]:
    """n samples of class ids[0]; the first `wrong` are predicted as class ids[1]."""
    true, other = ids
    return [Prediction(f"{prefix}{i}", true, true_label, (true_label, pred_label), "x",
                       other if i < wrong else true, pred_label if i < wrong else true_label, "match") for i in range(n)]


def case(name: str, ways: int, predictions, reference=None, smoke=False) -> tuple[dict, list[Prediction]]:
    entry = ModelEntry(name=name, backend="echo", weights="smoke:echo", smoke=smoke, reference=reference or {})
    spec = CaseSpec(model=entry, ways=ways, settings=BackendSettings())
    result = CaseResult(spec, predictions, metrics.compute(predictions), images_per_s=10.0)
    return report.case_row(result, status="passed", threshold=None), predictions


def write_run(path: Path, *cases: tuple[dict, list | None], run_id: str | None = None) -> Path:
    """A run folder as the plugin writes it, through vlmcls.report."""
    for row, predictions in cases:
        if predictions is not None:
            report.write_samples(path / "samples" / f"{row['case_id']}.jsonl", predictions)
    report.write_report([row for row, _ in cases], path, {"run_id": run_id or path.name})
    return path


def is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == PNG and path.stat().st_size > 1024


def section(text: str, heading: str) -> str:
    return text.split(heading, 1)[1].split("\n## ", 1)[0]


# ---------------------------------------------------------------------------------- McNemar
def test_mcnemar_matches_textbook_chi_square_cases():
    # Agresti (1990), Categorical Data Analysis, p. 350, presidential approval of 1600 voters in two
    # surveys (794 / 150 / 86 / 570); R's mcnemar.test example gives chi-squared = 16.818, p = 4.115e-05.
    assert compare.mcnemar(150, 86) == pytest.approx(4.115e-05, rel=1e-3)
    assert compare.mcnemar(86, 150) == compare.mcnemar(150, 86)
    # Cardillo, "McNemar test", MATLAB File Exchange 15472 (drug vs placebo, 101 / 59 / 121 / 33):
    # chi-square with Yates' correction = 20.672222, p = 0.000005.
    assert stats.chi2.isf(compare.mcnemar(121, 59), 1) == pytest.approx(20.672222, rel=1e-6)
    assert compare.mcnemar(121, 59) == pytest.approx(5.45e-06, rel=1e-2)


def test_mcnemar_uses_the_exact_binomial_below_25_discordant_pairs():
    assert compare.mcnemar(1, 9) == pytest.approx(22 / 1024)  # 2 * P(X <= 1), X ~ Bin(10, 1/2) = 0.0215
    assert compare.mcnemar(4, 20) == pytest.approx(stats.binomtest(4, 24).pvalue)  # 24 pairs: exact
    assert compare.mcnemar(5, 20) == pytest.approx(stats.chi2.sf(14 ** 2 / 25, 1))  # 25 pairs: chi-square
    assert compare.mcnemar(0, 0) == 1.0
    with pytest.raises(ValueError):
        compare.mcnemar(-1, 3)


def test_worse_than_baseline_pairs_by_sample_id_and_counts_unpaired_samples():
    baseline = preds(100) + preds(3, prefix="old")
    current = list(reversed(preds(100, wrong=30))) + preds(5, prefix="new")  # order must not matter
    worse, message = compare.worse_than_baseline(current, baseline)
    assert worse and "significantly worse than the baseline" in message
    assert "lost 30, gained 0" in message and "100 paired samples" in message
    assert "5 samples only in this run, 3 only in the baseline" in message
    better, message = compare.worse_than_baseline(baseline, current)
    assert not better and "significantly better" in message
    same, message = compare.worse_than_baseline(preds(50, wrong=2), preds(50, wrong=3))
    assert not same and "no significant difference" in message


def test_worse_than_baseline_reads_json_records_and_refuses_to_guess_without_overlap():
    as_json = [json.loads(json.dumps(p.__dict__)) for p in preds(40, wrong=40)]
    assert compare.worse_than_baseline(as_json, preds(40))[0]
    worse, message = compare.worse_than_baseline(preds(10, prefix="a"), preds(10, prefix="b"))
    assert not worse and "cannot compare" in message


# ---------------------------------------------------------------------------------- the study
def test_study_table_compares_run_rows_and_names_every_other_study_row_once():
    right = 90
    rows = [case("qwen2-vl-2b", 20, preds(100, wrong=100 - right), reference={20: 0.92})[0],
            case("gpt-4o", 100, preds(50, wrong=10))[0]]  # gpt-4o at 100-way: not a study row
    catalog = load_catalog()
    text = compare.study_section(rows, catalog)
    table = report.parse_table(text.split("### Averaging conventions")[0])
    assert [(l["Model"], l["N"]) for l in table] == [("qwen2-vl-2b", "20")]
    qwen = table[0]
    assert (qwen["Accuracy"], qwen["Study inside CI"]) == (f"0.900 vs 0.92 ({0.90 - 0.92:+.3f})", "yes")
    line = next(l for l in text.splitlines() if "study rows not run:" in l)
    published = [(n, r.ways) for n, e in catalog.items() for r in e.study_rows()]
    assert line.startswith(f"{len(published) - 1} study rows not run:")
    for name, ways in published:  # every published row is either compared or named as not run
        assert (name, ways) == ("qwen2-vl-2b", 20) or f"{name} {ways}-way" in line
    assert "not run |" not in text  # no table of "not run" lines


def test_report_rerenders_a_run_in_place_with_plots(run_copy, capsys):
    assert main(["report", str(run_copy)]) == 0
    assert capsys.readouterr().out.strip() == f"report: {run_copy / 'report.md'}"
    text = (run_copy / "report.md").read_text()
    assert "## 20-way" in text and "## 100-way" in text and "## Compared with the study" in text
    assert "![accuracy vs N](plots/accuracy_vs_n.png)" in text
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    # plots only where they carry something: the stage plot when several stages decided, one
    # run-wide confusion chart when a pair occurred twice or more
    stages = {s for c in json.loads((run_copy / "results.json").read_text())["cases"] for s, v in c["stages"].items() if v}
    part = section(text, "## Most frequent confusions")
    table = report.parse_table(part) if "| True label" in part else []
    assert table or "No (true, predicted) pair occurred 2 times or more" in part
    assert len(links) == 1 + (len(stages) > 1) + bool(table)
    assert all(int(line["Count"]) >= 2 for line in table)
    for link in links:
        assert is_png(run_copy / link), link
    assert {c["case_id"] for c in json.loads((run_copy / "results.json").read_text())["cases"]} == {
        "smoke-echo-20way", "smoke-echo-100way"}


def test_plots_label_smoke_models_and_survive_hostile_labels(tmp_path):
    rows = [case("m", 20, preds(30, wrong=20, true_label=HOSTILE, pred_label="x" * 300), reference={20: 0.5})[0],
            case("m", 100, preds(30, wrong=25))[0], case("tiny", 20, preds(30, wrong=29), smoke=True)[0]]
    assert is_png(plots.accuracy_vs_n(rows, tmp_path / "a.png"))
    assert is_png(plots.stage_shares(rows, tmp_path / "s.png"))
    pairs = plots.top_confusions(preds(30, wrong=20, true_label=HOSTILE))
    assert pairs == [(HOSTILE, "dog", 20)]
    assert is_png(plots.confusion_chart("confusions", pairs, tmp_path / "c.png"))
    assert plots.short("y" * 300) == "y" * 39 + "…" and plots.short("a\nb") == "a b"
    assert plots.file_name("../x/<y>") == "_x_y_"


def test_without_matplotlib_the_report_keeps_its_tables(tmp_path, monkeypatch):
    run = write_run(tmp_path / "run", case("m", 20, preds(10, wrong=4)))
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    assert main(["report", str(run)]) == 0
    text = (run / "report.md").read_text()
    assert "matplotlib is not installed" in text and "| cat " in text and not (run / "plots").exists()


def test_import_stays_light():
    code = ("import sys, vlmcls.plots, vlmcls.compare, vlmcls.__main__; "
            "assert not {'matplotlib', 'scipy', 'torch'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_hostile_label_cannot_break_the_confusion_table(tmp_path):
    predictions = preds(20, wrong=6, true_label=HOSTILE, pred_label="dog|<b>x</b>\nrow") + preds(4, wrong=4, prefix="t", ids=(3, 4))
    run = write_run(tmp_path / "run", case("m", 20, predictions))
    assert main(["report", str(run)]) == 0
    text = (run / "report.md").read_text()
    assert "<script>" not in text and "<b>" not in text
    table = report.parse_table(section(text, "## Most frequent confusions"))
    assert len(table) == 2 and all(len(line) == 4 for line in table)
    assert table[0]["True label"].startswith("cat | dog") and table[0]["Count (all cases)"] == "6" and table[0]["Cases (their count)"] == "m-20way (6)"
    assert table[0]["Predicted label"] == "dog|&lt;b&gt;x&lt;/b&gt; row"
    assert is_png(run / "plots" / "confusions.png")


def test_report_merges_two_runs_later_run_wins(run_copy):
    parent = run_copy.parent
    newer, newer_preds = case("smoke-echo", 20, preds(40, wrong=10), smoke=True)
    other, other_preds = case("other", 20, preds(40, wrong=5))
    skipped = report.skipped_row(CaseSpec(model=ModelEntry("smoke-echo", "echo", "smoke:echo", smoke=True), ways=100,
                                          settings=BackendSettings()), "skipped", "no key here")
    run2 = write_run(parent / "run2", (newer, newer_preds), (other, other_preds), (skipped, None))
    proc = subprocess.run([sys.executable, "-m", "vlmcls", "report", str(run_copy), str(run2)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    (merged,) = parent.glob("merged-*")
    cases = {c["case_id"]: c for c in json.loads((merged / "results.json").read_text())["cases"]}
    assert set(cases) == {"smoke-echo-20way", "smoke-echo-100way", "other-20way"}
    assert cases["smoke-echo-20way"]["metrics"]["n"] == 40  # from run2, the later one
    assert cases["smoke-echo-100way"]["metrics"]["n"] == 60  # run2 only skipped it: run1's result stays
    assert "merged 2 runs into 3 cases: 1 taken from a later run (the later run wins), 1 kept" in proc.stderr
    # run2 scored 40 images where run1 had 60: the later one wins, and both the summary and Sources say so
    assert "; 1 of those taken from a later run scored fewer samples than the result they replace;" in proc.stderr
    # one summary line, not one per case; run2 was written with another NLI model: a warning says so
    assert proc.stderr.splitlines()[1].startswith("vlmcls: warning: the merged runs differ in settings (nli_model: ")
    assert len(proc.stderr.strip().splitlines()) == 2
    text = (merged / "report.md").read_text()
    assert "## Sources" in text and "the later run wins" in text and str(run2) in text
    assert f"(the later run wins); it scored 40 samples, where {run_copy} had 60" in text
    assert text.count("; it scored ") == 1  # not for other-20way, which only run2 has
    assert (merged / "samples" / "smoke-echo-20way.jsonl").read_text() == (run2 / "samples" / "smoke-echo-20way.jsonl").read_text()
    assert (merged / "samples" / "smoke-echo-100way.jsonl").is_file()
    assert is_png(merged / "plots" / "accuracy_vs_n.png")


def _row(name: str, predictions, backend: str = "echo", **spec) -> tuple[dict, list[Prediction]]:
    entry = ModelEntry(name=name, backend=backend, weights="smoke:echo")
    result = CaseResult(CaseSpec(model=entry, ways=20, settings=BackendSettings(), **spec), predictions,
                        metrics.compute(predictions), images_per_s=10.0)
    return report.case_row(result, status="passed", threshold=None), predictions


def test_merging_runs_of_other_prompts_keeps_each_prompt_as_its_own_case(tmp_path):
    """Two one-prompt runs of a model share the case id `m-20way`: merged as they were, the later
    (label-only) result replaced the thesis one under a tag that named no prompt. They become the
    cases a sweep would have made, beside a sweep's own rows; a model that takes no prompt keeps its id."""
    thesis = write_run(tmp_path / "a", _row("m", preds(30, wrong=3)), _row("c", preds(30, wrong=9), backend="clip"))
    label_only = write_run(tmp_path / "b", _row("m", preds(30, wrong=12), prompt="label-only"))
    sweep = write_run(tmp_path / "c", _row("m", preds(30, wrong=20), prompt="numbered", prompt_id="numbered"))
    assert main(["report", str(thesis), str(label_only), str(sweep), "--out", str(tmp_path / "out"), "--no-plots"]) == 0
    cases = {c["case_id"]: c for c in json.loads((tmp_path / "out" / "results.json").read_text())["cases"]}
    assert set(cases) == {"m-20way-thesis", "m-20way-label-only", "m-20way-numbered", "c-20way"}
    assert {k: c["metrics"]["accuracy"] for k, c in cases.items()} == {
        "m-20way-thesis": 0.9, "m-20way-label-only": 0.6, "m-20way-numbered": pytest.approx(1 / 3), "c-20way": 0.7}
    assert cases["m-20way-label-only"]["tag"] == "m [label-only]" and cases["c-20way"]["tag"] == "c"
    # each renamed case's samples are copied from the file its run wrote, under the new id
    out = tmp_path / "out" / "samples"
    assert (out / "m-20way-thesis.jsonl").read_text() == (thesis / "samples" / "m-20way.jsonl").read_text()
    assert (out / "m-20way-label-only.jsonl").read_text() == (label_only / "samples" / "m-20way.jsonl").read_text()
    assert "| m [thesis]" in (tmp_path / "out" / "report.md").read_text()


def test_merging_runs_of_one_prompt_keeps_the_case_ids(tmp_path):
    a = write_run(tmp_path / "a", _row("m", preds(30, wrong=3), prompt="label-only"))
    b = write_run(tmp_path / "b", _row("m", preds(20, wrong=3), prompt="label-only"))
    assert main(["report", str(a), str(b), "--out", str(tmp_path / "out"), "--no-plots"]) == 0
    (only,) = json.loads((tmp_path / "out" / "results.json").read_text())["cases"]
    assert only["case_id"] == "m-20way" and only["metrics"]["n"] == 20 and "source_case_id" not in only


def test_a_replacement_that_ran_other_settings_is_named(tmp_path, capsys):
    """The later run wins, but where it ran another seed or resolver under the same case id, the
    earlier result is gone from the report: the note and the summary say which settings changed."""
    a = write_run(tmp_path / "a", _row("m", preds(30, wrong=3)))
    b = write_run(tmp_path / "b", _row("m", preds(30, wrong=3), seed=1, dataset="mine"))
    assert main(["report", str(a), str(b), "--out", str(tmp_path / "out"), "--no-plots"]) == 0
    err = capsys.readouterr().err
    assert "; 1 of those ran other settings than the result they replace (named in the list)" in err
    text = (tmp_path / "out" / "report.md").read_text()
    assert "(the later run wins); it ran other settings (dataset sample → mine, seed 0 → 1)" in text
    c = write_run(tmp_path / "c", _row("m", preds(30, wrong=3), seed=1, dataset="mine"))
    assert main(["report", str(b), str(c), "--out", str(tmp_path / "out2"), "--no-plots"]) == 0
    assert "other settings" not in capsys.readouterr().err + (tmp_path / "out2" / "report.md").read_text()


def test_merging_runs_of_other_resolvers_keeps_both_side_by_side(tmp_path):
    """A study-resolver run and a rank run of one model are a comparison, not a rerun: merged, each
    case is named by its resolver (and by its prompt too where those differ), as a sweep names them."""
    study = write_run(tmp_path / "a", _row("m", preds(30, wrong=3)), _row("c", preds(30, wrong=9), backend="clip"))
    ranked = write_run(tmp_path / "b", _row("m", preds(30, wrong=6), resolver="rank"),
                       _row("c", preds(30, wrong=9), backend="clip", resolver="rank"))
    swept = write_run(tmp_path / "c", _row("m", preds(30, wrong=12), resolver="rank", prompt="label-only",
                                           prompt_id="label-only"))
    assert main(["report", str(study), str(ranked), str(swept), "--out", str(tmp_path / "out"), "--no-plots"]) == 0
    cases = {c["case_id"]: c for c in json.loads((tmp_path / "out" / "results.json").read_text())["cases"]}
    assert set(cases) == {"m-20way-thesis-study", "m-20way-thesis-rank", "m-20way-label-only-rank", "c-20way"}
    assert [cases[k]["metrics"]["accuracy"] for k in ("m-20way-thesis-study", "m-20way-thesis-rank",
                                                      "m-20way-label-only-rank")] == [0.9, 0.8, 0.6]
    assert cases["m-20way-label-only-rank"]["tag"] == "m [label-only, rank]"
    assert "source_case_id" not in cases["m-20way-label-only-rank"]  # the merged folder files it under its own id
    out = tmp_path / "out" / "samples"
    assert (out / "m-20way-thesis-rank.jsonl").read_text() == (ranked / "samples" / "m-20way.jsonl").read_text()
    assert (out / "m-20way-label-only-rank.jsonl").read_text() == (swept / "samples" / "m-20way-label-only.jsonl").read_text()
    text = (tmp_path / "out" / "report.md").read_text()
    assert "m-20way" not in "".join(line for line in text.splitlines() if "replaces" in line)
    assert "other settings" not in text  # CLIP's rank run ran as its study run: it reads no prompt, needs no resolver


def test_in_a_merge_only_the_cases_that_ran_otherwise_are_renamed(tmp_path):
    """A merged folder serves as a baseline and as input to scripts: a case that ran one way in every run
    keeps `e-20way` (it was renamed `e-20way-study` because another model had a rank run)."""
    a = write_run(tmp_path / "a", _row("m", preds(30, wrong=3)), _row("e", preds(30, wrong=5)))
    b = write_run(tmp_path / "b", _row("m", preds(30, wrong=6), resolver="rank"))
    assert main(["report", str(a), str(b), "--out", str(tmp_path / "out"), "--no-plots"]) == 0
    cases = {c["case_id"] for c in json.loads((tmp_path / "out" / "results.json").read_text())["cases"]}
    assert cases == {"m-20way-study", "m-20way-rank", "e-20way"}
    later = write_run(tmp_path / "later", _row("e", preds(30, wrong=5)))
    assert main(["report", str(later), "--baseline", str(tmp_path / "out"), "--out", str(tmp_path / "vs"),
                 "--no-plots"]) == 0
    (e,) = json.loads((tmp_path / "vs" / "results.json").read_text())["cases"]
    assert e["baseline"]["compared"] and e["baseline"]["paired_n"] == 30


def test_a_run_is_not_its_own_baseline(tmp_path, capsys):
    a = write_run(tmp_path / "a", _row("m", preds(30, wrong=3)))
    before = (a / "results.json").read_text()
    assert main(["report", str(a), "--baseline", str(a) + "/", "--no-plots"]) == 2
    assert capsys.readouterr().err == (f"vlmcls: error: --baseline {a}/ is one of the runs being rendered: "
                                       "compare with another run\n")
    assert (a / "results.json").read_text() == before


def test_report_compares_with_a_baseline(tmp_path):
    base = write_run(tmp_path / "base", case("m", 20, preds(100)), case("gone", 20, preds(10)), run_id="base-run")
    now = write_run(tmp_path / "now", case("m", 20, preds(100, wrong=40) + preds(7, prefix="new")), case("fresh", 20, preds(10)))
    assert main(["report", str(now), "--baseline", str(base), "--no-plots"]) == 0
    text = (now / "report.md").read_text()
    part = section(text, "## Compared with the baseline base-run")
    (line,) = report.parse_table(part)
    assert line["Case"] == "m-20way" and line["Verdict"] == "significantly worse than the baseline"
    assert (line["Lost (b)"], line["Gained (c)"], line["Only here"], line["Only in baseline"]) == ("40", "0", "7", "0")
    assert float(line["p-value"]) == pytest.approx(compare.mcnemar(40, 0), rel=1e-2)
    assert "fresh-20way: not in the baseline" in part and "only in the baseline (1 case it ran, not run now): gone-20way" in part
    assert not (now / "plots").exists() and "![" not in text and "## Most frequent confusions" in text


def test_report_without_arguments_takes_the_latest_run(run_copy, monkeypatch, capsys):
    reports = run_copy.parent.parent / "reports"
    shutil.move(run_copy.parent, reports)
    monkeypatch.chdir(reports.parent)
    assert main(["report", "--no-plots"]) == 0
    assert "report: reports" in capsys.readouterr().out


@pytest.mark.parametrize("content", [None, "{not json", '{"cases": 3}'])
def test_a_bad_run_folder_is_one_line_and_exit_2(tmp_path, capsys, content):
    run = tmp_path / "run"
    run.mkdir()
    if content is not None:
        (run / "results.json").write_text(content)
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vlmcls: error: ") and len(err.strip().splitlines()) == 1


def test_a_missing_run_folder_is_one_line_and_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "vlmcls", "report", str(tmp_path / "nope")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == f"vlmcls: error: run folder {tmp_path / 'nope'} not found"


def test_merging_into_one_of_the_merged_runs_is_refused(tmp_path, capsys):
    a = write_run(tmp_path / "a", case("m", 20, preds(10)))
    b = write_run(tmp_path / "b", case("m", 20, preds(10, wrong=3)))
    assert main(["report", str(a), str(b), "--out", str(a)]) == 2
    assert "would be overwritten" in capsys.readouterr().err
    assert json.loads((a / "results.json").read_text())["cases"][0]["metrics"]["n"] == 10


# ---------------------------------------------------------------------------------- a baseline that compares nothing
def test_only_in_the_baseline_lists_the_cases_it_ran_not_those_it_skipped(tmp_path):
    skipped = report.skipped_row(CaseSpec(model=ModelEntry("api", "openai", "gpt-4o-mini"), ways=20,
                                          settings=BackendSettings()), "skipped", "no OPENAI_API_KEY")
    base = write_run(tmp_path / "base", case("m", 20, preds(20)), case("gone", 20, preds(10)), (skipped, None))
    now = write_run(tmp_path / "now", case("m", 20, preds(20, wrong=2)), case("api", 20, preds(10)))
    part = section(compare.baseline_section(json.loads((now / "results.json").read_text())["cases"], now,
                                            report.load_run(base)), "## Compared with the baseline")
    assert "only in the baseline (1 case it ran, not run now): gone-20way" in part
    assert "- api-20way: the baseline has no result for it (skipped)" in part  # it ran now; the baseline skipped it


def test_a_baseline_without_samples_is_a_terminal_warning_and_fails_under_strict_cases(real_run, tmp_path):
    """The committed example report has no samples/: used as --baseline it compares nothing. That is
    one warning line in the terminal, and --strict-cases fails the cases it could not check."""
    base = Path(shutil.copytree(real_run, tmp_path / "example", ignore=shutil.ignore_patterns("samples")))
    shutil.copytree(BENCH, tmp_path / "bench", ignore=shutil.ignore_patterns("__pycache__"))
    args = [sys.executable, "-m", "pytest", "bench", "-k", "echo-20way", "--samples", "30", "-p", "no:cacheprovider",
            "-q", "--baseline", str(base)]
    proc = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    (warning,) = [line for line in proc.stdout.splitlines() if "--baseline" in line]
    assert warning == (f"warning: --baseline {base} gave nothing to compare for 1 of 1 cases (1: no per-sample "
                       "records in the baseline); the baseline gate did not check them (--strict-cases fails them); "
                       "see report.md")
    (run,) = [d for d in (tmp_path / "reports").iterdir() if d.is_dir()]
    assert json.loads((run / "results.json").read_text())["meta"]["baseline"] == str(base.resolve())
    strict = subprocess.run([*args, "--strict-cases"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert strict.returncode == 1
    assert "smoke-echo-20way: --baseline gave nothing to compare (no per-sample records in the baseline)" in strict.stdout
    assert "--strict-cases failed them" in strict.stdout
    paired = subprocess.run([*args[:-1], str(real_run), "--strict-cases"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)  # the same run with its samples: compared, no warning
    assert paired.returncode == 0 and "--baseline" not in paired.stdout, paired.stdout[-3000:]


def test_rerendering_keeps_the_comparison_with_the_recorded_baseline(tmp_path, capsys):
    base = write_run(tmp_path / "base", case("m", 20, preds(100)), run_id="base-run")
    now = write_run(tmp_path / "now", case("m", 20, preds(100, wrong=40)))
    assert main(["report", str(now), "--baseline", str(base), "--no-plots"]) == 0
    assert json.loads((now / "results.json").read_text())["meta"]["baseline"] == str(base.resolve())
    first = (now / "report.md").read_text()
    assert main(["report", str(now), "--no-plots"]) == 0  # no --baseline: the recorded one
    assert (now / "report.md").read_text() == first and "## Compared with the baseline base-run" in first
    capsys.readouterr()
    shutil.rmtree(base)
    assert main(["report", str(now), "--no-plots"]) == 0
    note = f"the comparison with the baseline {base.resolve()} was dropped: its folder is gone (--baseline RUN_DIR compares again)"
    assert capsys.readouterr().err.splitlines() == [f"vlmcls: note: {note}"]
    text = (now / "report.md").read_text()
    assert "base-run" not in text and section(text, "## Compared with the baseline").strip() == report.cell(note[0].upper() + note[1:] + ".")


def test_a_rerendered_baseline_that_compares_nothing_warns(tmp_path, capsys):
    base = write_run(tmp_path / "base", (case("m", 20, preds(10))[0], None))  # a report without samples/
    now = write_run(tmp_path / "now", case("m", 20, preds(10)))
    assert main(["report", str(now), "--baseline", str(base), "--no-plots"]) == 0
    assert capsys.readouterr().err == (f"vlmcls: warning: --baseline {base} gave nothing to compare for 1 of 1 cases "
                                       "(1: no per-sample records in the baseline); the baseline gate did not check "
                                       "them (--strict-cases fails them); see report.md\n")
