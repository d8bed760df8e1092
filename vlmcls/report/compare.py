"""Two comparisons of a run: with the study's published figures, and with a saved baseline run
(McNemar's test on the images both runs scored, `stats`). Every cell goes through `text.cell`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from .runs import Run
from .stats import ALPHA, pair
from .text import cell, plural
from ..sources import IMAGENET_NAMES

# ---------------------------------------------------------------------------------- the study
STUDY_HEADERS = ["Model", "N", "Precision", "Recall", "F1-score", "Accuracy", "P/R/F1 average", "Accuracy 95% CI",
                 "Study inside CI", "Images (run / study)", "Unlike the study", "Case"]
METRIC_COLUMNS = (("Precision", "precision"), ("Recall", "recall"), ("F1-score", "f1"), ("Accuracy", "accuracy"))
NOT_RUN_SHOWN = 20  # study rows named in the "not run" line before "and N more"
REFERENCE_RUNS_SHOWN = 3  # commands that run the reference-only rows not run, one per model, before "e.g."
AVERAGES_DEFINED = (
    "P/R/F1 average: *present* = macro over the classes among the true labels (vlmcls's default: a class never "
    "shown does not count); *union* = scikit-learn's default `average=\"macro\"`, over the true and the predicted "
    "classes (a class predicted but never true counts as 0: it pulls scores down when the subset holds fewer "
    "classes than the model may name, as 1,600 images at 1000-way do); *weighted* = scikit-learn's "
    "`average=\"weighted\"`, whose recall equals the accuracy, as in most of the study's rows.")
AVERAGES_TEXT = (AVERAGES_DEFINED + " The study does not say which it used; `--average` picks the one reported, and "
                 "the table below the comparison shows all three.")
STUDY_INTRO = (
    "Each row of the study's tables that this run scored, all four metrics as *this run vs the study "
    "(this run − study)*; the study's figures have two decimals. The study ran ImageNet-1k validation "
    "(20-way: 10,000 images, 10 per class; 100- and 1000-way: 1,600 images; baselines: 10,000), with its "
    "prompt (`thesis`), raw labels (`raw`) and resolver (`study`) and int8 only for LLaVA 7B/13B and Qwen2-VL-7B. "
    "*Study inside CI*: whether the study's accuracy lies inside this run's exact (Clopper-Pearson) 95 % interval.")
# a run of smoke models only (the offline default) scores none: say so before listing what was not run
NO_STUDY_ROW = ("No study row was scored in this run, so there is no comparison table: it needs a case of a model "
                "and N that the study published (all four metrics as *this run vs the study*, and whether the "
                "study's accuracy lies inside this run's 95 % interval).")


def study_rows(catalog: Mapping[str, Any]) -> list:
    """Every published study row of the catalog (`study` rows and accuracy-only `reference`s)."""
    return [row for entry in catalog.values() for row in entry.study_rows()]


def study_lines(rows: Sequence[Mapping], catalog: Mapping[str, Any]) -> tuple[list[list[str]], list[str], list]:
    """(one line per run case that matches a study row, the study rows this run did not score, and apart
    from those the accuracy-only `reference` rows it did not select: `--study` never runs these (it runs
    `catalog.study_cases`), so they get their own line, with the run that does)."""
    from ..catalog import study_cases

    by_study = {(entry.name, row.ways) for entry, row in study_cases(catalog)}
    body, missing, references = [], [], []
    for study in study_rows(catalog):
        mine = [r for r in rows if r.get("model") == study.model and r.get("ways") == study.ways]
        done = [r for r in mine if r.get("metrics")]
        body += [_study_line(study, catalog[study.model], r) for r in done]
        if done:
            continue
        if not mine and (study.model, study.ways) not in by_study:
            references.append(study)
            continue
        status = f" ({cell(mine[0].get('status'))})" if mine else ""
        missing.append(f"{cell(study.model)} {study.ways}-way{status}")
    return body, missing, references


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
    from ..catalog import STUDY_LABELS, STUDY_PROMPT, STUDY_RESOLVER
    from ..vocab import STUDY_LAYOUT, canonical

    out = []
    if study.quant and row.get("quant") and row["quant"] != study.quant:
        out.append(f"quant {row['quant']} (study's: {study.quant})")
    for key, theirs in (("prompt", STUDY_PROMPT), ("labels", STUDY_LABELS), ("resolver", STUDY_RESOLVER),
                        ("layout", STUDY_LAYOUT)):
        ours = canonical(key, row.get(key)) if key != "prompt" else row.get(key)  # rows saved before: "thesis"
        if ours and ours != theirs:
            out.append(f"{key} {ours} (study's: {theirs})")
    return out


def _not_run_line(missing: Sequence[str], references: Sequence = ()) -> str:
    """The study rows without a score. Those this run never selected get the hint to run them; those it
    did select (skipped or failed, e.g. a `--study` run without their weights) get where the reason is:
    for them the hint would be circular. `references`: unselected accuracy-only `reference` rows (StudyRow),
    which `--study` does not run: their hint is the plain run of the model at that N."""
    tried = [m for m in missing if m.endswith(")")]  # "name N-way (status)": `study_lines` adds a status
    unselected = [m for m in missing if not m.endswith(")")]  # only for a row this run had
    lines = []
    if unselected:
        lines.append(f"{_count(unselected)} not run: {_names(unselected)} (`pytest bench --study` runs them all).")
    if references:
        lines.append(_reference_line(references))
    if tried:
        them, they, their = ("them", "they", "their") if len(tried) > 1 else ("it", "it", "its")
        lines.append(f"{_count(tried)} not run: {_names(tried)}: this run selected {them}, and {they} did not run here "
                     f"(e.g. {their} weights or API key are not on this machine); each case's reason is under *Not run* above.")
    return "\n\n".join(lines)


def _reference_line(references: Sequence) -> str:
    """The catalog's accuracy-only `reference` figures this run did not select: `--study` runs only the
    study's own rows, so the hint names the run that scores one (the model by -k, at its N)."""
    names = [f"{cell(r.model)} {r.ways}-way" for r in references]
    ways: dict[str, list[int]] = {}
    for r in references:
        ways.setdefault(r.model, []).append(r.ways)
    runs = [f"`pytest bench -k {_k(model)} --ways {','.join(map(str, ns))}`" for model, ns in ways.items()]
    if len(runs) > REFERENCE_RUNS_SHOWN:
        how = f"one run per model, e.g. {runs[0]}"
    else:
        how = ", ".join(runs) + (" runs " if len(runs) == 1 else " run ") + ("it" if len(references) == 1 else "them")
    return (f"{plural(len(references), 'accuracy-only reference')} not run: {_names(names)} (`pytest bench --study` runs "
            f"only the study's own rows; {how}).")


