"""Constrained answers: generation may only walk a token trie of the query's candidate labels, so the
answer is exactly one candidate. Importing this module never imports torch."""
from __future__ import annotations

from typing import Sequence


def label_trie(sequences: list[list[int]]) -> dict:
    """Nested dicts token -> node; key None marks a complete label and holds its first index."""
    root: dict = {}
    for index, seq in enumerate(sequences):
        node = root
        for token in seq:
            node = node.setdefault(token, {})
        node.setdefault(None, index)  # duplicate labels: the first candidate wins
    return root


def walk_trie(node: dict, tokens: Sequence[int]) -> dict:
    """The node reached by `tokens` (EOS and what follows ignored); {} when they leave the trie."""
    for token in tokens:
        if token not in node:
            return node if None in node else {}
        node = node[token]
    return node


class LabelConstraint:
    """LogitsProcessor: each row may only continue along its own candidates' token trie; after a complete
    label, EOS (or a longer label sharing that start). Finished rows are left alone."""

    def __init__(self, tries: list[dict], prompt_length: int, eos_ids: list[int]) -> None:
        self.tries, self.prompt_length, self.eos_ids = tries, prompt_length, eos_ids
        self.longest = max((_depth(t) for t in tries), default=0)

    def __call__(self, input_ids, scores):
        import torch

        mask = torch.full_like(scores, float("-inf"))
        for row, trie in enumerate(self.tries):
            generated = input_ids[row, self.prompt_length:].tolist()
            if any(t in self.eos_ids for t in generated):
                mask[row] = 0  # finished: generate replaces its tokens with padding anyway
                continue
            node = walk_trie(trie, generated)
            allowed = [t for t in node if t is not None]
            if None in node or not allowed:  # a complete label (or, defensively, a dead end): EOS may end it
                allowed.append(self.eos_ids[0])
            mask[row, allowed] = 0
        return scores + mask


def _depth(node: dict) -> int:
    children = [child for token, child in node.items() if token is not None]
    return 1 + max(map(_depth, children)) if children else 0
