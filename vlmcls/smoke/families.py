"""Tiny random-weight models of the catalog's newer native families: Gemma 3, InternVL3, SmolVLM
(Idefics3), Qwen3-VL, Phi-4-multimodal. Same recipe as vlm.py: the family's own config, model and
processor classes, a byte-level tokenizer with the family's special tokens, and a short chat template
in the family's own format, saved so that `load()` reads them as it reads a hub checkpoint.

Phi-4-multimodal registers only a causal-LM class (`load()` falls back to it) and its processor wants an
audio feature extractor beside the image processor; its builder keeps both.

Below them, families outside the catalog's smoke entries (tests/test_families_more.py builds them into
its own folder): LLaVA-OneVision, Mistral3, Mllama (cross-attention layers), Aya Vision (a sliding window
shorter than the label list) and PaliGemma (no chat template, as its hub checkpoints).
"""
from __future__ import annotations

from pathlib import Path

from .vlm import (QWEN_SPECIALS, QWEN_TEMPLATE, SMALL, _build, add_specials, image_processor,
                  qwen_ids)


def _byte_vocab() -> dict[str, int]:
    """Byte-level BPE alphabet: one token per byte, no merges (the specials are added after it)."""
    from tokenizers.pre_tokenizers import ByteLevel

    return {s: i for i, s in enumerate(sorted(ByteLevel.alphabet()))}


def _text(tok, model_type: str, **extra) -> dict:
    """A 2-layer text config on the tokenizer's ids; `extra` adds or overrides keys."""
    return {**SMALL, "model_type": model_type, "vocab_size": len(tok), "num_hidden_layers": 2,
            "num_key_value_heads": 1, "max_position_embeddings": 32768, "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id, **extra}


# ---------------------------------------------------------------- Gemma 3

GEMMA_SPECIALS = ("<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>", "<image_soft_token>")
# As gemma-3-*-it: <bos> in the template (and the tokenizer adds one too, add_bos_token, as the real
# one does), turns "user" / "model", the image as <start_of_image> where it appears in the content (the
# processor expands it to the soft tokens), text trimmed.
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m.role == 'assistant' else m.role }}\n"
    "{% if m.content is string %}{{ m.content | trim }}{% else %}{% for c in m.content %}"
    "{% if c.type == 'image' %}<start_of_image>{% elif c.type == 'text' %}{{ c.text | trim }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


# Gemma scales embeddings by sqrt(hidden): at vlm.INIT_STD (0.5) every prompt gives the same tokens; the
# usual 0.02 already makes answers input-dependent (4 distinct answers for 5 test queries).
GEMMA_STD = 0.02


def _gemma_tokenizer():
    """Sentencepiece-style with byte fallback, as Gemma's: every character is a byte token."""
    from transformers import GemmaTokenizer

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4}
    vocab.update({f"<0x{b:02X}>": 5 + b for b in range(256)})
    vocab["▁"] = len(vocab)
    tok = GemmaTokenizer(vocab=vocab, merges=[], padding_side="left", add_bos_token=True, extra_special_tokens={
        "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"})
    add_specials(tok, GEMMA_SPECIALS)
    # the -it checkpoints end a reply with <end_of_turn>, not <eos>
    tok.eos_token = "<end_of_turn>"
    return tok


def build_gemma3(target: Path) -> None:
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3Processor

    tok = _gemma_tokenizer()
    ids = tok.convert_tokens_to_ids
    # 32x32 image, 8x8 patches -> 4x4 patches, pooled to 2x2 = 4 soft tokens per image
    text = _text(tok, "gemma3_text", head_dim=32, query_pre_attn_scalar=32, sliding_window=64,
                 layer_types=["sliding_attention", "full_attention"], initializer_range=GEMMA_STD)
    vision = {**SMALL, "model_type": "siglip_vision_model", "image_size": 32, "patch_size": 8,
              "num_hidden_layers": 1, "initializer_range": GEMMA_STD}
    config = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4,
                          boi_token_index=ids("<start_of_image>"), eoi_token_index=ids("<end_of_image>"),
                          image_token_index=ids("<image_soft_token>"), initializer_range=GEMMA_STD)
    image = image_processor("Gemma3ImageProcessor", size={"height": 32, "width": 32})
    processor = Gemma3Processor(image_processor=image, tokenizer=tok, image_seq_length=4,
                                chat_template=GEMMA_TEMPLATE)
    _build(Gemma3ForConditionalGeneration, config, processor, tok, target)


