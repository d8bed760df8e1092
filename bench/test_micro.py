"""Micro-benchmarks (pytest-benchmark) of the pipeline stages that run per sample or per case.

    pytest bench/test_micro.py --benchmark-only
"""
from __future__ import annotations

import os
import random

import pytest

from vlmcls import candidates, metrics, prompts
from vlmcls.data import stratified
from vlmcls.labels import imagenet_labelset
from vlmcls.types import Prediction

# pytest-benchmark cannot time inside xdist workers (it would run each function once, untimed, and
# print no table): say so once instead of dropping the figures silently.
pytestmark = pytest.mark.skipif(
    "PYTEST_XDIST_WORKER" in os.environ,
    reason="micro-benchmarks are not timed under xdist (-n): run them serially, "
           "e.g. pytest bench/test_micro.py bench/test_micro_resolve.py",
)

LABELS = imagenet_labelset()


@pytest.mark.parametrize("ways", [20, 100, 1000])
def test_candidate_set(benchmark, ways):
    cs = benchmark(candidates.candidate_set, "ILSVRC2012_val_00000001", 65, ways, 1000, 0)
    assert len(cs.class_ids) == ways


@pytest.mark.parametrize("ways", [20, 100, 1000])
def test_render_prompt(benchmark, ways):
    cs = candidates.candidate_set("x", 0, ways, 1000, 0)
    text = benchmark(prompts.render, prompts.get_template("thesis"), cs.labels(LABELS))
    assert text.count(", ") >= ways - 1


def test_stratified_subset_10000_of_50000(benchmark):
    index = [(f"ILSVRC2012_val_{i:08d}", i % 1000) for i in range(50_000)]
    picked = benchmark.pedantic(stratified, args=(index, 10_000, 0), rounds=3)
    assert len(picked) == 10_000


def test_metrics_with_bootstrap_10000(benchmark):
    rng = random.Random(0)
    preds = [Prediction(str(i), t := rng.randrange(1000), "", (), "", t if rng.random() < .7 else None, None, "match")
             for i in range(10_000)]
    m = benchmark.pedantic(metrics.compute, args=(preds,), rounds=3)
    assert 0.65 < m.accuracy < 0.75
