"""The local Hugging Face VLM backend's machinery, on tiny random-weight Qwen2-VL, Qwen2.5-VL and LLaVA-NeXT
models loaded through the same `load()` path as real checkpoints. What every family must do (load, batch,
constrain, cache the label list) is proven family by family in test_families. Random weights answer
garbage, so the tests compare generated token ids between code paths and check types and candidates,
never content."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vlmcls import hub
from vlmcls.catalog import ModelEntry, load_catalog
from vlmcls.settings import BackendSettings
from vlmcls.types import Query
from vlm_inputs import LABELS, one_torch_thread
from vlm_inputs import load as _load
from vlm_inputs import queries as _queries
from vlm_inputs import record as _record
from vlm_inputs import run as _run

pytest.importorskip("torch")
pytest.importorskip("transformers")

from vlmcls.backends import hf_vlm  # noqa: E402

MODELS = ("smoke-qwen2-vl", "smoke-qwen2.5-vl", "smoke-llava-next")

one_thread = pytest.fixture(scope="module", autouse=True)(one_torch_thread)


@pytest.fixture(scope="session")
def catalog():
    return load_catalog()


@pytest.fixture(scope="session")
def built(smoke_model):
    """Build the three tiny models once per session."""
    return {name: smoke_model(name.removeprefix("smoke-")) for name in MODELS}


def test_import_does_not_load_torch():
    code = "import sys, vlmcls.backends.hf_vlm; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
def test_prefix_cache_refuses_differing_prefixes(catalog, built):
    queries = _queries(2, labels_first=True)
    odd = Query("odd", queries[1].image, queries[1].class_ids, queries[1].labels, queries[1].prompt, "Other: a, b.")
    answers, _, backend = _run(catalog["smoke-qwen2-vl"], [queries[0], odd], batch_size=2, layout="labels-first")
    assert all(a.error is None for a in answers)
    assert any("differs between images" in n for n in backend.notes)


@pytest.mark.slow
def test_image_first_template_falls_back_with_a_note(catalog, built):
    """Templates that render every image before any text (llava-hf's do) cannot cache the label list."""
    queries = _queries(3, labels_first=True)
    plain, rows_plain, _ = _run(catalog["smoke-qwen2-vl"], queries, batch_size=1)
    backend = _load(catalog["smoke-qwen2-vl"], batch_size=3, layout="labels-first")
    backend.processor.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n<|vision_start|><|image_pad|><|vision_end|>"
        "{% for c in m.content %}{% if c.type == 'text' %}{{ c.text }}{% endif %}{% endfor %}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    rows = _record(backend)
    answers = backend.answer(queries)
    assert backend.notes == ["labels-first: the chat template puts the image before the labels; ran without the cache"]
    assert all(a.error is None for a in answers) and backend.cached_prefix_tokens == 0
    assert len(rows) == 3 and rows != rows_plain  # a different prompt order, so different (garbage) answers


@pytest.mark.slow
def test_constrained_with_cached_prefix(catalog, built):
    queries = _queries(4, labels_first=True)
    plain, _, _ = _run(catalog["smoke-qwen2.5-vl"], queries, batch_size=1, constrained=True)
    cached, _, _ = _run(catalog["smoke-qwen2.5-vl"], queries, batch_size=4, constrained=True, layout="labels-first")
    assert [a.class_id for a in cached] == [a.class_id for a in plain]
    assert all(a.text in q.labels for q, a in zip(queries, cached))


def test_label_constraint_forces_eos_after_a_complete_label():
    import torch

    trie = hf_vlm.label_trie([[5, 6], [5, 6, 7], [8]])

    def allowed(generated: list[list[int]]) -> list[list[int]]:
        constraint = hf_vlm.LabelConstraint([trie] * len(generated), prompt_length=1, eos_ids=[2])
        ids = torch.tensor([[0] + g for g in generated])
        return [row.isfinite().nonzero().flatten().tolist() for row in constraint(ids, torch.zeros(len(ids), 10))]

    assert allowed([[5], [8]]) == [[6], [2]]  # "8" is complete with no continuation: EOS only
    assert allowed([[5, 6]]) == [[2, 7]]  # complete, or on to the longer label that shares its start
    assert allowed([[8, 2]]) == [list(range(10))]  # finished rows are left alone
    assert hf_vlm.walk_trie(trie, [5, 6, 2]).get(None) == 0 and hf_vlm.walk_trie(trie, [8, 2, 2]).get(None) == 2


@pytest.mark.slow
def test_int8_load_on_cpu(catalog, built):
    pytest.importorskip("bitsandbytes")
    answers, _, backend = _run(catalog["smoke-qwen2-vl"], _queries(2), batch_size=2, quant="int8")
    layer = backend.model.model.language_model.layers[0].mlp.gate_proj
    assert type(layer).__name__ == "Linear8bitLt"
    assert all(a.error is None and a.completion_tokens >= 1 for a in answers)
    assert any("int8" in n for n in backend.notes)


@pytest.mark.slow
def test_out_of_memory_halves_the_batch(catalog, built, monkeypatch):
    import torch

    backend = _load(catalog["smoke-qwen2-vl"], batch_size=4)
    generate = backend._generate

    def tight(batch, prep):  # pretend only two images fit on the GPU
        if len(batch) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return generate(batch, prep)

    monkeypatch.setattr(backend, "_generate", tight)
    answers = backend.answer(_queries(5))
    assert len(answers) == 5 and all(a.error is None for a in answers)
    assert backend.batch_size == 2
    assert backend.notes == ["CUDA out of memory at batch size 4: continued at batch size 2"]


@pytest.mark.slow
def test_a_bad_image_is_one_error_row(catalog, built):
    from PIL import Image

    queries = _queries(3)
    bad = Query("bad", Image.new("RGB", (600, 2)), queries[0].class_ids, queries[0].labels, queries[0].prompt)
    answers = _load(catalog["smoke-qwen2-vl"], batch_size=4).answer([queries[0], bad, queries[1]])
    assert [a.error is None for a in answers] == [True, False, True]
    assert "aspect ratio" in answers[1].error and "\n" not in answers[1].error


@pytest.mark.slow
def test_qwen_pixel_bounds_from_catalog_options(catalog, built):
    small = {"min_pixels": 28 * 28, "max_pixels": 28 * 28}  # one merged patch -> one image token
    [a] = _load(catalog["smoke-qwen2-vl"], extra=small).answer(_queries(1))
    [b] = _load(catalog["smoke-qwen2-vl"]).answer(_queries(1))
    assert a.error is None and a.prompt_tokens < b.prompt_tokens


@pytest.mark.slow
def test_llava_images_are_bounded_before_processing(catalog, built):
    from PIL import Image

    backend = _load(catalog["smoke-llava-next"], extra={"max_pixels": 10_000})
    assert backend._bound(Image.new("RGB", (400, 300))).size[0] * 300 // 400 <= 100


# ---------------------------------------------------------------- requirements (one-line reasons)

def _entry(weights: str, **kw) -> ModelEntry:
    return ModelEntry(name="m", backend="hf-vlm", weights=weights, **kw)


def test_requirements_unreachable_hub_id_offline():
    reason = hf_vlm.requirements(_entry("nobody/no-such-vlm"), BackendSettings(), LABELS)
    assert reason and "nobody/no-such-vlm" in reason and "HF_HUB_OFFLINE" in reason and "\n" not in reason
    with pytest.raises(RuntimeError, match="not in the local Hugging Face cache"):
        hf_vlm.load(_entry("nobody/no-such-vlm"), BackendSettings(), LABELS)


def test_requirements_accepts_a_cached_hub_model():
    from huggingface_hub import constants

    repo = Path(constants.HF_HUB_CACHE) / "models--someone--cached-vlm"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text("0" * 40)
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True, exist_ok=True)
    (snapshot / "config.json").write_text("{}")
    entry = _entry("someone/cached-vlm")
    assert "not in the local Hugging Face cache" in hf_vlm.requirements(entry, BackendSettings(), LABELS)
    (snapshot / "model.safetensors").write_bytes(b"")  # a snapshot without weights is not enough
    assert hf_vlm.requirements(entry, BackendSettings(), LABELS) is None


