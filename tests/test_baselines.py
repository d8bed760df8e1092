"""CLIP zero-shot and supervised-classifier baselines, on tiny random-weight checkpoints loaded
through `load()` exactly as the real ones are. Random weights: assert plumbing and equalities,
never accuracy."""
from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys

import pytest

from vlmcls import hub
from vlmcls.backends import baselines
from vlmcls.catalog import ModelEntry
from vlmcls.labels import imagenet_annotations
from vlmcls.settings import BackendSettings
from vlmcls.types import LabelSet, Query

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SETTINGS = BackendSettings(device="cpu", batch_size=4, extra={"workers": 2})
KINDS = {"clip": "clip", "resnet": "classifier", "vit": "classifier"}


def _labelset(annotations) -> LabelSet:
    synonyms = tuple(tuple(s.strip() for s in a.split(",")) for a in annotations)
    return LabelSet(names=tuple(s[0] for s in synonyms), synonyms=synonyms)


def _entry(kind: str, weights: str | None = None) -> ModelEntry:
    return ModelEntry(name=f"smoke-{kind}", backend=KINDS[kind], weights=weights or f"smoke:{kind}", smoke=True)


@pytest.fixture(scope="session")
def imagenet() -> LabelSet:
    return _labelset(imagenet_annotations())


@pytest.fixture(scope="session")
def images():
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    sizes = [(40, 30), (64, 64), (33, 80), (100, 50), (48, 48), (70, 36), (36, 70), (90, 90), (45, 60)]
    # Coarse colour blocks rather than noise: noise averages out to grey at 32 px and every image
    # would get the same random-model scores.
    blocks = [Image.fromarray((rng.random((3, 3, 3)) * 255).astype("uint8")) for _ in sizes]
    out = [b.resize(size, Image.NEAREST) for b, size in zip(blocks, sizes)]
    out.append(out[0].convert("L"))  # grey-scale JPEGs exist in ImageNet val
    return out


@pytest.fixture(scope="module")
def backends(imagenet, smoke_model):
    loaded = {kind: baselines.load(_entry(kind), SETTINGS, imagenet) for kind in KINDS}
    yield loaded
    for b in loaded.values():
        b.close()


@pytest.fixture(scope="module")
def reference_scores(imagenet, images, smoke_model):
    """(n_images, 1000) scores from plain transformers calls, independent of the backend's code."""
    out = {}
    with torch.inference_mode():
        path = smoke_model("clip")
        model = transformers.AutoModel.from_pretrained(path).eval()
        proc = transformers.AutoProcessor.from_pretrained(path)
        texts = [f"a photo of a {n}." for n in imagenet.names]
        rgb = [im.convert("RGB") for im in images]
        enc = proc(text=texts, images=rgb, padding=True, truncation=True, return_tensors="pt")
        out["clip"] = model(**enc).logits_per_image
        for kind in ("resnet", "vit"):
            path = smoke_model(kind)
            model = transformers.AutoModelForImageClassification.from_pretrained(path).eval()
            pixels = transformers.AutoImageProcessor.from_pretrained(path)(images=rgb, return_tensors="pt")
            out[kind] = model(**pixels).logits
    return {k: v.float().numpy() for k, v in out.items()}


def _queries(images, candidate_sets) -> list[Query]:
    return [Query(sample_id=f"s{i}", image=images[i % len(images)], class_ids=tuple(ids), labels=(), prompt="")
            for i, ids in enumerate(candidate_sets)]


def _random_sets(n: int, ways: int, seed: int, n_classes: int = 1000) -> list[list[int]]:
    rng = random.Random(seed)
    return [rng.sample(range(n_classes), ways) for _ in range(n)]


# ---------------------------------------------------------------- restriction to the candidate set


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("ways", [2, 5, 100])
def test_pick_is_the_argmax_within_the_candidates(kind, ways, backends, images, reference_scores):
    sets = _random_sets(4 * len(images), ways, seed=ways)
    answers = backends[kind].answer(_queries(images, sets))
    scores = reference_scores[kind]
    for i, (ids, a) in enumerate(zip(sets, answers)):
        assert a.stage == "direct" and a.error is None
        assert a.class_id in ids  # never a class outside the candidate set
        row = scores[i % len(images)]
        # the pick scores as high as the best candidate (tolerance: two code paths, float32)
        assert row[a.class_id] >= max(row[c] for c in ids) - 1e-4 * max(1.0, abs(row).max())


