"""`vlmcls` / `python -m vlmcls`: tools over stored runs (no model is loaded here).

    vlmcls report                         # re-render the newest run under ./reports (by when it ran; with its recorded --baseline)
    vlmcls report RUN                     # re-render RUN in place (tables, comparisons, plots)
    vlmcls report RUN1 RUN2 --out DIR     # merge runs; the same case in two runs: the later one wins
                                          # (runs of other prompts: one case per prompt, as a sweep)
    vlmcls report RUN --baseline OLD      # add McNemar's test of each case against a saved run
    vlmcls report RUN --summary           # print a short markdown summary (a PR comment); writes nothing
    vlmcls stub-server [--port N]         # a loopback OpenAI/Anthropic stand-in, to rehearse a served model offline
"""
from __future__ import annotations

import argparse
import re
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Mapping, Sequence

from . import provenance, report
from .report import Run, RunError, load_run
from .report.compare import baseline_meta, baseline_warning, with_baseline
from .report.plots import SETTING_KEYS
from .report.runs import catalog_changed, catalog_meta, recorded_baseline, recorded_catalog
from .report.summary import summary_markdown

DEFAULT_REPORTS = Path("reports")
FEWER = "; it scored "  # a merge note's mark: the later result has fewer samples (see _fewer)
OTHER = "; it ran other settings ("  # ... and other settings than the result it replaces (see _other_settings)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.func(args)
    except RunError as exc:  # a bad run folder or catalog: one line, no traceback
        print(f"vlmcls: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # cannot write the output
        print(f"vlmcls: error: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlmcls", description="Tools over stored vlmcls runs.")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    rep = sub.add_parser("report", help="re-render (and merge) stored runs: tables, comparisons, plots",
                         description="Re-render report.md from stored results.json + samples/*.jsonl. Several runs "
                                     "are merged in order: a case in two runs is taken from the later one.")
    rep.add_argument("runs", nargs="*", metavar="RUN_DIR", help="run folders (default: the newest run under ./reports, by when it ran)")
    rep.add_argument("--out", type=Path, help="output folder (default: in place for one run, "
                                              "a new merged-<time> folder beside the last run for several)")
    rep.add_argument("--baseline", metavar="RUN_DIR", help="a saved run to test each case against (McNemar)")
    rep.add_argument("--catalog", help="model catalog TOML for the study comparison (default: the one the run "
                                       "was made with, as results.json recorded it; else the bundled one)")
    rep.add_argument("--no-plots", action="store_true", help="write no PNG (the confusion tables stay)")
    rep.add_argument("--summary", action="store_true",
                     help="print each run's short GitHub-markdown summary to stdout (cases, accuracy, interval, "
                          "threshold, gate, verdict against the baseline, failure reasons) and write nothing: "
                          "for a pull-request comment; every render also writes it as summary.md")
    rep.set_defaults(func=cmd_report)
    stub = sub.add_parser("stub-server", help="serve a loopback stand-in for the OpenAI and Anthropic APIs "
                                              "(offline rehearsal of a served model)",
                          description="Serve the stand-in that smoke API models use, until Ctrl-C. It answers "
                                      "any model name with one of the candidates in the prompt, picked by a hash "
                                      "of the request: chance level, deterministic. It proves the plumbing, "
                                      "never a model.")
    stub.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one, printed)")
    stub.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    stub.set_defaults(func=cmd_stub_server)
    return parser


