"""Every native VLM family of the catalog (Qwen2-VL, Qwen2.5-VL, LLaVA-NeXT, Gemma 3, InternVL3, SmolVLM,
Qwen3-VL, Phi-4-multimodal) as tiny random-weight models, each built from its own config, model and
processor classes with a chat template in its own format, and loaded by `hf_vlm.load` exactly as a hub
checkpoint. Random weights answer garbage: the tests compare generated token ids between code paths and
check candidates, never content.

Phi-3-vision is not here: see UNBUILT."""
from __future__ import annotations

import random

import pytest

from vlmcls.catalog import load_catalog
from vlmcls.settings import BackendSettings
from vlmcls.types import Query
from vlm_inputs import LABELS, NAMES, one_torch_thread
from vlm_inputs import queries as _queries
from vlm_inputs import run as _run
from vlm_scores import assert_scores_close, run_scored

pytest.importorskip("torch")
pytest.importorskip("transformers")

from vlmcls.backends import hf_vlm  # noqa: E402

# catalog entry -> the model_type its checkpoint declares (what picks the backend's Family record)
FAMILIES = {"smoke-qwen2-vl": "qwen2_vl", "smoke-qwen2.5-vl": "qwen2_5_vl", "smoke-llava-next": "llava_next",
            "smoke-gemma-3": "gemma3", "smoke-internvl3": "internvl", "smoke-smolvlm": "idefics3",
            "smoke-qwen3-vl": "qwen3_vl", "smoke-phi-4-mm": "phi4_multimodal"}
# Phi-4-multimodal registers only a causal-LM class (no image-text-to-text one): hf_load falls back to it
CAUSAL_LM = {"phi4_multimodal"}
# Catalog families with no tiny model: catalog entry -> (model_type, why). The reason is checked against
# the installed transformers (test_unbuilt_families_are_still_unbuildable), so it cannot go stale.
UNBUILT = {
    "phi-3-vision": ("phi3_v", "remote code only (not native in transformers): cannot be built offline"),
}

# Catalog entries whose families are proven in tests/test_families_more.py (tiny models built there)
MORE_FAMILIES = ("mistral-small-3.1", "llama-3.2", "aya-vision", "paligemma")

one_thread = pytest.fixture(scope="module", autouse=True)(one_torch_thread)


@pytest.fixture(scope="session")
def catalog():
    return load_catalog()


@pytest.fixture(scope="session")
def built(smoke_model, catalog):
    """Each family's tiny model, built once per session (into the session's temp smoke folder)."""
    return {name: smoke_model(catalog[name].weights) for name in FAMILIES}




def test_every_native_catalog_family_has_a_tiny_model(catalog):
    """Each hf-vlm family of the catalog is exercised here or listed with a reason."""
    from vlmcls.smoke import BUILDERS

    smoke_kinds = {e.weights.removeprefix("smoke:") for e in catalog.values() if e.smoke}
    assert {catalog[name].weights.removeprefix("smoke:") for name in FAMILIES} <= smoke_kinds & set(BUILDERS)
    real = [e for e in catalog.values() if e.backend == "hf-vlm" and not e.smoke]
    covered = ("qwen2-vl", "qwen2.5-vl", "llava", "gemma-3", "internvl3", "smolvlm", "qwen3-vl", "phi-4-multimodal",
               *MORE_FAMILIES)
    assert [e.name for e in real if not e.name.startswith(covered) and e.name not in UNBUILT] == []


