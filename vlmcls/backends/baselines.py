"""Baselines that answer with a class id directly: CLIP-style zero-shot ("clip") and supervised
ImageNet classifiers ("classifier").

Both score every class of the dataset once per image and then take the argmax over the query's own
candidates only, so an N-way number is comparable with the VLMs' (a classifier that picked from all
1000 classes at 20-way would be measuring something else). Images arrive encoded and are decoded
and preprocessed chunks ahead of the model by vlmcls.fastimage (nvJPEG and tensor ops on CUDA,
worker processes on the CPU), so the accelerator is not left waiting for PIL. The driver both share
(decode ahead, score, pick within the candidates) is vlmcls.backends.direct; this module loads the models.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

from .. import devices
from ..errors import one_line
from ..types import LabelSet
from .direct import DirectBackend

# Re-exported: callers name them as baselines.X (the shared driver lives in vlmcls.backends.direct).
__all__ = ["DEFAULT_TEMPLATE", "IMAGENET_TEMPLATES", "DirectBackend", "check_label_order", "classifier_backend",
           "clip_backend", "clip_templates", "load", "requirements", "resolve_device", "text_embeddings", "weights_path"]

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..catalog import ModelEntry
    from ..fastimage import Spec
    from ..settings import BackendSettings

DEFAULT_TEMPLATE = "a photo of a {}."
TEXT_BATCH = 256  # prompts per text-encoder call when caching the class embeddings

# The 80 ImageNet prompts of the CLIP paper (openai/CLIP, notebooks/Prompt_Engineering_for_ImageNet).
IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.",
    "a photo of the hard to see {}.", "a low resolution photo of the {}.", "a rendering of a {}.",
    "graffiti of a {}.", "a bad photo of the {}.", "a cropped photo of the {}.", "a tattoo of a {}.",
    "the embroidered {}.", "a photo of a hard to see {}.", "a bright photo of a {}.",
    "a photo of a clean {}.", "a photo of a dirty {}.", "a dark photo of the {}.", "a drawing of a {}.",
    "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.", "a close-up photo of a {}.",
    "a black and white photo of the {}.", "a painting of the {}.", "a painting of a {}.",
    "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.",
    "a cropped photo of a {}.", "a plastic {}.", "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.", "a blurry photo of the {}.", "a photo of the {}.",
    "a good photo of the {}.", "a rendering of the {}.", "a {} in a video game.", "a photo of one {}.",
    "a doodle of a {}.", "a close-up photo of the {}.", "a photo of a {}.", "the origami {}.",
    "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.", "a origami {}.",
    "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.",
    "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.",
    "a photo of a nice {}.", "a photo of a weird {}.", "a blurry photo of a {}.", "a cartoon {}.",
    "art of a {}.", "a sketch of the {}.", "a embroidered {}.", "a pixelated photo of a {}.",
    "itap of the {}.", "a jpeg corrupted photo of the {}.", "a good photo of a {}.", "a plushie {}.",
    "a photo of the nice {}.", "a photo of the small {}.", "a photo of the weird {}.",
    "the cartoon {}.", "art of the {}.", "a drawing of the {}.", "a photo of the large {}.",
    "a black and white photo of a {}.", "the plushie {}.", "a dark photo of a {}.", "itap of a {}.",
    "graffiti of the {}.", "a toy {}.", "itap of my {}.", "a photo of a cool {}.",
    "a photo of a small {}.", "a tattoo of the {}.",
)



# ---------------------------------------------------------------- module API


# model_type -> the modules its hub tokenizer needs beyond transformers, and their pip names: SigLIP's
# SiglipTokenizer reads a SentencePiece model (SigLIP 2's Gemma tokenizer needs neither)
TOKENIZER_NEEDS = {"siglip": {"sentencepiece": "sentencepiece", "google.protobuf": "protobuf"}}


def requirements(entry: "ModelEntry", settings: "BackendSettings", labels: LabelSet) -> str | None:
    """A one-line reason to skip, or None: weights that are neither here nor to be had from the hub
    (the check the VLMs make, so that offline a load does not retry for half a minute), packages the
    checkpoint's tokenizer needs, and for the classifier an output count that differs from the label
    set's."""
    from ..hub import importable, weights_reason

    # weights written as a path that names no folder (vlmcls.catalog): said so, not asked of the hub
    reason = entry.missing_weights() or weights_reason(entry.weights)
    if reason:
        return reason
    try:
        config = _auto_config(entry, settings)
    except Exception as exc:  # offline without the checkpoint, a typo in weights, ...
        return f"{entry.weights}: cannot read the model config ({one_line(exc, with_type=True)})"
    missing = [pip for module, pip in TOKENIZER_NEEDS.get(config.model_type, {}).items() if not importable(module)]
    if missing:
        return f"{entry.name}: the {config.model_type} tokenizer needs {' and '.join(missing)} (pip install {' '.join(missing)})"
    if entry.backend == "classifier" and config.num_labels != len(labels):
        return (f"{entry.name} predicts {config.num_labels} classes, the dataset has {len(labels)}: "
                "a supervised classifier runs only on the label set it was trained on (ImageNet-1k)")
    return None


