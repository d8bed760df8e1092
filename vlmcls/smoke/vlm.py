"""Tiny random-weight VLMs (Qwen2-VL, Qwen2.5-VL, LLaVA-NeXT), saved like real checkpoints.

Each builder writes config, weights, a byte-level tokenizer (one token per byte, no merges: nothing
to download), a stock processor with a short chat template and a generation config, so that
`AutoModelForImageTextToText.from_pretrained(path)` + `AutoProcessor.from_pretrained(path)` load them
through exactly the code path of a hub checkpoint. Random weights answer garbage: tests assert
plumbing (shapes, equalities), never content.
"""
from __future__ import annotations

from pathlib import Path

QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                 "<|image_pad|>", "<|video_pad|>")

# Short ChatML template; like the real Qwen one it keeps the content order (text, image, text), which
# is what lets the labels-first layout cache the label list.
QWEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n"
    "{% if m.content is string %}{{ m.content }}{% else %}{% for c in m.content %}"
    "{% if c.type == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c.type == 'text' %}{{ c.text }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Vicuna style, as llava-v1.6-vicuna: "USER: <image>\n... ASSISTANT:".
LLAVA_TEMPLATE = (
    "{% for m in messages %}{% if m.role == 'user' %}USER: "
    "{% for c in m.content %}{% if c.type == 'image' %}<image>\n{% elif c.type == 'text' %}{{ c.text }}"
    "{% endif %}{% endfor %}{% else %} {{ m.content }}</s>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %} ASSISTANT:{% endif %}"
)
# Qwen image bounds: 56x56 to 56x112 pixels -> 4 to 8 image tokens (sizes vary, so padding is exercised).
QWEN_PIXELS = {"min_pixels": 56 * 56, "max_pixels": 56 * 112}


def add_specials(tok, names) -> None:
    from tokenizers import AddedToken

    tok.add_tokens([AddedToken(s, special=True, normalized=False) for s in names], special_tokens=True)


def qwen_tokenizer(vocab: dict | None = None, merges: list | None = None):
    """Byte-level BPE with Qwen's special tokens; by default one token per byte (no merges)."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import Qwen2Tokenizer

    vocab = vocab or {s: i for i, s in enumerate(sorted(ByteLevel.alphabet()))}
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges or [], unk_token=None, bos_token=None,
                         eos_token="<|im_end|>", pad_token="<|endoftext|>", padding_side="left")
    add_specials(tok, QWEN_SPECIALS)
    return tok


def _llama_tokenizer():
    """Sentencepiece-style (Metaspace + byte fallback) like Vicuna's: every character is a byte token."""
    from transformers import LlamaTokenizer

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"<0x{b:02X}>": 3 + b for b in range(256)})
    vocab["▁"] = len(vocab)
    tok = LlamaTokenizer(vocab=vocab, merges=[], padding_side="left")
    add_specials(tok, ("<image>", "<pad>"))
    tok.pad_token = "<pad>"
    return tok


def _save(model, processor, tok, target: Path) -> None:
    from transformers import GenerationConfig

    model.generation_config = GenerationConfig(
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, do_sample=False)
    model.save_pretrained(target)
    processor.save_pretrained(target)


def qwen_ids(tok) -> dict:
    ids = tok.convert_tokens_to_ids
    return dict(image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
                vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"))


# Random weights at the usual init (std 0.02) give the same tokens whatever the image or prompt, which
# would make every batched-vs-unbatched comparison pass blindly; std 0.5 makes answers input-dependent.
INIT_STD = 0.5
# Width 64, not less: bitsandbytes' CPU 4-bit kernels need every Linear input to span a 64-value block.
SMALL = dict(initializer_range=INIT_STD, hidden_size=64, intermediate_size=128, num_attention_heads=2)


def _qwen_text(tok) -> dict:
    # head_dim 32 -> the three mrope sections must sum to 16
    return dict(SMALL, vocab_size=len(tok), num_hidden_layers=2, num_key_value_heads=1,
                max_position_embeddings=32768,
                rope_parameters={"rope_type": "default", "rope_theta": 1e4, "mrope_section": [4, 6, 6]},
                bos_token_id=None, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)


def image_processor(name: str, **kwargs):
    """The torchvision-backed image processor (it resizes on the model's device), as `AutoProcessor` picks
    for a hub checkpoint; the PIL one (`<name>Pil`) only where torchvision is missing."""
    import transformers
    from transformers.utils import is_torchvision_available

    cls = getattr(transformers, name) if is_torchvision_available() else \
        getattr(transformers, f"{name}Pil", None) or getattr(transformers, name)
    return cls(**kwargs)


def qwen_processor(processor_cls, tok, template: str = QWEN_TEMPLATE, **image_kwargs):
    from transformers import Qwen2VLVideoProcessor

    return processor_cls(image_processor=image_processor("Qwen2VLImageProcessor", **image_kwargs), tokenizer=tok,
                         video_processor=Qwen2VLVideoProcessor(), chat_template=template)


def _build(model_cls, config, processor, tok, target: Path) -> None:
    import torch

    torch.manual_seed(0)  # the same tiny model on every machine
    model = model_cls(config).eval()
    _save(model, processor, tok, Path(target))


def build_qwen2_vl(target: Path) -> None:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

    tok = qwen_tokenizer()
    vision = dict(initializer_range=INIT_STD, depth=1, embed_dim=64, hidden_size=64, num_heads=2, mlp_ratio=2)
    config = Qwen2VLConfig(text_config=_qwen_text(tok), vision_config=vision, tie_word_embeddings=True,
                           **qwen_ids(tok))
    processor = qwen_processor(Qwen2VLProcessor, tok, **QWEN_PIXELS)
    _build(Qwen2VLForConditionalGeneration, config, processor, tok, target)


def build_qwen2_5_vl(target: Path) -> None:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

    tok = qwen_tokenizer()
    # window attention in block 0, full attention in block 1, as the real model alternates them
    vision = dict(SMALL, depth=2, num_heads=2, out_hidden_size=64, window_size=56, fullatt_block_indexes=[1])
    config = Qwen2_5_VLConfig(text_config=_qwen_text(tok), vision_config=vision, tie_word_embeddings=True,
                              **qwen_ids(tok))
    processor = qwen_processor(Qwen2_5_VLProcessor, tok, **QWEN_PIXELS)
    _build(Qwen2_5_VLForConditionalGeneration, config, processor, tok, target)


def build_llava_next(target: Path) -> None:
    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextProcessor

    tok = _llama_tokenizer()
    pinpoints = [[32, 32], [32, 64], [64, 32], [64, 64]]
    text = dict(SMALL, model_type="llama", vocab_size=len(tok), num_hidden_layers=2, num_key_value_heads=1,
                max_position_embeddings=32768,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    vision = dict(SMALL, model_type="clip_vision_model", image_size=32, patch_size=8, num_hidden_layers=2,
                  projection_dim=64)
    config = LlavaNextConfig(text_config=text, vision_config=vision, image_grid_pinpoints=pinpoints,
                             image_token_index=tok.convert_tokens_to_ids("<image>"), image_seq_length=16)
    image = image_processor("LlavaNextImageProcessor", size={"shortest_edge": 32},
                            crop_size={"height": 32, "width": 32}, image_grid_pinpoints=pinpoints)
    processor = LlavaNextProcessor(image_processor=image, tokenizer=tok, patch_size=8,
                                   vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                   chat_template=LLAVA_TEMPLATE)
    _build(LlavaNextForConditionalGeneration, config, processor, tok, target)