def cmd_report(args: argparse.Namespace) -> int:
    runs = [load_run(p) for p in (args.runs or [latest_run(DEFAULT_REPORTS)])]
    if args.summary:
        return print_summaries(runs, args)
    baseline, dropped = choose_baseline(args.baseline, runs)
    catalog, catalog_fields, catalog_note = choose_catalog(args.catalog, runs)
    chosen, notes = merge(runs)
    out = output_dir(args.out, runs, baseline)
    mixed = mixed_settings([row for _, row in chosen.values()]) if len(runs) > 1 else ""
    meta = {**_meta(runs, out, notes, mixed), **catalog_fields}
    if baseline is not None:  # recorded, so that the next re-render compares again
        meta.update(baseline_meta(baseline.path, out))
    if args.out is not None and out.is_dir() and not any(_same(out, r.path) for r in runs):
        report.clear_run_folder(out)  # an earlier render there: none of its cases' files stays
    copy_samples(chosen, out)
    # the output files each case's samples under its own id: a later render of this folder must look there
    rows = [{k: v for k, v in row.items() if k != "source_case_id"} for _, row in chosen.values()]
    sources = "\n\n".join(filter(None, [sources_section(runs, notes, mixed), dropped_section(dropped)]))
    path = report.write_run(out, rows, meta, catalog=catalog, baseline=baseline, plots=not args.no_plots,
                            sources=sources, provenance=provenance.markdown(meta, rows))
    if catalog_note:
        print(f"vlmcls: note: {catalog_note}", file=sys.stderr)
    if len(runs) > 1:
        print(f"vlmcls: {merge_summary(runs, rows, notes)}", file=sys.stderr)
    if mixed:
        print(f"vlmcls: warning: {mixed}", file=sys.stderr)
    if dropped:
        print(f"vlmcls: note: {dropped}", file=sys.stderr)
    if baseline is not None and (unchecked := baseline_warning(rows, out, baseline)):
        print(f"vlmcls: warning: {unchecked}", file=sys.stderr)
    print(f"report: {path}")
    return 0


def print_summaries(runs: Sequence[Run], args: argparse.Namespace) -> int:
    """--summary: each run's summary to stdout, compared with --baseline or the baseline it recorded
    (computed again from the samples while that run is there; else as results.json stored it)."""
    if args.out is not None:
        raise RunError("--summary prints to stdout and writes nothing: drop --out (every render writes summary.md)")
    if args.catalog is not None:  # the summary holds no study rows: a catalog given would change nothing, silently
        raise RunError("--summary shows no study rows, so it reads no catalog: drop --catalog")
    blocks = []
    for run in runs:
        baseline, _ = choose_baseline(args.baseline, [run])
        rows = with_baseline(run.rows, run.path, baseline) if baseline is not None else run.rows
        blocks.append(summary_markdown(rows, run.meta, run.path.name))
    sys.stdout.write("\n".join(blocks))
    return 0


def choose_baseline(given: str | None, runs: Sequence[Run]) -> tuple[Run | None, str]:
    """(the run to compare with, '' or why a recorded comparison was dropped). --baseline wins; else
    the baseline every run recorded (`pytest --baseline` writes it into meta), so a plain re-render
    keeps the comparison the run was made with."""
    if given:
        if any(Path(given).resolve() == Path(r.path).resolve() for r in runs):
            # every case would be "no significant difference" from itself, and the run's own recorded
            # baseline would be overwritten by it
            raise RunError(f"--baseline {given} is one of the runs being rendered: compare with another run")
        return load_run(given), ""
    recorded = {recorded_baseline(r) for r in runs}
    if len(recorded) != 1 or None in recorded:
        return None, ""
    (path,) = recorded
    try:
        return load_run(path), ""
    except RunError as exc:
        gone = "its folder is gone" if not Path(path).is_dir() else str(exc)
        return None, f"the comparison with the baseline {path} was dropped: {gone} (--baseline RUN_DIR compares again)"


def dropped_section(dropped: str) -> str:
    return f"## Compared with the baseline\n\n{report.cell(dropped[0].upper() + dropped[1:])}." if dropped else ""


def mixed_settings(rows: Sequence[dict]) -> str:
    """'' when the merged cases ran the same settings, else one sentence naming what differs."""
    done = [r for r in rows if r.get("metrics")]
    # what changes answers; no NLI model (a resolver without that stage) differs from none by itself
    differ = {k: sorted({str(r.get(k)) for r in done if k != "nli_model" or r.get(k)}) for k in SETTING_KEYS}
    differ = {k: v for k, v in differ.items() if len(v) > 1}
    if not differ:
        return ""
    what = "; ".join(f"{k}: {', '.join(v)}" for k, v in differ.items())
    return (f"the merged runs differ in settings ({what}): their cases are not directly comparable; "
            "the tables list every value and the accuracy plot draws each setting as its own line")


