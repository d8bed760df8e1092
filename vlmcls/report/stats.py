"""Statistics over stored predictions: McNemar's test of a case against a baseline run, and the
most frequent confusions of a case or a whole run."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .runs import Run, pred_field

TOP_K = 10
RUN_TOP_K = 20  # lines of the run's confusion table
MIN_PAIR = 2  # a (true, predicted) pair seen once is chance, not a confusion

ALPHA = 0.05
# Below this many discordant pairs the chi-square approximation is poor: use the exact binomial test.
EXACT_BELOW = 25


def mcnemar(b: int, c: int) -> float:
    """Two-sided p-value of McNemar's test on the discordant pairs b and c.

    Exact binomial test when b + c < 25, else chi-square (1 df) with continuity correction."""
    from scipy import stats

    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0 (got b={b}, c={c})")
    n = b + c
    if n == 0:
        return 1.0
    if n < EXACT_BELOW:
        return float(stats.binomtest(b, n, 0.5).pvalue)
    # |b - c| - 1 is the continuity correction; clamped at 0, else b = c would give p < 1 (0.86 at 16:16)
    return float(stats.chi2.sf(max(0, abs(b - c) - 1) ** 2 / n, df=1))


@dataclass(frozen=True)
class Paired:
    """Two runs of one case on the samples they share. b: right in the baseline, wrong now (lost);
    c: wrong in the baseline, right now (gained). Accuracies are on the shared samples only."""

    n: int
    accuracy: float | None
    baseline_accuracy: float | None
    b: int
    c: int
    p: float
    only_current: int
    only_baseline: int
    alpha: float = ALPHA
    # images in both runs that asked another question (another true label or candidate set: another seed,
    # label mode, label names or dataset): not paired, since the answer was to something else
    other_question: int = 0

    @property
    def significant(self) -> bool:
        return self.n > 0 and self.p < self.alpha and self.b != self.c

    @property
    def worse(self) -> bool:
        return self.significant and self.b > self.c

    @property
    def test(self) -> str:
        return "exact binomial" if self.b + self.c < EXACT_BELOW else "chi-square, continuity-corrected"

    @property
    def verdict(self) -> str:
        if self.n == 0:
            return "no sample in common"
        if not self.significant:
            return "no significant difference"
        return "significantly worse than the baseline" if self.worse else "significantly better"

    def summary(self) -> str:
        other = (f"{self.other_question} images in both asked with another label or candidate set (another seed, "
                 "label mode, label names or dataset)") if self.other_question else ""
        if self.n == 0:
            return (f"no sample in common with the baseline ({self.only_current} only in this run, "
                    f"{self.only_baseline} only in the baseline{'; ' + other if other else ''}): cannot compare")
        text = (f"accuracy {self.accuracy:.3f} vs baseline {self.baseline_accuracy:.3f} on {self.n} paired samples; "
                f"lost {self.b}, gained {self.c}; McNemar p={self.p:.3g} ({self.test}): {self.verdict}")
        if self.only_current or self.only_baseline:
            text += f"; {self.only_current} samples only in this run, {self.only_baseline} only in the baseline"
        return text + (f"; {other}, not paired" if other else "")


def outcome_key(pred) -> tuple:
    """What must match for two answers on one sample to be paired: the sample, its true label, and the
    candidates as a set (an order change is the same question, a new distractor is not)."""
    return (str(pred_field(pred, "sample_id")), pred_field(pred, "true_id"), str(pred_field(pred, "true_label")),
            frozenset(map(str, pred_field(pred, "candidates") or ())))


def _outcomes(preds: Iterable[Any]) -> dict[tuple, bool]:
    """outcome_key -> correct (pred_id == true_id; unresolved and error rows are wrong)."""
    out = {}
    for p in preds:
        pred = pred_field(p, "pred_id")
        out[outcome_key(p)] = pred is not None and pred == pred_field(p, "true_id")
    return out


def pair(current_preds: Iterable[Any], baseline_preds: Iterable[Any], alpha: float = ALPHA) -> Paired:
    """McNemar's test of one case against its baseline (objects or JSON dicts), paired by sample on the
    same question: the same true label and candidate set (`outcome_key`)."""
    now, before = _outcomes(current_preds), _outcomes(baseline_preds)
    shared = now.keys() & before.keys()
    b = sum(before[s] and not now[s] for s in shared)
    c = sum(now[s] and not before[s] for s in shared)
    n = len(shared)
    ids_now, ids_before = ({k[0] for k in d} for d in (now, before))
    return Paired(
        n=n, accuracy=sum(now[s] for s in shared) / n if n else None,
        baseline_accuracy=sum(before[s] for s in shared) / n if n else None,
        b=b, c=c, p=mcnemar(b, c), only_current=len(ids_now - ids_before), only_baseline=len(ids_before - ids_now),
        alpha=alpha, other_question=len(ids_now & ids_before) - n,
    )


def worse_than_baseline(current_preds: Iterable[Any], baseline_preds: Iterable[Any],
                        alpha: float = ALPHA) -> tuple[bool, str]:
    """For a gate: (significantly worse than the baseline?, one-line explanation).

    No shared sample means no evidence either way: not worse, and the message says so."""
    result = pair(current_preds, baseline_preds, alpha)
    return result.worse, result.summary()


# ---------------------------------------------------------------------------------- confusions
def top_confusions(preds: Iterable[Any], k: int = TOP_K) -> list[tuple[str, str, int]]:
    """The k most frequent (true label, predicted label, count) among resolved wrong predictions.

    Keyed by class ids, not labels: in raw (study) label mode two classes share "crane", and
    "crane → crane" is then exactly the confusion worth seeing."""
    counts: Counter = Counter()
    names: dict[tuple, tuple[str, str]] = {}
    for p in preds:
        true, pred = pred_field(p, "true_id"), pred_field(p, "pred_id")
        if pred is None or pred == true:
            continue
        counts[(true, pred)] += 1
        names.setdefault((true, pred), (str(pred_field(p, "true_label")), str(pred_field(p, "pred_label") or pred)))
    return [(*names[key], n) for key, n in counts.most_common(k)]


def run_confusions(rows: Sequence[Mapping], run_dir: Path, k: int = RUN_TOP_K,
                   at_least: int = MIN_PAIR) -> list[tuple[str, str, int, list[tuple[str, int]]]]:
    """(true label, predicted label, count, [(case id, its count), ...]) of the pairs seen at least
    `at_least` times across the run's cases, most frequent first: a pair seen once among thousands is
    noise, not a confusion worth a line (a random smoke model makes hundreds of those). The count sums
    the cases; each case's own share comes with it, most first, so no model is read as making all."""
    run = Run(Path(run_dir), {}, list(rows))
    counts: Counter = Counter()
    names: dict[tuple, tuple[str, str]] = {}
    cases: dict[tuple, Counter] = {}
    for r in rows:
        for p in (run.predictions(r["case_id"]) or []) if r.get("metrics") else []:
            true, pred = pred_field(p, "true_id"), pred_field(p, "pred_id")
            if pred is None or pred == true:
                continue
            key = (true, pred)
            counts[key] += 1
            names.setdefault(key, (str(pred_field(p, "true_label")), str(pred_field(p, "pred_label") or pred)))
            cases.setdefault(key, Counter())[r["case_id"]] += 1
    return [(*names[key], n, cases[key].most_common()) for key, n in counts.most_common() if n >= at_least][:k]
