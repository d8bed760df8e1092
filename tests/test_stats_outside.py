"""vlmcls's reported statistics against outside references (scipy, scikit-learn, or a textbook formula
written out here), beyond precision / recall / F1 / accuracy themselves.

The audit behind this file used statsmodels 0.15 as a second reference (proportion_confint(method="beta"),
contingency_tables.mcnemar, multitest.multipletests(method="holm"), gof.chisquare). statsmodels is not
a dependency, so where it was the reference the test writes its formula out, names it, and pins a few
of its values (copied from statsmodels' output) as literals.

Covered: the exact (Clopper-Pearson) accuracy interval and the gate that reads it, the percentile
bootstrap of F1, McNemar's test (exact and chi-square), its pairing against a baseline and model
against model, Holm's correction, the candidate-position chi-square, consistency across orders, ECE
and its reliability bins, the ECE noise floor, and top-k accuracy.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import stats as ss

from vlmcls import calibration, metrics, orders
from vlmcls.gate import failures
from vlmcls.report import pairwise, stats
from vlmcls.report.markdown import gate_notes
from vlmcls.types import Prediction
from vlmcls.vocab import AVERAGES

TIGHT = 1e-9  # scipy's binomtest finds the Clopper-Pearson bounds by root finding: ~5e-13 from beta.ppf


# ------------------------------------------------------------------------ accuracy: Clopper-Pearson
def clopper_pearson(x: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Clopper & Pearson (1934) by the beta quantiles, as statsmodels' proportion_confint(method="beta"):
    lower = Beta(a/2; x, n-x+1) (0 at x=0), upper = Beta(1-a/2; x+1, n-x) (1 at x=n)."""
    a = 1 - level
    lo = 0.0 if x == 0 else ss.beta.ppf(a / 2, x, n - x + 1)
    hi = 1.0 if x == n else ss.beta.ppf(1 - a / 2, x + 1, n - x)
    return float(lo), float(hi)


GRID = [(x, n) for n in (1, 2, 3, 5, 10, 17, 32, 40, 100) for x in range(n + 1)] + [
    (0, 1000), (1, 1000), (500, 1000), (999, 1000), (1000, 1000), (4321, 5000)]


@pytest.mark.parametrize("level", [0.95, 0.9, 0.99])
def test_accuracy_interval_is_clopper_pearson(level):
    # catches: a Wald / Wilson / bootstrap interval, a one-sided level, the beta parameters off by one,
    # the level ignored
    worst = max(max(abs(a - b) for a, b in zip(metrics.accuracy_interval(x, n, level), clopper_pearson(x, n, level)))
                for x, n in GRID)
    assert worst < TIGHT, f"accuracy_interval differs from Clopper-Pearson by {worst:g} at level {level}"


def test_accuracy_interval_pinned_edges():
    # statsmodels proportion_confint(x, n, method="beta") printed these
    pinned = {(0, 1): (0.0, 0.975), (1, 1): (0.025, 1.0), (0, 40): (0.0, 0.0880973028788024),
              (7, 10): (0.3475471499400027, 0.9332604888222655), (32, 32): (0.8911188393206471, 1.0)}
    for (x, n), ref in pinned.items():
        assert metrics.accuracy_interval(x, n) == pytest.approx(ref, abs=TIGHT), (x, n)
    # all wrong: upper = 1 - 0.025^(1/n); all right: lower = 0.025^(1/n) (closed forms of the beta quantile)
    for n in (1, 7, 40, 333):
        assert metrics.accuracy_interval(0, n)[1] == pytest.approx(1 - 0.025 ** (1 / n), abs=TIGHT)
        assert metrics.accuracy_interval(n, n)[0] == pytest.approx(0.025 ** (1 / n), abs=TIGHT)


def pred(i, true, p, error=None, **kw) -> Prediction:
    return Prediction(f"s{i}", true, f"c{true}", (), "x", p, None if p is None else f"c{p}",
                      "error" if error else ("match" if p is not None else "unresolved"), error=error, **kw)


def test_compute_reports_the_exact_interval_of_its_own_accuracy():
    # 20 rows: 11 right, 5 wrong, 3 unresolved, 1 error row -> 11 / 20 (unresolved and errors count as wrong)
    preds = ([pred(i, i % 3, i % 3) for i in range(11)] + [pred(11 + i, 0, 1) for i in range(5)]
             + [pred(16 + i, 2, None) for i in range(3)] + [pred(19, 1, None, error="boom")])
    m = metrics.compute(preds)
    assert (m.n, m.accuracy, m.accuracy_ci_method) == (20, 11 / 20, "exact")
    # catches: the interval drawn on resolved rows only (n=16) or on hits counted without the wrong ones
    assert m.accuracy_ci == pytest.approx(clopper_pearson(11, 20), abs=TIGHT)