def test_requirements_missing_local_folder(tmp_path):
    reason = hf_vlm.requirements(_entry(str(tmp_path / "absent")), BackendSettings(), LABELS)
    assert reason and "does not exist" in reason


def test_requirements_int8_without_bitsandbytes(monkeypatch):
    real = hub.importable
    monkeypatch.setattr(hub, "importable", lambda name: name != "bitsandbytes" and real(name))
    reason = hf_vlm.requirements(_entry("smoke:qwen2-vl"), BackendSettings(quant="int8"), LABELS)
    assert reason == "int8 quantization needs bitsandbytes (pip install bitsandbytes)"
    assert hf_vlm.requirements(_entry("smoke:qwen2-vl"), BackendSettings(), LABELS) is None


def test_requirements_remote_code_needs_opt_in():
    entry = _entry("smoke:qwen2-vl", trust_remote_code=True)
    reason = hf_vlm.requirements(entry, BackendSettings(), LABELS)
    assert reason and "--trust-remote-code" in reason
    assert hf_vlm.requirements(entry, BackendSettings(trust_remote_code=True), LABELS) is None


def test_requirements_gated_model_without_token(monkeypatch):
    from huggingface_hub.errors import GatedRepoError

    def gated(repo_id, token=None):  # what the hub answers for a gated repo and no token
        exc = GatedRepoError.__new__(GatedRepoError)  # its __init__ wants a real HTTP response
        Exception.__init__(exc, "403 gated")
        raise exc

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("huggingface_hub.auth_check", gated)
    reason = hf_vlm.requirements(_entry("google/gemma-3-4b-it"), BackendSettings(), LABELS)
    assert reason == "google/gemma-3-4b-it is gated: accept its licence on huggingface.co and set HF_TOKEN"


