"""Micro-benchmarks of the resolver's two stages at 20/100/1000 candidates (pytest-benchmark).

    pytest bench/test_micro_resolve.py --benchmark-columns=min,median,mean,rounds

The match stage runs on ImageNet-1k's real labels; one call resolves one answer (a different
answer style each call), so the figures read as time per answer. The NLI stage uses the tiny
random BART on the CPU: it shows the per-answer overhead of the pipeline and that all pairs go in
one batch, not BART-large's speed (see shared/perf's bart_resolve_one_answer for that).
"""
from __future__ import annotations

import itertools
import os
import random
from functools import lru_cache

import pytest

from vlmcls import labels as labels_mod
from vlmcls.resolve import Resolver, nli_pipeline
from vlmcls.types import LabelSet

# pytest-benchmark cannot time inside xdist workers (it would run each function once, untimed, and
# print no table): say so once instead of dropping the figures silently.
pytestmark = pytest.mark.skipif(
    "PYTEST_XDIST_WORKER" in os.environ,
    reason="micro-benchmarks are not timed under xdist (-n): run them serially, "
           "e.g. pytest bench/test_micro.py bench/test_micro_resolve.py",
)

WAYS = (20, 100, 1000)
STYLES = (
    "{label}",
    "**{label}**",
    'The most probable class that the object in the image belongs to is "{label}."',
    "It's a {label}, not a {other}.",
    "Answer: {label}\nReason: the shape, texture and colour match a typical {label}.",
    "It could be a {label} or a {other}.",
    "Es un animal en la imagen.",
)


@lru_cache(maxsize=1)
def imagenet() -> LabelSet:
    """ImageNet-1k's labels as the study used them (raw first synonyms); no timm import."""
    return labels_mod.imagenet_labelset("thesis")


def answers(ways: int, n: int = 70) -> list[tuple[str, list[int]]]:
    """n (answer, candidates) pairs: a seeded candidate set per answer, the answer about one of them."""
    rng, labels = random.Random(ways), imagenet()
    out = []
    for style in itertools.islice(itertools.cycle(STYLES), n):
        ids = rng.sample(range(len(labels)), ways)
        out.append((style.format(label=labels.names[ids[0]], other=labels.names[ids[1]]), ids))
    return out


@pytest.mark.parametrize("ways", WAYS)
def test_match_per_answer(benchmark, ways):
    resolver = Resolver("exact", imagenet())
    items = itertools.cycle(answers(ways))
    benchmark.group = "resolve: match stage, one answer"
    benchmark(lambda: resolver.resolve(*next(items)))
    assert resolver.stage_counts["match"] > 0


@pytest.mark.parametrize("ways", WAYS)
def test_nli_per_answer_tiny_bart(benchmark, ways):
    resolver = Resolver("nli", imagenet(), nli_model="smoke:bart-mnli", device="cpu")
    items = itertools.cycle(answers(ways, n=7))
    nli_pipeline("smoke:bart-mnli", "cpu")  # build and load outside the timing
    benchmark.group = "resolve: NLI stage (tiny random BART, CPU), one answer"
    benchmark.pedantic(lambda: resolver.resolve(*next(items)), rounds=7, iterations=1, warmup_rounds=1)
    # pedantic() runs the target once when benchmarking is disabled (e.g. under xdist)
    assert resolver.stage_counts["nli"] in (8, 1) and set(resolver.stage_counts) == {"nli"}
