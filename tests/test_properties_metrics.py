"""Scores and per-class rows on an example small enough to check by hand, and candidate sets as
properties over many (seed, sample, N). Found missing by mutation testing (see README, Testing)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from vlmcls import metrics
from vlmcls.candidates import candidate_set
from vlmcls.metrics import per_class
from vlmcls.settings import AVERAGES
from vlmcls.types import Prediction

# five samples: class 0 right once of twice; class 1 right once of twice (and one class-1 sample
# answered with class 3, which is never true); class 2 unresolved.
TRUE = [0, 0, 1, 1, 2]
PRED = [0, 1, 1, 3, None]
BY_HAND = {  # (precision, recall, F1)
    # classes 0, 1, 2: P (1 + 1/2 + 0)/3, R (1/2 + 1/2 + 0)/3, F1 (2/3 + 1/2 + 0)/3
    "present": (0.5, 1 / 3, 7 / 18),
    # also class 3 (predicted, never true): P, R, F1 all 0 for it, so divided by 4
    "union": (1.5 / 4, 1 / 4, 7 / 24),
    # weighted by support 2, 2, 1: recall equals the accuracy
    "weighted": ((2 * 1 + 2 * 0.5) / 5, 0.4, (2 * 2 / 3 + 2 * 0.5) / 5),
}


def pred(i: int, true: int, pred_id: int | None) -> Prediction:
    return Prediction(f"s{i}", true, f"c{true}", ("a", "b"), "x", pred_id, None, "match" if pred_id is not None else "unresolved")


PREDS = [pred(i, t, p) for i, (t, p) in enumerate(zip(TRUE, PRED))]


def test_every_convention_is_covered_by_hand():
    assert set(BY_HAND) == set(AVERAGES)


@pytest.mark.parametrize("average", AVERAGES)
def test_scores_by_hand(average):
    y_true, y_pred = np.array(TRUE), np.array([metrics.UNRESOLVED if p is None else p for p in PRED])
    assert metrics.scores(y_true, y_pred, average) == pytest.approx((0.4, *BY_HAND[average]))
    m = metrics.compute(PREDS, average=average)
    assert (m.accuracy, m.precision, m.recall, m.f1) == pytest.approx((0.4, *BY_HAND[average]))
    assert m.average == average and m.n == 5 and m.unresolved == 1 and m.errors == 0
    for other in AVERAGES:  # any convention can be read back from any other
        o = m.with_average(other)
        assert (o.average, o.precision, o.recall, o.f1) == pytest.approx((other, *BY_HAND[other]))


def test_the_default_convention_is_present():
    y_true, y_pred = np.array(TRUE), np.array([-1 if p is None else p for p in PRED])
    assert metrics.averaged(y_true, y_pred) == pytest.approx(BY_HAND["present"])
    assert metrics.scores(y_true, y_pred) == pytest.approx((0.4, *BY_HAND["present"]))
    assert metrics.compute(PREDS).average == "present"


def test_an_unknown_convention_is_named_with_the_choices():
    choices = ", ".join(AVERAGES)
    with pytest.raises(ValueError, match=f"^unknown average 'macro'; one of {choices}$"):
        metrics.averaged(np.array(TRUE), np.array(TRUE), "macro")
    with pytest.raises(ValueError, match=f"^unknown average 'macro'; one of {choices}$"):
        metrics.compute(PREDS).with_average("macro")


def test_per_class_rows_by_hand():
    # class 2 is never predicted (unresolved): precision 0 by the zero_division rule, not 1
    rows = per_class(PREDS, ["cat", "dog", "eel", "fox"])
    expected = [
        {"class_id": 0, "label": "cat", "support": 2, "precision": 1.0, "recall": 0.5, "f1": 2 / 3},
        {"class_id": 1, "label": "dog", "support": 2, "precision": 0.5, "recall": 0.5, "f1": 0.5},
        {"class_id": 2, "label": "eel", "support": 1, "precision": 0.0, "recall": 0.0, "f1": 0.0},
    ]
    assert [list(r) for r in rows] == [list(e) for e in expected]
    for got, want in zip(rows, expected):
        assert got == pytest.approx(want)


@pytest.mark.parametrize("ways", [2, 5, 20, 100])
def test_candidate_sets_hold_the_true_class_and_distinct_distractors(ways):
    n_classes = 100
    for seed in range(3):
        for i in range(30):
            sid, true = f"img{i}", (i * 37) % n_classes
            cs = candidate_set(sid, true, ways, n_classes, seed)
            assert (cs.sample_id, cs.ways, cs.true_id) == (sid, ways, true)
            assert len(set(cs.class_ids)) == ways and true in cs.class_ids
            assert all(0 <= c < n_classes for c in cs.class_ids)
            assert candidate_set(sid, true, ways, n_classes, seed) == cs  # depends on its inputs only


# ---------------------------------------------------------------- bootstrap intervals against a reference
def sklearn_f1s(y_true: np.ndarray, y_pred: np.ndarray) -> list[float]:
    """F1 under each of AVERAGES straight from scikit-learn (not through metrics.averaged)."""
    from sklearn.metrics import f1_score

    union = np.union1d(y_true, y_pred[y_pred != metrics.UNRESOLVED])
    by = {"present": f1_score(y_true, y_pred, labels=np.unique(y_true), average="macro", zero_division=0),
          "union": f1_score(y_true, y_pred, labels=union, average="macro", zero_division=0),
          "weighted": f1_score(y_true, y_pred, labels=union, average="weighted", zero_division=0)}
    return [float(by[a]) for a in AVERAGES]


def percentile(values, q: float) -> float:
    """Linear interpolation between the order statistics at rank q/100 * (n - 1) (numpy's default, by hand)."""
    s = sorted(values)
    pos = q / 100 * (len(s) - 1)
    lo = int(pos)
    return s[lo] + (s[min(lo + 1, len(s) - 1)] - s[lo]) * (pos - lo)


def reference_bootstrap(y_true, y_pred, seed, rounds, f1s):
    """Percentile 95 % intervals of F1 over `rounds` resamples drawn as documented: rng =
    default_rng(seed), each round n indices with rng.integers(0, n, size=n)."""
    rng = np.random.default_rng(seed)
    f1 = []
    for _ in range(rounds):
        i = rng.integers(0, len(y_true), size=len(y_true))
        f1.append(f1s(y_true[i], y_pred[i]))
    return {a: (percentile([r[k] for r in f1], 2.5), percentile([r[k] for r in f1], 97.5)) for k, a in enumerate(AVERAGES)}


def random_arrays(seed: int, n: int = 60, classes: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Class 0 among the true and predicted classes, unresolved (-1) answers, and classes predicted
    but never true (classes .. classes + 2)."""
    rng = np.random.default_rng(100 + seed)
    y_true = rng.integers(0, classes, size=n)
    r = rng.random(n)
    y_pred = np.where(r < 0.45, y_true, np.where(r < 0.6, metrics.UNRESOLVED, rng.integers(0, classes + 3, size=n)))
    return y_true, y_pred


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_numpy_f1_equals_scikit_learn_on_resamples(seed):
    y_true, y_pred = random_arrays(seed)
    size = int(max(y_true.max(), y_pred.max())) + 1
    rng = np.random.default_rng(seed)
    for _ in range(10):
        i = rng.integers(0, len(y_true), size=len(y_true))
        assert metrics.f1_by_average(y_true[i], y_pred[i], size) == pytest.approx(sklearn_f1s(y_true[i], y_pred[i]))
    # by hand (TRUE/PRED above): per-class F1 2/3, 1/2, 0 (true classes) and 0 for class 3 (predicted only)
    y_pred = np.array([metrics.UNRESOLVED if p is None else p for p in PRED])
    assert metrics.f1_by_average(np.array(TRUE), y_pred, 4) == pytest.approx(tuple(BY_HAND[a][2] for a in AVERAGES))


@pytest.mark.parametrize("seed", [0, 3])
def test_bootstrap_intervals_equal_a_scikit_learn_reference(seed):
    y_true, y_pred = random_arrays(seed)
    f1_cis = metrics.bootstrap(y_true, y_pred, seed=seed, rounds=40)
    want = reference_bootstrap(y_true, y_pred, seed, 40, sklearn_f1s)
    assert list(f1_cis) == list(AVERAGES)
    for a in AVERAGES:
        assert f1_cis[a] == pytest.approx(want[a]), a


def test_compute_takes_1000_seeded_rounds():
    y_true, y_pred = random_arrays(5, n=40)
    preds = [pred(i, int(t), None if p == metrics.UNRESOLVED else int(p)) for i, (t, p) in enumerate(zip(y_true, y_pred))]
    size = int(max(y_true.max(), y_pred.max())) + 1
    # F1 of each resample by the numpy function the test above holds to scikit-learn (1,000 scikit-learn calls cost seconds)
    f1_cis = reference_bootstrap(y_true, y_pred, 7, 1000, lambda t, p: metrics.f1_by_average(t, p, size))
    m = metrics.compute(preds, seed=7)
    assert m.f1_ci == pytest.approx(f1_cis["present"])
    for a in AVERAGES:
        assert m.conventions[a]["f1_ci"] == pytest.approx(f1_cis[a]), a
    assert metrics.bootstrap(y_true, y_pred) == metrics.bootstrap(y_true, y_pred, seed=0, rounds=1000)
    default, zero = metrics.compute(preds), metrics.compute(preds, seed=0)
    assert default.f1_ci == zero.f1_ci != m.f1_ci
    # the accuracy interval is exact: no resampling, so no seed moves it
    assert default.accuracy_ci == m.accuracy_ci == metrics.accuracy_interval(int(np.sum(y_true == y_pred)), 40)


# ---------------------------------------------------------------- the exact accuracy interval
def log_pmf(k: int, n: int, p: float) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * math.log(p) + (n - k) * math.log1p(-p)


def tail(n: int, p: float, ks) -> float:
    """P(X in ks) for X ~ Binomial(n, p), from the pmf in logs (comb(1600, 800) overflows a float)."""
    return sum(math.exp(log_pmf(k, n, p)) for k in ks)


def solve(f, lo: float = 0.0, hi: float = 1.0) -> float:
    """The root of a function that is positive at lo and negative at hi, by 60 bisections."""
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) > 0 else (lo, mid)
    return (lo + hi) / 2


def clopper_pearson(k: int, n: int) -> tuple[float, float]:
    """By its definition: the upper bound is the p at which seeing k or fewer hits has probability
    2.5 %, the lower bound the p at which k or more has 2.5 %."""
    lo = 0.0 if k == 0 else solve(lambda p: 0.025 - tail(n, p, range(k, n + 1)), 1e-12, 1 - 1e-12)
    hi = 1.0 if k == n else solve(lambda p: tail(n, p, range(k + 1)) - 0.025, 1e-12, 1 - 1e-12)
    return lo, hi


@pytest.mark.parametrize("k, n", [(0, 32), (1, 32), (16, 32), (29, 32), (32, 32), (7, 10), (1450, 1600), (9000, 10000)])
def test_the_accuracy_interval_is_clopper_pearson_by_its_definition(k, n):
    assert metrics.accuracy_interval(k, n) == pytest.approx(clopper_pearson(k, n), abs=1e-9)


@pytest.mark.parametrize("n", [10, 20, 32, 100])
def test_each_accuracy_bound_misses_the_true_accuracy_at_most_2_5_percent_of_the_time(n):
    """What the gate relies on: a model whose true accuracy is the threshold fails (upper bound below
    it) with probability at most 2.5 %, for any n. Exact, summed over every k. The percentile bootstrap
    this replaced put its lower bound above a true 0.9 with probability 0.156 at n = 32."""
    bounds = [metrics.accuracy_interval(k, n) for k in range(n + 1)]
    for p in [0.02, 0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99]:
        assert tail(n, p, [k for k, (_, hi) in enumerate(bounds) if hi < p]) <= 0.025, p
        assert tail(n, p, [k for k, (lo, _) in enumerate(bounds) if lo > p]) <= 0.025, p


def test_compute_scores_accuracy_over_every_row_errors_included():
    rows = PREDS + [Prediction("e1", 0, "c0", ("a", "b"), None, None, None, "error", error="timeout")]
    m = metrics.compute(rows)
    # 2 right of 6: the unresolved answer and the error row are in n and both wrong
    assert m.accuracy_ci == metrics.accuracy_interval(2, 6) == pytest.approx(clopper_pearson(2, 6), abs=1e-9)
    perfect = metrics.compute([pred(i, 0, 0) for i in range(5)])
    assert perfect.accuracy_ci[1] == 1.0 and perfect.accuracy_ci[0] == pytest.approx(0.025 ** (1 / 5))
    assert metrics.compute([pred(i, 0, 1) for i in range(5)]).accuracy_ci == pytest.approx((0.0, 1 - 0.025 ** (1 / 5)))


def test_errors_and_unresolved_are_counted_apart_and_both_wrong():
    rows = PREDS + [Prediction("e1", 0, "c0", ("a", "b"), None, None, None, "error", error="timeout"),
                    Prediction("e2", 1, "c1", ("a", "b"), None, None, None, "error", error="HTTP 500")]
    m = metrics.compute(rows)
    assert (m.n, m.unresolved, m.errors) == (7, 1, 2) and m.accuracy == pytest.approx(2 / 7)
    with pytest.raises(ValueError, match="^no predictions to score$"):
        metrics.compute([])


@pytest.mark.parametrize("seed", [0, 1])
def test_every_convention_equals_scikit_learn_with_its_labels_spelled_out(seed):
    """Predicted-only classes and unresolved answers at once (the example by hand has one of each, and
    there the union with -1 happens to have as many classes as the union with class 3)."""
    from sklearn.metrics import precision_recall_fscore_support

    y_true, y_pred = random_arrays(seed)
    true_classes = sorted(set(y_true.tolist()))
    union = sorted(set(y_true.tolist()) | set(y_pred.tolist()) - {metrics.UNRESOLVED})
    assert len(union) > len(true_classes) and (y_pred == metrics.UNRESOLVED).any()
    for average, labels, how in [("present", true_classes, "macro"), ("union", union, "macro"),
                                 ("weighted", union, "weighted")]:
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average=how, zero_division=0)
        assert metrics.averaged(y_true, y_pred, average) == pytest.approx((p, r, f)), average
