"""SigLIP as a CLIP-style zero-shot baseline, on a tiny random-weight checkpoint laid out as the hub's
(SiglipModel + SiglipProcessor with a SentencePiece `spiece.model`) and loaded through `load()`, the
path `google/siglip-so400m-patch14-384` takes. Every expected value is computed here from the
model's own `get_text_features` / `get_image_features` / forward, never copied from the backend."""
from __future__ import annotations

import math

import pytest

from vlmcls.backends import baselines
from vlmcls.catalog import ModelEntry, load_catalog
from vlmcls.labels import imagenet_annotations
from vlmcls.settings import BackendSettings
from vlmcls.types import LabelSet, Query

from vlm_inputs import block_images

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
# The hub's SigLIP tokenizer is SentencePiece: without these two, AutoProcessor cannot load it either.
pytest.importorskip("sentencepiece", reason="SiglipTokenizer needs sentencepiece")
pytest.importorskip("google.protobuf", reason="SiglipTokenizer needs protobuf")

# The processor path: the backend's pixels are then exactly the processor's, as they are here.
SETTINGS = BackendSettings(device="cpu", batch_size=4, extra={"image_path": "processor", "workers": 1})
ENTRY = ModelEntry(name="smoke-siglip", backend="clip", weights="smoke:siglip", smoke=True)


@pytest.fixture(scope="module")
def labels() -> LabelSet:
    # every 37th ImageNet class: short names ("tench") and long ones, so prompts differ in length
    synonyms = [tuple(s.strip() for s in a.split(",")) for a in imagenet_annotations()[::37]]
    return LabelSet(names=tuple(s[0] for s in synonyms), synonyms=tuple(synonyms))


@pytest.fixture(scope="module")
def images():
    return block_images()


@pytest.fixture(scope="module")
def model_and_processor(smoke_model):
    path = smoke_model("siglip")
    return (transformers.AutoModel.from_pretrained(path).eval(), transformers.AutoProcessor.from_pretrained(path))


@pytest.fixture(scope="module")
def backend(labels):
    loaded = baselines.load(ENTRY, SETTINGS, labels)
    yield loaded
    loaded.close()


def _prompts(labels: LabelSet) -> list[str]:
    return [baselines.DEFAULT_TEMPLATE.format(n) for n in labels.names]


def _text_features(model, **enc) -> "torch.Tensor":
    with torch.inference_mode():
        e = model.get_text_features(**enc).pooler_output
    return e / e.norm(dim=-1, keepdim=True)


def _max_length_ids(processor, texts) -> "torch.Tensor":
    return processor.tokenizer(texts, padding="max_length", max_length=64, return_tensors="pt").input_ids


# ---------------------------------------------------------------- the catalog entry and the load path


def test_catalog_has_siglip_so400m_as_a_clip_backend_hub_checkpoint(labels):
    entry = load_catalog()["siglip-so400m"]
    assert (entry.backend, entry.weights, entry.smoke) == ("clip", "google/siglip-so400m-patch14-384", False)
    assert not entry.study
    # offline and not cached: a one-line skip reason, not a load that fails half a minute later
    reason = baselines.requirements(entry, SETTINGS, labels)
    assert reason.startswith("google/siglip-so400m-patch14-384") and "\n" not in reason


def test_the_smoke_checkpoint_is_laid_out_and_loaded_as_the_hubs(smoke_model, model_and_processor, backend):
    model, processor = model_and_processor
    files = {p.name for p in smoke_model("siglip").iterdir()}
    assert {"config.json", "model.safetensors", "spiece.model", "tokenizer_config.json"} <= files
    assert type(model).__name__ == "SiglipModel" and model.config.model_type == "siglip"
    assert type(processor).__name__ == "SiglipProcessor"
    assert type(processor.tokenizer).__name__ == "SiglipTokenizer"  # SentencePiece, as on the hub
    assert model.config.text_config.max_position_embeddings == 64 == processor.tokenizer.model_max_length
    # the builder moved scale and bias off their zero init, so the checks below can see them
    assert model.logit_scale.item() != 0 and model.logit_bias.item() != 0
    assert backend.logit_scale == pytest.approx(math.exp(model.logit_scale.item()))


# ---------------------------------------------------------------- text: max_length padding, no mask


def test_label_embedding_is_the_models_own_embedding_padded_to_max_length(labels, model_and_processor, backend):
    model, processor = model_and_processor
    ids = _max_length_ids(processor, _prompts(labels))
    assert ids.shape == (len(labels), 64) and (ids[:, -1] == processor.tokenizer.pad_token_id).all()
    # input ids only, as the hub weights were checked against the original (which has no mask)
    expected = _text_features(model, input_ids=ids)
    torch.testing.assert_close(backend.text_embeddings, expected, atol=1e-5, rtol=1e-4)


