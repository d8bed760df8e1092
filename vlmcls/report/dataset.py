"""The report's Dataset section: one line per dataset of the run, from results.json's meta.dataset
(vlmcls.data.describe), so a re-render (`python -m vlmcls report`) says the same as the run did.

It is there for what a table of scores hides: the split scored, classes too small to measure, folders
the reader left out, names changed on their way to the prompt.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from .text import prose

SHOWN = 20  # small classes / ignored folders listed by name; the rest counted


def dataset_records(meta: Mapping[str, Any] | None) -> list[Mapping]:
    """meta.dataset of a run, or of each run a merged report was made from (merged_from[i].dataset)."""
    meta = meta or {}
    found = [meta.get("dataset")] + [m.get("dataset") for m in meta.get("merged_from") or () if isinstance(m, Mapping)]
    out: list[Mapping] = []
    for record in found:
        if isinstance(record, Mapping) and record.get("name") and record not in out:
            out.append(record)
    return out


def dataset_section(meta: Mapping[str, Any] | None, rows: Sequence[Mapping]) -> str:
    records = dataset_records(meta)
    if not records:  # a run written before meta.dataset existed
        return ""
    lines = ["## Dataset", ""]
    for d in records:
        lines.append(f"- {_line(d, rows)}")
        lines += [f"  - {prose(note)}" for note in d.get("notes") or ()]
    return "\n".join(lines) + "\n"


def _line(d: Mapping, rows: Sequence[Mapping]) -> str:
    head = f"`{prose(d['name'])}`" + (f" (read from {prose(d['read_from'])})" if d.get("read_from") not in (None, d["name"]) else "")
    parts = []
    classes, label_set = d.get("classes"), d.get("label_set")
    if classes and label_set and classes != label_set:
        parts.append(f"{classes} classes with images, of a label set of {label_set}")
    elif classes or label_set:
        parts.append(f"{classes or label_set} classes")
    parts.append(_images(d, rows))
    text = f"{head}: " + ", ".join(p for p in parts if p)
    small = d.get("small_classes") or []
    if small and len(small) == classes:  # a bundled sample, a few images a class: one clause, not a list
        text += "; every class has fewer than 5 images (a class's recall moves in steps of 1/n)"
    elif small:
        # quoted: a name may hold a comma or a parenthesis ("crane, heron (1)" read as two classes)
        named = ", ".join(f'"{prose(name)}" ({n})' for name, n in small[:SHOWN]) + (f", and {len(small) - SHOWN} more" if len(small) > SHOWN else "")
        text += f"; classes with fewer than 5 images (their recall moves in steps of 1/n): {named}"
    ignored = d.get("ignored_folders") or []
    if ignored:
        named = ", ".join(f'"{prose(f)}"' for f in ignored[:SHOWN]) + (f", and {len(ignored) - SHOWN} more" if len(ignored) > SHOWN else "")
        text += f"; folders without images, left out of the classes: {named}"
    return text


def _images(d: Mapping, rows: Sequence[Mapping]) -> str:
    """'48 images scored of 53 (1–9 per class)': what the cases scored, from their rows."""
    scored = sorted({int(r["metrics"]["n"]) for r in rows if r.get("dataset") == d["name"] and (r.get("metrics") or {}).get("n")})
    total, per_class = d.get("images"), d.get("per_class")
    text = ""
    if scored:
        text = f"{scored[0] if len(scored) == 1 else f'{scored[0]}–{scored[-1]}'} images scored"
        text += f" of the {total} in the dataset" if total is not None else ""
    elif total is not None:
        text = f"{total} images"
    if per_class:
        low, high = per_class
        text += f" ({low if low == high else f'{low}–{high}'} per class)"
    return text.strip()