# ---------------------------------------------------------------- InternVL3 (native "-hf" checkpoints)

INTERNVL_IMAGE = {"start_image_token": "<img>", "end_image_token": "</img>",
                  "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"}
# ChatML as InternVL3-*-hf, whose template writes each image as "<IMG_CONTEXT>\n" in place (the
# processor expands it to <img> + context tokens per tile + </img>); the long system prompt is left out.
INTERNVL_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n"
    "{% if m.content is string %}{{ m.content }}{% else %}{% for c in m.content %}"
    "{% if c.type == 'image' %}<IMG_CONTEXT>\n{% elif c.type == 'text' %}{{ c.text }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _chatml_tokenizer(cls_name: str, specials: tuple[str, ...], **kwargs):
    """Byte-level BPE (one token per byte) with ChatML's tokens and the family's own."""
    import transformers

    names = ("<|endoftext|>", "<|im_start|>", "<|im_end|>") + specials
    tok = getattr(transformers, cls_name)(vocab=_byte_vocab(), merges=[], unk_token=None, bos_token=None,
                                          eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                          padding_side="left", **kwargs)
    add_specials(tok, names)
    return tok


def build_internvl(target: Path) -> None:
    from transformers import InternVLConfig, InternVLForConditionalGeneration, InternVLProcessor

    tok = _chatml_tokenizer("Qwen2Tokenizer", tuple(INTERNVL_IMAGE.values()), extra_special_tokens=INTERNVL_IMAGE)
    # 32x32 tiles, 8x8 patches -> 16 patches, pixel-shuffled by 0.5 -> 4 context tokens per tile
    vision = dict(SMALL, image_size=[32, 32], patch_size=[8, 8], num_hidden_layers=1)
    config = InternVLConfig(text_config=_text(tok, "qwen2"), vision_config=vision, image_seq_length=4,
                            image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"), downsample_ratio=0.5)
    # tiles as the real one (crop_to_patches + thumbnail), at most 4: images of different shapes get
    # different token counts, so batches are padded
    image = image_processor("GotOcr2ImageProcessor", size={"height": 32, "width": 32}, crop_to_patches=True,
                            max_patches=4)
    processor = InternVLProcessor(image_processor=image, tokenizer=tok, video_processor=_internvl_video(),
                                  image_seq_length=4, chat_template=INTERNVL_TEMPLATE)
    _build(InternVLForConditionalGeneration, config, processor, tok, target)


def _internvl_video():
    from transformers import InternVLVideoProcessor

    return InternVLVideoProcessor(size={"height": 32, "width": 32})


# ---------------------------------------------------------------- SmolVLM (Idefics3)

# The tile grid markers the processor looks up (up to 6x6 tiles)
IDEFICS3_SPECIALS = ("<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>") + tuple(
    f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7))