# ---------------------------------------------------------------- the throughput script

@pytest.mark.slow
def test_perf_script_runs_the_backend_on_a_smoke_model(built, capsys, tmp_path):
    import json

    from vlmcls import perf

    out = tmp_path / "perf.jsonl"
    perf.main(["--arch", "smoke-qwen2-vl", "--ways", "5", "--batch-sizes", "1,2,auto", "--images", "2",
               "--new-tokens", "2", "--device", "cpu", "--out", str(out)])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows == [json.loads(line) for line in out.read_text().splitlines()]
    runs = [r for r in rows if r["part"] == "hf_vlm_generate"]
    assert [(r["layout"], r["batch_size"]) for r in runs] == [
        ("image-first", 1), ("image-first", 2), ("image-first", "auto"), ("labels-first", 1), ("labels-first", 2),
        ("labels-first", "auto")]
    assert all(r["images_per_s"] > 0 and r["prefill_s"] > 0 for r in runs)
    auto_note = "batch size auto: sized from CUDA memory, so on cpu every batch is 8"
    assert [r["notes"] for r in runs] == [[auto_note] if r["batch_size"] == "auto" else [] for r in runs]
    assert all(r["errors"] == 0 and r["new_tokens"] == 2 and r["prompt_tokens"] > 50 for r in runs)
    assert runs[0]["speedup_vs_b1"] == 1.0 and runs[4]["speedup_vs_image_first"] is not None
    assert rows[0]["part"] == "env" and rows[0]["peak_tflops"] > 0 and rows[0]["peak_dtype"] == "float32"
    assert all(r["tflop_per_image"] > 0 and r["mfu"] > 0 for r in runs)
    # each row also timed one whole batch generating alone: its ratio to the overlapped run's batches
    assert all(r["overlap_slowdown"] > 0 and "decode_ms_per_step_alone" in r for r in runs)
    # the cached label list is not recomputed: fewer FLOPs per image than the same prompt without the cache
    assert runs[4]["tflop_per_image"] < runs[1]["tflop_per_image"]


