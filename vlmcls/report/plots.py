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

from ..types import STAGES
from .markdown import model_tag
from .stats import MIN_PAIR, RUN_TOP_K, TOP_K, run_confusions, top_confusions  # noqa: F401 (top_confusions: the old home)
from .text import cell

PLOTS_DIR = "plots"
MAX_LABEL = 40
# One colour per stage, so the same stage looks the same in every report.
SETTING_KEYS = ("dataset", "seed", "prompt", "labels", "resolver", "layout", "nli_model", "label_names")
STAGE_COLORS = {"match": "#2ca02c", "synonym": "#17becf", "nli": "#1f77b4", "constrained": "#9467bd",
                "direct": "#8c564b", "unresolved": "#7f7f7f", "error": "#d62728"}


def _smoke(text: str, row: Mapping) -> str:
    return f"{text} (smoke)" if row.get("smoke") else text


def short(text: Any, limit: int = MAX_LABEL) -> str:
    """One line, at most `limit` characters: a label must not take over a figure."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def file_name(case_id: str) -> str:
    """A case id as a safe file name (a user's catalog may name a model anything)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", case_id).lstrip(".") or "case"


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
    models: dict[tuple, list[Mapping]] = {}
    for r in sorted(done, key=lambda r: r["ways"]):
        models.setdefault((model_tag(r), _setting(r)), []).append(r)
    variants = Counter(tag for tag, _ in models)
    for i, ((tag, setting), group) in enumerate(models.items()):
        # merged runs with other settings: one line each, never one line joining both
        label = f"{tag} [{_setting_label(group[0], [g[0] for (t, _), g in models.items() if t == tag])}]" if variants[tag] > 1 else None
        _model_line(ax, group, f"C{i % 10}", label)
    ways = sorted({r["ways"] for r in done})
    # Drawn above the data (zorder) in black: smoke models sit exactly on it and used to hide it.
    ax.plot(ways, [1 / w for w in ways], "--", color="black", linewidth=1.6, alpha=0.8, zorder=5, label="chance (1/N)")
    for w in ways:
        ax.annotate(f"1/{w}", (w, 1 / w), textcoords="offset points", xytext=(4, 4), fontsize=7, zorder=5)
    if any(r.get("reference") is not None for r in done):
        ax.plot([], [], "o", markerfacecolor="none", markeredgecolor="black", label="study (hollow)")
    _accuracy_axes(ax, ways)
    return _save(fig, Path(path))


def _setting(row: Mapping) -> tuple:
    return tuple(str(row.get(k)) for k in SETTING_KEYS)


def _setting_label(row: Mapping, siblings: Sequence[Mapping]) -> str:
    """The settings in which this line differs from the other lines of the same model."""
    differ = [k for k in SETTING_KEYS if len({str(s.get(k)) for s in siblings}) > 1]
    return ", ".join(f"{k} {row.get(k)}" for k in differ)


def _model_line(ax, group: Sequence[Mapping], color: str, label: str | None = None) -> None:
    xs = [r["ways"] for r in group]
    ys = [r["metrics"]["accuracy"] for r in group]
    lo = [max(0.0, y - r["metrics"]["accuracy_ci"][0]) for y, r in zip(ys, group)]
    hi = [max(0.0, r["metrics"]["accuracy_ci"][1] - y) for y, r in zip(ys, group)]
    ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, color=color, label=_smoke(label or model_tag(group[0]), group[0]))
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


def write_plots(rows: Sequence[Mapping], out: str | Path, k: int = RUN_TOP_K,
                confusions: Sequence[tuple] | None = None) -> dict[str, Path]:
    """The plots of a run that carry something, under `out/plots/`; returns {what: path}.

    "accuracy" whenever a case has metrics; "stages" only when more than one resolver stage decided
    (a bar that is 100% `match` in every case says nothing a sentence could not); "confusions" only
    when some pair occurred at least twice across the run."""
    out = Path(out)
    plots = out / PLOTS_DIR
    written = {"accuracy": accuracy_vs_n(rows, plots / "accuracy_vs_n.png")}
    if len(used_stages(rows)) > 1:
        written["stages"] = stage_shares(rows, plots / "resolver_stages.png")
    if confusions is None:
        confusions = run_confusions(rows, out, k)
    pairs = [(t, p, n) for t, p, n, _ in confusions]
    written["confusions"] = confusion_chart("Most frequent confusions, summed over the run's cases", pairs,
                                            plots / "confusions.png")
    written["reliability"] = reliability_diagram(rows, plots / "reliability.png")  # cases with scores only
    return {key: path for key, path in written.items() if path is not None}