# As SmolVLM-Instruct: "<|im_start|>User:<image>...<end_of_utterance>\nAssistant:"
IDEFICS3_TEMPLATE = (
    "<|im_start|>{% for m in messages %}{{ m.role | capitalize }}"
    "{% if m.content is string %}: {{ m.content }}{% else %}"
    "{% if m.content[0].type == 'image' %}:{% else %}: {% endif %}{% for c in m.content %}"
    "{% if c.type == 'image' %}<image>{% elif c.type == 'text' %}{{ c.text }}{% endif %}{% endfor %}"
    "{% endif %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)


def build_idefics3(target: Path) -> None:
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor

    tok = _chatml_tokenizer("GPT2Tokenizer", IDEFICS3_SPECIALS)
    tok.eos_token = "<end_of_utterance>"
    # 32x32 tiles, 8x8 patches -> 16 patches, pixel-shuffled by 2 -> 4 image tokens per tile
    vision = dict(SMALL, image_size=32, patch_size=8, num_hidden_layers=1)
    config = Idefics3Config(text_config=_text(tok, "llama"), vision_config=vision, scale_factor=2,
                            image_token_id=tok.convert_tokens_to_ids("<image>"))
    # split into up to 2x2 tiles of 32 px plus the global image, as the real one splits into 364 px tiles
    image = image_processor("Idefics3ImageProcessor", size={"longest_edge": 64}, max_image_size={"longest_edge": 32})
    processor = Idefics3Processor(image_processor=image, tokenizer=tok, image_seq_len=4,
                                  chat_template=IDEFICS3_TEMPLATE)
    _build(Idefics3ForConditionalGeneration, config, processor, tok, target)


# ---------------------------------------------------------------- Qwen3-VL

# 16 px patches merged 2x2: one image token per 32x32 pixels -> 4 to 8 tokens
QWEN3_PIXELS = {"min_pixels": 64 * 64, "max_pixels": 64 * 128}


def build_qwen3_vl(target: Path) -> None:
    from transformers import (Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor,
                              Qwen3VLVideoProcessor)

    tok = _chatml_tokenizer("Qwen2Tokenizer", QWEN_SPECIALS[3:])
    # head_dim 32 -> interleaved mrope sections summing to 16
    text = _text(tok, "qwen3_vl_text", head_dim=32, rope_parameters={
        "rope_type": "default", "rope_theta": 1e4, "mrope_section": [6, 5, 5], "mrope_interleaved": True})
    # deepstack: the first block's features are also injected into the language model's first layers
    vision = dict(SMALL, depth=2, num_heads=2, out_hidden_size=64, patch_size=16, spatial_merge_size=2,
                  num_position_embeddings=16, deepstack_visual_indexes=[0])
    config = Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, **qwen_ids(tok))
    image = image_processor("Qwen2VLImageProcessor", patch_size=16, merge_size=2, **QWEN3_PIXELS)
    video = Qwen3VLVideoProcessor(patch_size=16, merge_size=2)
    processor = Qwen3VLProcessor(image_processor=image, tokenizer=tok, video_processor=video,
                                 chat_template=QWEN_TEMPLATE)
    _build(Qwen3VLForConditionalGeneration, config, processor, tok, target)


# ---------------------------------------------------------------- Phi-4-multimodal (native, causal-LM class)

PHI4_IMAGE = {"image_token": "<|image|>", "audio_token": "<|audio|>"}
PHI4_SPECIALS = ("<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>") + tuple(PHI4_IMAGE.values())
# Phi-4's own template: "<|user|>...<|end|><|assistant|>" over string content. The native processor expands
# each "<|image|>" (its tokenizer's image_token; the remote-code "<|image_1|>" is not looked for) to the
# image's tokens. Saved with the processor, but only the tokenizer restores it: Phi4MultimodalProcessor's
# __init__ takes no `chat_template`, so `from_pretrained` drops it (transformers 5.17 and 5.24); hf_load's
# Family record renders through the tokenizer.
PHI4_TEMPLATE = (
    "{% for m in messages %}{{ '<|' + m.role + '|>' + m.content + '<|end|>' }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% else %}{{ eos_token }}{% endif %}"
)
# The processor hard-codes 16x16 image tokens per crop (256 + separators), i.e. 32x32 patches pooled 2x2:
# 64-px crops of 2-px patches keep that count at a fraction of 448-px crops' cost; at most 4 crops
# (+ the global view), so test images of different shapes get different token counts.
PHI4_CROP, PHI4_PATCH, PHI4_CROPS = 64, 2, 4


def _phi4_tokenizer():
    """Byte-level BPE (one token per byte), as Phi-4's GPT-2-style tokenizer, with its turn markers;
    replies end with <|end|>."""
    from transformers import GPT2Tokenizer

    tok = GPT2Tokenizer(vocab=_byte_vocab(), merges=[], unk_token=None, bos_token="<|endoftext|>",
                        eos_token="<|end|>", pad_token="<|endoftext|>", padding_side="left",
                        extra_special_tokens=PHI4_IMAGE)
    add_specials(tok, PHI4_SPECIALS)
    tok.chat_template = PHI4_TEMPLATE  # the tokenizer's own, as the hub checkpoint's
    return tok