def load(entry: "ModelEntry", settings: "BackendSettings", labels: LabelSet) -> "DirectBackend":
    if entry.backend == "clip":
        return _load_clip(entry, settings, labels)
    if entry.backend == "classifier":
        return _load_classifier(entry, settings, labels)
    raise ValueError(f"vlmcls.backends.baselines serves 'clip' and 'classifier', not {entry.backend!r}")


# ---------------------------------------------------------------- CLIP / SigLIP zero-shot


def _load_clip(entry: "ModelEntry", settings: "BackendSettings", labels: LabelSet) -> DirectBackend:
    from transformers import AutoModel, AutoProcessor

    device, dtype = resolve_device(settings)
    path = weights_path(entry)
    model = AutoModel.from_pretrained(path, dtype=dtype, trust_remote_code=_remote(entry, settings))
    if not (hasattr(model, "get_text_features") and hasattr(model, "get_image_features")):
        raise ValueError(f"{entry.weights}: {type(model).__name__} is not a CLIP-style dual encoder")
    model = model.to(device).eval()
    processor = AutoProcessor.from_pretrained(path, **_processor_kwargs(settings))
    return clip_backend(model, processor, labels, settings)


def clip_backend(model, processor, labels: LabelSet, settings: "BackendSettings",
                 text: "torch.Tensor | None" = None) -> DirectBackend:
    """Caches one L2-normalised text embedding per class, then scores images by cosine similarity.
    `text`: those embeddings computed already (the throughput benchmark rewraps one model many times)."""
    if text is None:
        text = text_embeddings(model, processor.tokenizer, labels.names, clip_templates(settings))
    device, dtype = model.device, model.dtype

    def score(pixels):
        import torch

        with torch.inference_mode():
            feats = _pooled(model.get_image_features(**_image_inputs(pixels, device, dtype)))
            return _normalise(feats.float()) @ text.T

    backend = DirectBackend(_image_preprocessor(processor.image_processor), score, len(labels), settings,
                            _spec(processor.image_processor), str(device))
    backend.text_embeddings = text
    backend.ran_on = devices.ran_on(model)
    # A softmax over the candidates needs the model's temperature. SigLIP's logit_bias is left out
    # rightly: a softmax ignores a constant shift, and the softmax of SigLIP's sigmoid logits is its
    # own P(this candidate is the match | exactly one candidate matches).
    if hasattr(model, "logit_scale"):
        backend.logit_scale = float(model.logit_scale.detach().exp())
    return backend


