"""Ranking mode's core: every candidate label scored by the VLM as a continuation of one prefilled prompt.

For one image, the prompt (image + text + the start of the assistant turn) is run once; its KV cache
is kept, and each candidate's tokens (the label, then the end-of-turn token) are fed after it. A
candidate's score is the sum of its tokens' log-probabilities, log P(the reply is exactly this label):
- the sum, not the mean per token, because only the sum is the log-probability of an answer, so a
  softmax over the candidates' sums is P(label | the reply is one of the candidates) -- what top-1
  probability and calibration need. The mean rewards a long label for its easy later tokens (once
  "great white" is written, "shark" is nearly certain) and is no probability of anything;
- with the end-of-turn token, because without it "crane" would always outscore "crane fly" (a
  prefix is at least as likely as anything that continues it).
The mean is computed too (`Scores.mean`) for whoever wants to compare.

By default all of an image's candidates run in one forward pass as a token tree (backends/rank_tree.py).
Here is the fallback, for models that do not honour a 4D attention mask (sliding-window layers, families
that build their own masks) or when the catalog option `rank_chunk` asks for it. Candidates are scored
in chunks: the cache (batch 1) is expanded to the chunk's size and each chunk
is one forward pass over the candidates' tokens, right-padded (causal attention: a real token never
sees the padding after it). The chunk size is bounded by memory, so 1000 candidates never need 1000
copies of the cache at once. Positions continue the prompt's text positions: for Qwen2-VL's
multimodal rope that is the prompt length + the model's rope delta (the image tokens' positions are
2-D, so the text after them is numbered from the image's grid, not from its token count).

Importing this module never imports torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

TOP_K = 5
CHUNK_BYTES = 2 * 2**30  # memory a chunk may take: its copies of the prompt's cache + its logits


@dataclass(frozen=True)
class Scores:
    """Per candidate, in the query's order: the per-token log-probabilities, their sum and their mean."""

    tokens: tuple[tuple[float, ...], ...]

    @property
    def total(self) -> list[float]:
        return [math.fsum(t) for t in self.tokens]

    @property
    def mean(self) -> list[float]:
        return [math.fsum(t) / len(t) for t in self.tokens]


# ---------------------------------------------------------------- scores -> ranking (no torch)

def ranked(scores: Sequence[float], class_ids: Sequence[int], k: int = TOP_K) -> tuple[tuple[int, ...], float]:
    """(the best k class ids, best first; the best one's softmax probability over the candidates).
    Ties keep the candidates' order (a stable sort, as numpy's argmax): a duplicated label ranks its
    first copy first. numpy, not Python: CLIP ranks 1000 candidates for thousands of images a second."""
    import numpy as np

    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or len(s) != len(class_ids) or not len(s):
        raise ValueError(f"{len(s)} scores for {len(class_ids)} candidates")
    order = np.argsort(-s, kind="stable")[:k]
    weights = np.exp(s - s[order[0]])
    return tuple(int(class_ids[i]) for i in order), float(1.0 / weights.sum())


# ---------------------------------------------------------------- scoring with a model (torch)

def sequences(tokenizer, labels: Sequence[str], end_id: int) -> list[list[int]]:
    """Each label's tokens as the start of a reply (tokenized alone, as constrained decoding does), then
    the end-of-turn token."""
    return [list(ids) + [end_id] for ids in tokenizer(list(labels), add_special_tokens=False)["input_ids"]]


@dataclass
class Prefilled:
    """One prompt, run once: its cache (per layer keys and values, batch 1), the log-probabilities of
    the first reply token, and the position of that token."""

    layers: list
    first: Any  # (vocab,) float32 log-probabilities
    position: int


