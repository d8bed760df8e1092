"""The names of things, each defined once: a Literal type for the checker, a tuple for the code.

Every module that validates or lists one of these names imports it from here, so adding a
quantization or a resolver mode is one edit. Importing this module imports nothing heavy.

"thesis" used to name four things. It still names the study's prompt; the study's label mode,
resolver and layout now have their own names (raw, study, image-first), and "thesis" stays accepted
for them wherever users type it (ALIASES, applied when options and catalogs are parsed). Store keys
keep the old strings (STORED_AS), so result stores written before the rename still resume.
"""
from __future__ import annotations

from typing import Any, Literal, get_args

# The study's prompt (prompts.TEMPLATES), kept verbatim.
STUDY_PROMPT = "thesis"

# Labels: "unique" settles colliding class names; "raw" keeps the study's raw first synonyms.
LabelMode = Literal["unique", "raw"]
LABEL_MODES: tuple[LabelMode, ...] = get_args(LabelMode)
STUDY_LABELS: LabelMode = "raw"

# Answer resolution. "study" is the study's staged resolver: match, synonym, then NLI.
ResolverMode = Literal["study", "exact", "nli", "constrained", "rank"]
RESOLVERS: tuple[ResolverMode, ...] = get_args(ResolverMode)
STUDY_RESOLVER: ResolverMode = "study"
NLI_RESOLVERS: tuple[ResolverMode, ...] = ("study", "nli")  # the modes whose last stage is NLI

# Prompt layouts: the study's "image-first" (image, then the whole text) and "labels-first", where the
# label list precedes the image so that a local backend can reuse its KV cache across images.
Layout = Literal["image-first", "labels-first"]
LAYOUTS: tuple[Layout, ...] = get_args(Layout)
STUDY_LAYOUT: Layout = "image-first"
LABELS_FIRST: Layout = "labels-first"

# The one alias table: setting -> {name users may type: canonical name}. "thesis" is what the study's
# label mode, resolver and layout were called before they had names of their own.
ALIASES: dict[str, dict[str, str]] = {
    "labels": {"thesis": STUDY_LABELS},
    "resolver": {"thesis": STUDY_RESOLVER},
    "layout": {"thesis": STUDY_LAYOUT},
}
# What a store key holds for a canonical name: the string written before the rename, so that stores resume.
STORED_AS: dict[str, dict[str, str]] = {k: {v: alias for alias, v in table.items()} for k, table in ALIASES.items()}


def canonical(setting: str, value: Any) -> Any:
    """`value` with an alias of `setting` ("labels", "resolver", "layout") replaced by its canonical name."""
    return ALIASES[setting].get(value, value) if isinstance(value, str) else value


def stored(setting: str, value: Any) -> Any:
    """The string a store key holds for `value` of `setting` (the name used before the rename)."""
    value = canonical(setting, value)
    return STORED_AS[setting].get(value, value) if isinstance(value, str) else value

# Local VLM weight quantizations (bitsandbytes for int8 and nf4).
Quant = Literal["none", "int8", "nf4"]
QUANTS: tuple[Quant, ...] = get_args(Quant)

# Compute dtypes; "auto" is settled per backend and device by devices.pick_dtype.
Dtype = Literal["auto", "bfloat16", "float16", "float32"]
DTYPES: tuple[Dtype, ...] = get_args(Dtype)
DTYPE_ALIASES: dict[str, str] = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}

# Resolver stages, recorded with every prediction ("which stage decided").
Stage = Literal["match", "synonym", "nli", "constrained", "direct", "rank", "unresolved", "error"]
STAGES: tuple[Stage, ...] = get_args(Stage)

# Precision / recall / F1 conventions (see metrics.py).
Average = Literal["present", "union", "weighted"]
AVERAGES: tuple[Average, ...] = get_args(Average)
