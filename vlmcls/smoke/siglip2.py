"""A tiny random-weight SigLIP 2 NaFlex checkpoint laid out as `google/siglip2-*-naflex` is on the hub.

The hub's NaFlex checkpoints are `Siglip2Model` + `Siglip2Processor`: a Gemma tokenizer (`tokenizer.json`,
`tokenizer_class = "GemmaTokenizer"`) and a `Siglip2ImageProcessor` that resizes each image, aspect
kept, to at most `max_num_patches` patches and pads the patch sequence to exactly that many, returning
`pixel_attention_mask` and `spatial_shapes` beside `pixel_values`. This builder makes the same from
a BPE vocabulary trained here with the `tokenizers` library (no download, no sentencepiece), set up
as transformers' convert_siglip2_to_hf.py sets up the hub's: no BOS, EOS appended, padded on the
right, input ids only. The vocabulary is learnt from *lowercased* text, as SigLIP 2 was trained, so
a capital letter that reaches it is a token it never saw (<unk>): a missing lowercasing shows.

Special ids are Gemma's (0 <pad>, 1 <eos>, 2 <bos>, 3 <unk>, 4 <mask>), the text length is the hub's
64, and logit_scale / logit_bias are moved off their zero init (as vlmcls.smoke.siglip does).
"""
from __future__ import annotations

import json
from pathlib import Path

PATCH = 8
MAX_PATCHES = 16  # the processor's default sequence length; the position grid is 4 x 4 (num_patches)
TEXT_LENGTH = 64  # every SigLIP 2 checkpoint's max_position_embeddings: prompts are padded to it
SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>")  # Gemma's ids 0..4
SEED = 0
LOGIT_SCALE = 2.3
LOGIT_BIAS = -3.0


def train_vocab(vocab_size: int = 600) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab, merges) of a BPE over the lowercased ImageNet names and CLIP prompts, spaces as "▁"
    the way GemmaTokenizer normalises them."""
    from tokenizers import Tokenizer, models, normalizers, trainers

    from .siglip import _corpus

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.Replace(" ", "▁")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS), show_progress=False)
    tok.train_from_iterator([s.lower() for s in _corpus()], trainer=trainer)
    saved = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in saved["merges"]]
    return saved["vocab"], merges


def build_siglip2(target: Path) -> None:
    import torch
    from transformers import GemmaTokenizer, Siglip2Config, Siglip2ImageProcessorPil, Siglip2Model, Siglip2Processor

    vocab, merges = train_vocab()
    tokenizer = GemmaTokenizer(vocab=vocab, merges=merges, add_bos_token=False, add_eos_token=True,
                               padding_side="right", model_max_length=TEXT_LENGTH, model_input_names=["input_ids"])
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=TEXT_LENGTH, pad_token_id=0, eos_token_id=1,
                bos_token_id=2)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  patch_size=PATCH, num_patches=MAX_PATCHES)
    torch.manual_seed(SEED)
    model = Siglip2Model(Siglip2Config(text_config=text, vision_config=vision)).eval()
    with torch.no_grad():
        model.logit_scale.fill_(LOGIT_SCALE)
        model.logit_bias.fill_(LOGIT_BIAS)
    images = Siglip2ImageProcessorPil(patch_size=PATCH, max_num_patches=MAX_PATCHES)
    model.save_pretrained(target)
    Siglip2Processor(image_processor=images, tokenizer=tokenizer).save_pretrained(target)
