"""Model against model within one run: paired McNemar on the same images and candidates, Holm over
the pairs at one N, in report.md as the writer and the re-render CLI write it."""
from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from vlmcls import metrics, report
from vlmcls.__main__ import main
from vlmcls.catalog import ModelEntry
from vlmcls.report import pairwise
from vlmcls.report.markdown import parse_table
from vlmcls.runner import CaseResult, CaseSpec
from vlmcls.settings import BackendSettings
from vlmcls.types import Prediction

CANDIDATES = ("cat", "dog", "fox")


# ---------------------------------------------------------------------------------- building runs
def answers(pattern: str, candidates: tuple[str, ...] = CANDIDATES, true: tuple[int, str] = (1, "cat"),
            start: int = 0) -> list[Prediction]:
    """One prediction per character, sample ids s<start>...: r right, w wrong, e error row, u unresolved."""
    out = []
    for i, ch in enumerate(pattern, start):
        pred = {"r": (true[0], true[1]), "w": (2, "dog"), "e": (None, None), "u": (None, None)}[ch]
        out.append(Prediction(f"s{i}", true[0], true[1], candidates, None if ch == "e" else "x", *pred,
                              "error" if ch == "e" else ("unresolved" if ch == "u" else "match"),
                              error="boom" if ch == "e" else None))
    return out


def row(name: str, ways: int, predictions: list[Prediction], smoke: bool = False) -> dict:
    entry = ModelEntry(name=name, backend="echo", weights="smoke:echo", smoke=smoke)
    spec = CaseSpec(model=entry, ways=ways, settings=BackendSettings())
    result = CaseResult(spec, predictions, metrics.compute(predictions), images_per_s=10.0)
    return report.case_row(result, status="passed", threshold=None)


def run_folder(path: Path, *cases: tuple[str, int, list[Prediction]] | tuple[str, int, list[Prediction], bool]) -> list[dict]:
    """Rows and samples/*.jsonl on disk, as the plugin leaves them before writing the report."""
    rows = []
    for name, ways, preds, *smoke in cases:
        r = row(name, ways, preds, *smoke)
        report.write_samples(path / "samples" / f"{r['case_id']}.jsonl", preds)
        rows.append(r)
    return rows


def tables(text: str, folded: bool = False) -> list[list[dict[str, str]]]:
    """The ranking and adjacent-pair tables (`folded`: only the tables inside <details>, all the pairs)."""
    parts = text.split("<details>")
    text = "".join(p.split("</details>", 1)[0] for p in parts[1:]) if folded else \
        "".join([parts[0], *(p.split("</details>", 1)[-1] for p in parts[1:])])
    blocks = [b for b in text.split("\n\n") if b.lstrip().startswith("|")]
    return [parse_table(b) for b in blocks]


def ways_part(text: str, ways: int) -> str:
    return text.split(f"### {ways}-way", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]


def exact_p(b: int, c: int) -> float:
    """Two-sided exact binomial (p = 1/2) tail, from first principles."""
    n = b + c
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2 ** n)


# ---------------------------------------------------------------------------------- the statistics
@pytest.mark.parametrize("b, c", [(7, 1), (0, 5), (12, 12), (3, 9), (13, 11)])
def test_mcnemar_p_is_the_exact_binomial_tail(tmp_path, b, c):
    """A right only on b images, B right only on c, both right on 4, both wrong on 3."""
    a = answers("r" * b + "w" * c + "rrrr" + "www")
    bb = answers("w" * b + "r" * c + "rrrr" + "www")
    rows = run_folder(tmp_path, ("model-a", 20, a), ("model-b", 20, bb))
    v = pairwise.versus(a, bb)
    assert (v.n, v.b, v.c) == (b + c + 7, b, c)
    assert v.p == pytest.approx(exact_p(b, c), rel=1e-9)
    (_, adjacent) = tables(pairwise.pairwise_section(rows, tmp_path))
    (line,) = adjacent
    first = "model-a" if (b + 4) / (b + c + 7) >= (c + 4) / (b + c + 7) else "model-b"
    a_only, b_only = (b, c) if first == "model-a" else (c, b)
    assert (line["A"], line["A right only"], line["B right only"]) == (first, str(a_only), str(b_only))
    assert line["McNemar p"] == f"{exact_p(b, c):.3g}"
    assert line["Accuracy A − B (paired)"] == f"{(a_only - b_only) / (b + c + 7):+.3f}"


