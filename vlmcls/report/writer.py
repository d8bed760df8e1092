"""The one writer of a run's report files: `results.json` and `report.md`, each written once.

`report.md` = the study-shaped tables + sources + comparison with the study (+ a baseline run) +
plots and confusions + provenance, rendered from the rows every time (calling it again never appends).
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from . import plots as plots_mod
from .plots import PLOTS_DIR
from .compare import baseline_section, study_section, with_baseline
from .dataset import dataset_section
from .markdown import render_markdown
from .pairwise import pairwise_section
from .runs import Run
from .summary import write_summary
from .text import atomic_write


def _sorted(rows: Sequence[Mapping]) -> list[Mapping]:
    return sorted(rows, key=lambda r: (r["ways"], r["model"]))


def full_markdown(out: str | Path, rows: Sequence[Mapping], *, catalog: Mapping[str, Any] | None = None,
                  baseline: Run | None = None, plots: bool = True, sources: str = "", provenance: str = "",
                  meta: Mapping[str, Any] | None = None) -> str:
    """The whole report.md text (drawing the plots under `out/plots/` when `plots`); `meta` (results.json's)
    gives the Dataset section."""
    out, rows = Path(out), _sorted(rows)
    meta = meta or {}
    sizes = {d["name"]: d.get("images") for d in [meta.get("dataset"), *(m.get("dataset") for m in meta.get("merged_from") or [])]
             if isinstance(d, Mapping) and d.get("name")}
    sized = [{**r, "dataset_images": r.get("dataset_images") or sizes.get(r.get("dataset"))} for r in rows]
    parts = [render_markdown(sized).rstrip(), dataset_section(meta, rows), pairwise_section(rows, out), sources,
             study_section(rows, catalog)]
    if baseline is not None:
        parts.append(baseline_section(rows, out, baseline))
    parts.append(plots_mod.report_section(rows, out, draw=plots))
    parts.append(provenance)
    return "\n\n".join(p.strip() for p in parts if p.strip()) + "\n"


def write_run(out: str | Path, rows: Sequence[Mapping], meta: Mapping[str, Any] | None = None, *,
              catalog: Mapping[str, Any] | None = None, baseline: Run | None = None, plots: bool = True,
              sources: str = "", provenance: str = "") -> Path:
    """results.json and the full report.md of a run, each written once; returns report.md's path.
    (samples/*.jsonl must be there first: the confusions and the baseline comparison read them.)"""
    out = Path(out)
    rows = with_baseline(rows, out, baseline)  # each case's verdict against the baseline, for scripts
    write_results(out, rows, meta)  # first: a failure while drawing keeps the results
    write_summary(out, rows, meta)  # the PR-comment version (`vlmcls report --summary` prints it)
    atomic_write(out / "report.md", full_markdown(out, rows, catalog=catalog, baseline=baseline, plots=plots,
                                                  sources=sources, provenance=provenance, meta=meta))
    return out / "report.md"


def write_results(out: str | Path, rows: Sequence[Mapping], meta: Mapping[str, Any] | None = None) -> Path:
    out = Path(out)
    atomic_write(out / "results.json", json.dumps({"meta": dict(meta or {}), "cases": _sorted(rows)}, indent=2, default=str))
    return out / "results.json"


def write_report(rows: Sequence[Mapping], out: str | Path, meta: Mapping[str, Any] | None = None) -> Path:
    """results.json and the tables-only report.md (no plots, no comparisons): for tools and tests.
    A run writes its files with `write_run`."""
    out = Path(out)
    write_results(out, rows, meta)
    atomic_write(out / "report.md", render_markdown(_sorted(rows)))
    return out / "report.md"


def finish_report(out: str | Path, rows: Sequence[Mapping], **kwargs: Any) -> Path:
    """Rewrite `out/report.md` in full (see `full_markdown`); kept for callers that wrote results.json
    with `write_report` first -- `write_run` does both, writing report.md once."""
    atomic_write(Path(out) / "report.md", full_markdown(out, rows, **kwargs))
    return Path(out) / "report.md"


def write_samples(path: str | Path, predictions: Iterable) -> None:
    """Per-sample JSONL: sample id, true label, candidates, raw answer, resolved label, stage, latency, tokens."""
    atomic_write(path, "".join(json.dumps(asdict(p), ensure_ascii=False) + "\n" for p in predictions))


RUN_FILES = ("report.md", "results.json", "summary.md")
RUN_FOLDERS = ("samples", "per_class", PLOTS_DIR)


def clear_run_folder(folder: Path) -> None:
    """Removes what a run writes (RUN_FILES, RUN_FOLDERS) before another run is written there, so that no
    file of a case the new one lacks stays beside it; anything else (a --store put there, a page of the
    user's own in a folder --out names) stays."""
    for name in RUN_FOLDERS:
        if (folder / name).is_dir():
            shutil.rmtree(folder / name)
    for name in RUN_FILES:
        (folder / name).unlink(missing_ok=True)
