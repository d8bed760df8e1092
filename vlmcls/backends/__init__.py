"""Backend registry: the catalog's `backend` field -> a loader, imported lazily (torch stays unloaded
until a case needs it).

Each backend module exposes:
    requirements(entry, settings, labels) -> str | None   # a one-line skip reason, or None when runnable
    load(entry, settings, labels) -> Backend
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from ..catalog import ModelEntry
    from ..settings import BackendSettings
    from ..types import Backend, LabelSet

REGISTRY: dict[str, str] = {
    "hf-vlm": "vlmcls.backends.hf_vlm",
    "openai": "vlmcls.backends.api",
    "openai-compatible": "vlmcls.backends.api",
    "anthropic": "vlmcls.backends.api",
    "clip": "vlmcls.backends.baselines",
    "classifier": "vlmcls.backends.baselines",
    "echo": "vlmcls.backends.echo",
}


def _module(backend: str):
    try:
        return importlib.import_module(REGISTRY[backend])
    except KeyError:
        raise ValueError(f"unknown backend {backend!r}; known: {', '.join(sorted(REGISTRY))}") from None


def requirements(entry: "ModelEntry", settings: "BackendSettings", labels: "LabelSet") -> str | None:
    return _module(entry.backend).requirements(entry, settings, labels)


def load(entry: "ModelEntry", settings: "BackendSettings", labels: "LabelSet") -> "Backend":
    return _module(entry.backend).load(entry, settings, labels)
