"""The vocabulary is defined once, "auto" is settled in one place, and exceptions become one line."""
from __future__ import annotations

import subprocess
import sys

import pytest

from vlmcls import catalog, devices, labels, options, prompts, resolve, settings, types, vocab
from vlmcls.errors import one_line


def test_every_module_lists_the_same_names_as_vocab():
    assert settings.RESOLVERS is vocab.RESOLVERS and resolve.MODES is vocab.RESOLVERS
    assert settings.QUANTS is vocab.QUANTS and catalog.QUANTS is vocab.QUANTS
    assert catalog.DTYPES is vocab.DTYPES and prompts.LAYOUTS is vocab.LAYOUTS and types.STAGES is vocab.STAGES
    assert set(vocab.NLI_RESOLVERS) <= set(vocab.RESOLVERS)
    assert vocab.STUDY_PROMPT in prompts.TEMPLATES and vocab.STUDY_LABELS in vocab.LABEL_MODES


@pytest.mark.parametrize("flag, names", [("--resolver", vocab.RESOLVERS), ("--quant", vocab.QUANTS),
                                         ("--dtype", vocab.DTYPES), ("--layout", vocab.LAYOUTS),
                                         ("--labels", vocab.LABEL_MODES)])
def test_the_command_line_accepts_exactly_the_vocabulary(flag, names):
    import argparse

    parser = argparse.ArgumentParser()
    parser.addoption = parser.add_argument  # pytest's parser.getgroup(...).addoption, as argparse
    parser.getgroup = lambda *a, **k: parser
    options.add_options(parser)
    for name in names:
        parser.parse_args([flag, name])
    with pytest.raises(SystemExit):  # argparse's exit on a bad value (pytest turns it into a UsageError)
        parser.parse_args([flag, "nonsense"])


def test_thesis_is_one_alias_table_from_the_old_name_to_the_canonical_and_back():
    allowed = {"labels": vocab.LABEL_MODES, "resolver": vocab.RESOLVERS, "layout": vocab.LAYOUTS}
    assert set(vocab.ALIASES) == set(allowed)
    assert (vocab.STUDY_LABELS, vocab.STUDY_RESOLVER, vocab.STUDY_LAYOUT) == ("raw", "study", "image-first")
    for setting, table in vocab.ALIASES.items():
        assert table == {"thesis": vocab.canonical(setting, "thesis")} and "thesis" not in allowed[setting]
        for name in allowed[setting]:
            assert vocab.canonical(setting, name) == name  # canonical names map to themselves
            assert vocab.stored(setting, name) == ("thesis" if name == table["thesis"] else name)
    assert vocab.STUDY_PROMPT == "thesis"  # the prompt keeps its name


@pytest.mark.parametrize("flag, canonical", [("--labels", "raw"), ("--resolver", "study"), ("--layout", "image-first")])
def test_the_command_line_reads_thesis_as_the_canonical_name(flag, canonical):
    import argparse

    parser = argparse.ArgumentParser()
    parser.addoption = parser.add_argument
    parser.getgroup = lambda *a, **k: parser
    options.add_options(parser)
    dest = parser._option_string_actions[flag].dest
    assert getattr(parser.parse_args([flag, "thesis"]), dest) == canonical


def test_auto_dtype_depends_on_the_device_and_the_backend():
    assert devices.pick_dtype("auto", "cpu") == "float32"
    assert devices.pick_dtype(None, "cuda:1", gpu="float16") == "float16"
    assert devices.pick_dtype("auto", "cuda") == "bfloat16"
    assert devices.pick_dtype("auto", "cuda", gpu=lambda: "float16") == "float16"
    assert devices.pick_dtype("auto", "cpu", gpu=lambda: pytest.fail("asked off the GPU")) == "float32"
    assert [devices.pick_dtype(a, "cpu") for a in ("bf16", "fp16", "half", "fp32")] == \
        ["bfloat16", "float16", "float16", "float32"]
    with pytest.raises(ValueError, match="int3"):
        devices.pick_dtype("int3", "cpu")


def test_explicit_devices_pass_through_and_need_no_torch():
    code = ("import sys; from vlmcls import devices; "
            "assert devices.pick_device('cuda:1') == 'cuda:1' and devices.device_kind('cuda:1') == 'cuda'; "
            "assert devices.device_kind('mps') == 'mps'; assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_auto_device_follows_torch(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.pick_device("auto") == "cpu" and devices.device_kind("auto") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert devices.pick_device("auto") == "cuda" and devices.device_kind("auto") == "cuda"


def test_one_line():
    assert one_line(ValueError("first\nsecond")) == "first"
    assert one_line(KeyError()) == "KeyError"
    assert one_line(RuntimeError("x" * 500)) == "x" * 300
    assert one_line(OSError("bad\n  file"), with_type=True) == "OSError: bad file"
    assert one_line(OSError(""), with_type=True) == "OSError: OSError"


def test_imagenet_names_are_the_raw_first_synonyms():
    names = labels.imagenet_names()
    assert len(names) == 1000 and names[0] == "tench" and names[134] == names[517] == "crane"
    assert labels.imagenet_annotations()[0] == "tench, Tinca tinca"


def test_each_xdist_worker_takes_its_own_gpu(monkeypatch):
    import torch

    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    assert devices.worker_device() == "auto"
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw5")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert devices.worker_device() == "cuda:1"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert devices.worker_device() == "auto"


def test_a_cuda_device_where_there_is_none_is_one_line_for_the_perf_scripts():
    """vlmcls.perf, bench/perf_baselines.py and bench/perf_nli.py stop on devices.unavailable with one line
    (they once ended in 'RuntimeError: Found no NVIDIA driver' and a traceback); the CPU is always there."""
    import subprocess
    import sys

    import torch

    from vlmcls import devices

    assert devices.unavailable("cpu") is None
    assert (devices.unavailable("mps") is None) == torch.backends.mps.is_available()
    if torch.cuda.is_available():
        assert devices.unavailable("cuda") is None
        assert "CUDA GPU(s)" in devices.unavailable(f"cuda:{torch.cuda.device_count()}")
        return
    assert devices.unavailable("cuda:1") == "--device cuda:1 but no CUDA GPU is visible here"
    done = subprocess.run([sys.executable, "-m", "vlmcls.perf", "--device", "cuda", "--ways", "20"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.strip() == "--device cuda but no CUDA GPU is visible here"