def test_model_flops_of_qwen2_vl_2b_match_the_published_estimate():
    """2 x parameters x tokens + attention, on the full-size config (meta device: no memory, no init)."""
    import torch

    from vlmcls import perf

    with torch.device("meta"):
        model, _ = perf.qwen2_vl_2b(perf.imagenet_names(), "meta", torch.bfloat16)
    counts = perf.parameter_counts(model)
    assert 1.2e9 < counts["language"] < 1.4e9 and 0.6e9 < counts["vision"] < 0.7e9
    # 500x375 images: 936 patches; 12 new tokens; ../shared/perf/README.md: about 2.7 / 3.8 / 20 / 2.5 TFLOP
    tflop = [perf.flops_per_image(model, t, 12, 936, cached) / 1e12
             for t, cached in ((477, 0), (835, 0), (4874, 0), (4874, 4600))]
    assert 2.5 < tflop[0] < 2.9 and 3.4 < tflop[1] < 4.0 and 15 < tflop[2] < 21 and 2.2 < tflop[3] < 2.7


def test_perf_tokenizer_matches_the_real_label_cost():
    from vlmcls import perf

    names = perf.imagenet_names()
    assert len(names) == 1000 and names[0] == "tench"
    tok = perf.bpe_tokenizer(names)
    per_label = len(tok(", ".join(names))["input_ids"]) / len(names)
    assert 4.0 < per_label <= perf.TOKENS_PER_LABEL


@pytest.mark.slow
@pytest.mark.parametrize("name", ("smoke-qwen2-vl", "smoke-llava-next"))
def test_static_cache_answers_equal_the_dynamic_cache(name, catalog, built):
    """catalog option static_cache: a fixed-shape cache (what lets transformers compile the decode step
    on CUDA) must not change an answer. Batches of 3 and 2, longest first: the second reuses the
    first's cache length, so its rows attend over more (masked) cache slots than they fill."""
    import dataclasses

    queries = _queries(5)
    plain, rows_plain, _ = _run(catalog[name], queries, batch_size=3)
    entry = dataclasses.replace(catalog[name], options={**catalog[name].options, "static_cache": True})
    backend = hf_vlm.load(entry, BackendSettings(max_new_tokens=6, batch_size=3, device="cpu", extra={"static_cache": True}), LABELS)
    rows_static = _record(backend)
    spied, seen = backend.model.generate, []
    backend.model.generate = lambda **kw: seen.append(kw.get("cache_implementation")) or spied(**kw)
    static = backend.answer(queries)
    assert seen == ["static", "static"]
    # transformers built a StaticCache (and keeps its length for the next call: no new compile)
    assert getattr(backend.model, "_previous_max_cache_length", 0) > 50
    assert rows_static == rows_plain and [a.text for a in static] == [a.text for a in plain]
    assert any("static KV cache" in n for n in backend.notes)
    constrained, _, _ = _run(catalog[name], queries, batch_size=3, constrained=True)
    static_constrained, _, _ = _run(catalog[name], queries, batch_size=3, constrained=True, extra={"static_cache": True})
    assert [a.class_id for a in static_constrained] == [a.class_id for a in constrained]
    assert all(a.stage == "constrained" for a in static_constrained)
    labels_first = hf_vlm.load(entry, BackendSettings(max_new_tokens=6, batch_size=3, layout="labels-first",
                                                      device="cpu", extra={"static_cache": True}), LABELS)
    labels_first.answer(_queries(2, labels_first=True))
    assert any("not used with the labels-first prefix" in n for n in labels_first.notes)