def test_gate_reads_the_upper_bound_and_the_cannot_fail_note_is_exact():
    # 0 of 40 right: the upper bound is 0.0881 (statsmodels: 0.0880973028788024)
    preds = [pred(i, 0, 1) for i in range(40)]
    m = metrics.compute(preds)
    result = SimpleNamespace(spec=SimpleNamespace(case_id="c", model=SimpleNamespace(smoke=False)), metrics=m,
                             budget_stop=None, predictions=preds, stand_in=False)
    # catches: the gate reading the point accuracy or the lower bound (both 0 < 0.088 would fail it)
    assert failures(result, 0.088) == []
    assert len(failures(result, 0.0881)) == 1
    # markdown.gate_notes: "cannot fail" iff 0 right keeps the upper bound >= the gate, and the n it
    # asks for is the smallest n at which 0 right falls below it (searched here with scipy)
    for t in (0.01, 0.05, 0.0881, 0.1, 0.3, 0.5, 0.9):
        need = next(n for n in range(1, 1000) if clopper_pearson(0, n)[1] < t)
        for n in (1, need - 1, need, need + 1):
            if n < 1:
                continue
            note = gate_notes([{"case_id": "c", "threshold": t, "metrics": {"n": n}, "status": "passed"}])
            cannot = clopper_pearson(0, n)[1] >= t
            assert bool(note) == cannot, (t, n, note)
            if cannot:
                assert f"n ≥ {need} " in note[0], (t, n, need, note)


# ------------------------------------------------------------------------------- F1 and its bootstrap
def sk_f1s(y_true, y_pred) -> tuple[float, float, float]:
    """present / union / weighted F1 from scikit-learn's per-class F1 (zero_division=0), over the union of
    true and predicted classes (the -1 'unresolved' prediction is no class)."""
    from sklearn.metrics import precision_recall_fscore_support

    labels = np.union1d(y_true, y_pred[y_pred != -1])
    _, _, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    return float(f[s > 0].mean()), float(f.mean()), float(f @ s / s.sum())


def f1_cases():
    rng = np.random.default_rng(5)
    out = [(np.array([0]), np.array([0])), (np.array([0]), np.array([-1])), (np.array([3] * 5), np.array([3] * 5)),
           (np.array([3] * 5), np.array([-1] * 5)), (np.array([0, 1, 2]), np.array([5, 5, 5])),
           (np.array([0, 0, 1, 1]), np.array([1, 1, 0, 0]))]
    for _ in range(60):
        n, k = int(rng.integers(2, 40)), int(rng.integers(1, 8))
        out.append((rng.integers(0, k, n), rng.integers(-1, k + 2, n)))
    return out


def test_f1_under_each_convention_is_scikit_learns():
    from sklearn.metrics import f1_score

    for yt, yp in f1_cases():
        size = int(max(yt.max(), yp.max())) + 1
        union = np.union1d(yt, yp[yp != -1])
        ref = (f1_score(yt, yp, labels=np.unique(yt), average="macro", zero_division=0),
               f1_score(yt, yp, labels=union, average="macro", zero_division=0),
               f1_score(yt, yp, average="weighted", zero_division=0, labels=union))
        # catches: the bootstrap's fast F1 averaging over the wrong classes (e.g. counting the -1 class)
        assert metrics.f1_by_average(yt, yp, size) == pytest.approx(ref, abs=1e-12), (yt, yp)
        assert [metrics.averaged(yt, yp, a)[2] for a in AVERAGES] == pytest.approx(ref, abs=1e-12)


def reference_bootstrap(yt, yp, seed, rounds):
    """Percentile bootstrap (Efron): resample rows with replacement by the same numpy stream vlmcls
    documents (default_rng(seed).integers(0, n, n) per round), F1 from scikit-learn, 2.5 / 97.5
    percentiles by scipy.stats.scoreatpercentile (linear interpolation)."""
    rng = np.random.default_rng(seed)
    n = len(yt)
    f = np.array([sk_f1s(yt[i], yp[i]) for i in (rng.integers(0, n, size=n) for _ in range(rounds))])
    return {a: (ss.scoreatpercentile(f[:, k], 2.5), ss.scoreatpercentile(f[:, k], 97.5)) for k, a in enumerate(AVERAGES)}


