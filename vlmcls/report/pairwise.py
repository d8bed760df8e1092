"""Model against model within one run: which accuracy differences at one N are real.

All cases of a run at one N see the same images with the same candidate sets (seeded per (seed,
sample id, N)), so two cases are compared on the very same questions: McNemar's test (`stats.pair`)
on the samples both scored with the same true label and candidate set, Holm-corrected over every
pair at that N. Every cell goes through `text.cell`.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Mapping, Sequence

from .markdown import _name, model_tag
from .runs import Run
from .stats import ALPHA, EXACT_BELOW, Paired, pair
from .text import cell, plural

HEADING = "## Model against model (paired)"
RANK_HEADERS = ["Rank", "Model", "Accuracy", "n", "Not significantly different from"]
PAIR_HEADERS = ["A", "B", "Paired n", "A right only", "B right only", "Accuracy A − B (paired)", "McNemar p",
                "Holm p"]
INTRO = ("Paired McNemar test of each pair of cases at one N on the images both scored with the same true label "
         "and the same candidate set (compared as sets: another seed, label mode or dataset does not pair; error "
         "rows and unresolved answers count as wrong; exact binomial below {exact} images right in one case only, "
         "chi-square with continuity correction above, as for a baseline run), Holm-corrected over the k pairs at "
         "that N: at most a {pct:g} % family-wise chance of calling any difference real when none is. Rank is by "
         "each case's accuracy on its own samples; the second table holds the pairs adjacent in the ranking.")
SMOKE_ONLY = ("Every case here is *smoke*: random-weight models (or scripted stand-ins) whose accuracy is chance "
              "in expectation, so these differences mean nothing (with many pairs, a few reach significance by luck); the tables only show that the test runs.")


@dataclass(frozen=True)
class Versus:
    """Case a against case b at one N: `paired.b` = a right only, `paired.c` = b right only;
    `holm` is None for a pair with no sample in common (not tested, not in the family)."""

    a: Mapping
    b: Mapping
    paired: Paired
    holm: float | None

    @property
    def tested(self) -> bool:
        return self.holm is not None


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the order given: the i-th smallest times (k - i + 1),
    made non-decreasing along that order and capped at 1."""
    k = len(pvalues)
    adjusted = [1.0] * k
    running = 0.0
    for i, index in enumerate(sorted(range(k), key=lambda j: pvalues[j])):
        running = max(running, min(1.0, (k - i) * pvalues[index]))
        adjusted[index] = running
    return adjusted


def versus(a_preds: Sequence, b_preds: Sequence) -> Paired:
    """McNemar of case a against case b on the samples they share with the same label and candidates.

    `stats.pair(current, baseline)` counts b = right in the baseline only: with a as the baseline,
    b = a right only and c = b right only."""
    return pair(b_preds, a_preds)  # its p; significance is judged on the Holm-adjusted one


def comparisons(cases: Sequence[tuple[Mapping, Sequence]]) -> list[Versus]:
    """Every pair of (row, predictions), Holm-corrected over the pairs that share a sample."""
    raw = [(a, b, versus(pa, pb)) for (a, pa), (b, pb) in combinations(cases, 2)]
    tested = [i for i, (_, _, p) in enumerate(raw) if p.n]
    adjusted = dict(zip(tested, holm([raw[i][2].p for i in tested])))
    return [Versus(a, b, p, adjusted.get(i)) for i, (a, b, p) in enumerate(raw)]


def ranked(rows: Sequence[Mapping]) -> list[tuple[int, Mapping]]:
    """(rank, row) by accuracy, best first; equal accuracies share a rank (1, 2, 2, 4)."""
    order = sorted(rows, key=lambda r: (-r["metrics"]["accuracy"], model_tag(r)))
    out: list[tuple[int, Mapping]] = []
    for i, r in enumerate(order):
        same = out and out[-1][1]["metrics"]["accuracy"] == r["metrics"]["accuracy"]
        out.append((out[-1][0] if same else i + 1, r))
    return out


def _lookup(pairs: Sequence[Versus]) -> dict[tuple[str, str], Versus]:
    found = {}
    for v in pairs:
        found[(v.a["case_id"], v.b["case_id"])] = found[(v.b["case_id"], v.a["case_id"])] = v
    return found


def _fmt_p(p: float | None) -> str:
    return "—" if p is None else f"{p:.3g}"


def rank_table(order: Sequence[tuple[int, Mapping]], pairs: Sequence[Versus], alpha: float = ALPHA) -> str:
    from tabulate import tabulate

    by = _lookup(pairs)
    body = []
    for rank, r in order:
        others = [o for _, o in order if o is not r]
        alike = [o for o in others if (v := by[(r["case_id"], o["case_id"])]).tested and v.holm >= alpha]
        m = r["metrics"]
        body.append([str(rank), cell(_name(r)), f"{m['accuracy']:.3f}", str(m["n"]), _alike_cell(alike, others)])
    return tabulate(body, headers=RANK_HEADERS, tablefmt="github", disable_numparse=True)


def _alike_cell(alike: Sequence[Mapping], others: Sequence[Mapping]) -> str:
    """The cases not significantly different from one; with many cases, the shorter of the list and
    its complement ("all but ...")."""
    if not alike:
        return "—"
    if len(alike) == len(others) and len(others) > 1:
        return "every other case"
    names = lambda rows: ", ".join(cell(_name(o)) for o in rows)
    rest = [o for o in others if all(o is not a for a in alike)]
    return f"all but {names(rest)}" if len(others) > 3 and len(rest) < len(alike) else names(alike)


