"""Inputs of the tiny-VLM tests (test_hf_vlm, test_families): noise images of varied sizes, N-way
queries over a short name list with the trie traps, and one torch thread for their modules."""
from __future__ import annotations

import random

import numpy as np

from vlmcls.prompts import get_template, render, render_labels_first
from vlmcls.types import LabelSet, Query

# "crane" / "crane fly" share a start and "crane" is listed twice: the trie traps
NAMES = ("crane", "crane fly", "tench", "goldfish", "great white shark", "tiger shark", "hammerhead",
         "electric ray", "stingray", "cock", "hen", "ostrich", "brambling", "goldfinch", "crane", "junco")
LABELS = LabelSet(NAMES, tuple((n,) for n in NAMES), mode="raw")


def one_torch_thread():
    """Tiny matrices: with 2 OpenMP threads each matmul waits ~6 ms on thread sync (measured on the 2-core
    test machine under load), 300x the work itself. One thread keeps these files fast; restored after.
    A module uses it as `one_thread = pytest.fixture(scope="module", autouse=True)(one_torch_thread)`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def noise_images(n: int, seed: int = 0):
    """Noise images of different sizes: image token counts (and tile counts) differ, so padding is exercised."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    sizes = [(int(rng.integers(30, 130)), int(rng.integers(30, 130))) for _ in range(n)]
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in sizes]


def queries(n: int, ways: int = 5, labels_first: bool = False, seed: int = 0) -> list[Query]:
    out = []
    for i, image in enumerate(noise_images(n, seed)):
        ids = tuple(random.Random(seed * 1000 + i).sample(range(len(NAMES)), ways))
        labels = tuple(NAMES[j] for j in ids)
        if labels_first:  # the same full label list before every image, as the runner does at full-way
            prefix, prompt = render_labels_first(NAMES)
        else:
            prefix, prompt = "", render(get_template("thesis"), labels)
        out.append(Query(f"s{i}", image, ids, labels, prompt, prefix))
    return out
