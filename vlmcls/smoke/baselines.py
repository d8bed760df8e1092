"""Tiny random-weight CLIP, ResNet and ViT checkpoints, saved exactly as the hub's are laid out.

Each loads with the same calls as the real checkpoint (`AutoModel`/`AutoProcessor` for CLIP,
`AutoModelForImageClassification`/`AutoImageProcessor` for the classifiers), so the backend under
test takes its production path. The classifiers carry the 1000 ImageNet annotations as id2label,
in the same strings as `microsoft/resnet-50` ("tench, Tinca tinca"), so the label-order check runs
for real. Images are 32 px to keep the test suite fast.
"""
from __future__ import annotations

from pathlib import Path

from ..labels import imagenet_annotations  # the hub configs' id2label strings ("tench, Tinca tinca")

IMAGE_SIDE = 32
SEED = 0


def _label_maps(names: tuple[str, ...]) -> dict:
    # label2id collapses the two "crane" entries (134, 517), exactly as the hub configs do.
    return {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}


def byte_clip_tokenizer():
    """A byte-level CLIPTokenizer with no merges: every byte is a token, with and without `</w>`."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    # alphabet() comes from a Rust HashSet: its order changes with every call, and so would the ids.
    for sym in sorted(ByteLevel.alphabet()):
        vocab.setdefault(sym, len(vocab))
        vocab.setdefault(sym + "</w>", len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def build_clip(target: Path) -> None:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor

    tokenizer = byte_clip_tokenizer()
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  image_size=IMAGE_SIDE, patch_size=8)
    torch.manual_seed(SEED)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()
    images = CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIDE},
                                   crop_size={"height": IMAGE_SIDE, "width": IMAGE_SIDE})
    model.save_pretrained(target)
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(target)


def build_resnet(target: Path) -> None:
    import torch
    from transformers import ConvNextImageProcessorPil, ResNetConfig, ResNetForImageClassification

    config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1],
                          **_label_maps(imagenet_annotations()))
    torch.manual_seed(SEED)
    ResNetForImageClassification(config).eval().save_pretrained(target)
    # microsoft/resnet-50 ships a ConvNext processor: resize to side/crop_pct, then centre-crop.
    ConvNextImageProcessorPil(size={"shortest_edge": IMAGE_SIDE}, crop_pct=0.875).save_pretrained(target)


def build_vit(target: Path) -> None:
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil

    config = ViTConfig(image_size=IMAGE_SIDE, patch_size=8, hidden_size=32, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=64, **_label_maps(imagenet_annotations()))
    torch.manual_seed(SEED)
    ViTForImageClassification(config).eval().save_pretrained(target)
    ViTImageProcessorPil(size={"height": IMAGE_SIDE, "width": IMAGE_SIDE}).save_pretrained(target)
