"""A run in a few lines of GitHub markdown, for a pull-request comment or a CI job summary
(`python -m vlmcls report RUN --summary`, and `summary.md` beside report.md).

One table of the cases that ran (accuracy, interval, n, threshold, gate, and the verdict against the
baseline when there is one), then why each failing case failed, then one line for the cases that did
not run. No image, no method text, no absolute path: a comment has no folder to link into, and it is
read by people who did not make the run. Every cell goes through `text.cell`.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from .text import atomic_write, cell, plural

HEADERS = ["Case", "Accuracy", "95 % CI", "n", "Threshold", "Gate"]
FAILING = ("failed", "error", "crashed")  # a status that fails the pytest run
NOT_RUN_NAMED = 3  # cases that did not run, named in their line; more are counted only
SMOKE_LINE = ("*smoke*: a random-weight model or a scripted stand-in; its accuracy is chance in expectation "
              "(it shows the pipeline runs, not how good a model is; on few images its interval may miss chance by luck).")
VERDICTS = {"significantly worse than the baseline": "**worse**", "significantly better": "better",
            "no significant difference": "no significant difference"}
# an absolute path in a reason (a cache folder, a missing file): the comment shows its last part only
_ABSOLUTE = re.compile(r"(?<![\w:/.~-])(?:/[^\s/:;,'\"()\[\]]+){2,}")


def summary_markdown(rows: Sequence[Mapping], meta: Mapping[str, Any] | None = None, name: str = "") -> str:
    """The summary of one run (`name`: its folder's name, when meta has no run id)."""
    meta = meta or {}
    done = sorted((r for r in rows if r.get("metrics")), key=lambda r: (r.get("ways") or 0, str(r["case_id"])))
    other = [r for r in rows if not r.get("metrics")]
    lines = [_title(rows, meta, name), ""]
    if done:
        lines += [_table(done), ""]
        lines += _stored(done)
    if any(r.get("smoke") for r in done):
        lines += [SMOKE_LINE, ""]
    lines += baseline_line(done)
    lines += _failures([r for r in rows if r.get("status") in FAILING])
    lines += _not_run([r for r in other if r.get("status") not in FAILING])
    return "\n".join(lines).rstrip() + "\n"


def write_summary(out: str | Path, rows: Sequence[Mapping], meta: Mapping[str, Any] | None = None) -> Path:
    """`out/summary.md` (written whenever report.md is)."""
    path = Path(out) / "summary.md"
    atomic_write(path, summary_markdown(rows, meta, Path(out).name))
    return path


def _title(rows: Sequence[Mapping], meta: Mapping[str, Any], name: str) -> str:
    counts: dict[str, int] = {}
    for r in rows:
        counts[str(r.get("status"))] = counts.get(str(r.get("status")), 0) + 1
    order = sorted(counts, key=lambda s: (s not in FAILING, s != "passed", s))  # failures first
    tally = ", ".join(f"**{n} {s}**" if s in FAILING else f"{n} {s}" for s, n in ((s, counts[s]) for s in order))
    run = meta.get("run_id") or name or "run"
    return f"### vlmcls {cell(run)}: {tally or 'no case'}"


def _table(rows: Sequence[Mapping]) -> str:
    from tabulate import tabulate

    compared = any(r.get("baseline") for r in rows)
    body = [_line(r, compared) for r in rows]
    return tabulate(body, headers=HEADERS + (["vs baseline"] if compared else []), tablefmt="github",
                    disable_numparse=True)


def _line(r: Mapping, compared: bool) -> list[str]:
    m = r["metrics"]
    lo, hi = m["accuracy_ci"]
    case = cell(r["case_id"]) + (" *smoke*" if r.get("smoke") else "")
    # a smoke model's 0 is no accuracy gate: it is gated on the plumbing (every sample answered, no error row)
    threshold = ("–" if r.get("threshold") is None else "plumbing" if r.get("smoke") and not r["threshold"]
                 else f"{r['threshold']:g}")
    status = str(r.get("status"))
    gate = f"**{cell(status)}**" if status in FAILING else cell(status)
    return [case, f"{m['accuracy']:.3f}", f"{lo:.3f}–{hi:.3f}", str(m["n"]), threshold, gate,
            *([_versus(r.get("baseline"))] if compared else [])]


def _versus(b: Mapping | None) -> str:
    """`**worse**: lost 32, gained 0, p=4.25e-08`; why a case was not compared; – without a comparison."""
    if not b:
        return "–"
    if not b.get("compared"):
        return cell(f"not compared: {b.get('why') or 'no paired sample'}")
    verdict = VERDICTS.get(str(b.get("verdict")), cell(b.get("verdict")))
    return f"{verdict}: lost {b['lost']}, gained {b['gained']}, p={b['p']:.3g} (n={b['paired_n']})"


def baseline_line(rows: Sequence[Mapping]) -> list[str]:
    """One line naming the baseline and how many cases it checked ([] without one)."""
    found = [r["baseline"] for r in rows if r.get("baseline")]
    if not found:
        return []
    runs = sorted({str(b.get("run_id")) for b in found})
    compared = [b for b in found if b.get("compared")]
    worse = sum(bool(b.get("worse")) for b in compared)
    missing = len(found) - len(compared)
    text = (f"Baseline {', '.join(cell(r) for r in runs)}: {plural(len(compared), 'case')} compared by McNemar's "
            f"test on the images both runs scored, {worse} significantly worse")
    text += f"; {missing} not compared (see the table)" if missing else ""
    return [text + ".", ""]


def _stored(rows: Sequence[Mapping]) -> list[str]:
    """The cases whose answers came, at least in part, from the result store: a CI gate that passed on
    stored answers says so (a served model redeployed under the same name is answered afresh only with
    --refresh)."""
    from .markdown import _resumed

    named = [f"{cell(r['case_id'])} ({_resumed(r)})" for r in rows if r.get("resumed")]
    if not named:
        return []
    return [f"From the result store, not asked again (`--refresh` asks again): {', '.join(named)}.", ""]


def _failures(rows: Sequence[Mapping]) -> list[str]:
    if not rows:
        return []
    lines = ["**Why the failing cases failed**", ""]
    for r in rows:
        why = _reason(r) or f"no reason recorded ({r.get('status')})"
        lines.append(f"- {cell(r['case_id'])}: {cell(why)}")
    return lines + [""]


def _reason(r: Mapping) -> str:
    """The row's reason without the case id the gate puts before each part (the line names the case),
    and with absolute paths cut to their last part."""
    text = str(r.get("reason") or "")
    for cid in {str(r["case_id"]), str(r.get("source_case_id") or r["case_id"])}:
        text = re.sub(rf"(^|; ){re.escape(cid)}: ", r"\1", text)
    return _ABSOLUTE.sub(lambda m: "…/" + m.group(0).rsplit("/", 1)[1], text)


def _not_run(rows: Sequence[Mapping]) -> list[str]:
    """Skipped (or interrupted) cases in one line: named when a few, counted when many."""
    if not rows:
        return []
    kinds: dict[str, int] = {}
    for r in rows:
        kinds[str(r.get("status"))] = kinds.get(str(r.get("status")), 0) + 1
    what = ", ".join(f"{n} {s}" for s, n in kinds.items())
    if len(rows) <= NOT_RUN_NAMED:
        named = "; ".join(f"{cell(r['case_id'])} ({cell(_reason(r) or r.get('status'))})" for r in rows)
        return [f"Not run ({what}): {named}."]
    return [f"Not run: {plural(len(rows), 'case')} ({what}); each one's reason is in report.md."]
