"""The pytest plugin: every vlmcls hook and fixture, each a few lines handing work to plain objects.

The command line is read once into a frozen `RunOptions` (vlmcls.plan); one `BenchSession` per
process (vlmcls.session) is kept in `config.stash`, with `SessionHooks` registered around it for the
hooks that run once per session. A case's row is made in `pytest_runtest_makereport`, whatever the
outcome (vlmcls.outcomes); the verdict comes from vlmcls.gate. Registered as a `pytest11` entry
point and from the repository's root conftest.py.
"""
from __future__ import annotations

import os
import sys

import pytest

from .errors import one_line
from .options import add_options
from .outcomes import ROW_KEY, Case, CaseRun, case_row
from .plan import RunOptions
from .session import BenchSession

SESSION = pytest.StashKey[BenchSession]()
CASE_RUN = pytest.StashKey[CaseRun]()


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    # Cases of one model must share a worker (one load per process): loadgroup unless the user chose.
    # Installed, this hook sees every project's -n runs; loadgroup without xdist_group marks
    # distributes exactly like the default "load", so other test suites are unaffected.
    # xdist's own tryfirst hook may already have turned "no" into "load": look at what the user typed.
    chosen = any(a == "--dist" or a.startswith("--dist=") for a in config.invocation_params.args)
    if getattr(config.option, "numprocesses", None) and not chosen:
        config.option.dist = "loadgroup"


