"""Calibration (top-k, reliability bins, ECE, the ECE of a perfectly calibrated model) and McNemar statistics, against hand-worked cases and
independent references: the exact binomial tail from math.comb, the chi-square (1 df) tail from
math.erfc. Found missing by mutation testing (README, "How it is tested")."""
from __future__ import annotations

import math

import pytest

from vlmcls import calibration
from vlmcls.report import stats, write_samples
from vlmcls.types import Prediction


# ---------------------------------------------------------------------------------- calibration
def scored_pred(i: int, true: int, top5, prob, pred_id="first", error=None) -> Prediction:
    pred = (top5[0] if top5 else None) if pred_id == "first" else pred_id
    return Prediction(f"s{i}", true, f"c{true}", ("a",), None, pred, None, "rank", error=error, top5=top5, top1_prob=prob)


def test_only_rows_with_a_ranking_and_a_probability_are_scored():
    both = scored_pred(0, 1, (1, 2), 0.9)
    no_prob = scored_pred(1, 1, (1, 2), None)  # a ranking without a probability
    no_rank = scored_pred(2, 1, None, 0.9, pred_id=1)  # a probability without a ranking
    empty = scored_pred(3, 1, (), 0.9, pred_id=1)
    assert calibration.scored([both, no_prob, no_rank, empty]) == [both]
    assert calibration.top_k_accuracy([no_prob, no_rank, empty]) is None
    assert calibration.summary([no_prob, no_rank, empty]) is None


def test_top_k_counts_the_true_class_within_the_first_k_only():
    # ranks of the true class: 1, 2, 5, 6 (a backend may keep more than five), absent
    rows = [scored_pred(0, 7, (7, 1, 2, 3, 4, 5), 0.5), scored_pred(1, 7, (1, 7, 2, 3, 4, 5), 0.5),
            scored_pred(2, 7, (1, 2, 3, 4, 7, 5), 0.5), scored_pred(3, 7, (1, 2, 3, 4, 5, 7), 0.5),
            scored_pred(4, 7, (1, 2, 3, 4, 5, 6), 0.5)]
    by_k = {k: calibration.top_k_accuracy(rows, k) for k in (1, 2, 4, 5, 6)}
    assert by_k == pytest.approx({1: 1 / 5, 2: 2 / 5, 4: 2 / 5, 5: 3 / 5, 6: 4 / 5})
    assert calibration.top_k_accuracy(rows) == pytest.approx(3 / 5)  # k = 5 by default


@pytest.mark.parametrize("bins, cases", [
    (15, {0.0: 0, 1 / 15: 0, 0.07: 1, 0.13: 1, 0.5: 7, 0.93: 13, 0.94: 14, 1.0: 14}),
    # ten bins: (0, 0.1], (0.1, 0.2], ... with 0 in the first; out-of-range values go to the end bins
    (10, {0.0: 0, 0.05: 0, 0.1: 0, 0.10001: 1, 0.25: 2, 0.5: 4, 0.95: 9, 1.0: 9, -0.2: 0, 1.3: 9}),
    (4, {0.0: 0, 0.25: 0, 0.26: 1, 0.5: 1, 0.74: 2, 0.75: 2, 0.76: 3, 1.0: 3}),
])
def test_bins_are_closed_on_the_right_and_hold_everything(bins, cases):
    assert {c: calibration.bin_index(c, bins) for c in cases} == cases


def test_the_default_is_fifteen_bins():
    assert calibration.bin_index(0.99) == 14 and calibration.bin_index(1.0) == 14
    assert len(calibration.reliability([0.5], [True])) == 15
    # 0.61 and 0.65 share bin 9 of 15 ((0.6, 0.667]) but not of 16 (9: (0.5625, 0.625], 10: (0.625, 0.6875])
    assert calibration.ece([0.61, 0.65], [True, False]) == pytest.approx(abs(0.5 - 0.63))
    assert calibration.ece([0.61, 0.65], [True, False], bins=16) == pytest.approx((0.39 + 0.65) / 2)


# four bins by hand: 0.2 (wrong) | 0.3 (right) | 0.6 (right) | 0.9 (wrong), 0.95 (right)
CONF = [0.2, 0.3, 0.6, 0.9, 0.95]
RIGHT = [False, True, True, False, True]


