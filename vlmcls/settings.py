"""Run settings and their single point of precedence: CLI option > catalog entry > default."""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from .vocab import AVERAGES, LABEL_MODES, QUANTS, RESOLVERS  # noqa: F401 (re-exported for older imports)
from .vocab import STUDY_LAYOUT, Dtype, Layout, Quant, canonical


@dataclass(frozen=True)
class BackendSettings:
    """Everything a backend needs besides its catalog entry. Resolved once per case."""

    quant: Quant = "none"
    dtype: Dtype | str = "auto"  # a name of vocab.DTYPES, or one of its aliases (bf16, fp16...)
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    batch_size: int = 8
    batch_auto: bool | None = None  # local VLMs: the largest batch that fits; None: on CUDA only
    max_new_tokens: int = 32
    layout: Layout = STUDY_LAYOUT  # vocab.LAYOUTS: the study's, or "labels-first"
    constrained: bool = False  # restrict generation to the candidate labels
    rank: bool = False  # score every candidate label instead of generating (--resolver rank)
    concurrency: int = 8  # API requests in flight
    max_image_side: int = 768  # API images: long side bound before JPEG re-encoding
    timeout_s: float = 60.0
    max_retries: int = 4
    base_url: str | None = None  # one server URL, or several separated by commas (see server_urls)
    trust_remote_code: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)  # backend-specific catalog options

    def __post_init__(self) -> None:
        object.__setattr__(self, "layout", canonical("layout", self.layout))  # "thesis": image-first's older name

    def with_(self, **changes: Any) -> "BackendSettings":
        return replace(self, **changes)

    def __repr__(self) -> str:  # a traceback's locals (pytest -l) show it: never a URL's credentials
        return redacted_repr(self)


def server_urls(base_url: str | None) -> tuple[str, ...]:
    """The servers named by `base_url`: URLs separated by commas or whitespace, repeats dropped,
    order kept ("http://a/v1, http://b/v1" -> two servers; None -> none)."""
    return tuple(dict.fromkeys(u for u in re.split(r"[,\s]+", base_url or "") if u))


def resolve_settings(cli: Mapping[str, Any], entry_defaults: Mapping[str, Any]) -> BackendSettings:
    """CLI option (when not None) > catalog entry > dataclass default."""
    fields = BackendSettings.__dataclass_fields__
    merged: dict[str, Any] = {}
    for source in (entry_defaults, cli):
        merged.update({k: v for k, v in source.items() if v is not None and k in fields})
    return BackendSettings(**merged)


_URL = re.compile(r"[a-z][a-z0-9+.-]*://[^\s,'\"<>]+", re.IGNORECASE)
_QUERY_VALUE = re.compile(r"([^&=]+)=[^&]*")


def redact_urls(text: str) -> str:
    """`text` with every URL's credentials (`user:password@`) and query values masked: a --base-url may
    carry them (`http://ci:pass@host/v1`, `?token=...`), and results.json, the store and logs keep
    what they are given. A URL without either is unchanged, so store keys stay as they were."""
    return _URL.sub(lambda m: _redact(m.group(0)), text)


def redact_values(values: Any) -> dict:
    """A mapping's text values with redact_urls applied (a catalog's `options`, `base_url` among them)."""
    return {k: redact_urls(v) if isinstance(v, str) else v for k, v in values.items()}


def redacted_repr(obj: Any) -> str:
    """A dataclass's repr, as the generated one would be, with redact_urls applied."""
    from dataclasses import fields

    shown = ", ".join(f"{f.name}={getattr(obj, f.name)!r}" for f in fields(obj) if f.repr)
    return redact_urls(f"{type(obj).__qualname__}({shown})")


def _redact(url: str) -> str:
    scheme, rest = url.split("://", 1)
    cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    netloc, tail = rest[:cut], rest[cut:]
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    if "?" in tail:
        path, query = tail.split("?", 1)
        query, hash_, fragment = query.partition("#")
        masked = "&".join(_QUERY_VALUE.sub(r"\1=***", q) if "=" in q else "***" for q in query.split("&"))
        tail = f"{path}?{masked}{hash_}{fragment}"
    return f"{scheme}://{netloc}{tail}"

