"""Loading a local Hugging Face VLM: the family records, the requirements check (cheap, no torch; the
weights' cache and hub check is vlmcls.hub's, shared with the baselines), the model class, the
quantization config and the load itself.

Importing this module never imports torch or transformers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from .. import devices, hub, remote_code
from ..errors import Unavailable

if TYPE_CHECKING:  # pragma: no cover
    from ..catalog import ModelEntry
    from ..settings import BackendSettings
    from ..types import LabelSet

WEIGHT_FILES = hub.WEIGHT_FILES  # re-exported: the cache check is vlmcls.hub's


@dataclass(frozen=True)
class Family:
    """What differs between VLM families, keyed by `config.model_type`."""

    name: str
    pixel_budget: bool = False  # processor takes min/max pixels (Qwen): bound there, not by pre-shrinking
    string_content: bool = False  # chat template takes a string with an image placeholder, not typed parts
    image_placeholder: str = ""  # that placeholder
    max_batch: int | None = None  # processors that cannot batch
    chat_template: bool = True  # False: the prompt is plain text (after `image_placeholder`), no chat template
    prefix_cache: bool = True  # False: the prompt attends both ways, a label list cached causally cannot match


FAMILIES = {f.name: f for f in (
    Family("qwen2_vl", pixel_budget=True),
    Family("qwen2_5_vl", pixel_budget=True),
    Family("qwen3_vl", pixel_budget=True),
    # Remote code, untestable offline (its 2024 code needs an older transformers: vlmcls.remote_code says
    # so before it runs): its processor takes one "<|image_1|>" prompt at a time.
    Family("phi3_v", string_content=True, image_placeholder="<|image_1|>\n", max_batch=1),
    # Native: its processor drops the chat template on load (its __init__ takes no `chat_template`), the
    # tokenizer keeps it; that template takes a string with "<|image|>" where the image goes.
    Family("phi4_multimodal", string_content=True, image_placeholder="<|image|>"),
    # PaliGemma (1 and 2) ship no chat template: the prompt is the plain text after "<image>", and the
    # processor expands the image tokens and adds "<bos>" after them and "\n" at the end. Its whole prompt
    # (image and text) attends both ways, so the labels-first cache (computed causally) is refused.
    Family("paligemma", chat_template=False, image_placeholder="<image>", prefix_cache=False),
)}


def family_of(model_type: str) -> Family:
    return FAMILIES.get(model_type, Family(model_type))


# ---------------------------------------------------------------- requirements (no torch import)

def _needs_remote_code(entry: "ModelEntry") -> bool:
    return entry.trust_remote_code


# catalog option attn_implementation: transformers' attention kernels, by name (or a hub kernel, "org/repo"),
# and the package each needs beyond torch
ATTENTION = {"sdpa": None, "eager": None, "flex_attention": None, "flash_attention_2": ("flash_attn", "flash-attn"),
             "flash_attention_3": ("flash_attn_interface", "flash-attn-3")}


def attention_reason(value: Any) -> str | None:
    """Why catalog option attn_implementation (a name, or a table of sub-config -> name, e.g.
    {vision_config = "flash_attention_2"}) cannot be used here, or None."""
    names = value.values() if isinstance(value, Mapping) else [value]
    for name in names:
        if not isinstance(name, str) or (name not in ATTENTION and "/" not in name):
            return (f"option attn_implementation {name!r}: choose {', '.join(ATTENTION)}, or a hub kernel "
                    "'org/repo' (a table of them per sub-config, e.g. {vision_config = \"flash_attention_2\"})")
        module, package = ATTENTION.get(name) or (("kernels", "kernels") if "/" in name else (None, None))
        if module is not None and not hub.importable(module):
            return f"option attn_implementation {name!r} needs the {package} package (pip install {package})"
    return None


def requirements(entry: "ModelEntry", settings: "BackendSettings", labels: "LabelSet") -> str | None:
    """One line saying why this model cannot run here, or None. Cheap: imports no torch."""
    for module in ("torch", "transformers"):
        if not hub.importable(module):
            return f"hf-vlm needs {module} (pip install {module})"
    if "attn_implementation" in settings.extra and (reason := attention_reason(settings.extra["attn_implementation"])):
        return reason
    if settings.quant not in ("none", "int8", "nf4"):
        return f"unknown quantization {settings.quant!r} (none, int8 or nf4)"
    if settings.quant != "none" and not hub.importable("bitsandbytes"):
        return f"{settings.quant} quantization needs bitsandbytes (pip install bitsandbytes)"
    if problem := entry.missing_weights():  # written as a path, and no such folder (vlmcls.catalog)
        return problem
    # Both at once: a user who downloads the weights should not learn only then that the opt-in is missing.
    reasons = [hub.weights_reason(entry.weights)]
    if _needs_remote_code(entry) and reasons[0]:  # its code may not fit this transformers: say so before 8 GB
        code = remote_code.code_folder(entry.weights, cached_only=True) if settings.trust_remote_code else None
        if code is not None and (verdict := remote_code.unavailable_reason(entry.name, str(code))):
            return verdict  # (reading it imports transformers; this runs only once a case is about to run)
        if code is None:
            reasons.append(f"its hub code alone (`hf download {entry.weights} --include '*.py' '*.json'`) lets "
                           "the case say first whether this transformers can run it")
    if _needs_remote_code(entry) and not settings.trust_remote_code:
        reasons.insert(0, f"{entry.name} runs the hub's remote code; allow it with --trust-remote-code")
    return "; also, ".join(r for r in reasons if r) or None


# ---------------------------------------------------------------- loading

def torch_dtype(settings: "BackendSettings", device: str):
    """The weights' dtype on `device`. Auto: bf16, the checkpoints' own, on CUDA; float32 on CPUs,
    where it is exact and fast."""
    return devices.torch_dtype(devices.pick_dtype(settings.dtype, device, gpu="bfloat16"))


def _quant_config(quant: str, dtype):
    from transformers import BitsAndBytesConfig

    if quant == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    if quant == "nf4":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
    return None


class _DropCastWarning:
    """bitsandbytes logs "inputs will be cast ... to float16" on every int8 matmul: thousands of lines per
    run. Said once in the backend's notes instead."""

    def filter(self, record) -> bool:
        return "will be cast from" not in record.getMessage()


