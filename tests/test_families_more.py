"""VLM families beyond the catalog's smoke entries (LLaVA-OneVision, Mistral3, Mllama, Aya Vision,
PaliGemma), proven as tests/test_families.py proves the catalog's: tiny random-weight models, each built
from its own config, model and processor classes and chat template (vlmcls/smoke/families.py), saved
and loaded by `hf_vlm.load` exactly as a hub checkpoint. The catalog lists real checkpoints of them.

What each family adds:
- Mllama: cross-attention layers keep no keys for the text: the labels-first cache is refused (a note);
- Aya Vision: a sliding window (64) shorter than the label list (~240 tokens): the cached answer must
  equal the uncached one (the window's token count carried over); a padded batch runs uncached;
- PaliGemma: no chat template (as its hub checkpoints): the prompt is plain text, the processor adds the
  image tokens and <bos>; its processor returns training `labels`, which must not reach the model; its
  prompt attends both ways: the labels-first cache is refused (a note).
Random weights answer garbage: the tests compare token ids and first-token scores between code paths."""
from __future__ import annotations

import random
import shutil

import pytest

from vlmcls.catalog import load_catalog
from vlmcls.types import Query
from vlm_inputs import NAMES, one_torch_thread
from vlm_inputs import queries as _queries
from vlm_inputs import run as _run
from vlm_scores import assert_scores_close, run_scored, spread

pytest.importorskip("torch")
pytest.importorskip("transformers")

from vlmcls.backends import hf_vlm  # noqa: E402

# family -> the model_type its checkpoint declares
FAMILIES = {"llava_onevision": "llava_onevision", "mistral3": "mistral3", "mllama": "mllama",
            "aya_vision": "aya_vision", "paligemma": "paligemma"}
# why the labels-first cache is refused, per family (a note); the others use it
REFUSED = {"mllama": "cross-attention layers", "paligemma": "attends both ways"}
# families whose image token counts differ with the image's shape (padded batches)
PADDED = {"llava_onevision", "mistral3", "aya_vision"}

one_thread = pytest.fixture(scope="module", autouse=True)(one_torch_thread)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("families-more")


@pytest.fixture(scope="module")
def catalog(folder):
    """A catalog of the tiny models, each built on first use (once per module)."""
    lines = [f'[models."{name}"]\nbackend = "hf-vlm"\nweights = "{folder / name}"\nquant = "none"\n'
             for name in FAMILIES]
    (folder / "catalog.toml").write_text("\n".join(lines))
    return load_catalog(folder / "catalog.toml")