def _k(model: str) -> str:
    """A model name for -k on a shell line: quoted unless plain (letters, digits, - _ .)."""
    return model if model.replace("-", "").replace("_", "").replace(".", "").isalnum() else cell(f"'{model}'")


def _count(rows: Sequence[str]) -> str:
    return plural(len(rows), "study row")


def _names(rows: Sequence[str]) -> str:
    more = len(rows) - NOT_RUN_SHOWN
    return ", ".join(rows[:NOT_RUN_SHOWN]) + (f" and {more} more" if more > 0 else "")


def doubt_notes(catalog: Mapping[str, Any]) -> list[str]:
    return [f"- {cell(r.model)} {r.ways}-way: {cell(doubt)}" for r in study_rows(catalog)
            if (doubt := catalog[r.model].doubt(r.ways))]


CONVENTION_HEADERS = ["Case", "Precision present / union / weighted", "Recall present / union / weighted",
                      "F1 present / union / weighted", "Largest gap"]


def conventions_table(rows: Sequence[Mapping]) -> str:
    """How far apart the three averaging conventions are on this run, case by case ('' if no row has them)."""
    from tabulate import tabulate

    from ..settings import AVERAGES

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

    from ..catalog import study_cases

    if catalog is None:
        from ..catalog import load_catalog

        catalog = load_catalog()
    body, missing, references = study_lines(rows, catalog)
    if not body and not _imagenet_run(rows):  # the user's own images: no study figure applies, no pointer to one
        table = conventions_table([r for r in rows if r.get("metrics")])
        return "\n".join(["## Averaging conventions on this run", "", AVERAGES_DEFINED + " `--average` picks the one "
                          "reported.", "", CONVENTIONS_LEAD, "", table]) if table else ""
    parts = ["## Compared with the study", "", STUDY_INTRO if body else NO_STUDY_ROW]
    if body:
        parts += ["", AVERAGES_TEXT, *_dataset_line(rows), "",
                  tabulate(body, headers=STUDY_HEADERS, tablefmt="github", disable_numparse=True)]
    elif len(missing) > 1:
        # nothing to compare (a smoke-only run): no list of every study row, no notes on figures not shown;
        # the rows this run selected and could not run keep their line. The count is of the rows `--study`
        # runs (a reference-only row is among `missing` only when this run selected it)
        tried = [m for m in missing if m.endswith(")")]
        if study_cases(catalog):
            parts[-1] += f" `pytest bench --study` runs the study's {plural(len(study_cases(catalog)), 'row')}."
        missing = tried
    if missing or references:
        parts += ["", _not_run_line(missing, references)]
    notes = doubt_notes(catalog) if body else []
    if notes:
        parts += ["", "Study figures that cannot be top-1 accuracy over the stated classes:", "", *notes]
    table = conventions_table([r for r in rows if r.get("metrics")])
    if table:
        parts += ["", "### Averaging conventions on this run", ""]
        if not body:  # defined above the comparison table when there is one
            parts += [AVERAGES_DEFINED + " `--average` picks the one reported.", ""]
        parts += [CONVENTIONS_LEAD, "", table]
    return "\n".join(parts)


