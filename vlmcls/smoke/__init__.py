"""Tiny random-weight models, built offline from configs and saved to disk on first use.

`weights = "smoke:<kind>"` in the catalog resolves here. Builders write to a temporary folder and
rename it into place, so concurrent xdist workers never see a half-written model.
Their accuracy is chance: they prove the plumbing (loading, batching, parsing), never quality.
"""
from __future__ import annotations

import importlib
import os
import shutil
import tempfile
from pathlib import Path

# kind -> "module:function"; each builder takes a target folder and writes a loadable checkpoint.
BUILDERS: dict[str, str] = {
    "qwen2-vl": "vlmcls.smoke.vlm:build_qwen2_vl",
    "qwen2.5-vl": "vlmcls.smoke.vlm:build_qwen2_5_vl",
    "llava-next": "vlmcls.smoke.vlm:build_llava_next",
    "gemma3": "vlmcls.smoke.families:build_gemma3",
    "internvl": "vlmcls.smoke.families:build_internvl",
    "idefics3": "vlmcls.smoke.families:build_idefics3",
    "qwen3-vl": "vlmcls.smoke.families:build_qwen3_vl",
    "phi4mm": "vlmcls.smoke.families:build_phi4mm",
    "bart-mnli": "vlmcls.smoke.nli:build_bart_mnli",
    "clip": "vlmcls.smoke.baselines:build_clip",
    "siglip": "vlmcls.smoke.siglip:build_siglip",  # needs sentencepiece + protobuf, as the hub's SigLIP does
    "siglip2": "vlmcls.smoke.siglip2:build_siglip2",  # NaFlex: Siglip2Model, Gemma tokenizer (tokenizers only)
    "resnet": "vlmcls.smoke.baselines:build_resnet",
    "vit": "vlmcls.smoke.baselines:build_vit",
}
VERSION = "4"  # bump when a builder changes, so stale caches are rebuilt
PREFIX = "smoke:"


def is_smoke(weights: str) -> bool:
    return weights.startswith(PREFIX)


def cache_root() -> Path:
    base = os.environ.get("VLMCLS_SMOKE_DIR") or Path.home() / ".cache" / "vlmcls" / "smoke"
    return Path(base) / f"v{VERSION}"


def ensure(kind: str) -> Path:
    """Path of the tiny `kind` model, building it if needed (atomic: build in a temp dir, rename)."""
    if kind.startswith(PREFIX):
        kind = kind[len(PREFIX):]
    try:
        module, func = BUILDERS[kind].split(":")
    except KeyError:
        raise ValueError(f"unknown smoke model {kind!r}; known: {', '.join(BUILDERS)}") from None
    target = cache_root() / kind
    if (target / ".complete").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{kind}-", dir=target.parent))
    try:
        import torch

        with torch.random.fork_rng(devices=[]):  # builders seed torch: keep the caller's RNG untouched
            getattr(importlib.import_module(module), func)(tmp)
        (tmp / ".complete").write_text("ok\n")
        try:
            tmp.rename(target)
        except OSError:  # another process finished first: keep theirs
            if not (target / ".complete").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
