"""Case rows -> markdown: the tables in the study's shape, notes, calibration, candidate order.

Every cell goes through `text.cell`: model answers are untrusted text.
"""
from __future__ import annotations

import math
import re
from typing import Mapping, Sequence

from ..backends.registry import find
from .rows import INPUT_ERRORS_LISTED
from ..vocab import STUDY_LABELS, canonical
from .text import cell, plain, plural, prose, usd

STUDY_COLUMNS = ["Model", "Precision", "Recall", "F1-score", "Accuracy"]
CONTEXT_KEYS = (("dataset", "dataset", True), ("seed", "seed", False), ("prompt", "prompt", True),
                ("labels", "labels", True), ("label names", "label_names", True), ("resolver", "resolver", True),
                ("layout", "layout", True))
OPTIONAL_CONTEXT = {"label_names"}  # said only where some row has it (a digest of names a user can change)
MACRO_NOTE = ("Precision, recall and F1 are macro averages over the classes present among the subset's true labels "
              "(a class never shown does not count), so on a few classes they can sit far from the accuracy.")
# The other `--average` conventions (metrics.py); the table's "P/R/F1 average" column names each row's.
AVERAGE_NOTES = {
    "present": MACRO_NOTE,
    "union": ("*union*: precision, recall and F1 are scikit-learn's default macro average, over the classes among the "
              "true or the predicted labels (a class predicted but never true counts as 0)."),
    "weighted": ("*weighted*: precision, recall and F1 are scikit-learn's weighted average (each class weighted by its "
                 "support among the true labels), so recall equals accuracy."),
}
CALIBRATION_NOTE = ("Cases whose backend scores every candidate (`--resolver rank`, CLIP, classifiers): confidence is "
                    "the top candidate's softmax probability over the candidates; ECE is the expected calibration "
                    "error over 15 equal-width confidence bins. API backends: OpenAI's first-token logprobs rank the "
                    "candidates where that token identifies them (top-5 may list fewer); Anthropic's API has no "
                    "scores.")
SMOKE_NOTE = ("*smoke* marks a random-weight model (or a scripted stand-in): its accuracy is chance "
              "in expectation (it knows no class; on few images about 1 case in 20 has an interval that misses "
              "chance by luck alone) and measures only that the pipeline runs, so its gate checks just that: "
              "every sample answered, no error row but an unreadable image's (the data's fault, not the pipeline's; a "
              "*passed* beside 0.000 is no contradiction).")
SMOKE_GATED_NOTE = ("A *smoke* entry whose catalog sets `thresholds` is held to that accuracy gate as well (a "
                    "rehearsal of a CI gate): its *failed* says only that the stand-in scored below it.")
SIMULATED_NOTE = ("A *smoke* API model's cost is simulated: a scripted stand-in answered, its token counts priced at "
                  "the catalog's rates; no money was spent.")


def model_tag(row: Mapping) -> str:
    """The model part of the case id (`qwen2-vl-2b-int8`): stored in the row; split off the id for older runs."""
    return row.get("tag") or str(row["case_id"]).rsplit("-", 1)[0]


def _name(row: Mapping) -> str:
    tag = model_tag(row)
    return f"{tag} *smoke*" if row.get("smoke") else tag


def _fmt(x: float | None, digits: int = 3) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def smoke_note(rows: Sequence[Mapping]) -> str:
    """What *smoke* rows' figures mean (only that the pipeline runs), to say before them; "" without one."""
    if not any(r.get("smoke") for r in rows):
        return ""
    costed = any(r.get("smoke") and r.get("cost_usd") is not None for r in rows)
    gated = any(r.get("smoke") and r.get("threshold") for r in rows)
    return SMOKE_NOTE + (" " + SMOKE_GATED_NOTE if gated else "") + (" " + SIMULATED_NOTE if costed else "")


