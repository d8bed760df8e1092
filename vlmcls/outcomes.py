"""What happened to each case, as rows: a case is its spec; a `CaseRun` remembers the outcome of one
test's run of it, and `case_row` turns any outcome into the case's row, in one place.

Rows are made in the plugin's report hook (vlmcls.plugin), sent to the controller with the test
report, and merged there (vlmcls.session); the terminal summary is rendered from them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from . import gate, report
from .runner import CaseResult, CaseSpec

ROW_KEY = "vlmcls_row"  # the user_properties key a case's row travels under


@dataclass(frozen=True)
class Case:
    """A parametrized case (model x N): its spec, and what pytest shows of it."""

    spec: CaseSpec

    @property
    def case_id(self) -> str:
        return self.spec.case_id

    @property
    def group(self) -> str:
        """Cases of one group share an xdist worker (one model load each)."""
        return self.spec.model.xdist_group

    def __repr__(self) -> str:  # shown by pytest in failures and -v
        return f"Case({self.case_id})"


class CaseRun:
    """One test's run of one case. It remembers what happened (result and verdict, or why it did not
    run) so that the report hook makes the case's row, in one place, whatever the outcome."""

    def __init__(self, session: Any):
        self.session = session
        self.spec: CaseSpec | None = None
        self.result: CaseResult | None = None
        self.verdict: gate.Verdict | None = None
        self.status, self.reason = "", ""  # a case that did not run: skipped, failed (strict), error
        self.spent_now: float | None = None  # USD paid in this run (not the stored answers)

    def run(self, case: Case) -> CaseResult:
        """Run the case (skips with a one-line reason when it cannot run here) and return its result."""
        self.spec = case.spec
        self.result = self.session.run_case(self)  # kept: a test that fails before check() still has its figures
        return self.result

    def check(self, result: CaseResult) -> gate.Verdict:
        """The gate's verdict (vlmcls.gate); fails the test when the verdict does."""
        baseline = gate.baseline_of(self.session.baseline, result.spec.case_id)
        verdict = gate.judge(result, baseline, strict=baseline is not None and self.session.opt.strict)
        self.spec, self.result, self.verdict = result.spec, result, verdict
        if self.verdict.failed:
            pytest.fail(self.verdict.reason, pytrace=False)
        return self.verdict

    def not_run(self, status: str, reason: str, message: str | None = None):
        """Ends the test: skipped, or failed (`message`), with the reason its row will carry."""
        self.status, self.reason = status, reason
        if message is None:
            pytest.skip(reason)
        pytest.fail(message, pytrace=False)

    def row(self) -> dict | None:
        return case_row(self.spec, self.result, self.verdict, self.status, self.reason, self.spent_now)


def case_row(spec: CaseSpec | None, result: CaseResult | None = None, verdict: gate.Verdict | None = None,
             status: str = "", reason: str = "", spent_now: float | None = None) -> dict | None:
    """The one maker of case rows: passed, failed, no gate, skipped, error or crashed (None: the test
    ended before the case said anything, e.g. a fixture error)."""
    if spec is not None and result is not None and verdict is not None:
        row = report.case_row(result, status=verdict.status, threshold=verdict.threshold, reason=verdict.reason,
                              spent_now=spent_now)
        return {**row, "notes": row["notes"] + list(verdict.notes)}
    if spec is not None and status:
        return report.skipped_row(spec, status, reason)
    return None


def not_run_lines(rows: list[dict]) -> list[str]:
    """One line per (status, reason): a model's 20- and 100-way cases skipped for the same missing key
    are one line naming both."""
    groups: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        groups.setdefault((r["status"], r.get("reason") or ""), []).append(r["case_id"])
    return [f"{status}: {', '.join(ids)}: {reason}" for (status, reason), ids in groups.items()]


def terminal_text(text: str) -> str:
    """Markdown cell text back to plain text for a terminal: no HTML entities, no control characters
    (an answer's escape sequence must not drive the user's terminal)."""
    import html

    return "".join(c for c in html.unescape(text) if c.isprintable() or c in "\n\t")


def crash_reason(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if "crashed" in line]
    return (lines[-1] if lines else "the worker crashed while running this case")[:300]


def summary_lines(rows: list[dict], crashed: list[str], skips_shown: bool, compact: bool = False) -> list[str]:
    """The terminal summary: the results per N, their notes, then the cases that did not run
    (`skips_shown`: pytest's -rs lists each skip reason already, so say it once, not twice).
    `compact` (-qq): a narrow table and, of the notes, only the smoke models' (report.md has them all)."""
    from .report.markdown import smoke_note

    done = sorted((r for r in rows if r.get("metrics")), key=lambda r: r["model"])
    tables = []  # rendered for the terminal already (columns sized on the printed text): not unescaped again
    for ways in sorted({r["ways"] for r in done}):
        tables += [f"{ways}-way", report.study_table([r for r in done if r["ways"] == ways], terminal=True, compact=compact)]
    lines = [smoke_note(done)] + ([] if compact else [line for line in report.notes(done)[2:] if line])  # [2:]: skip the markdown heading
    # why each scored case failed: pytest's FAILED line drops its message where the terminal is narrow (--tb=no)
    lines += [f"failed: {r['reason'] if r['reason'].startswith(r['case_id']) else r['case_id'] + ': ' + r['reason']}"
              for r in done if r.get("status") == "failed" and r.get("reason")]
    hidden = ("skipped",) if skips_shown else ()
    lines += not_run_lines([r for r in rows if not r.get("metrics") and r["status"] not in hidden])
    skipped = [r["case_id"] for r in rows if not r.get("metrics") and r["status"] in hidden]
    if skipped:  # -rs groups skips by place and reason, without the cases: a CI log still names them
        lines.append(f"skipped ({len(skipped)}; the reasons are in pytest's summary): {', '.join(skipped)}")
    return tables + [terminal_text(line) for line in lines if line] + crashed