def test_f1_bootstrap_matches_a_scikit_learn_percentile_bootstrap():
    cases = f1_cases()
    for yt, yp in cases[:6] + cases[6:9]:
        got, ref = metrics.bootstrap(yt, yp, seed=3, rounds=150), reference_bootstrap(yt, yp, 3, 150)
        for a in AVERAGES:
            # catches: percentiles other than 2.5 / 97.5, one resample index for y_true and another for
            # y_pred (unpaired), the conventions' columns swapped, the seed ignored
            assert got[a] == pytest.approx(ref[a], abs=1e-12), (a, yt, yp)
    # n = 1 and all right: every resample is the sample itself, a point interval
    assert metrics.bootstrap(np.array([2]), np.array([2]), rounds=20)["present"] == (1.0, 1.0)


def test_compute_carries_the_bootstrap_of_the_chosen_convention_and_seed():
    rng = np.random.default_rng(11)
    yt = rng.integers(0, 4, 30)
    yp = np.where(rng.random(30) < 0.6, yt, rng.integers(0, 6, 30))
    preds = [pred(i, int(t), int(p)) for i, (t, p) in enumerate(zip(yt, yp))]
    ref = reference_bootstrap(yt, yp, seed=7, rounds=1000)
    for average in AVERAGES:
        m = metrics.compute(preds, seed=7, average=average)
        assert m.f1 == pytest.approx(sk_f1s(yt, yp)[AVERAGES.index(average)], abs=1e-12)
        # catches: compute not passing its seed on, or the present interval shown under another average
        assert m.f1_ci == pytest.approx(ref[average], abs=1e-12), average


# --------------------------------------------------------------------------------------- McNemar
def mcnemar_reference(b: int, c: int, clamp: bool = False) -> float:
    """statsmodels.stats.contingency_tables.mcnemar: exact=True is 2 x Binom(min(b, c); b+c, 1/2) capped
    at 1; exact=False, correction=True is chi2_1 tail of (|b-c| - 1)^2 / (b+c) (Edwards 1948).
    vlmcls uses the exact test below 25 discordant pairs and the corrected chi-square from 25 on.
    `clamp`: vlmcls's documented p = 1 at b = c (see the test below), where statsmodels gives 1/n."""
    n = b + c
    if n == 0 or (clamp and b == c):
        return 1.0
    if n < 25:
        return float(min(1.0, 2 * ss.binom.cdf(min(b, c), n, 0.5)))
    return float(ss.chi2.sf((abs(b - c) - 1) ** 2 / n, 1))


def test_mcnemar_matches_the_exact_and_corrected_chi_square_tests():
    worst = max(abs(stats.mcnemar(b, c) - mcnemar_reference(b, c)) for b in range(70) for c in range(70) if b != c)
    # catches: the exact/chi-square switch at another n, no continuity correction, a one-sided p,
    # the binomial's p not 1/2
    assert worst < 1e-12, worst
    # statsmodels' own figures: (b, c) -> p
    pinned = {(0, 3): 0.25, (6, 0): 0.03125, (12, 12): 1.0, (30, 10): 0.002663119259138558, (13, 12): 1.0}
    for (b, c), p in pinned.items():
        assert stats.mcnemar(b, c) == pytest.approx(p, abs=1e-12), (b, c)
    assert stats.mcnemar(0, 0) == 1.0


def test_mcnemar_at_b_equal_c_in_the_chi_square_range_is_one():
    # A documented deviation from statsmodels, which gives (|b-c|-1)^2/n = 1/n there (p = 0.84 at 12:12,
    # 0.86 at 16:16): vlmcls clamps |b-c| - 1 at 0, so equal counts, no evidence either way, give p = 1.
    for b in range(13, 60):
        assert stats.mcnemar(b, b) == 1.0
        assert ss.chi2.sf(1 / (2 * b), 1) < 1.0  # the unclamped textbook value


def outcome_rows(pattern: str, prefix: str = "s") -> list[dict]:
    """One JSON row per character: 'r' right, 'w' wrong, 'u' unresolved, 'e' error row, '.' absent."""
    rows = []
    for i, ch in enumerate(pattern):
        if ch == ".":
            continue
        p = {"r": 1, "w": 2, "u": None, "e": None}[ch]
        rows.append({"sample_id": f"{prefix}{i}", "true_id": 1, "true_label": "c1", "pred_id": p,
                     "pred_label": None if p is None else f"c{p}", "candidates": ["c1", "c2", "c3"],
                     "error": "boom" if ch == "e" else None})
    return rows


