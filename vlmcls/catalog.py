"""The model catalog (vlmcls/catalog.toml, or a user's file): one entry per model."""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .backends.registry import BACKENDS, BackendInfo, all_options, find, info
from .vocab import DTYPES, QUANTS, STUDY_LABELS, STUDY_PROMPT, STUDY_RESOLVER  # noqa: F401 (STUDY_* re-exported)
from .vocab import LAYOUTS, canonical

DEFAULT_CATALOG = Path(__file__).with_name("catalog.toml")
# The study ran one prompt, one label set and one resolver for every row (vocab.STUDY_*; its settings
# per row -- N, images, quantization -- are in each model's `study` rows).
STUDY_DATASET = "imagenet"  # ImageNet-1k validation
MARGIN = 0.05  # a gate sits this far below the study's accuracy
IMAGENET_CLASSES = 1000  # at N = all classes, N-way accuracy is plain top-1 accuracy
STUDY_METRICS = ("precision", "recall", "f1", "accuracy")
# `options` keys a backend reads from settings.extra come from the backend registry: a key no backend
# reads is a typo that would otherwise be ignored without a word.


@dataclass(frozen=True)
class StudyRow:
    """One row of the study's tables: its figures and the settings it ran them with. Precision,
    recall, F1 and images are None for a user's accuracy-only `reference`."""

    model: str
    ways: int
    accuracy: float
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    images: int | None = None
    quant: str | None = None  # local VLMs only

    def metric(self, name: str) -> float | None:
        return getattr(self, name)


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
    study: tuple[StudyRow, ...] = ()  # the study's rows for this model
    top1: float | None = None  # published ImageNet-1k top-1 accuracy of these weights (baselines)
    # set at load, never in the file: why `weights`, written as a path, named no folder then (the case's skip
    # reason while it still names none: `missing_weights`; a folder built after the catalog loaded is fine)
    weights_problem: str | None = field(default=None, compare=False)

    def __repr__(self) -> str:  # `options.base_url` may carry credentials (pytest -l shows locals)
        from .settings import redacted_repr

        return redacted_repr(self)

    def missing_weights(self) -> str | None:
        """`weights_problem` while the folder is still missing, else None."""
        if self.weights_problem and not Path(self.weights).expanduser().is_dir():
            return self.weights_problem
        return None

    @property
    def info(self) -> BackendInfo:
        """What its backend is and accepts (vlmcls.backends.registry)."""
        return info(self.backend)

    @property
    def is_local_hf(self) -> bool:
        return self.info.local

    @property
    def xdist_group(self) -> str:
        """Cases with the same group share an xdist worker; the registry says what they share."""
        return self.name if self.info.group == "model" else self.backend

    def case_tag(self, settings_quant: str | None = None) -> str:
        """The model part of a case id: `qwen2-vl-2b-int8`; quantization only for local VLMs."""
        if not self.info.quantized:
            return self.name
        return f"{self.name}-{settings_quant or self.quant}"

    def threshold(self, ways: int) -> float | None:
        """The accuracy gate at N-way: `thresholds` if given, else the study's accuracy - MARGIN,
        except where that figure cannot be top-1 accuracy (`doubt`): no gate on an impossible number.
        Smoke models get 0: random weights can sit below chance for good (a random CLIP prefers the
        same few classes for every image), so their gate checks the plumbing instead -- every sample
        answered (unresolved counts), no error row (see vlmcls.gate)."""
        if ways in self.thresholds:
            return self.thresholds[ways]
        if self.smoke:
            return 0.0
        row = self.study_row(ways)
        if row is None or self.doubt(ways):
            return None
        return round(row.accuracy - MARGIN, 4)

    def study_row(self, ways: int) -> StudyRow | None:
        return next((r for r in self.study_rows() if r.ways == ways), None)

    def study_rows(self) -> tuple[StudyRow, ...]:
        """The `study` rows, plus an accuracy-only row per `reference` N that they do not cover."""
        covered = {r.ways for r in self.study}
        extra = (StudyRow(self.name, w, a) for w, a in sorted(self.reference.items()) if w not in covered)
        return self.study + tuple(extra)

    def doubt(self, ways: int) -> str | None:
        """Why the study's figure at N-way cannot be top-1 accuracy over N classes, or None. At
        1000-way the candidates are all of ImageNet's classes, so the task is plain top-1
        classification: a figure far above the weights' published top-1 must be something else."""
        row = self.study_row(ways)
        if row is None or self.top1 is None or ways < IMAGENET_CLASSES or row.accuracy <= self.top1 + MARGIN:
            return None
        return (f"the study's {ways}-way accuracy {row.accuracy:.2f} is far above the published ImageNet top-1 "
                f"of {self.name} ({self.top1:.2%}); at {ways}-way every class is "
                "a candidate, so it cannot be top-1 accuracy over these classes: not compared, no gate")

    def defaults(self) -> dict[str, Any]:
        """Catalog-level settings, for resolve_settings (CLI > catalog > default). `options` keys
        that name a setting (batch_size, max_new_tokens, constrained, ...) set it; all go to `extra`."""
        from .settings import BackendSettings

        named = {k: v for k, v in self.options.items() if k in BackendSettings.__dataclass_fields__}
        return {**named, "quant": self.quant, "dtype": self.dtype, "extra": dict(self.options)}