def merge_summary(runs: Sequence[Run], rows: Sequence[dict], notes: Sequence[str]) -> str:
    replaced = sum("(the later run wins)" in n for n in notes)
    kept = sum(": kept the result of " in n for n in notes)
    fewer = sum(FEWER in n for n in notes)
    other = sum(OTHER in n for n in notes)
    warn = f"; {fewer} of those taken from a later run scored fewer samples than the result they replace" if fewer else ""
    warn += f"; {other} of those ran other settings than the result they replace (named in the list)" if other else ""
    return (f"merged {len(runs)} runs into {len(rows)} cases: {replaced} taken from a later run (the later run wins), "
            f"{kept} kept from an earlier run where the later one has no result{warn}; the list is in report.md (Sources)")


def choose_catalog(given: str | None, runs: Sequence[Run]) -> tuple[dict, dict, str]:
    """(the catalog for the study comparison, what meta records of it, '' or a note). --catalog wins;
    else the one the runs were made with: a run of an in-house catalog must not be compared with the
    bundled study's rows. A recorded catalog that is gone gives no study rows at all, with a note:
    the bundled ones would describe models the run never had."""
    if given:
        return _catalog(given), catalog_meta(given), ""
    recorded = {recorded_catalog(r) for r in runs}
    if len(recorded) > 1:
        names = ", ".join(sorted(str(p) if p else "the bundled one" for p in recorded))
        return _catalog(None), {}, (f"the runs were made with different catalogs ({names}): the study comparison "
                                    "uses the bundled one (--catalog FILE picks another)")
    (path,) = recorded
    if path is None:
        return _catalog(None), {"catalog": None}, ""
    fields = {"catalog": str(path), "catalog_sha256": runs[0].meta.get("catalog_sha256")}
    if not path.is_file():
        return {}, fields, (f"the catalog this run was made with, {path}, is gone: the report compares with no "
                            "study row (--catalog FILE gives one)")
    try:
        catalog = _catalog(str(path))
    except RunError as exc:
        return {}, fields, f"the catalog this run was made with cannot be read ({exc}): the report compares with no study row"
    changed = catalog_changed(runs[0], path)
    return catalog, fields, (f"the catalog {path} changed since the run: its current study rows are used" if changed else "")


def _catalog(path: str | None):
    from .catalog import load_catalog

    try:
        return load_catalog(path)
    except ValueError as exc:
        raise RunError(str(exc)) from None


def latest_run(reports: Path) -> Path:
    """The run under `reports` that ran last (see ran_at): not the one re-rendered last, since every
    re-render rewrites results.json, so its file time says nothing about when the run was made."""
    found = [p.parent for p in reports.glob("*/results.json")] if reports.is_dir() else []
    if not found:
        raise RunError(f"no run folder given and none found under ./{reports}")
    return max(found, key=lambda d: (ran_at(d), d.name))


_RUN_TIME = re.compile(r"(\d{8}-\d{6})")  # run ids: 20261127-182806-3421f9, merged-20261127-182806-3421f9


def ran_at(run: Path) -> float:
    """When a run folder's run was made, in epoch seconds: the date its provenance recorded as it
    finished (a merge: when merged), else the start time in its run id, else (a foreign folder)
    results.json's file time. None of these changes when the run is re-rendered."""
    meta = _read_meta(run)
    provenance = meta.get("provenance") if isinstance(meta.get("provenance"), dict) else {}
    for date in (provenance.get("date"), meta.get("merged_at")):
        try:
            return datetime.strptime(str(date), "%Y-%m-%dT%H:%M:%S%z").timestamp()
        except ValueError:
            pass
    for name in (str(meta.get("run_id") or ""), run.name):
        if found := _RUN_TIME.search(name):
            return time.mktime(time.strptime(found.group(1), "%Y%m%d-%H%M%S"))
    return (run / "results.json").stat().st_mtime


def _read_meta(run: Path) -> dict:
    try:
        return load_run(run).meta
    except (RunError, TypeError, ValueError):  # unreadable: load_run says why again, if it is picked
        return {}


