"""One benchmark session per pytest process: the catalog, the dataset, loaded models, result rows.

The controller (or a serial run) merges rows and writes reports; xdist workers only run cases and
send their rows back inside each test report's user_properties.
"""
from __future__ import annotations

import json
import os
import re
import sys
import time
import uuid
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest

from . import backends, report
from .catalog import ModelEntry, StudyRow, load_catalog, study_cases
from .data import DatasetError, open_dataset
from .labels import labelset
from .options import DEFAULT_WAYS, cli_settings, labels_mode
from .runner import CaseResult, CaseSpec, CaseRunner
from .settings import resolve_settings
from .smoke import is_smoke

ROW_KEY = "vlmcls_row"
API_BACKENDS = ("openai", "anthropic", "openai-compatible")


@dataclass(frozen=True)
class Case:
    """A parametrized case (model x N). `bind` attaches the live session and test item."""

    spec: CaseSpec
    session: Any = None
    item: Any = None

    @property
    def case_id(self) -> str:
        return self.spec.case_id

    @property
    def group(self) -> str:
        return self.spec.model.name

    def __repr__(self) -> str:  # shown by pytest in failures and -v
        return f"Case({self.case_id})"

    def bind(self, session: "BenchSession", item) -> "Case":
        return replace(self, session=session, item=item)

    def run(self) -> CaseResult:
        """Run the case (skips with a one-line reason when it cannot run here) and return its result."""
        return self.session.run_case(self)

    def check_gate(self, result: CaseResult) -> None:
        self.session.check_gate(self, result)


