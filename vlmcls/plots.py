"""PNG plots of a run (matplotlib, imported inside the functions) and the report section embedding them.

Figures are built with the object API (`Figure`, no pyplot): no global backend switch in the
caller's process, no figure registry to leak. Labels are untrusted text: mathtext is turned off on
every text that can hold one (a label with `$` would otherwise be parsed as TeX, and a bad one
raises at draw time), usetex is off, and long labels are truncated.
"""
from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .report import cell
from .types import STAGES

PLOTS_DIR = "plots"
TOP_K = 10
MAX_LABEL = 40
# One colour per stage, so the same stage looks the same in every report.
STAGE_COLORS = {"match": "#2ca02c", "synonym": "#17becf", "nli": "#1f77b4", "constrained": "#9467bd",
                "direct": "#8c564b", "unresolved": "#7f7f7f", "error": "#d62728"}


def _get(pred: Any, key: str) -> Any:
    return pred.get(key) if isinstance(pred, Mapping) else getattr(pred, key)


def _tag(row: Mapping) -> str:
    """The model part of a case id (`qwen2-vl-2b-int8`), so quantizations plot as separate lines."""
    return str(row["case_id"]).rsplit("-", 1)[0]


def _smoke(text: str, row: Mapping) -> str:
    return f"{text} (smoke)" if row.get("smoke") else text


def short(text: Any, limit: int = MAX_LABEL) -> str:
    """One line, at most `limit` characters: a label must not take over a figure."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def file_name(case_id: str) -> str:
    """A case id as a safe file name (a user's catalog may name a model anything)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", case_id).lstrip(".") or "case"


# ---------------------------------------------------------------------------------- data
def top_confusions(preds: Iterable[Any], k: int = TOP_K) -> list[tuple[str, str, int]]:
    """The k most frequent (true label, predicted label, count) among resolved wrong predictions.

    Keyed by class ids, not labels: in thesis label mode two classes share "crane", and
    "crane → crane" is then exactly the confusion worth seeing."""
    counts: Counter = Counter()
    names: dict[tuple, tuple[str, str]] = {}
    for p in preds:
        true, pred = _get(p, "true_id"), _get(p, "pred_id")
        if pred is None or pred == true:
            continue
        counts[(true, pred)] += 1
        names.setdefault((true, pred), (str(_get(p, "true_label")), str(_get(p, "pred_label") or pred)))
    return [(*names[key], n) for key, n in counts.most_common(k)]


def case_confusions(rows: Sequence[Mapping], run_dir: Path, k: int = TOP_K) -> dict[str, list[tuple[str, str, int]]]:
    """case_id -> top confusions, for the cases whose samples file is in `run_dir/samples`."""
    from .compare import Run

    run = Run(Path(run_dir), {}, list(rows))
    out = {}
    for r in rows:
        preds = run.predictions(r["case_id"]) if r.get("metrics") else None
        if preds is not None:
            out[r["case_id"]] = top_confusions(preds, k)
    return out


# ---------------------------------------------------------------------------------- figures
def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _plain(texts: Iterable[Any]) -> None:
    for t in texts:
        t.set_parse_math(False)


def _save(fig, path: Path) -> Path:
    """PNG via a temp file + os.replace, like report.atomic_write: never half an image."""
    import matplotlib

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with matplotlib.rc_context({"text.usetex": False}):
        fig.savefig(tmp, format="png", dpi=110)
    os.replace(tmp, path)
    return path


def accuracy_vs_n(rows: Sequence[Mapping], path: str | Path) -> Path | None:
    """Accuracy against N per model, 95% intervals as error bars, study references hollow, log x."""
    done = [r for r in rows if r.get("metrics") and r.get("ways")]
    if not done:
        return None
    fig = _figure(7.5, 4.8)
    ax = fig.add_subplot()
    models: dict[str, list[Mapping]] = {}
    for r in sorted(done, key=lambda r: r["ways"]):
        models.setdefault(_tag(r), []).append(r)
    for i, group in enumerate(models.values()):
        _model_line(ax, group, f"C{i % 10}")
    ways = sorted({r["ways"] for r in done})
    ax.plot(ways, [1 / w for w in ways], ":", color="gray", label="chance (1/N)")
    if any(r.get("reference") is not None for r in done):
        ax.plot([], [], "o", markerfacecolor="none", markeredgecolor="black", label="study (hollow)")
    _accuracy_axes(ax, ways)
    return _save(fig, Path(path))


def _model_line(ax, group: Sequence[Mapping], color: str) -> None:
    xs = [r["ways"] for r in group]
    ys = [r["metrics"]["accuracy"] for r in group]
    lo = [max(0.0, y - r["metrics"]["accuracy_ci"][0]) for y, r in zip(ys, group)]
    hi = [max(0.0, r["metrics"]["accuracy_ci"][1] - y) for y, r in zip(ys, group)]
    ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, color=color, label=_smoke(_tag(group[0]), group[0]))
    refs = [(r["ways"], r["reference"]) for r in group if r.get("reference") is not None]
    if refs:
        ax.plot(*zip(*refs), "o", markersize=10, markerfacecolor="none", markeredgecolor=color, markeredgewidth=1.5)


