"""Session 14's findings, each read against the real code: README claims (the keys of a case that did not
run, meta's keys without --baseline, a fingerprint's forms), and what a new user tripped on (a stage share of
1 in 200 printed "0%", `--ways 20,,100` read as 20,100, a malformed -k left an empty result store)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_a_case_that_did_not_run_and_meta_have_the_keys_the_readme_says(tmp_path):
    for k, name in enumerate(("heron", "stork", "tabby cat")):
        (tmp_path / "birds" / name).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (24, 16), (80 * k, 40 * i, 9)).save(tmp_path / "birds" / name / f"{i}.jpg")
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "PYTEST_ADDOPTS")}
    done = subprocess.run([sys.executable, "-m", "pytest", str(ROOT / "bench" / "test_classify.py"), "-p", "no:cacheprovider",
                           "-k", "smoke-echo or gpt-4o-mini-", "--dataset", "birds", "--ways", "3", "--run-id", "r"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    results = json.loads((tmp_path / "reports" / "r" / "results.json").read_text())
    ran = next(c for c in results["cases"] if c["case_id"] == "smoke-echo-3way")
    skipped = next(c for c in results["cases"] if c["status"] == "skipped")
    identity = set(ran) & set(skipped) - {"status", "reason", "metrics", "stages", "notes"}
    assert {"case_id", "model", "ways", "settings", "prompt"} <= identity
    assert set(skipped) - identity == {"status", "reason", "metrics", "stages", "notes"}
    assert (skipped["metrics"], skipped["stages"], skipped["notes"]) == (None, {}, [])
    assert {"threshold", "errors", "cost_usd"} <= set(ran) - set(skipped)  # what the README says a skipped row lacks
    bullet = README.split("- `meta`:", 1)[1].split("\n## ", 1)[0]
    for key in ("crashed_workers", "dataset", "run_id", "argv", "provenance", "catalog"):
        assert f"`{key}`" in bullet and key in results["meta"], key
    assert results["meta"]["crashed_workers"] == []
    for key in ("name", "read_from", "classes", "images", "per_class", "small_classes", "ignored_folders", "renamed", "notes"):
        assert f"`{key}`" in bullet and key in results["meta"]["dataset"], key
    assert "with `--baseline` only, `baseline`" in bullet and "baseline" not in results["meta"]
    assert "no `threshold`, `errors` or `cost_usd`" in README


def test_a_fingerprint_has_the_form_the_readme_gives_for_a_file_and_for_bytes(tmp_path):
    import hashlib
    import re

    from vlmcls.runner import fingerprint
    from vlmcls.types import Sample

    data = b"\xff\xd8 not decoded here"
    f = tmp_path / "a.jpg"
    f.write_bytes(data)
    sha = hashlib.sha1(data).hexdigest()[:16]
    assert "`LABEL:SIZE-MTIME#SHA1` for a file" in README and "`LABEL:SHA1` for an image held as bytes" in README
    assert fingerprint(Sample("b", 7, data)) == f"7:{sha}"
    assert re.fullmatch(rf"3:{len(data)}-\d+", fingerprint(Sample("a", 3, str(f))))  # `#SHA1` is added when stored


def test_a_stage_share_that_is_not_zero_never_prints_as_zero_percent():
    from vlmcls.report.markdown import _share

    # 1 of 200 is 0.005, which Python's half-to-even rounding printed "0%"; 199 of 200 is not "100%" either
    assert [_share(v) for v in (0, 0.001, 0.005, 1 / 200, 0.0051, 0.5, 0.995, 199 / 200, 0.999, 1)] == [
        "0%", "<1%", "<1%", "<1%", "1%", "50%", ">99%", ">99%", ">99%", "100%"]


def test_a_ways_list_with_a_value_left_out_is_refused_not_read_as_the_rest():
    import argparse

    import pytest

    from vlmcls.options import ways_list

    assert ways_list("20,100") == ways_list(" 20 , 100 ") == (20, 100)
    for text in ("20,,100", "20,", ",100", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="--ways takes integers separated by commas"):
            ways_list(text)


def test_a_run_that_stops_before_any_case_leaves_no_empty_result_store(tmp_path):
    done = subprocess.run([sys.executable, "-m", "pytest", str(ROOT / "bench" / "test_classify.py"), "-p", "no:cacheprovider",
                           "-k", "a and"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 4 and "Wrong expression passed to '-k'" in done.stdout + done.stderr
    assert not (tmp_path / "reports" / "store.sqlite").exists()  # was an empty database
    (tmp_path / "reports" / "store.sqlite").write_text("not a database")  # a file there is still checked up front
    bad = subprocess.run([sys.executable, "-m", "pytest", str(ROOT / "bench" / "test_classify.py"), "-p", "no:cacheprovider",
                          "-k", "smoke-echo", "--ways", "20", "--samples", "4"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 4 and "cannot open it as the result store" in bad.stderr, bad.stdout[-1500:] + bad.stderr[-1500:]


def test_the_catalog_header_names_every_key_an_entry_may_have():
    import re

    from vlmcls.catalog import ModelEntry

    header = (ROOT / "vlmcls" / "catalog.toml").read_text(encoding="utf-8").split("\n\n", 1)[0]
    named = set(re.findall(r"^#   (\w+)\s", header, re.M))
    assert named == set(ModelEntry.__dataclass_fields__) - {"name", "weights_problem"}  # the load error's `known`
