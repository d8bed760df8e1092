"""Inputs of the tiny-VLM tests (test_hf_vlm, test_families): noise images of varied sizes, N-way
queries over a short name list with the trie traps, one torch thread for their modules, and the
backend loaded as a checkpoint with a spy on the token ids it generates."""
from __future__ import annotations

import random

import numpy as np

from vlmcls.prompts import get_template, render, render_labels_first
from vlmcls.settings import BackendSettings
from vlmcls.types import Answer, LabelSet, Query

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


def load(entry, **settings):
    """The hf-vlm backend for a catalog entry, as `hf_vlm.load` loads a checkpoint, on the CPU."""
    from vlmcls.backends import hf_vlm

    settings.setdefault("max_new_tokens", 6)
    settings.setdefault("device", "cpu")  # these tests compare code paths; CUDA speed is gpu_check.sh's
    return hf_vlm.load(entry, BackendSettings(**settings), LABELS)


def record(backend) -> list[list[int]]:
    """Spy on generate: each row's new token ids up to EOS, in order (decoded text can hide differences)."""
    rows: list[list[int]] = []
    generate = backend.model.generate

    def spy(**kwargs):
        out = generate(**kwargs)
        rows.extend(backend._completion(row) for row in out[:, kwargs["input_ids"].shape[1]:].tolist())
        return out

    backend.model.generate = spy
    return rows


def run(entry, queries, **settings) -> tuple[list[Answer], list[list[int]], object]:
    """Answers, each row's generated token ids, and the backend."""
    backend = load(entry, **settings)
    rows = record(backend)
    return backend.answer(queries), rows, backend


def block_images() -> list:
    """Coarse random colour blocks (at 32 px noise averages to grey and every image would score alike)
    in wide, tall and square sizes (a NaFlex processor keeps the aspect: the patch grids differ), and
    a grey-scale copy (grey-scale JPEGs exist in ImageNet val): the baselines' test images."""
    from PIL import Image

    rng = np.random.default_rng(0)
    sizes = [(40, 30), (64, 64), (33, 80), (100, 50), (48, 48), (70, 36)]
    out = [Image.fromarray((rng.random((3, 3, 3)) * 255).astype("uint8")).resize(s, Image.NEAREST) for s in sizes]
    return out + [out[0].convert("L")]