def clip_templates(settings: "BackendSettings") -> tuple[str, ...]:
    """`templates = "ensemble"` -> the 80 CLIP prompts; a string with `{}` -> that one; else the default."""
    choice = settings.extra.get("templates")
    if choice == "ensemble":
        return IMAGENET_TEMPLATES
    if choice is None or choice == "default":
        return (DEFAULT_TEMPLATE,)
    if isinstance(choice, str) and "{}" in choice:
        return (choice,)
    raise ValueError(f"options.templates must be 'default', 'ensemble' or a template with '{{}}', got {choice!r}")


def text_embeddings(model, tokenizer, names: Sequence[str], templates: Sequence[str]) -> "torch.Tensor":
    """(n_classes, dim) float32 on the model's device: per class, the renormalised mean of its
    normalised template embeddings (with one template, just that embedding normalised)."""
    import torch

    texts = [t.format(n) for t in templates for n in names]  # template-major: view(T, C, D) below
    parts = [_encode_texts(model, tokenizer, texts[i:i + TEXT_BATCH]) for i in range(0, len(texts), TEXT_BATCH)]
    per_template = torch.cat(parts).view(len(templates), len(names), -1)
    return _normalise(per_template.mean(dim=0))


def _encode_texts(model, tokenizer, texts: list[str]) -> "torch.Tensor":
    import torch

    max_len = model.config.text_config.max_position_embeddings
    siglip = model.config.model_type.startswith("siglip")  # SigLIP, and SigLIP 2 (NaFlex "siglip2", fixed-res "siglip")
    # SigLIP was trained on prompts padded to the full length with the padding attended to (no mask:
    # the hub weights were verified against big_vision that way) and pools the last position; CLIP
    # pools the EOS position, which its causal mask keeps blind to the padding after it.
    padding = "max_length" if siglip else True
    keep = ("input_ids",) if siglip else ("input_ids", "attention_mask")
    side = {"padding_side": "right"} if siglip else {}
    if siglip:
        # SigLIP 2 was trained on lowercased text, right-padded (transformers' convert_siglip2_to_hf.py).
        # Its hub tokenizer is Gemma's, which lowercases only where transformers swaps in Siglip2Tokenizer
        # (5.24 does for model_type "siglip2"; the fixed-res checkpoints are model_type "siglip"), and
        # whose class default is left padding, which would move the pooled last position onto the
        # prompt. SigLIP's own tokenizer lowercases anyway and pads right: for it neither changes anything.
        texts = [t.lower() for t in texts]
    enc = tokenizer(texts, padding=padding, truncation=True, max_length=max_len, return_tensors="pt", **side)
    enc = {k: v.to(model.device) for k, v in enc.items() if k in keep}
    with torch.inference_mode():
        return _normalise(_pooled(model.get_text_features(**enc)).float())


def _pooled(out) -> "torch.Tensor":
    # transformers 5 returns a ModelOutput whose pooler_output is the projected embedding; 4.x a tensor.
    return out if hasattr(out, "shape") else out.pooler_output


def _normalise(x: "torch.Tensor") -> "torch.Tensor":
    return x / x.norm(dim=-1, keepdim=True)


# ---------------------------------------------------------------- supervised classifiers


def _load_classifier(entry: "ModelEntry", settings: "BackendSettings", labels: LabelSet) -> DirectBackend:
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    device, dtype = resolve_device(settings)
    path = weights_path(entry)
    model = AutoModelForImageClassification.from_pretrained(
        path, dtype=dtype, trust_remote_code=_remote(entry, settings))
    check_label_order(model.config, labels, entry.weights)
    model = model.to(device).eval()
    processor = AutoImageProcessor.from_pretrained(path, **_processor_kwargs(settings))
    return classifier_backend(model, processor, labels, settings)


def classifier_backend(model, image_processor, labels: LabelSet, settings: "BackendSettings") -> DirectBackend:
    """Logits column i is dataset class i (checked by check_label_order before this is called)."""
    device, dtype = model.device, model.dtype

    def score(pixels):
        import torch

        with torch.inference_mode():
            return model(pixel_values=pixels.to(device, dtype)).logits

    backend = DirectBackend(_image_preprocessor(image_processor), score, len(labels), settings,
                            _spec(image_processor), str(device))
    backend.ran_on = devices.ran_on(model)
    return backend


