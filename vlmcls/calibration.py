"""Top-k accuracy and calibration, for predictions that carry scores (ranking mode, CLIP, classifiers).

Only scored rows count: a row without `top5` (free text, an error row) has no ranking and no
confidence, so it is left out of these figures and `n` says how many rows they cover.

Expected calibration error (Guo et al. 2017): confidences (the top candidate's probability) in 15
equal-width bins; ECE = sum over bins of (bin size / n) x |accuracy in the bin - mean confidence in
it|. Bin b holds the confidences in (b/15, (b+1)/15]; the first also holds 0.

ECE is biased upward on few samples: a bin's accuracy is a proportion of a handful of rows, and
|accuracy - confidence| is positive even for a perfectly calibrated model (one row at confidence 0.6
gives ECE 0.4 or 0.6, never 0). `noise` measures that floor with the case's own confidences: the ECE
of NOISE_DRAWS simulated perfectly calibrated runs, each row right with probability its confidence
(numpy, seeded), their mean (`ece_noise`) and 95th percentile (`ece_noise_p95`).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from .types import Prediction

BINS = 15
TOP_K = 5
NOISE_DRAWS = 500  # simulated perfectly calibrated runs behind `ece_noise`
NOISE_SEED = 0
NOISE_CELLS = 1_000_000  # rows x draws simulated at once (a large case in chunks, not one huge array)


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


def ece_many(confidences: Sequence[float], correct_rows, bins: int = BINS):
    """The ECE of each row of `correct_rows` (draws x n booleans) against the same confidences, as `ece`
    computes it: sum over bins of |right in the bin - confidence summed over the bin| / n."""
    import numpy as np

    conf = np.asarray(confidences, dtype=float)
    rows = np.atleast_2d(np.asarray(correct_rows, dtype=float))
    index = np.clip(np.ceil(conf * bins) - 1, 0, bins - 1).astype(int)  # bin_index, elementwise
    onehot = np.zeros((len(conf), bins))
    onehot[np.arange(len(conf)), index] = 1.0
    return np.abs(rows @ onehot - conf @ onehot).sum(axis=1) / len(conf)


def noise(confidences: Sequence[float], bins: int = BINS, draws: int = NOISE_DRAWS,
          seed: int = NOISE_SEED) -> tuple[float, float] | None:
    """(mean, 95th percentile) of the ECE of a perfectly calibrated model with these confidences: `draws`
    runs in which row i is right with probability confidences[i], from numpy's default_rng(seed). The
    mean is what ECE shows on this many rows by sampling noise alone; None without a row."""
    import numpy as np

    conf = np.asarray(confidences, dtype=float)
    if not len(conf) or draws < 1:
        return None
    rng = np.random.default_rng(seed)
    step = max(1, NOISE_CELLS // len(conf))
    eces = np.concatenate([ece_many(conf, rng.random((min(step, draws - done), len(conf))) < conf, bins)
                           for done in range(0, draws, step)])
    return float(eces.mean()), float(np.percentile(eces, 95))


def summary(preds: Sequence[Prediction], bins: int = BINS) -> dict[str, Any] | None:
    """The JSON-safe calibration block of a case (results.json), or None when no row has scores."""
    rows = scored(preds)
    if not rows:
        return None
    conf = [float(p.top1_prob) for p in rows]
    correct = [p.pred_id == p.true_id for p in rows]
    floor, floor_p95 = noise(conf, bins)
    return {
        "n": len(rows), "top1_accuracy": sum(correct) / len(rows), "top5_accuracy": top_k_accuracy(rows),
        "mean_confidence": math.fsum(conf) / len(rows), "ece": ece(conf, correct, bins), "bins": bins,
        # ECE of a perfectly calibrated model with these confidences (sampling noise alone): mean, 95th percentile
        "ece_noise": floor, "ece_noise_p95": floor_p95, "ece_noise_draws": NOISE_DRAWS,
        "reliability": [asdict(b) for b in reliability(conf, correct, bins)],
    }
