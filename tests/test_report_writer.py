"""The report package: one writer per run, each file written once; the model tag kept in the row;
the old names (`vlmcls.compare`, `vlmcls.plots`, `report._notes`) still reach the same code."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from vlmcls import metrics, report
from vlmcls.__main__ import main
from vlmcls.catalog import ModelEntry
from vlmcls.report import writer
from vlmcls.runner import CaseResult, CaseSpec
from vlmcls.settings import BackendSettings
from vlmcls.types import Prediction


def preds(n: int, wrong: int) -> list[Prediction]:
    return [Prediction(f"s{i}", 1, "cat", ("cat", "dog"), "x", 2 if i < wrong else 1, "dog" if i < wrong else "cat",
                       "match") for i in range(n)]


def row(name: str, backend: str, quant: str, ways: int, predictions) -> dict:
    entry = ModelEntry(name=name, backend=backend, weights="smoke:x", quant=quant)
    spec = CaseSpec(model=entry, ways=ways, settings=BackendSettings(quant=quant))
    result = CaseResult(spec, predictions, metrics.compute(predictions), images_per_s=10.0)
    return report.case_row(result, status="passed", threshold=None)


@pytest.fixture
def rows(tmp_path) -> list[dict]:
    out = [row("m-a", "hf-vlm", "int8", 20, preds(12, 4)), row("clip-b", "clip", "none", 20, preds(12, 2))]
    for r, p in zip(out, (preds(12, 4), preds(12, 2))):
        report.write_samples(tmp_path / "samples" / f"{r['case_id']}.jsonl", p)
    return out


def counting(monkeypatch) -> Counter:
    """Every file the writer writes, by name, counted."""
    written: Counter = Counter()
    real = writer.atomic_write

    def spy(path, text):
        written[Path(path).name] += 1
        real(path, text)

    monkeypatch.setattr(writer, "atomic_write", spy)
    return written


def test_write_run_writes_each_file_once(tmp_path, rows, monkeypatch):
    written = counting(monkeypatch)
    path = report.write_run(tmp_path, rows, {"run_id": "r1"}, plots=False)
    assert written == Counter({"results.json": 1, "report.md": 1})
    text = path.read_text()
    assert "## 20-way" in text and "## Most frequent confusions" in text  # tables and the plots' section in one go
    assert json.loads((tmp_path / "results.json").read_text())["meta"] == {"run_id": "r1"}


def test_report_command_writes_each_file_once(tmp_path, rows, monkeypatch):
    report.write_report(rows, tmp_path, {"run_id": "r1"})
    written = counting(monkeypatch)
    assert main(["report", str(tmp_path), "--no-plots"]) == 0
    assert written == Counter({"results.json": 1, "report.md": 1})


def test_the_model_tag_is_stored_in_the_row(rows):
    assert [r["tag"] for r in rows] == ["m-a-int8", "clip-b"]  # quantization named for local VLMs only
    assert report.model_tag({"case_id": "old-run-int8-20way"}) == "old-run-int8"  # rows written before the tag
    assert report.model_tag({**rows[0], "case_id": "anything"}) == "m-a-int8"


def test_old_names_reach_the_same_code():
    import vlmcls.compare as compare
    import vlmcls.plots as plots
    from vlmcls.report import plots as package_plots
    from vlmcls.report import stats

    assert plots is package_plots
    assert compare.mcnemar is stats.mcnemar and compare.Run is report.Run
    assert report._notes is report.notes


def test_study_rows_this_run_selected_but_could_not_run_get_why_not_the_circular_hint():
    """`pytest bench --study` once told its reader to run `pytest bench --study` for the rows it had skipped."""
    from vlmcls.catalog import load_catalog
    from vlmcls.report import compare

    catalog = load_catalog()
    published = compare.study_rows(catalog)
    skipped = [report.skipped_row(CaseSpec(model=catalog[s.model], ways=s.ways, settings=BackendSettings()),
                                  "skipped", "weights not here") for s in published]
    text = compare.study_section(skipped, catalog)
    (line,) = [l for l in text.splitlines() if "not run:" in l]
    assert line.startswith(f"{len(published)} study rows not run: ") and "(skipped)" in line
    assert "--study` runs them all" not in text and "this run selected them" in line and "*Not run*" in line
    # with no row scored, the one not selected is not listed: the lead points to --study once
    half = compare.study_section(skipped[1:], catalog)
    assert [l for l in half.splitlines() if "not run:" in l] == [l for l in half.splitlines() if "this run selected" in l]
    assert f"`pytest bench --study` runs the study's {len(published)} rows." in half
    nothing = compare.study_section([], catalog)
    assert "not run:" not in nothing and f"`pytest bench --study` runs the study's {len(published)} rows." in nothing
    scored = report.case_row(CaseResult(CaseSpec(model=catalog[published[0].model], ways=published[0].ways,
                                                 settings=BackendSettings()), preds(10, 2), metrics.compute(preds(10, 2)), 1.0),
                             status="passed", threshold=None)
    (line,) = [l for l in compare.study_section([scored], catalog).splitlines() if "not run:" in l]
    assert line.startswith(f"{len(published) - 1} study rows not run: ") and "--study` runs them all" in line


def test_one_selected_study_row_not_run_is_said_in_the_singular():
    from vlmcls.report.compare import _not_run_line

    one = _not_run_line(["phi-3-vision 20-way (skipped)"])
    assert "1 study row not run: phi-3-vision 20-way (skipped): this run selected it, and it did not run here " \
           "(e.g. its weights" in one
    two = _not_run_line(["a 20-way (skipped)", "b 20-way (failed)"])
    assert "this run selected them, and they did not run here (e.g. their weights" in two
