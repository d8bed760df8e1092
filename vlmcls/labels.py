"""Class names: the study's first-synonym simplification and a deterministic collision rule.

The rule (mode "unique", the default): every class takes the first synonym of its annotation.
Names that then collide, as the resolver reads them (case, accents and punctuation ignored:
vlmcls.words), are settled within their group:
  1. a class whose annotation has another synonym that no other class uses takes the first such
     synonym ("maillot, tank suit" 639 -> "tank suit"; "Cardigan, Cardigan Welsh corgi" 264 ->
     "Cardigan Welsh corgi");
  2. if one class of the group is then left with the bare name, it keeps it (638 "maillot",
     474 "cardigan");
  3. classes still colliding get a qualifier in parentheses: a curated one when the dataset is
     ImageNet-1k (134 "crane (bird)", 517 "crane (machine)" -- both annotations are just "crane"),
     otherwise "(class <id>)".
Mode "raw" (formerly "thesis") keeps the raw first synonyms, collisions included, for a faithful reproduction.

A comma separates synonyms in annotations (ImageNet's, a ClassLabel's) only: a folder name is one
name as the user typed it ("salt, pepper" is one class, not "salt" with the synonym "pepper"), since
nothing in a folder tree says a comma was meant as WordNet's separator (`synonyms=False`).
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import re
from pathlib import Path
from typing import Mapping, Sequence

from .types import LabelSet
from .vocab import LABEL_MODES, STUDY_LABELS, LabelMode, canonical
from .words import name_key

# WordNet glosses: 134 "large long-necked wading bird", 517 "lifts and moves heavy objects".
IMAGENET_QUALIFIERS: Mapping[int, str] = {134: "bird", 517: "machine"}


def split_synonyms(annotation: str) -> tuple[str, ...]:
    """'grey whale, gray whale, Eschrichtius gibbosus' -> ('grey whale', 'gray whale', ...)."""
    return tuple(s.strip() for s in annotation.split(",") if s.strip())


ORDINAL = re.compile(r"^\d+[._\-\s]+(?=\S)")  # CUB's "001.", an export's "12_", "3 - "


def _folder_names(annotation: str) -> tuple[str, ...]:
    """A folder name is one name; one led by an ordinal ("001.Black_footed_Albatross") also answers to the
    name without it, which is what a model names."""
    name = annotation.strip()
    bare = ORDINAL.sub("", name)
    return (name, bare) if bare != name else ((name,) if name else ())


def _groups(names: Sequence[str]) -> list[list[int]]:
    # keyed as the resolver reads names: ones it cannot tell apart collide here too
    by_key: dict[tuple[str, ...] | str, list[int]] = {}
    for i, name in enumerate(names):
        by_key.setdefault(name_key(name), []).append(i)
    return [ids for ids in by_key.values() if len(ids) > 1]


def _settle(group: list[int], names: list[str], synonyms, qualifiers: Mapping[int, str]) -> None:
    used = {name_key(n) for n in names}
    left = []
    for i in group:
        alt = next((s for s in synonyms[i][1:] if name_key(s) not in used), None)
        if alt is None:
            left.append(i)
        else:
            names[i] = alt
            used.add(name_key(alt))
    if len(left) > 1:
        for i in left:
            names[i] = f"{names[i]} ({qualifiers.get(i, f'class {i}')})"


def simplify(annotations: Sequence[str], mode: LabelMode = "unique",
             qualifiers: Mapping[int, str] | None = None, synonyms: bool = True,
             display: Mapping[int, str] | None = None) -> LabelSet:
    """Full annotations (index = class id) -> the LabelSet used in prompts; `synonyms=False`: each
    annotation is one name, commas included (a folder name). `display` (--label-names): class id -> the
    name the prompt shows, put first; the names as given stay synonyms (an answer naming one still resolves)."""
    mode = canonical("labels", mode)  # "thesis", the older name of "raw"
    if mode not in LABEL_MODES:
        raise ValueError(f"unknown labels mode {mode!r}; choose {' or '.join(map(repr, LABEL_MODES))}")
    split = split_synonyms if synonyms else _folder_names
    synonyms = tuple(split(a) or (a.strip() or f"class {i}",) for i, a in enumerate(annotations))
    if display:
        synonyms = tuple((display[i], *(s for s in syn if name_key(s) != name_key(display[i]))) if i in display else syn
                         for i, syn in enumerate(synonyms))
    names = [s[0] for s in synonyms]
    if mode == "unique":
        for group in _groups(names):
            _settle(group, names, synonyms, qualifiers or {})
        if _groups(names):  # only possible if a qualifier itself collides: fail loudly, never guess
            raise ValueError(f"labels still collide after disambiguation: {_groups(names)}")
    return LabelSet(names=tuple(names), synonyms=synonyms, mode=mode)


def _timm_info() -> Path:
    spec = importlib.util.find_spec("timm")  # read timm's data files without importing timm (torch)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("ImageNet class names come from timm: pip install timm")
    return Path(spec.submodule_search_locations[0]) / "data" / "_info"


@functools.lru_cache(maxsize=1)
def imagenet_synsets() -> tuple[str, ...]:
    """The 1,000 ImageNet-1k synset ids in class-index order (n01440764 = 0 = tench)."""
    return tuple((_timm_info() / "imagenet_synsets.txt").read_text(encoding="utf-8").split())


@functools.lru_cache(maxsize=1)
def imagenet_annotations() -> tuple[str, ...]:
    """The 1,000 full annotations in class-index order, as the hub dataset's ClassLabel has them
    ("tench, Tinca tinca"). Read from timm's files without importing timm, which imports torch."""
    text = (_timm_info() / "imagenet_synset_to_lemma.txt").read_text(encoding="utf-8")
    lemmas = dict(line.split("\t", 1) for line in text.splitlines() if "\t" in line)
    return tuple(lemmas[s].strip() for s in imagenet_synsets())