def worker_threads() -> int | None:
    """Torch threads for this xdist worker: the cores shared out among the workers (None: not a worker).

    Every worker would otherwise start torch with all the cores: two workers on 2 cores ran the
    smoke models 2x slower than one process (oversubscription)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return None
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    return max(1, cores // max(1, workers))


def _limit_threads() -> None:
    threads = worker_threads()
    if threads is None:
        return
    user = os.environ.get("OMP_NUM_THREADS", "")  # inherited from the user's shell: their choice wins
    threads = int(user) if user.isdigit() and int(user) > 0 else threads
    # Set before torch loads (it sizes its pool from OMP_NUM_THREADS at import) ...
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["MKL_NUM_THREADS"] = str(threads)  # torch also reads it: one value, or the smaller wins
    if "torch" in sys.modules:  # ... or tell it directly when a conftest imported it already
        sys.modules["torch"].set_num_threads(threads)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "vlmcls_case: a vlmcls benchmark case (model x N-way)")
    _limit_threads()
    if getattr(config.option, "capture", "fd") != "no":
        # Weight-loading bars would only land in captured output and clutter failure reports.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if getattr(config.option, "dist", "no") != "no" or os.environ.get("PYTEST_XDIST_WORKER"):
        # pytest-benchmark cannot time under xdist and would warn: switch it off explicitly.
        if hasattr(config.option, "benchmark_disable"):
            config.option.benchmark_disable = True
    run_id = (getattr(config, "workerinput", None) or {}).get("vlmcls_run_id")
    session = BenchSession(config, RunOptions.from_namespace(config.option), run_id=run_id)
    config.stash[SESSION] = session
    config.pluginmanager.register(SessionHooks(session), "vlmcls-session")


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(SESSION, None)
    if session is None:
        return
    session.close()
    tr = config.pluginmanager.get_plugin("terminalreporter")
    if session.interrupt_line and tr is not None:  # below pytest's KeyboardInterrupt lines
        tr.write_line(session.interrupt_line)
    if session.written and tr is not None:  # after pytest's own summary: the path is the last line a user sees
        replaced = " (it replaced the earlier run of that --run-id)" if session.replaced else ""
        tr.write_line(f"report: {session.written}{replaced}")


class SessionHooks:
    """The hooks around one session; workers run cases, the controller (or a serial run) reports."""

    def __init__(self, session: BenchSession):
        self.bench = session

    def pytest_sessionstart(self) -> None:
        redact_logs(self.bench.config)
        if not self.bench.is_worker:  # workers trust their controller
            self.bench.check_up_front()

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        # Keep each model's cases together: a model loads once and is released before the next one.
        order = {id(item): i for i, item in enumerate(items)}
        items.sort(key=lambda item: (_group(item), order[id(item)]))
        if any("vlmcls_case" in getattr(getattr(i, "callspec", None), "params", {}) for i in items):
            self.bench.validate()

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        self.bench.deselected += [c for c in map(_case, items) if c is not None]  # may come twice: -k, then -m

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.bench.collected([c for c in map(_case, session.items) if c is not None])

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node, ids: list[str]) -> None:
        self.bench.collected_ids(ids)

    @pytest.hookimpl(tryfirst=True)  # before the terminal reporter's, which takes a while
    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo) -> None:
        if not excinfo.errisinstance(KeyboardInterrupt):  # pytest.exit() says why itself
            return
        if why := stop_rule(excinfo.value, self.bench.ctrl_c.presses):
            self.bench.stopped(why)
        else:
            self.bench.interrupted()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not self.bench.is_worker:
            self.bench.collect(report)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error) -> None:
        self.bench.worker_down(node, error)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if not self.bench.is_worker:
            if session.shouldfail or session.shouldstop:  # -x / --maxfail in a serial run; --sw
                self.bench.stopped(str(session.shouldfail or session.shouldstop))
            self.bench.finish()

    def pytest_terminal_summary(self, terminalreporter) -> None:
        lines = [] if self.bench.is_worker or not self.bench.rows else self.bench.summary_lines(
            terminalreporter.hasopt("s"), compact=terminalreporter.config.get_verbosity() <= -2)
        if lines:
            terminalreporter.section("vlmcls results")
        for line in lines:
            terminalreporter.write_line(line)
        if not self.bench.is_worker and (hint := self.bench.selection_hint()):
            terminalreporter.write_line(hint)
        if lines and (note := dist_note(terminalreporter.config)):
            terminalreporter.write_line(note)
        # the report path is printed last of all, in pytest_unconfigure


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    """The case's row, made here whatever the outcome and sent with the report (to the controller,
    under xdist); a case that skips itself points at its own test, not at the vlmcls line that skipped."""
    rep = yield
    run = item.stash.get(CASE_RUN, None)
    row = run.row() if run is not None and rep.when == "call" else None
    if rep.when == "call" and rep.failed and run is not None:
        row = failed_row(run, row, rep)
    if row is not None:  # a new list: the item's own would carry the row into the teardown report too
        rep.user_properties = [*rep.user_properties, (ROW_KEY, row)]
        # plain figures for --junitxml (it writes the properties the teardown report carries: the item's)
        item.user_properties.extend(junit_properties(row))
    if rep.skipped and isinstance(rep.longrepr, tuple) and "vlmcls_case" in getattr(item, "fixturenames", ()):
        path, line = item.reportinfo()[:2]
        rep.longrepr = (str(path), (line or 0) + 1, rep.longrepr[2])
    return rep


def redact_logs(config: pytest.Config) -> None:
    """Every log line pytest shows or writes (a failure's captured log, log_cli, log_file, junit_logging)
    passes vlmcls.backends.api.LogRedactor: keys and a URL's credentials stay out of them."""
    from .backends.api import LogRedactor

    plugin = config.pluginmanager.get_plugin("logging-plugin")
    for name in ("caplog_handler", "report_handler", "log_cli_handler", "log_file_handler"):
        handler = getattr(plugin, name, None)
        if handler is not None and not any(isinstance(f, LogRedactor) for f in handler.filters):
            handler.addFilter(LogRedactor())


def dist_note(config: pytest.Config) -> str | None:
    """A --dist the user chose that does not keep a model's cases on one worker: said once (the figures are
    the same; the time is not)."""
    dist = config.getvalue("dist") if getattr(config.option, "numprocesses", None) else None
    if dist in (None, "no", "loadgroup"):
        return None
    spread = "spread over the workers, each loading the model"
    how = {"load": spread, "worksteal": spread, "each": "on every worker, each running them all"}.get(
        dist, "all on one worker (one test file: no parallelism)")
    return (f"vlmcls: with --dist {dist} the cases of a model can run {how}; --dist loadgroup, used when "
            "--dist is not given, keeps each model's cases on one worker and spreads the models")


def stop_rule(exc: BaseException, presses: int) -> str:
    """Why pytest stopped, where a rule of its own stopped it rather than Ctrl-C ("" for Ctrl-C): pytest's
    and xdist's `Interrupted` (both KeyboardInterrupts) carry "stopping after 1 failures" (-x, --maxfail)
    or the stepwise plugin's reason; xdist's says "received keyboard-interrupt" for a real Ctrl-C."""
    if presses or type(exc).__name__ != "Interrupted" or "keyboard-interrupt" in str(exc):
        return ""
    return str(exc) or "pytest stopped the run"


def failed_row(run: CaseRun, row: dict | None, rep: pytest.TestReport) -> dict | None:
    """A test that failed where vlmcls's verdict did not: the row says so, whatever the report would
    otherwise claim. The test ended inside the case (pytest-timeout's `--timeout`, a plugin's stop):
    an error row, not a case missing from the report; the gate passed and the test's own code then failed
    (a team's `assert` after `vlmcls_bench.check`): the row fails too, with that message."""
    crash = getattr(rep.longrepr, "reprcrash", None)
    message = one_line(crash.message if crash is not None else str(rep.longrepr or "the test failed"))
    if row is None and run.result is not None:  # the case finished; the test failed before its gate was checked
        from . import report

        return report.case_row(run.result, status="failed", threshold=None,
                               reason=f"the test failed before the gate was checked: {message}")
    if row is None and run.spec is not None:
        return case_row(run.spec, status="error", reason=f"the test ended before the case finished: {message}")
    if row is not None and row.get("status") in ("passed", "no gate"):
        return {**row, "status": "failed", "reason": f"the test failed after the gate passed: {message}"}
    return row


def junit_properties(row: dict) -> list[tuple[str, object]]:
    """A case's headline figures as plain `--junitxml` properties (the row itself stays out of the XML)."""
    props: list[tuple[str, object]] = [("vlmcls_status", row.get("status"))]
    metrics = row.get("metrics") or {}
    if metrics:
        low, high = metrics.get("accuracy_ci") or (None, None)
        props += [("vlmcls_accuracy", metrics.get("accuracy")), ("vlmcls_accuracy_ci_low", low),
                  ("vlmcls_accuracy_ci_high", high), ("vlmcls_n", metrics.get("n"))]
    if row.get("threshold") is not None:
        props.append(("vlmcls_threshold", row["threshold"]))
    if row.get("smoke"):  # a random-weight model or a stand-in: its accuracy is chance (absent for real models)
        props.append(("vlmcls_smoke", True))
    return [(k, v) for k, v in props if v is not None]


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """xdist controller -> worker: every worker writes into the same run folder."""
    node.workerinput["vlmcls_run_id"] = node.config.stash[SESSION].run_id


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """loadgroup that knows the vlmcls cases: a case id maps to its model's group.

    xdist's own loadgroup carries the group as an "@group" suffix that workers append to node ids;
    with pytest >= 9.2 that suffix silently disappears (pytest-xdist issue #1386) and cases of one
    model would be spread over workers, each loading the model. The controller knows the catalog, so
    it groups vlmcls cases by model itself and falls back to xdist's rule for everything else."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    groups = {case.case_id: case.group for case in config.stash[SESSION].cases()}

    class CaseGroupScheduling(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            param = nodeid[nodeid.rfind("[") + 1:-1] if nodeid.endswith("]") else ""
            return f"vlmcls:{groups[param]}" if param in groups else super()._split_scope(nodeid)

        def _reschedule(self, node) -> None:
            """A replacement worker that has not finished collecting gets work once it has (xdist calls
            schedule() again then): two workers crashing at once made xdist hand work to a replacement
            whose collection it did not have yet (INTERNALERROR, KeyError in _assign_work_unit)."""
            if node in self.registered_collections:
                super()._reschedule(node)

        def remove_node(self, node):
            """A crashed worker's test is reported once: xdist 3.8's scope schedulers put it back in the
            queue (pytest-xdist #1371), so each replacement worker ran the crashing case again until the
            restarts ran out, and a group left with nothing pending could hang the run (#1378). Here the
            crashed test counts as done and only groups with tests still to run go back in the queue."""
            workload = self.assigned_work.pop(node)
            pending = [nodeid for unit in workload.values() for nodeid, done in unit.items() if not done]
            if not pending:
                return None
            crashed = pending[0]  # xdist runs a unit's tests in order: the first not done was running
            for unit in workload.values():
                if crashed in unit:
                    unit[crashed] = True
            self.workqueue.update({scope: unit for scope, unit in workload.items() if not all(unit.values())})
            for other in self.assigned_work:
                self._reschedule(other)
            return crashed

    return CaseGroupScheduling(config, log)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "vlmcls_case" not in metafunc.fixturenames:
        return
    metafunc.parametrize("vlmcls_case", [
        pytest.param(case, id=case.case_id, marks=[pytest.mark.xdist_group(case.group), pytest.mark.vlmcls_case])
        for case in metafunc.config.stash[SESSION].cases()
    ], indirect=True)


def _group(item: pytest.Item) -> str:
    case = _case(item)
    return case.group if case is not None else ""


def _case(item: pytest.Item) -> Case | None:
    case = getattr(getattr(item, "callspec", None), "params", {}).get("vlmcls_case")
    return case if isinstance(case, Case) else None  # no case at all: pytest's NOTSET stand-in


@pytest.fixture
def vlmcls_case(request: pytest.FixtureRequest) -> Case:
    """The case of this test: its spec (model x N, every setting resolved)."""
    return request.param


@pytest.fixture
def vlmcls_bench(request: pytest.FixtureRequest) -> CaseRun:
    """Runs this test's case and judges it: `vlmcls_bench.check(vlmcls_bench.run(vlmcls_case))`."""
    run = CaseRun(request.config.stash[SESSION])
    request.node.stash[CASE_RUN] = run
    return run


@pytest.fixture(scope="session")
def vlmcls_session(request: pytest.FixtureRequest) -> BenchSession:
    return request.config.stash[SESSION]
