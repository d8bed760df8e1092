"""The labels-first prefix cache: the label list, which comes before the image in the prompt, is the same
for every image of a case, so its keys and values are computed once and every batch starts from them.
At 1000-way the list is ~5,000 tokens of each image's prompt.

`LabelsFirstCache` is a mixin of the hf-vlm backend; it uses the backend's `model`, `processor`,
`tokenizer`, `settings`, `family`, `image_token_id`, `note()`, `_cache_kw` and `_cache_limits` (what
`cache_limits` said of the model when it loaded: the preparing process has no model to ask), and keeps its
state in `_prefix` (the cached ids and each layer's keys, values and token count) and `_split` (prefix
text -> its ids).

Sliding-window layers (Gemma 3, Cohere2) keep only the last window-1 keys and count the tokens they have
seen (`cumulative_length`: the positions and the masks' offsets come from it); the expanded cache carries
that count over, so the cached answer equals the uncached one for a prefix longer than the window. Where
the installed transformers' layer keeps no such count, a prefix longer than the window runs uncached.
Importing this module never imports torch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # pragma: no cover
    from ..types import Query


class LabelsFirstCache:
    """Splitting the prompt at the image, prefilling the prefix once, and a fresh expanded cache per batch."""

    @property
    def cached_prefix_tokens(self) -> int:
        """Tokens of the labels-first prefix whose keys and values are cached now (0: none)."""
        return len(self._prefix[0]) if self._prefix else 0

    def share_prefix_cache(self, other: "LabelsFirstCache") -> None:
        """Use `other`'s cached prefix (same model): a second backend then starts in the steady state."""
        self._prefix, self._split = other._prefix, other._split

    def _split_prefix(self, batch: "list[Query]", texts: list[str]) -> tuple[tuple[int, ...] | None, list[str]]:
        """(prefix token ids, the texts after the prefix) when the cached label list can be reused, else
        (None, the full texts). The prefix is tokenized once per case, not once per image: at 1000-way it
        is ~5,000 tokens of every image's prompt."""
        if self.settings.layout != "labels-first" or not batch[0].prefix:
            return None, texts
        limits = getattr(self, "_cache_limits", NO_LIMITS)
        if limits.refusal is not None:
            self.note(limits.refusal)
            return None, texts
        cut = self._prefix_end(batch[0], texts[0])
        if cut is None:
            return None, texts
        head = texts[0][:cut]
        if any(t[:cut] != head for t in texts):
            self.note("labels-first: the text before the image differs between images; ran without the cache")
            return None, texts
        if head not in self._split:
            self._split[head] = self._prefix_ids(head, texts[0], cut)
        prefix = self._split[head]
        if prefix is not None and limits.longest is not None and len(prefix) > limits.longest:
            self.note(f"labels-first: the label list ({len(prefix)} tokens) is longer than the sliding attention "
                      f"window ({limits.longest + 1}) and this transformers' cache layer cannot carry its token "
                      "count over; ran without the cache")
            return None, texts
        return (None, texts) if prefix is None else (prefix, [t[cut:] for t in texts])

    def _prefix_end(self, query: "Query", text: str) -> int | None:
        """Where the image placeholder starts, when the chat template keeps the label list before it."""
        placeholder = getattr(self.processor, "image_token", None)
        if self.image_token_id is None or not placeholder or placeholder not in text:
            self.note(f"labels-first: no image token known for {self.family.name}; ran without the cache")
            return None
        at = text.find(query.prefix)
        if at < 0 or at > text.find(placeholder):
            self.note("labels-first: the chat template puts the image before the labels; ran without the cache")
            return None
        return text.find(placeholder)

    def _prefix_ids(self, head: str, text: str, cut: int) -> tuple[int, ...] | None:
        """The prefix's token ids, checked once against the whole prompt: tokenizing the two parts apart
        must give the same tokens (the cut is just before a special token, where no merge crosses)."""
        prefix = self.tokenizer(head)["input_ids"]
        rest = self.tokenizer(text[cut:], add_special_tokens=False)["input_ids"]
        if self.tokenizer(text)["input_ids"] != prefix + rest:
            self.note("labels-first: the prompt does not tokenize apart at the image; ran without the cache")
            return None
        return tuple(prefix)

    def _padding_fits_cache(self, inputs, batch: "list[Query]") -> bool:
        """Whether a batch encoded after the cached prefix may run with it. Its pads sit between the prefix
        and the rest ([P P pad S S]): positions skip them, but a sliding window counts them, so a padded row
        whose window does not reach back over the whole prompt would see fewer prefix tokens than alone.
        Such a batch runs uncached."""
        window = getattr(self, "_cache_limits", NO_LIMITS).window
        mask = inputs.get("attention_mask")
        if window is None or mask is None or bool(mask.all()):
            return True
        new = self.settings.max_new_tokens
        if self.settings.constrained:  # generation makes room for the longest candidate + EOS
            new = max(new, 1 + max(len(ids) for q in batch for ids in self._label_ids(q)))
        if mask.shape[1] + new <= window:  # every window reaches the first token: pads are only masked out
            return True
        self.note("labels-first: the sliding attention window would count the padding after the cached label "
                  "list; batches whose images differ in token count ran without the cache")
        return False

    def _cached_prefix(self, prefix: tuple[int, ...], batch_size: int):
        if self._prefix is None or self._prefix[0] != prefix:
            self._prefix = (prefix, self._prefill(prefix))
        return self._expanded_cache(batch_size)

    def _prefill(self, prefix: tuple[int, ...]) -> list:
        """Each layer's (keys, values, tokens seen) after the prefix, computed once (batch 1, no padding:
        positions 0..k-1). Tokens seen: a sliding-window layer's count (it keeps only the window's keys),
        None for a layer that keeps all its keys."""
        import torch
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config.get_text_config(decoder=True))
        ids = torch.tensor([prefix], device=self.model.device)
        with torch.inference_mode():
            # logits_to_keep=1: the prefix's logits are never used, and at 1000-way they would be gigabytes
            self.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True,
                       logits_to_keep=1, **{self._cache_kw: cache})
        return [(layer.keys, layer.values, getattr(layer, "cumulative_length", None)) for layer in cache.layers]

    def _expanded_cache(self, batch_size: int):
        """A fresh cache per batch: generate appends to it, the stored prefix must stay untouched."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config.get_text_config(decoder=True))
        for i, (keys, values, seen) in enumerate(self._prefix[1]):
            # expand() is a view; the layer's first update concatenates it into new memory
            cache.update(keys.expand(batch_size, -1, -1, -1), values.expand(batch_size, -1, -1, -1), i)
            if seen is not None:  # a sliding layer got its window's keys only: it has seen the whole prefix
                cache.layers[i].cumulative_length = seen
        return cache


class CacheLimits(NamedTuple):
    """What the labels-first cache can serve for one model (`cache_limits`)."""

    refusal: str | None = None  # why it cannot serve this model at all (a note), None: it can
    longest: int | None = None  # the longest prefix, in tokens, it can serve; None: any
    window: int | None = None  # the smallest sliding attention window; None: no layer slides


NO_LIMITS = CacheLimits()


def cache_limits(model, family) -> CacheLimits:
    """Asked once, when the model loads (the preparing process has no model to ask).
    - a family whose prompt attends both ways (PaliGemma's prefix): keys cached causally differ;
    - cross-attention layers (Mllama): they keep no keys for text, their cache slots stay empty;
    - a sliding-window layer whose installed class keeps no token count (`cumulative_length`, in
      transformers 5.x's DynamicSlidingWindowLayer): a prefix longer than its window cannot be carried."""
    if not family.prefix_cache:
        return CacheLimits(f"labels-first: {family.name}'s prompt attends both ways, so a label list cached "
                           "one way cannot be reused; ran without the cache")
    text = model.config.get_text_config(decoder=True)
    if getattr(text, "cross_attention_layers", None) or getattr(model.config, "cross_attention_layers", None):
        return CacheLimits(f"labels-first: {family.name} has cross-attention layers (no cached keys for the "
                           "text); ran without the cache")
    return _sliding_windows(text)


def _sliding_windows(text_config) -> CacheLimits:
    """The longest prefix (window - 1 of the smallest sliding layer that cannot carry its token count over)
    and the smallest window."""
    try:
        from transformers import DynamicCache

        layers = DynamicCache(config=text_config).layers
    except Exception:  # no per-layer cache here: read the config, and assume no count is carried
        window = getattr(text_config, "sliding_window", None)
        if "sliding_attention" not in (getattr(text_config, "layer_types", None) or ()) or not isinstance(window, int):
            return NO_LIMITS
        return CacheLimits(longest=window - 1, window=window)
    sliding = [layer for layer in layers if getattr(layer, "is_sliding", False)]
    uncarried = [int(layer.sliding_window) for layer in sliding if not hasattr(layer, "cumulative_length")]
    return CacheLimits(longest=min(uncarried) - 1 if uncarried else None,
                       window=min(int(layer.sliding_window) for layer in sliding) if sliding else None)


def prepend(inputs, prefix: tuple[int, ...]) -> None:
    """Put the cached prefix's ids before each row: [pad pad S S] -> [P P P pad pad S S]. The pads sit
    after the prefix, where the cache (computed without padding) expects them; masks skip them."""
    import torch

    ids = inputs["input_ids"]
    head = torch.tensor(prefix, dtype=ids.dtype).expand(ids.shape[0], -1)
    for key, value in list(inputs.items()):
        if getattr(value, "shape", None) == ids.shape:  # per-token: ids, attention mask, token types
            fill = head if key == "input_ids" else (torch.ones_like(head) if key == "attention_mask"
                                                     else torch.zeros_like(head))
            inputs[key] = torch.cat([fill.to(value.dtype), value], dim=1)


def cache_kwarg_of(model) -> str:
    """transformers renamed `past_key_values` to `cache` (5.2x); GPU machines may run an older release."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def forget_rope_deltas(model) -> None:
    """Qwen-family models keep the previous call's M-RoPE deltas on the model; before transformers ~5.20,
    a generate that starts from a non-empty cache (the labels-first prefix) reused them for the image
    tokens after the prefix: wrong positions, and a batch-size mismatch when the previous batch was
    another size (seen on transformers 5.17). Without them the positions are computed from the input."""
    for module in (model, getattr(model, "model", None)):
        if module is not None and getattr(module, "rope_deltas", None) is not None:
            module.rope_deltas = None
