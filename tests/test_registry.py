"""The backend registry describes each backend once, and the code agrees with it; no import cycles.

The options a backend reads are found in its source (every `settings.extra` lookup), so an option
added to a backend without a registry line -- or a registry line that no code reads -- fails here.
"""
from __future__ import annotations

import ast
import importlib
import inspect
import sys
from pathlib import Path

import pytest

import vlmcls
from vlmcls.backends import registry
from vlmcls.catalog import load_catalog
from vlmcls.labels import LabelSet

PACKAGE = Path(vlmcls.__file__).parent
# Cycles allowed until other work removes them (issue 16): none left, and no new one.
KNOWN_CYCLES: list[set[str]] = []


def write_catalog(tmp_path: Path, backend: str, options: dict) -> Path:
    body = ", ".join(f"{k} = {_toml(v)}" for k, v in options.items())
    path = tmp_path / f"{backend}.toml"
    path.write_text(f'[models.m]\nbackend = "{backend}"\nweights = "smoke:x"\noptions = {{ {body} }}\n')
    return path


def _toml(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(map(_toml, value)) + "]"
    return str(value)


# ------------------------------------------------------------------ the registry and the backends
def test_every_catalog_backend_is_registered():
    for entry in load_catalog().values():
        assert entry.backend in registry.BACKENDS, entry.name
        assert entry.info is registry.info(entry.backend)


@pytest.mark.parametrize("name", list(registry.BACKENDS))
def test_every_registered_module_loads_without_torch_and_has_the_module_api(name):
    info = registry.info(name)
    module = importlib.import_module(info.module)
    for fn in ("requirements", "load"):
        assert list(inspect.signature(getattr(module, fn)).parameters) == ["entry", "settings", "labels"], fn
    assert info.options == tuple(dict.fromkeys(info.options)), "an option listed twice"


def extra_keys(source: str) -> set[str]:
    """The string keys looked up in anything named `...extra`: .get("k"), ["k"], "k" in extra."""
    def is_extra(node) -> bool:
        return ast.unparse(node).endswith("extra")

    def const(node) -> str | None:
        return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None

    keys: set[str | None] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                and is_extra(node.func.value) and node.args:
            keys.add(const(node.args[0]))
        elif isinstance(node, ast.Subscript) and is_extra(node.value):
            keys.add(const(node.slice))
        elif isinstance(node, ast.Compare) and any(isinstance(op, ast.In) for op in node.ops) \
                and any(is_extra(c) for c in node.comparators):
            keys.add(const(node.left))
    return keys - {None}


def backend_source(module: str) -> str:
    """The backend module's source and that of the helper modules in vlmcls.backends it imports, directly
    or through another helper (they may read settings.extra for it); other backends and the registry aside."""
    modules = _modules()
    backend_modules = {b.module for b in registry.BACKENDS.values()} | {"vlmcls.backends", "vlmcls.backends.registry"}
    seen, todo = {module}, [module]
    while todo:
        for m in imports_of(todo.pop(), modules):
            if m.startswith("vlmcls.backends.") and m not in backend_modules and m not in seen:
                seen.add(m)
                todo.append(m)
    return "\n".join(inspect.getsource(importlib.import_module(m)) for m in sorted(seen))


@pytest.mark.parametrize("module", sorted({b.module for b in registry.BACKENDS.values()}))
def test_registry_options_are_exactly_what_the_backend_reads(module):
    read = extra_keys(backend_source(module))
    for info in (b for b in registry.BACKENDS.values() if b.module == module):
        assert set(info.options) == read, f"{info.name}: registry {sorted(info.options)}, code reads {sorted(read)}"


def test_extra_keys_sees_every_lookup_form():
    src = 'a = s.extra.get("x", 1)\nb = self.settings.extra["y"]\nif "z" in extra: pass\nc = other.get("no")\n'
    assert extra_keys(src) == {"x", "y", "z"}


# Values each option is happy with, to load every backend's options through a real catalog file.
SAMPLE_VALUES = {"min_pixels": 3136, "max_pixels": 12544, "rank_chunk": 4, "static_cache": True, "prefetch": 0, "prefetch_process": False,
                 "attn_implementation": "eager", "choice_field": "guided_choice",
                 "greedy": False, "max_retry_after_s": 5, "server_cooldown_s": 1.0, "templates": "ensemble",
                 "workers": 1, "image_backend": "pil", "image_path": "processor", "styles": ["{label}!"],
                 "delay_s": 0.0, "crash": False, "load_log": "x.log"}


@pytest.mark.parametrize("name", list(registry.BACKENDS))
def test_the_catalog_accepts_every_registry_option_of_each_backend(tmp_path, name):
    options = {k: SAMPLE_VALUES[k] for k in registry.info(name).options}
    entry = load_catalog(write_catalog(tmp_path, name, options))["m"]
    assert dict(entry.options) == options
    assert entry.defaults()["extra"] == options  # they reach the backend through settings.extra
    with pytest.raises(ValueError, match=r"unknown options \['not_an_option'\]"):
        load_catalog(write_catalog(tmp_path, name, {**options, "not_an_option": 1}))


def test_echo_honours_its_options_from_the_catalog(tmp_path):
    """Construct one backend from its registry options, through the catalog, and see them used."""
    from vlmcls import backends
    from vlmcls.settings import resolve_settings
    from vlmcls.types import Query

    log = tmp_path / "loads.log"
    entry = load_catalog(write_catalog(tmp_path, "echo", {"styles": ["<{label}>"], "load_log": str(log)}))["m"]
    settings = resolve_settings({}, entry.defaults())
    labels = LabelSet(names=("cat", "dog"), synonyms=(("cat",), ("dog",)))
    model = backends.load(entry, settings, labels)
    assert backends.requirements(entry, settings, labels) is None
    (answer,) = model.answer([Query("s1", None, (0, 1), ("cat", "dog"), "which?")])
    assert answer.text in ("<cat>", "<dog>")
    assert log.read_text().startswith("m ")


def test_the_registry_decides_keys_and_tags():
    """Direct scorers drop generation settings, only a served model keeps its URL, quantization tags local VLMs."""
    assert set(registry.GENERATION) <= set(registry.info("clip").key_drops())
    assert "base_url" not in registry.info("openai-compatible").key_drops()
    assert all("base_url" in b.key_drops() for b in registry.BACKENDS.values() if not b.url_in_key)
    assert [b.name for b in registry.BACKENDS.values() if b.quantized] == ["hf-vlm"]
    with pytest.raises(ValueError, match="unknown backend 'nope'; known: "):
        registry.info("nope")
    assert registry.find("nope") is None


def test_cases_of_one_model_share_an_xdist_group():
    entries = load_catalog().values()
    assert len({e.xdist_group for e in entries}) == len(entries)  # every shipped backend groups by model


# ------------------------------------------------------------------ imports
def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


def _type_checking(node: ast.If) -> bool:
    return "TYPE_CHECKING" in ast.unparse(node.test)


def imports_of(name: str, modules: dict) -> set[str]:
    """vlmcls modules `name` imports, at module level or inside functions (they run too); imports
    under `if TYPE_CHECKING:` never run and are left out."""
    path, is_pkg = modules[name]
    package = name if is_pkg else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found.update(f"{module}.{a.name}" if f"{module}.{a.name}" in modules else module for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    # importing a.b.c runs a.b's __init__ first: an edge to each parent package the importer is outside of
    parents = {m.rsplit(".", i)[0] for m in found for i in range(1, m.count(".") + 1)}
    outside = {p for p in parents if not name.startswith(p + ".")}
    return {m for m in found | outside if m in modules and m != name}


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while not component or v not in component:
                component.add(stack.pop())
            if len(component) > 1:
                out.append(component)

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 5000))
    try:
        for v in graph:
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return out


def test_cycles_finds_a_cycle_and_nothing_else():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert cycles({"a": {"b"}, "b": set()}) == []
    modules = _modules()
    graph = {m: imports_of(m, modules) for m in modules}
    graph["vlmcls.backends"] = graph["vlmcls.backends"] | {"vlmcls.catalog"}  # what the registry ended
    assert {"vlmcls.catalog", "vlmcls.backends"} in cycles(graph)


def test_no_module_imports_in_a_cycle():
    modules = _modules()
    graph = {m: imports_of(m, modules) for m in modules}
    assert {"vlmcls.backends.registry", "vlmcls.backends"} <= graph["vlmcls.catalog"]  # the walk sees real imports
    assert "vlmcls.catalog" not in graph["vlmcls.backends"]
    assert graph["vlmcls.backends.registry"] == set()  # anyone may read it
    new = [c for c in cycles(graph) if c not in KNOWN_CYCLES]
    assert not new, f"modules importing each other: {new}"