def test_reliability_table_by_hand():
    table = calibration.reliability(CONF, RIGHT, bins=8)  # eighths: 0.2 in bin 1, 0.3 in 2, 0.6 in 4, 0.9 and 0.95 in 7
    assert [(b.low, b.high) for b in table] == [(i / 8, (i + 1) / 8) for i in range(8)]
    assert [b.n for b in table] == [0, 1, 1, 0, 1, 0, 0, 2]
    assert [b.confidence for b in table] == pytest.approx([None, 0.2, 0.3, None, 0.6, None, None, 0.925])
    assert [b.accuracy for b in table] == [None, 0.0, 1.0, None, 1.0, None, None, 0.5]


def test_ece_by_hand():
    # bins of 4: |0 - .2| * 1/5 + |1 - .3| * 1/5 + |1 - .6| * 1/5 + |.5 - .925| * 2/5
    assert calibration.ece(CONF, RIGHT, bins=4) == pytest.approx((0.2 + 0.7 + 0.4) / 5 + 0.425 * 2 / 5)
    assert calibration.ece([], [], bins=4) is None
    assert calibration.ece([0.3, 0.3], [True, True], bins=4) == pytest.approx(0.7)
    assert calibration.ece([0.3, 0.3, 0.3], [True, False, False], bins=4) == pytest.approx(abs(1 / 3 - 0.3))


def test_summary_by_hand_with_its_own_bin_count():
    # true class 1 in every row: ranked first in rows 1, 2 and 4 (as RIGHT), second in row 3, absent in row 0
    rows = [scored_pred(0, 1, (2, 3, 4, 5, 6), 0.2), scored_pred(1, 1, (1, 2), 0.3), scored_pred(2, 1, (1,), 0.6),
            scored_pred(3, 1, (9, 1, 2), 0.9), scored_pred(4, 1, (1, 3), 0.95),
            scored_pred(5, 1, None, None, pred_id=1, error="boom")]
    s = calibration.summary(rows, bins=4)
    assert (s["n"], s["bins"], len(s["reliability"])) == (5, 4, 4)
    assert s["top1_accuracy"] == pytest.approx(3 / 5) and s["top5_accuracy"] == pytest.approx(4 / 5)
    assert s["mean_confidence"] == pytest.approx(sum(CONF) / 5)
    assert s["ece"] == pytest.approx((0.2 + 0.7 + 0.4) / 5 + 0.425 * 2 / 5)
    assert s["reliability"][3] == pytest.approx({"low": 0.75, "high": 1.0, "n": 2, "confidence": 0.925, "accuracy": 0.5})
    assert s["reliability"][0]["accuracy"] == 0.0 and s["reliability"][2]["accuracy"] == 1.0
    # top-1 is judged by pred_id (what the row answered), the ranking by top5
    answered_other = [scored_pred(0, 1, (1, 2), 0.8, pred_id=2)]
    assert calibration.summary(answered_other)["top1_accuracy"] == 0.0
    assert calibration.summary(answered_other)["top5_accuracy"] == 1.0


# ---------------------------------------------------------------------------------- ECE of a calibrated model
def expected_ece(groups) -> float:
    """The exact expected ECE of a perfectly calibrated model whose bins hold `groups`: (count, confidence)
    with one confidence per bin, each sample right with that probability: sum over bins of
    count/n x E|k/count - p|, k ~ Binomial(count, p), by math.comb (bins are independent)."""
    n = sum(m for m, _ in groups)
    return sum(m / n * sum(math.comb(m, k) * p ** k * (1 - p) ** (m - k) * abs(k / m - p) for k in range(m + 1))
               for m, p in groups)


def test_ece_many_is_ece_row_by_row():
    import numpy as np

    rng = np.random.default_rng(7)
    conf = rng.uniform(0, 1, 40).tolist() + [0.0, 1 / 15, 1.0]  # bin edges included
    rows = rng.random((25, len(conf))) < 0.5
    for bins in (15, 4):
        assert calibration.ece_many(conf, rows, bins).tolist() == pytest.approx(
            [calibration.ece(conf, list(r), bins) for r in rows], abs=1e-12)
    assert calibration.ece_many(CONF, RIGHT, bins=4).tolist() == pytest.approx([calibration.ece(CONF, RIGHT, bins=4)])