def is_imagenet(annotations: Sequence[str]) -> bool:
    return tuple(annotations) == imagenet_annotations()


def labelset(annotations: Sequence[str], mode: LabelMode = "unique", synonyms: bool = True,
             display: Mapping[int, str] | None = None) -> LabelSet:
    """LabelSet for any dataset; ImageNet-1k gets its curated qualifiers. `synonyms=False` for folder
    names, where a comma is part of the name. `display`: --label-names (read_label_names)."""
    qualifiers = IMAGENET_QUALIFIERS if len(annotations) == 1000 and is_imagenet(annotations) else {}
    return simplify(annotations, mode, qualifiers, synonyms, display)


class LabelNamesError(ValueError):
    """A --label-names file that cannot be read or does not fit the dataset: one line that says why."""


def read_label_names(path: str | Path, annotations: Sequence[str], synonyms: bool = True) -> dict[int, str]:
    """--label-names FILE -> {class id: the name the prompt shows}. A `.json` list, or a text file with one
    name per line, names every class in class-id order; a `.json` object or a `.csv` of `class,name` rows
    (a header row `class,name` is optional) renames some: a class is its name as the dataset gives it (a
    folder's name, a ClassLabel name; ImageNet's "tench, Tinca tinca" or its first synonym "tench") or its id."""
    import csv
    import io
    import json

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelNamesError(f"--label-names {path}: cannot read it ({exc.__class__.__name__}: "
                              f"{getattr(exc, 'strerror', None) or exc})") from None
    n = len(annotations)
    if path.suffix.lower() == ".json":
        try:
            given = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LabelNamesError(f"--label-names {path}: not JSON ({exc.msg}, line {exc.lineno})") from None
        if isinstance(given, dict):
            return _named(path, list(given.items()), annotations, synonyms)
        if not isinstance(given, list):
            raise LabelNamesError(f"--label-names {path}: a JSON list of names (in class-id order) or an object "
                                  "{class: name}, not " + type(given).__name__)
        return _in_order(path, given, n, "names")
    if path.suffix.lower() == ".csv":
        rows = [r for r in csv.reader(io.StringIO(text)) if any(c.strip() for c in r)]
        if rows and [c.strip().lower() for c in rows[0]] == ["class", "name"]:
            rows = rows[1:]
        bad = next((k for k, r in enumerate(rows, 1) if len(r) != 2), None)
        if bad is not None:
            raise LabelNamesError(f"--label-names {path}: row {bad} has {len(rows[bad - 1])} columns; each row is "
                                  "class,name (quote a name that holds a comma)")
        return _named(path, [(r[0], r[1]) for r in rows], annotations, synonyms)
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return _in_order(path, lines, n, "lines")