@pytest.mark.parametrize("kind", ["resnet", "vit"])
def test_all_classes_as_candidates_gives_the_unrestricted_argmax(kind, backends, images, reference_scores):
    order = list(range(1000))
    random.Random(1).shuffle(order)  # prompt order must not matter
    answers = backends[kind].answer(_queries(images, [order] * len(images)))
    picks = [a.class_id for a in answers]
    assert picks == reference_scores[kind].argmax(axis=1).tolist()


@pytest.mark.parametrize("kind", list(KINDS))
def test_batched_equals_unbatched(kind, imagenet, images):
    queries = _queries(images, _random_sets(len(images), 10, seed=7))
    picks = {}
    for batch in (1, 3, 64):
        backend = baselines.load(_entry(kind), SETTINGS.with_(batch_size=batch), imagenet)
        answers = backend.answer(queries)
        backend.close()
        picks[batch] = [a.class_id for a in answers]
        assert all(a.latency_s > 0 for a in answers)
    assert picks[1] == picks[3] == picks[64]


def test_a_bad_image_becomes_an_error_answer_and_the_rest_run(backends, images):
    queries = _queries(images[:3], _random_sets(3, 5, seed=3))
    broken = Query(sample_id="bad", image=None, class_ids=(1, 2), labels=(), prompt="")
    answers = backends["resnet"].answer([queries[0], broken, *queries[1:]])
    assert answers[1].error and answers[1].stage == "error" and answers[1].class_id is None
    assert [a.class_id for a in answers[:1] + answers[2:]] == [a.class_id for a in backends["resnet"].answer(queries)]


@pytest.mark.parametrize("ids", [(), (0, 1000), (-1, 3)])
def test_candidate_ids_outside_the_label_set_are_misuse(ids, backends, images):
    with pytest.raises(ValueError, match="candidate ids"):
        backends["clip"].answer([Query(sample_id="x", image=images[0], class_ids=ids, labels=(), prompt="")])


def test_empty_query_list(backends):
    assert backends["vit"].answer([]) == []


# ---------------------------------------------------------------- label-order mapping of classifiers


def _variant(smoke_model, tmp_path, kind: str, edit) -> str:
    """A copy of the tiny classifier whose config.json `edit` rewrote."""
    target = tmp_path / kind
    shutil.copytree(smoke_model(kind), target)
    config = json.loads((target / "config.json").read_text())
    edit(config)
    (target / "config.json").write_text(json.dumps(config))
    return str(target)


def test_permuted_label_order_fails_naming_the_first_mismatch(imagenet, smoke_model, tmp_path):
    def swap(config):
        labels = config["id2label"]
        labels["3"], labels["4"] = labels["4"], labels["3"]

    weights = _variant(smoke_model, tmp_path, "resnet", swap)
    with pytest.raises(ValueError, match=r"output 3 is 'hammerhead.*dataset class 3 is 'tiger shark'"):
        baselines.load(_entry("resnet", weights), SETTINGS, imagenet)


def test_renamed_label_fails(imagenet, smoke_model, tmp_path):
    weights = _variant(smoke_model, tmp_path, "vit", lambda c: c["id2label"].update({"999": "LABEL_999"}))
    with pytest.raises(ValueError, match="output 999 is 'LABEL_999'"):
        baselines.load(_entry("vit", weights), SETTINGS, imagenet)


def test_label_comparison_is_case_insensitive_on_the_first_synonym(imagenet, smoke_model, tmp_path):
    weights = _variant(smoke_model, tmp_path, "resnet", lambda c: c["id2label"].update({"0": "TENCH"}))
    baselines.load(_entry("resnet", weights), SETTINGS, imagenet).close()


