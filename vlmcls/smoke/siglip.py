"""A tiny random-weight SigLIP checkpoint laid out as `google/siglip-*` is on the hub.

The hub's SigLIP ships a SentencePiece model (`spiece.model`) read by `SiglipTokenizer`, so this
builder trains a small one here, from the ImageNet class names and the CLIP prompts, and saves it
with `SiglipProcessor`: `AutoProcessor.from_pretrained` then takes the real checkpoint's path, and
that path needs the `sentencepiece` and `protobuf` packages, as the real checkpoint does.

The special ids are the hub's (T5's English vocabulary: 0 <pad>, 1 </s>, 2 <unk>; SigLIP pads with
</s>), the text length is the hub's 64, and logit_scale / logit_bias are set away from zero (the
random init leaves both at 0, which would hide a missing temperature or a bias that does not cancel).
"""
from __future__ import annotations

import io
from pathlib import Path

IMAGE_SIDE = 32
TEXT_LENGTH = 64  # every SigLIP checkpoint's max_position_embeddings: prompts are padded to it
SEED = 0
LOGIT_SCALE = 2.3  # log(10): exp(scale) multiplies the cosine (the real so400m's is ~4.7)
LOGIT_BIAS = -3.0  # the real so400m's is ~ -16.7; a softmax over candidates must not depend on it


def _corpus() -> list[str]:
    from ..backends.baselines import IMAGENET_TEMPLATES
    from ..labels import imagenet_annotations

    return [*imagenet_annotations(), *IMAGENET_TEMPLATES]


def train_spiece(vocab_size: int = 400) -> bytes:
    """A unigram SentencePiece model over the ImageNet names (lowercased, as SiglipTokenizer does)."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([s.lower() for s in _corpus()]), model_writer=model, vocab_size=vocab_size,
        model_type="unigram", character_coverage=1.0, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        hard_vocab_limit=False, num_threads=1, minloglevel=2)
    return model.getvalue()


def build_siglip(target: Path) -> None:
    import tempfile

    import torch
    from transformers import SiglipConfig, SiglipImageProcessorPil, SiglipModel, SiglipProcessor, SiglipTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        spiece = Path(tmp) / "spiece.model"
        spiece.write_bytes(train_spiece())
        tokenizer = SiglipTokenizer(vocab_file=str(spiece), model_max_length=TEXT_LENGTH)
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=TEXT_LENGTH, pad_token_id=1, eos_token_id=1,
                bos_token_id=None)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  image_size=IMAGE_SIDE, patch_size=8)
    torch.manual_seed(SEED)
    model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision)).eval()
    with torch.no_grad():
        model.logit_scale.fill_(LOGIT_SCALE)
        model.logit_bias.fill_(LOGIT_BIAS)
    images = SiglipImageProcessorPil(size={"height": IMAGE_SIDE, "width": IMAGE_SIDE})
    model.save_pretrained(target)
    SiglipProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(target)