def build_phi4mm(target: Path) -> None:
    from transformers import (Phi4MultimodalConfig, Phi4MultimodalFeatureExtractor, Phi4MultimodalForCausalLM,
                              Phi4MultimodalProcessor)

    tok = _phi4_tokenizer()
    ids = tok.convert_tokens_to_ids
    text = _text(tok, "phi4_multimodal", rope_parameters={"rope_type": "default", "rope_theta": 1e4,
                                                           "partial_rotary_factor": 0.75})
    text.pop("model_type")  # Phi-4-mm's config is flat: the text model's keys sit at its top level
    vision = dict(SMALL, num_hidden_layers=2, image_size=PHI4_CROP, crop_size=PHI4_CROP, patch_size=PHI4_PATCH,
                  image_token_id=ids("<|image|>"))
    # the audio encoder is built (and saved) whatever the input: one small conformer block
    audio = dict(SMALL, num_blocks=1, ext_pw_out_channel=64, depthwise_separable_out_channel=64,
                 nemo_conv_channels=64, audio_token_id=ids("<|audio|>"))
    config = Phi4MultimodalConfig(**text, vision_config=vision, audio_config=audio)
    image = image_processor("Phi4MultimodalImageProcessor", size={"height": PHI4_CROP, "width": PHI4_CROP},
                            patch_size=PHI4_PATCH, dynamic_hd=PHI4_CROPS)
    processor = Phi4MultimodalProcessor(image_processor=image, audio_processor=Phi4MultimodalFeatureExtractor(),
                                        tokenizer=tok, chat_template=PHI4_TEMPLATE)
    _build(Phi4MultimodalForCausalLM, config, processor, tok, target)


# ---------------------------------------------------------------- LLaVA-OneVision

# ChatML as llava-onevision-qwen2-*-ov-hf, the image as "<image>\n" where it appears in the content
ONEVISION_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n"
    "{% if m.content is string %}{{ m.content }}{% else %}{% for c in m.content %}"
    "{% if c.type == 'image' %}<image>\n{% elif c.type == 'text' %}{{ c.text }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_llava_onevision(target: Path) -> None:
    """SigLIP tower, Qwen2 text, AnyRes grids of 32 px tiles (image token counts differ with the shape)."""
    from transformers import (LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration, LlavaOnevisionProcessor,
                              LlavaOnevisionVideoProcessor)

    tok = _chatml_tokenizer("Qwen2Tokenizer", ("<image>", "<video>"))
    pinpoints = [[32, 32], [32, 64], [64, 32], [64, 64]]
    vision = dict(SMALL, model_type="siglip_vision_model", image_size=32, patch_size=8, num_hidden_layers=2)
    config = LlavaOnevisionConfig(text_config=_text(tok, "qwen2"), vision_config=vision, image_grid_pinpoints=pinpoints,
                                  image_token_index=tok.convert_tokens_to_ids("<image>"),
                                  video_token_index=tok.convert_tokens_to_ids("<video>"),
                                  vision_feature_select_strategy="full", vision_feature_layer=-1)
    image = image_processor("LlavaOnevisionImageProcessor", size={"height": 32, "width": 32},
                            image_grid_pinpoints=pinpoints)
    processor = LlavaOnevisionProcessor(image_processor=image, tokenizer=tok, num_image_tokens=16,
                                        video_processor=LlavaOnevisionVideoProcessor(size={"height": 32, "width": 32}),
                                        vision_feature_select_strategy="full", chat_template=ONEVISION_TEMPLATE)
    _build(LlavaOnevisionForConditionalGeneration, config, processor, tok, target)


# ---------------------------------------------------------------- Mistral3 (Mistral-Small-3.1)

# As Mistral-Small-3.1's: "<s>[INST]...[/INST]", the image as [IMG] (the processor expands it to rows of
# [IMG] separated by [IMG_BREAK], ended by [IMG_END])
MISTRAL3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m.role == 'user' %}[INST]"
    "{% if m.content is string %}{{ m.content }}{% else %}{% for c in m.content %}"
    "{% if c.type == 'image' %}[IMG]{% elif c.type == 'text' %}{{ c.text }}{% endif %}{% endfor %}{% endif %}[/INST]"
    "{% else %}{{ m.content }}{{ eos_token }}{% endif %}{% endfor %}"
)