@pytest.mark.slow
def test_attn_implementation_reaches_the_parts_it_names_and_keeps_the_answers(catalog, built):
    """catalog option attn_implementation: one kernel for the whole model, or one per sub-config (e.g.
    flash-attn for Qwen2-VL's vision tower, whose SDPA path attends image by image in a Python loop).
    float32 on the CPU: eager and SDPA compute the same attention, so the tokens are the same."""
    entry, queries = catalog["smoke-qwen2-vl"], _queries(4)
    default, rows_default, backend = _run(entry, queries, batch_size=2)
    parts = lambda b: (b.model.config.text_config._attn_implementation, b.model.config.vision_config._attn_implementation)
    assert parts(backend) == ("sdpa", "sdpa") and not any(n.startswith("attention:") for n in backend.notes)
    for option, expected in (("eager", ("eager", "eager")), ({"vision_config": "eager"}, ("sdpa", "eager"))):
        answers, rows, backend = _run(entry, queries, batch_size=2, extra={"attn_implementation": option})
        assert parts(backend) == expected
        assert rows == rows_default and [a.text for a in answers] == [a.text for a in default]
        assert f"attention: {'eager' if option == 'eager' else 'vision_config eager'}" in backend.notes


def test_attn_implementation_that_cannot_load_is_one_line_before_loading(catalog, monkeypatch):
    from vlmcls.backends import hf_load

    monkeypatch.setattr(hub, "importable", lambda module: module in ("torch", "transformers"))
    reason = lambda value: hf_load.requirements(catalog["smoke-qwen2-vl"], BackendSettings(
        extra={"attn_implementation": value}), LABELS)
    assert reason("sdpa") is None and reason({"vision_config": "eager", "text_config": "sdpa"}) is None
    assert reason("flash_attention_2") == ("option attn_implementation 'flash_attention_2' needs the flash-attn "
                                           "package (pip install flash-attn)")
    assert reason({"vision_config": "flash_attention_3"}) == (
        "option attn_implementation 'flash_attention_3' needs the flash-attn-3 package (pip install flash-attn-3)")
    assert reason("kernels-community/flash-attn") == (
        "option attn_implementation 'kernels-community/flash-attn' needs the kernels package (pip install kernels)")
    for bad in ("flash", {"vision_config": 2}):
        assert reason(bad).startswith(f"option attn_implementation {(bad if isinstance(bad, str) else 2)!r}: choose "
                                      "sdpa, eager, flex_attention, flash_attention_2, flash_attention_3, or a hub kernel")
    with pytest.raises(RuntimeError, match="needs the flash-attn package"):  # load() refuses before any weight loads
        hf_vlm.load(catalog["smoke-qwen2-vl"], BackendSettings(extra={"attn_implementation": "flash_attention_2"}), LABELS)


@pytest.mark.slow
def test_static_cache_decode_step_compiles_as_one_graph(catalog, built):
    """What static_cache buys on CUDA: transformers compiles the decode step (fullgraph: a graph break
    would raise). Forced here on the CPU, where transformers would not compile by itself: the step is one
    graph, reused by the second batch (same size, the first's cache length), and answers are unchanged."""
    import torch
    from transformers import CompileConfig

    queries = _queries(6)
    _, rows_plain, _ = _run(catalog["smoke-llava-next"], queries, batch_size=3)
    backend = _load(catalog["smoke-llava-next"], batch_size=3, extra={"static_cache": True})
    config = CompileConfig(fullgraph=True, dynamic=False, mode="default")
    config._compile_all_devices = True  # transformers' own switch for compiling off CUDA
    backend.model.generation_config.compile_config = config
    rows = _record(backend)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    backend.answer(queries)
    assert rows == rows_plain
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1