CONVENTIONS_LEAD = ("Precision, recall and F1 of each case under the three conventions (`--average`); the gap is the "
                    "largest difference between two conventions on one metric.")


# the --dataset names `data.open_dataset` reads as the hub's ImageNet-1k validation stream, the study's data (a
# name carries a split only when the dataset had several to choose from: the stream has one, so no name gets
# `:validation` added; `imagenet:validation` is no dataset at all, the hub id's `:validation` is as typed)
STUDY_DATA_NAMES = IMAGENET_NAMES


def _imagenet_run(rows: Sequence[Mapping]) -> bool:
    """Whether the run scored ImageNet (the hub's, the bundled sample of its classes, or an older row
    with no dataset recorded; a run of no case says nothing else): only then do the study's figures,
    or a pointer to them, belong here."""
    from ..catalog import STUDY_DATASET

    return not rows or any(str(r.get("dataset") or STUDY_DATASET) in (*STUDY_DATA_NAMES, "sample") for r in rows)


def _dataset_line(rows: Sequence[Mapping]) -> list[str]:
    """A line when the scored cases used other data than the study's ([] otherwise)."""
    datasets = sorted({str(r["dataset"]) for r in rows if r.get("metrics") and r.get("dataset")} - set(STUDY_DATA_NAMES))
    if not datasets:
        return []
    return ["", f"The study measured ImageNet-1k validation; this run used {', '.join(cell(d) for d in datasets)}, "
                "so differences also reflect the data."]


# ---------------------------------------------------------------------------------- a baseline run
BASELINE_ONLY_SHOWN = 10
BASELINE_HEADERS = ["Case", "Accuracy", "Baseline accuracy", "Paired n", "Lost (b)", "Gained (c)", "p-value",
                    "Test", "Verdict", "Only here", "Only in baseline"]


