"""Prompt templates. `thesis` is the study's prompt, verbatim, and the default.

A user's own prompt is a UTF-8 text file with `{labels}` (the candidates joined by ", ", as the
study) or `{numbered}` (one per line, numbered); `--prompt` takes a template name, else a file path,
or several of either separated by commas (a sweep: every case once per prompt).
"""
from __future__ import annotations

import hashlib
import os
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from .vocab import LAYOUTS, STUDY_PROMPT  # noqa: F401 (LAYOUTS re-exported: the layouts render_* produce)

THESIS = (
    "This image represents an object that belongs to one of the following classes: {labels}. "
    "What is the most probable class that the object in the image belongs to, given the provided classes?"
)


PLACEHOLDERS = ("labels", "numbered")


class PromptError(ValueError):
    """A --prompt value that names no template and no usable prompt file: one sentence for the user."""


@dataclass(frozen=True)
class Template:
    name: str  # what reports show: a built-in's name; a file's name and its text's hash (`mine.txt@1a2b3c4d`)
    text: str  # uses {labels} or {numbered}
    description: str
    path: str | None = None  # the prompt file it was read from (absolute); None: a built-in

    @property
    def slug(self) -> str:
        """Its part of a case id in a prompt sweep: a built-in's name; a file's stem, lower-case,
        anything but letters and digits turned into "-" (so `-k` can select it)."""
        if self.path is None:
            return self.name
        return re.sub(r"[^a-z0-9]+", "-", Path(self.path).stem.lower()).strip("-") or "prompt"


TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in (
        Template(STUDY_PROMPT, THESIS, "the study's prompt, verbatim (default)"),
        Template(
            "label-only",
            "Classify the object in this image. The possible classes are: {labels}. "
            "Answer with exactly one class name from the list and nothing else.",
            "asks for the bare label, which makes the match stage decide almost every answer",
        ),
        Template(
            "numbered",
            "This image represents an object that belongs to one of the following classes:\n{numbered}\n"
            "Answer with the class name only.",
            "one candidate per line, numbered; useful for very long candidate lists",
        ),
    )
}

QUESTION = "What is the most probable class that the object in the image belongs to, given the provided classes?"


def get_template(name: str | Template) -> Template:
    """A built-in by name (a Template, e.g. read from a prompt file, is returned as it is)."""
    if isinstance(name, Template):
        return name
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown prompt {name!r}; choose one of: {', '.join(TEMPLATES)}") from None


