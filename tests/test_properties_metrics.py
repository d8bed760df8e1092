"""Scores and per-class rows on an example small enough to check by hand, and candidate sets as
properties over many (seed, sample, N). Found missing by mutation testing (see README, Testing)."""
from __future__ import annotations

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