def test_wrong_class_count_is_a_skip_reason(imagenet, smoke_model):
    ten = LabelSet(names=imagenet.names[:10], synonyms=imagenet.synonyms[:10])
    reason = baselines.requirements(_entry("resnet"), SETTINGS, ten)
    assert "1000" in reason and "10" in reason and "\n" not in reason
    assert baselines.requirements(_entry("resnet"), SETTINGS, imagenet) is None
    assert baselines.requirements(_entry("clip"), SETTINGS, ten) is None  # CLIP takes any label set
    with pytest.raises(ValueError, match="1000 outputs but the dataset has 10"):
        baselines.load(_entry("resnet"), SETTINGS, ten)


@pytest.mark.parametrize("absent, named", [({"sentencepiece"}, "sentencepiece"), ({"google", "google.protobuf"}, "protobuf"),
                                           ({"sentencepiece", "google.protobuf"}, "sentencepiece and protobuf")])
def test_a_siglip_checkpoint_without_its_tokenizer_packages_is_a_skip_reason(absent, named, imagenet, tmp_path, monkeypatch):
    """SigLIP's tokenizer is SentencePiece: without sentencepiece or protobuf its load would fail in
    the case; the check says so before. A missing `google` namespace makes find_spec raise, not return None."""
    import importlib.machinery
    import importlib.util

    transformers.SiglipConfig().save_pretrained(tmp_path)  # what the check reads: the model_type
    entry = ModelEntry(name="siglip-so400m", backend="clip", weights=str(tmp_path))
    real = importlib.util.find_spec

    def find_spec(name, *args):  # the two packages as scripted, whatever this machine has
        if name in absent and name.split(".")[0] == name:
            return None
        if name in absent or name.split(".")[0] in absent:
            raise ModuleNotFoundError(name)
        if name in ("sentencepiece", "google.protobuf"):
            return importlib.machinery.ModuleSpec(name, None)
        return real(name, *args)

    if hub.importable("sentencepiece") and hub.importable("google.protobuf"):
        assert baselines.requirements(entry, SETTINGS, imagenet) is None
    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    assert baselines.requirements(entry, SETTINGS, imagenet) == (
        f"siglip-so400m: the siglip tokenizer needs {named} (pip install {named.replace(' and ', ' ')})")
    clip = tmp_path / "clip"
    transformers.CLIPConfig().save_pretrained(clip)  # CLIP's tokenizer needs neither
    assert baselines.requirements(ModelEntry(name="clip", backend="clip", weights=str(clip)), SETTINGS, imagenet) is None


def test_unreadable_weights_are_a_skip_reason(imagenet, tmp_path):
    reason = baselines.requirements(_entry("vit", str(tmp_path / "missing")), SETTINGS, imagenet)
    assert reason.startswith(str(tmp_path / "missing")) and "\n" not in reason


# ---------------------------------------------------------------- CLIP text embeddings


@pytest.fixture
def text_rows(monkeypatch):
    """Counts the prompts that go through CLIPModel.get_text_features."""
    rows = []
    original = transformers.CLIPModel.get_text_features

    def counting(self, input_ids, **kw):
        rows.append(input_ids.shape[0])
        return original(self, input_ids, **kw)

    monkeypatch.setattr(transformers.CLIPModel, "get_text_features", counting)
    return rows


@pytest.mark.parametrize("templates, per_class", [(None, 1), ("ensemble", 80)])
def test_text_embeddings_are_computed_once(templates, per_class, text_rows, imagenet, images):
    labels = LabelSet(names=imagenet.names[:5], synonyms=imagenet.synonyms[:5])
    settings = SETTINGS.with_(extra={**SETTINGS.extra, "templates": templates})
    backend = baselines.load(_entry("clip"), settings, labels)
    assert sum(text_rows) == 5 * per_class
    for seed in range(3):
        backend.answer(_queries(images, _random_sets(len(images), 3, seed, n_classes=5)))
    backend.close()
    assert sum(text_rows) == 5 * per_class  # no text encoding per query or per batch
    assert backend.text_embeddings.shape[0] == 5