def merge(runs: Sequence[Run]) -> tuple[dict[str, tuple[Run, dict]], list[str]]:
    """case_id -> (run, row); a later run replaces an earlier one, except that a case which only
    got skipped in the later run keeps its earlier result (a missing API key must not erase data).
    Where the runs asked their models different prompts, or resolved or named the labels otherwise,
    each case is named by those settings first (see with_setting_ids): a thesis run and a label-only
    run of one model, or a study-resolver run and a rank run, stay two rows side by side."""
    swept = _swept([row for run in runs for row in run.rows])
    chosen: dict[str, tuple[Run, dict]] = {}
    notes = []
    for run in runs:
        for row in run.rows:
            row = with_setting_ids(row, swept.get(_base_id(row), ()))
            cid = row["case_id"]
            if cid in chosen:
                old_run, old = chosen[cid]
                if old.get("metrics") and not row.get("metrics"):
                    notes.append(f"{cid}: kept the result of {old_run.name}; {run.name} has none ({row.get('status')})")
                    continue
                notes.append(f"{cid}: {run.name} replaces {old_run.name} (the later run wins)"
                             f"{_fewer(old, row, old_run)}{_other_settings(old, row)}")
            chosen[cid] = (run, row)
    return chosen, notes


# the settings a comparison sweeps over, in the order a case id names them (`…-20way-label-only-rank`)
SWEPT = ("prompt", "resolver", "labels")


def _generative(row: Mapping) -> bool:
    """Whether the row's model read the prompt (CLIP and classifiers score the candidates themselves)."""
    from .backends.registry import info

    try:
        return info(str(row.get("backend"))).answers == "generative"
    except (KeyError, ValueError):  # a backend this version does not know: assume it read the prompt
        return True


def _reads(row: Mapping, key: str) -> bool:
    """Whether the setting `key` of SWEPT reaches the row's model: all do a generative one; CLIP reads
    the label names (its text side), not the prompt or the resolver; a classifier reads none."""
    return _generative(row) or (key == "labels" and row.get("backend") == "clip")


def _swept(rows: Sequence[Mapping]) -> dict[str, tuple[str, ...]]:
    """Case id (without a sweep's prompt) -> the settings of SWEPT in which its rows differ, for the
    cases that ran otherwise in one run than in another, counting only settings the model reads. A
    case that ran one way everywhere keeps its id, so a baseline or a script still finds `model-20way`."""
    values: dict[str, dict[str, set[str]]] = {}
    for r in rows:
        seen = values.setdefault(_base_id(r), {k: set() for k in SWEPT})
        for k in SWEPT:
            if _reads(r, k):
                seen[k].add(str(r.get(k)))
    return {cid: keys for cid, seen in values.items() if (keys := tuple(k for k in SWEPT if len(seen[k]) > 1))}


def _prompt_slug(row: Mapping) -> str:
    from .prompts import Template

    return Template(str(row.get("prompt")), "", "", row.get("prompt_file")).slug


def _sweep_suffix(row: Mapping) -> str:
    """"-label-only" for a row of a prompt sweep (its id and tag end with its prompt), else ""."""
    slug = _prompt_slug(row)
    cid, tag = row["case_id"], str(row.get("tag") or row["case_id"])
    return f"-{slug}" if tag.endswith(f" [{slug}]") and cid.endswith(f"-{slug}") else ""


def _base_id(row: Mapping) -> str:
    """The case id without a prompt sweep's suffix: what every run of the model at that N shares."""
    suffix = _sweep_suffix(row)
    return row["case_id"][: -len(suffix)] if suffix else row["case_id"]