def test_many_discordant_images_use_the_continuity_corrected_chi_square(tmp_path):
    """From 25 images right in one case only, the same test as a baseline comparison (the intro says so)."""
    a, b = answers("r" * 20 + "w" * 6), answers("w" * 20 + "r" * 6)
    x = (abs(20 - 6) - 1) ** 2 / 26
    assert pairwise.versus(a, b).p == pytest.approx(math.erfc(math.sqrt(x / 2)), rel=1e-9)
    text = pairwise.pairwise_section(run_folder(tmp_path, ("model-a", 20, a), ("model-b", 20, b)), tmp_path)
    assert "exact binomial below 25" in text and "chi-square with continuity correction above" in text


def test_holm_against_a_hand_worked_example():
    # sorted: 0.005 x4 = 0.02, 0.01 x3 = 0.03, 0.03 x2 = 0.06, 0.04 x1 = 0.04 -> kept at 0.06 (monotone)
    assert pairwise.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert pairwise.holm([0.3, 0.6, 0.9]) == pytest.approx([0.9, 1.0, 1.0])  # capped at 1
    assert pairwise.holm([0.04]) == [0.04] and pairwise.holm([]) == []


def test_holm_is_monotone_capped_and_never_below_the_raw_p():
    rng = random.Random(7)
    for _ in range(200):
        raw = [rng.random() ** 3 for _ in range(rng.randint(1, 12))]
        adj = pairwise.holm(raw)
        assert all(a >= p and a <= 1.0 for a, p in zip(adj, raw))
        order = sorted(range(len(raw)), key=raw.__getitem__)
        assert all(adj[i] <= adj[j] for i, j in zip(order, order[1:]))
        assert adj[order[0]] == pytest.approx(min(1.0, len(raw) * raw[order[0]]))


# ---------------------------------------------------------------------------------- what is paired
def test_only_samples_with_the_same_label_and_candidate_set_are_paired(tmp_path):
    """s0-s1: another distractor; s2: another true label; s3: the same candidates in another order
    (paired); s4: only in A. 10 shared ids -> 7 paired."""
    a = answers("rrrrrrrrrrr")
    b = (answers("ww", ("cat", "dog", "owl")) + answers("w", true=(2, "dog"), candidates=("dog", "cat", "fox"), start=2)
         + answers("w", ("fox", "cat", "dog"), start=3) + answers("wwwwww", start=5))
    assert pairwise.versus(a, b).n == 7
    assert pairwise.versus(a, b).b == 7  # s3 paired despite the order; the unpaired wrong answers do not count
    rows = run_folder(tmp_path, ("model-a", 20, a), ("model-b", 20, b))
    (_, (line,)) = tables(pairwise.pairwise_section(rows, tmp_path))
    assert (line["Paired n"], line["A right only"], line["B right only"]) == ("7", "7", "0")


def test_cases_with_nothing_in_common_are_not_tested(tmp_path):
    """Another seed's candidates everywhere: no pair, not in Holm's family, said in words."""
    rows = run_folder(tmp_path, ("model-a", 20, answers("rrrr")), ("model-b", 20, answers("wwww", ("cat", "emu", "owl"))),
                      ("model-c", 20, answers("wwww")))
    part = ways_part(pairwise.pairwise_section(rows, tmp_path), 20)
    assert "1 pair tested (Holm over 1)" in part
    assert "Not compared (no image with the same label and candidates): model-a – model-b" in part
    ranking = {r["Model"]: r for r in tables(part)[0]}
    assert "model-b" not in ranking["model-a"]["Not significantly different from"]


def test_error_rows_and_unresolved_answers_count_as_wrong(tmp_path):
    a = answers("eeuurrrr")  # 2 errors, 2 unresolved
    b = answers("rrrrrrrr")
    v = pairwise.versus(a, b)
    assert (v.n, v.b, v.c) == (8, 0, 4)
    rows = run_folder(tmp_path, ("model-a", 20, a), ("model-b", 20, b))
    (ranking, (line,)) = tables(pairwise.pairwise_section(rows, tmp_path))
    assert [(r["Model"], r["Accuracy"]) for r in ranking] == [("model-b", "1.000"), ("model-a", "0.500")]
    assert (line["A"], line["A right only"], line["B right only"]) == ("model-b", "4", "0")


# ---------------------------------------------------------------------------------- the section
def designed(tmp_path: Path) -> list[dict]:
    """A right on 58 of 60; B on 30, C on 29, differing on 3 images only: A >> B, B ~ C."""
    return run_folder(tmp_path, ("model-c", 100, answers("r" * 28 + "ww" + "r" + "w" * 29)),
                      ("model-a", 100, answers("r" * 58 + "ww")), ("model-b", 100, answers("r" * 30 + "w" * 30)))