def baseline_section(rows: Sequence[Mapping], run_dir: str | Path, baseline: Run, alpha: float = ALPHA) -> str:
    """Per case present in both runs, McNemar's test on the shared samples; the rest listed by name.
    `run_dir` holds this run's samples/ (rows may come from several merged runs, copied there)."""
    from tabulate import tabulate

    current = Run(Path(run_dir), {}, list(rows))
    base_rows = {r["case_id"]: r for r in baseline.rows}
    body, missing = [], []
    for r in rows:
        cid = r["case_id"]
        line = _baseline_line(cid, current, baseline, base_rows.get(cid), alpha)
        if isinstance(line, list):
            body.append(line)
        else:
            missing.append(f"- {cell(cid)}: {cell(line)}")
    # only what the baseline ran: a case it merely skipped has nothing that could have been compared
    run_now = {r["case_id"] for r in rows}
    gone = sorted(cid for cid, r in base_rows.items() if r.get("metrics") and cid not in run_now)
    if gone:  # one line: a baseline of 40 cases compared with a 2-case run must not list 38 lines
        shown = ", ".join(gone[:BASELINE_ONLY_SHOWN]) + (f" and {len(gone) - BASELINE_ONLY_SHOWN} more" if len(gone) > BASELINE_ONLY_SHOWN else "")
        missing.append(f"- only in the baseline ({len(gone)} case{'s' if len(gone) != 1 else ''} it ran, not run now): {cell(shown)}")
    parts = [f"## Compared with the baseline {cell(baseline.meta.get('run_id') or baseline.path.name)}", "",
             f"McNemar's test on the samples both runs scored (paired by sample id), alpha {alpha}. "
             "Lost: right in the baseline, wrong now; gained: the reverse. Accuracies are on the paired samples."]
    if body:
        parts += ["", tabulate(body, headers=BASELINE_HEADERS, tablefmt="github", disable_numparse=True)]
    return "\n".join(parts + ([""] + missing if missing else []))


def _baseline_line(case_id: str, current: Run, baseline: Run, base_row: Mapping | None, alpha: float) -> list[str] | str:
    now = current.predictions(case_id)
    before = baseline.predictions(case_id) if base_row else None
    nothing = nothing_paired(now, before, base_row)
    if nothing:
        return nothing
    p = pair(now, before, alpha)
    return [cell(case_id), f"{p.accuracy:.3f}", f"{p.baseline_accuracy:.3f}", str(p.n), str(p.b), str(p.c),
            f"{p.p:.3g}", p.test, p.verdict, str(p.only_current), str(p.only_baseline)]


def nothing_paired(now: Sequence | None, before: Sequence | None, base_row: Mapping | None) -> str:
    """Why a case has no sample to compare with the baseline's same case ('' when some pair up): the
    baseline lacks the case or did not run it, either run kept no per-sample records, or no sample id
    is in both. The gate and the report say it in these same words."""
    if not base_row:
        return "not in the baseline"
    if now is None:
        return "no per-sample records in this run"
    if before is None:
        if not base_row.get("metrics"):  # skipped, an error, a crash: it never had samples to keep
            return f"the baseline has no result for it ({base_row.get('status') or 'no status'})"
        return "no per-sample records in the baseline"
    p = pair(now, before)
    return "" if p.n else p.summary()


def baseline_gaps(rows: Sequence[Mapping], run_dir: str | Path, baseline: Run) -> dict[str, str]:
    """case_id -> why nothing was compared, for each case of this run that has a result (the reasons
    the report's baseline section gives)."""
    current = Run(Path(run_dir), {}, list(rows))
    base_rows = {r["case_id"]: r for r in baseline.rows}
    lines = {r["case_id"]: _baseline_line(r["case_id"], current, baseline, base_rows.get(r["case_id"]), ALPHA)
             for r in rows if r.get("metrics")}
    return {cid: line for cid, line in lines.items() if isinstance(line, str)}


