"""Hub code written for an older transformers (Phi-3-vision's) is found by reading it, before it runs: the
case is skipped with one line instead of failing at import or turning every sample into an error row.

The model folders here are written on disk with the constructs Phi-3-vision's 2024 `modeling_phi3_v.py`
uses (quoted from it); each expected verdict is asked of the installed transformers, so the tests hold
under the device machines' transformers 5.17 as under 5.24."""
from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from vlmcls import remote_code
from vlmcls.catalog import ModelEntry
from vlmcls.errors import Unavailable
from vlmcls.settings import BackendSettings

pytest.importorskip("transformers")

from transformers.cache_utils import DynamicCache  # noqa: E402


# Phi-3-vision's modeling_phi3_v.py (2024), the lines that meet later transformers
PHI3_V = '''
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_attn_mask_utils import _prepare_4d_causal_attention_mask
from transformers.utils import add_start_docstrings, logging
from .configuration_phi3_v import Phi3VConfig

def forward(past_key_values, seq_length, use_legacy_cache=True):
    if use_legacy_cache:
        past_key_values = DynamicCache.from_legacy_cache(past_key_values)
    past_key_values_length = past_key_values.get_usable_length(seq_length)
    return past_key_values.to_legacy_cache()
'''
# the same work in today's API: nothing to report
CURRENT = '''
from transformers import AutoConfig
from transformers.cache_utils import DynamicCache
from .configuration_x import XConfig

def forward(past_key_values):
    cache = past_key_values if past_key_values is not None else DynamicCache()
    return cache.get_seq_length()
'''


def _has_module(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def folder(tmp_path: Path, **files: str) -> Path:
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "phi3_v", "auto_map": {
        "AutoConfig": "configuration_phi3_v.Phi3VConfig", "AutoModelForCausalLM": "modeling_phi3_v.Phi3VForCausalLM"}}))
    for name, text in files.items():
        (tmp_path / f"{name}.py").write_text(text)
    return tmp_path


def test_phi3_v_code_gaps_are_what_the_installed_transformers_lacks(tmp_path):
    found = remote_code.gaps(folder(tmp_path, modeling_phi3_v=PHI3_V))
    expected = [m for m in ("from_legacy_cache", "to_legacy_cache", "get_usable_length")
                if not (hasattr(DynamicCache, m) or hasattr(DynamicCache(), m))]
    assert expected, "this transformers still has the 2024 cache API: the test below would be blind"
    for method in expected:
        assert sum(method in line for line in found) == 1, found
    mask_module = _has_module("transformers.modeling_attn_mask_utils")
    assert any("modeling_attn_mask_utils" in line for line in found) == (not mask_module)
    assert all(line.startswith("modeling_phi3_v.py: ") for line in found)
    assert len(found) == len(expected) + (not mask_module)  # nothing else: Cache, logging, the relative import


def test_current_code_has_no_gaps(tmp_path):
    assert remote_code.gaps(folder(tmp_path, modeling_x=CURRENT)) == []


def test_a_name_or_module_transformers_never_had_is_reported(tmp_path):
    code = ("from transformers.utils import logging, no_such_helper_anywhere\n"
            "from transformers.no_such_module import thing\n")
    found = remote_code.gaps(folder(tmp_path, modeling_x=code))
    assert found == [
        f"modeling_x.py: imports no_such_helper_anywhere from transformers.utils, which {remote_code._version()} does not have",
        f"modeling_x.py: imports thing from transformers.no_such_module, a module {remote_code._version()} does not have",
    ]


def test_a_file_that_defines_the_method_itself_is_not_reported(tmp_path):
    code = ("class MyCache:\n    def get_usable_length(self, n):\n        return n\n\n"
            "def f(cache):\n    return cache.get_usable_length(3)\n")
    assert remote_code.gaps(folder(tmp_path, modeling_x=code)) == []


def test_unparsable_code_is_one_line(tmp_path):
    assert remote_code.gaps(folder(tmp_path, modeling_x="def broken(:\n")) == [
        "modeling_x.py cannot be parsed (invalid syntax, line 1)"]


