"""Backends: the catalog's `backend` field -> a loader, imported lazily (torch stays unloaded until a
case needs it). What each backend is and accepts lives in `registry` (torch-free).

Each backend module exposes:
    requirements(entry, settings, labels) -> str | None   # a one-line skip reason, or None when runnable
    load(entry, settings, labels) -> Backend
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .registry import BACKENDS as REGISTRY  # noqa: F401  (name -> BackendInfo; importing it loads no backend)
from .registry import info

if TYPE_CHECKING:  # pragma: no cover
    from ..settings import BackendSettings
    from ..types import Backend, LabelSet

# `entry` is a catalog.ModelEntry; not imported even for typing, so that the catalog (which reads the
# registry) and this package never import each other.


def _module(backend: str):
    return importlib.import_module(info(backend).module)


def requirements(entry: Any, settings: "BackendSettings", labels: "LabelSet") -> str | None:
    return _module(entry.backend).requirements(entry, settings, labels)


def load(entry: Any, settings: "BackendSettings", labels: "LabelSet") -> "Backend":
    return _module(entry.backend).load(entry, settings, labels)