def test_generate_clock_times_each_generate_call_and_puts_back_what_was_there(catalog, built):
    """vlmcls.perf's breakdown: each generate call's seconds and batch size (batches of 3 and 2), and
    afterwards the model's generate is what it was before: the class's method, or a spy set earlier."""
    from vlmcls.perf_flops import GenerateClock

    backend = _load(catalog["smoke-qwen2-vl"], batch_size=3)
    with GenerateClock(backend.model) as clock:
        backend.answer(_queries(5))
    assert [n for _, n in clock.calls] == [3, 2] and all(t > 0 for t, _ in clock.calls)
    assert clock.total == sum(t for t, _ in clock.calls)
    assert "generate" not in backend.model.__dict__
    rows = _record(backend)  # a spy on the instance
    with GenerateClock(backend.model):
        backend.answer(_queries(2))
    assert len(rows) == 2  # the spy saw the calls made inside the clock
    backend.answer(_queries(1))
    assert len(rows) == 3  # and is in place again after it


def test_decode_step_is_the_unrounded_difference_per_step_and_none_where_it_is_noise():
    """perf's decode_ms_per_step: a 0.43 s one-token batch and full batches of 0.45 / 0.47 s over 12
    tokens are 2.7 ms per step (rounding the mean to 0.1 s, as it once did, gave a negative figure);
    a difference not above zero or nothing to compare is None, never a negative time."""
    import pytest as _pytest

    from vlmcls.perf_flops import decode_seconds_per_step

    assert decode_seconds_per_step([0.45, 0.47], 0.43, 12) == _pytest.approx(0.03 / 11)
    assert decode_seconds_per_step([0.42, 0.43], 0.43, 12) is None
    assert decode_seconds_per_step([], 0.43, 12) is None
    assert decode_seconds_per_step([0.5], None, 12) is None
    assert decode_seconds_per_step([0.5], 0.4, 1) is None


def test_profile_call_names_the_operators_that_took_the_time_and_turns_a_failure_into_an_error_entry():
    """perf --profile: a call doing matrix products shows aten::mm among the host's top operators, with
    shares of the wall between 0 and 1; no CUDA fields off CUDA; a failing call is an `error` entry."""
    import torch

    from vlmcls.perf_profile import profile_call

    a = torch.randn(256, 256)
    result = profile_call(lambda: [a @ a for _ in range(20)], "cpu")
    names = [op["name"] for op in result["host_top"]]
    assert "aten::mm" in names, names
    assert 0 < result["host_ops_share"] <= 1 and all(0 < op["share"] <= 1 for op in result["host_top"])
    assert next(op for op in result["host_top"] if op["name"] == "aten::mm")["calls"] == 20
    assert "busy_share" not in result and "device_top" not in result and result["wall_s"] > 0

    def broken():
        raise RuntimeError("CUPTI_ERROR_NOT_INITIALIZED\nmore")
    assert profile_call(broken, "cpu") == {"error": "RuntimeError: CUPTI_ERROR_NOT_INITIALIZED more"}


def test_perf_profile_adds_one_profiled_batch_to_each_batched_row(built, capsys):
    """--profile: after the batch-2 dynamic-cache row (not the batch-1 one, not the static-cache one) a
    profile row of one more batch, the model's operators on top; the timed row is printed before it."""
    import json

    from vlmcls import perf

    perf.main(["--arch", "smoke-qwen2-vl", "--ways", "5", "--batch-sizes", "1,2", "--images", "2", "--new-tokens", "2",
               "--device", "cpu", "--layout", "image-first", "--cache", "dynamic,static", "--profile"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["part"], r.get("batch_size"), r.get("cache")) for r in rows] == [
        ("env", None, None), ("hf_vlm_generate", 1, "dynamic"), ("hf_vlm_generate", 2, "dynamic"),
        ("profile", 2, "dynamic"), ("hf_vlm_generate", 1, "static"), ("hf_vlm_generate", 2, "static")]
    profiled = rows[3]
    assert "error" not in profiled and profiled["wall_s"] > 0 and rows[2]["images_per_s"] > 0
    assert (profiled["ways"], profiled["layout"], profiled["cache"]) == (5, "image-first", "dynamic")
    assert any(op["name"] in ("aten::mm", "aten::addmm", "aten::linear") for op in profiled["host_top"])