def text_hash(text: str) -> str:
    """8 hex digits of the text's SHA-256: a report names the exact wording a file held when it ran."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


def check_text(text: str, where: str) -> None:
    """A prompt file's text: not empty, at least one placeholder, no other `{field}` and no stray brace
    (write `{{` and `}}` for literal braces). `where` names the file in the message."""
    if not text.strip():
        raise PromptError(f"prompt file {where} is empty")
    try:
        parts = list(string.Formatter().parse(text))
    except ValueError as exc:  # "Single '}' encountered in format string", "unmatched '{' ..."
        raise PromptError(f"prompt file {where} has a stray brace ({exc}); write {{{{ or }}}} for a literal brace") from None
    fields = [(f, conv, spec) for _, f, spec, conv in parts if f is not None]
    for f, conv, spec in fields:
        if f not in PLACEHOLDERS or conv or spec:
            shown = "{" + f + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}"
            if f in PLACEHOLDERS:  # the field is right; what follows it is not
                raise PromptError(f"prompt file {where} has {shown}: write {{{f}}} plain, without a conversion or "
                                  "format spec")
            raise PromptError(f"prompt file {where} has an unknown field {shown}; use {{labels}} or {{numbered}} "
                              "(and {{ }} for literal braces)")
    if not fields:
        raise PromptError(f"prompt file {where} has no {{labels}} or {{numbered}} placeholder for the candidate list")


def load_template(path: str | os.PathLike, shown: str | None = None) -> Template:
    """A prompt file, read and checked once (UTF-8; a byte-order mark and the final line break, which
    editors add, are dropped). Its name carries its text's hash, so a report says which wording ran.
    `shown`: the file as the user wrote it, for the messages."""
    p = Path(path)
    shown = shown or str(p)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise PromptError(f"prompt file {shown} is not UTF-8 text") from None
    except OSError as exc:
        raise PromptError(f"cannot read prompt file {shown} ({exc.strerror or exc})") from None
    text = text.removesuffix("\n")  # read_text made "\r\n" a "\n" already
    check_text(text, shown)
    return Template(f"{p.name}@{text_hash(text)}", text, f"read from {p}", str(p.resolve()))


def resolve(value: str, base: str | os.PathLike | None = None) -> Template:
    """One --prompt item: a template name, else a prompt file (relative to `base`, by default the
    current directory: where pytest was started)."""
    if value in TEMPLATES:
        return TEMPLATES[value]
    path = _path(value, base)
    if not path.exists():
        raise PromptError(f"--prompt {value!r} is neither a template ({', '.join(TEMPLATES)}) nor an existing file")
    if path.is_dir():
        raise PromptError(f"--prompt {value!r} is a directory, not a prompt file")
    return load_template(path, value)


def _path(value: str, base: str | os.PathLike | None) -> Path:
    """A --prompt file as the user wrote it, relative to `base` (default: where pytest was started)."""
    return Path(base or os.getcwd()) / Path(value).expanduser()


def parse_prompts(value: str | Template | Iterable[str | Template],
                  base: str | os.PathLike | None = None) -> tuple[Template, ...]:
    """`thesis`, `mine.txt` or `thesis,label-only,mine.txt` -> the templates, each once. A value that
    names an existing file as a whole is that one file (a file name may hold a comma)."""
    if isinstance(value, Template):
        return (value,)
    if isinstance(value, str):
        whole = value not in TEMPLATES and _path(value, base).is_file()
        value = [value] if whole else [v.strip() for v in value.split(",") if v.strip()]
    chosen = tuple(dict.fromkeys(v if isinstance(v, Template) else resolve(v, base) for v in value))
    if not chosen:
        raise PromptError("--prompt needs a template name or a prompt file")
    check_slugs(chosen)
    return chosen


def check_slugs(chosen: Sequence[Template]) -> None:
    """In a sweep each prompt is a part of the case ids: two prompts must not share one."""
    seen: dict[str, Template] = {}
    for t in chosen:
        other = seen.setdefault(t.slug, t)
        if other is not t:
            raise PromptError(f"--prompt {other.name} and {t.name} would share the case-id part {t.slug!r}; "
                              "rename one of the files")


def _fill(labels: Sequence[str]) -> dict[str, str]:
    numbered = "\n".join(f"{i}. {label}" for i, label in enumerate(labels, 1))
    return {"labels": ", ".join(labels), "numbered": numbered}


def render(template: Template, labels: Sequence[str]) -> str:
    """The prompt text for one candidate list, joined by ", " as in the study."""
    return template.text.format(**_fill(labels))


def render_split(template: Template, labels: Sequence[str]) -> tuple[str, str]:
    """(prefix, suffix) for the labels-first layout: the template cut right after its label list
    (and the punctuation that closes it), so the list goes before the image and the question after."""
    key = "{numbered}" if "{numbered}" in template.text else "{labels}"
    head, tail = template.text.split(key, 1)
    cut = re.match(r"[.:;\s]*", tail).end()
    fill = _fill(labels)  # the question is formatted too: a prompt file may name the list again, or write {{ }}
    return (head + key + tail[:cut]).format(**fill).strip(), tail[cut:].format(**fill).strip()


def render_labels_first(labels: Sequence[str]) -> tuple[str, str]:
    """The study's sentences, split around the image."""
    return render_split(TEMPLATES[STUDY_PROMPT], labels)
