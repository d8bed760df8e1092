"""What mutation testing of vlmcls/plan.py showed untested (mutmut 3.8.1, run 6, 2026-11-27).

Each test names the mutants it kills (mutmut's names, `plan.` + function + number). The options are
parsed by the real option declarations, through test_plan's helpers.
"""
from __future__ import annotations

import argparse

from test_plan import CATALOG, entry, options
from vlmcls import plan


def test_a_namespace_without_the_strict_flags_is_not_strict():
    """Another plugin's tests (or a script) may give a namespace that declares neither --strict nor
    --strict-cases: it plans as not strict, and does not fail. Kills
    plan.xǁRunOptionsǁfrom_namespace__mutmut_32 (`getattr(opt, "strict_cases")`: AttributeError) and 35
    (default True: every such run strict)."""
    assert plan.RunOptions.from_namespace(argparse.Namespace()).strict is False
    assert plan.RunOptions.from_namespace(argparse.Namespace(strict=False)).strict is False
    assert plan.RunOptions.from_namespace(argparse.Namespace(strict_cases=True)).strict is True


def test_nli_compile_reaches_the_spec():
    """--nli-compile is a spec field, False unless given. Kills plan.x_spec__mutmut_41 (None) and 56
    (left out: always False)."""
    assert plan.spec(entry(), 20, options("--nli-compile")).nli_compile is True
    assert plan.spec(entry(), 20, options()).nli_compile is False


def test_every_case_asks_auto_device_for_its_local_models():
    """The caller's `auto_device` (an xdist worker's own GPU) reaches each case, in the matrix and under
    --study; the served model stays on "auto". Kills plan.x_cases__mutmut_10 (--study) and 22 (the matrix):
    both planned every local model on "auto"."""
    def devices(*argv: str) -> dict[str, str]:
        return {s.case_id: s.settings.device for s in plan.cases(CATALOG, options(*argv), auto_device=lambda: "cuda:1")}

    assert devices("--ways", "5") == {"v-none-5way": "cuda:1", "api-5way": "auto"}
    assert devices("--study") == {"v-int8-20way": "cuda:1", "v-none-100way": "cuda:1"}
