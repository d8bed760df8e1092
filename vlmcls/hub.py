"""Where weights come from: a local folder, a smoke model, or the Hugging Face hub (cache first)."""
from __future__ import annotations

import os
from pathlib import Path


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def reachable(repo_id: str, filename: str = "config.json") -> bool:
    """True when `repo_id` is a local folder, is in the local hub cache, or the hub may be asked.

    Offline (HF_HUB_OFFLINE=1) only the cache counts; online we let the load itself speak."""
    if Path(repo_id).expanduser().exists():
        return True
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, filename)
    return isinstance(cached, str) or not offline()


def unreachable_reason(repo_id: str, filename: str = "config.json") -> str | None:
    if reachable(repo_id, filename):
        return None
    return f"weights {repo_id} are not in the local cache and HF_HUB_OFFLINE=1; run `hf download {repo_id}` first"