def with_setting_ids(row: dict, keys: Sequence[str]) -> dict:
    """The row under the case id a sweep of `keys` would give it (`…-20way-label-only`, tag
    `… [label-only]`; `…-20way-rank`; `…-20way-label-only-rank`, tag `… [label-only, rank]`); a row
    with no `keys` its model reads (CLIP reads only the label names; a classifier none) is returned as it is. A prompt sweep's own row (its id ends with its
    prompt already) is named afresh from its base. `source_case_id` keeps the id its run filed its
    samples under."""
    keys = [k for k in keys if _reads(row, k)]
    if not keys:
        return row
    cid, tag = row["case_id"], str(row.get("tag") or row["case_id"])
    slug = _prompt_slug(row)
    if _sweep_suffix(row):  # from a prompt sweep: named afresh from its base
        cid, tag = cid[: -len(slug) - 1], tag[: -len(slug) - 3]
    parts = [slug if k == "prompt" else str(row.get(k)) for k in keys]
    named = f"{cid}-{'-'.join(parts)}"
    if named == row["case_id"]:
        return row
    return {**row, "case_id": named, "tag": f"{tag} [{', '.join(parts)}]",
            "source_case_id": row.get("source_case_id", row["case_id"])}


def _other_settings(old: Mapping, new: Mapping) -> str:
    """A replacement that ran other settings under the same case id (another seed, label mode,
    resolver...) is said, setting by setting: the earlier result is not in the merged report."""
    moot = () if _generative(new) else ("prompt", "resolver", "nli_model")  # CLIP reads neither
    changed = [f"{k} {old.get(k)} → {new.get(k)}" for k in SETTING_KEYS if str(old.get(k)) != str(new.get(k))
               and k not in moot and (k != "nli_model" or (old.get(k) and new.get(k)))  # resolver study → exact says it
               and (k != "label_names" or (k in old and k in new))]  # a row from before the key: not known to differ
    # the same weights name, other weights: a new hub commit, or a checkpoint saved again to the same folder
    revs = [(r.get("revisions") or {}).get("weights") for r in (old, new)]
    if all(revs) and revs[0] != revs[1]:
        from .hub import short_revision

        changed.append("weights " + " → ".join(map(short_revision, revs)))
    return f"{OTHER}{', '.join(changed)})" if changed else ""


def _fewer(old: Mapping, new: Mapping, old_run: Run) -> str:
    """A later result scored on fewer samples than the one it replaces (a quick rerun merged after the
    full run) is said: the merge keeps the later one, which may not be what the user wanted."""
    n_old, n_new = ((r.get("metrics") or {}).get("n") for r in (old, new))
    if n_old and n_new is not None and n_new < n_old:
        return f"{FEWER}{n_new} samples, where {old_run.name} had {n_old}"
    return ""


def output_dir(out: Path | None, runs: Sequence[Run], baseline: Run | None = None) -> Path:
    """Where the report goes. --out may re-render a single run in place, or replace an earlier render
    (a merge, a copy); it never overwrites the baseline, a run being merged, or a pytest run's own folder,
    whose answers exist nowhere else."""
    if out is None:
        if len(runs) == 1:
            return runs[0].path
        return runs[-1].path.parent / f"merged-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    if len(runs) > 1 and any(_same(out, r.path) for r in runs):
        raise RunError(f"--out {out} is one of the runs being merged; it would be overwritten: pick a new folder")
    if baseline is not None and _same(out, baseline.path):
        raise RunError(f"--out {out} is the baseline run; it would be overwritten: pick a new folder")
    if len(runs) == 1 and _same(out, runs[0].path):
        return out
    if out.is_file():
        raise RunError(f"--out {out} is a file, where the report's folder is needed")
    if out.is_dir() and any(out.iterdir()):
        try:
            there = load_run(out)
        except RunError:
            raise RunError(f"--out {out} exists and holds no vlmcls run: pick a new folder or remove it") from None
        if not (there.meta.get("merged_from") or there.meta.get("rendered_from")):
            raise RunError(f"--out {out} holds a pytest run ({there.meta.get('run_id', out.name)}) whose answers are "
                           "nowhere else; it would be overwritten: pick a new folder")
    return out


