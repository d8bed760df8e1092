"""Where weights come from: a local folder, a smoke model, or the Hugging Face hub (cache first).

One check for every local model (hf-vlm, CLIP, classifiers) and the NLI model: can these weights be
had here, answered as one line before anything loads. Imports no torch; never downloads.
"""
from __future__ import annotations

import os
from pathlib import Path

_TRUE = ("1", "true", "yes", "on")
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")


def importable(name: str) -> bool:
    """Whether a module can be imported, without importing it: a package a model needs (bitsandbytes,
    flash-attn, SigLIP's sentencepiece) is a one-line skip, not a failed load."""
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a dotted name whose parent package is missing (google.protobuf)
        return False


def offline() -> bool:
    return any(os.environ.get(k, "").lower() in _TRUE for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _here(weights: str) -> bool:
    """A smoke model (built offline on demand) or an existing local folder."""
    from .smoke import is_smoke

    return is_smoke(weights) or Path(weights).expanduser().is_dir()


def _repo_id_ok(repo_id: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        return False
    return True


def nowhere_reason(weights: str) -> str | None:
    """Why `weights` can name nothing at all (a mistyped path: neither a folder nor a hub repo id), or None.
    Asked first, so that the hub is never asked about a path (it raises HFValidationError)."""
    if _here(weights) or _repo_id_ok(weights):
        return None
    return f"{weights}: the folder does not exist, and it is not a hub repo id"


def cached_snapshot(repo_id: str) -> Path | None:
    """The local snapshot folder of a hub model when it holds weights, else None. Never downloads."""
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not cached (LocalEntryNotFoundError) or not a valid repo id (HFValidationError)
        return None
    return folder if any(next(folder.glob(p), None) for p in WEIGHT_FILES) else None


def local_folder(weights: str | None) -> Path | None:
    """The folder `weights` names on this machine (~ expanded), or None: a hub id, a smoke model, a path
    that is not a folder."""
    from .smoke import is_smoke

    if not weights or is_smoke(weights):
        return None
    folder = Path(weights).expanduser()
    return folder if folder.is_dir() else None


# what loading a checkpoint reads from its folder: weights, configs, processor, tokenizer, chat template,
# remote code. A Trainer's other outputs (eval_results.json, trainer_state.json, training_args.bin) change
# no answer and stay out, so evaluating a folder does not invalidate its own stored answers.
READ_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".model", ".txt", ".jinja", ".py", ".tiktoken")
READ_JSON = ("config.json", "generation_config.json", "preprocessor_config.json", "processor_config.json",
             "video_preprocessor_config.json", "tokenizer_config.json", "tokenizer.json", "special_tokens_map.json",
             "added_tokens.json", "vocab.json", "chat_template.json", "adapter_config.json")
TRAINING_OUTPUTS = ("training_args", "optimizer", "scheduler", "rng_state", "scaler", "trainer_state")
_FOLDERS: dict[str, str | None] = {}  # folder -> its files' hash, taken once per process (see folder_files)


def _read_when_loading(name: str) -> bool:
    if name.startswith(".") or name.startswith(TRAINING_OUTPUTS):
        return False
    return name.endswith(READ_SUFFIXES) or name in READ_JSON or name.endswith(".index.json")


def folder_files(weights: str | None) -> str | None:
    """For weights in a local folder: `files:` and a hash of the names, sizes and modification times of the
    files loading reads (top level, symlinks followed; `_read_when_loading`), else None. A checkpoint saved
    again to the same folder (a new fine-tune) changes it, so the store never answers it with the old
    model's rows; a copied folder changes it too (its answers are computed again, nothing is lost).
    Taken once per process, when a case first asks: a run's keys, stored rows and `revisions` then agree
    with the model it loaded, even while a training job keeps saving into the folder (`forget_folders`)."""
    import hashlib

    folder = local_folder(weights)
    if folder is None:
        return None
    where = str(folder.resolve())
    if where in _FOLDERS:
        return _FOLDERS[where]
    h = hashlib.sha1()
    try:
        for p in sorted(folder.iterdir()):
            if not _read_when_loading(p.name):
                continue
            try:
                st = p.stat()
            except OSError:  # a file removed while listing
                continue
            if p.is_file():
                h.update(f"{p.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        _FOLDERS[where] = "files:" + h.hexdigest()[:16]
    except OSError:  # unreadable, or removed (a Trainer's save_total_limit): the load says why
        _FOLDERS[where] = None
    return _FOLDERS[where]


def forget_folders() -> None:
    """A new session (or a test) takes the folders' files afresh."""
    _FOLDERS.clear()


def revision(weights: str) -> str | None:
    """The hub commit of the weights as cached here (their snapshot folder's name), for results.json:
    a repo id names a moving target, the commit does not. A folder inside a hub cache snapshot gives
    its commit too; other folders, smoke models and uncached repos give None. Never downloads."""
    import re

    from .smoke import is_smoke

    if is_smoke(weights):
        return None
    folder = local_folder(weights) or (cached_snapshot(weights) if _repo_id_ok(weights) else None)
    if folder is None:
        return None
    folder = folder.resolve()
    return next((p.name for p in (folder, *folder.parents)
                 if p.parent.name == "snapshots" and re.fullmatch(r"[0-9a-f]{40}", p.name)), None)


def short_revision(rev: str) -> str:
    """A revision as reports show it: a hub commit's first 12 hex digits; a folder's `files:` hash whole."""
    return rev[:12] if len(rev) == 40 else rev


def hub_reason(repo_id: str) -> str | None:
    """Online and not cached: ask the hub whether we may download (gated / missing / unreachable)."""
    from huggingface_hub import auth_check
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        auth_check(repo_id, token=os.environ.get("HF_TOKEN") or None)
    except GatedRepoError:
        if os.environ.get("HF_TOKEN"):
            return f"{repo_id} is gated and HF_TOKEN has no access: accept its licence on huggingface.co"
        return f"{repo_id} is gated: accept its licence on huggingface.co and set HF_TOKEN"
    except RepositoryNotFoundError:
        return f"{repo_id} is not on the Hugging Face hub (or is private: set HF_TOKEN)"
    except Exception as exc:  # network down, proxy, ...: one line now, not a load that retries for 30 s
        return f"{repo_id} is not cached and the hub is unreachable ({type(exc).__name__})"
    return None


def offline_reason(repo_id: str) -> str:
    return (f"{repo_id} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set "
            f"(run `hf download {repo_id}`)")


def weights_reason(weights: str) -> str | None:
    """One line saying why `weights` (smoke name, local folder or hub id) cannot be loaded here, or None.
    A hub model counts when its cached snapshot holds weight files; online, else, the hub is asked."""
    if _here(weights):
        return None
    reason = nowhere_reason(weights)
    if reason or cached_snapshot(weights) is not None:
        return reason
    return offline_reason(weights) if offline() else hub_reason(weights)