def test_ensemble_is_the_renormalised_mean_of_normalised_templates(imagenet, smoke_model):
    labels = LabelSet(names=imagenet.names[:3], synonyms=imagenet.synonyms[:3])
    settings = SETTINGS.with_(extra={"templates": "ensemble"})
    backend = baselines.load(_entry("clip"), settings, labels)
    model = transformers.AutoModel.from_pretrained(smoke_model("clip")).eval()
    tokenizer = transformers.AutoProcessor.from_pretrained(smoke_model("clip")).tokenizer
    texts = [[t.format(n) for t in baselines.IMAGENET_TEMPLATES] for n in labels.names]  # class-major
    with torch.inference_mode():
        enc = tokenizer(sum(texts, []), padding=True, return_tensors="pt")
        e = model.get_text_features(**enc).pooler_output.view(len(labels), 80, -1)
        mean = (e / e.norm(dim=-1, keepdim=True)).mean(1)
        expected = mean / mean.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(backend.text_embeddings, expected, atol=1e-5, rtol=1e-4)
    single = baselines.load(_entry("clip"), SETTINGS, labels)
    assert not torch.allclose(single.text_embeddings, expected, atol=1e-3)
    torch.testing.assert_close(single.text_embeddings.norm(dim=-1), torch.ones(3))
    backend.close(), single.close()


def test_template_option():
    assert baselines.clip_templates(SETTINGS) == ("a photo of a {}.",)
    assert baselines.clip_templates(SETTINGS.with_(extra={"templates": "itap of a {}."})) == ("itap of a {}.",)
    assert len(baselines.IMAGENET_TEMPLATES) == len(set(baselines.IMAGENET_TEMPLATES)) == 80
    assert all(t.count("{}") == 1 for t in baselines.IMAGENET_TEMPLATES)
    with pytest.raises(ValueError, match="templates"):
        baselines.clip_templates(SETTINGS.with_(extra={"templates": "80"}))


# ---------------------------------------------------------------- settings, builders, imports


def test_device_and_dtype_resolution():
    assert baselines.resolve_device(SETTINGS) == ("cpu", torch.float32)
    assert baselines.resolve_device(SETTINGS.with_(dtype="bf16")) == ("cpu", torch.bfloat16)
    with pytest.raises(ValueError, match="dtype"):
        baselines.resolve_device(SETTINGS.with_(dtype="int3"))


def test_pil_image_backend_option(imagenet, images):
    backend = baselines.load(_entry("vit"), SETTINGS.with_(extra={"image_backend": "pil", "workers": 1}), imagenet)
    answers = backend.answer(_queries(images, _random_sets(len(images), 3, seed=5)))
    backend.close()
    assert all(a.stage == "direct" for a in answers)


def test_tiny_classifiers_carry_the_imagenet_annotations(smoke_model):
    names = imagenet_annotations()
    assert len(names) == 1000 and names[0] == "tench, Tinca tinca"
    assert names[147].startswith("grey whale, gray whale")
    for kind in ("resnet", "vit"):
        config = transformers.AutoConfig.from_pretrained(smoke_model(kind))
        assert config.num_labels == 1000 and config.id2label[0] == names[0]


def test_importing_the_backend_does_not_import_torch():
    code = "import sys, vlmcls.backends.baselines, vlmcls.smoke.baselines; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------- encoded images, the tensor path


def _jpeg(image, fmt="JPEG") -> bytes:
    import io

    buf = io.BytesIO()
    image.convert("RGB").save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize("kind", list(KINDS))
def test_encoded_images_give_the_processor_paths_answers(kind, imagenet, images):
    """The runner hands over encoded bytes (JPEG and PNG here); the tensor path and the old HF
    processor path must pick the same classes."""
    encoded = [_jpeg(im, "PNG" if i % 3 == 0 else "JPEG") for i, im in enumerate(images)]
    queries = _queries(encoded, _random_sets(len(encoded), 10, seed=11))
    picks = {}
    for path in ("auto", "processor"):
        backend = baselines.load(_entry(kind), SETTINGS.with_(extra={**SETTINGS.extra, "image_path": path}), imagenet)
        picks[path] = [a.class_id for a in backend.answer(queries)]
        notes = backend.notes
        backend.close()
        assert all(p is not None for p in picks[path])
        assert ("worker process" in notes[0]) == (path == "auto") and len(notes) == 1
    assert picks["auto"] == picks["processor"]