def study_table(rows: Sequence[Mapping], terminal: bool = False, compact: bool = False) -> str:
    """`Model | Precision | Recall | F1-score | Accuracy`, plus interval, speed and stage columns.
    `terminal`: cells as a terminal prints them (no HTML entities), so the columns line up there.
    `compact` (the terminal under -qq): model, accuracy, its interval, n, errors and the gate only."""
    from tabulate import tabulate

    esc = plain if terminal else cell
    if compact:
        body = [[esc(_name(r)), _fmt(r["metrics"]["accuracy"]), _interval(r["metrics"]), r["metrics"]["n"],
                 r.get("errors", 0), esc(gate_cell(r))] for r in rows]
        return tabulate(body, headers=["Model", "Accuracy", "Accuracy 95% CI", "n", "errors", "gate"],
                        tablefmt="github", disable_numparse=True)
    costed = any(r.get("cost_usd") is not None for r in rows)
    timed = any(r.get("resolver_s") for r in rows)
    ranked = any(r.get("calibration") for r in rows)
    body = []
    for r in rows:
        m = r["metrics"]
        stages = ", ".join(f"{k} {_share(v)}" for k, v in r["stages"].items())
        body.append([
            esc(_name(r)), _fmt(m["precision"]), _fmt(m["recall"]), _fmt(m["f1"]), _fmt(m["accuracy"]),
            esc(m.get("average", "present")), _interval(m), m["n"], _fmt(r.get("images_per_s"), 1),
            esc(stages), *([esc(_resolver_time(r))] if timed else []),
            *(_calibration_cells(r) if ranked else []), r.get("errors", 0),
            *([_cost_cell(r)] if costed else []), esc(gate_cell(r)),
        ])
    headers = (STUDY_COLUMNS + ["P/R/F1 average", "Accuracy 95% CI", "n", "img/s", "resolver stages"] + (["resolver time"] if timed else [])
               + (["Top-5 accuracy", "ECE"] if ranked else []) + ["errors"] + (["Cost (USD)"] if costed else []) + ["gate"])
    return tabulate(body, headers=headers, tablefmt="github", disable_numparse=True)


def _interval(m: Mapping) -> str:
    return f"{m['accuracy_ci'][0]:.3f}–{m['accuracy_ci'][1]:.3f}"


def gate_cell(row: Mapping) -> str:
    """The verdict and what it was judged against, so a published table says why a case passed:
    `passed (gate 0.72)`, a smoke model's `passed (plumbing)`, or `no gate` (no threshold at that N). A
    failed case's reasons are listed under Gate failures (a baseline can fail a case its gate passed)."""
    status, threshold = row["status"], row.get("threshold")
    if status not in ("passed", "failed") or threshold is None:
        return status
    if row.get("smoke") and not threshold:  # failed: the plumbing, or a baseline (Gate failures says which)
        return "passed (plumbing)" if status == "passed" else status
    return f"{status} (gate {threshold:g})"


def gate_section(rows: Sequence[Mapping]) -> list[str]:
    """Each failed case's reasons, as the CI log gave them: the table says only *failed*."""
    failed = [r for r in rows if r.get("status") == "failed" and r.get("reason")]
    if not failed:
        return []
    return ["## Gate failures", "", *[f"- {cell(r['reason'])}" for r in failed], ""]


def gate_notes(rows: Sequence[Mapping]) -> list[str]:
    """Gates that check nothing: a case with no threshold at its N (it passes whatever it scores), and a
    threshold that no result could fail at the case's n, since even 0 right leaves the exact interval's
    upper bound 1 - 0.025^(1/n) above it (0.088 at n = 40: a gate of 0.05 needs n >= 72)."""
    lines = []
    ungated = [r["case_id"] for r in rows if r.get("status") == "no gate"]
    if ungated:
        lines.append(f"- {plural(len(ungated), 'case')} with no accuracy gate (no threshold at its N: it passes whatever it "
                     f"scores, unless every sample fails): {', '.join(f'`{cell(c)}`' for c in ungated)}; set "
                     "`thresholds = { N = accuracy }` in the catalog entry to gate it")
    for r in rows:
        t, n = r.get("threshold"), (r.get("metrics") or {}).get("n")
        if t and n and 1 - 0.025 ** (1 / n) >= t:
            need = math.floor(math.log(0.025) / math.log(1 - t)) + 1
            lines.append(f"- `{cell(r['case_id'])}`: at n={n} its gate {t:g} cannot fail (0 of {n} right still has a 95% "
                         f"upper bound of {1 - 0.025 ** (1 / n):.3f}); it needs n ≥ {need}"
                         + (f", more than the {r['dataset_images']} images of its dataset: a higher gate or more images"
                            if r.get("dataset_images") is not None and need > r["dataset_images"] else " (`--samples`)"))
    return lines