class BenchSession:
    def __init__(self, config: pytest.Config, run_id: str | None = None):
        self.config = config
        self.opt = config.option
        self.run_id = run_id or time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        self.strict = bool(getattr(self.opt, "strict", False) or self.opt.strict_cases)
        self.rows: list[dict] = []
        self.crashed: list[str] = []
        self._backends: dict[str, Any] = {}
        self._resolvers: dict[tuple, Any] = {}
        self._spent_now: dict[str, float] = {}  # case_id -> USD paid in this run (not the stored answers)

    # ------------------------------------------------------------------ configuration
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
        return labelset(self.source.annotations, labels_mode(self.opt))

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
        """--samples as given; a catalog default (slow smoke models) is capped by the dataset's size."""
        if self.opt.samples is None and spec.samples and self.source.size is not None:
            return min(spec.samples, self.source.size)
        return spec.samples

    @cached_property
    def baseline(self):
        if not self.opt.baseline:
            return None
        from .compare import RunError, load_run

        try:
            return load_run(self.opt.baseline)
        except RunError as exc:
            raise pytest.UsageError(f"--baseline: {exc}") from None

    @cached_property
    def store(self):
        from .store import Store

        return Store(self.opt.store or self.reports_root / "store.sqlite")

    def ways(self) -> tuple[int, ...]:
        return self.opt.ways or DEFAULT_WAYS

    def validate(self) -> None:
        """Dataset, N and sample count against each other: one UsageError line, before any case runs."""
        n = len(self.source.annotations)
        too_many = [] if self.opt.study else [w for w in self.ways() if w > n]  # --study: such rows skip
        if too_many:
            raise pytest.UsageError(f"--ways {too_many[0]} exceeds the {n} classes of dataset {self.opt.dataset!r}; "
                                    f"use --ways {n} or less, or a dataset with more classes")
        size = self.source.size
        if self.opt.samples and size is not None and self.opt.samples > size:
            raise pytest.UsageError(f"--samples {self.opt.samples} exceeds the {size} images of dataset "
                                    f"{self.opt.dataset!r}; use --samples {size} or less")

    def spec(self, entry: ModelEntry, ways: int, row: StudyRow | None = None) -> CaseSpec:
        """`row` (--study): the study's quant and images stand in for the catalog's; an option given
        on the command line still wins, and the comparison with the study says so."""
        cli = cli_settings(self.opt)
        if self.opt.api_constrained and entry.backend == "openai-compatible":
            cli["constrained"] = True  # --api-constrained concerns served models only
        study = {"quant": row.quant} if row is not None and row.quant else {}
        settings = resolve_settings(cli, {**entry.defaults(), **study})
        if settings.device == "auto" and entry.is_local_hf:
            settings = settings.with_(device=worker_device())
        nli = self.opt.nli_model or ("smoke:bart-mnli" if entry.smoke else "facebook/bart-large-mnli")
        return CaseSpec(
            model=entry, ways=ways, settings=settings, dataset=self.opt.dataset,
            samples=self.opt.samples or (row.images if row is not None else entry.samples),
            seed=self.opt.seed, prompt=self.opt.prompt, labels_mode=labels_mode(self.opt), resolver=self.opt.resolver,
            nli_model=nli, max_cost=self.opt.max_cost, refresh=self.opt.refresh, orders=self.opt.orders,
        )

    def cases(self) -> list[Case]:
        if self.opt.study:  # the study's rows (at --ways, if given), each with its own settings
            return [Case(self.spec(entry, row.ways, row)) for entry, row in study_cases(self.catalog, self.opt.ways)]
        return [Case(self.spec(entry, w)) for entry in self.catalog.values() for w in self.ways()]

    # ------------------------------------------------------------------ running
    def _skip(self, case: Case, reason: str) -> None:
        status = "failed" if self.strict else "skipped"
        case.item.user_properties.append((ROW_KEY, report.skipped_row(case.spec, status, reason)))
        if self.strict:
            pytest.fail(f"{case.case_id}: cannot run here (--strict-cases / --strict): {reason}", pytrace=False)
        pytest.skip(reason)

    def requirements(self, spec: CaseSpec) -> str | None:
        reason = None
        if spec.ways > len(self.labels):  # only --study gets here: validate() refuses such --ways
            return f"{spec.ways}-way needs {spec.ways} classes; dataset {spec.dataset!r} has {len(self.labels)}"
        if spec.model.is_local_hf and not is_smoke(spec.model.weights):
            from .hub import unreachable_reason

            reason = unreachable_reason(spec.model.weights)
        if reason is None and spec.model.is_local_hf and spec.settings.device.startswith("cuda"):
            from .runner import device_kind

            if device_kind("auto") != "cuda":
                reason = f"--device {spec.settings.device} but no CUDA GPU is visible here"
        reason = reason or backends.requirements(spec.model, spec.settings, self.labels)
        if reason is None and spec.resolver in ("thesis", "nli") and spec.model.backend not in ("clip", "classifier"):
            reason = nli_requirement(spec.nli_model)
        if reason is None and spec.resolver == "constrained" and spec.model.backend not in ("hf-vlm", "openai-compatible", "clip", "classifier"):
            reason = f"--resolver constrained needs a local model or an OpenAI-compatible server, not {spec.model.backend}"
        if reason is None and spec.resolver == "rank" and spec.model.backend not in ("hf-vlm", "clip", "classifier"):
            reason = (f"--resolver rank: ranking is not available for the {spec.model.backend} backend "
                      "(it needs the model's score of every candidate; local models, CLIP and classifiers have them)")
        return reason

    def backend(self, spec: CaseSpec):
        key = repr((spec.model, spec.settings))
        if key not in self._backends:
            for other in list(self._backends):  # one model in memory at a time (GPU memory)
                self._backends.pop(other).close()
            self._backends[key] = backends.load(spec.model, spec.settings, self.labels)
        return self._backends[key]

    def resolver(self, spec: CaseSpec):
        from .resolve import Resolver

        device = spec.settings.device if spec.settings.device.startswith("cuda") else "auto"  # this worker's GPU
        key = (spec.resolver, spec.nli_model, device)
        if key not in self._resolvers:
            self._resolvers[key] = Resolver(spec.resolver, self.labels, nli_model=spec.nli_model, device=device)
        return self._resolvers[key]

    def run_case(self, case: Case) -> CaseResult:
        spec = case.spec
        reason = self.requirements(spec)
        if reason:
            self._skip(case, reason)
        samples = self.samples_for(self.subset_size(spec))
        resolver = self.resolver(spec)

        def load():
            model = self.backend(spec)
            if model.kind == "text":
                resolver.warm()  # load the NLI model now, not inside the first timed batch
            return model

        backend = LazyBackend(load)
        runner = CaseRunner(spec, self.labels, backend, resolver, self.store, progress=self._progress(case))
        try:
            result = runner.run(samples)
        except Exception as exc:  # cannot load, bad key, lost server: one line, a row, no traceback
            what = "cannot load the model" if not backend.loaded else "the backend failed"
            reason = f"{what}: {type(exc).__name__}: {one_line(exc)}"
            case.item.user_properties.append((ROW_KEY, report.skipped_row(spec, "error", reason)))
            pytest.fail(f"{case.case_id}: {reason}", pytrace=False)
        self._spent_now[case.case_id] = backend.spent_usd
        if result.metrics is not None and result.metrics.average != self.opt.average:
            result = replace(result, metrics=result.metrics.with_average(self.opt.average))
        self._write_samples(case, result)
        return result

    def _progress(self, case: Case):
        """Progress lines for long cases: after 10 s, then every 30 s. An xdist worker writes them to
        its stderr, which it shares with the controller's terminal (its stdout goes nowhere)."""
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        capman = self.config.pluginmanager.get_plugin("capturemanager")
        worker = getattr(self.config, "workerinput", {}).get("workerid")
        if capman is None or (tr is None and not worker):
            return lambda done, total: None
        start = time.monotonic()
        due = [start + 10.0]

        def show(done: int, total: int) -> None:
            now = time.monotonic()
            if now >= due[0] and done < total:
                due[0] = now + 30.0
                line = f"  {case.case_id}: {done}/{total} samples after {now - start:.0f} s"
                with capman.global_and_fixture_disabled():
                    if worker:
                        sys.stderr.write(f"\n[{worker}]{line}\n")
                        sys.stderr.flush()
                    else:
                        tr.write_line(line)
        return show

    def _write_samples(self, case: Case, result: CaseResult) -> None:
        """Per-sample JSONL and per-class metrics, written by the process that ran the case."""
        report.write_samples(self.report_dir / "samples" / f"{case.case_id}.jsonl", result.predictions)
        if result.order_rows:  # --orders K: every order's rows; the file above is order 0, as K=1 writes it
            report.write_samples(self.report_dir / "samples" / f"{case.case_id}.orders.jsonl", result.order_rows)
        if result.predictions:
            from .metrics import per_class

            rows = per_class(result.predictions, self.labels.names)
            report.atomic_write(self.report_dir / "per_class" / f"{case.case_id}.json", json.dumps(rows, indent=1))

    def gate_failures(self, case: Case, result: CaseResult) -> list[str]:
        """Why the case fails its gate: the accuracy interval's upper bound below the threshold,
        McNemar against --baseline, and for smoke models any lost sample or error row."""
        spec, m = case.spec, result.metrics
        threshold = spec.model.threshold(spec.ways)
        if m is None:
            return [f"{case.case_id}: no prediction was made ({result.stopped or 'no samples'})"]
        why = []
        if threshold is not None and m.accuracy_ci[1] < threshold:
            lo, hi = m.accuracy_ci
            why.append(f"{spec.model.name} at {spec.ways}-way: accuracy {m.accuracy:.3f} "
                       f"(95% CI {lo:.3f}-{hi:.3f}, n={m.n}) is below the gate {threshold:.3f}")
        if m.errors == m.n:
            first = next((p.error for p in result.predictions if p.error), "")
            why.append(f"{case.case_id}: every one of the {m.n} samples failed, e.g. {first[:200]}")
        elif spec.model.smoke:
            # an unreadable image is the data's fault, not the plumbing's: listed in the report, not failed
            errors = m.errors - sum(report.is_input_error(p.error) for p in result.predictions)
            if errors or (result.not_run and not result.stopped.startswith("stopped by --max-cost")):
                why.append(f"{case.case_id}: smoke plumbing check: {errors} error rows, {result.not_run} samples not run")
        base = self.baseline.predictions(case.case_id) if self.baseline is not None else None
        if base:
            from .compare import worse_than_baseline

            result.notes.extend(self._baseline_mismatch(case))
            worse, text = worse_than_baseline(result.predictions, base)
            if worse:
                why.append(f"{case.case_id}: {text}")
        return why

    def _baseline_mismatch(self, case: Case) -> list[str]:
        """A paired test on the same sample ids still compares apples and oranges if the baseline
        ran another prompt, dataset, label mode, resolver or seed: say so next to the verdict."""
        row = next((r for r in self.baseline.rows if r.get("case_id") == case.case_id), {})
        now = report.spec_fields(case.spec)
        differ = [k for k in ("dataset", "prompt", "labels", "resolver", "seed", "layout") if k in row and row[k] != now[k]]
        return [f"the --baseline run differs in {', '.join(f'{k} ({row[k]} vs {now[k]})' for k in differ)}"] if differ else []

    def check_gate(self, case: Case, result: CaseResult) -> None:
        threshold = case.spec.model.threshold(case.spec.ways)
        why = self.gate_failures(case, result)
        status = "failed" if why else ("passed" if threshold is not None else "no gate")
        case.item.user_properties.append((ROW_KEY, report.case_row(result, status=status, threshold=threshold, reason="; ".join(why),
                                                                   spent_now=self._spent_now.get(case.case_id))))
        if why:
            pytest.fail("; ".join(why), pytrace=False)

    # ------------------------------------------------------------------ hooks (registered as a plugin)
    def pytest_sessionstart(self, session) -> None:
        # Validated up front (not inside collection, where a UsageError becomes a collection error),
        # when the user asked for a dataset setting; workers trust their controller.
        if hasattr(self.config, "workerinput"):
            return
        if not self.catalog and self.opt.catalog:  # else pytest crashes on an empty parametrization
            raise pytest.UsageError(f"catalog {self.opt.catalog} defines no model: add a [models.NAME] table "
                                    "with backend and weights (see vlmcls/catalog.toml for examples)")
        given = any(getattr(self.opt, k) not in (None, d) for k, d in (("dataset", "sample"), ("ways", None), ("samples", None)))
        if given:
            self.validate()
            # Draw (and for the hub, download and cache) the subset once, here: an unreachable or
            # gated dataset is one line now, and xdist workers then read the cached subset.
            sizes = {self.subset_size(c.spec) for c in self.cases()} if self.opt.study else {self.opt.samples}
            for k in sizes:  # --study: 10,000 images for 20-way, 1,600 for 100- and 1000-way
                self.samples_for(k)
        if self.opt.study and not self.cases():
            raise pytest.UsageError(f"--study: the catalog has no study row{' at --ways ' + ','.join(map(str, self.opt.ways)) if self.opt.ways else ''}")
        if self.opt.baseline:
            _ = self.baseline  # an unreadable --baseline is a usage error now, not a failed case later

    def pytest_collection_modifyitems(self, items) -> None:
        if any("vlmcls_case" in getattr(getattr(i, "callspec", None), "params", {}) for i in items):
            self.validate()

    def pytest_runtest_logreport(self, report) -> None:
        if hasattr(self.config, "workerinput"):
            return
        rows = [v for k, v in report.user_properties if k == ROW_KEY]
        if rows and report.when in ("call", "setup"):
            self.rows.extend(r for r in rows if r not in self.rows)
        elif report.failed and report.when == "???":  # xdist: the worker died inside this test
            match = re.search(r"\[(.+)\]$", report.nodeid)
            case_id = match.group(1) if match else report.nodeid
            if all(r["case_id"] != case_id for r in self.rows):  # xdist may retry it on a new worker
                self.rows.append({"case_id": case_id, "model": report.nodeid, "ways": 0, "status": "crashed",
                                  "metrics": None, "stages": {}, "reason": _crash_reason(report.longreprtext)})

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error) -> None:
        if error:
            self.crashed.append(f"worker {node.gateway.id} went down: {one_line(error)}")

    def pytest_sessionfinish(self, session) -> None:
        if hasattr(self.config, "workerinput") or not self.rows:
            return
        from . import provenance

        meta = {"run_id": self.run_id, "argv": [a for a in sys.argv[1:]], "crashed_workers": self.crashed,
                "provenance": provenance.collect()}
        self.written = report.write_report(self.rows, self.report_dir, meta)
        from .compare import finish_report

        finish_report(self.report_dir, self.rows, catalog=self.catalog, baseline=self.baseline,
                      provenance=provenance.markdown(meta))

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if hasattr(self.config, "workerinput") or not self.rows:
            return
        tr = terminalreporter
        tr.section("vlmcls results")
        done = sorted((r for r in self.rows if r.get("metrics")), key=lambda r: r["model"])
        for ways in sorted({r["ways"] for r in done}):
            tr.write_line(f"{ways}-way")
            tr.write_line(terminal_text(report.study_table([r for r in done if r["ways"] == ways])))
        for line in report._notes(done)[2:]:  # skip the markdown heading
            if line:
                tr.write_line(terminal_text(line))
        # pytest's -rs summary already lists each skip reason: say it once, not twice
        shown_by_pytest = ("skipped",) if tr.hasopt("s") else ()
        for line in not_run_lines([r for r in self.rows if not r.get("metrics") and r["status"] not in shown_by_pytest]):
            tr.write_line(terminal_text(line))
        for line in self.crashed:
            tr.write_line(line)
        # the report path is printed last of all, in pytest_unconfigure (plugin.py)

    def close(self) -> None:
        for backend in self._backends.values():
            backend.close()
        self._backends.clear()
        if "store" in self.__dict__:
            self.store.close()