def baseline_warning(rows: Sequence[Mapping], run_dir: str | Path, baseline: Run, strict: bool = False) -> str:
    """One line for the terminal when --baseline compared nothing for some cases ('' otherwise): a CI
    gate that checked nothing must not pass quietly."""
    from collections import Counter

    done = [r for r in rows if r.get("metrics")]
    gaps = baseline_gaps(rows, run_dir, baseline)
    if not gaps:
        return ""
    kinds = Counter(why.split(" (", 1)[0] for why in gaps.values())  # "no sample in common with the baseline (3 ...)"
    why = "; ".join(f"{n}: {kind}" for kind, n in kinds.most_common())
    then = "--strict-cases failed them" if strict else "the baseline gate did not check them (--strict-cases fails them)"
    return (f"--baseline {baseline.path} gave nothing to compare for {len(gaps)} of {len(done)} cases ({why}); "
            f"{then}; see report.md")


# ---------------------------------------------------------------------------------- the baseline in results.json
def baseline_results(rows: Sequence[Mapping], run_dir: str | Path, baseline: Run, alpha: float = ALPHA) -> dict[str, dict]:
    """case_id -> the case's comparison with the baseline, JSON-safe, for each case with a result: what
    the report's baseline table says (paired n, lost, gained, p, verdict), so that a script reads
    results.json instead of parsing report.md. A case with nothing to compare gets `compared: false`
    and the reason the report gives."""
    current = Run(Path(run_dir), {}, list(rows))
    base_rows = {r["case_id"]: r for r in baseline.rows}
    run_id = baseline.meta.get("run_id") or baseline.path.name
    out = {}
    for r in rows:
        if not r.get("metrics"):
            continue
        cid = r["case_id"]
        now = current.predictions(cid)
        before = baseline.predictions(cid) if base_rows.get(cid) else None
        head = {"run_id": run_id}
        nothing = nothing_paired(now, before, base_rows.get(cid))
        if nothing:
            out[cid] = {**head, "compared": False, "verdict": "not compared", "why": nothing}
            continue
        p = pair(now, before, alpha)
        out[cid] = {**head, "compared": True, "paired_n": p.n, "accuracy": p.accuracy,
                    "baseline_accuracy": p.baseline_accuracy, "lost": p.b, "gained": p.c, "p": p.p, "test": p.test,
                    "alpha": alpha, "worse": p.worse, "verdict": p.verdict, "only_here": p.only_current,
                    "only_in_baseline": p.only_baseline}
    return out


def with_baseline(rows: Sequence[Mapping], run_dir: str | Path, baseline: Run | None) -> list[dict]:
    """The rows, each case with a result carrying its `baseline` comparison (see `baseline_results`);
    without a baseline, any comparison a row kept from an earlier render is dropped (it would be stale).
    Recomputed from the samples every time: calling it twice gives the same rows."""
    found = baseline_results(rows, run_dir, baseline) if baseline is not None else {}
    out = []
    for r in rows:
        row = {k: v for k, v in r.items() if k != "baseline"}
        if r["case_id"] in found:
            row["baseline"] = found[r["case_id"]]
        out.append(row)
    return out


def baseline_meta(baseline_path: str | Path, run_dir: str | Path) -> dict[str, str]:
    """What results.json's meta records of the baseline: `baseline`, its absolute path (as before), and
    `baseline_relative`, the path from the run folder (`../20261127-205339-2dbfd3`), which still finds
    it when the reports folder is moved or published as a whole (see runs.recorded_baseline)."""
    import os

    absolute = Path(baseline_path).resolve()
    try:
        relative = Path(os.path.relpath(absolute, Path(run_dir).resolve())).as_posix()
    except ValueError:  # another drive (Windows): no relative path exists
        relative = None
    return {"baseline": str(absolute), **({"baseline_relative": relative} if relative else {})}
