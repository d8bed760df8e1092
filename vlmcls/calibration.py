"""Top-k accuracy and calibration, for predictions that carry scores (ranking mode, CLIP, classifiers).

Only scored rows count: a row without `top5` (free text, an error row) has no ranking and no
confidence, so it is left out of these figures and `n` says how many rows they cover.

Expected calibration error (Guo et al. 2017): confidences (the top candidate's probability) in 15
equal-width bins; ECE = sum over bins of (bin size / n) x |accuracy in the bin - mean confidence in
it|. Bin b holds the confidences in (b/15, (b+1)/15]; the first also holds 0.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from .types import Prediction

BINS = 15
TOP_K = 5


@dataclass(frozen=True)
class Bin:
    """One confidence bin of the reliability table; `confidence` and `accuracy` are None when empty."""

    low: float
    high: float
    n: int
    confidence: float | None
    accuracy: float | None


def scored(preds: Sequence[Prediction]) -> list[Prediction]:
    return [p for p in preds if p.top5 and p.top1_prob is not None]


def top_k_accuracy(preds: Sequence[Prediction], k: int = TOP_K) -> float | None:
    """Share of scored rows whose true class is among their best k candidates; None when none is scored."""
    rows = scored(preds)
    return sum(p.true_id in p.top5[:k] for p in rows) / len(rows) if rows else None


def bin_index(confidence: float, bins: int = BINS) -> int:
    return min(bins - 1, max(0, math.ceil(confidence * bins) - 1))


def reliability(confidences: Sequence[float], correct: Sequence[bool], bins: int = BINS) -> list[Bin]:
    members: list[list[int]] = [[] for _ in range(bins)]
    for i, c in enumerate(confidences):
        members[bin_index(c, bins)].append(i)
    return [Bin(b / bins, (b + 1) / bins, len(m),
                math.fsum(confidences[i] for i in m) / len(m) if m else None,
                sum(bool(correct[i]) for i in m) / len(m) if m else None) for b, m in enumerate(members)]


def ece(confidences: Sequence[float], correct: Sequence[bool], bins: int = BINS) -> float | None:
    n = len(confidences)
    if not n:
        return None
    return math.fsum(b.n / n * abs(b.accuracy - b.confidence) for b in reliability(confidences, correct, bins) if b.n)


def summary(preds: Sequence[Prediction], bins: int = BINS) -> dict[str, Any] | None:
    """The JSON-safe calibration block of a case (results.json), or None when no row has scores."""
    rows = scored(preds)
    if not rows:
        return None
    conf = [float(p.top1_prob) for p in rows]
    correct = [p.pred_id == p.true_id for p in rows]
    return {
        "n": len(rows), "top1_accuracy": sum(correct) / len(rows), "top5_accuracy": top_k_accuracy(rows),
        "mean_confidence": math.fsum(conf) / len(rows), "ece": ece(conf, correct, bins), "bins": bins,
        "reliability": [asdict(b) for b in reliability(conf, correct, bins)],
    }
