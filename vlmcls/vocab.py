"""The names of things, each defined once: a Literal type for the checker, a tuple for the code.

Every module that validates or lists one of these names imports it from here, so adding a
quantization or a resolver mode is one edit. Importing this module imports nothing heavy.

"thesis" is the study's name for its own choices. The stored strings stay "thesis" (store keys,
catalog files and result rows written by earlier runs keep matching); the STUDY_* constants below
say which of the four meanings a piece of code means.
"""
from __future__ import annotations

from typing import Literal, get_args

# The study's prompt (prompts.TEMPLATES), kept verbatim.
STUDY_PROMPT = "thesis"

# Labels: "unique" settles colliding class names; "thesis" keeps the study's raw first synonyms.
LabelMode = Literal["unique", "thesis"]
LABEL_MODES: tuple[LabelMode, ...] = get_args(LabelMode)
STUDY_LABELS: LabelMode = "thesis"

# Answer resolution. "thesis" is the study's staged resolver: match, synonym, then NLI.
ResolverMode = Literal["thesis", "exact", "nli", "constrained", "rank"]
RESOLVERS: tuple[ResolverMode, ...] = get_args(ResolverMode)
STUDY_RESOLVER: ResolverMode = "thesis"
NLI_RESOLVERS: tuple[ResolverMode, ...] = ("thesis", "nli")  # the modes whose last stage is NLI

# Prompt layouts: the study's (image first, then the whole text) and "labels-first", where the
# label list precedes the image so that a local backend can reuse its KV cache across images.
Layout = Literal["thesis", "labels-first"]
LAYOUTS: tuple[Layout, ...] = get_args(Layout)
STUDY_LAYOUT: Layout = "thesis"
LABELS_FIRST: Layout = "labels-first"

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
