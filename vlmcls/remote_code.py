"""Does a model's hub code (`trust_remote_code`) fit the installed transformers? Read as text, never run.

A remote-code model ships its own modeling files, written against the transformers of its day. When
transformers has since removed what they use, the model fails late: at import (a module gone, e.g.
`transformers.modeling_attn_mask_utils` in 5.24) or, worse, at the first forward pass, so that every
sample becomes an error row (Phi-3-vision's 2024 code calls `DynamicCache.from_legacy_cache` and
`past_key_values.get_usable_length`, gone in the transformers vlmcls supports). Checked before the code
runs, the case is skipped with one line that says what is missing and what to do instead.

Every verdict is asked of the installed transformers (an import, an attribute), never of a version list.
"""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

# Methods of transformers' KV cache that remote code of 2024 calls and later versions removed; asked of
# the installed DynamicCache, so a method that still exists is never reported.
CACHE_METHODS = ("from_legacy_cache", "to_legacy_cache", "get_usable_length", "seen_tokens", "get_max_length")
CACHE_CLASSES = ("Cache", "DynamicCache")


def gaps(folder: str | Path) -> list[str]:
    """One line per thing the folder's Python files use that the installed transformers lacks."""
    found: list[str] = []
    for path in sorted(Path(folder).glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"), filename=path.name)
        except SyntaxError as exc:
            found.append(f"{path.name} cannot be parsed ({exc.msg}, line {exc.lineno})")
            continue
        found += [f"{path.name}: {gap}" for gap in _import_gaps(tree) + _cache_gaps(tree)]
    return found


def _import_gaps(tree: ast.AST) -> list[str]:
    """`from transformers[.module] import name` that the installed transformers cannot satisfy."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "transformers":
            out += [g for alias in node.names if (g := _import_gap(node.module, alias.name))]
    return list(dict.fromkeys(out))


def _import_gap(module: str, name: str) -> str | None:
    try:
        imported = importlib.import_module(module)
    except ImportError:
        return f"imports {name} from {module}, a module {_version()} does not have"
    if name != "*" and not hasattr(imported, name):
        return f"imports {name} from {module}, which {_version()} does not have"
    return None


def _cache_gaps(tree: ast.AST) -> list[str]:
    """Calls of the cache methods in CACHE_METHODS that the installed cache lacks. `X.method` counts when X
    is a cache class or the method is called on anything else (a `past_key_values` object), unless the
    file defines a function of that name itself."""
    own = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    used = {n.attr for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and n.attr in CACHE_METHODS and n.attr not in own}
    missing = [m for m in CACHE_METHODS if m in used and not _cache_has(m)]
    return [f"uses the KV cache's {m}, which {_version()}'s DynamicCache does not have" for m in missing]


def _cache_has(name: str) -> bool:
    from transformers.cache_utils import DynamicCache

    return hasattr(DynamicCache, name) or hasattr(DynamicCache(), name)


def _version() -> str:
    import transformers

    return f"transformers {transformers.__version__}"


def code_folder(path: str, cached_only: bool = False) -> Path | None:
    """The folder holding a model's code: a local folder, or the hub snapshot's code files (downloaded
    alone where they are not cached, a few kB and no code run; `cached_only`: never downloaded). None
    where there is no Python file to be had."""
    if Path(path).expanduser().is_dir():
        folder = Path(path).expanduser()
    else:
        from huggingface_hub import snapshot_download

        try:
            folder = Path(snapshot_download(path, allow_patterns=["*.py", "*.json"], local_files_only=cached_only))
        except Exception:  # offline and not cached, gated: the load that follows says so in its own words
            return None
    return folder if any(folder.glob("*.py")) else None


def unavailable_reason(name: str, path: str) -> str | None:
    """Why the catalog entry `name` cannot run its hub code (at `path`) here, as one line, or None."""
    folder = code_folder(path)
    found = gaps(folder) if folder is not None else []
    if not found:
        return None
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    return (f"{name}: its hub code was written for an older transformers: {found[0]}{more}. Serve it with vLLM "
            "and run it as an openai-compatible model (README: Running real models, Phi-3-vision)")