def adjacent_table(order: Sequence[tuple[int, Mapping]], pairs: Sequence[Versus]) -> str:
    """The pairs next to each other in the ranking, the better-ranked one as A."""
    return pair_table([(a, b) for (_, a), (_, b) in zip(order, order[1:])], pairs)


def pair_table(couples: Sequence[tuple[Mapping, Mapping]], pairs: Sequence[Versus]) -> str:
    """One line per (A, B) row couple, A first as given."""
    from tabulate import tabulate

    by = _lookup(pairs)
    body = []
    for a, b in couples:
        v = by[(a["case_id"], b["case_id"])]
        p = v.paired
        a_only, b_only = (p.b, p.c) if v.a is a else (p.c, p.b)
        diff = f"{(a_only - b_only) / p.n:+.3f}" if p.n else "—"
        body.append([cell(_name(a)), cell(_name(b)), str(p.n), str(a_only), str(b_only), diff,
                     _fmt_p(p.p if p.n else None), _fmt_p(v.holm)])
    return tabulate(body, headers=PAIR_HEADERS, tablefmt="github", disable_numparse=True)


def all_pairs(order: Sequence[tuple[int, Mapping]], pairs: Sequence[Versus]) -> list[str]:
    """Every tested pair, folded (GitHub renders <details>): the Holm p of each line depends on all of
    them, so a reader can only retrace it from the whole family. Nothing when the adjacent pairs are all."""
    rows = [r for _, r in order]
    couples = [(a, b) for i, a in enumerate(rows) for b in rows[i + 1:]
               if _lookup(pairs)[(a["case_id"], b["case_id"])].tested]
    if len(couples) <= len(rows) - 1:
        return []
    return [f"<details><summary>All {len(couples)} pairs tested</summary>", "", pair_table(couples, pairs), "",
            "</details>", ""]


def ways_section(ways: int, cases: Sequence[tuple[Mapping, Sequence]], remarks: Sequence[str] = (),
                 alpha: float = ALPHA) -> list[str]:
    """One N: a line of counts (and `remarks`), the ranking, the adjacent pairs."""
    pairs = comparisons(cases)
    k = sum(v.tested for v in pairs)
    order = ranked([r for r, _ in cases])
    untested = [f"{cell(_name(v.a))} – {cell(_name(v.b))}" for v in pairs if not v.tested]
    said = [f"{len(cases)} cases, {plural(k, 'pair')} tested (Holm over {k}).", *remarks, *_power([v for v in pairs if v.tested])]
    if untested:
        said.append(f"Not compared (no image with the same label and candidates): {', '.join(untested)}.")
    return [f"### {ways}-way", "", " ".join(said), "", rank_table(order, pairs, alpha), "",
            adjacent_table(order, pairs), "", *all_pairs(order, pairs)]


MIN_DISCORDANT = 6  # the fewest images right in one case only that McNemar's exact test can call (2 / 2^6 < 0.05)


def _power(tested: Sequence[Versus]) -> list[str]:
    """On few images "not significantly different" says little: the smallest difference the test could
    call at all, in images and in accuracy (every discordant image one way, before Holm's correction)."""
    n = min((v.paired.n for v in tested), default=0)
    if not n or MIN_DISCORDANT / n < 0.05:
        return []
    if n < MIN_DISCORDANT:
        return [f"With {n} paired images no difference can be significant (McNemar's exact test needs "
                f"{MIN_DISCORDANT} images right in one case only): these cases are not compared in any real sense."]
    return [f"With {n} paired images, no difference smaller than {MIN_DISCORDANT} images ({MIN_DISCORDANT / n:.2f} in "
            "accuracy) can be significant, even before Holm's correction: *not significantly different* here "
            "rules out only large gaps."]


def _remarks(group: Sequence[Mapping], real: Sequence[Mapping], no_records: Sequence[Mapping]) -> list[str]:
    out = [] if real else [SMOKE_ONLY]
    if real and len(real) < len(group):
        out.append(f"*Smoke* cases left out ({len(group) - len(real)}): their accuracy is chance.")
    if no_records:
        out.append(f"Left out, no per-sample records: {', '.join(cell(_name(r)) for r in no_records)}.")
    return out


def pairwise_section(rows: Sequence[Mapping], run_dir: str | Path, alpha: float = ALPHA) -> str:
    """Markdown "Model against model (paired)": per N with two cases or more to compare ('' if none).
    `run_dir` holds the run's samples/ (a merged run's copied there: it pairs the samples it has).

    A smoke case is chance, so it is left out where a real model ran at that N; where every case is
    smoke it is kept (the offline default shows the section) and the section says what it means."""
    run = Run(Path(run_dir), {}, list(rows))
    parts = []
    for ways in sorted({r["ways"] for r in rows if r.get("metrics")}):
        group = [r for r in rows if r.get("metrics") and r["ways"] == ways]
        real = [r for r in group if not r.get("smoke")]
        loaded = [(r, run.predictions(r["case_id"])) for r in (real or group)]
        cases = [(r, p) for r, p in loaded if p]
        if len(cases) >= 2:
            parts += ways_section(ways, cases, _remarks(group, real, [r for r, p in loaded if not p]), alpha)
    if not parts:
        return ""
    return "\n".join([HEADING, "", INTRO.format(exact=EXACT_BELOW, pct=alpha * 100), "", *parts]).rstrip()
