"""Test-wide setup: offline hub, a temporary HF_HOME, and one shared folder of tiny smoke models."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Set before anything imports huggingface_hub / datasets: they read these at import time.
_TMP = Path(tempfile.mkdtemp(prefix="vlmcls-tests-"))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HOME"] = str(_TMP / "hf_home")
os.environ.setdefault("VLMCLS_SMOKE_DIR", str(_TMP / "smoke"))
os.environ.pop("HF_TOKEN", None)

import pytest  # noqa: E402

pytest_plugins = ["pytester"]


# Mutation testing (mutmut) of modules that run code at import (the match stage's cue tables and rule
# closures) or cache what they compute (lru-cached ImageNet names and phrase indexes), in import order:
# resolve takes match's names at its import. mutmut runs each mutant's tests in a process forked from one that imported
# them unmutated, and maps a function to the tests during which it ran: neither sees import-time code,
# so its mutants survived unseen. Re-running the modules (in place: classes already imported read the
# new module globals at call time) under the mutant, and before every test while mutmut maps its tests,
# makes them count.
_IMPORT_TIME = ("vlmcls.labels", "vlmcls.match", "vlmcls.resolve")
_reloaded_for: set[str] = set()


@pytest.fixture(autouse=True)
def _import_time_code_under_the_mutant():
    mutant = os.environ.get("MUTANT_UNDER_TEST", "")
    mine = any(mutant.startswith(module + ".") for module in _IMPORT_TIME)
    if mutant == "stats" or (mine and mutant not in _reloaded_for):
        import importlib
        import sys

        for module in _IMPORT_TIME:
            importlib.reload(sys.modules.get(module) or importlib.import_module(module))
        if mine:
            _reloaded_for.add(mutant)
    yield


@pytest.fixture(scope="session")
def smoke_model():
    """Path of a tiny random-weight model, built once per test session: smoke_model("qwen2-vl")."""
    from vlmcls.smoke import ensure

    return ensure


BENCH = Path(__file__).resolve().parents[1] / "bench" / "test_classify.py"


@pytest.fixture
def bench(pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytester folder with the benchmark's cases (bench/test_classify.py), as a checkout has them: the
    plugin runs there as users run it. A module that needs more (a catalog, a conftest) overrides
    `bench`, asking for this one by the same name."""
    (pytester.path / "bench").mkdir()
    (pytester.path / "bench" / "test_classify.py").write_text(BENCH.read_text())
    return pytester
