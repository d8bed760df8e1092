"""What the report says about calibration (`--resolver rank`): the reliability diagram shows how many
samples each bin holds and joins none of them, the Calibration section gives the ECE a perfectly
calibrated model would show on the case's own confidences (ECE is biased upward on few samples), and
the table's Top-5 and ECE cells say over how many rows they were computed when not every row was scored.
Rows are built as a run builds them (report.case_row), so `calibration` is results.json's block."""
from __future__ import annotations

import pytest

from vlmcls import calibration, metrics, report
from vlmcls.catalog import ModelEntry
from vlmcls.runner import CaseResult, CaseSpec
from vlmcls.settings import BackendSettings
from vlmcls.types import Prediction


def ranked(i: int, right: bool, prob: float | None) -> Prediction:
    """Sample i of true class i % 7: answered right or wrong, with a ranking and a top-1 probability, or
    (prob None) an answer without scores, as an API reply whose first token did not single out a candidate."""
    true = i % 7
    pred = true if right else (true + 1) % 7
    top5 = None if prob is None else (pred, (pred + 1) % 7, (pred + 2) % 7, (pred + 3) % 7, (pred + 4) % 7)
    return Prediction(f"s{i}", true, f"c{true}", (), "x", pred, f"c{pred}", "rank", top5=top5, top1_prob=prob)


def row(preds, name="m", ways=20):
    entry = ModelEntry(name=name, backend="echo", weights="smoke:echo", quant="none")
    spec = CaseSpec(model=entry, ways=ways, settings=BackendSettings())
    return report.case_row(CaseResult(spec, preds, metrics.compute(preds), images_per_s=1.0), status="passed", threshold=None)


# 20 samples: confident and often wrong, as a small VLM run gives
SMALL = [ranked(i, i % 3 == 0, 0.55 + 0.02 * i) for i in range(20)]


# ---------------------------------------------------------------------------------- the diagram
@pytest.fixture
def drawn(monkeypatch):
    """The figures reliability_diagram saves, kept to be read (and nothing written)."""
    pytest.importorskip("matplotlib")
    from vlmcls.report import plots

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    return plots, figures


def test_reliability_bins_are_points_sized_and_labelled_by_their_count_never_joined(drawn, tmp_path):
    plots, figures = drawn
    # one sample each at 0.21, 0.50 and 0.90, two at 0.94 and 0.95 (bins 3, 7, 13 and 14 of 15)
    preds = [ranked(0, True, 0.95), ranked(1, False, 0.94), ranked(2, False, 0.90), ranked(3, True, 0.50),
             ranked(4, False, 0.21)]
    c = calibration.summary(preds)
    plots.reliability_diagram([{"case_id": "m-20way", "calibration": c}], tmp_path / "r.png")
    (fig,) = figures
    top = fig.axes[0]
    # the only line is the diagonal: no line runs through the bins (a 1-sample bin is a 0 or a 1)
    assert [(list(l.get_xdata()), list(l.get_ydata())) for l in top.get_lines() if len(l.get_xdata())] == [([0, 1], [0, 1])]
    top, counts = fig.axes  # and a panel of the samples per bin below it
    (points,) = top.collections
    assert points.get_offsets().flatten().tolist() == pytest.approx([0.21, 0.0, 0.5, 1.0, 0.9, 0.0, 0.945, 0.5])
    sizes = list(points.get_sizes())
    assert sizes[0] == sizes[1] == sizes[2] < sizes[3]  # the 2-sample bin is drawn larger than the 1-sample ones
    assert [t.get_text() for t in top.texts] == ["1", "1", "1", "2"]  # each point says how many it holds
    # below: samples per bin, all 15 bins (the empty ones at 0)
    (stairs,) = counts.patches
    assert list(stairs.get_data().values) == [b["n"] for b in c["reliability"]]
    assert list(stairs.get_data().edges) == pytest.approx([i / 15 for i in range(16)])
    assert "n=5" in top.get_legend().get_texts()[0].get_text()


def test_each_case_gets_its_own_points_and_counts_with_empty_bins_skipped(drawn, tmp_path):
    plots, figures = drawn
    few = calibration.summary(SMALL)
    one = calibration.summary([ranked(0, True, 0.99)])
    rows = [{"case_id": "a-20way", "calibration": few}, {"case_id": "b-20way", "calibration": None},
            {"case_id": "c-20way", "calibration": one}]
    plots.reliability_diagram(rows, tmp_path / "r.png")
    (fig,) = figures
    top, counts = fig.axes
    filled = [b for b in few["reliability"] if b["n"]]
    assert [len(p.get_offsets()) for p in top.collections] == [len(filled), 1]
    assert [t.get_text() for t in top.texts] == [str(b["n"]) for b in filled] + ["1"]
    assert [sum(s.get_data().values) for s in counts.patches] == [20, 1]
    legend = [t.get_text() for t in top.get_legend().get_texts()]
    assert legend[0].startswith("a-20way (n=20, ECE ") and f"noise ~{few['ece_noise']:.3f}" in legend[0]
    assert legend[1].startswith("c-20way (n=1, ")