def used_stages(rows: Sequence[Mapping]) -> set[str]:
    return {s for r in rows if r.get("metrics") for s, v in (r.get("stages") or {}).items() if v}


# ---------------------------------------------------------------------------------- markdown
def report_section(rows: Sequence[Mapping], out: str | Path, draw: bool = True, k: int = RUN_TOP_K) -> str:
    """Markdown: the plots that carry something (relative links, when `draw`) and one confusion table
    of the pairs seen at least twice across the run."""
    out = Path(out)
    confusions = run_confusions(rows, out, k)
    missing = draw and not _have_matplotlib()
    paths = write_plots(rows, out, k, confusions) if draw and not missing else {}

    def link(key: str, alt: str) -> str:  # relative, so the report folder can be moved or served as is
        return f"![{alt}]({paths[key].relative_to(out).as_posix()})" if key in paths else ""

    parts = []
    if missing:
        parts += ["## Plots", "", "Not drawn: matplotlib is not installed (pip install 'vlmcls[plots]').", ""]
    if "accuracy" in paths:
        parts += ["## Plots", "", link("accuracy", "accuracy vs N"), "", link("stages", "resolver stages"), "",
                  link("reliability", "reliability diagram (calibration)"), ""]
        stages = used_stages(rows)
        if len(stages) == 1:
            parts += [f"Every answer was decided by the `{cell(next(iter(stages)))}` stage (no stage plot).", ""]
    if any(r.get("metrics") for r in rows):
        parts += ["## Most frequent confusions", "", "Pairs summed over the run's cases (each case's own count beside it; "
                  "per-class precision, recall and F1 of each case are in `per_class/<case>.json`).", "",
                  link("confusions", "confusions (all cases)"), "", confusion_table(confusions), ""]
    parts.append(order_section(rows, out, draw and not missing))  # --orders K > 1 only
    return re.sub(r"\n{3,}", "\n\n", "\n".join(parts))  # a plot not drawn leaves no blank run


def _have_matplotlib() -> bool:
    """matplotlib is an optional extra: without it the report loses its pictures, not its tables."""
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def confusion_table(pairs: Sequence[tuple]) -> str:
    """(true, predicted, count[, case ids]) rows as one markdown table."""
    from tabulate import tabulate

    if not pairs:
        return f"No (true, predicted) pair occurred {MIN_PAIR} times or more across the run."
    body = [[cell(p[0]), cell(p[1]), str(p[2]), cell(_cases(p[3]) if len(p) > 3 else "")] for p in pairs]
    return tabulate(body, headers=["True label", "Predicted label", "Count (all cases)", "Cases (their count)"],
                    tablefmt="github", disable_numparse=True)


def _cases(counts: Sequence[tuple[str, int]], shown: int = 4) -> str:
    more = f" and {len(counts) - shown} more" if len(counts) > shown else ""
    return ", ".join(f"{case} ({n})" for case, n in counts[:shown]) + more


# ---------------------------------------------------------------------------------- candidate order
def position_accuracy_chart(title: str, o: Mapping, path: str | Path) -> Path | None:
    """Accuracy by the decile of the true label's position in the list (--orders), chance as a line."""
    from .. import orders

    if not o.get("images"):
        return None
    fig = _figure(7.0, 4.0)
    ax = fig.add_subplot()
    xs = range(len(o["bin_sizes"]))
    ax.bar(xs, [a or 0.0 for a in o["position_accuracy"]], color="#1f77b4")
    ax.axhline(1 / o["ways"], color="black", linestyle="--", linewidth=1, label=f"chance (1/{o['ways']})")
    ax.set_xticks(xs, labels=orders.position_edges(o["bin_sizes"]), rotation=30, fontsize=8)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("position of the true label in the list")
    ax.set_ylabel("accuracy")
    ax.set_title(short(title, 80), parse_math=False)
    _plain(ax.legend(fontsize=8).get_texts())
    return _save(fig, Path(path))


def picked_position_chart(title: str, o: Mapping, path: str | Path) -> Path | None:
    """How often the answer named a candidate in each decile of the list, against the uniform expectation."""
    from .. import orders

    if not sum(o.get("picked") or ()):
        return None
    fig = _figure(7.0, 4.0)
    ax = fig.add_subplot()
    xs = range(len(o["bin_sizes"]))
    ax.bar(xs, o["picked"], color="#ff7f0e", label="picked")
    ax.plot(xs, o["expected"], "k_", markersize=22, markeredgewidth=2, label="expected if position did not matter")
    ax.set_xticks(xs, labels=orders.position_edges(o["bin_sizes"]), rotation=30, fontsize=8)
    ax.set_xlabel("position of the picked candidate in the list")
    ax.set_ylabel("answers")
    p = o.get("p_value")
    test = "permutation" if o.get("p_test") == "permutation" else "chi-square"
    ax.set_title(short(title, 60) + ("" if p is None else f" ({test} p = {p:.3g})"), parse_math=False)
    _plain(ax.legend(fontsize=8).get_texts())
    return _save(fig, Path(path))


