"""The models `python -m vlmcls.perf` times: full-size architectures built from their published configs
with random weights (nothing is downloaded), a local byte-level BPE standing in for the real tokenizer,
and (model, processor) per quantization. Importing this module never imports torch.
"""
from __future__ import annotations

import json
import tempfile
from typing import Any, Callable, Sequence

from .catalog import ModelEntry
from .settings import BackendSettings

FULL_SIZE = ("qwen2-vl-2b",)
TOKENS_PER_LABEL = 4.5  # "label, " in Qwen2's BPE, the estimate gpu_reference.py uses
SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"  # Qwen2-VL's default system turn


def bpe_tokenizer(names: Sequence[str], tokens_per_label: float = TOKENS_PER_LABEL):
    """A byte-level BPE trained on the class names until "label, " costs about as many tokens as in
    Qwen2's real vocabulary: sequence length decides the cost, and one token per byte would triple it."""
    text = ", ".join(names)
    low, high = 257, 20000
    while high - low > 16:  # bisect the vocabulary size: more merges, fewer tokens
        mid = (low + high) // 2
        tok = _train_bpe(text, mid)
        if len(tok(text)["input_ids"]) / len(names) > tokens_per_label:
            low = mid
        else:
            high = mid
    return _train_bpe(text, high)


def _train_bpe(text: str, vocab_size: int):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from .smoke.vlm import qwen_tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator([text], trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return qwen_tokenizer(model["vocab"], merges)


def qwen2_vl_2b(names: Sequence[str], device: str, dtype) -> tuple[Any, Any]:
    """Qwen2-VL-2B-Instruct's published config with random weights, its stock processor, a local BPE."""
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

    from .smoke.vlm import QWEN_TEMPLATE, qwen_ids, qwen_processor

    tok = bpe_tokenizer(names)
    text = dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768,
                rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None)
    vision = dict(depth=32, embed_dim=1280, hidden_size=1536, num_heads=16, mlp_ratio=4)
    config = Qwen2VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, **qwen_ids(tok))
    with torch.device(device):
        torch.set_default_dtype(dtype)
        try:
            model = Qwen2VLForConditionalGeneration(config).eval()
        finally:
            torch.set_default_dtype(torch.float32)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, qwen_processor(Qwen2VLProcessor, tok, template=SYSTEM + QWEN_TEMPLATE)


FULL_BUILDERS: dict[str, Callable] = {"qwen2-vl-2b": qwen2_vl_2b}


# ---------------------------------------------------------------- models per quantization

class Models:
    """(model, processor) per quantization for one arch. Full size: built once in memory; int8/nf4 go
    through a saved copy and `hf_vlm.load`, because bitsandbytes quantizes while loading."""

    def __init__(self, arch: str, entry: ModelEntry, names: Sequence[str], device: str) -> None:
        self.arch, self.entry, self.names, self.device = arch, entry, names, device
        self._built: tuple | None = None
        self._saved: tempfile.TemporaryDirectory | None = None

    def get(self, settings: BackendSettings):
        from .backends import hf_vlm

        if self.arch not in FULL_BUILDERS:  # smoke models load like checkpoints, at any quantization
            backend = hf_vlm.load(self.entry, settings, None)
            return backend.model, backend.processor, backend.notes
        if settings.quant == "none":
            model, processor = self._build(settings)
            return model, processor, []
        backend = hf_vlm.load(self._saved_entry(settings), settings, None)
        return backend.model, backend.processor, backend.notes

    def _build(self, settings: BackendSettings):
        from .backends import hf_vlm

        if self._built is None:
            self._built = FULL_BUILDERS[self.arch](self.names, self.device, hf_vlm.torch_dtype(settings, self.device))
        return self._built

    def _saved_entry(self, settings: BackendSettings) -> ModelEntry:
        if self._saved is None:
            model, processor = self._build(settings.with_(quant="none"))
            self._saved = tempfile.TemporaryDirectory(prefix=f"vlmcls-perf-{self.arch}-")
            model.save_pretrained(self._saved.name)
            processor.save_pretrained(self._saved.name)
        return ModelEntry(name=self.arch, backend="hf-vlm", weights=self._saved.name)

    def release(self) -> None:
        self._built = None
        if self._saved is not None:
            self._saved.cleanup()