def test_ranking_and_not_significantly_different_from(tmp_path):
    part = ways_part(pairwise.pairwise_section(designed(tmp_path), tmp_path), 100)
    ranking, adjacent = tables(part)
    assert [(r["Rank"], r["Model"], r["Accuracy"], r["n"]) for r in ranking] == [
        ("1", "model-a", "0.967", "60"), ("2", "model-b", "0.500", "60"), ("3", "model-c", "0.483", "60")]
    alike = {r["Model"]: r["Not significantly different from"] for r in ranking}
    assert alike == {"model-a": "—", "model-b": "model-c", "model-c": "model-b"}
    assert [(p["A"], p["B"], p["A right only"], p["B right only"]) for p in adjacent] == [
        ("model-a", "model-b", "28", "0"), ("model-b", "model-c", "2", "1")]
    assert float(adjacent[0]["Holm p"]) < 0.05 <= float(adjacent[1]["Holm p"])
    assert adjacent[1]["McNemar p"] == f"{exact_p(2, 1):.3g}" == "1"
    assert "3 cases, 3 pairs tested (Holm over 3)" in part


def test_many_alike_cases_are_said_briefly(tmp_path):
    """With many cases the column names the shorter side: "every other case", or "all but" the few."""
    strong = ("model-a", 100, answers("r" * 60))
    weak = [(f"model-{x}", 100, answers(pattern)) for x, pattern in
            zip("bcde", ("rw" * 30, "wr" * 30, "rrww" * 15, "wwrr" * 15))]
    ranking, _ = tables(pairwise.pairwise_section(run_folder(tmp_path, strong, *weak), tmp_path))
    alike = {r["Model"]: r["Not significantly different from"] for r in ranking}
    assert alike == {"model-a": "—", "model-b": "all but model-a", "model-c": "all but model-a",
                     "model-d": "all but model-a", "model-e": "all but model-a"}
    three = run_folder(tmp_path / "three", *weak[:3])
    ranking, _ = tables(pairwise.pairwise_section(three, tmp_path / "three"))
    assert {r["Not significantly different from"] for r in ranking} == {"every other case"}


def test_every_tested_pair_is_in_the_report_folded(tmp_path):
    """The Holm p of a line depends on every pair at that N: all of them are listed, folded, so a reader
    can retrace it; with two cases the one adjacent pair is all and nothing is folded."""
    text = pairwise.pairwise_section(designed(tmp_path), tmp_path)
    (folded,) = tables(ways_part(text, 100), folded=True)
    assert "<summary>All 3 pairs tested</summary>" in text
    assert [(p["A"], p["B"]) for p in folded] == [("model-a", "model-b"), ("model-a", "model-c"), ("model-b", "model-c")]
    adjacent = tables(ways_part(text, 100))[1]
    assert all(line in folded for line in adjacent)  # the same figures, line for line
    a_c = folded[1]
    raw = [float(p["McNemar p"]) for p in folded]
    assert float(a_c["Holm p"]) == pytest.approx(pairwise.holm(raw)[1], rel=1e-2)
    two = run_folder(tmp_path / "two", ("model-a", 20, answers("rrww")), ("model-b", 20, answers("rwrw")))
    assert "<details>" not in pairwise.pairwise_section(two, tmp_path / "two")


def test_holm_is_applied_over_all_pairs_at_one_n(tmp_path):
    """Each rendered Holm p is the Holm adjustment of the three raw p-values, not the raw one."""
    rows = designed(tmp_path)
    preds = [(r, report.Run(tmp_path, {}, rows).predictions(r["case_id"])) for r in rows]
    pairs = pairwise.comparisons(preds)
    raw = [v.paired.p for v in pairs]
    assert [v.holm for v in pairs] == pytest.approx(pairwise.holm(raw))
    assert any(v.holm > v.paired.p for v in pairs)  # the correction did something here


def test_ties_share_a_rank(tmp_path):
    rows = run_folder(tmp_path, ("model-b", 20, answers("rrww")), ("model-a", 20, answers("wwrr")),
                      ("model-c", 20, answers("wwww")))
    ranking, _ = tables(pairwise.pairwise_section(rows, tmp_path))
    assert [(r["Rank"], r["Model"]) for r in ranking] == [("1", "model-a"), ("1", "model-b"), ("3", "model-c")]


def test_smoke_only_n_keeps_smoke_cases_and_says_they_mean_nothing(tmp_path):
    rows = run_folder(tmp_path, ("echo-a", 20, answers("rrww"), True), ("echo-b", 20, answers("rwrw"), True))
    text = pairwise.pairwise_section(rows, tmp_path)
    assert pairwise.HEADING in text and pairwise.SMOKE_ONLY in text and "mean nothing" in text
    ranking, _ = tables(text)
    assert sorted(r["Model"] for r in ranking) == ["echo-a *smoke*", "echo-b *smoke*"]