@pytest.mark.parametrize("groups", [[(4, 0.5)], [(1, 0.6)], [(4, 0.5), (2, 0.9)], [(3, 0.3), (5, 0.7), (1, 0.95)]])
def test_noise_is_the_expected_ece_of_a_perfectly_calibrated_model(groups):
    # 0.5 x 4 in one bin: E|k/4 - 1/2| = 3/16; one sample at 0.6: 2 x 0.6 x 0.4 = 0.48
    conf = [p for m, p in groups for _ in range(m)]
    mean, p95 = calibration.noise(conf, draws=40_000)
    assert mean == pytest.approx(expected_ece(groups), abs=0.006)
    assert mean <= p95 <= 1
    assert expected_ece([(4, 0.5)]) == pytest.approx(3 / 16) and expected_ece([(1, 0.6)]) == pytest.approx(0.48)


def test_noise_shrinks_with_n_and_vanishes_for_certain_answers():
    assert calibration.noise([0.6] * 20)[0] > calibration.noise([0.6] * 500)[0] > calibration.noise([0.6] * 5000)[0]
    assert calibration.noise([0.6] * 20)[0] == pytest.approx(expected_ece([(20, 0.6)]), abs=0.01)
    assert calibration.noise([1.0] * 7) == (0.0, 0.0)  # always right at confidence 1: ECE 0 in every run
    assert calibration.noise([0.0] * 3) == (0.0, 0.0)
    assert calibration.noise([]) is None


def test_noise_is_seeded_and_chunking_does_not_change_it(monkeypatch):
    conf = [0.3, 0.55, 0.62, 0.8, 0.97]
    first = calibration.noise(conf)
    assert calibration.noise(conf) == first and calibration.noise(conf, seed=1) != first
    assert calibration.noise(conf, seed=calibration.NOISE_SEED, draws=calibration.NOISE_DRAWS) == first
    monkeypatch.setattr(calibration, "NOISE_CELLS", 7)  # one run per chunk: the same random stream
    assert calibration.noise(conf) == pytest.approx(first, abs=1e-12)
    assert calibration.noise(conf, draws=1)[0] == calibration.noise(conf, draws=1)[1]


def test_summary_records_the_noise_floor():
    rows = [scored_pred(i, 1, (1, 2), c) for i, c in enumerate(CONF)]
    s = calibration.summary(rows)
    mean, p95 = calibration.noise(CONF)
    assert (s["ece_noise"], s["ece_noise_p95"], s["ece_noise_draws"]) == (mean, p95, calibration.NOISE_DRAWS)
    assert type(s["ece_noise"]) is float and type(s["ece_noise_p95"]) is float  # results.json, not numpy scalars
    assert calibration.summary(rows, bins=4)["ece_noise"] == calibration.noise(CONF, bins=4)[0]


# ---------------------------------------------------------------------------------- McNemar
def exact_two_sided(b: int, c: int) -> float:
    """Two-sided binomial test of b successes in b + c at p = 1/2: twice the smaller tail, at most 1."""
    n = b + c
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2 ** n)


def chi_square_corrected(b: int, c: int) -> float:
    """P(X > x) for X ~ chi-square(1 df) = erfc(sqrt(x / 2)), x = max(0, |b - c| - 1)^2 / (b + c): the
    correction never overshoots (b = c is no evidence at all: p = 1)."""
    return math.erfc(math.sqrt(max(0, abs(b - c) - 1) ** 2 / (b + c) / 2))


def test_mcnemar_is_the_exact_binomial_test_below_25_pairs():
    for n in range(1, 25):
        for b in range(n + 1):
            assert stats.mcnemar(b, n - b) == pytest.approx(exact_two_sided(b, n - b), rel=1e-9), (b, n - b)


def test_mcnemar_is_the_corrected_chi_square_from_25_pairs():
    for n in (25, 26, 40, 61):
        for b in range(0, n + 1, 3):
            assert stats.mcnemar(b, n - b) == pytest.approx(chi_square_corrected(b, n - b), rel=1e-9), (b, n - b)
    assert stats.mcnemar(12, 12) == 1.0 and stats.mcnemar(0, 0) == 1.0
    assert stats.mcnemar(16, 16) == 1.0 and stats.mcnemar(40, 40) == 1.0  # equal losses and gains, 25 or more


