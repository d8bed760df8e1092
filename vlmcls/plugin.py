"""The pytest plugin: options, case parametrization, fixtures and the hooks around one session.

Thin hooks around one `BenchSession` kept in `config.stash` (it is also registered as a plugin for
the reporting hooks); all real work is in the runner. Registered as a `pytest11` entry point and
from the repository's root conftest.py.
"""
from __future__ import annotations

import os
import sys

import pytest

from .options import add_options
from .session import BenchSession, Case

SESSION = pytest.StashKey[BenchSession]()


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
    workerinput = getattr(config, "workerinput", None)
    session = BenchSession(config, run_id=(workerinput or {}).get("vlmcls_run_id"))
    config.stash[SESSION] = session
    config.pluginmanager.register(session, "vlmcls-session")


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(SESSION, None)
    if session is None:
        return
    session.close()
    written = getattr(session, "written", None)
    tr = config.pluginmanager.get_plugin("terminalreporter")
    if written and tr is not None:  # after pytest's own summary: the path is the last line a user sees
        tr.write_line(f"report: {written}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    """A case that skips itself points at its own test, not at the line in session.py that called skip."""
    rep = yield
    if rep.skipped and isinstance(rep.longrepr, tuple) and "vlmcls_case" in getattr(item, "fixturenames", ()):
        path, line = item.reportinfo()[:2]
        rep.longrepr = (str(path), (line or 0) + 1, rep.longrepr[2])
    return rep


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

    return CaseGroupScheduling(config, log)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "vlmcls_case" not in metafunc.fixturenames:
        return
    bench = metafunc.config.stash[SESSION]
    metafunc.parametrize("vlmcls_case", [
        pytest.param(case, id=case.case_id, marks=[pytest.mark.xdist_group(case.group), pytest.mark.vlmcls_case])
        for case in bench.cases()
    ], indirect=True)


def _group(item: pytest.Item) -> str:
    params = getattr(getattr(item, "callspec", None), "params", {})
    return getattr(params.get("vlmcls_case"), "group", "")  # no case at all: pytest's NOTSET stand-in


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Keep each model's cases together: a model loads once and is released before the next one.
    order = {id(item): i for i, item in enumerate(items)}
    items.sort(key=lambda item: (_group(item), order[id(item)]))


@pytest.fixture
def vlmcls_case(request: pytest.FixtureRequest) -> Case:
    """The case of this test, bound to the session (its model is loaded once per process)."""
    return request.param.bind(request.config.stash[SESSION], request.node)


@pytest.fixture(scope="session")
def vlmcls_session(request: pytest.FixtureRequest) -> BenchSession:
    return request.config.stash[SESSION]