def _quiet_bitsandbytes() -> None:
    import logging

    logger = logging.getLogger("bitsandbytes.autograd._functions")
    if not any(isinstance(f, _DropCastWarning) for f in logger.filters):
        logger.addFilter(_DropCastWarning())


def _model_class(path: str, remote: bool):
    """AutoModelForImageTextToText; remote-code models that only register a causal-LM class use that."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(path, trust_remote_code=remote)
    if remote:
        auto_map = getattr(config, "auto_map", {}) or {}
        if "AutoModelForImageTextToText" not in auto_map and "AutoModelForCausalLM" in auto_map:
            return AutoModelForCausalLM
    # native models mapped only to a causal LM (Phi-4-multimodal in transformers 5.17-5.24)
    elif type(config) not in AutoModelForImageTextToText._model_mapping and type(config) in AutoModelForCausalLM._model_mapping:
        return AutoModelForCausalLM
    return AutoModelForImageTextToText


def _resolve_path(weights: str) -> str:
    from .. import smoke

    return str(smoke.ensure(weights)) if smoke.is_smoke(weights) else weights



def chat_template_reason(entry: "ModelEntry", processor, family: Family) -> str | None:
    """Why this checkpoint's prompts cannot be written, or None: the backend renders every prompt with its
    chat template (the processor's; the tokenizer's for string-content families)."""
    if not family.chat_template:
        return None
    owner = getattr(processor, "tokenizer", processor) if family.string_content else processor
    if getattr(owner, "chat_template", None):
        return None
    where = "tokenizer" if family.string_content else "processor"
    return (f"{entry.name}: {entry.weights} has no chat template (its {where} has none): add one to the model "
            f"folder (chat_template.jinja, in the model's own prompt format) or use a checkpoint that ships one")


# what AutoProcessor reads from a folder: the image processor's config (transformers 5 writes it into
# processor_config.json, older versions to preprocessor_config.json) and the tokenizer's files
PROCESSOR_CONFIGS = ("preprocessor_config.json", "processor_config.json")
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "tokenizer.model", "vocab.json")


def processor_files_reason(entry: "ModelEntry", path: str) -> str | None:
    """Why a local checkpoint folder cannot give a processor, or None: a fine-tune saved by a Trainer often
    holds the model alone, and transformers then says "Can't load image processor ... from
    'https://huggingface.co/models'" about a folder. Read from the files present; hub repos are not asked."""
    from pathlib import Path

    folder = Path(path)
    if not folder.is_dir() or all(any((folder / f).is_file() for f in files) for files in (PROCESSOR_CONFIGS, TOKENIZER_FILES)):
        return None
    return (f"{entry.name}: {path} has no processor files (preprocessor_config.json / processor_config.json / "
            "tokenizer): save them there with processor.save_pretrained(FOLDER), or copy the base model's")


def _attention_text(attention: Any) -> str:
    if isinstance(attention, Mapping):
        return ", ".join(f"{k} {v}" for k, v in attention.items())
    return str(attention)


def load_model(entry: "ModelEntry", settings: "BackendSettings") -> tuple[Any, Any, list[str]]:
    """(model, processor, notes for the report) of a catalog entry whose requirements are met."""
    from transformers import AutoProcessor

    # Remote code only for a model the catalog marks as needing it, and only with the user's opt-in: a
    # global --trust-remote-code must not let a native model's repo swap in its own code.
    remote = _needs_remote_code(entry) and settings.trust_remote_code
    path, device = _resolve_path(entry.weights), devices.pick_device(settings.device)
    # hub code written for an older transformers fails late (every sample an error row): read it first
    if remote and (reason := remote_code.unavailable_reason(entry.name, path)):
        raise Unavailable(reason)
    if reason := processor_files_reason(entry, path):  # said before the weights load, not after
        raise RuntimeError(reason)
    dtype = torch_dtype(settings, device)
    # device_map loads the weights straight onto the device (no full copy in CPU memory first)
    kwargs: dict[str, Any] = dict(dtype=dtype, trust_remote_code=remote, device_map={"": device})
    quant = _quant_config(settings.quant, dtype)
    if quant is not None:
        kwargs["quantization_config"] = quant
    attention = settings.extra.get("attn_implementation")
    if attention is not None:  # e.g. flash-attn: Qwen2-VL's vision tower then attends to all images in one call
        kwargs["attn_implementation"] = dict(attention) if isinstance(attention, Mapping) else attention
    model = _model_class(path, remote).from_pretrained(path, **kwargs).eval()
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=remote)
    if reason := chat_template_reason(entry, processor, family_of(model.config.model_type)):
        raise RuntimeError(reason)  # else every sample would be an error row saying the same
    notes = [f"attention: {_attention_text(attention)}"] if attention is not None else []
    if remote:
        notes.append(f"{entry.name}: ran the hub's remote code (trust_remote_code)")
    if settings.quant == "int8":
        _quiet_bitsandbytes()
        notes.append("int8: bitsandbytes casts matmul inputs to float16 (its per-call warning is silenced)")
    return model, processor, notes