def test_the_reason_names_the_first_gap_counts_the_rest_and_says_what_to_do(tmp_path):
    path = folder(tmp_path, modeling_phi3_v=PHI3_V)
    found = remote_code.gaps(path)
    reason = remote_code.unavailable_reason("phi-3-vision", str(path))
    assert reason.startswith(f"phi-3-vision: its hub code was written for an older transformers: {found[0]} "
                             f"(and {len(found) - 1} more). Serve it with vLLM")
    assert "\n" not in reason
    assert remote_code.unavailable_reason("x", str(folder(tmp_path / "ok", modeling_x=CURRENT))) is None


def test_the_code_is_read_never_run(tmp_path):
    code = "import pathlib\npathlib.Path(__file__).with_name('ran').write_text('yes')\n" + PHI3_V
    path = folder(tmp_path, modeling_phi3_v=code)
    assert remote_code.gaps(path)
    assert not (path / "ran").exists()


def test_loading_such_a_model_is_unavailable_before_any_code_runs(tmp_path):
    from vlmcls.backends import hf_load

    path = folder(tmp_path, modeling_phi3_v="open('ran', 'w')\n" + PHI3_V)
    entry = ModelEntry(name="phi-3-vision", backend="hf-vlm", weights=str(path), trust_remote_code=True)
    with pytest.raises(Unavailable, match=r"^phi-3-vision: its hub code was written for an older transformers"):
        hf_load.load_model(entry, BackendSettings(trust_remote_code=True, device="cpu"))


def test_the_case_is_skipped_with_the_line_and_fails_under_strict(bench: pytest.Pytester, tmp_path):
    pytester = bench
    path = folder(tmp_path / "phi3v", modeling_phi3_v=PHI3_V)
    pytester.makefile(".toml", catalog=f'[models.old-remote]\nbackend = "hf-vlm"\nweights = "{path}"\n'
                                       'trust_remote_code = true\n')
    args = ("bench", "--catalog", "catalog.toml", "-p", "no:cacheprovider", "--ways", "20", "--samples", "4",
            "--trust-remote-code", "--resolver", "exact", "-rs")
    out = pytester.runpytest_subprocess(*args)
    out.assert_outcomes(skipped=1)
    out.stdout.fnmatch_lines(["*old-remote: its hub code was written for an older transformers: modeling_phi3_v.py: *"])
    strict = pytester.runpytest_subprocess(*args, "--strict-cases")
    strict.assert_outcomes(failed=1)


def test_with_only_its_code_cached_the_skip_is_the_verdict_not_a_weights_download(monkeypatch):
    """`hf download REPO --include '*.py' '*.json'` (what the not-cached line suggests) is enough to learn,
    before fetching the weights, that this transformers cannot run the code."""
    from huggingface_hub import constants

    from vlmcls.backends import hf_load
    from vlm_inputs import LABELS as labels

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo = Path(constants.HF_HUB_CACHE) / "models--someone--old-remote-vlm"
    snapshot = repo / "snapshots" / ("1" * 40)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text("1" * 40)
    snapshot.mkdir(parents=True, exist_ok=True)
    folder(snapshot, modeling_phi3_v=PHI3_V)  # code and config only: no weights
    entry = ModelEntry(name="phi-3-vision", backend="hf-vlm", weights="someone/old-remote-vlm", trust_remote_code=True)
    verdict = hf_load.requirements(entry, BackendSettings(trust_remote_code=True), labels)
    assert verdict == remote_code.unavailable_reason("phi-3-vision", str(snapshot))
    assert verdict.startswith("phi-3-vision: its hub code was written for an older transformers")
    # without the opt-in nothing is read: the line asks for it (and for the weights) as before
    assert "allow it with --trust-remote-code" in hf_load.requirements(entry, BackendSettings(), labels)
    # code that fits: the usual "not cached" line, and no hint to fetch the code it already has
    (snapshot / "modeling_phi3_v.py").write_text(CURRENT)
    fits = hf_load.requirements(entry, BackendSettings(trust_remote_code=True), labels)
    assert "hf download someone/old-remote-vlm`" in fits and "--include" not in fits