def test_the_runner_hands_over_encoded_images_and_a_broken_one_is_one_error_row(imagenet, images, tmp_path):
    from vlmcls.resolve import Resolver
    from vlmcls.runner import CaseSpec, run_case
    from vlmcls.types import Sample

    (tmp_path / "a.jpg").write_bytes(_jpeg(images[1]))
    samples = [Sample("s0", 3, _jpeg(images[0])), Sample("s1", 5, str(tmp_path / "a.jpg")),
               Sample("bad", 7, b"\xff\xd8\xff not really a jpeg"), Sample("gone", 9, str(tmp_path / "nope.jpg")),
               Sample("s4", 11, _jpeg(images[2]))]
    backend = baselines.load(_entry("resnet"), SETTINGS, imagenet)
    assert backend.decodes_images
    spec = CaseSpec(model=_entry("resnet"), ways=5, settings=SETTINGS)
    result = run_case(spec, samples, imagenet, backend, Resolver("exact", imagenet))
    backend.close()
    rows = {p.sample_id: p for p in result.predictions}
    assert [rows[s].stage for s in ("s0", "s1", "bad", "gone", "s4")] == ["direct", "direct", "error", "error", "direct"]
    assert "nope.jpg" in rows["gone"].error and rows["bad"].error.count("\n") == 0
    assert result.notes and "images:" in result.notes[0]


def test_unknown_image_path_is_misuse(imagenet):
    with pytest.raises(ValueError, match="image_path"):
        baselines.load(_entry("vit"), SETTINGS.with_(extra={"image_path": "fast"}), imagenet)


# ---------------------------------------------------------------- weights reachable (one-line skip reasons)


def _in_hub_cache(repo_id: str, folder) -> None:
    """Puts a model folder into the (test-session) hub cache as `repo_id`'s snapshot, as `hf download` would."""
    from pathlib import Path

    from huggingface_hub import constants

    repo = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text("0" * 40)
    shutil.copytree(folder, repo / "snapshots" / ("0" * 40), dirs_exist_ok=True)


@pytest.mark.parametrize("kind", ["clip", "resnet"])
def test_uncached_hub_weights_offline_are_a_skip_reason(kind, imagenet):
    # clip-vit-l-14 once failed here after 30 s of retries (HF_HUB_OFFLINE unset, no network): no check
    entry = ModelEntry(name=f"no-{kind}", backend=KINDS[kind], weights=f"nobody/no-such-{kind}")
    reason = baselines.requirements(entry, SETTINGS, imagenet)
    assert f"nobody/no-such-{kind}" in reason and "HF_HUB_OFFLINE" in reason and "hf download" in reason
    assert "\n" not in reason


@pytest.mark.parametrize("kind", ["clip", "resnet"])
def test_a_cached_hub_model_is_accepted_and_loads_offline(kind, imagenet, smoke_model, images):
    entry = ModelEntry(name=f"cached-{kind}", backend=KINDS[kind], weights=f"someone/cached-{kind}")
    assert baselines.requirements(entry, SETTINGS, imagenet) is not None
    _in_hub_cache(entry.weights, smoke_model(kind))
    assert baselines.requirements(entry, SETTINGS, imagenet) is None
    backend = baselines.load(entry, SETTINGS, imagenet)  # the check and the load agree: it is there
    (answer,) = backend.answer(_queries(images[:1], [[0, 1, 2]]))
    backend.close()
    assert answer.class_id in (0, 1, 2)


def test_unreachable_hub_online_is_a_skip_reason_not_a_retried_load(imagenet, monkeypatch):
    import socket

    from huggingface_hub import hf_api

    with socket.socket() as s:  # a loopback port nobody listens on: the connection is refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(hf_api.api, "endpoint", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    entry = ModelEntry(name="clip-vit-l-14", backend="clip", weights="openai/clip-vit-large-patch14")
    reason = baselines.requirements(entry, SETTINGS, imagenet)
    assert reason.startswith("openai/clip-vit-large-patch14 is not cached and the hub is unreachable (")
    assert "\n" not in reason