def test_pairing_against_a_baseline_counts_the_2x2_table():
    rng = np.random.default_rng(4)
    for trial in range(40):
        n = int(rng.integers(1, 80))
        before = "".join(rng.choice(list("rwue."), n, p=[.5, .2, .1, .05, .15]))
        now = "".join(rng.choice(list("rwue."), n, p=[.5, .2, .1, .05, .15]))
        both = [i for i in range(n) if before[i] != "." and now[i] != "."]
        right = lambda s, i: s[i] == "r"  # noqa: E731
        b = sum(right(before, i) and not right(now, i) for i in both)
        c = sum(right(now, i) and not right(before, i) for i in both)
        got = stats.pair(outcome_rows(now), outcome_rows(before))
        # catches: b and c swapped (a gain read as a loss), unresolved / error rows counted right,
        # unshared samples counted, accuracies over all rows instead of the shared ones
        assert (got.n, got.b, got.c) == (len(both), b, c), trial
        assert got.p == pytest.approx(mcnemar_reference(b, c, clamp=True), abs=1e-12)
        if both:
            assert got.accuracy == pytest.approx(sum(right(now, i) for i in both) / len(both))
            assert got.baseline_accuracy == pytest.approx(sum(right(before, i) for i in both) / len(both))
        assert got.worse == (mcnemar_reference(b, c, clamp=True) < 0.05 and b > c)


def test_model_against_model_orientation_and_paired_difference():
    a, b = outcome_rows("rrrrrrrrwwrw.r"), outcome_rows("wwwwwwwrrrrrrr")
    # shared 0..11 and 13: a right only at 0-6 (7), b right only at 8, 9, 11 (3)
    v = pairwise.versus(a, b)
    assert (v.n, v.b, v.c) == (13, 7, 3)
    assert v.p == pytest.approx(float(ss.binomtest(7, 10, 0.5).pvalue), abs=1e-12)
    ra, rb = {"case_id": "A", "model": "a", "metrics": {"accuracy": 0.7}}, {"case_id": "B", "model": "b",
                                                                           "metrics": {"accuracy": 0.5}}
    pairs = pairwise.comparisons([(ra, a), (rb, b)])
    table = pairwise.pair_table([(ra, rb), (rb, ra)], pairs)
    # "Accuracy A − B (paired)" must be the difference of the accuracies on the shared samples
    acc_a, acc_b = 10 / 13, 6 / 13
    assert f"| {acc_a - acc_b:+.3f} " in table.splitlines()[2], table
    assert f"| {acc_b - acc_a:+.3f} " in table.splitlines()[3], table


def test_smallest_callable_difference_is_six_images():
    # pairwise.MIN_DISCORDANT: the fewest discordant images (all one way) the exact test calls at 5 %
    first = next(m for m in range(1, 30) if ss.binomtest(m, m, 0.5).pvalue < 0.05)
    assert pairwise.MIN_DISCORDANT == first == 6


# ------------------------------------------------------------------------------------------ Holm
def holm_rejects(p: np.ndarray, alpha: float) -> np.ndarray:
    """Holm's (1979) step-down procedure itself: sort ascending, reject H_(j) while p_(j) <= alpha/(k-j),
    j = 0..k-1, stop at the first that is not."""
    k, out = len(p), np.zeros(len(p), bool)
    for j, i in enumerate(np.argsort(p, kind="stable")):
        if p[i] > alpha / (k - j):
            break
        out[i] = True
    return out


def test_holm_adjusted_p_values_are_the_step_down_procedure():
    # the defining property of adjusted p-values: adjusted_i <= alpha  <=>  Holm rejects H_i at alpha
    rng = np.random.default_rng(1)
    for trial in range(300):
        k = int(rng.integers(1, 10))
        p = rng.random(k) ** 3
        if trial % 3 == 0:
            p[-1] = p[0]  # ties
        if trial % 5 == 0:
            p = np.round(p, 2)
        adj = np.array(pairwise.holm([float(x) for x in p]))
        assert np.all(adj <= 1.0) and np.all(adj >= p - 1e-15)
        # alphas just either side of each adjusted p (exactly on it, rounding decides); below 1, as an
        # adjusted p capped at 1 means "never rejected"
        for alpha in sorted(a for a in set(np.concatenate([adj * (1 - 1e-9), adj * (1 + 1e-9), [0.01, 0.05, 0.5]]))
                            if 0 < a < 1):
            # catches: Bonferroni (k x p) or Hochberg's step-up, no running maximum, no cap at 1
            assert np.array_equal(adj <= alpha, holm_rejects(p, alpha)), (p, adj, alpha)
    # statsmodels multipletests(method="holm") printed these
    pinned = {(0.01, 0.04, 0.03, 0.005): [0.03, 0.06, 0.06, 0.02], (0.02, 0.02, 0.5): [0.06, 0.06, 0.5],
              (0.3,): [0.3], (0.001, 0.2, 0.2, 0.9, 0.04): [0.005, 0.6, 0.6, 0.9, 0.16]}
    for p, ref in pinned.items():
        assert pairwise.holm(list(p)) == pytest.approx(ref, abs=1e-12)
    assert pairwise.holm([]) == []


