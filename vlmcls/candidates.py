"""Seeded candidate sets: the true class + N-1 distinct distractors, shuffled.

A sample's set depends only on (seed, sample id, N): a private RNG is seeded from a hash of the
three, so order, threads and xdist workers cannot change it (never the global RNG).
"""
from __future__ import annotations

import hashlib
import random

from .types import CandidateSet


def rng_for(*parts: object) -> random.Random:
    """A private RNG from a stable hash (Python's hash() is salted per process; sha256 is not)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def check_ways(ways: int, n_classes: int) -> None:
    if ways < 2:
        raise ValueError(f"N-way needs N >= 2 (got {ways})")
    if ways > n_classes:
        raise ValueError(f"{ways}-way needs at least {ways} classes but the dataset has {n_classes}; "
                         f"use --ways {n_classes} or less, or a dataset with more classes")


def candidate_set(sample_id: str, true_id: int, ways: int, n_classes: int, seed: int) -> CandidateSet:
    """N == number of classes means every class (still shuffled per sample)."""
    check_ways(ways, n_classes)
    rng = rng_for("candidates", seed, sample_id, ways)
    others = [c for c in range(n_classes) if c != true_id]
    ids = rng.sample(others, ways - 1) + [true_id]
    rng.shuffle(ids)
    return CandidateSet(sample_id=sample_id, ways=ways, true_id=true_id, class_ids=tuple(ids))
