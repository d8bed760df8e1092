"""Case rows -> markdown tables in the study's shape, JSON and per-sample JSONL.

A row is a JSON-safe dict (see `case_row`); workers send rows, the controller renders. Model answers
are untrusted text: every cell goes through `cell()`, so `|`, newlines or HTML cannot break a table.
"""
from __future__ import annotations

import html
import json
import os
import tempfile
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

STUDY_COLUMNS = ["Model", "Precision", "Recall", "F1-score", "Accuracy"]
CONTEXT_KEYS = (("dataset", "dataset", True), ("seed", "seed", False), ("prompt", "prompt", True),
                ("labels", "labels", True), ("resolver", "resolver", True), ("layout", "layout", True))
ERROR_CHARS = 200  # the first error message kept in a row (the full ones are in the samples file)
SMOKE_NOTE = ("*smoke* marks a random-weight model (or a scripted stand-in): its accuracy is chance "
              "level by construction and measures only that the pipeline runs.")


def atomic_write(path: str | Path, text: str) -> None:
    """Write via a temp file in the same folder + os.replace: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cell(value: Any) -> str:
    """Render untrusted text into one markdown table cell."""
    return _prose(value).replace("`", "\\`")


def _prose(value: Any) -> str:
    """`cell` without the backtick escape: for our own text, whose `code` spans must render."""
    text = "" if value is None else str(value)
    text = html.escape(" ".join(text.split()), quote=False)  # newlines and runs of spaces -> one space
    return text.replace("|", "\\|")


def case_row(result, *, status: str, threshold: float | None, reason: str = "") -> dict:
    """A JSON-safe summary of one case (from runner.CaseResult)."""
    spec, m = result.spec, result.metrics
    preds = result.predictions
    errors = [p.error for p in preds if p.error is not None]
    return {
        **spec_fields(spec),
        "status": status, "reason": reason, "threshold": threshold,
        "metrics": m.as_dict() if m else None,
        "images_per_s": result.images_per_s,
        # rounded: a sum of 1/n shares leaves 0.9999999999999999 in results.json
        "stages": {k: round(v, 6) for k, v in result.stage_shares().items()},
        "errors": len(errors), "first_error": errors[0][:ERROR_CHARS] if errors else None,
        "ambiguous": sum(p.ambiguous for p in preds),
        "resumed": result.resumed, "not_run": result.not_run, "stopped": result.stopped,
        "cost_usd": sum(p.cost_usd or 0.0 for p in preds) if any(p.cost_usd is not None for p in preds) else None,
        "tokens": {"prompt": sum(p.prompt_tokens or 0 for p in preds), "completion": sum(p.completion_tokens or 0 for p in preds)},
        "mean_latency_s": (sum(p.latency_s for p in preds) / len(preds)) if preds else None,
        "notes": list(result.notes),
    }


def spec_fields(spec) -> dict:
    e = spec.model
    device = spec.settings.device
    return {
        "case_id": spec.case_id, "model": e.name, "backend": e.backend, "weights": e.weights, "smoke": e.smoke,
        "ways": spec.ways, "quant": spec.settings.quant if e.backend == "hf-vlm" else None,
        "layout": spec.settings.layout, "dataset": spec.dataset, "samples": spec.samples, "seed": spec.seed,
        "prompt": spec.prompt, "labels": spec.labels_mode, "resolver": spec.resolver,
        "reference": e.reference.get(spec.ways), "trust_remote_code": bool(e.trust_remote_code and spec.settings.trust_remote_code),
        "device_kind": "cuda" if device.startswith("cuda") else device,
        "nli_model": spec.nli_model, "settings": _settings(spec.settings),
    }


def _settings(settings) -> dict:
    """Every effective setting, for reproducing the case; `extra` (catalog options) made JSON-safe."""
    plain = {f.name: getattr(settings, f.name) for f in fields(settings) if f.name != "extra"}
    return {**plain, "extra": json.loads(json.dumps(dict(settings.extra), default=str))}


def skipped_row(spec, status: str, reason: str) -> dict:
    return {**spec_fields(spec), "status": status, "reason": reason, "metrics": None, "stages": {}, "notes": []}


def _name(row: Mapping) -> str:
    tag = row["case_id"].rsplit("-", 1)[0]
    return f"{tag} *smoke*" if row.get("smoke") else tag


def _fmt(x: float | None, digits: int = 3) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def study_table(rows: Sequence[Mapping]) -> str:
    """`Model | Precision | Recall | F1-score | Accuracy`, plus interval, speed and stage columns."""
    from tabulate import tabulate

    costed = any(r.get("cost_usd") is not None for r in rows)
    body = []
    for r in rows:
        m = r["metrics"]
        stages = ", ".join(f"{k} {_share(v)}" for k, v in r["stages"].items())
        body.append([
            cell(_name(r)), _fmt(m["precision"]), _fmt(m["recall"]), _fmt(m["f1"]), _fmt(m["accuracy"]),
            f"{m['accuracy_ci'][0]:.3f}–{m['accuracy_ci'][1]:.3f}", m["n"], _fmt(r.get("images_per_s"), 1),
            cell(stages), r.get("errors", 0), *([_fmt(r.get("cost_usd"), 4)] if costed else []), cell(r["status"]),
        ])
    headers = (STUDY_COLUMNS + ["Accuracy 95% CI", "n", "img/s", "resolver stages", "errors"]
               + (["Cost (USD)"] if costed else []) + ["gate"])
    return tabulate(body, headers=headers, tablefmt="github", disable_numparse=True)


def _share(v: float) -> str:
    """A stage share in percent; a stage that decided a few samples out of thousands is not "0%"."""
    if 0 < v < 0.005:
        return "<1%"
    if 0.995 <= v < 1:
        return ">99%"
    return f"{v:.0%}"


def _context(group: Sequence[Mapping]) -> str:
    """The settings line above a table: every distinct value when merged runs differ."""
    parts, mixed = [], False
    for label, key, code in CONTEXT_KEYS:
        values = list(dict.fromkeys(str(r.get(key)) for r in group))
        mixed |= len(values) > 1
        parts.append(f"{label} " + ", ".join(f"`{cell(v)}`" if code else cell(v) for v in values))
    return ", ".join(parts) + (" (mixed settings: see results.json)" if mixed else "")


def render_markdown(rows: Sequence[Mapping], title: str = "vlmcls report") -> str:
    done = [r for r in rows if r.get("metrics")]
    other = [r for r in rows if not r.get("metrics")]
    parts = [f"# {title}", ""]
    for ways in sorted({r["ways"] for r in done}):
        group = [r for r in done if r["ways"] == ways]
        parts += [f"## {ways}-way", "", _context(group), "", study_table(group), ""]
    if any(r.get("smoke") for r in done):
        parts += [SMOKE_NOTE, ""]
    parts += _notes(done) + _others(other)
    return "\n".join(parts).rstrip() + "\n"


def _notes(rows: Sequence[Mapping]) -> list[str]:
    lines = []
    for r in rows:
        for text in ([r["stopped"]] if r.get("stopped") else []) + list(r.get("notes") or []):
            lines.append(f"- `{r['case_id']}`: {cell(text)}")
        if r.get("ambiguous") and r.get("labels") == "thesis":
            lines.append(f"- `{r['case_id']}`: {r['ambiguous']} predictions are ambiguous: they involve a class whose "
                         "thesis label is shared with another class, or an answer naming several candidates")
        elif r.get("ambiguous"):
            lines.append(f"- `{r['case_id']}`: {r['ambiguous']} answers named several candidates; the resolver did not guess")
        if r.get("errors"):
            first = f"; first: {cell(r['first_error'])}" if r.get("first_error") else ""
            lines.append(f"- `{r['case_id']}`: {r['errors']} error rows (bad image or failed request), "
                         f"counted as wrong predictions{first}")
        if r.get("cost_usd") is not None:
            lines.append(f"- `{r['case_id']}`: cost {r['cost_usd']:.4f} USD")
        if r.get("resumed"):
            lines.append(f"- `{r['case_id']}`: {r['resumed']} samples came from the result store (not recomputed; "
                         "images/s counts only the fresh ones)")
        if r.get("quant") == "int8" and r.get("device_kind") != "cpu":
            lines.append(f"- `{r['case_id']}`: on a GPU, bitsandbytes int8 (the study's setting) runs 4-6x slower "
                         "than bf16 (shared H200 reference); `--quant none` for speed")
        if r.get("trust_remote_code"):
            lines.append(f"- `{r['case_id']}`: ran the hub's remote code (--trust-remote-code)")
    return (["## Notes", ""] + lines + [""]) if lines else []


def _others(rows: Sequence[Mapping]) -> list[str]:
    if not rows:
        return []
    lines = ["## Not run", ""] + [f"- `{r['case_id']}` ({r['status']}): {_prose(r.get('reason'))}" for r in rows]
    return lines + [""]


def write_report(rows: Sequence[Mapping], out: str | Path, meta: Mapping[str, Any] | None = None) -> Path:
    out = Path(out)
    rows = sorted(rows, key=lambda r: (r["ways"], r["model"]))
    atomic_write(out / "report.md", render_markdown(rows))
    atomic_write(out / "results.json", json.dumps({"meta": dict(meta or {}), "cases": list(rows)}, indent=2, default=str))
    return out / "report.md"


def write_samples(path: str | Path, predictions: Iterable) -> None:
    """Per-sample JSONL: sample id, true label, candidates, raw answer, resolved label, stage, latency, tokens."""
    atomic_write(path, "".join(json.dumps(asdict(p), ensure_ascii=False) + "\n" for p in predictions))


def parse_table(markdown: str) -> list[dict[str, str]]:
    """Rows of the first markdown table in `markdown` (honours escaped pipes): for tests and tools."""
    import re

    lines = [l for l in markdown.splitlines() if l.startswith("|")]
    split = lambda l: [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", l.strip())[1:-1]]
    head = split(lines[0])
    return [dict(zip(head, split(l))) for l in lines[2:]]