# ---------------------------------------------------------------------------------- the Calibration section
def test_a_small_case_is_told_what_ece_a_perfectly_calibrated_model_would_show():
    r = row(SMALL)
    c = r["calibration"]
    assert c["n"] == 20 and c["ece_noise"] == pytest.approx(calibration.noise([0.55 + 0.02 * i for i in range(20)])[0])
    assert 0.05 < c["ece_noise"] < c["ece_noise_p95"] < 1  # 20 samples: a floor far above nothing
    text = "\n".join(report.calibration_section([r]))
    assert (f"ECE (15 bins) {c['ece']:.3f}; a perfectly calibrated model would show ~{c['ece_noise']:.3f} on these "
            f"20 samples by sampling noise alone (95% of simulated runs ≤ {c['ece_noise_p95']:.3f}); ") in text
    verdict = ("this ECE is more than sampling noise" if c["ece"] > c["ece_noise_p95"]
               else "this ECE alone does not show miscalibration")
    assert verdict in text
    assert text.count("ECE over 15 bins is biased upward on few samples") == 1
    assert "mean ECE of 500 simulated perfectly calibrated runs" in text
    # the note comes once, before the cases, however many cases need it
    two = "\n".join(report.calibration_section([r, row(SMALL, "k")]))
    assert two.count("biased upward") == 1 and two.index("biased upward") < two.index("`m-20way`")
    assert two.count("a perfectly calibrated model would show") == 2  # one per case


@pytest.mark.parametrize("ece, p95, verdict", [(0.30, 0.25, "this ECE is more than sampling noise"),
                                               (0.25, 0.25, "this ECE alone does not show miscalibration")])
def test_the_verdict_compares_the_ece_with_the_noise_percentile(ece, p95, verdict):
    r = row(SMALL)
    r["calibration"] = {**r["calibration"], "ece": ece, "ece_noise": 0.12, "ece_noise_p95": p95}
    assert (f"ECE (15 bins) {ece:.3f}; a perfectly calibrated model would show ~0.120 on these 20 samples by sampling "
            f"noise alone (95% of simulated runs ≤ {p95:.3f}); {verdict}") in "\n".join(report.calibration_section([r]))


def test_no_noise_clause_where_the_floor_is_negligible_or_unknown():
    r = row(SMALL)
    negligible = {**r, "calibration": {**r["calibration"], "ece_noise": 0.004, "ece_noise_p95": 0.006}}
    older = {**r, "calibration": {k: v for k, v in r["calibration"].items() if not k.startswith("ece_noise")}}
    for case in (negligible, older):  # older: a results.json written before ece_noise, merged or re-rendered
        text = "\n".join(report.calibration_section([case]))
        assert f"ECE (15 bins) {r['calibration']['ece']:.3f}\n" in text
        assert "perfectly calibrated" not in text and "biased upward" not in text


def test_a_confident_right_case_has_no_noise_to_speak_of():
    sure = row([ranked(i, True, 1.0) for i in range(20)])
    assert (sure["calibration"]["ece"], sure["calibration"]["ece_noise"]) == (0.0, 0.0)
    assert "perfectly calibrated" not in "\n".join(report.calibration_section([sure]))


# ---------------------------------------------------------------------------------- Top-5 over the scored rows
def partly_scored():
    """An API rank case: 20 samples, 3 answers without usable logprobs (no ranking)."""
    return row([ranked(i, i % 2 == 0, None if i in (3, 8, 15) else 0.4 + 0.03 * i) for i in range(20)])


def test_top5_and_ece_cells_say_over_how_many_rows_only_where_some_were_not_scored():
    part, full = partly_scored(), row(SMALL, "k")
    c = part["calibration"]
    assert (c["n"], part["metrics"]["n"]) == (17, 20)
    table = {r["Model"]: r for r in report.parse_table(report.study_table([part, full]))}
    assert table["m"]["n"] == "20"
    assert table["m"]["Top-5 accuracy"] == f"{c['top5_accuracy']:.3f} (of 17)"
    assert table["m"]["ECE"] == f"{c['ece']:.3f} (of 17)"
    # every sample scored: the plain figure, no clutter
    assert table["k"]["Top-5 accuracy"] == f"{full['calibration']['top5_accuracy']:.3f}"
    assert table["k"]["ECE"] == f"{full['calibration']['ece']:.3f}"


def test_at_five_candidates_or_fewer_top5_stays_no_result_even_when_partly_scored():
    part = partly_scored()
    small = {**part, "ways": 5}
    (cells,) = report.parse_table(report.study_table([small]))
    assert cells["Top-5 accuracy"] == "n/a (N ≤ 5)" and cells["ECE"].endswith(" (of 17)")


def test_the_calibration_line_says_how_many_of_the_samples_were_scored():
    text = "\n".join(report.calibration_section([partly_scored(), row(SMALL, "k")]))
    assert "`m-20way`: 17 of 20 samples scored, top-1 " in text
    assert "`k-20way`: 20 samples scored, top-1 " in text
