"""One benchmark session per pytest process: the catalog, the dataset, loaded models, result rows.

A plain object the hooks in vlmcls.plugin hand their work to: it holds what a process shares
between cases (the dataset, the loaded model, the store) and runs one case for a `CaseRun`
(vlmcls.outcomes). The controller (or a serial run) merges rows and writes reports; xdist workers
only run cases and send their rows back inside each test report's user_properties.
"""
from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import astuple, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

import pytest

from . import backends, devices, plan, report
from .catalog import ModelEntry, load_catalog
from .data import DatasetError, dataset_name, describe, open_dataset
from .sources import IMAGENET_NAMES
from .labels import LabelNamesError, labelset, names_digest, read_label_names
from .outcomes import ROW_KEY, Case, CaseRun, case_row, crash_reason, summary_lines
from .plan import RunOptions
from .report.writer import clear_run_folder
from .runner import CaseResult, CaseRunner, CaseSpec
from .vocab import NLI_RESOLVERS
from .devices import worker_device
from .errors import Unavailable, one_line


class BenchSession:
    """Everything one pytest process shares between cases; the options are read once (RunOptions)."""

    def __init__(self, config: pytest.Config, options: RunOptions | None = None, run_id: str | None = None):
        from . import hub

        hub.forget_folders()  # local checkpoints' files are taken afresh, once for this session
        self.config = config
        self.opt = options or RunOptions.from_namespace(config.option)
        self.run_id = run_id or self.opt.run_id or time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        self.replaced = False  # --run-id named the folder of an earlier run, whose files this run replaced
        self.started = time.time()  # rows the store holds from then on are this run's (Ctrl-C's count)
        self.rows: list[dict] = []
        self.crashed: list[str] = []
        self.written: Path | None = None
        self.selected: list[str] = []  # ids of the cases collected to run (here, or on the xdist workers)
        self.worker_collections = 0  # xdist workers whose collection the controller heard of
        self.deselected: list[Case] = []  # cases -k / -m left out (the plugin's pytest_deselected adds them)
        self.interrupt_line: str | None = None  # what Ctrl-C left in the store, for the last lines
        self.was_interrupted = False
        self.stopped_early = ""  # why pytest stopped before every selected case ran (-x, --maxfail, --sw)
        self.ctrl_c = CtrlC()  # counts Ctrl-C presses on the controller (see CtrlC)
        self._validated = False
        self._paths_checked = False
        self._backends: dict[str, Any] = {}
        self._resolvers: dict[tuple, Any] = {}

    # ------------------------------------------------------------------ configuration
    @property
    def is_worker(self) -> bool:
        return hasattr(self.config, "workerinput")

    @property
    def report_dir(self) -> Path:
        return self.reports_root / self.run_id

    @property
    def reports_root(self) -> Path:
        """--report-dir, relative to where pytest was invoked (like --store and --catalog)."""
        return Path(self.config.invocation_params.dir, self.opt.report_dir)

    @cached_property
    def catalog(self) -> dict[str, ModelEntry]:
        try:
            return load_catalog(self.opt.catalog)
        except ValueError as exc:
            raise pytest.UsageError(str(exc)) from None

    @cached_property
    def source(self):
        try:
            return open_dataset(self.opt.dataset)
        except DatasetError as exc:
            raise pytest.UsageError(str(exc)) from None

    @cached_property
    def labels(self):
        display = None
        if self.opt.label_names:
            try:
                display = read_label_names(self.opt.label_names, self.source.annotations, self.source.synonyms)
            except LabelNamesError as exc:
                raise pytest.UsageError(str(exc)) from None
        return labelset(self.source.annotations, self.opt.labels, synonyms=self.source.synonyms, display=display)

    @cached_property
    def dataset_name(self) -> str:
        """--dataset as the rows, the report and the store key name it: with the split picked among
        several (`DIR:test`). The bundled sample and ImageNet are not opened for it."""
        if not self._own_dataset:
            return self.opt.dataset
        return dataset_name(self.opt.dataset, self.source)

    @property
    def _own_dataset(self) -> bool:
        """A user's folder, file or hub dataset: not the bundled sample, not ImageNet."""
        return self.opt.dataset not in ("sample", "", None, *IMAGENET_NAMES)

    def samples_for(self, k: int | None):
        """The seeded subset (cached per size: a catalog entry may ask for a smaller default)."""
        cache = self.__dict__.setdefault("_samples", {})
        if k not in cache:
            try:
                cache[k] = self.source.select(k, self.opt.seed)
            except DatasetError as exc:
                raise pytest.UsageError(str(exc)) from None
        return cache[k]

    def subset_size(self, spec: CaseSpec) -> int | None:
        return plan.subset_size(spec, self.opt, self.source.size)

    @cached_property
    def baseline(self):
        if not self.opt.baseline:
            return None
        from .report import RunError, load_run

        try:
            return load_run(self.opt.baseline)
        except RunError as exc:
            # "--baseline main" for the run folder reports/main: the run id alone is a common slip
            given, inside = Path(self.config.invocation_params.dir, self.opt.baseline), self.reports_root / self.opt.baseline
            hint = (f" (a run id alone is not found: did you mean --baseline {Path(self.opt.report_dir, self.opt.baseline)}?)"
                    if not given.exists() and (inside / "results.json").is_file() else "")
            raise pytest.UsageError(f"--baseline: {exc}{hint}") from None

    @property
    def store_path(self) -> Path:
        """--store (relative to where pytest was invoked), else <report-dir>/store.sqlite."""
        if self.opt.store:
            return Path(self.config.invocation_params.dir, self.opt.store)
        return self.reports_root / "store.sqlite"

    @cached_property
    def store(self):
        from .store import Store

        return Store(self.store_path)

    @cached_property
    def _cases(self) -> tuple[Case, ...]:
        opts = replace(self.opt, dataset=self.dataset_name)  # the split picked is part of the name
        specs = plan.cases(self.catalog, opts, auto_device=worker_device)
        if self._own_dataset or self.opt.label_names:  # class names a user can change (folders, columns, a file)
            digest = names_digest(self.labels.names)
            specs = [replace(s, label_digest=digest) for s in specs]
        return tuple(Case(s) for s in specs)

    def cases(self) -> list[Case]:
        return list(self._cases)

    def validate(self) -> None:
        """Dataset, N and sample count against each other: one UsageError line, before any case runs."""
        if self._validated:
            return
        n = len(self.source.annotations)
        too_many = [] if self.opt.study else [w for w in self.opt.ways_or_default if w > n]  # --study: such rows skip
        if too_many and self.opt.ways is None:  # the user never typed --ways: say it is the default
            raise pytest.UsageError(f"the default --ways {','.join(map(str, self.opt.ways_or_default))} exceeds the {n} "
                                    f"classes of dataset {self.opt.dataset!r}; pass --ways {n} (all classes) or less, "
                                    f"e.g. --ways {','.join(map(str, sorted({min(5, n), n})))}")
        if too_many:
            raise pytest.UsageError(f"--ways {too_many[0]} exceeds the {n} classes of dataset {self.opt.dataset!r}; "
                                    f"use --ways {n} or less, or a dataset with more classes")
        size = self.source.size
        if self.opt.samples and size is not None and self.opt.samples > size:
            raise pytest.UsageError(f"--samples {self.opt.samples} exceeds the {size} images of dataset "
                                    f"{self.opt.dataset!r}; use --samples {size} or less")
        self._validated = True

    def check_up_front(self) -> None:
        """Misuse as one usage line before anything runs (not inside collection, where a UsageError
        becomes a collection error), when the user asked for a dataset setting."""
        if not self.catalog and self.opt.catalog:  # else pytest crashes on an empty parametrization
            raise pytest.UsageError(f"catalog {self.opt.catalog} defines no model: add a [models.NAME] table "
                                    "with backend and weights (see vlmcls/catalog.toml for examples)")
        o = self.opt
        if o.dataset != "sample" or o.ways is not None or o.samples is not None:
            self.validate()
            # Draw (and for the hub, download and cache) the subset once, here: an unreachable or
            # gated dataset is one line now, and xdist workers then read the cached subset.
            sizes = {self.subset_size(c.spec) for c in self.cases()} if o.study else {o.samples}
            for k in sizes:  # --study: 10,000 images for 20-way, 1,600 for 100- and 1000-way
                self.samples_for(k)
        if o.label_names:
            _ = self.labels  # a --label-names file that does not fit the dataset: one usage line now
        if o.study and not self.cases():
            raise pytest.UsageError(f"--study: the catalog has no study row{' at --ways ' + ','.join(map(str, o.ways)) if o.ways else ''}")
        if o.baseline:
            _ = self.baseline  # an unreadable --baseline is a usage error now, not a failed case later
        if o.report_dir != "reports" or o.store or o.run_id:  # asked for: a bench run (the defaults wait for its cases)
            self.check_paths()

    def check_paths(self) -> None:
        """--report-dir and --store as one usage line before any case runs: each case would otherwise
        fail on them with an OSError traceback. Not under --collect-only, --setup-plan or --setup-only,
        which run no case (the store was created empty there)."""
        if self._paths_checked or any(getattr(self.config.option, o, False) for o in ("collectonly", "setupplan", "setuponly")):
            return
        given = f"--store {self.opt.store}" if self.opt.store else f"the result store {self.store_path}"
        problem = folder_problem(self.reports_root)
        if problem:
            raise pytest.UsageError(f"--report-dir {self.opt.report_dir}: {problem}")
        problem = store_problem(self.store_path)
        if problem:
            raise pytest.UsageError(f"{given}: {problem}")
        if self.opt.run_id:
            self._take_run_folder()
        try:  # a file there that is no SQLite database is a usage line too; a new one is made by the first case
            if self.store_path.exists():  # (so a run that stops before any case, a bad -k, leaves none behind)
                _ = self.store
        except (OSError, sqlite3.Error) as exc:
            self.__dict__.pop("store", None)
            raise pytest.UsageError(f"{given}: cannot open it as the result store (SQLite: {exc})") from None
        self._paths_checked = True

    def _take_run_folder(self) -> None:
        """--run-id NAME: the folder is this run's. An earlier run there (its results.json) is replaced:
        its files go first, so that no samples/ of a case this run does not repeat stays beside the new
        report. A folder that holds no run is someone else's, and --baseline may not be the folder."""
        folder = self.report_dir
        if self.opt.baseline and Path(self.config.invocation_params.dir, self.opt.baseline).resolve() == folder.resolve():
            raise pytest.UsageError(f"--baseline {self.opt.baseline} is the folder --run-id {self.run_id} would replace: "
                                    "give the new run another --run-id")
        if folder.is_file():
            raise pytest.UsageError(f"--run-id {self.run_id}: {folder} is a file, where the run's folder is needed")
        if not folder.is_dir() or not any(folder.iterdir()):
            return
        if not (folder / "results.json").is_file():
            raise pytest.UsageError(f"--run-id {self.run_id}: {folder} exists and holds no vlmcls run (no results.json): "
                                    "choose another --run-id or remove the folder")
        clear_run_folder(folder)
        self.replaced = True

    def collected(self, selected: list[Case]) -> None:
        """The cases this process will run (those -k / -m left out are in `deselected`); the paths are
        checked as soon as a case is to run (the defaults too: only a bench run writes under them)."""
        self.selected += [c.case_id for c in selected if c.case_id not in self.selected]
        if selected and not self.is_worker:  # workers trust their controller
            self.check_paths()
            self.ctrl_c.install()  # a bench run from here on: a second Ctrl-C waits for its report

    def collected_ids(self, nodeids: list[str]) -> None:
        """An xdist worker's collection (node ids): the controller does not collect, but must know
        whether cases run (for Ctrl-C)."""
        mine = {c.case_id for c in self._cases}
        self.worker_collections += 1
        params = (n[n.rfind("[") + 1:-1] for n in nodeids if n.endswith("]"))
        self.selected += [p for p in params if p in mine and p not in self.selected]
        if self.selected:
            self.ctrl_c.install()

    def selection_hint(self) -> str | None:
        """-k / -m matched none of the cases: how to list them and what their ids look like."""
        # under xdist the workers deselect and the controller never sees it: there, every case is left
        # out when the workers collected none of them under a -k / -m
        left_out = self.deselected or (list(self._cases) if self.worker_collections and self._selecting() else [])
        if self.selected or not left_out or re.search(r"\bnot\s+vlmcls_case\b", self.config.getoption("markexpr", "") or ""):
            return None  # (-m "not vlmcls_case": the user left the cases out on purpose, e.g. to run the micro-benchmarks)
        example = next((c for c in left_out if c.spec.model.info.quantized), left_out[0]).case_id
        listing = " ".join(["pytest", *without_selection(self.config.invocation_params.args), "--co", "-q"])
        sweep = len(self.opt.prompts) > 1
        form = "<model>[-<quant>]-<N>way" + ("-<prompt>" if sweep else "")
        prompt = ", then the prompt (a file by its stem; baselines, which take none, without it)" if sweep else ""
        return (f"vlmcls: the selection matched none of the {len(left_out)} benchmark cases; list their ids "
                f"with `{listing}`. An id is {form}, the quantization only for local VLMs{prompt} "
                f"(e.g. {example}); -k matches any part of it")

    def _selecting(self) -> bool:
        return bool(self.config.getoption("keyword", "") or self.config.getoption("markexpr", ""))

    def interrupted(self) -> None:
        """Ctrl-C: say what survived. Every finished batch is in the store, which the same command
        resumes from; without a word the user would assume the work was lost."""
        if self.is_worker or not self.selected or self.was_interrupted:
            return
        self.was_interrupted = True  # finish() lists the cases left undone in the report
        from .store import case_key

        keys = {case_key(c.spec.key_fields()) for c in self._cases if c.case_id in self.selected}
        try:
            done = sum(self.store.count(k) for k in keys)
            fresh = sum(self.store.count(k, since=self.started) for k in keys)
        except (OSError, sqlite3.Error):  # the store never opened: nothing to promise
            return
        if self.opt.refresh:  # the older rows are what --refresh was asked to replace: not "resumable" work
            self.interrupt_line = (f"interrupted: {fresh} samples finished in this run are in the result store "
                                   f"{self.store_path}; a rerun without --refresh resumes from them (and keeps the "
                                   "older rows this run had not replaced yet), with --refresh it starts over")
            return
        self.interrupt_line = (f"interrupted: {done} finished samples of the selected cases are in the result store "
                               f"{self.store_path} ({fresh} from this run); the same command resumes from there")

    def stopped(self, why: str) -> None:
        """pytest stopped the run early on its own rule (-x / --maxfail: "stopping after 1 failures"; --sw),
        not on Ctrl-C: finish() lists the cases it did not reach, saying so."""
        if not self.is_worker and self.selected and not self.stopped_early:
            self.stopped_early = " ".join(str(why).split()) or "pytest stopped the run"

    # ------------------------------------------------------------------ running
    def requirements(self, spec: CaseSpec) -> str | None:
        """Why the case cannot run here (a missing model, GPU, NLI model, or a resolver the backend
        cannot serve), or None."""
        info, reason = spec.model.info, None
        if spec.ways > len(self.labels):  # only --study gets here: validate() refuses such --ways
            return f"{spec.ways}-way needs {spec.ways} classes; dataset {spec.dataset!r} has {len(self.labels)}"
        # (the weights' cache / hub check is each local backend's requirements: vlmcls.hub.weights_reason)
        if info.local:
            reason = devices.unavailable(spec.settings.device)
        reason = reason or backends.requirements(spec.model, spec.settings, self.labels)
        text_answers = spec.resolver in NLI_RESOLVERS or (spec.resolver == "rank" and info.served)
        if reason is None and text_answers and not info.direct:
            reason = nli_requirement(spec.nli_model)
        if reason is None and spec.resolver == "constrained" and not info.constrained:
            reason = f"--resolver constrained needs a local model or an OpenAI-compatible server, not {spec.model.backend}"
        if reason is None and spec.resolver == "rank" and not info.rank:
            reason = (f"--resolver rank: ranking is not available for the {spec.model.backend} backend "
                      "(it needs the model's score of every candidate: local models, CLIP, classifiers and OpenAI's "
                      "logprobs have them)")
        return reason

    @staticmethod
    def _backend_key(spec: CaseSpec) -> str:
        # not repr(): theirs leave a URL's credentials out (pytest -l); two passwords are two clients
        return repr((astuple(spec.model), astuple(spec.settings)))

    def has_backend(self, spec: CaseSpec) -> bool:
        return self._backend_key(spec) in self._backends

    def backend(self, spec: CaseSpec):
        key = self._backend_key(spec)
        if key not in self._backends:
            for other in list(self._backends):  # one model in memory at a time (GPU memory)
                self._backends.pop(other).close()
            self._backends[key] = backends.load(spec.model, spec.settings, self.labels)
        return self._backends[key]

    def resolver(self, spec: CaseSpec):
        from .resolve import Resolver

        device = nli_device(spec.settings.device)
        key = (spec.resolver, spec.nli_model, device, spec.nli_compile)
        if key not in self._resolvers:
            self._resolvers[key] = Resolver(spec.resolver, self.labels, nli_model=spec.nli_model, device=device,
                                            nli_compile=spec.nli_compile)
        return self._resolvers[key]

    def run_case(self, run: CaseRun) -> CaseResult:
        spec = run.spec
        reason = self.requirements(spec)
        if reason:
            self._cannot_run(run, reason)
        samples = self.samples_for(self.subset_size(spec))
        resolver = self.resolver(spec)

        loading = ["the model"]

        def load():
            if spec.model.info.local and not spec.model.smoke and not self.has_backend(spec):
                # real weights take minutes on a laptop: say what the wait is before the first progress line
                quant = f" ({spec.settings.quant})" if spec.settings.quant not in (None, "none") else ""
                self._say(f"  {spec.case_id}: loading {spec.model.weights} on {devices.pick_device(spec.settings.device)}{quant}")
            model = self.backend(spec)
            if model.kind == "text":
                loading[0] = f"the NLI model ({spec.nli_model})"
                resolver.warm()  # load the NLI model now, not inside the first timed batch
            return model

        backend = LazyBackend(load)
        runner = CaseRunner(spec, self.labels, backend, resolver, self.store, progress=self._progress(spec))
        unavailable = failed = None
        try:
            result = runner.run(samples)
        except Unavailable as exc:  # found while running: this model lacks what the case needs
            unavailable = one_line(exc)
        except sqlite3.Error as exc:  # the store, not the model: a damaged page, a full disk
            failed = (f"the result store {self.store_path} failed: {type(exc).__name__}: {one_line(exc)} (if it is "
                      "damaged, move it aside or pass --store NEW; its other cases' rows may still be readable)")
        except Exception as exc:  # cannot load, bad key, lost server: one line, a row, no traceback
            what = f"cannot load {loading[0]}" if not backend.loaded else "the backend failed"
            failed = f"{what}: {type(exc).__name__}: {one_line(exc)}"
        # skipped or failed out here, not inside the except: pytest would print the exception's
        # whole chain ("During handling of the above exception ...") under the one line
        if unavailable is not None:
            self._cannot_run(run, unavailable)
        if failed is not None:
            run.not_run("error", failed, f"{spec.case_id}: {failed}")
        run.spent_now = backend.spent_usd
        if result.metrics is not None and result.metrics.average != self.opt.average:
            result = replace(result, metrics=result.metrics.with_average(self.opt.average))
        self._write_samples(spec, result)
        return result

    def _cannot_run(self, run: CaseRun, reason: str) -> None:
        """Skipped with the reason; failed under --strict-cases / --strict."""
        if self.opt.strict:
            run.not_run("failed", reason, f"{run.spec.case_id}: cannot run here (--strict-cases / --strict): {reason}")
        run.not_run("skipped", reason)

    def _say(self, line: str) -> None:
        """One line on the terminal while a case runs, past pytest's capture. An xdist worker writes it to
        its stderr, which it shares with the controller's terminal (its stdout goes nowhere)."""
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        capman = self.config.pluginmanager.get_plugin("capturemanager")
        worker = getattr(self.config, "workerinput", {}).get("workerid")
        if capman is None or (tr is None and not worker):
            return
        with capman.global_and_fixture_disabled():
            if worker:
                sys.stderr.write(f"\n[{worker}]{line}\n")
                sys.stderr.flush()
            else:
                tr.write_line(line)

    def _progress(self, spec: CaseSpec):
        """Progress lines for long cases (see Progress)."""
        pace = Progress(spec.case_id, time.monotonic())

        def show(done: int, total: int) -> None:
            line = pace.update(done, total, time.monotonic())
            if line is not None:
                self._say(line)
        return show

    def _write_samples(self, spec: CaseSpec, result: CaseResult) -> None:
        """Per-sample JSONL and per-class metrics, written by the process that ran the case."""
        report.write_samples(self.report_dir / "samples" / f"{spec.case_id}.jsonl", result.predictions)
        if result.order_rows:  # --orders K: every order's rows; the file above is order 0, as K=1 writes it
            report.write_samples(self.report_dir / "samples" / f"{spec.case_id}.orders.jsonl", result.order_rows)
        if result.predictions:
            from .metrics import per_class

            rows = per_class(result.predictions, self.labels.names)
            report.atomic_write(self.report_dir / "per_class" / f"{spec.case_id}.json", json.dumps(rows, indent=1))

    # ------------------------------------------------------------------ rows and reports (the controller)
    def collect(self, rep: pytest.TestReport) -> None:
        """A test report's row (sent by the process that ran it), or a crash row when an xdist worker
        died inside the test."""
        rows = [v for k, v in rep.user_properties if k == ROW_KEY]
        if rows and rep.when in ("call", "setup"):
            for row in rows:
                self._add_row(row)
        elif rep.failed and rep.when == "???":  # xdist: the worker died inside this test
            match = re.search(r"\[(.+)\]$", rep.nodeid)
            case_id = match.group(1) if match else rep.nodeid
            if all(r["case_id"] != case_id for r in self.rows):  # xdist may retry it on a new worker
                self.rows.append(self.crash_row(case_id, rep.nodeid, crash_reason(rep.longreprtext)))

    def _add_row(self, row: dict) -> None:
        """One row per case: a case run again in the session (pytest-repeat's --count, a rerun plugin) keeps
        one row, which says how many times it ran (a second row would count its images twice in every
        table and in Holm's correction; the later runs come from the store). A row with figures replaces a
        crashed worker's row (xdist ran the case again)."""
        at = next((i for i, r in enumerate(self.rows) if r["case_id"] == row["case_id"]), None)
        if at is None:
            self.rows.append(row)
            return
        first = self.rows[at]
        if first == row:
            return
        if first.get("metrics") is None and first.get("status") == "crashed" and row.get("metrics") is not None:
            self.rows[at] = row  # xdist ran a crashed worker's case again: that is no repeat
            return
        runs = first.get("runs", 1) + 1
        kept = row if first.get("metrics") is None and row.get("metrics") is not None else first
        notes = [n for n in kept.get("notes", []) if REPEATED not in n]  # the previous count's note
        self.rows[at] = {**kept, "runs": runs, "notes": [*notes, f"ran {runs} {REPEATED}"]}

    def crash_row(self, case_id: str, nodeid: str, reason: str) -> dict:
        spec = next((c.spec for c in self._cases if c.case_id == case_id), None)
        row = case_row(spec, status="crashed", reason=reason)
        # a test the plan does not know (a user's own test using the fixtures): still reported
        return row or {"case_id": case_id, "model": nodeid, "ways": 0, "status": "crashed",
                       "metrics": None, "stages": {}, "notes": [], "reason": reason}

    def worker_down(self, node: Any, error: Any) -> None:
        if error:
            self.crashed.append(f"worker {node.gateway.id} went down: {one_line(error)}")

    def finish(self) -> None:
        """results.json and report.md, each written once (samples/ is already there)."""
        try:
            self._finish()
        finally:
            self.ctrl_c.release()

    def _finish(self) -> None:
        if self.ctrl_c.presses:  # also when a second press cut pytest's own Ctrl-C handling (and our hook) short
            self.interrupted()
        if self.was_interrupted or self.stopped_early:
            self.rows += self.interrupted_rows()
        if not self.rows:
            return
        from . import provenance

        from .settings import redact_urls

        # a --base-url's credentials stay out of results.json (the argv would carry them)
        meta = {"run_id": self.run_id, "argv": [redact_urls(a) for a in sys.argv[1:]], "crashed_workers": self.crashed,
                "provenance": provenance.collect()}
        from .report.compare import baseline_meta
        from .report.runs import catalog_meta

        # the catalog, so that `vlmcls report` compares with its study rows, not the bundled ones
        meta.update(catalog_meta(self.opt.catalog, self.config.invocation_params.dir))
        if self.baseline is not None:  # `vlmcls report` re-renders the comparison from it
            meta.update(baseline_meta(self.baseline.path, self.report_dir))
        try:  # the report's Dataset section (the source is open by now, but for the bundled sample under xdist)
            meta["dataset"] = describe(self.dataset_name, self.source, self.labels, label_names=self.opt.label_names)
        except pytest.UsageError:  # a dataset that cannot be opened has no rows to describe
            pass
        self.written = report.write_run(self.report_dir, self.rows, meta, catalog=self.catalog,
                                        baseline=self.baseline, provenance=provenance.markdown(meta, self.rows))

    def interrupted_rows(self) -> list[dict]:
        """After Ctrl-C, a row for each selected case without one (the one running, those not reached), so
        that report.md, which would otherwise look complete, says what is missing and how to finish it."""
        done = {r["case_id"] for r in self.rows}
        status = "interrupted" if self.was_interrupted else "not reached"
        return [report.skipped_row(c.spec, status, self._interrupted_reason(c)) for c in self._cases
                if c.case_id in self.selected and c.case_id not in done]

    def _interrupted_reason(self, case: Case) -> str:
        """The case that was running says how far it got (its rows this run put in the store); the others
        that they were not reached."""
        from .store import case_key

        try:
            fresh = self.store.count(case_key(case.spec.key_fields()), since=self.started)
        except (OSError, sqlite3.Error):
            fresh = 0
        if not self.was_interrupted:  # pytest's own stop: the same command would stop at the same failure
            how = f"pytest stopped the run ({self.stopped_early})"
            if fresh:
                return (f"{how} after {fresh} of its answers were stored; a run without -x / --maxfail / --sw "
                        "resumes it from there")
            return f"not reached: {how}; a run without -x / --maxfail / --sw runs it"
        if fresh and self.opt.refresh:
            return (f"interrupted (Ctrl-C) after {fresh} of its answers were stored; a rerun without --refresh "
                    "resumes from them, with --refresh it starts over")
        if fresh:
            return (f"interrupted (Ctrl-C) after {fresh} of its answers were stored; the same command resumes it "
                    "from there")
        return "not reached before the run was interrupted (Ctrl-C); the same command runs it"

    def summary_lines(self, skips_shown: bool, compact: bool = False) -> list[str]:
        lines = summary_lines(self.rows, self.crashed, skips_shown, compact)
        if self.baseline is not None:  # a gate that compared nothing must not pass quietly
            from .report.compare import baseline_warning, with_baseline
            from .report.summary import baseline_line

            # what the comparison found, passed cases too (a CI log showed only the failures)
            done = with_baseline([r for r in self.rows if r.get("metrics")], self.report_dir, self.baseline)
            lines += baseline_line(done)[:1]
            warning = baseline_warning(self.rows, self.report_dir, self.baseline, strict=self.opt.strict)
            lines += [f"warning: {warning}"] if warning else []
        return lines

    def close(self) -> None:
        self.ctrl_c.release()
        for backend in self._backends.values():
            backend.close()
        self._backends.clear()
        if "store" in self.__dict__:
            self.store.close()


