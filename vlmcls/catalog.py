"""The model catalog (vlmcls/catalog.toml, or a user's file): one entry per model."""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .settings import QUANTS  # one list for the catalog and the CLI

DEFAULT_CATALOG = Path(__file__).with_name("catalog.toml")
DTYPES = ("auto", "bfloat16", "float16", "float32")
# `options` keys a backend reads from settings.extra (besides the BackendSettings fields, which
# `defaults` lifts into the settings). Keep in step with the backends: a key not listed here is a
# typo that would otherwise be ignored without a word.
BACKEND_OPTIONS = (
    "min_pixels", "max_pixels",  # hf-vlm: image processor pixel bounds
    "templates", "workers", "image_backend",  # clip / classifier baselines
    "choice_field", "greedy", "max_retry_after_s",  # API backends
    "styles", "delay_s", "crash", "load_log",  # echo (tests)
)


@dataclass(frozen=True)
class ModelEntry:
    name: str
    backend: str
    weights: str
    quant: str = "none"
    dtype: str = "auto"
    reference: Mapping[int, float] = field(default_factory=dict)
    thresholds: Mapping[int, float] = field(default_factory=dict)
    smoke: bool = False
    trust_remote_code: bool = False
    price: tuple[float, float] | None = None  # USD per million input / output tokens
    options: Mapping[str, Any] = field(default_factory=dict)
    samples: int | None = None  # default subset size when --samples is not given (slow smoke models)

    @property
    def is_local_hf(self) -> bool:
        return self.backend in ("hf-vlm", "clip", "classifier")

    def case_tag(self, settings_quant: str | None = None) -> str:
        """The model part of a case id: `qwen2-vl-2b-int8`; quantization only for local VLMs."""
        if self.backend != "hf-vlm":
            return self.name
        return f"{self.name}-{settings_quant or self.quant}"

    def threshold(self, ways: int) -> float | None:
        """The accuracy gate at N-way. Smoke models get 0: random weights can sit below chance for
        good (a random CLIP prefers the same few classes for every image), so their gate checks the
        plumbing instead -- every sample predicted, no error row (see session.check_gate)."""
        if self.smoke:
            return self.thresholds.get(ways, 0.0)
        return self.thresholds.get(ways)

    def defaults(self) -> dict[str, Any]:
        """Catalog-level settings, for resolve_settings (CLI > catalog > default). `options` keys
        that name a setting (batch_size, max_new_tokens, constrained, ...) set it; all go to `extra`."""
        from .settings import BackendSettings

        named = {k: v for k, v in self.options.items() if k in BackendSettings.__dataclass_fields__}
        return {**named, "quant": self.quant, "dtype": self.dtype, "extra": dict(self.options)}


def _int_keys(table: Mapping[str, Any], where: str) -> dict[int, float]:
    try:
        return {int(k): float(v) for k, v in table.items()}
    except (TypeError, ValueError):
        raise ValueError(f"{where}: keys must be N (integers) and values accuracies") from None


def _entry(name: str, raw: Mapping[str, Any], source: Path) -> ModelEntry:
    where = f"{source}: model {name!r}"
    missing = [k for k in ("backend", "weights") if k not in raw]
    if missing:
        raise ValueError(f"{where} lacks {', '.join(missing)}")
    known = set(ModelEntry.__dataclass_fields__) - {"name"}
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"{where} has unknown keys {sorted(unknown)}; known: {sorted(known)}")
    _check_choices(where, raw)
    data = dict(raw)
    data["reference"] = _int_keys(raw.get("reference", {}), where)
    data["thresholds"] = _int_keys(raw.get("thresholds", {}), where)
    if "price" in raw:
        data["price"] = tuple(float(p) for p in raw["price"])
    return ModelEntry(name=name, **data)


def _option_keys() -> tuple[str, ...]:
    from .settings import BackendSettings

    named = set(BackendSettings.__dataclass_fields__) - {"extra"}
    return tuple(sorted(named | set(BACKEND_OPTIONS)))


def _check_choices(where: str, raw: Mapping[str, Any]) -> None:
    """backend, quant, dtype and options keys against what the code knows: a typo fails at load."""
    from .backends import REGISTRY  # a plain dict: importing it loads no backend module

    for key, allowed in (("backend", tuple(REGISTRY)), ("quant", QUANTS), ("dtype", DTYPES)):
        if key in raw and raw[key] not in allowed:
            raise ValueError(f"{where} has {key} {raw[key]!r}; allowed: {', '.join(allowed)}")
    options = raw.get("options", {})
    if not isinstance(options, Mapping):
        raise ValueError(f"{where}: options must be a table, not {options!r}")
    unknown = sorted(set(options) - set(_option_keys()))
    if unknown:
        raise ValueError(f"{where} has unknown options {unknown}; allowed: {', '.join(_option_keys())}")


def load_catalog(path: str | Path | None = None) -> dict[str, ModelEntry]:
    """Entries by name, in file order. A malformed file is one clear ValueError."""
    source = Path(path) if path else DEFAULT_CATALOG
    try:
        raw = tomllib.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"catalog file {source} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"catalog file {source} is not valid TOML: {exc}") from None
    return {name: _entry(name, table, source) for name, table in raw.get("models", {}).items()}