def _same(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def copy_samples(chosen: dict[str, tuple[Run, dict]], out: Path) -> None:
    """Each kept case's per-case files go into out (samples/<case>.jsonl, with --orders its
    samples/<case>.orders.jsonl, and per_class/<case>.json), so the output is itself a run folder
    (usable as a --baseline, re-renderable, complete); a stale file from an earlier render is removed."""
    for cid, (run, row) in chosen.items():
        src, dst = run.samples_path(row.get("source_case_id", cid)), Run(out, {}, []).samples_path(cid)
        if src is None or dst is None or _same(src.parent, dst.parent):
            continue
        _copy(src, dst)
        _copy(src.with_name(f"{src.stem}.orders.jsonl"), dst.with_name(f"{dst.stem}.orders.jsonl"))
        _copy(run.path / "per_class" / f"{src.stem}.json", out / "per_class" / f"{dst.stem}.json")


def _copy(src: Path, dst: Path) -> None:
    if src.is_file():
        report.atomic_write(dst, src.read_text(encoding="utf-8"))
    else:
        dst.unlink(missing_ok=True)


def _meta(runs: Sequence[Run], out: Path, notes: Sequence[str], mixed: str = "") -> dict:
    if len(runs) == 1:
        meta = dict(runs[0].meta)
        if not _same(out, runs[0].path):
            meta["rendered_from"] = str(runs[0].path)
        return meta
    return {"run_id": out.name, "merged_from": [{"path": str(r.path), "run_id": r.meta.get("run_id"),
                                                 "provenance": r.meta.get("provenance"), "dataset": r.meta.get("dataset")} for r in runs],
            "merge_notes": list(notes), "merge_warning": mixed or None,
            "merged_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}  # what `vlmcls report` calls the latest run


def sources_section(runs: Sequence[Run], notes: Sequence[str], mixed: str = "") -> str:
    if len(runs) == 1:
        return ""
    lines = ["## Sources", "", "Merged from these runs, in order (a case in two runs is taken from the later one):", ""]
    lines += [f"{i}. {report.cell(r.name)} (run {report.cell(r.meta.get('run_id', '?'))})" for i, r in enumerate(runs, 1)]
    if mixed:
        lines += ["", f"**Warning**: {report.cell(mixed)}."]
    if notes:
        lines += ["", *[f"- {report.cell(n)}" for n in notes]]
    return "\n".join(lines)


def cmd_stub_server(args: argparse.Namespace) -> int:
    """Serve the loopback stand-in until Ctrl-C (or SIGTERM), printing its URL and how to point a
    catalog entry at it; on the way out, one line with the number of requests it answered."""
    import signal

    from .smoke.api_server import ApiServer

    try:
        server = ApiServer(host=args.host, port=args.port).start()
    except OSError as exc:
        raise OSError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    # Ctrl-C, and a script's `kill` / `kill -INT $!` (a shell starts `cmd &` with SIGINT ignored), stop it alike
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.default_int_handler)
    print(stub_server_text(server.url), flush=True)
    served = 0
    try:
        while True:
            time.sleep(0.5)
            served += server.drain()
    except KeyboardInterrupt:
        served += server.drain()
    finally:
        server.stop()
    print(f"vlmcls stub-server: stopped after {served} request{'' if served == 1 else 's'}", flush=True)
    return 0


def stub_server_text(url: str) -> str:
    """What the stand-in prints when it starts: its URL first (a script reads the first line), then
    a catalog entry and the command that points at it."""
    return f"""base URL: {url}/v1
vlmcls stub-server: a stand-in for the OpenAI (POST /v1/chat/completions) and Anthropic (POST /v1/messages) APIs.
It answers any model name with one of the prompt's candidates, picked by a hash of the request: chance
level, deterministic. It proves the plumbing (catalog entry, --base-url, requests, parsing, report), never a model.

A catalog entry for it (my.toml); `weights` is the name your real server serves:
  [models."my-served-model"]
  backend = "openai-compatible"
  weights = "my-org/my-vlm-7b"

Then, in another shell:
  pytest bench --catalog my.toml -k my-served-model --base-url {url}/v1 --resolver exact --samples 20
(Anthropic models: ANTHROPIC_BASE_URL={url} ANTHROPIC_API_KEY=dummy.) Ctrl-C stops it."""


if __name__ == "__main__":
    sys.exit(main())