def _cost_cell(row: Mapping) -> str:
    """USD over every answer the case paid for (all its --orders); a stand-in's cost is not money."""
    cost = "" if row.get("cost_usd") is None else usd(row["cost_usd"])
    return f"{cost} (simulated)" if cost and row.get("smoke") else cost


def _calibration_cells(row: Mapping) -> list[str]:
    """Top-5 and ECE cover the scored rows only (an API answer without usable logprobs has no ranking):
    where that is fewer than the n column, the cells say over how many (`0.824 (of 17)`)."""
    c = row.get("calibration") or {}
    top5, ece = _top5(row, c), _fmt(c.get("ece"))
    scored, n = c.get("n"), (row.get("metrics") or {}).get("n")
    if scored is not None and n is not None and scored < n:
        of = f" (of {scored})"
        top5, ece = (top5 + of if top5 and not top5.startswith("n/a") else top5), (ece + of if ece else ece)
    return [top5, ece]


def _top5(row: Mapping, c: Mapping) -> str:
    """Top-5 accuracy, except at N <= 5, where all the candidates are the top 5 and it is 1 by
    construction (a 1.000 there read as a result)."""
    if c.get("top5_accuracy") is not None and row["ways"] <= 5:
        return "n/a (N ≤ 5)"
    return _fmt(c.get("top5_accuracy"))


def chance_line(ways: int, ranked: bool) -> str:
    """What guessing scores at N-way, beside the table: at small N a figure means little without it."""
    top5 = f", top-5 {5 / ways:.3f}" if ranked and ways > 5 else ""
    return f"Chance at {ways}-way (a uniform guess among the candidates): accuracy {1 / ways:.3f}{top5}."


NOISE_SHOWN = 0.01  # a case's ECE noise floor from which the Calibration section spells it out ("small n")
NOISE_NOTE = ("ECE over {bins} bins is biased upward on few samples: a bin's accuracy is a proportion of a handful of "
              "samples, so even a perfectly calibrated model shows a positive ECE. Where that floor is {shown} or more, "
              "the case's line gives it, computed with the case's own confidences: the mean ECE of {draws} simulated "
              "perfectly calibrated runs (each sample right with probability equal to its confidence; seeded), and the "
              "95th percentile of those runs. An ECE within that range does not by itself show miscalibration; the "
              "bins' `n` says how far each row of a table can be trusted.")


def calibration_section(rows: Sequence[Mapping]) -> list[str]:
    """Accuracy against confidence (the top candidate's probability over the candidates), per case with
    scores; the bins that hold no sample are left out. A case whose ECE noise floor (`ece_noise`, results
    written before it have none) reaches NOISE_SHOWN gets it beside its ECE, and the section a note on why."""
    from tabulate import tabulate

    lines, noisy = [], None
    for r in rows:
        c = r.get("calibration")
        if not c:
            continue
        body = [[f"{b['low']:.2f}–{b['high']:.2f}", b["n"], _fmt(b["confidence"]), _fmt(b["accuracy"])]
                for b in c["reliability"] if b["n"]]
        n = (r.get("metrics") or {}).get("n")
        of = f" of {n}" if n is not None and n > c["n"] else ""
        lines += [f"`{cell(r['case_id'])}`: {c['n']}{of} samples scored, top-1 {_fmt(c['top1_accuracy'])}, "
                  f"top-5 {_top5(r, c)}, mean confidence {_fmt(c['mean_confidence'])}, "
                  f"ECE ({c['bins']} bins) {_fmt(c['ece'])}" + _noise(c), "",
                  tabulate(body, headers=["confidence", "n", "mean confidence", "accuracy"], tablefmt="github",
                           disable_numparse=True), ""]
        if (c.get("ece_noise") or 0) >= NOISE_SHOWN:
            noisy = noisy or c
    if not lines:
        return []
    note = [NOISE_NOTE.format(bins=noisy["bins"], shown=NOISE_SHOWN, draws=noisy.get("ece_noise_draws", "several hundred")),
            ""] if noisy else []
    return ["## Calibration", "", CALIBRATION_NOTE, "", *note] + lines


