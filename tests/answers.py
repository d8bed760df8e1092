"""Realistic VLM answers with their candidates and the expected resolution, for tests/test_resolve.py.

Labels are ImageNet-1k's, read from timm's files (thesis label mode: the first synonym of each
annotation is the prompt label, so "crane" and "maillot" each name two classes).
"""
from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

from vlmcls.types import LabelSet


@lru_cache(maxsize=1)
def imagenet_labels() -> LabelSet:
    """ImageNet-1k annotations from timm's data files, without importing timm (it imports torch)."""
    info = Path(importlib.util.find_spec("timm").submodule_search_locations[0]) / "data" / "_info"
    synsets = (info / "imagenet_synsets.txt").read_text().split()
    lemmas = dict(line.split("\t", 1) for line in (info / "imagenet_synset_to_lemma.txt").read_text().splitlines())
    synonyms = tuple(tuple(s.strip() for s in lemmas[w].split(",")) for w in synsets)
    return LabelSet(names=tuple(s[0] for s in synonyms), synonyms=synonyms, mode="thesis")