def nli_device(model_device: str) -> str:
    """The NLI model goes where the case's model went when that is an accelerator (this xdist worker's
    GPU, or a Mac's MPS); else "auto". A CPU-only case still gets a GPU for NLI where there is one."""
    return model_device if model_device.startswith(("cuda", "mps")) else "auto"


REPEATED = "times in this session (e.g. pytest-repeat's --count); the report keeps one run"


class CtrlC:
    """Ctrl-C on the controller, counted. The first press interrupts the run as Python's own handler does
    (KeyboardInterrupt); the run then winds down and writes what it has (a few seconds: the plots). A
    second press there would lose the report in a traceback, or, arriving while pytest handles the first,
    leave a report that looks complete: it only says that the report is being written. A third stops
    at once. Installed for the session's length, in the main thread only."""

    def __init__(self) -> None:
        self.presses = 0
        self._previous: Any = None

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread() and self._previous is None:
            self._previous = signal.signal(signal.SIGINT, self._pressed)

    def release(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _pressed(self, signum, frame) -> None:
        self.presses += 1
        if self.presses != 2:
            raise KeyboardInterrupt
        sys.stderr.write("\nvlmcls: writing the report of what ran, a moment (Ctrl-C again stops at once; "
                         "the result store keeps every finished sample either way)\n")


def without_selection(args: Sequence[str]) -> list[str]:
    """The command line without its -k / -m selection (`-k EXPR`, `-kEXPR`, `-k=EXPR`): the same run, listing
    every case. Arguments with spaces are quoted, so the line can be pasted."""
    import shlex

    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a in ("-k", "-m"):
            skip = True
        elif a in ("--co", "--collect-only", "-q", "--quiet", "-qq"):  # the hint adds its own `--co -q`
            continue
        elif not a.startswith(("-k", "-m")) or a.startswith("--"):
            out.append(shlex.quote(a))
    return out


def folder_problem(folder: Path, itself: str = "it") -> str | None:
    """Why `folder` (called `itself` when it is the culprit) cannot take a run's files (it is created
    if missing), or None."""
    blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        return f"{itself if blocker == folder else blocker} is a file, where a folder is needed"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"the folder {folder} cannot be created ({exc.strerror or exc})"
    try:  # os.access says yes to root on a read-only file system: try it
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return f"the folder {folder} is not writable ({exc.strerror or exc})"
    return None


def store_problem(path: Path) -> str | None:
    """Why the result store cannot be at `path` (its folder is created if missing), or None."""
    if path.is_dir():
        return "it is a folder, where the store's SQLite file is needed"
    problem = folder_problem(path.parent, itself=str(path.parent))
    if problem is None and path.exists() and not os.access(path, os.R_OK | os.W_OK):
        problem = "the file is not writable"
    return problem


class Progress:
    """A case's progress line: after 10 s, then every 30 s, while samples remain. The pace counts only
    samples answered after this run's first batch: that batch carries the model's loading and
    warm-up, and rows read back from the store cost nothing, so either would promise too early an end."""

    FIRST_S, EVERY_S = 10.0, 30.0

    def __init__(self, case_id: str, now: float):
        self.case_id, self.start, self.due = case_id, now, now + self.FIRST_S
        self.stored: int | None = None  # samples the store answered (the first count reported)
        self.mark: tuple[float, int] | None = None  # (time, done) when the first fresh batch ended

    def update(self, done: int, total: int, now: float) -> str | None:
        if self.stored is None:
            self.stored = done
        elif self.mark is None and done > self.stored:
            self.mark = (now, done)
        if now < self.due or done >= total:
            return None
        self.due = now + self.EVERY_S
        line = f"  {self.case_id}: {done}/{total} samples after {now - self.start:.0f} s"
        if self.mark is not None and done > self.mark[1] and now > self.mark[0]:
            rate = (done - self.mark[1]) / (now - self.mark[0])
            line += f", {rate:.3g} samples/s, about {duration((total - done) / rate)} left"
        return line + (f" ({self.stored} from the store)" if self.stored else "")


def duration(seconds: float) -> str:
    """`45 s`, `12 min`, `3 h 05 min`: as precise as an estimate deserves."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 90 else f"{minutes // 60} h {minutes % 60:02d} min"


class LazyBackend:
    """Loads the model on the first batch that needs it: a case fully answered by the store loads
    nothing (a 13B model takes minutes)."""

    def __init__(self, load):
        self._load, self._backend = load, None
        self.load_s = 0.0  # excluded from images/s
        self.spent_usd = 0.0  # what this run paid: stored answers were paid for by an earlier run

    @property
    def loaded(self) -> bool:
        return self._backend is not None

    def answer(self, queries):
        if self._backend is None:
            t0 = time.perf_counter()
            self._backend = self._load()
            self.load_s = time.perf_counter() - t0
            if hasattr(self._backend, "begin_case"):  # one LazyBackend per case: its first batch begins it
                self._backend.begin_case()
        answers = self._backend.answer(queries)
        self.spent_usd += sum(a.cost_usd or 0.0 for a in answers)
        return answers

    @property
    def kind(self) -> str:
        return getattr(self._backend, "kind", "text")

    @property
    def notes(self) -> list[str]:
        return list(getattr(self._backend, "notes", []))

    @property
    def ran_on(self) -> str | None:
        return getattr(self._backend, "ran_on", None)

    @property
    def stand_in(self) -> bool:
        return bool(getattr(self._backend, "stand_in", False))

    def close(self) -> None:
        pass  # the session owns loaded backends and closes them


def nli_requirement(model: str) -> str | None:
    from .nli import model_reason

    return model_reason(model)