def _accuracy_axes(ax, ways: Sequence[int]) -> None:
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log")
    ax.set_xticks(ways, labels=[str(w) for w in ways])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("N (candidates per image)")
    ax.set_ylabel("accuracy")
    ax.set_title("Accuracy against N (95% intervals)")
    ax.grid(alpha=0.3)
    _plain(ax.legend(fontsize=8, loc="best").get_texts())


def stage_shares(rows: Sequence[Mapping], path: str | Path) -> Path | None:
    """Each resolver stage's share of the samples, one stacked bar per case."""
    done = [r for r in rows if r.get("metrics")]
    if not done:
        return None
    seen = {s for r in done for s, v in (r.get("stages") or {}).items() if v}
    stages = [s for s in STAGES if s in seen] + sorted(seen - set(STAGES))
    fig = _figure(max(5.0, 0.6 * len(done) + 3), 4.8)
    ax = fig.add_subplot()
    bottom = [0.0] * len(done)
    for s in stages:
        shares = [float((r.get("stages") or {}).get(s, 0.0)) for r in done]
        ax.bar(range(len(done)), shares, bottom=bottom, label=s, color=STAGE_COLORS.get(s))
        bottom = [b + v for b, v in zip(bottom, shares)]
    ax.set_xticks(range(len(done)), labels=[short(_smoke(r["case_id"], r)) for r in done],
                  rotation=35, ha="right", parse_math=False)
    ax.set_ylim(0, 1.0)
    ax.set_ylabel("share of samples")
    ax.set_title("Which resolver stage decided")
    _plain(ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0)).get_texts())
    return _save(fig, Path(path))


def confusion_chart(title: str, pairs: Sequence[tuple[str, str, int]], path: str | Path) -> Path | None:
    """Horizontal bars of the most frequent (true → predicted) pairs, the most frequent on top."""
    from matplotlib.ticker import MaxNLocator

    if not pairs:
        return None
    fig = _figure(7.5, 1.4 + 0.32 * len(pairs))
    ax = fig.add_subplot()
    ax.barh(range(len(pairs)), [n for _, _, n in pairs], color="#d62728")
    ax.set_yticks(range(len(pairs)), labels=[f"{short(t)} → {short(p)}" for t, p, _ in pairs], fontsize=8,
                  parse_math=False)
    ax.invert_yaxis()
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("samples")
    ax.set_title(short(title, 80), parse_math=False)
    return _save(fig, Path(path))


def write_plots(rows: Sequence[Mapping], out: str | Path, k: int = TOP_K,
                confusions: Mapping[str, Sequence] | None = None) -> dict[str, Path]:
    """All plots of a run under `out/plots/`; returns {what: path} for those that had data.

    Keys: "accuracy", "stages", and "confusions:<case_id>" per case with a samples file."""
    out = Path(out)
    plots = out / PLOTS_DIR
    written = {"accuracy": accuracy_vs_n(rows, plots / "accuracy_vs_n.png"),
               "stages": stage_shares(rows, plots / "resolver_stages.png")}
    if confusions is None:
        confusions = case_confusions(rows, out, k)
    smoke = {r["case_id"] for r in rows if r.get("smoke")}
    for case_id, pairs in confusions.items():
        title = f"Most frequent confusions: {case_id}{' (smoke)' if case_id in smoke else ''}"
        written[f"confusions:{case_id}"] = confusion_chart(title, pairs, plots / f"confusions-{file_name(case_id)}.png")
    return {key: path for key, path in written.items() if path is not None}


# ---------------------------------------------------------------------------------- markdown
def report_section(rows: Sequence[Mapping], out: str | Path, draw: bool = True, k: int = TOP_K) -> str:
    """Markdown: the plots (relative links, when `draw`) and a confusion table per case."""
    out = Path(out)
    confusions = case_confusions(rows, out, k)
    missing = draw and not _have_matplotlib()
    paths = write_plots(rows, out, k, confusions) if draw and not missing else {}

    def link(key: str, alt: str) -> str:  # relative, so the report folder can be moved or served as is
        return f"![{alt}]({paths[key].relative_to(out).as_posix()})" if key in paths else ""

    parts = []
    if missing:
        parts += ["## Plots", "", "Not drawn: matplotlib is not installed (pip install 'vlmcls[plots]').", ""]
    if "accuracy" in paths or "stages" in paths:
        parts += ["## Plots", "", link("accuracy", "accuracy vs N"), "", link("stages", "resolver stages"), ""]
    if confusions:
        parts += ["## Most frequent confusions", ""]
    for case_id, pairs in confusions.items():
        parts += [f"### {cell(case_id)}", "", link(f"confusions:{case_id}", f"confusions {file_name(case_id)}"), "",
                  confusion_table(pairs), ""]
    return "\n".join(parts)


def _have_matplotlib() -> bool:
    """matplotlib is an optional extra: without it the report loses its pictures, not its tables."""
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def confusion_table(pairs: Sequence[tuple[str, str, int]]) -> str:
    from tabulate import tabulate

    if not pairs:
        return "No confusion among the resolved answers."
    body = [[cell(t), cell(p), str(n)] for t, p, n in pairs]
    return tabulate(body, headers=["True label", "Predicted label", "Count"], tablefmt="github", disable_numparse=True)