def _noise(c: Mapping) -> str:
    """`; a perfectly calibrated model would show ~0.120 on these 20 samples by sampling noise alone (95% of
    simulated runs ≤ 0.190); this ECE ...`, where that floor is material (NOISE_SHOWN)."""
    floor, p95, ece = c.get("ece_noise"), c.get("ece_noise_p95"), c.get("ece")
    if floor is None or floor < NOISE_SHOWN:
        return ""
    text = f"; a perfectly calibrated model would show ~{floor:.3f} on these {c['n']} samples by sampling noise alone"
    if p95 is None or ece is None:
        return text
    verdict = "this ECE alone does not show miscalibration" if ece <= p95 else "this ECE is more than sampling noise"
    return f"{text} (95% of simulated runs ≤ {p95:.3f}); {verdict}"


def _resolver_time(row: Mapping) -> str:
    """Seconds per resolver stage over the case's fresh samples, and the NLI model's share of their
    wall time: what the fallback costs ("match 12 ms, nli 2.10 s (NLI 35% of wall)")."""
    secs = row.get("resolver_s") or {}
    text = ", ".join(f"{k} {_duration(v)}" for k, v in secs.items())
    if secs.get("nli") and row.get("wall_s"):
        text += f" (NLI {_share(secs['nli'] / row['wall_s'])} of wall)"
    return text