def _int_keys(table: Mapping[str, Any], where: str, what: str) -> dict[int, float]:
    """`{ 20 = 0.85 }` -> {20: 0.85}: each value an accuracy in [0, 1], checked at load."""
    try:
        table = {int(k): v for k, v in table.items()}
    except (TypeError, ValueError, AttributeError):
        raise ValueError(f"{where}: {what} must map N to an accuracy, e.g. {what} = {{ 20 = 0.30, 100 = 0.15 }}") from None
    return {n: _fraction(v, where, f"{what} at {n}-way") for n, v in table.items()}


def _fraction(value: Any, where: str, what: str) -> float:
    """An accuracy-like figure in [0, 1]. A percent (85 for 0.85) would otherwise load, run every case
    (paid API calls included) and only then fail the gate, or never gate at all."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not 0.0 <= number <= 1.0:  # NaN fails too
        raise ValueError(f"{where}: {what} is {value}; it must be a fraction in [0, 1] (0.85, not 85)")
    return number


PATH_STARTS = ("/", "./", "../", "~")  # weights written so are a path, never a hub repo id


def _local_weights(weights: str, source: Path) -> tuple[str, str | None]:
    """A local model's `weights` as loaded: a folder beside the catalog file (a relative path is read from
    the catalog's folder, wherever pytest runs), else one relative to the current folder (as before),
    becomes its absolute path; `~` is expanded; an absolute path to a folder stays as written. Else, a value written as a path (/, ./, ../, ~) is no hub
    repo id: (the path, why it names no folder); anything else stays a hub repo id (or a smoke name)."""
    if weights.startswith("smoke:"):
        return weights, None
    given = Path(weights).expanduser()
    if weights.startswith("/") and given.is_dir():
        return weights, None  # as written (the folder's files enter the store key too: runner.CaseSpec.folder_fields)
    beside = Path(os.path.abspath(Path(os.path.abspath(source)).parent / given))  # an absolute path stays itself
    for folder in (beside, Path(os.path.abspath(given))):
        if folder.is_dir():
            return str(folder), None
    if weights in (".", "..") or weights.startswith(PATH_STARTS):
        hint = "" if given.is_absolute() else " (relative paths in a catalog are read from the catalog's folder)"
        return str(beside), f"folder not found: {beside}{hint}"
    return weights, None


def _entry(name: str, raw: Mapping[str, Any], source: Path) -> ModelEntry:
    where = f"{source}: model {name!r}"
    missing = [k for k in ("backend", "weights") if k not in raw]
    if missing:
        raise ValueError(f"{where} lacks {', '.join(missing)}")
    known = set(ModelEntry.__dataclass_fields__) - {"name", "weights_problem"}
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"{where} has unknown keys {sorted(unknown)}; known: {sorted(known)}")
    _check_choices(where, raw)
    data = dict(raw)
    if "layout" in data.get("options", {}):  # `layout = "thesis"` (the older name) reads as image-first
        data["options"] = {**data["options"], "layout": canonical("layout", data["options"]["layout"])}
        if data["options"]["layout"] not in LAYOUTS:
            raise ValueError(f"{where} has layout {raw['options']['layout']!r}; allowed: {', '.join(LAYOUTS)} (or thesis)")
    data["reference"] = _int_keys(raw.get("reference", {}), where, "reference")
    data["thresholds"] = _int_keys(raw.get("thresholds", {}), where, "thresholds")
    data["study"] = _study_rows(name, raw.get("study", []), where, raw.get("backend"))
    # the study's accuracies are the reference; an explicit `reference` adds N the rows lack
    data["reference"] = {**data["reference"], **{r.ways: r.accuracy for r in data["study"]}}
    if "top1" in raw:
        data["top1"] = _fraction(raw["top1"], where, "top1")
    if "price" in raw:
        data["price"] = tuple(float(p) for p in raw["price"])
    if isinstance(raw["weights"], str) and info(raw["backend"]).local:
        data["weights"], data["weights_problem"] = _local_weights(raw["weights"], source)
    # random weights or a scripted stand-in, whatever the entry's name: `smoke:` weights, or a backend that runs no
    # model at all (the `echo` stub, whatever its weights say)
    if str(raw["weights"]).startswith("smoke:"):
        stand_in = f"weights {raw['weights']!r}, a random-weight or scripted stand-in"
    elif info(raw["backend"]).runs == "stub":
        stand_in = f"backend {raw['backend']!r}, a scripted stand-in that runs no model"
    else:
        stand_in = ""
    if stand_in:
        if raw.get("smoke") is False:
            raise ValueError(f"{where} has {stand_in}, and smoke = false: its results would read as a real "
                             "model's; drop `smoke = false`")
        data["smoke"] = True
    return ModelEntry(name=name, **data)


_ROW_KEYS = {"ways", "images", "quant", *STUDY_METRICS}


def _study_rows(name: str, raw: Any, where: str, backend: str | None) -> tuple[StudyRow, ...]:
    """`study = [{ ways = 20, images = 10000, quant = "int8", precision = ..., ... }, ...]`."""
    if not isinstance(raw, list) or not all(isinstance(r, Mapping) for r in raw):
        raise ValueError(f"{where}: study must be a list of tables, one per N")
    quantized = bool(find(backend) and find(backend).quantized)
    local_vlms = ", ".join(b.name for b in BACKENDS.values() if b.quantized)
    rows = []
    for r in raw:
        missing, unknown = sorted(_ROW_KEYS - {"quant"} - set(r)), sorted(set(r) - _ROW_KEYS)
        if missing:
            raise ValueError(f"{where}: a study row lacks {', '.join(missing)}")
        if unknown:
            raise ValueError(f"{where}: a study row has unknown keys {', '.join(unknown)}; known: {', '.join(sorted(_ROW_KEYS))}")
        if "quant" in r and (not quantized or r["quant"] not in QUANTS):
            raise ValueError(f"{where}: a study row's quant must be one of {', '.join(QUANTS)}, for {local_vlms} models only")
        if quantized and "quant" not in r:
            raise ValueError(f"{where}: a study row of a local VLM needs the quant the study ran it with")
        rows.append(StudyRow(name, int(r["ways"]), images=int(r["images"]), quant=r.get("quant"),
                             **{m: _fraction(r[m], where, f"the {r['ways']}-way study row's {m}") for m in STUDY_METRICS}))
    if len({r.ways for r in rows}) != len(rows):
        raise ValueError(f"{where}: two study rows for the same N")
    return tuple(rows)


def study_cases(catalog: Mapping[str, ModelEntry], ways: tuple[int, ...] | None = None) -> list[tuple[ModelEntry, StudyRow]]:
    """Every study row of the catalog (only those at `ways`, when given), in catalog order."""
    return [(e, r) for e in catalog.values() for r in e.study if not ways or r.ways in ways]


def _option_keys() -> tuple[str, ...]:
    from .settings import BackendSettings

    named = set(BackendSettings.__dataclass_fields__) - {"extra"}
    return tuple(sorted(named | set(all_options())))


def _check_choices(where: str, raw: Mapping[str, Any]) -> None:
    """backend, quant, dtype and options keys against what the code knows: a typo fails at load."""
    for key, allowed in (("backend", tuple(BACKENDS)), ("quant", QUANTS), ("dtype", DTYPES)):
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
    except IsADirectoryError:
        raise ValueError(f"catalog {source} is a folder: --catalog takes a TOML file (e.g. my.toml)") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"catalog file {source} is not UTF-8 text ({exc.reason} at byte {exc.start}): "
                         "save it as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"catalog file {source} is not valid TOML: {exc}") from None
    return {name: _entry(name, table, source) for name, table in raw.get("models", {}).items()}