def build_mistral3(target: Path) -> None:
    """Pixtral vision tower (images keep their aspect), a 2x2 patch merger, Mistral text."""
    from transformers import LlamaTokenizer, Mistral3Config, Mistral3ForConditionalGeneration, PixtralProcessor

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"<0x{b:02X}>": 3 + b for b in range(256)})
    vocab["▁"] = len(vocab)
    tok = LlamaTokenizer(vocab=vocab, merges=[], padding_side="left")
    add_specials(tok, ("[INST]", "[/INST]", "[IMG]", "[IMG_BREAK]", "[IMG_END]", "<pad>"))
    tok.pad_token = "<pad>"
    # no sliding window, as Mistral-Small-3.1's text config
    text = _text(tok, "mistral", head_dim=32, sliding_window=None)
    vision = dict(SMALL, model_type="pixtral", image_size=64, patch_size=8, num_hidden_layers=1, head_dim=32)
    config = Mistral3Config(text_config=text, vision_config=vision, spatial_merge_size=2,
                            image_token_index=tok.convert_tokens_to_ids("[IMG]"))
    image = image_processor("PixtralImageProcessor", size={"longest_edge": 64}, patch_size=8)
    processor = PixtralProcessor(image_processor=image, tokenizer=tok, patch_size=8, spatial_merge_size=2,
                                 chat_template=MISTRAL3_TEMPLATE)
    _build(Mistral3ForConditionalGeneration, config, processor, tok, target)


# ---------------------------------------------------------------- Mllama (Llama 3.2 Vision)