def _duration(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    ms = round(seconds * 1000)  # one rendering below a millisecond: 0.5 ms would print "0 ms" otherwise
    return f"{ms} ms" if ms >= 1 else "<1 ms"


def _share(v: float) -> str:
    """A stage share in percent; a stage that decided a few samples out of thousands is not "0%"."""
    text = f"{v:.0%}"  # rounds half to even: 0.005 (1 of 200) would print "0%"
    if v > 0 and text == "0%":
        return "<1%"
    if v < 1 and text == "100%":
        return ">99%"
    return text


def _context(group: Sequence[Mapping]) -> str:
    """The settings line above a table: every distinct value when merged runs differ."""
    parts, mixed = [], False
    for label, key, code in CONTEXT_KEYS:
        # an optional key: rows written before it existed say nothing of it (not "None", not a difference)
        values = list(dict.fromkeys(str(r.get(key)) for r in group if key not in OPTIONAL_CONTEXT or key in r))
        if key in OPTIONAL_CONTEXT and values in ([], ["None"]):
            continue
        mixed |= len(values) > 1
        parts.append(f"{label} " + ", ".join(f"`{cell(v)}`" if code else cell(v) for v in values)
                     + (_constrained(group) if key == "resolver" else ""))
    return ", ".join(parts) + (" (mixed settings: see results.json)" if mixed else "")


def _constrained(group: Sequence[Mapping]) -> str:
    """The models whose catalog entry (or --api-constrained) decodes only candidate names: the resolver named
    above decides their answers only where constrained decoding leaves a tie (their stages column says so)."""
    tags = [str(r.get("tag")) for r in group
            if (r.get("settings") or {}).get("constrained") and r.get("resolver") != "constrained"]
    return f" (constrained decoding for {', '.join(cell(t) for t in tags)})" if tags else ""


def render_markdown(rows: Sequence[Mapping], title: str = "vlmcls report") -> str:
    done = [r for r in rows if r.get("metrics")]
    other = [r for r in rows if not r.get("metrics")]
    smoke = smoke_note(done)
    parts = [f"# {title}", ""] + ([smoke, ""] if smoke else [])
    for ways in sorted({r["ways"] for r in done}):
        group = [r for r in done if r["ways"] == ways]
        parts += [f"## {ways}-way", "", _context(group), "", study_table(group), "",
                  chance_line(ways, any(r.get("calibration") for r in group)), ""]
    parts += gate_section(done)
    for average in dict.fromkeys(r["metrics"].get("average", "present") for r in done):
        parts += [AVERAGE_NOTES.get(average, MACRO_NOTE), ""]
    parts += [interval_note(done), "", columns_note(done), ""]
    parts += prompt_section(done)
    parts += calibration_section(done) + notes(done) + order_section(done) + unreadable_section(done) + _others(other)
    return "\n".join(parts).rstrip() + "\n"


def interval_note(rows: Sequence[Mapping]) -> str:
    """What the "Accuracy 95% CI" column is; a re-rendered run from before the exact interval says so."""
    note = ("*Accuracy 95% CI*: exact (Clopper-Pearson) over the case's n samples, error rows and unresolved "
            "answers counted wrong; a gate fails a case whose upper bound is below its threshold.")
    old = [r["case_id"] for r in rows if r["metrics"].get("accuracy_ci_method") != "exact"]
    if old:
        note += (f" The interval of {', '.join(cell(c) for c in old)} is a seeded percentile bootstrap instead "
                 "(written before 2026-11-27), which is too narrow near 0 and 1 on small samples.")
    return note


def columns_note(rows: Sequence[Mapping]) -> str:
    """What the resolver columns hold (a newcomer read "resolver time" as one figure per answer)."""
    note = ("*resolver stages*: the share of the case's answers each stage decided (match, synonym, nli, "
            "constrained: generation limited to the candidates, direct: a baseline's own choice, unresolved, error).")
    if any(r.get("resolver_s") for r in rows):
        note += (" *resolver time*: seconds spent in each stage over the case's fresh samples, summed (rows "
                 "from the result store cost nothing), and the NLI model's share of the case's wall time.")
    return note


def ran_on_line(rows: Sequence[Mapping]) -> list[str]:
    """Where the local models ran and in what precision, once for all when they agree ("auto" in the
    settings says only what was asked); nothing for a run of APIs or of stored answers alone."""
    where: dict[str, list[str]] = {}
    for r in rows:
        if r.get("ran_on"):
            where.setdefault(str(r["ran_on"]), []).append(str(r["case_id"]))
    if len(where) == 1:
        return [f"- local models ran on {cell(next(iter(where)))}"]
    return [f"- ran on {cell(on)}: " + ", ".join(f"`{cell(c)}`" for c in cases) for on, cases in where.items()]


def notes(rows: Sequence[Mapping]) -> list[str]:
    lines = ran_on_line(rows)
    for r in rows:
        for text in ([r["stopped"]] if r.get("stopped") else []) + list(r.get("notes") or []):
            lines.append(f"- `{r['case_id']}`: {cell(text)}")
        if r.get("ambiguous") and canonical("labels", r.get("labels")) == STUDY_LABELS:  # saved before: "thesis"
            lines.append(f"- `{r['case_id']}`: {r['ambiguous']} predictions are ambiguous: they involve a class whose "
                         "raw (study) label another of its candidates shares, or an answer naming several candidates")
        elif r.get("ambiguous"):
            lines.append(f"- `{r['case_id']}`: {r['ambiguous']} answers named several candidates; the resolver did not guess")
        backend_errors = (r.get("errors") or 0) - (r.get("input_errors") or 0)
        if backend_errors:
            first = f"; first: {cell(r['first_error'])}" if r.get("first_error") else ""
            lines.append(f"- `{r['case_id']}`: {plural(backend_errors, 'error row')} (failed request or model), "
                         f"counted as wrong predictions{first}")
        if r.get("input_errors"):
            lines.append(f"- `{r['case_id']}`: {plural(r['input_errors'], 'unreadable image')} (see Unreadable images), "
                         "counted as wrong predictions")
        if r.get("cost_usd") is not None:
            lines.append(f"- `{r['case_id']}`: {_cost(r)}")
        if (r.get("metrics") or {}).get("n") and (r.get("stages") or {}).get("unresolved", 0) >= 1:
            lines.append(f"- `{r['case_id']}`: every answer was unresolved: none named a candidate the resolver could "
                         "read (the raw answers are in its samples file); try another --prompt, or --resolver study, "
                         "which sends them to NLI")
        if r.get("resumed"):
            lines.append(f"- `{r['case_id']}`: {_resumed(r)} came from the result store (not recomputed; "
                         "images/s counts only the fresh ones)")
        if r.get("quant") == "int8" and r.get("device_kind") != "cpu":
            lines.append(f"- `{r['case_id']}`: on a GPU, bitsandbytes int8 (the study's setting) runs 4-6x slower "
                         "than bf16 (shared H200 reference); `--quant none` for speed")
        if r.get("trust_remote_code"):
            lines.append(f"- `{r['case_id']}`: ran the hub's remote code (--trust-remote-code)")
    lines += gate_notes(rows)
    return (["## Notes", ""] + lines + [""]) if lines else []


def _resumed(r: Mapping) -> str:
    """"318 of 954 answers (...)": the part of the case the store gave, not a count that reads as all of it."""
    k = (r.get("orders") or {}).get("orders")  # with --orders K, one answer per image and order
    images = ((r.get("metrics") or {}).get("n") or 0) + (r.get("not_run") or 0)
    what = f"answers (image x order, {k} orders)" if k else "samples"
    return f"{r['resumed']} of {images * (k or 1)} {what}"


def prompt_section(rows: Sequence[Mapping]) -> list[str]:
    """Each prompt's full text, once, when a run used a prompt file or several prompts (a sweep), so a
    published table says what was asked; a run of one built-in prompt shows its name only, as before."""
    from ..prompts import TEMPLATES

    used: dict[str, Mapping] = {}
    for r in rows:
        used.setdefault(str(r.get("prompt")), r)
    if len(used) < 2 and not any(r.get("prompt_file") for r in used.values()):
        return []
    lines = []
    for name, r in used.items():
        text = r.get("prompt_text") or (TEMPLATES[name].text if name in TEMPLATES else None)
        # the file's name only: its absolute path (results.json has it) would publish the user's folders
        shown = "<br>".join(cell(line) for line in text.split("\n")) if text is not None else "(text not recorded)"
        lines.append(f"- `{cell(name)}`: {shown}")
    return ["## Prompts", "", "Each prompt as the model got it, `{labels}` / `{numbered}` standing for the candidates "
            "(line breaks shown as breaks). A file prompt's name ends with the start of its text's SHA-256.", ""] + lines + [""]


def _cost(r: Mapping) -> str:
    """A rerun answered from the store paid nothing: say what was spent now and what was stored, over
    every order's answers (`cost_usd` counts them all). A smoke stand-in's cost is simulated."""
    total, now = r["cost_usd"], r.get("cost_now_usd")
    k = (r.get("orders") or {}).get("orders")
    head = f"{'simulated ' if r.get('smoke') else ''}cost {usd(total)} USD" + (f" (all {k} orders)" if k else "")
    if now is None:  # a row written before the split
        return head
    now_words, stored_words = ("this run", "from earlier runs") if r.get("smoke") else ("spent now", "paid by earlier runs")
    stored = total - now  # the same rows summed in another order differ by float rounding (2.8e-17)
    stored = stored if stored > 1e-9 * max(1.0, total) else 0.0
    return f"{head}: {usd(now)} {now_words}, {usd(stored)} stored ({stored_words})"


def unreadable_section(rows: Sequence[Mapping]) -> list[str]:
    """Unreadable images, once per file across the run (every case draws from the same files)."""
    files: dict[str, str] = {}
    for r in rows:
        for f in r.get("input_error_files") or ():
            files.setdefault(str(f["sample_id"]), str(f["error"]))
    count = max((r.get("input_errors") or 0 for r in rows), default=0)
    if not count:
        return []
    shown = list(files.items())[:INPUT_ERRORS_LISTED]
    lines = ["## Unreadable images", "",
             f"{plural(count, 'image')} of the subset could not be read; "
             + ("it is an error row counted as a wrong prediction, and it does not fail" if count == 1 else
                "each is an error row counted as a wrong prediction, and none fails")
             + " a smoke case's plumbing check (the data's fault, not the pipeline's).", ""]
    lines += [f"- `{cell(sid)}`: {cell(err)}" for sid, err in shown]
    if count > len(shown):
        lines.append(f"- … and {count - len(shown)} more (every error row is in samples/*.jsonl)")
    return lines + [""]


def _others(rows: Sequence[Mapping]) -> list[str]:
    if not rows:
        return []
    lines = ["## Not run", ""] + [f"- `{r['case_id']}` ({r['status']}): {prose(r.get('reason'))}" for r in rows]
    return lines + [""]


def parse_table(markdown: str) -> list[dict[str, str]]:
    """Rows of the first markdown table in `markdown` (honours escaped pipes): for tests and tools."""

    lines = [l for l in markdown.splitlines() if l.startswith("|")]
    split = lambda l: [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", l.strip())[1:-1]]
    head = split(lines[0])
    return [dict(zip(head, split(l))) for l in lines[2:]]


# ---------------------------------------------------------------------------------- candidate order
ORDER_NOTE = ("The tables above score order 0 only (each image's usual candidate list, as a run without "
              "`--orders` asks it), so their figures stay comparable with such runs. Here each image was asked "
              "in K seeded orders of the same candidates; up to N orders, no candidate sits at the same "
              "position twice. Figures are over the images answered in every order.")


def order_section(rows: Sequence[Mapping]) -> list[str]:
    """"Candidate order": per case with --orders K > 1, accuracy per order, consistency, position bias."""
    cases = [r for r in rows if r.get("orders")]
    if not cases:
        return []
    parts = ["## Candidate order", "", ORDER_NOTE, ""]
    for r in cases:
        parts += [f"### `{cell(r['case_id'])}`", ""] + _order_case(r, r["orders"]) + [""]
    return parts


def _order_case(r: Mapping, o: Mapping) -> list[str]:
    from tabulate import tabulate

    lines = []
    info = find(r.get("backend"))  # None: a backend this version does not know (an old run)
    if info is not None and info.direct:
        lines += [f"A direct scorer ({cell(r['backend'])}) scores each candidate on its own: the order cannot "
                  "change its answer, and the figures below only confirm it.", ""]
    late = f"; {o['incomplete']} more lack some order (stopped early)" if o.get("incomplete") else ""
    lines += [f"{o['orders']} orders, {o['images']} images{late}.", ""]
    if not o["images"]:
        return lines
    spread = [_fmt(o["mean"]), f"{_fmt(o['min'])}–{_fmt(o['max'])}", _fmt(o["std"])]
    lines += [tabulate([["Accuracy", *map(_fmt, o["accuracy"]), *spread]], tablefmt="github", disable_numparse=True,
                       headers=["", *(f"order {k}" for k in range(o["orders"])), "mean", "min–max", "std"]), ""]
    lines += [f"Same answer in every order: {_pct(o['consistent'])} of images. Right in every order "
              f"{_pct(o['right_all'])}, in some but not all {_pct(o['right_some'])}, in none {_pct(o['right_none'])}.", ""]
    return lines + _position_table(o)


def _position_table(o: Mapping) -> list[str]:
    """Accuracy by the true label's position, and picked positions against the uniform expectation."""
    from tabulate import tabulate

    from ..orders import position_edges

    edges = position_edges(o["bin_sizes"])
    body = [["True label here (answers)", *map(str, o["position_n"])],
            ["Accuracy", *map(_fmt, o["position_accuracy"])],
            ["Picked here", *map(str, o["picked"])],
            ["Expected if position did not matter", *(f"{e:.1f}" for e in o["expected"])]]
    table = tabulate(body, headers=["Position in the list", *edges], tablefmt="github", disable_numparse=True)
    if o.get("p_test") == "shared lists":
        verdict = ("Every image was asked with the same candidate lists (labels-first at N = every class): a position "
                   "always held the same class, so a preference for a class cannot be told from one for a position, "
                   "and the picked positions are not tested.")
    elif o.get("p_value") is None:
        verdict = "No answer named a candidate: no test of the picked positions."
    elif o.get("p_test") == "permutation":  # K > 1 orders (rows saved before it: the chi-square line below)
        draws = o["p_draws"]
        floor = o["p_value"] * (draws + 1) < 1.5  # no relabelling reached the observed statistic
        p = f"p ≤ {o['p_value']:.2g} (none of {draws:,} relabellings reached it)" if floor else f"p = {o['p_value']:.3g}"
        verdict = (f"Picked positions against uniform: chi-square {o['chi2']:.2f}, {p}, from a permutation test: "
                   f"{draws:,} seeded relabellings of each image's positions, one for all its {o['orders']} orders. An image's "
                   "orders are no independent lists (up to N of them, no candidate sits at the same position twice), so "
                   "its picks are no independent draws and the chi-square table's p-value would be too large.")
    else:
        rough = " (some expected counts are below 5: the p-value is approximate)" if o.get("rough_test") else ""
        if o.get("orders", 1) > 1:  # a row saved before the permutation test: its p read K orders' picks as independent
            rough = (" (the chi-square table's, saved by an older vlmcls: an image's K orders never put a candidate at "
                     "the same position twice, so this p-value is too large; a new run gives a permutation test's)")
        verdict = (f"Picked positions against uniform: chi-square {o['chi2']:.2f}, {len(o['picked']) - 1} degrees "
                   f"of freedom, p = {o['p_value']:.3g}{rough}.")
    return [table, "", verdict, ""]


def _pct(v: float | None) -> str:
    return "" if v is None else f"{v:.0%}"
