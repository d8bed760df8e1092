"""What every dataset source shares: the Source record, its one error type, seeded class quotas and
the hub's error lines. Both vlmcls.data and vlmcls.imagenet_hub build on it, so neither imports the other's
internals.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Callable, Mapping

from .types import Sample

IMAGENET_HUB = "ILSVRC/imagenet-1k"
# the --dataset names read as the hub's ImageNet-1k validation split, streamed (the study's data); the hub
# id itself is one of them: the generic hub loader would download the whole dataset, train split included
IMAGENET_NAMES = ("imagenet", "imagenet-1k", IMAGENET_HUB, IMAGENET_HUB + ":validation")


class DatasetError(ValueError):
    """A dataset cannot be used as given; the message names the fix."""


@dataclass(frozen=True)
class Source:
    """A dataset's class annotations and a way to draw a seeded subset of its samples."""

    name: str
    annotations: tuple[str, ...]
    select: Callable[[int | None, int], list[Sample]]  # (samples or None = all, seed) -> samples
    size: int | None = None  # number of images, when known without reading the data
    # How the data was read, for the report's Dataset section (meta.dataset in results.json):
    notes: tuple[str, ...] = ()  # what the user did not choose: the split picked, a tree read as an image folder, ...
    split: str | None = None  # the split picked for the user among several (None: the only one, or the one named)
    class_sizes: Mapping[int, int] = field(default_factory=dict)  # images per class id, when known ({} when not)
    ignored: tuple[str, ...] = ()  # class folders without an image, which the reader left out
    synonyms: bool = True  # annotations list comma-separated synonyms (ImageNet's); False: each is one name (folders)


def seed_key(seed: int, sample_id: str) -> bytes:
    """A sample's (or class's) place in the seed's order: the same everywhere, whatever the listing order."""
    return hashlib.sha256(f"{seed}\x1f{sample_id}".encode()).digest()


def quotas(class_sizes: dict[int, int], k: int, seed: int) -> dict[int, int]:
    """Spread k as evenly as the classes allow: every class gets k // C (capped by its size), then
    the rest goes one at a time to classes with room, in a seeded order."""
    order = sorted(class_sizes, key=lambda c: seed_key(seed, f"class:{c}"))
    take = {c: 0 for c in order}
    left = k
    while left > 0:
        room = [c for c in order if take[c] < class_sizes[c]]
        if not room:
            break
        share = max(1, left // len(room))
        for c in room:
            add = min(share, class_sizes[c] - take[c], left)
            take[c] += add
            left -= add
            if left == 0:
                break
    return take


def hub_error(name: str, exc: Exception) -> str:
    """One line naming what to do when the hub cannot give dataset `name`."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if os.environ.get("HF_HUB_OFFLINE") == "1" or "offline" in text.lower() or "connect" in text.lower():
        return f"dataset {name!r} is not reachable (offline or not in the local cache): {text[:160]}"
    if "gated" in text.lower() or "401" in text or "403" in text:
        return f"dataset {name!r} is gated: accept its terms on the hub and set HF_TOKEN"
    return f"dataset {name!r} could not be loaded: {text[:200]}"