MLLAMA_SPECIALS = ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                   "<|finetune_right_pad_id|>", "<|python_tag|>", "<|image|>")
# As Llama-3.2-11B-Vision-Instruct's (its system prompt left out)
MLLAMA_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n"
    "{% if m.content is string %}{{ m.content }}{% else %}{% for c in m.content %}"
    "{% if c.type == 'image' %}<|image|>{% elif c.type == 'text' %}{{ c.text }}{% endif %}{% endfor %}{% endif %}"
    "<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def build_mllama(target: Path) -> None:
    """Tiled vision encoder, and cross-attention layers in the text model (layer 1 of 2) that read it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import MllamaConfig, MllamaForConditionalGeneration, MllamaProcessor, PreTrainedTokenizerFast

    t = Tokenizer(models.BPE(vocab=_byte_vocab(), merges=[], ignore_merges=True))
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=t, padding_side="left")
    add_specials(tok, MLLAMA_SPECIALS)
    tok.bos_token, tok.eos_token, tok.pad_token = "<|begin_of_text|>", "<|eot_id|>", "<|finetune_right_pad_id|>"
    text = {key: value for key, value in _text(tok, "mllama_text_model").items() if key != "model_type"}
    text.update(vocab_size=len(tok) + 8, cross_attention_layers=[1])  # + 8: as the real one's spare rows
    vision = dict(initializer_range=0.5, hidden_size=64, intermediate_size=128, attention_heads=2, num_hidden_layers=2,
                  num_global_layers=1, intermediate_layers_indices=[0], vision_output_dim=128, image_size=32,
                  patch_size=8, max_num_tiles=4,
                  supported_aspect_ratios=[[1, 1], [1, 2], [2, 1], [2, 2], [1, 3], [3, 1], [1, 4], [4, 1]])
    config = MllamaConfig(text_config=text, vision_config=vision,
                          image_token_index=tok.convert_tokens_to_ids("<|image|>"))
    image = image_processor("MllamaImageProcessor", size={"height": 32, "width": 32}, max_image_tiles=4)
    processor = MllamaProcessor(image_processor=image, tokenizer=tok, chat_template=MLLAMA_TEMPLATE)
    _build(MllamaForConditionalGeneration, config, processor, tok, target)


# ---------------------------------------------------------------- Aya Vision

AYA_IMAGE = ("<|START_OF_IMG|>", "<|END_OF_IMG|>", "<|IMG_PATCH|>", "<|IMG_LINE_BREAK|>", "<image>")
AYA_TEMPLATE = (
    "<BOS_TOKEN>{% for m in messages %}<|START_OF_TURN_TOKEN|>"
    "{{ '<|USER_TOKEN|>' if m.role == 'user' else '<|CHATBOT_TOKEN|>' }}"
    "{% if m.content is string %}{{ m.content }}{% else %}{% for c in m.content %}"
    "{% if c.type == 'image' %}<image>{% elif c.type == 'text' %}{{ c.text }}{% endif %}{% endfor %}{% endif %}"
    "<|END_OF_TURN_TOKEN|>{% endfor %}"
    "{% if add_generation_prompt %}<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>{% endif %}"
)
# Cohere2's sliding layers (aya-vision-8b: 4096) at 64 here: shorter than the tests' label list
AYA_WINDOW = 64


def build_aya_vision(target: Path) -> None:
    """SigLIP tower, tiles as GotOcr2 (token counts differ with the shape), Cohere2 text with sliding layers."""
    from transformers import AyaVisionConfig, AyaVisionForConditionalGeneration, AyaVisionProcessor, CohereTokenizer

    tok = CohereTokenizer(vocab=_byte_vocab(), merges=[], padding_side="left")
    add_specials(tok, ("<PAD>", "<BOS_TOKEN>", "<|END_OF_TURN_TOKEN|>", "<|START_OF_TURN_TOKEN|>", "<|USER_TOKEN|>",
                       "<|CHATBOT_TOKEN|>") + AYA_IMAGE)
    tok.bos_token, tok.eos_token, tok.pad_token = "<BOS_TOKEN>", "<|END_OF_TURN_TOKEN|>", "<PAD>"
    text = _text(tok, "cohere2", head_dim=32, sliding_window=AYA_WINDOW,
                 layer_types=["sliding_attention", "full_attention"])
    vision = dict(SMALL, model_type="siglip_vision_model", image_size=32, patch_size=8, num_hidden_layers=1)
    config = AyaVisionConfig(text_config=text, vision_config=vision, downsample_factor=2,
                             image_token_index=tok.convert_tokens_to_ids("<|IMG_PATCH|>"))
    image = image_processor("GotOcr2ImageProcessor", size={"height": 32, "width": 32}, crop_to_patches=True,
                            max_patches=4)
    processor = AyaVisionProcessor(image_processor=image, tokenizer=tok, patch_size=16, img_size=32,
                                   chat_template=AYA_TEMPLATE)
    _build(AyaVisionForConditionalGeneration, config, processor, tok, target)


# ---------------------------------------------------------------- PaliGemma

def build_paligemma(target: Path) -> None:
    """SigLIP + Gemma, and no chat template, as google/paligemma*-* ship: the processor writes the prompt
    (image tokens, <bos>, the text, a newline); its tokenizer has no image token of its own either."""
    from transformers import (GemmaTokenizer, PaliGemmaConfig, PaliGemmaForConditionalGeneration,
                              PaliGemmaProcessor)

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3}
    vocab.update({f"<0x{b:02X}>": 4 + b for b in range(256)})
    vocab["▁"] = len(vocab)
    tok = GemmaTokenizer(vocab=vocab, merges=[], padding_side="left", add_bos_token=True)
    add_specials(tok, ("<image>",))
    vision = dict(SMALL, model_type="siglip_vision_model", image_size=32, patch_size=8, num_hidden_layers=1,
                  projection_dim=64, initializer_range=GEMMA_STD)
    image = image_processor("SiglipImageProcessor", size={"height": 32, "width": 32})
    image.image_seq_length = 16
    processor = PaliGemmaProcessor(image_processor=image, tokenizer=tok)  # adds 1,152 <loc>/<seg> tokens
    text = _text(tok, "gemma", head_dim=32, initializer_range=GEMMA_STD)
    config = PaliGemmaConfig(text_config=text, vision_config=vision, vocab_size=len(tok), projection_dim=64,
                             hidden_size=64, image_token_index=tok.convert_tokens_to_ids("<image>"))
    _build(PaliGemmaForConditionalGeneration, config, processor, tok, target)