@pytest.fixture(scope="module")
def entry(catalog, folder):
    from vlmcls.smoke import families

    def get(name: str):
        if not (folder / name / "config.json").exists():
            getattr(families, f"build_{name}")(folder / name)
        return catalog[name]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_loads_like_a_checkpoint_and_answers(name, entry):
    answers, rows, backend = _run(entry(name), _queries(3), batch_size=2)
    assert backend.model.config.model_type == FAMILIES[name]
    assert type(backend.model).__name__.endswith("ForConditionalGeneration")
    assert backend.tokenizer.padding_side == "left"
    assert len(answers) == 3 and len(rows) == 3
    for a in answers:
        assert a.error is None and isinstance(a.text, str)
        assert a.prompt_tokens > 30 and 1 <= a.completion_tokens <= 6 and a.latency_s > 0
    backend.close()


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_batched_answers_equal_unbatched(name, entry):
    queries = _queries(5)
    one, rows_one, scores_one, _ = run_scored(entry(name), queries, batch_size=1)
    many, rows_many, scores_many, backend = run_scored(entry(name), queries, batch_size=3)  # 3 and 2
    assert backend.sizes_run == [3, 2], "the family must batch, not fall back to one image at a time"
    assert_scores_close(scores_many, scores_one)
    assert rows_many == rows_one
    assert [a.text for a in many] == [a.text for a in one]
    assert spread(scores_one) > 1e-3, "the tiny model ignores its input: the test would be blind"


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_constrained_answers_are_candidates(name, entry):
    queries = [q for seed in (1, 2) for q in _queries(2, ways=random.Random(seed).choice((3, 6, 9)), seed=seed)]
    queries.append(Query("dup", queries[0].image, (0, 1, 14), ("crane", "crane fly", "crane"), "Which?"))
    answers, _, _ = _run(entry(name), queries, batch_size=4, constrained=True, max_new_tokens=2)
    for q, a in zip(queries, answers):
        assert a.error is None and a.stage == "constrained"
        assert a.text in q.labels
        assert a.class_id == q.class_ids[q.labels.index(a.text)]


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_rank_scores_every_candidate(name, entry):
    """PaliGemma's processor returns `labels` (training targets): they reached the model, which then
    compared them with the candidates' batch (ValueError: Expected input batch_size ...)."""
    queries = _queries(3, ways=4)
    answers, _, backend = _run(entry(name), queries, batch_size=2, rank=True)
    for q, a in zip(queries, answers):
        assert a.error is None and a.text in q.labels
    assert backend.rank_path in ("tree", "chunked")


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_labels_first_cache_matches_plain_computation(name, entry, monkeypatch):
    """The same prompts with the cached label list and without it: first-token scores and ids. Batch 1
    with the cache: no padding, so the sliding window of Aya Vision (64 tokens, shorter than the ~240 of
    the label list) is exercised on every image; a refused cache says why and runs uncached."""
    queries = _queries(4, labels_first=True)
    plain, rows_plain, scores_plain, _ = run_scored(entry(name), queries, batch_size=1, layout="image-first")
    prefills = []
    monkeypatch.setattr(hf_vlm.HFVLMBackend, "_prefill",
                        lambda self, ids, f=hf_vlm.HFVLMBackend._prefill: prefills.append(ids) or f(self, ids))
    cached, rows_cached, scores_cached, backend = run_scored(entry(name), queries, batch_size=1,
                                                             layout="labels-first")
    assert all(a.error is None for a in cached)
    if name in REFUSED:
        assert len(backend.notes) == 1 and REFUSED[name] in backend.notes[0] and "without the cache" in backend.notes[0]
        assert prefills == [] and backend.cached_prefix_tokens == 0
    else:
        assert backend.notes == [] and len(prefills) == 1, "the label list must be prefilled once and reused"
        assert len(prefills[0]) > len(", ".join(NAMES)), "the cached prefix must hold the whole label list"
        assert spread(scores_plain) > 1e-3, "the tiny model ignores its input: the test would be blind"
    assert_scores_close(scores_cached, scores_plain)
    assert rows_cached == rows_plain


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PADDED))
def test_labels_first_padded_batches_match(name, entry):
    """Batches of images with different token counts: pads sit after the cached prefix. A sliding window
    would count them (Aya Vision: such batches run uncached, with a note); other models mask them out."""
    queries = _queries(4, labels_first=True)
    _, rows_plain, scores_plain, _ = run_scored(entry(name), queries, batch_size=1, layout="image-first")
    _, rows_cached, scores_cached, backend = run_scored(entry(name), queries, batch_size=3, layout="labels-first")
    assert_scores_close(scores_cached, scores_plain)
    assert rows_cached == rows_plain
    sliding = name == "aya_vision"
    assert any("sliding attention window would count the padding" in n for n in backend.notes) == sliding
    assert backend.cached_prefix_tokens > 0  # the unpadded batch of one (3 + 1) used the cache


@pytest.mark.slow
def test_a_window_that_cannot_carry_its_count_refuses_a_longer_prefix(entry, monkeypatch):
    """Where the installed transformers' sliding layer keeps no token count, a label list longer than
    the window runs uncached (a note), with the plain answer."""
    from vlmcls.backends.prefix_cache import CacheLimits

    queries = _queries(2, labels_first=True)
    _, _, scores_plain, _ = run_scored(entry("aya_vision"), queries, batch_size=1, layout="image-first")
    monkeypatch.setattr(hf_vlm, "cache_limits", lambda model, family: CacheLimits(longest=63, window=64))
    _, _, scores, backend = run_scored(entry("aya_vision"), queries, batch_size=1, layout="labels-first")
    assert backend.cached_prefix_tokens == 0
    assert len(backend.notes) == 1 and "longer than the sliding attention window (64)" in backend.notes[0]
    assert_scores_close(scores, scores_plain)


@pytest.mark.slow
def test_paligemma_prompt_is_plain_text_after_the_image(entry):
    """No chat template: the image tokens, <bos>, the prompt and a newline, as PaliGemma was trained."""
    from vlm_inputs import load

    backend = load(entry("paligemma"))
    assert not backend.processor.chat_template
    query = _queries(1)[0]
    ids = backend._encode([backend.render(query)], [query.image], None)["input_ids"][0].tolist()
    image, bos = backend.image_token_id, backend.tokenizer.bos_token_id
    assert ids[:16] == [image] * 16 and ids[16] == bos and image not in ids[17:]
    assert backend.tokenizer.decode(ids[17:]) == query.prompt + "\n"


@pytest.mark.slow
def test_a_checkpoint_without_chat_template_fails_at_load_saying_what_to_do(entry, folder):
    """Else every sample would be an error row ("this processor does not have a chat template")."""
    from vlmcls.catalog import load_catalog
    from vlm_inputs import load

    bare = folder / "no-template"
    if not bare.exists():
        shutil.copytree(entry("mistral3").weights, bare)
        (bare / "chat_template.jinja").unlink()
    (folder / "bare.toml").write_text(f'[models."bare"]\nbackend = "hf-vlm"\nweights = "{bare}"\nquant = "none"\n')
    with pytest.raises(RuntimeError) as exc:
        load(load_catalog(folder / "bare.toml")["bare"])
    message = str(exc.value)
    assert "\n" not in message and "has no chat template" in message and "add one to the model folder" in message
