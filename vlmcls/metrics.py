"""Predictions -> metrics with scikit-learn, plus 95 % intervals: exact (Clopper-Pearson) for accuracy,
a seeded percentile bootstrap for F1. No pytest here.

Precision, recall and F1 are averaged over classes by one of three conventions (`--average`),
all computed for every case so that a report can show how far apart they are:

- present (default): macro over the classes present in the true labels (labels=sorted(set(y_true))),
  so a class never asked about does not dilute the mean;
- union: scikit-learn's default macro, over the classes in the true or the predicted labels: a class
  predicted but never true counts with precision 0 and recall 0;
- weighted: scikit-learn's average="weighted" (each class weighted by its support): recall equals
  accuracy.

zero_division=0 throughout. An unresolved answer or an error row is predicted as -1, a class that is
never true: it counts as wrong, and it is no class of the union.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Mapping, Sequence

import numpy as np

from .vocab import AVERAGES
from .types import Prediction

UNRESOLVED = -1
# How each convention is named in a table, and what it is.
AVERAGE_LABELS = {
    "present": "macro over true classes",
    "union": "macro over true ∪ predicted classes (scikit-learn's default)",
    "weighted": "weighted by support (scikit-learn's weighted)",
}


@dataclass(frozen=True)
class Metrics:
    n: int
    accuracy: float
    precision: float
    recall: float
    f1: float
    accuracy_ci: tuple[float, float]
    f1_ci: tuple[float, float]
    unresolved: int
    errors: int
    average: str = "present"  # the convention of precision, recall, f1 and f1_ci
    # how accuracy_ci was drawn: runs written before 2026-11-27 have no such field (percentile bootstrap)
    accuracy_ci_method: str = "exact"
    # every convention: {"present": {"precision", "recall", "f1", "f1_ci"}, "union": ..., "weighted": ...}
    conventions: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)

    def with_average(self, average: str) -> "Metrics":
        """The same metrics with precision, recall, F1 and its interval under another convention."""
        if average not in self.conventions:
            raise ValueError(f"unknown average {average!r}; one of {', '.join(self.conventions)}")
        return replace(self, average=average, **self.conventions[average])


def _arrays(preds: Sequence[Prediction]) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.fromiter((p.true_id for p in preds), dtype=np.int64, count=len(preds))
    y_pred = np.fromiter((UNRESOLVED if p.pred_id is None else p.pred_id for p in preds), dtype=np.int64, count=len(preds))
    return y_true, y_pred


def averaged(y_true: np.ndarray, y_pred: np.ndarray, average: str = "present") -> tuple[float, float, float]:
    """(precision, recall, F1) under one convention, by scikit-learn."""
    from sklearn.metrics import precision_recall_fscore_support

    if average not in AVERAGES:
        raise ValueError(f"unknown average {average!r}; one of {', '.join(AVERAGES)}")
    labels = np.unique(y_true) if average == "present" else np.union1d(y_true, y_pred[y_pred != UNRESOLVED])
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0,
                                                 average="weighted" if average == "weighted" else "macro")
    return float(p), float(r), float(f)


def scores(y_true: np.ndarray, y_pred: np.ndarray, average: str = "present") -> tuple[float, float, float, float]:
    """(accuracy, precision, recall, F1), the last three averaged by `average`."""
    from sklearn.metrics import accuracy_score

    return (float(accuracy_score(y_true, y_pred)), *averaged(y_true, y_pred, average))


def f1_by_average(y_true: np.ndarray, y_pred: np.ndarray, size: int) -> tuple[float, float, float]:
    """F1 under each of AVERAGES, as scikit-learn computes it (zero_division=0), in numpy: the
    bootstrap needs it 1,000 times and f1_score costs milliseconds per call."""
    hit = y_true == y_pred
    tp = np.bincount(y_true[hit], minlength=size)
    support = np.bincount(y_true, minlength=size)
    predicted = np.bincount(y_pred[y_pred >= 0], minlength=size)
    denom = support + predicted  # 2 tp / (support + predicted) is per-class F1; 0 where tp is 0
    f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    return float(f1[support > 0].mean()), float(f1[denom > 0].mean()), float(f1 @ support / support.sum())


def accuracy_interval(hits: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson (exact) interval of accuracy as a binomial proportion: each bound misses the
    true accuracy at most (1 - level) / 2 of the time, for any n and accuracy, so the gate (which reads
    the upper bound) fails a model at its threshold at most 2.5 % of the time. A percentile bootstrap
    cannot promise that on the small samples CI gates use: at 0/n and n/n it collapses to a point, and
    at n = 32, accuracy 0.9, its lower bound lies above the truth 16 % of the time."""
    from scipy.stats import binomtest

    ci = binomtest(hits, n).proportion_ci(confidence_level=level, method="exact")
    return float(ci.low), float(ci.high)


def bootstrap(y_true: np.ndarray, y_pred: np.ndarray, seed: int = 0, rounds: int = 1000) -> dict[str, tuple]:
    """Seeded percentile bootstrap 95 % intervals of F1 under each convention (F1 has no exact one)."""
    rng = np.random.default_rng(seed)
    n, size = len(y_true), int(max(y_true.max(), y_pred.max())) + 1
    f1s = np.empty((rounds, len(AVERAGES)))
    for r in range(rounds):
        i = rng.integers(0, n, size=n)
        f1s[r] = f1_by_average(y_true[i], y_pred[i], size)
    return {a: tuple(map(float, np.percentile(f1s[:, k], (2.5, 97.5)))) for k, a in enumerate(AVERAGES)}


def compute(preds: Sequence[Prediction], seed: int = 0, average: str = "present") -> Metrics:
    if not preds:
        raise ValueError("no predictions to score")
    y_true, y_pred = _arrays(preds)
    hits = int(np.sum(y_true == y_pred))
    f1_cis = bootstrap(y_true, y_pred, seed)
    conventions = {}
    for name in AVERAGES:
        p, r, f = averaged(y_true, y_pred, name)
        conventions[name] = {"precision": p, "recall": r, "f1": f, "f1_ci": f1_cis[name]}
    chosen = conventions[average]
    return Metrics(
        n=len(preds), accuracy=hits / len(preds), accuracy_ci=accuracy_interval(hits, len(preds)), average=average,
        conventions=conventions, unresolved=sum(p.pred_id is None and p.error is None for p in preds),
        errors=sum(p.error is not None for p in preds), **chosen,
    )


def per_class(preds: Sequence[Prediction], names: Sequence[str]) -> list[dict]:
    """One row per true class: support, precision, recall, F1."""
    from sklearn.metrics import precision_recall_fscore_support

    y_true, y_pred = _arrays(preds)
    labels = np.unique(y_true)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    return [
        {"class_id": int(c), "label": names[c], "support": int(n), "precision": float(a), "recall": float(b), "f1": float(d)}
        for c, a, b, d, n in zip(labels, p, r, f, s)
    ]