def test_smoke_cases_are_left_out_where_a_real_model_ran(tmp_path):
    rows = run_folder(tmp_path, ("model-a", 20, answers("rrrr")), ("model-b", 20, answers("rrww")),
                      ("echo", 20, answers("wwww"), True),
                      ("model-a", 100, answers("rrrr")), ("echo", 100, answers("wwww"), True))
    text = pairwise.pairwise_section(rows, tmp_path)
    part = ways_part(text, 20)
    ranking, adjacent = tables(part)
    assert [r["Model"] for r in ranking] == ["model-a", "model-b"]
    assert [(p["A"], p["B"]) for p in adjacent] == [("model-a", "model-b")]
    assert "*Smoke* cases left out (1)" in part and pairwise.SMOKE_ONLY not in text
    assert "### 100-way" not in text  # one real case there: nothing to compare it with


def test_cases_without_records_are_named_and_left_out(tmp_path):
    rows = run_folder(tmp_path, ("model-a", 20, answers("rrrr")), ("model-b", 20, answers("rrww")),
                      ("model-c", 20, answers("rwww")))
    (tmp_path / "samples" / f"{rows[2]['case_id']}.jsonl").unlink()
    part = ways_part(pairwise.pairwise_section(rows, tmp_path), 20)
    assert "2 cases, 1 pair tested" in part and "Left out, no per-sample records: model-c" in part


def test_no_section_without_two_cases_at_one_n(tmp_path):
    rows = run_folder(tmp_path, ("model-a", 20, answers("rrrr")), ("model-b", 100, answers("rrww")))
    rows.append({**row("model-c", 20, answers("rr")), "metrics": None, "status": "skipped"})
    assert pairwise.pairwise_section(rows, tmp_path) == ""


# ---------------------------------------------------------------------------------- where it shows
def test_report_md_written_by_the_writer_holds_the_section(tmp_path):
    rows = designed(tmp_path)
    text = report.write_run(tmp_path, rows, {"run_id": "r1"}, plots=False).read_text()
    assert text.count(pairwise.HEADING) == 1
    assert text.index("## 100-way") < text.index(pairwise.HEADING)
    ranking, _ = tables(ways_part(text, 100))
    assert ranking[0]["Model"] == "model-a"


def test_rerender_and_merge_through_the_cli(tmp_path, capsys):
    """One run re-rendered in place, and two runs merged: the merged run pairs the samples it has."""
    one = tmp_path / "one"
    report.write_run(one, run_folder(one, ("model-a", 20, answers("rrrrrrrrrr")), ("model-b", 20, answers("rrrrrwwwww"))),
                     {"run_id": "one"}, plots=False)
    (one / "report.md").unlink()
    assert main(["report", str(one), "--no-plots"]) == 0
    assert pairwise.HEADING in (one / "report.md").read_text()

    two = tmp_path / "two"  # model-c on 6 of one's 10 images, plus 2 it alone has
    report.write_run(two, run_folder(two, ("model-c", 20, answers("wwwwww") + answers("rr", start=20))),
                     {"run_id": "two"}, plots=False)
    assert pairwise.HEADING not in (two / "report.md").read_text()  # one case: nothing to compare
    merged = tmp_path / "merged"
    assert main(["report", str(one), str(two), "--out", str(merged), "--no-plots"]) == 0
    capsys.readouterr()
    part = ways_part((merged / "report.md").read_text(), 20)
    _, adjacent = tables(part)
    by_pair = {(p["A"], p["B"]): p for p in adjacent}
    assert by_pair[("model-b", "model-c")]["Paired n"] == "6"
    assert "3 cases, 3 pairs tested" in part


def test_on_few_images_the_section_says_how_large_a_difference_must_be_to_count():
    """"Not significantly different" at n = 12 rules out only gaps of half the images: said, with the
    arithmetic (McNemar's exact test needs 6 discordant images all one way: 2 / 2^6 = 0.031 < 0.05)."""
    from scipy.stats import binomtest

    from vlmcls.report import stats

    assert binomtest(6, 6).pvalue < 0.05 < binomtest(5, 5).pvalue
    line = lambda n: " ".join(pairwise._power([pairwise.Versus({}, {}, stats.Paired(n, None, None, 0, 0, 1.0, 0, 0), 1.0)]))
    assert line(12) == ("With 12 paired images, no difference smaller than 6 images (0.50 in accuracy) can be significant, "
                        "even before Holm's correction: *not significantly different* here rules out only large gaps.")
    assert line(5).startswith("With 5 paired images no difference can be significant")
    assert line(120) and line(121) == ""  # 6/121 < 0.05: a gap that small is no longer worth the warning
