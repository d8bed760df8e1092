"""ImageNet-1k validation from the hub (ILSVRC/imagenet-1k, gated: set HF_TOKEN), streamed.

Streaming means a 10,000-image subset never needs the 6.4 GB split on disk: the stream is shuffled
with the seed, read until every class has its quota, and the chosen images are cached under
~/.cache/vlmcls/imagenet so that the next run with the same (seed, samples) reads no network.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable

from . import labels as labels_mod
from .sources import IMAGENET_HUB, DatasetError, Source, hub_error, quotas
from .types import Sample

PER_CLASS = 50  # ImageNet-1k validation: 50 images for each of the 1,000 classes


def cache_dir(split: str, k: int | None, seed: int) -> Path:
    base = Path(os.environ.get("VLMCLS_CACHE", Path.home() / ".cache" / "vlmcls"))
    return base / "imagenet" / f"{split}-seed{seed}-n{k or 'all'}"


def _row_id(image: dict) -> str:
    path = image.get("path")
    return Path(path).stem if path else "sha1-" + hashlib.sha1(image["bytes"]).hexdigest()[:16]


def stream_select(rows: Iterable[dict], want: dict[int, int], out: Path) -> list[Sample]:
    """Fill per-class quotas from a (shuffled) stream; write the chosen images under `out`.
    The index is written last and atomically, so an interrupted download is simply redone."""
    out.mkdir(parents=True, exist_ok=True)
    left = sum(want.values())
    got: list[Sample] = []
    for row in rows:
        label, image = int(row["label"]), row["image"]
        if want.get(label, 0) <= 0:
            continue
        want[label] -= 1
        sid = _row_id(image)
        path = out / f"{sid}.img"
        path.write_bytes(image["bytes"])
        got.append(Sample(sid, label, str(path)))
        left -= 1
        if left == 0:
            break
    if left:
        raise DatasetError(f"the stream ended with {left} images still missing from the quota; use fewer --samples")
    tmp = out / "index.json.tmp"
    tmp.write_text(json.dumps([[s.sample_id, s.label, s.image] for s in got]))
    tmp.replace(out / "index.json")
    return got


def _cached(out: Path) -> list[Sample] | None:
    index = out / "index.json"
    if not index.exists():
        return None
    return [Sample(sid, label, path) for sid, label, path in json.loads(index.read_text())]


def _stream(split: str, seed: int):
    from datasets import ClassLabel, Features, Image, load_dataset

    kwargs = dict(split=split, streaming=True, token=os.environ.get("HF_TOKEN"))
    try:
        ds = load_dataset(IMAGENET_HUB, **kwargs)
    except ValueError as exc:
        if "duplicated" not in str(exc).lower():
            raise
        # Simplified names collide ("crane"): read the label as a bare id; names come from timm.
        features = Features({"image": Image(), "label": ClassLabel(num_classes=1000)})
        ds = load_dataset(IMAGENET_HUB, features=features, **kwargs)
    return ds.cast_column("image", Image(decode=False)).shuffle(seed=seed, buffer_size=2000)


def imagenet_stream_source(split: str = "validation") -> Source:
    def select(k: int | None, seed: int) -> list[Sample]:
        total = 1000 * PER_CLASS
        if k is not None and k > total:
            raise DatasetError(f"--samples {k} exceeds the {total} images of ImageNet-1k {split}; use --samples {total} or less")
        out = cache_dir(split, k, seed)
        cached = _cached(out)
        if cached is not None:
            return cached
        want = quotas({c: PER_CLASS for c in range(1000)}, k or total, seed)
        try:
            return stream_select(_stream(split, seed), want, out)
        except DatasetError:
            raise
        except Exception as exc:
            raise DatasetError(hub_error(IMAGENET_HUB, exc)) from None

    return Source("imagenet", labels_mod.imagenet_annotations(), select, 1000 * PER_CLASS)
