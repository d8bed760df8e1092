"""Run settings and their single point of precedence: CLI option > catalog entry > default."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

QUANTS = ("none", "int8", "nf4")
RESOLVERS = ("thesis", "exact", "nli", "constrained")
LABEL_MODES = ("unique", "thesis")


@dataclass(frozen=True)
class BackendSettings:
    """Everything a backend needs besides its catalog entry. Resolved once per case."""

    quant: str = "none"
    dtype: str = "auto"
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    batch_size: int = 8
    max_new_tokens: int = 32
    layout: str = "thesis"  # prompt layout: "thesis" or "labels-first"
    constrained: bool = False  # restrict generation to the candidate labels
    concurrency: int = 8  # API requests in flight
    max_image_side: int = 768  # API images: long side bound before JPEG re-encoding
    timeout_s: float = 60.0
    max_retries: int = 4
    base_url: str | None = None
    trust_remote_code: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)  # backend-specific catalog options

    def with_(self, **changes: Any) -> "BackendSettings":
        return replace(self, **changes)


def resolve_settings(cli: Mapping[str, Any], entry_defaults: Mapping[str, Any]) -> BackendSettings:
    """CLI option (when not None) > catalog entry > dataclass default."""
    fields = BackendSettings.__dataclass_fields__
    merged: dict[str, Any] = {}
    for source in (entry_defaults, cli):
        merged.update({k: v for k, v in source.items() if v is not None and k in fields})
    return BackendSettings(**merged)
