"""SigLIP 2 (NaFlex) as a CLIP-style zero-shot baseline, on a tiny random-weight checkpoint laid out as
the hub's `google/siglip2-*-naflex` (Siglip2Model + Siglip2Processor: a Gemma tokenizer in
`tokenizer.json`, an image processor that returns `pixel_attention_mask` and `spatial_shapes` beside
the patches) and loaded through `load()`, the path `google/siglip2-so400m-patch16-naflex` takes. Every
expected value is computed here from the model's own `get_text_features` / `get_image_features` /
forward, never copied from the backend."""
from __future__ import annotations

import math
import random

import pytest

from vlmcls.backends import baselines
from vlmcls.catalog import ModelEntry, load_catalog
from vlmcls.labels import imagenet_annotations
from vlmcls.settings import BackendSettings
from vlmcls.types import LabelSet, Query

from vlm_inputs import block_images

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

# The processor path (NaFlex has no tensor equivalent anyway): the backend's inputs are the processor's.
SETTINGS = BackendSettings(device="cpu", batch_size=4, extra={"image_path": "processor", "workers": 1})
ENTRY = ModelEntry(name="smoke-siglip2", backend="clip", weights="smoke:siglip2", smoke=True)
HUB = "google/siglip2-so400m-patch16-naflex"


def _labelset(annotations) -> LabelSet:
    synonyms = tuple(tuple(s.strip() for s in a.split(",")) for a in annotations)
    return LabelSet(names=tuple(s[0] for s in synonyms), synonyms=synonyms)


@pytest.fixture(scope="module")
def labels() -> LabelSet:
    # every 37th ImageNet class: short and long names, and capitalised ones ("Norfolk terrier",
    # "Pomeranian"), which the lowercased vocabulary only knows lowercased
    labels = _labelset(imagenet_annotations()[::37])
    assert any(n != n.lower() for n in labels.names)
    return labels


@pytest.fixture(scope="module")
def images():
    return block_images()


@pytest.fixture(scope="module")
def model_and_processor(smoke_model):
    path = smoke_model("siglip2")
    return (transformers.AutoModel.from_pretrained(path).eval(), transformers.AutoProcessor.from_pretrained(path))


@pytest.fixture(scope="module")
def backend(labels):
    loaded = baselines.load(ENTRY, SETTINGS, labels)
    yield loaded
    loaded.close()


def _prompts(labels: LabelSet) -> list[str]:
    return [baselines.DEFAULT_TEMPLATE.format(n) for n in labels.names]


def _ids(tokenizer, texts) -> "torch.Tensor":
    """As SigLIP 2 was trained: lowercased, EOS appended, right-padded to 64, no mask."""
    enc = tokenizer([t.lower() for t in texts], padding="max_length", max_length=64, padding_side="right",
                    return_tensors="pt")
    return enc.input_ids


def _text_features(model, **enc) -> "torch.Tensor":
    with torch.inference_mode():
        e = model.get_text_features(**enc).pooler_output
    return e / e.norm(dim=-1, keepdim=True)


def _naflex(processor, images, **kwargs) -> dict:
    return dict(processor.image_processor(images=[im.convert("RGB") for im in images], return_tensors="pt", **kwargs))


def _cosines(model, text, inputs) -> "torch.Tensor":
    with torch.inference_mode():
        img = model.get_image_features(**inputs).pooler_output
    return (img / img.norm(dim=-1, keepdim=True)) @ text.T


def _queries(images, candidate_sets) -> list[Query]:
    return [Query(sample_id=f"s{i}", image=images[i % len(images)], class_ids=tuple(c), labels=(), prompt="")
            for i, c in enumerate(candidate_sets)]


