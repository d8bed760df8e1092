"""Stored runs read back, and two comparisons: with the study's published figures, and with a
saved baseline run (McNemar's test on the same samples).

A run folder is what the plugin writes: `results.json` = {"meta": ..., "cases": [row, ...]} and
`samples/<case_id>.jsonl` = one Prediction per line. Every cell of every table goes through
`report.cell`: labels, answers and even case ids are untrusted text.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .report import atomic_write, cell, render_markdown
from .types import Prediction

ALPHA = 0.05
# Below this many discordant pairs the chi-square approximation is poor: use the exact binomial test.
EXACT_BELOW = 25
_PRED_FIELDS = {f.name for f in fields(Prediction)}


class RunError(ValueError):
    """A run folder that cannot be read; the message is one line meant for the user."""


# ---------------------------------------------------------------------------------- stored runs
@dataclass(frozen=True)
class Run:
    path: Path
    meta: dict
    rows: list[dict]

    @property
    def name(self) -> str:
        return str(self.path)

    def samples_path(self, case_id: str) -> Path | None:
        # case ids come from a file: never let one walk out of samples/ ("../x").
        if Path(case_id).name != case_id or case_id.startswith("."):
            return None
        return self.path / "samples" / f"{case_id}.jsonl"

    def predictions(self, case_id: str) -> list[Prediction] | None:
        path = self.samples_path(case_id)
        return load_samples(path) if path is not None and path.is_file() else None


def load_run(path: str | Path) -> Run:
    path = Path(path)
    if not path.is_dir():
        raise RunError(f"run folder {path} not found")
    file = path / "results.json"
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path} holds no results.json: not a vlmcls run folder") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunError(f"cannot read {file}: {_one_line(exc)}") from None
    cases = data.get("cases") if isinstance(data, dict) else None
    if not isinstance(cases, list) or not all(isinstance(r, dict) and "case_id" in r for r in cases):
        raise RunError(f"{file} is not a vlmcls results file (no 'cases' list of rows)")
    return Run(path, dict(data.get("meta") or {}), cases)


def load_samples(path: str | Path) -> list[Prediction]:
    """Predictions of one case's JSONL; unknown keys (a newer writer) are ignored."""
    preds = []
    try:
        with open(path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if line.strip():
                    preds.append(_prediction(json.loads(line)))
    except (OSError, UnicodeDecodeError) as exc:
        raise RunError(f"cannot read {path}: {_one_line(exc)}") from None
    except (json.JSONDecodeError, TypeError, AttributeError) as exc:
        raise RunError(f"{path}:{number}: not a prediction record ({_one_line(exc)})") from None
    return preds


def _prediction(record: Mapping[str, Any]) -> Prediction:
    data = {k: v for k, v in record.items() if k in _PRED_FIELDS}
    data["candidates"] = tuple(data.get("candidates") or ())
    return Prediction(**data)


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _get(pred: Any, key: str) -> Any:
    """A field of a Prediction or of its JSON dict: gates hold objects, tools hold dicts."""
    return pred.get(key) if isinstance(pred, Mapping) else getattr(pred, key)


# ---------------------------------------------------------------------------------- the study
STUDY_HEADERS = ["Model", "N", "Precision", "Recall", "F1-score", "Accuracy", "P/R/F1 average", "Accuracy 95% CI",
                 "Study inside CI", "Images (run / study)", "Unlike the study", "Case"]
METRIC_COLUMNS = (("Precision", "precision"), ("Recall", "recall"), ("F1-score", "f1"), ("Accuracy", "accuracy"))
NOT_RUN_SHOWN = 20  # study rows named in the "not run" line before "and N more"
AVERAGES_TEXT = (
    "P/R/F1 average: *present* = macro over the classes among the true labels (vlmcls's default: a class never "
    "shown does not count); *union* = scikit-learn's default `average=\"macro\"`, over the true and the predicted "
    "classes (a class predicted but never true counts as 0: it pulls scores down when the subset holds fewer "
    "classes than the model may name, as 1,600 images at 1000-way do); *weighted* = scikit-learn's "
    "`average=\"weighted\"`, whose recall equals the accuracy, as in most of the study's rows. The study does not "
    "say which it used; `--average` picks the one reported, and the table below the comparison shows all three.")


def study_rows(catalog: Mapping[str, Any]) -> list:
    """Every published study row of the catalog (`study` rows and accuracy-only `reference`s)."""
    return [row for entry in catalog.values() for row in entry.study_rows()]


def study_lines(rows: Sequence[Mapping], catalog: Mapping[str, Any]) -> tuple[list[list[str]], list[str]]:
    """(one line per run case that matches a study row, the study rows this run did not score)."""
    body, missing = [], []
    for study in study_rows(catalog):
        mine = [r for r in rows if r.get("model") == study.model and r.get("ways") == study.ways]
        done = [r for r in mine if r.get("metrics")]
        body += [_study_line(study, catalog[study.model], r) for r in done]
        if not done:
            status = f" ({cell(mine[0].get('status'))})" if mine else ""
            missing.append(f"{cell(study.model)} {study.ways}-way{status}")
    return body, missing


def _vs(run: float, study: float | None, doubted: bool = False) -> str:
    """`this run vs study (difference)`; no difference against a figure that cannot be what it claims."""
    if study is None:
        return f"{run:.3f} vs –"
    return f"{run:.3f} vs {study:.2f} ({'see note' if doubted else f'{run - study:+.3f}'})"


def _study_line(study, entry, row: Mapping) -> list[str]:
    m = row["metrics"]
    lo, hi = m["accuracy_ci"]
    doubted = bool(entry.doubt(study.ways))
    inside = "not compared: see note" if doubted else ("yes" if lo <= study.accuracy <= hi else "no")
    images = f"{m['n']:,} / {study.images:,}" if study.images else f"{m['n']:,} / –"
    return [cell(study.model), str(study.ways), *[_vs(m[key], study.metric(key), doubted) for _, key in METRIC_COLUMNS],
            cell(m.get("average", "present")), f"{lo:.3f}–{hi:.3f}", inside, images,
            cell("; ".join(unlike_study(row, study))), cell(row["case_id"])]


def unlike_study(row: Mapping, study) -> list[str]:
    """The settings in which this run's case differs from the study's row (images have their column)."""
    from .catalog import STUDY_LABELS, STUDY_PROMPT, STUDY_RESOLVER

    out = []
    if study.quant and row.get("quant") and row["quant"] != study.quant:
        out.append(f"quant {row['quant']} (study {study.quant})")
    for key, theirs in (("prompt", STUDY_PROMPT), ("labels", STUDY_LABELS), ("resolver", STUDY_RESOLVER)):
        if row.get(key) and row[key] != theirs:
            out.append(f"{key} {row[key]} (study {theirs})")
    return out


def _not_run_line(missing: Sequence[str]) -> str:
    shown = ", ".join(missing[:NOT_RUN_SHOWN]) + (f" and {len(missing) - NOT_RUN_SHOWN} more" if len(missing) > NOT_RUN_SHOWN else "")
    return f"{len(missing)} study row{'s' if len(missing) != 1 else ''} not run: {shown} (`pytest bench --study` runs them all)."


def doubt_notes(catalog: Mapping[str, Any]) -> list[str]:
    return [f"- {cell(r.model)} {r.ways}-way: {cell(doubt)}" for r in study_rows(catalog)
            if (doubt := catalog[r.model].doubt(r.ways))]


CONVENTION_HEADERS = ["Case", "Precision present / union / weighted", "Recall present / union / weighted",
                      "F1 present / union / weighted", "Largest gap"]


def conventions_table(rows: Sequence[Mapping]) -> str:
    """How far apart the three averaging conventions are on this run, case by case ('' if no row has them)."""
    from tabulate import tabulate

    from .settings import AVERAGES

    body = []
    for r in rows:
        conv = (r.get("metrics") or {}).get("conventions")
        if not conv or any(a not in conv for a in AVERAGES):
            continue  # a row written before the conventions were recorded
        cells = [" / ".join(f"{conv[a][key]:.3f}" for a in AVERAGES) for key in ("precision", "recall", "f1")]
        gap = max(max(conv[a][k] for a in AVERAGES) - min(conv[a][k] for a in AVERAGES) for k in ("precision", "recall", "f1"))
        body.append([cell(r["case_id"]), *cells, f"{gap:.3f}"])
    return tabulate(body, headers=CONVENTION_HEADERS, tablefmt="github", disable_numparse=True) if body else ""


def study_section(rows: Sequence[Mapping], catalog: Mapping[str, Any] | None = None) -> str:
    from tabulate import tabulate

    if catalog is None:
        from .catalog import load_catalog

        catalog = load_catalog()
    parts = ["## Compared with the study", "",
             "Each row of the study's tables that this run scored, all four metrics as *this run vs the study "
             "(this run − study)*; the study's figures have two decimals. The study ran ImageNet-1k validation "
             "(20-way: 10,000 images, 10 per class; 100- and 1000-way: 1,600 images; baselines: 10,000), with its "
             "prompt, raw labels and resolver (`thesis`) and int8 only for LLaVA 7B/13B and Qwen2-VL-7B. "
             "*Study inside CI*: whether the study's accuracy lies inside this run's 95 % interval.", "",
             AVERAGES_TEXT]
    from .catalog import STUDY_DATASET

    datasets = sorted({str(r["dataset"]) for r in rows if r.get("metrics") and r.get("dataset")} - {STUDY_DATASET})
    if datasets:
        parts += ["", f"The study measured ImageNet-1k validation; this run used {', '.join(cell(d) for d in datasets)}, "
                      "so differences also reflect the data."]
    body, missing = study_lines(rows, catalog)
    if body:
        parts += ["", tabulate(body, headers=STUDY_HEADERS, tablefmt="github", disable_numparse=True)]
    if missing:
        parts += ["", _not_run_line(missing)]
    notes = doubt_notes(catalog)
    if notes:
        parts += ["", "Study figures that cannot be top-1 accuracy over the stated classes:", "", *notes]
    table = conventions_table([r for r in rows if r.get("metrics")])
    if table:
        parts += ["", "### Averaging conventions on this run", "",
                  "Precision, recall and F1 of each case under the three conventions (`--average`); the gap is the "
                  "largest difference between two conventions on one metric.", "", table]
    return "\n".join(parts)


# ---------------------------------------------------------------------------------- a baseline run
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
    return float(stats.chi2.sf((abs(b - c) - 1) ** 2 / n, df=1))


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
        if self.n == 0:
            return (f"no sample in common with the baseline ({self.only_current} only in this run, "
                    f"{self.only_baseline} only in the baseline): cannot compare")
        text = (f"accuracy {self.accuracy:.3f} vs baseline {self.baseline_accuracy:.3f} on {self.n} paired samples; "
                f"lost {self.b}, gained {self.c}; McNemar p={self.p:.3g} ({self.test}): {self.verdict}")
        if self.only_current or self.only_baseline:
            text += f"; {self.only_current} samples only in this run, {self.only_baseline} only in the baseline"
        return text


def _outcomes(preds: Iterable[Any]) -> dict[str, bool]:
    """sample_id -> correct (pred_id == true_id; unresolved and error rows are wrong)."""
    out = {}
    for p in preds:
        pred = _get(p, "pred_id")
        out[str(_get(p, "sample_id"))] = pred is not None and pred == _get(p, "true_id")
    return out


def pair(current_preds: Iterable[Any], baseline_preds: Iterable[Any], alpha: float = ALPHA) -> Paired:
    """McNemar's test of one case against its baseline, paired by sample_id (objects or JSON dicts)."""
    now, before = _outcomes(current_preds), _outcomes(baseline_preds)
    shared = now.keys() & before.keys()
    b = sum(before[s] and not now[s] for s in shared)
    c = sum(now[s] and not before[s] for s in shared)
    n = len(shared)
    return Paired(
        n=n, accuracy=sum(now[s] for s in shared) / n if n else None,
        baseline_accuracy=sum(before[s] for s in shared) / n if n else None,
        b=b, c=c, p=mcnemar(b, c), only_current=len(now.keys() - shared), only_baseline=len(before.keys() - shared),
        alpha=alpha,
    )


def worse_than_baseline(current_preds: Iterable[Any], baseline_preds: Iterable[Any],
                        alpha: float = ALPHA) -> tuple[bool, str]:
    """For a gate: (significantly worse than the baseline?, one-line explanation).

    No shared sample means no evidence either way: not worse, and the message says so."""
    result = pair(current_preds, baseline_preds, alpha)
    return result.worse, result.summary()


BASELINE_ONLY_SHOWN = 10
BASELINE_HEADERS = ["Case", "Accuracy", "Baseline accuracy", "Paired n", "Lost (b)", "Gained (c)", "p-value",
                    "Test", "Verdict", "Only here", "Only in baseline"]


def baseline_section(rows: Sequence[Mapping], run_dir: str | Path, baseline: Run, alpha: float = ALPHA) -> str:
    """Per case present in both runs, McNemar's test on the shared samples; the rest listed by name.
    `run_dir` holds this run's samples/ (rows may come from several merged runs, copied there)."""
    from tabulate import tabulate

    current = Run(Path(run_dir), {}, list(rows))
    base_ids = {r["case_id"] for r in baseline.rows}
    body, missing = [], []
    for r in rows:
        cid = r["case_id"]
        line = _baseline_line(cid, current, baseline, alpha) if cid in base_ids else "not in the baseline"
        if isinstance(line, list):
            body.append(line)
        else:
            missing.append(f"- {cell(cid)}: {cell(line)}")
    gone = sorted(base_ids - {r["case_id"] for r in rows})
    if gone:  # one line: a baseline of 40 cases compared with a 2-case run must not list 38 lines
        shown = ", ".join(gone[:BASELINE_ONLY_SHOWN]) + (f" and {len(gone) - BASELINE_ONLY_SHOWN} more" if len(gone) > BASELINE_ONLY_SHOWN else "")
        missing.append(f"- only in the baseline ({len(gone)} cases, not run now): {cell(shown)}")
    parts = [f"## Compared with the baseline {cell(baseline.meta.get('run_id') or baseline.path.name)}", "",
             f"McNemar's test on the samples both runs scored (paired by sample id), alpha {alpha}. "
             "Lost: right in the baseline, wrong now; gained: the reverse. Accuracies are on the paired samples."]
    if body:
        parts += ["", tabulate(body, headers=BASELINE_HEADERS, tablefmt="github", disable_numparse=True)]
    return "\n".join(parts + ([""] + missing if missing else []))


def _baseline_line(case_id: str, current: Run, baseline: Run, alpha: float) -> list[str] | str:
    now, before = current.predictions(case_id), baseline.predictions(case_id)
    if now is None or before is None:
        return f"no per-sample records in {'this run' if now is None else 'the baseline'}"
    p = pair(now, before, alpha)
    if p.n == 0:
        return p.summary()
    return [cell(case_id), f"{p.accuracy:.3f}", f"{p.baseline_accuracy:.3f}", str(p.n), str(p.b), str(p.c),
            f"{p.p:.3g}", p.test, p.verdict, str(p.only_current), str(p.only_baseline)]


# ---------------------------------------------------------------------------------- the full report
def finish_report(out: str | Path, rows: Sequence[Mapping], *, catalog: Mapping[str, Any] | None = None,
                  baseline: Run | None = None, plots: bool = True, sources: str = "", provenance: str = "") -> Path:
    """Rewrite `out/report.md` as the study tables + sources + comparison with the study (+ baseline)
    + plots + confusions. Rendered from `rows` every time, so calling it twice never appends twice."""
    from . import plots as plots_mod

    out = Path(out)
    rows = sorted(rows, key=lambda r: (r["ways"], r["model"]))  # the order write_report uses
    parts = [render_markdown(rows).rstrip(), sources, study_section(rows, catalog)]
    if baseline is not None:
        parts.append(baseline_section(rows, out, baseline))
    parts.append(plots_mod.report_section(rows, out, draw=plots))
    parts.append(provenance)
    atomic_write(out / "report.md", "\n\n".join(p.strip() for p in parts if p.strip()) + "\n")
    return out / "report.md"