def order_section(rows: Sequence[Mapping], out: str | Path, draw: bool = True) -> str:
    """Markdown: the two --orders plots of each case that asked K > 1 orders (the statistics are in
    report.order_section), drawn from the row alone so a merged or re-rendered run draws them too."""
    cases = [r for r in rows if r.get("orders") and r.get("metrics")]
    if not cases or not draw or not _have_matplotlib():
        return ""
    out = Path(out)
    parts = ["## Candidate order plots", ""]
    for r in cases:
        name, tag = file_name(str(r["case_id"])), _smoke(str(r["case_id"]), r)
        drawn = [position_accuracy_chart(f"{tag}: accuracy by position", r["orders"], out / PLOTS_DIR / "orders" / f"{name}-position-accuracy.png"),
                 picked_position_chart(f"{tag}: picked positions", r["orders"], out / PLOTS_DIR / "orders" / f"{name}-picked-position.png")]
        links = [f"![{cell(tag)} {what}]({p.relative_to(out).as_posix()})"
                 for p, what in zip(drawn, ("accuracy by position", "picked positions")) if p is not None]
        if links:
            parts += [f"### `{cell(r['case_id'])}`", "", *links, ""]
    return "\n".join(parts) if len(parts) > 2 else ""


def reliability_diagram(rows: Sequence[Mapping], path: str | Path) -> Path | None:
    """Accuracy against confidence per bin (results.json's `calibration.reliability`) for each case with
    scores, against the diagonal of perfect calibration, as calibration practice draws it (Guo et al.
    2017; scikit-learn's CalibrationDisplay): one point per non-empty bin, its area and a label giving the
    samples it holds, no line joining the bins (a 1-sample bin is a 0 or a 1, and a line through it
    reads as a trend); below, the samples per bin. ECE and n in the legend. None without scores."""
    scored = [r for r in rows if r.get("calibration")]
    if not scored:
        return None
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    fig = _figure(6.0, 6.4)
    ax, hist = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    ax.plot([0, 1], [0, 1], color="#999999", linestyle="--", linewidth=1)
    largest = max((b["n"] for r in scored for b in r["calibration"]["reliability"]), default=1) or 1
    handles = []
    for i, r in enumerate(scored):
        c, color = r["calibration"], f"C{i % 10}"
        bins = [b for b in c["reliability"] if b["n"]]
        ax.scatter([b["confidence"] for b in bins], [b["accuracy"] for b in bins], s=[_area(b["n"], largest) for b in bins],
                   color=color, alpha=0.7, edgecolors="black", linewidths=0.5, zorder=3)
        for b in bins:  # beside the disc (its radius in points), not over it
            ax.annotate(str(b["n"]), (b["confidence"], b["accuracy"]), textcoords="offset points",
                        xytext=((_area(b["n"], largest) / 3.14159) ** 0.5 + 2, -3), fontsize=7, color=color)
        edges = [b["low"] for b in c["reliability"]] + [c["reliability"][-1]["high"]]
        hist.stairs([b["n"] for b in c["reliability"]], edges, color=color, linewidth=1.5,
                    fill=len(scored) == 1, alpha=0.6 if len(scored) == 1 else 1.0)
        noise = f", noise ~{c['ece_noise']:.3f}" if c.get("ece_noise") is not None else ""
        handles.append(Line2D([], [], marker="o", linestyle="none", color=color,
                              label=f"{short(_smoke(r['case_id'], r))} (n={c['n']}, ECE {c['ece']:.3f}{noise})"))
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability ({scored[0]['calibration']['bins']} equal-width bins; label: samples in the bin)", fontsize=10)
    _plain(ax.legend(handles=handles, fontsize=7, loc="upper left").get_texts())
    hist.set_xlabel("confidence (top candidate's probability)")
    hist.set_ylabel("samples")
    hist.yaxis.set_major_locator(MaxNLocator(integer=True))
    return _save(fig, Path(path))


def _area(n: int, largest: int) -> float:
    """Marker area (points^2) growing with the bin's samples: 1 sample a dot, the fullest bin a disc."""
    return 12 + 228 * n / largest