def _sets(n_classes: int, n: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [rng.sample(range(n_classes), rng.choice((2, 5, 10, n_classes))) for _ in range(n)]


# ---------------------------------------------------------------- the catalog entry and the load path


def test_catalog_has_siglip2_so400m_naflex_as_a_clip_backend_hub_checkpoint(labels):
    entry = load_catalog()["siglip2-so400m"]
    assert (entry.backend, entry.weights, entry.smoke) == ("clip", HUB, False)
    assert not entry.study and not entry.reference  # no figure checked against a model card
    reason = baselines.requirements(entry, SETTINGS, labels)
    if reason is not None:  # offline and not cached: one line, not a load that fails half a minute later
        assert reason.startswith(HUB) and "\n" not in reason


def test_the_smoke_checkpoint_is_laid_out_and_loaded_as_the_hubs(smoke_model, model_and_processor, backend):
    import json

    model, processor = model_and_processor
    folder = smoke_model("siglip2")
    files = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= files
    assert "spiece.model" not in files  # Gemma's tokenizer.json: no sentencepiece needed
    assert json.loads((folder / "tokenizer_config.json").read_text())["tokenizer_class"] == "GemmaTokenizer"
    assert type(model).__name__ == "Siglip2Model" and model.config.model_type == "siglip2"
    assert type(processor).__name__ == "Siglip2Processor"
    assert type(processor.image_processor).__name__.startswith("Siglip2ImageProcessor")
    assert model.config.text_config.max_position_embeddings == 64
    assert model.logit_scale.item() != 0 and model.logit_bias.item() != 0
    assert backend.logit_scale == pytest.approx(math.exp(model.logit_scale.item()))
    assert baselines.requirements(ENTRY, SETTINGS, _labelset(imagenet_annotations())) is None
    # no tensor equivalent of NaFlex: the backend says it runs the HF processor
    assert "HF image processor" in backend.notes[0]


# ---------------------------------------------------------------- text: lowercased, right-padded to 64, no mask


def test_label_embedding_is_the_models_own_embedding_of_the_trained_text_format(labels, model_and_processor, backend):
    model, processor = model_and_processor
    ids = _ids(processor.tokenizer, _prompts(labels))
    eos, pad = processor.tokenizer.eos_token_id, processor.tokenizer.pad_token_id
    assert ids.shape == (len(labels), 64) and (ids[:, -1] == pad).all()
    for row in ids.tolist():  # EOS right after the prompt, padding after it
        end = row.index(eos)
        assert end > 0 and set(row[end + 1:]) == {pad}
    torch.testing.assert_close(backend.text_embeddings, _text_features(model, input_ids=ids), atol=1e-5, rtol=1e-4)


def test_each_departure_from_the_trained_text_format_gives_another_embedding(labels, model_and_processor, backend):
    model, processor = model_and_processor
    tok, prompts = processor.tokenizer, _prompts(labels)
    masked = tok([t.lower() for t in prompts], padding="max_length", max_length=64, return_tensors="pt",
                 return_attention_mask=True)
    left = tok([t.lower() for t in prompts], padding="max_length", max_length=64, padding_side="left",
               return_tensors="pt")
    longest = tok([t.lower() for t in prompts], padding=True, return_tensors="pt")  # CLIP's padding
    for other in (_text_features(model, **masked), _text_features(model, input_ids=left.input_ids),
                  _text_features(model, input_ids=longest.input_ids)):
        distance = (backend.text_embeddings - other).norm(dim=-1)
        assert (distance > 1e-3).all(), distance


def test_prompts_are_lowercased_and_right_padded_whatever_the_tokenizer_defaults(labels, model_and_processor, backend, smoke_model):
    """The hub's tokenizer_config names GemmaTokenizer, which neither lowercases nor pads right by
    default and returns an attention mask unless told otherwise; where transformers loads it as such
    (the fixed-res checkpoints, other versions) the backend must still feed the model the text it
    was trained on."""
    model, processor = model_and_processor
    gemma = transformers.GemmaTokenizer.from_pretrained(smoke_model("siglip2"),
                                                        model_input_names=["input_ids", "attention_mask"])
    gemma.padding_side = "left"  # GemmaTokenizer's class default
    assert "attention_mask" in gemma(["a"])
    capitalised = [i for i, n in enumerate(labels.names) if n != n.lower()]
    raw = gemma([_prompts(labels)[i] for i in capitalised], padding="max_length", max_length=64, return_tensors="pt")
    assert (raw.input_ids == gemma.unk_token_id).any()  # capitals are unknown to a lowercased vocabulary
    got = baselines.text_embeddings(model, gemma, labels.names, (baselines.DEFAULT_TEMPLATE,))
    torch.testing.assert_close(got, backend.text_embeddings, atol=1e-6, rtol=1e-5)
    as_is = _text_features(model, input_ids=raw.input_ids)
    assert ((got[capitalised] - as_is).norm(dim=-1) > 1e-3).all()


def test_a_labels_embedding_does_not_depend_on_its_batch(labels, model_and_processor):
    model, processor = model_and_processor
    names = sorted(labels.names, key=len)
    templates = (baselines.DEFAULT_TEMPLATE,)
    alone = baselines.text_embeddings(model, processor.tokenizer, [names[0]], templates)
    beside = baselines.text_embeddings(model, processor.tokenizer, [names[0], names[-1]], templates)
    torch.testing.assert_close(alone[0], beside[0], atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------- images: the NaFlex inputs reach the model


@pytest.fixture(scope="module")
def by_hand(labels, images, model_and_processor):
    """Cosines from the model's own features and its own logits (cosine x exp(scale) + bias)."""
    model, processor = model_and_processor
    inputs = _naflex(processor, images)
    ids = _ids(processor.tokenizer, _prompts(labels))
    with torch.inference_mode():
        logits = model(input_ids=ids, **inputs).logits_per_image
    return {"inputs": inputs, "cosine": _cosines(model, _text_features(model, input_ids=ids), inputs), "logits": logits}


def test_scores_are_the_cosines_of_the_models_own_features(backend, by_hand, model_and_processor):
    model, _ = model_and_processor
    assert set(by_hand["inputs"]) == {"pixel_values", "pixel_attention_mask", "spatial_shapes"}
    torch.testing.assert_close(backend.score(by_hand["inputs"]), by_hand["cosine"], atol=1e-5, rtol=1e-4)
    scale, bias = math.exp(model.logit_scale.item()), model.logit_bias.item()
    torch.testing.assert_close(by_hand["cosine"] * scale + bias, by_hand["logits"], atol=1e-4, rtol=1e-4)


def test_the_patch_mask_and_grid_shapes_matter(by_hand, model_and_processor, backend):
    """Padded patches and the grid the position embeddings are resized to change the features: a
    backend that passed pixel_values alone would score otherwise (or not run at all)."""
    model, _ = model_and_processor
    inputs = by_hand["inputs"]
    mask = inputs["pixel_attention_mask"]
    padded = (mask == 0).any(dim=1)
    assert padded.any() and not padded.all()  # some images fill the 16 patches, some do not
    assert len({tuple(s) for s in inputs["spatial_shapes"].tolist()}) > 1
    unmasked = _cosines(model, backend.text_embeddings, {**inputs, "pixel_attention_mask": torch.ones_like(mask)})
    assert ((unmasked - by_hand["cosine"])[padded].abs().amax(dim=1) > 1e-4).all()
    swapped = _cosines(model, backend.text_embeddings, {**inputs, "spatial_shapes": inputs["spatial_shapes"].roll(1, 0)})
    assert (swapped - by_hand["cosine"]).abs().max() > 1e-4


@pytest.mark.parametrize("patches", [4, 36])
def test_max_num_patches_changes_the_grid_and_the_backend_follows(patches, labels, images, smoke_model,
                                                                   model_and_processor, backend, by_hand):
    model, _ = model_and_processor
    processor = transformers.AutoProcessor.from_pretrained(smoke_model("siglip2"), max_num_patches=patches)
    inputs = _naflex(processor, images)
    shapes = inputs["spatial_shapes"]
    assert inputs["pixel_values"].shape[1] == patches and (shapes.prod(dim=1) <= patches).all()
    assert not torch.equal(shapes, by_hand["inputs"]["spatial_shapes"])
    other = baselines.clip_backend(model, processor, labels, SETTINGS, text=backend.text_embeddings)
    try:
        sets = _sets(len(labels), len(images), seed=patches)
        answers = other.answer(_queries(images, sets))
    finally:
        other.close()
    expected = _cosines(model, backend.text_embeddings, inputs) * other.logit_scale
    for i, (cands, a) in enumerate(zip(sets, answers)):
        assert a.error is None, a.error
        row = expected[i][cands].double()
        assert a.class_id == cands[int(row.argmax())]
        assert a.top1_prob == pytest.approx(float(row.softmax(0).max()), rel=1e-4)
    assert (expected / other.logit_scale - by_hand["cosine"]).abs().max() > 1e-4  # another resolution, other scores


# ---------------------------------------------------------------- answers, probabilities, batching


def test_answers_rank_candidates_by_the_models_logits_with_its_softmax(labels, images, backend, by_hand):
    rng = random.Random(0)
    sets = [rng.sample(range(len(labels)), ways) for ways in (2, 5, 10, len(labels)) for _ in images]
    answers = backend.answer(_queries(images, sets))
    unscaled = []
    for i, (cands, a) in enumerate(zip(sets, answers)):
        assert a.stage == "direct" and a.error is None and a.class_id in cands
        logits = by_hand["logits"][i % len(images)][cands].double()  # the model's own, bias included
        order = [cands[j] for j in logits.argsort(descending=True, stable=True).tolist()]
        assert list(a.top5) == order[:5] and a.class_id == order[0]
        assert a.top1_prob == pytest.approx(float(logits.softmax(0).max()), rel=1e-4)
        unscaled.append(float(by_hand["cosine"][i % len(images)][cands].softmax(0).max()))
    assert any(abs(a.top1_prob - p) > 1e-3 for a, p in zip(answers, unscaled))  # the temperature is applied


def test_batched_equals_one_image_at_a_time(labels, images, model_and_processor, backend):
    model, processor = model_and_processor
    sets = _sets(len(labels), 3 * len(images), seed=5)
    queries = _queries(images, sets)
    one = baselines.clip_backend(model, processor, labels, SETTINGS.with_(batch_size=1), text=backend.text_embeddings)
    try:
        single = one.answer(queries)
    finally:
        one.close()
    batched = backend.answer(queries)  # batch_size 4: chunks mix padded and unpadded patch sequences
    assert [a.class_id for a in batched] == [a.class_id for a in single]
    assert [a.top5 for a in batched] == [a.top5 for a in single]
    assert [a.top1_prob for a in batched] == pytest.approx([a.top1_prob for a in single], rel=1e-4)


# ---------------------------------------------------------------- end to end on the bundled sample


def test_the_bundled_sample_runs_end_to_end(smoke_model):
    from vlmcls.candidates import candidate_set
    from vlmcls.data import open_dataset
    from vlmcls.resolve import Resolver
    from vlmcls.runner import CaseSpec, run_case

    source = open_dataset("sample")
    imagenet = _labelset(source.annotations)
    samples = source.select(None, 0)
    settings = SETTINGS.with_(batch_size=16)
    backend = baselines.load(ENTRY, settings, imagenet)
    try:
        spec = CaseSpec(model=ENTRY, ways=10, settings=settings)
        result = run_case(spec, samples, imagenet, backend, Resolver("exact", imagenet))
    finally:
        backend.close()
    assert len(result.predictions) == len(samples) == source.size
    by_id = {s.sample_id: s for s in samples}
    for p in result.predictions:
        assert p.stage == "direct" and p.error is None, p.error
        cands = candidate_set(p.sample_id, by_id[p.sample_id].label, 10, len(imagenet), 0).class_ids
        assert p.pred_id in cands and set(p.top5) <= set(cands) and p.pred_id == p.top5[0]
        assert 0.1 <= p.top1_prob <= 1  # at least uniform over the 10 candidates
    # a random model still spreads its picks: one class for every image would mean the images were ignored
    assert len({p.pred_id for p in result.predictions}) > 10
