"""A case's verdict, a pure function of its result (and a baseline run's answers, when given).

The accuracy gate fails a case only when the *upper* end of its 95 % interval lies below the
threshold, so a small sample does not fail a good model by chance. A case that --max-cost stopped
before all its samples fails: its figures are those of the first few, which a gate must not pass. A
smoke model is gated on its plumbing too: any backend error row, or any sample not run. With a
baseline, McNemar's paired test fails a case significantly worse than the baseline's same case.
Nothing here touches pytest or writes anything, so a script can judge a stored run the same way.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .report.rows import is_input_error, spec_fields
from .report.text import plural
from .runner import BudgetStop, CaseResult
from .vocab import ALIASES, canonical

# What a paired test needs to be comparing like with like (the case id fixes model, N and quant).
CONTEXT = ("dataset", "prompt", "labels", "label_names", "resolver", "seed", "layout")
UNSET = object()


@dataclass(frozen=True)
class Baseline:
    """One case of a saved run: its per-sample answers and its row (None: the run lacks the case)."""

    predictions: Sequence[Any] | None
    row: Mapping[str, Any]


@dataclass(frozen=True)
class Verdict:
    status: str  # "passed", "failed" or "no gate" (no threshold, nothing failed)
    threshold: float | None
    reasons: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # said next to the verdict in the case's row (e.g. an unlike baseline)

    @property
    def failed(self) -> bool:
        return bool(self.reasons)

    @property
    def reason(self) -> str:
        """The reasons in one line, the case id said once (each reason starts with it, to stand alone)."""
        if not self.reasons:
            return ""
        head = self.reasons[0].split(": ", 1)[0] + ": "
        return "; ".join([self.reasons[0], *(r.removeprefix(head) for r in self.reasons[1:])])


def baseline_of(run: Any, case_id: str) -> Baseline | None:
    """The case in a saved run (vlmcls.report.runs.Run), or None without a run."""
    if run is None:
        return None
    row = next((r for r in run.rows if r.get("case_id") == case_id), {})
    return Baseline(run.predictions(case_id), row)


def judge(result: CaseResult, baseline: Baseline | None = None, threshold: Any = UNSET, strict: bool = False) -> Verdict:
    """The verdict on one case; `threshold` defaults to the catalog entry's for the case's N.
    `strict` (--strict-cases): a baseline that gives the case no paired sample fails it, as a case
    that cannot run fails instead of skipping; without it the run's summary warns (report.compare)."""
    spec = result.spec
    if threshold is UNSET:
        # the stub server answered (a rehearsal): the entry's gate is the real model's, which a stand-in's
        # chance answers cannot meet; like any smoke model it is gated on the plumbing instead
        threshold = 0.0 if result.stand_in else spec.model.threshold(spec.ways)
    reasons = failures(result, threshold)
    notes: tuple[str, ...] = ()
    if result.metrics is not None and baseline is not None:
        from .report.compare import nothing_paired
        from .report.stats import worse_than_baseline

        nothing = nothing_paired(result.predictions, baseline.predictions, baseline.row)
        # the settings that differ are said whether or not anything paired (another seed: nothing does)
        notes = tuple(unlike_baseline(result, baseline.row)) if baseline.row else ()
        if nothing and strict:
            reasons.append(f"{spec.case_id}: --baseline gave nothing to compare ({nothing}) (--strict-cases)")
        elif not nothing:
            worse, text = worse_than_baseline(result.predictions, baseline.predictions)
            reasons += [f"{spec.case_id}: {text}"] if worse else []
    status = "failed" if reasons else ("passed" if threshold is not None else "no gate")
    return Verdict(status, threshold, tuple(reasons), notes)


def failures(result: CaseResult, threshold: float | None) -> list[str]:
    """Why the case fails without a baseline: no prediction, the accuracy gate, a --max-cost stop,
    every sample an error, or for smoke models (and a stub server's stand-in answers) the plumbing."""
    spec, m = result.spec, result.metrics
    if m is None:
        return [f"{spec.case_id}: no prediction was made ({result.stopped or 'no samples'})"]
    why = []
    if threshold is not None and m.accuracy_ci[1] < threshold:
        lo, hi = m.accuracy_ci
        # the rule compares the interval's upper bound: said so, with digits enough that a bound just
        # under the gate (0.6406 < 0.641) does not print as the gate itself
        why.append(f"{spec.case_id}: accuracy {m.accuracy:.3f} (95% CI {lo:.4f}-{hi:.4f}, n={m.n}): the CI's "
                   f"upper bound {hi:.4f} is below the gate {threshold:.4g}")
    if result.budget_stop is not None:
        why.append(f"{spec.case_id}: {budget_reason(result.budget_stop)}")
    if m.errors == m.n:
        first = next((p.error for p in result.predictions if p.error), "")
        why.append(f"{spec.case_id}: every one of the {m.n} samples failed, e.g. {first[:200]}")
    elif spec.model.smoke or result.stand_in:
        why += plumbing(result)
    return why


def budget_reason(stop: BudgetStop) -> str:
    """Why a case that --max-cost stopped fails, and the two ways out."""
    if stop.orders > 1:  # the budget counts requests, K per image
        images = stop.total // stop.orders
        return (f"stopped by --max-cost {stop.max_cost:g} USD after {stop.done} of {stop.total} requests "
                f"({images} images x {stop.orders} orders): the gate needs them all "
                "(raise --max-cost, or lower --samples or --orders)")
    return (f"stopped by --max-cost {stop.max_cost:g} USD after {stop.done} of {stop.total} samples: the gate "
            "needs them all (raise --max-cost or lower --samples)")


def plumbing(result: CaseResult) -> list[str]:
    """A smoke model exists to check the plumbing: a backend error row or a sample not run fails it
    (one left by a --max-cost stop has its own reason, `budget_reason`). An unreadable image is the
    data's fault, not the plumbing's: listed in the report, not failed."""
    m = result.metrics
    errors = m.errors - sum(is_input_error(p.error) for p in result.predictions)
    if errors or (result.not_run and result.budget_stop is None):
        return [f"{result.spec.case_id}: smoke plumbing check: {plural(errors, 'error row')}, "
                f"{plural(result.not_run, 'sample')} not run"]
    return []


def unlike_baseline(result: CaseResult, row: Mapping[str, Any]) -> list[str]:
    """A paired test on the same sample ids still compares apples and oranges if the baseline ran
    another prompt, dataset, label mode, class names, resolver or seed: say so next to the verdict. Other weights,
    quantization or server are said too: not a flaw, but what a regression gate then compares (a new
    deployment of a served model)."""
    now = spec_fields(result.spec)
    # a baseline saved before the rename says "thesis" where this run says raw / study / image-first
    same = lambda k: (canonical(k, row[k]) if k in ALIASES else row[k]) == now[k]  # noqa: E731
    differ = [(k, row[k], now[k]) for k in CONTEXT if k in row and not same(k)]
    differ += [(k, row[k], now[k]) for k in ("weights", "quant") if k in row and row[k] != now[k]]
    served = [(s.get("base_url"), now["settings"].get("base_url")) for s in [row.get("settings")] if isinstance(s, Mapping)]
    differ += [("server", was, is_) for was, is_ in served if was != is_]
    return [f"the --baseline run differs in {', '.join(f'{k} ({was} vs {is_})' for k, was, is_ in differ)}"] if differ else []