@pytest.mark.parametrize("b, c", [(-1, 30), (30, -1), (-1, 3), (3, -1)])
def test_mcnemar_refuses_negative_counts(b, c):
    with pytest.raises(ValueError, match=rf"^discordant counts must be >= 0 \(got b={b}, c={c}\)$"):
        stats.mcnemar(b, c)


def rec(sid: str, true: int, pred: int | None, pred_label: str | None = None, true_label: str | None = None) -> dict:
    """A prediction as a JSON record (samples/*.jsonl); stats reads records and objects alike."""
    return {"sample_id": sid, "true_id": true, "pred_id": pred, "true_label": true_label or f"c{true}",
            "pred_label": pred_label}


def test_pair_counts_discordant_pairs_on_shared_samples_only():
    # shared s0..s9: both right s0-s3; lost (b) s4-s6; gained (c) s7; both wrong s8 (unresolved now), s9
    before = [rec(f"s{i}", 1, 1 if i < 7 else 2) for i in range(10)] + [rec("old", 1, 1)]
    now = ([rec(f"s{i}", 1, 1) for i in range(4)] + [rec(f"s{i}", 1, 3) for i in (4, 5, 6)] + [rec("s7", 1, 1)]
           + [rec("s8", 1, None), rec("s9", 1, 2), rec("new1", 1, 1), rec("new2", 1, 1)])
    p = stats.pair(now, before)
    assert (p.n, p.b, p.c, p.only_current, p.only_baseline) == (10, 3, 1, 2, 1)
    assert (p.accuracy, p.baseline_accuracy) == pytest.approx((5 / 10, 7 / 10))
    assert p.p == pytest.approx(exact_two_sided(3, 1)) and p.alpha == 0.05 and not p.significant
    assert p.verdict == "no significant difference" and p.test == "exact binomial"
    assert stats.pair(now, before, alpha=0.7).alpha == 0.7 and stats.pair(now, before, alpha=0.7).worse
    unpaired = stats.pair(now[:1], before[1:2])
    assert (unpaired.n, unpaired.accuracy, unpaired.baseline_accuracy, unpaired.p) == (0, None, None, 1.0)


def paired(b: int, c: int, n: int = 100, **kw) -> stats.Paired:
    return stats.Paired(n=n, accuracy=0.5, baseline_accuracy=0.5, b=b, c=c, p=stats.mcnemar(b, c), only_current=0,
                        only_baseline=0, **kw)


def test_significance_needs_p_below_alpha_strictly():
    at = paired(3, 1)  # p = 0.625 exactly
    assert not stats.Paired(**{**at.__dict__, "alpha": 0.625}).significant
    assert stats.Paired(**{**at.__dict__, "alpha": 0.6251}).significant


@pytest.mark.parametrize("b, c, worse, better", [(20, 2, True, False), (2, 20, False, True), (9, 7, False, False)])
def test_worse_and_better_by_direction(b, c, worse, better):
    p = paired(b, c)
    assert p.worse is worse and p.significant is (worse or better)
    assert p.verdict == ("significantly worse than the baseline" if worse else
                         "significantly better" if better else "no significant difference")


def test_which_test_is_named_switches_at_25_discordant_pairs():
    assert paired(4, 20).test == "exact binomial"
    assert paired(5, 20).test == "chi-square, continuity-corrected"


def test_summary_lines():
    p = stats.Paired(n=50, accuracy=0.5, baseline_accuracy=0.75, b=15, c=2, p=stats.mcnemar(15, 2), only_current=3,
                     only_baseline=4)
    assert p.summary() == ("accuracy 0.500 vs baseline 0.750 on 50 paired samples; lost 15, gained 2; "
                           f"McNemar p={exact_two_sided(15, 2):.3g} (exact binomial): significantly worse than the "
                           "baseline; 3 samples only in this run, 4 only in the baseline")
    alone = stats.Paired(**{**p.__dict__, "only_current": 0, "only_baseline": 0})
    assert alone.summary().endswith("significantly worse than the baseline")
    only_base = stats.Paired(**{**p.__dict__, "only_current": 0, "only_baseline": 1})
    assert only_base.summary().endswith("; 0 samples only in this run, 1 only in the baseline")
    none = stats.Paired(n=0, accuracy=None, baseline_accuracy=None, b=0, c=0, p=1.0, only_current=2, only_baseline=5)
    assert none.verdict == "no sample in common" and not none.worse
    assert none.summary() == ("no sample in common with the baseline (2 only in this run, 5 only in the baseline): "
                              "cannot compare")


