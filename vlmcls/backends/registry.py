"""What each backend is and accepts, described once, torch-free: the catalog validates against it,
the store key, the requirements checks and the report read it. Adding a backend = one module (with
`requirements` and `load`, see vlmcls.backends) + one line in BACKENDS.

This module imports nothing from vlmcls, so any module may read it without loading a backend.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# Settings a scorer that generates nothing cannot be changed by (they stay out of its store key).
GENERATION = ("quant", "layout", "constrained", "max_new_tokens", "max_image_side")


@dataclass(frozen=True)
class BackendInfo:
    name: str  # the catalog's `backend` value
    module: str  # imported only when a case of this backend runs
    options: tuple[str, ...]  # catalog `options` keys it reads from settings.extra
    # local: weights run in this process (the device decides the dtype; the hub is asked for them);
    # served: requests to an API (a batch is the requests in flight); stub: neither (tests)
    runs: Literal["local", "served", "stub"]
    # generative: free text, resolved to a candidate; direct: scores each candidate itself
    answers: Literal["generative", "direct"]
    constrained: bool = False  # can restrict its answer to the candidates (--resolver constrained)
    rank: bool = False  # can score every candidate (--resolver rank; APIs: from the first token's logprobs)
    quantized: bool = False  # `quant` is one of its settings: case ids and study rows name it
    url_in_key: bool = False  # the served model behind base_url answers: the URL enters the store key
    # xdist: the cases of one model share a worker (one load per process); "backend": all of the
    # backend's cases share one (e.g. one API rate limit)
    group: Literal["model", "backend"] = "model"

    @property
    def local(self) -> bool:
        return self.runs == "local"

    @property
    def served(self) -> bool:
        return self.runs == "served"

    @property
    def direct(self) -> bool:
        return self.answers == "direct"

    def key_drops(self) -> tuple[str, ...]:
        """Settings that cannot change this backend's answers, beyond the speed settings every backend drops."""
        return (GENERATION if self.direct else ()) + (() if self.url_in_key else ("base_url",))


_API = ("choice_field", "greedy", "max_retry_after_s", "server_cooldown_s")
_BASELINE = ("templates", "workers", "image_backend", "image_path")

BACKENDS: dict[str, BackendInfo] = {b.name: b for b in (
    BackendInfo("hf-vlm", "vlmcls.backends.hf_vlm", ("min_pixels", "max_pixels", "rank_chunk", "static_cache", "prefetch", "prefetch_process", "attn_implementation"), "local",
                "generative", constrained=True, rank=True, quantized=True),
    BackendInfo("openai", "vlmcls.backends.api", _API, "served", "generative", rank=True),
    BackendInfo("openai-compatible", "vlmcls.backends.api", _API, "served", "generative", constrained=True,
                rank=True, url_in_key=True),
    BackendInfo("anthropic", "vlmcls.backends.api", _API, "served", "generative"),
    BackendInfo("clip", "vlmcls.backends.baselines", _BASELINE, "local", "direct", constrained=True, rank=True),
    BackendInfo("classifier", "vlmcls.backends.baselines", _BASELINE, "local", "direct", constrained=True, rank=True),
    BackendInfo("echo", "vlmcls.backends.echo", ("styles", "delay_s", "crash", "load_log"), "stub", "generative"),
)}


def info(backend: str) -> BackendInfo:
    """The backend's description; an unknown name is one clear ValueError."""
    try:
        return BACKENDS[backend]
    except KeyError:
        raise ValueError(f"unknown backend {backend!r}; known: {', '.join(sorted(BACKENDS))}") from None


def find(backend: str | None) -> BackendInfo | None:
    """The description, or None for a name this version does not know (a row read back from an old run)."""
    return BACKENDS.get(backend or "")


def all_options() -> tuple[str, ...]:
    """Every backend-specific option key, sorted."""
    return tuple(sorted({o for b in BACKENDS.values() for o in b.options}))