# ---------------------------------------------------------------------- candidate orders: position bias
def test_position_bias_chi_square_is_pearsons_against_the_bin_sizes():
    rng = np.random.default_rng(2)
    for ways in (2, 3, 7, 10, 11, 13, 25, 100, 1000):
        B = min(10, ways)
        # positions p of a list of N go to bin floor(p * B / N): sizes from that definition
        sizes = [sum((p * B) // ways == b for p in range(ways)) for b in range(B)]
        assert orders.bin_sizes(ways) == sizes
        for trial in range(15):
            counts = [int(x) for x in rng.integers(0, 25, B)]
            if trial == 0:
                counts = [0] * B
                counts[0] = 9  # every pick in the first bin
            expected, chi2, p = orders.uniform_test(counts, ways)
            e = np.array(sizes) * sum(counts) / ways
            stat = float(((np.array(counts) - e) ** 2 / e).sum())
            # catches: equal bins assumed when N is no multiple of 10, df = B instead of B - 1,
            # expected counts not scaled to the total
            assert expected == pytest.approx(list(e), abs=1e-12)
            assert chi2 == pytest.approx(stat, rel=1e-12, abs=1e-12)
            assert p == pytest.approx(float(ss.chi2.sf(stat, B - 1)), rel=1e-9, abs=1e-15), (ways, counts)
    # nothing to test: no pick, or a single bin
    assert orders.uniform_test([0, 0, 0], 3)[1:] == (None, None)
    assert orders.uniform_test([4], 1)[1:] == (None, None)


def order_row(sid, k, true, p, cands):
    return {"sample_id": sid, "order": k, "true_id": true, "true_label": cands[true], "pred_id": p,
            "pred_label": None if p is None else cands[p], "candidates": list(cands)}


def test_orders_summary_consistency_accuracy_and_picks():
    cands = ("a", "b", "c", "d")  # class id = index, listed at its position in every order here
    pattern = {"s0": [0, 0, 0], "s1": [1, 1, 1], "s2": [0, 1, 0], "s3": [None, None, None], "s4": [2, 2, None],
               "s5": [0, 0, 3]}
    rows = [order_row(sid, k, 0, p, cands) for sid, ps in pattern.items() for k, p in enumerate(ps)]
    rows.append(order_row("s6", 0, 0, 0, cands))  # answered in order 0 only: left out
    s = orders.summary(rows, 3, 4)
    acc = [sum(ps[k] == 0 for ps in pattern.values()) / 6 for k in range(3)]
    hits = [sum(p == 0 for p in ps) for ps in pattern.values()]
    assert (s["images"], s["incomplete"]) == (6, 1)
    assert s["accuracy"] == pytest.approx(acc)
    # catches: population std (ddof=0) for the spread over orders
    assert (s["mean"], s["std"]) == pytest.approx((np.mean(acc), np.std(acc, ddof=1)), abs=1e-15)
    assert (s["min"], s["max"]) == (min(acc), max(acc))
    # consistent: the same resolved answer in every order (s0, s1); unresolved never agrees (s3)
    assert s["consistent"] == pytest.approx(2 / 6)
    assert (s["right_all"], s["right_some"], s["right_none"]) == pytest.approx(
        (sum(h == 3 for h in hits) / 6, sum(0 < h < 3 for h in hits) / 6, sum(h == 0 for h in hits) / 6))
    picks = [p for ps in pattern.values() for p in ps if p is not None]
    assert s["picked"] == [picks.count(pos) for pos in range(4)]
    _, chi2, _ = orders.uniform_test(s["picked"], 4)
    # K = 3: Pearson's statistic as before; every image here has the same lists (as labels-first at N = every
    # class would), so position and class cannot be told apart and no p is given (test_orders checks the
    # permutation p where each image has its own lists)
    assert s["chi2"] == chi2 and s["p_value"] is None
    assert (s["p_test"], s["p_draws"], s["rough_test"]) == ("shared lists", orders.PERMUTATION_DRAWS, False)
    # position accuracy: the true label (class 0) sits at position 0 in every row
    assert s["position_accuracy"][0] == pytest.approx(sum(hits) / 18) and s["position_n"] == [18, 0, 0, 0]
    one = orders.summary([order_row("x", 0, 0, 0, cands)], 1, 4)
    assert one["std"] is None and one["accuracy"] == [1.0] and one["consistent"] == 1.0


def test_one_order_keeps_exactly_the_chi_square_tables_p():
    """K = 1 (no --orders): the p-value is scipy's chisquare against the bin sizes, bit for bit as before the
    permutation test, so results saved then do not move."""
    rng = np.random.default_rng(11)
    for ways in (4, 10, 25, 1000):
        cands = [f"c{i}" for i in range(ways)]
        rows = [order_row(f"s{i}", 0, 0, int(rng.integers(ways)) if rng.random() > 0.1 else None, cands)
                for i in range(300)]
        s = orders.summary(rows, 1, ways)
        ref = ss.chisquare(s["picked"], np.array(orders.bin_sizes(ways)) * sum(s["picked"]) / ways)
        assert s["p_value"] == float(ref.pvalue) and s["chi2"] == float(ref.statistic)
        assert s["p_test"] == "chi-square" and "p_draws" not in s
        assert s["rough_test"] == any(e < orders.MIN_EXPECTED for e in s["expected"])


def exact_relabelling_p(matrix, ways: int) -> float:
    """The permutation test's p with every relabelling enumerated instead of drawn: each image's positions
    mapped by each of the N! permutations of 0..N-1 (the same one for all its orders), all combinations equally
    likely; P(Pearson's statistic >= the observed), the statistic written out from the bin sizes."""
    import itertools

    bins, sizes = min(10, ways), np.array(orders.bin_sizes(ways))

    def stat(rows):
        picks = [p for r in rows for p in r if p >= 0]
        counts = np.bincount([p * bins // ways for p in picks], minlength=bins)
        e = sizes * len(picks) / ways
        return float(((counts - e) ** 2 / e).sum())

    perms = list(itertools.permutations(range(ways)))
    per_image = [sorted({tuple(-1 if p < 0 else perm[p] for p in r) for perm in perms}) for r in matrix]
    # each distinct relabelled row is reached by the same number of permutations: equally likely
    observed = stat(matrix)
    stats_all = [stat(combo) for combo in itertools.product(*per_image)]
    return sum(t >= observed - 1e-9 for t in stats_all) / len(stats_all)


def test_permutation_p_agrees_with_every_relabelling_enumerated():
    rng = np.random.default_rng(3)
    for ways, k, images in [(3, 2, 4), (4, 2, 3), (4, 3, 3), (4, 4, 3), (5, 2, 3), (3, 5, 3)]:
        for _ in range(4):
            matrix = [[int(rng.integers(ways)) if rng.random() > 0.1 else -1 for _ in range(k)] for _ in range(images)]
            if all(p < 0 for r in matrix for p in r):
                continue
            exact, p = exact_relabelling_p(matrix, ways), orders.permutation_p(matrix, ways)
            # Monte-Carlo error of 1,999 draws (4 sd), and the +1 of (1 + b) / (1 + draws)
            assert abs(p - exact) <= 4 * math.sqrt(exact * (1 - exact) / 1999) + 1 / 2000, (ways, matrix, p, exact)
    # every image's picks on every position (K = N, by content): any relabelling gives the same counts, p = 1
    # exactly (ties count: integers, no rounding)
    assert orders.permutation_p([[0, 1, 2, 3], [3, 1, 0, 2]] * 5, 4) == 1.0
    # the same position in every order of every image (first-listed): no relabelling reaches it
    assert orders.permutation_p([[0, 0, 0]] * 20, 10) == 1 / (1 + orders.PERMUTATION_DRAWS)
    # nothing to test; and the same rows, the same p
    assert orders.permutation_p([[-1, -1]], 4) is None and orders.permutation_p([], 4) is None
    m = [[int(x) for x in rng.integers(0, 1000, 5)] for _ in range(50)]
    assert orders.permutation_p(m, 1000) == orders.permutation_p(m, 1000)


def simulated_p(rng, ways: int, k: int, images: int, rep: int, first_bias: float = 0.0, redraw: bool = False) -> float:
    """A case's position-bias p from rows made as the runner makes them: order 0 a uniform shuffle, orders
    1..K-1 by candidates.order_permutation. The model picks by content: the true label w.p. 0.6, else one
    other candidate, the same in every order (`redraw`: drawn afresh in each order, as a sampling model
    might); or w.p. `first_bias` per answer the first listed candidate."""
    from vlmcls.candidates import order_permutation

    rows = []
    for s in range(images):
        sid = f"r{rep}-s{s}"
        listed = [f"c{i}" for i in rng.permutation(ways)]
        true = int(rng.integers(ways))
        pick = true if rng.random() < 0.6 else int(rng.integers(ways))
        for order in range(k):
            if redraw and order:
                pick = true if rng.random() < 0.6 else int(rng.integers(ways))
            cands = [listed[j] for j in order_permutation(sid, ways, order, 0)]
            p = cands.index(cands[0]) if rng.random() < first_bias else cands.index(listed[pick])
            rows.append(order_row(sid, order, cands.index(listed[true]), p, cands))
    return orders.summary(rows, k, ways)["p_value"]


@pytest.mark.parametrize("ways, k, images, reps, redraw", [(10, 5, 30, 300, False), (20, 10, 15, 200, False),
                                                           (10, 10, 10, 200, True)])
def test_the_position_test_holds_its_level_under_the_orders_design(ways, k, images, reps, redraw):
    """A model that picks by content alone: p < 0.05 in about 5 % of cases. The chi-square table's p read
    the K orders' picks as independent; the orders spread them more evenly than that (a Latin rectangle),
    so it was below 0.05 in none of these cases. Seeded: cannot flake. (At K = N a model that names the
    same candidate in every order puts one pick on each position: nothing to test, p = 1, tested above.)"""
    rng = np.random.default_rng(100 + k)
    ps = np.array([simulated_p(rng, ways, k, images, rep, redraw=redraw) for rep in range(reps)])
    assert 0.015 <= (ps < 0.05).mean() <= 0.095 and 0.4 < ps.mean() < 0.6


def test_the_position_test_detects_a_model_drawn_to_the_first_position():
    rng = np.random.default_rng(7)
    ps = np.array([simulated_p(rng, 10, 5, 30, rep, first_bias=0.2) for rep in range(40)])
    assert (ps < 0.05).mean() >= 0.9


# ---------------------------------------------------------------------------------- ECE and top-k
EDGES = np.arange(calibration.BINS + 1) / calibration.BINS


def reference_ece(conf, correct) -> float:
    """Guo et al. (2017): bins (m-1)/M < c <= m/M (0 in the first), ECE = sum_m |B_m|/n |acc(B_m) - conf(B_m)|.
    Bin edges as the floats m/M, bin found by numpy.searchsorted (left: an edge value goes to the lower bin)."""
    conf, correct = np.asarray(conf, float), np.asarray(correct, float)
    idx = np.searchsorted(EDGES[1:-1], conf, side="left")
    return float(sum((idx == m).sum() / len(conf) * abs(correct[idx == m].mean() - conf[idx == m].mean())
                     for m in range(calibration.BINS) if (idx == m).any()))


def ece_inputs():
    rng = np.random.default_rng(0)
    out = [([0.6], [True]), ([0.6], [False]), ([0.0], [False]), ([1.0], [True]), ([0.0, 1.0], [True, False]),
           ([0.5] * 8, [True] * 8), ([0.9] * 8, [False] * 8),
           ([b / 15 for b in range(16)], [b % 2 == 0 for b in range(16)]),  # every edge value
           ([0.2, 0.4, 0.8, 0.2 + 1e-12, 0.4 - 1e-12], [1, 0, 1, 0, 1])]  # decimals on an edge
    for t in range(120):
        n = int(rng.integers(1, 60))
        conf = rng.random(n) if t % 3 else np.round(rng.random(n) * 15) / 15
        out.append((list(conf), list(rng.random(n) < conf)))
    return out


def test_ece_and_reliability_bins_follow_guo_et_al():
    for conf, corr in ece_inputs():
        # catches: left-closed bins, the 0 row dropped, bins weighted equally instead of by size
        assert calibration.ece(conf, corr) == pytest.approx(reference_ece(conf, corr), abs=1e-12), (conf, corr)
        assert calibration.ece_many(conf, [corr])[0] == pytest.approx(reference_ece(conf, corr), abs=1e-12)
        idx = np.searchsorted(EDGES[1:-1], conf, side="left")
        for m, b in enumerate(calibration.reliability(conf, corr)):
            members = idx == m
            assert (b.low, b.high, b.n) == pytest.approx((EDGES[m], EDGES[m + 1], members.sum()))
            if b.n:
                assert b.confidence == pytest.approx(np.mean(np.asarray(conf)[members]), abs=1e-12)
                assert b.accuracy == pytest.approx(np.mean(np.asarray(corr, float)[members]), abs=1e-12)
            else:
                assert b.confidence is None and b.accuracy is None  # empty bins
    assert calibration.ece([], []) is None
    assert (calibration.ece([0.6], [True]), calibration.ece([0.6], [False])) == pytest.approx((0.4, 0.6))


def exact_expected_ece(conf) -> float:
    """E[ECE] of a perfectly calibrated model, exactly: per bin, the number right is Poisson-binomial
    (pmf by convolution), and E|S - sum conf| / n summed over bins."""
    conf = np.asarray(conf, float)
    idx = np.searchsorted(EDGES[1:-1], conf, side="left")
    total = 0.0
    for m in set(idx):
        ps, pmf = conf[idx == m], np.array([1.0])
        for p in ps:
            pmf = np.convolve(pmf, [1 - p, p])
        total += float(pmf @ np.abs(np.arange(len(pmf)) - ps.sum()))
    return total / len(conf)


def test_ece_noise_floor_is_the_simulation_it_describes(monkeypatch):
    rng = np.random.default_rng(9)
    for conf in ([0.6], [0.9] * 20, list(rng.random(30)), list(np.linspace(0.05, 1, 150)), [1.0] * 5, [0.0, 1.0]):
        got = calibration.noise(conf)
        # the documented draws: default_rng(0), row i right when a uniform falls below confidence i
        draws = np.random.default_rng(0).random((calibration.NOISE_DRAWS, len(conf))) < np.asarray(conf)
        eces = np.array([reference_ece(conf, d) for d in draws])
        assert got == pytest.approx((eces.mean(), ss.scoreatpercentile(eces, 95)), abs=1e-12), conf
        # independent of any draw: the mean is within 4 standard errors of the exact expectation
        # (catches: right with probability 1 - confidence, or the ECE of the observed answers)
        se = eces.std(ddof=1) / math.sqrt(len(eces))
        assert abs(got[0] - exact_expected_ece(conf)) <= 4 * se + 1e-12, (conf, got, exact_expected_ece(conf))
    # one row at 0.6: ECE 0.4 w.p. 0.6, 0.6 w.p. 0.4 -> exactly 0.48 in expectation
    assert exact_expected_ece([0.6]) == pytest.approx(0.48)
    # a large case runs in chunks: the same numbers
    conf = list(rng.random(7))
    whole = calibration.noise(conf)
    monkeypatch.setattr(calibration, "NOISE_CELLS", 10)
    assert calibration.noise(conf) == pytest.approx(whole, abs=1e-15)
    assert calibration.noise([]) is None


def scored_rows(seed: int, n: int, classes: int):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        listed = int(rng.integers(1, classes + 1))  # a backend may list fewer than five
        top = tuple(int(c) for c in rng.permutation(classes)[:listed])
        true = int(rng.integers(classes))
        rows.append(Prediction(f"s{i}", true, f"c{true}", (), None, top[0], None, "rank", top5=top,
                               top1_prob=float(rng.random())))
    return rows


def test_top_k_accuracy_is_scikit_learns_and_the_summary_is_wired():
    from sklearn.metrics import top_k_accuracy_score

    for seed in range(25):
        classes = 6 + seed % 9
        rows = scored_rows(seed, 1 + seed * 3, classes)
        # scores: listed candidates in rank order; unlisted ones below every listed one, the true class
        # last among them (vlmcls counts an unlisted true class as a miss)
        S = np.zeros((len(rows), classes))
        for i, r in enumerate(rows):
            unlisted = [c for c in range(classes) if c not in r.top5 and c != r.true_id] + (
                [] if r.true_id in r.top5 else [r.true_id])
            for rank, c in enumerate(list(r.top5) + unlisted):
                S[i, c] = classes - rank
        y = [r.true_id for r in rows]
        for k in (1, 2, 5):
            # catches: top-k over top5[:k+1], or rows with fewer than k listed counted as hits
            assert calibration.top_k_accuracy(rows, k) == pytest.approx(
                top_k_accuracy_score(y, S, k=k, labels=range(classes)), abs=1e-12), (seed, k)
        s = calibration.summary(rows)
        conf = [r.top1_prob for r in rows]
        corr = [r.pred_id == r.true_id for r in rows]
        assert s["top5_accuracy"] == pytest.approx(top_k_accuracy_score(y, S, k=5, labels=range(classes)), abs=1e-12)
        assert s["top1_accuracy"] == pytest.approx(np.mean(corr)) and s["mean_confidence"] == pytest.approx(np.mean(conf))
        assert s["ece"] == pytest.approx(reference_ece(conf, corr), abs=1e-12)
    # rows without a ranking or a probability are not scored
    bare = Prediction("z", 1, "c1", (), None, 1, None, "match")
    assert calibration.top_k_accuracy([bare]) is None and calibration.summary([bare]) is None