@pytest.mark.parametrize("name", UNBUILT)
def test_unbuilt_families_are_still_unbuildable(name, catalog):
    """Skips with the reason while it holds; fails once transformers changes, so a builder gets written."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    model_type, reason = UNBUILT[name]
    assert catalog[name].backend == "hf-vlm"
    native = model_type in CONFIG_MAPPING_NAMES
    assert native == (model_type != "phi3_v"), f"{model_type}: native in transformers changed"
    assert model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES, \
        f"{model_type} now loads with AutoModelForImageTextToText: add a tiny builder in vlmcls/smoke/families.py"
    pytest.skip(f"{name}: {reason}")


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_loads_like_a_checkpoint_and_answers(name, catalog, built):
    answers, rows, backend = _run(catalog[name], _queries(3), batch_size=2)
    assert backend.model.config.model_type == FAMILIES[name]
    kind = "ForCausalLM" if FAMILIES[name] in CAUSAL_LM else "ForConditionalGeneration"
    assert type(backend.model).__name__.endswith(kind)
    assert type(backend.processor).__name__.lower().replace("_", "").startswith(FAMILIES[name].replace("_", ""))
    assert backend.tokenizer.padding_side == "left"
    assert len(answers) == 3 and len(rows) == 3
    for a in answers:
        assert a.error is None and isinstance(a.text, str)
        assert a.prompt_tokens > 50 and 1 <= a.completion_tokens <= 6 and a.latency_s > 0
    backend.close()


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_batched_answers_equal_unbatched(name, catalog, built):
    queries = _queries(5)
    one, rows_one, _ = _run(catalog[name], queries, batch_size=1)
    many, rows_many, backend = _run(catalog[name], queries, batch_size=3)  # batches of 3 and 2
    assert backend.sizes_run == [3, 2], "the family must batch, not fall back to one image at a time"
    assert rows_many == rows_one
    assert [a.text for a in many] == [a.text for a in one]
    assert len({tuple(r) for r in rows_one}) > 1, "the tiny model ignores its input: the test would be blind"


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_constrained_answers_are_candidates(name, catalog, built):
    queries = [q for seed in (1, 2, 3) for q in _queries(3, ways=random.Random(seed).choice((3, 6, 9)), seed=seed)]
    queries.append(Query("dup", queries[0].image, (0, 1, 14), ("crane", "crane fly", "crane"), "Which?"))
    answers, _, _ = _run(catalog[name], queries, batch_size=4, constrained=True, max_new_tokens=2)
    for q, a in zip(queries, answers):
        assert a.error is None and a.stage == "constrained"
        assert a.text in q.labels  # max_new_tokens=2 is raised to fit the longest label
        assert a.class_id == q.class_ids[q.labels.index(a.text)]


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_labels_first_cache_matches_plain_computation(name, catalog, built, monkeypatch):
    """The same prompts with the cached label list and without: the first-token scores, not only the greedy
    ids (the tiny Gemma 3 answers the same tokens for every image, whatever its cache holds). The label
    list (~240 tokens) is longer than the tiny Gemma 3's sliding window (64): its sliding layers keep only
    the window's keys and the expanded cache must carry their token count over."""
    queries = _queries(4, labels_first=True)
    plain, rows_plain, scores_plain, _ = run_scored(catalog[name], queries, batch_size=1, layout="image-first")
    prefills = []
    monkeypatch.setattr(hf_vlm.HFVLMBackend, "_prefill",
                        lambda self, ids, f=hf_vlm.HFVLMBackend._prefill: prefills.append(ids) or f(self, ids))
    cached, rows_cached, scores_cached, backend = run_scored(catalog[name], queries, batch_size=3,
                                                             layout="labels-first")  # 3 + 1
    assert backend.notes == [] and len(prefills) == 1, "the label list must be prefilled once and reused"
    assert len(prefills[0]) > len(", ".join(NAMES)), "the cached prefix must hold the whole label list"
    assert_scores_close(scores_cached, scores_plain)
    assert rows_cached == rows_plain
    assert [a.text for a in cached] == [a.text for a in plain]


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_prompt_starts_with_at_most_one_bos(name, catalog, built):
    backend = hf_vlm.load(catalog[name], BackendSettings(device="cpu"), LABELS)
    query = _queries(1)[0]
    ids = backend._encode([backend.render(query)], [query.image], None)["input_ids"][0].tolist()
    bos = backend.tokenizer.bos_token_id
    assert bos is None or ids[1] != bos, f"two <bos> at the start: {ids[:4]}"