def test_padding_and_the_mask_change_the_embedding(labels, model_and_processor, backend):
    """What the backend does matters: each departure from it gives another embedding."""
    model, processor = model_and_processor
    prompts, got = _prompts(labels)[:8], backend.text_embeddings[:8]
    unpadded = [_text_features(model, **processor.tokenizer([t], return_tensors="pt")) for t in prompts]
    longest = processor.tokenizer(prompts, padding=True, return_tensors="pt")  # CLIP's padding
    masked = processor.tokenizer(prompts, padding="max_length", max_length=64, return_tensors="pt")
    for other in (torch.cat(unpadded), _text_features(model, input_ids=longest.input_ids),
                  _text_features(model, **masked)):  # attention_mask included
        distance = (got - other).norm(dim=-1)
        assert (distance > 1e-3).all(), distance


def test_a_labels_embedding_does_not_depend_on_its_batch(labels, model_and_processor):
    # max_length padding makes every prompt 64 tokens: alone or beside a long label, the same
    model, processor = model_and_processor
    names = sorted(labels.names, key=len)
    short, long = names[0], names[-1]
    templates = (baselines.DEFAULT_TEMPLATE,)
    alone = baselines.text_embeddings(model, processor.tokenizer, [short], templates)
    beside = baselines.text_embeddings(model, processor.tokenizer, [short, long], templates)
    torch.testing.assert_close(alone[0], beside[0], atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------- scores, ranking, probabilities


@pytest.fixture(scope="module")
def by_hand(labels, images, model_and_processor):
    """Cosines from the model's own features and its own logits (cosine x exp(scale) + bias)."""
    model, processor = model_and_processor
    rgb = [im.convert("RGB") for im in images]
    pixels = processor.image_processor(images=rgb, return_tensors="pt").pixel_values
    ids = _max_length_ids(processor, _prompts(labels))
    with torch.inference_mode():
        img = model.get_image_features(pixel_values=pixels).pooler_output
        logits = model(input_ids=ids, pixel_values=pixels).logits_per_image
    cosine = (img / img.norm(dim=-1, keepdim=True)) @ _text_features(model, input_ids=ids).T
    return {"pixels": pixels, "cosine": cosine, "logits": logits}


def test_scores_are_the_cosines_of_the_models_own_features(backend, by_hand, model_and_processor):
    model, _ = model_and_processor
    torch.testing.assert_close(backend.score(by_hand["pixels"]), by_hand["cosine"], atol=1e-5, rtol=1e-4)
    # and those are SigLIP's logits up to its scale and bias, the reading the probabilities rely on
    scale, bias = math.exp(model.logit_scale.item()), model.logit_bias.item()
    torch.testing.assert_close(by_hand["cosine"] * scale + bias, by_hand["logits"], atol=1e-4, rtol=1e-4)


def _queries(images, candidate_sets) -> list[Query]:
    return [Query(sample_id=f"s{i}", image=images[i % len(images)], class_ids=tuple(c), labels=(), prompt="")
            for i, c in enumerate(candidate_sets)]


def test_answers_rank_candidates_by_the_models_logits_with_its_softmax(labels, images, backend, by_hand):
    import random

    rng = random.Random(0)
    sets = [rng.sample(range(len(labels)), ways) for ways in (2, 5, 10, len(labels)) for _ in images]
    answers = backend.answer(_queries(images, sets))
    probs_unscaled = []
    for i, (cands, a) in enumerate(zip(sets, answers)):
        assert a.stage == "direct" and a.error is None and a.class_id in cands
        logits = by_hand["logits"][i % len(images)][cands].double()  # the model's own, bias included
        order = [cands[j] for j in logits.argsort(descending=True, stable=True).tolist()]
        assert list(a.top5) == order[:5] and a.class_id == order[0]
        assert a.top1_prob == pytest.approx(float(logits.softmax(0).max()), rel=1e-4)
        # the sigmoid model's own P(candidate | exactly one candidate matches): the same number
        odds = [math.exp(float(z)) for z in logits]  # sigmoid(z) / (1 - sigmoid(z))
        assert a.top1_prob == pytest.approx(max(odds) / sum(odds), rel=1e-4)
        probs_unscaled.append(float(by_hand["cosine"][i % len(images)][cands].softmax(0).max()))
    # without the temperature the probabilities would be others: the scale is really applied
    assert any(abs(a.top1_prob - p) > 1e-3 for a, p in zip(answers, probs_unscaled))