def test_perf_prefetch_rows_compare_with_the_default_prefetch(built, capsys):
    """--prefetch 2,0,1p: a row per value (1p: one batch ahead, in a process), each one's speedup against
    the default (2, in the thread) row of the same ways, layout, batch size and cache; only that one is profiled."""
    import json

    from vlmcls import perf

    perf.main(["--arch", "smoke-qwen2-vl", "--ways", "5", "--batch-sizes", "2", "--images", "4", "--new-tokens", "2",
               "--device", "cpu", "--layout", "image-first", "--prefetch", "2,0,1p", "--profile"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()][1:]
    assert [(r["part"], r["prefetch"] if r["part"] != "profile" else None) for r in rows] == [
        ("hf_vlm_generate", 2), ("profile", None), ("hf_vlm_generate", 0), ("hf_vlm_generate", "1p")]
    default, serial, process = rows[0], rows[2], rows[3]
    assert default["speedup_vs_prefetch_default"] is None
    for row in (serial, process):
        assert row["speedup_vs_prefetch_default"] == round(row["images_per_s"] / default["images_per_s"], 2)
        assert row["errors"] == 0 and row["prompt_tokens"] == default["prompt_tokens"]
    with pytest.raises(SystemExit):
        perf.parse_args(["--prefetch", "-1"])


def test_perf_rows_run_every_dynamic_cache_row_before_the_static_cache_compiles():
    """A GPU call's timeout should cost the static-cache rows (their first batch compiles) and not the
    default's: the grid runs the cache outermost within a layout, then N, batch size and prefetch."""
    from vlmcls import perf

    args = perf.parse_args(["--ways", "20,100", "--batch-sizes", "1,128", "--cache", "dynamic,static",
                            "--prefetch", "2,2p", "--layout", "image-first,labels-first"])
    rows = perf._grid(args)
    assert len(rows) == len(set(rows)) == 2 * 2 * 2 * 2 * 2  # every combination once
    for layout in ("image-first", "labels-first"):
        mine = [r for r in rows if r[0] == layout]
        assert [r[1] for r in mine] == ["dynamic"] * 8 + ["static"] * 8
        assert [r[2] for r in mine[:8]] == [20] * 4 + [100] * 4
        assert mine[:4] == [(layout, "dynamic", 20, 1, 2), (layout, "dynamic", 20, 1, "2p"),
                            (layout, "dynamic", 20, 128, 2), (layout, "dynamic", 20, 128, "2p")]
    assert rows.index(("labels-first", "dynamic", 20, 1, 2)) == 16  # the study's layout first: labels-first compares with it


def test_requirements_remote_code_and_missing_weights_are_said_together():
    # Phi-3-vision offline once said only "hf download ...", and the opt-in only after the download
    entry = ModelEntry(name="phi-3-vision", backend="hf-vlm", weights="nobody/no-such-remote-vlm", trust_remote_code=True)
    reason = hf_vlm.requirements(entry, BackendSettings(), LABELS)
    assert "phi-3-vision runs the hub's remote code; allow it with --trust-remote-code" in reason
    assert "hf download nobody/no-such-remote-vlm" in reason and "\n" not in reason
    opted_in = hf_vlm.requirements(entry, BackendSettings(trust_remote_code=True), LABELS)
    assert "hf download nobody/no-such-remote-vlm" in opted_in and "--trust-remote-code" not in opted_in
    # its code may not fit this transformers (vlmcls.remote_code): the code alone first, not 8 GB of weights
    assert opted_in.endswith("also, its hub code alone (`hf download nobody/no-such-remote-vlm --include '*.py' "
                             "'*.json'`) lets the case say first whether this transformers can run it")
    native = hf_vlm.requirements(_entry("nobody/no-such-vlm"), BackendSettings(), LABELS)
    assert "--include" not in native


def test_requirements_a_mistyped_path_is_one_line_not_a_hub_question():
    reason = hf_vlm.requirements(_entry("~/models/qwen 2"), BackendSettings(), LABELS)
    assert reason == "~/models/qwen 2: the folder does not exist, and it is not a hub repo id"