def not_run_lines(rows: list[dict]) -> list[str]:
    """One line per (status, reason): a model's 20- and 100-way cases skipped for the same missing key
    are one line naming both."""
    groups: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        groups.setdefault((r["status"], r.get("reason") or ""), []).append(r["case_id"])
    return [f"{status}: {', '.join(ids)}: {reason}" for (status, reason), ids in groups.items()]


def terminal_text(text: str) -> str:
    """Markdown cell text back to plain text for a terminal: no HTML entities, no control characters
    (an answer's escape sequence must not drive the user's terminal)."""
    import html

    return "".join(c for c in html.unescape(text) if c.isprintable() or c in "\n\t")


def _crash_reason(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if "crashed" in line]
    return (lines[-1] if lines else "the worker crashed while running this case")[:300]


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
        answers = self._backend.answer(queries)
        self.spent_usd += sum(a.cost_usd or 0.0 for a in answers)
        return answers

    @property
    def kind(self) -> str:
        return getattr(self._backend, "kind", "text")

    @property
    def notes(self) -> list[str]:
        return list(getattr(self._backend, "notes", []))

    def close(self) -> None:
        pass  # the session owns loaded backends and closes them


def one_line(exc: Any) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def nli_requirement(model: str) -> str | None:
    if is_smoke(model) or Path(model).exists():
        return None
    from .hub import reachable

    if reachable(model):
        return None
    return f"NLI model {model} is not reachable offline; use --resolver exact, or --nli-model PATH"


def worker_device() -> str:
    """'auto', or on a multi-GPU machine under xdist, this worker's own GPU (gw3 -> cuda:3 % count)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        return "auto"
    try:
        import torch

        count = torch.cuda.device_count()
    except Exception:
        return "auto"
    return f"cuda:{int(worker[2:]) % count}" if count > 1 else "auto"