def prefill(model, inputs, cache_kw: str) -> Prefilled:
    """`inputs`: the processor's output for one prompt (batch 1, no padding), on the model's device."""
    import torch
    from transformers import DynamicCache

    base = getattr(model, "base_model", model)
    if getattr(base, "rope_deltas", None) is not None:
        base.rope_deltas = None  # a stale delta from an earlier call must not be reused for this image
    cache = DynamicCache(config=model.config.get_text_config(decoder=True))
    with torch.inference_mode():
        out = model(**inputs, use_cache=True, logits_to_keep=1, **{cache_kw: cache})
    delta = getattr(base, "rope_deltas", None)  # Qwen-VL: text positions after the image, minus its length
    position = int(inputs["input_ids"].shape[1]) + (int(delta.reshape(-1)[0]) if delta is not None else 0)
    return Prefilled([(layer.keys, layer.values) for layer in cache.layers],
                     out.logits[0, -1].float().log_softmax(-1), position)


def chunk_size(pre: Prefilled, seqs: Sequence[Sequence[int]], vocab: int, budget: int = CHUNK_BYTES) -> int:
    """Candidates per forward pass: each costs a copy of the cache and its float32 logits."""
    cache = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in pre.layers)
    width = max(len(s) for s in seqs) - 1
    per_candidate = cache + 2 * width * vocab * 4  # the logits and their log-sum-exp work space
    return max(1, min(len(seqs), int(budget // per_candidate)))


def score(model, pre: Prefilled, seqs: Sequence[Sequence[int]], cache_kw: str, chunk: int,
          pad_id: int, bucket: bool = True) -> Scores:
    """Every candidate's per-token log-probabilities, at most `chunk` candidates per forward pass."""
    rows: dict[int, tuple[float, ...]] = {}
    for group in _chunks(seqs, chunk, bucket):
        rows.update(zip(group, _score_chunk(model, pre, [seqs[i] for i in group], cache_kw, pad_id)))
    return Scores(tuple(rows[i] for i in range(len(seqs))))


def _chunks(seqs: Sequence[Sequence[int]], chunk: int, bucket: bool) -> list[list[int]]:
    """Candidate indices per forward pass. With `bucket`, longest first and a new chunk wherever a label
    is under half the chunk's width: a chunk is padded to its longest label, and padding costs as much
    as real tokens (byte-level tokenizers make labels 3-30 tokens long)."""
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i])) if bucket else list(range(len(seqs)))
    groups: list[list[int]] = []
    for i in order:
        if not groups or len(groups[-1]) >= chunk or (bucket and 2 * (len(seqs[i]) - 1) < len(seqs[groups[-1][0]]) - 1):
            groups.append([])
        groups[-1].append(i)
    return groups


def _score_chunk(model, pre: Prefilled, seqs: Sequence[Sequence[int]], cache_kw: str,
                 pad_id: int) -> list[tuple[float, ...]]:
    import torch

    firsts = pre.first[torch.tensor([s[0] for s in seqs], device=pre.first.device)].tolist()
    width = max(len(s) for s in seqs) - 1
    if width == 0:
        return [(f,) for f in firsts]
    device = pre.first.device
    # token j+1 of a candidate is predicted at input position j; padding sits after each row's tokens
    inputs = torch.tensor([list(s[:-1]) + [pad_id] * (width - len(s) + 1) for s in seqs], device=device)
    targets = torch.tensor([list(s[1:]) + [pad_id] * (width - len(s) + 1) for s in seqs], device=device)
    positions = (pre.position + torch.arange(width, device=device)).expand(len(seqs), -1)
    with torch.inference_mode():
        out = model(input_ids=inputs, position_ids=positions, use_cache=True,
                    **{cache_kw: expanded_cache(model, pre.layers, len(seqs))})
        logits = out.logits.float()
        lp = logits.gather(-1, targets[..., None]).squeeze(-1) - logits.logsumexp(-1)
    rest = lp.tolist()
    return [(f, *row[:len(s) - 1]) for f, row, s in zip(firsts, rest, seqs)]


def expanded_cache(model, layers: list, size: int):
    """A fresh cache per chunk, the prompt's keys and values seen `size` times (expand() is a view; the
    forward's append copies it once into the chunk's own memory, and the prompt's stays untouched)."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config.get_text_config(decoder=True))
    for i, (keys, values) in enumerate(layers):
        cache.update(keys.expand(size, -1, -1, -1), values.expand(size, -1, -1, -1), i)
    return cache