def _in_order(path: Path, names: list, n: int, what: str) -> dict[int, str]:
    if len(names) != n:
        raise LabelNamesError(f"--label-names {path} has {len(names)} {what}; the dataset has {n} classes "
                              f"(one name per class, in class-id order; a .json object or a .csv renames some)")
    return {i: _name(path, v, f"{what[:-1]} {i + 1}") for i, v in enumerate(names)}


def _name(path: Path, value, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise LabelNamesError(f"--label-names {path}: {where} is {'empty' if isinstance(value, str) else repr(value)}; "
                              "each class needs a name")
    return value.strip()


def _named(path: Path, pairs: list[tuple], annotations: Sequence[str], synonyms: bool) -> dict[int, str]:
    """{class (name as given, first synonym, or id): name} -> {class id: name}; a class that names none, or
    several, of the dataset's classes is an error that lists them."""
    ids: dict[str, list[int]] = {}
    for i, a in enumerate(annotations):
        for key in dict.fromkeys((a.strip(), *(split_synonyms(a)[:1] if synonyms else ()))):
            ids.setdefault(key, []).append(i)
    out: dict[int, str] = {}
    unknown, twice = [], []
    for key, value in pairs:
        key = str(key).strip()
        hit = [int(key)] if key.isdigit() and int(key) < len(annotations) and key not in ids else ids.get(key, [])
        if len(hit) != 1:
            (unknown if not hit else twice).append(key if not hit else f"{key!r} (classes {', '.join(map(str, hit))})")
            continue
        out[hit[0]] = _name(path, value, f"the name for {key!r}")
    if unknown:
        example = annotations[0].strip() if annotations else ""
        raise LabelNamesError(f"--label-names {path}: {len(unknown)} not a class of the dataset: "
                              f"{', '.join(map(repr, unknown[:5]))}{' ...' if len(unknown) > 5 else ''} (a class is "
                              f"its name as the dataset gives it, e.g. {example!r}, or its id 0-{len(annotations) - 1})")
    if twice:
        raise LabelNamesError(f"--label-names {path}: names more than one class: {', '.join(twice[:5])}; use the class id")
    return out


def names_digest(names: Sequence[str]) -> str:
    """A short hash of the class names in id order: an own dataset's store key holds it, so renaming a class
    folder (a new candidate text, so a new prompt) asks the model again instead of reusing the old answers."""
    return hashlib.sha1("\n".join(names).encode()).hexdigest()[:16]


def renamed(annotations: Sequence[str], labels: LabelSet) -> list[tuple[int, str, str]]:
    """(class id, name as given, prompt label) for every class whose prompt label differs from its
    name as given: a first synonym taken, a collision settled. None for ImageNet-1k, whose first-synonym
    rule the README documents (all 1,000 would differ)."""
    if len(annotations) == 1000 and is_imagenet(annotations):
        return []
    return [(i, a, n) for i, (a, n) in enumerate(zip(annotations, labels.names)) if a.strip() != n]


def imagenet_labelset(mode: LabelMode = "unique") -> LabelSet:
    return labelset(imagenet_annotations(), mode)


def imagenet_names() -> tuple[str, ...]:
    """The 1,000 raw first synonyms in class-index order (the study's labels: "crane" twice)."""
    return imagenet_labelset(STUDY_LABELS).names
