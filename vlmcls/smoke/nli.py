"""Tiny random-weight BART-MNLI for `pipeline("zero-shot-classification")`: plumbing only, chance accuracy."""
from __future__ import annotations

from pathlib import Path

# transformers 5 crashes in the zero-shot pipeline without label2id (it looks up "entailment" there).
ID2LABEL = {0: "contradiction", 1: "neutral", 2: "entailment"}
MAX_TOKENS = 512  # one token per byte: enough for a verbose answer plus "This example is {label}."
# BART's default init (0.02) gives this tiny model entailment scores ~1e-7 apart among 100 labels,
# below float noise (padding, batch composition), so equality tests would compare coin tosses;
# 0.2 spreads them ~100x wider.
INIT_STD = 0.2


def build_bart_mnli(target: Path, init_std: float = INIT_STD) -> None:
    """Write a tiny BartForSequenceClassification and a byte-level BartTokenizer to `target`."""
    import torch
    from transformers import BartConfig, BartForSequenceClassification

    tokenizer = _byte_tokenizer()
    config = BartConfig(
        vocab_size=len(tokenizer), d_model=16, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        max_position_embeddings=MAX_TOKENS, num_labels=3,
        id2label=ID2LABEL, label2id={v: k for k, v in ID2LABEL.items()},
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.eos_token_id, init_std=init_std,
    )
    with torch.random.fork_rng():  # seeded weights without disturbing the caller's global RNG
        torch.manual_seed(0)
        model = BartForSequenceClassification(config).eval()
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)


def _byte_tokenizer():
    """One token per byte, no merges: BART's specials at their usual ids (bos 0, pad 1, eos 2, unk 3)."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import BartTokenizer

    vocab = {s: i for i, s in enumerate(("<s>", "<pad>", "</s>", "<unk>"))}
    for symbol in sorted(ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
    vocab["<mask>"] = len(vocab)
    return BartTokenizer(vocab=vocab, merges=[], model_max_length=MAX_TOKENS)