def check_label_order(config, labels: LabelSet, weights: str) -> None:
    """Model output i must be dataset class i: same count, same first synonym (case-insensitive).

    Mapping is by index and verified, never by fuzzy names: two ImageNet classes are both "crane",
    so any name-based mapping would silently merge them."""
    if config.num_labels != len(labels):
        raise ValueError(f"{weights} has {config.num_labels} outputs but the dataset has {len(labels)} classes")
    for i in range(len(labels)):
        theirs = str(config.id2label.get(i, "")).split(",")[0].strip()
        ours = labels.synonyms[i][0] if labels.synonyms and labels.synonyms[i] else labels.names[i]
        if theirs.casefold() != ours.casefold():
            raise ValueError(f"{weights}: output {i} is {config.id2label.get(i)!r} but dataset class {i} is "
                             f"{ours!r}; outputs are mapped to classes by index, so the label orders must agree")


# ---------------------------------------------------------------- shared helpers


def weights_path(entry: "ModelEntry") -> str:
    from ..smoke import ensure, is_smoke

    return str(ensure(entry.weights)) if is_smoke(entry.weights) else entry.weights


def resolve_device(settings: "BackendSettings") -> tuple[str, "torch.dtype"]:
    """("cuda"|"cpu"|..., dtype). Auto dtype: float16 on CUDA (the precision CLIP was trained and
    released in, three more mantissa bits than bfloat16 for close rankings), float32 on CPU."""
    device = devices.pick_device(settings.device)
    return device, devices.torch_dtype(devices.pick_dtype(settings.dtype, device, gpu="float16"))


def _processor_kwargs(settings: "BackendSettings") -> dict[str, Any]:
    # options.image_backend = "pil" | "torchvision"; by default transformers picks torchvision
    # when installed (measured ~2x faster than PIL per image on the CPU, see bench/perf_baselines.py).
    backend = settings.extra.get("image_backend")
    return {"backend": backend} if backend else {}


def _image_preprocessor(image_processor) -> Callable[[Any], "torch.Tensor | dict[str, torch.Tensor]"]:
    """One image -> (1, 3, H, W) float32, or where the processor returns more than pixels (SigLIP 2's
    NaFlex: patches padded to max_num_patches, with pixel_attention_mask and spatial_shapes) all of it
    as a dict of batch-1 tensors, which DirectBackend concatenates key by key. Runs in pool threads;
    one image per call measured fastest."""

    def preprocess(image):
        if image.mode != "RGB":  # grey-scale and CMYK JPEGs exist in ImageNet val
            image = image.convert("RGB")
        out = image_processor(images=[image], return_tensors="pt")
        return out["pixel_values"] if set(out) == {"pixel_values"} else dict(out)

    return preprocess


def _image_inputs(pixels, device, dtype) -> dict[str, "torch.Tensor"]:
    """get_image_features' keyword arguments: the pixels in the model's dtype; NaFlex's patch mask and
    grid shapes moved as they are (integers: a float16 mask or shape would be wrong, not just slow)."""
    if not isinstance(pixels, dict):
        return {"pixel_values": pixels.to(device, dtype)}
    return {k: v.to(device, dtype) if k == "pixel_values" else v.to(device) for k, v in pixels.items()}


def _spec(image_processor) -> "Spec | None":
    from ..fastimage import spec_of

    return spec_of(image_processor)


def _remote(entry: "ModelEntry", settings: "BackendSettings") -> bool:
    """Hub code runs only for a model the catalog marks as needing it AND with the user's opt-in."""
    return bool(entry.trust_remote_code and settings.trust_remote_code)


def _auto_config(entry: "ModelEntry", settings: "BackendSettings"):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(weights_path(entry), trust_remote_code=_remote(entry, settings))