def test_worse_than_baseline_takes_alpha():
    before = [rec(f"s{i}", 1, 1) for i in range(4)]
    now = [rec(f"s{i}", 1, 2) for i in range(4)]  # b = 4, c = 0: p = 2 / 16
    assert stats.worse_than_baseline(now, before) == (False, stats.pair(now, before).summary())
    worse, message = stats.worse_than_baseline(now, before, alpha=0.2)
    assert worse and message.endswith("significantly worse than the baseline") and "p=0.125" in message


# ---------------------------------------------------------------------------------- confusions
CONFUSED = ([rec(f"a{i}", 1, 2, "dog", "cat") for i in range(3)] + [rec(f"b{i}", 3, 4, None, "eel") for i in range(2)]
            + [rec("c0", 5, 6, "yak", "fox"), rec("d0", 7, 7, "ant", "ant"), rec("e0", 8, None, None, "bee"),
               rec("a9", 1, 2, "hound", "kitty")])  # the same pair again: the first labels seen name it


def test_top_confusions_by_hand():
    assert stats.top_confusions(CONFUSED) == [("cat", "dog", 4), ("eel", "4", 2), ("fox", "yak", 1)]
    assert stats.top_confusions(CONFUSED, k=2) == [("cat", "dog", 4), ("eel", "4", 2)]
    many = [rec(f"p{i}-{j}", i, 100 + i) for i in range(12) for j in range(12 - i)]  # pair i seen 12 - i times
    assert stats.top_confusions(many) == [(f"c{i}", str(100 + i), 12 - i) for i in range(10)]  # ten by default


def test_run_confusions_by_hand(tmp_path):
    write_samples(tmp_path / "samples" / "m-20way.jsonl", [Prediction(**{**r, "candidates": (), "answer": None,
                                                                          "stage": "match"}) for r in CONFUSED])
    write_samples(tmp_path / "samples" / "k-20way.jsonl",
                  [Prediction(f"x{i}", 3, "eel", (), None, 4, "newt", "match") for i in range(3)]
                  + [Prediction("y", 5, "fox", (), None, 6, "yak", "match")])
    write_samples(tmp_path / "samples" / "off-20way.jsonl", [Prediction(f"z{i}", 1, "cat", (), None, 2, "dog", "match")
                                                            for i in range(9)])
    rows = [{"case_id": "m-20way", "metrics": {"n": 9}}, {"case_id": "k-20way", "metrics": {"n": 4}},
            {"case_id": "off-20way", "metrics": None},  # no metrics (skipped, failed): its samples are not read
            {"case_id": "gone-20way", "metrics": {"n": 1}}]  # no samples file
    got = stats.run_confusions(rows, tmp_path)
    # (3, 4): 2 in m + 3 in k = 5; (1, 2): 4 in m; (5, 6): 1 + 1 = 2; labels of the first case that had the pair
    # each case's own count, most first (a tie in the order the cases came)
    assert got == [("eel", "4", 5, [("k-20way", 3), ("m-20way", 2)]), ("cat", "dog", 4, [("m-20way", 4)]),
                   ("fox", "yak", 2, [("m-20way", 1), ("k-20way", 1)])]
    assert stats.run_confusions(rows, tmp_path, k=1) == got[:1]
    assert stats.run_confusions(rows, tmp_path, at_least=3) == got[:2]
    assert stats.run_confusions(rows, tmp_path, at_least=1, k=100) == got  # no other pair: d0 and e0 are no confusion


def test_run_confusions_keeps_twenty_lines_by_default(tmp_path):
    write_samples(tmp_path / "samples" / "m-20way.jsonl", [Prediction(f"s{i}-{j}", i, f"c{i}", (), None, 100 + i, "x", "match")
                                                            for i in range(22) for j in range(2)])
    got = stats.run_confusions([{"case_id": "m-20way", "metrics": {"n": 44}}], tmp_path)
    assert got == [(f"c{i}", "x", 2, [("m-20way", 2)]) for i in range(20)]
