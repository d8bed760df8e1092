"""Prompt templates. `thesis` is the study's prompt, verbatim, and the default."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .vocab import LAYOUTS, STUDY_PROMPT  # noqa: F401 (LAYOUTS re-exported: the layouts render_* produce)

THESIS = (
    "This image represents an object that belongs to one of the following classes: {labels}. "
    "What is the most probable class that the object in the image belongs to, given the provided classes?"
)


@dataclass(frozen=True)
class Template:
    name: str
    text: str  # uses {labels}
    description: str


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


def get_template(name: str) -> Template:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown prompt {name!r}; choose one of: {', '.join(TEMPLATES)}") from None


def _fill(labels: Sequence[str]) -> dict[str, str]:
    numbered = "\n".join(f"{i}. {label}" for i, label in enumerate(labels, 1))
    return {"labels": ", ".join(labels), "numbered": numbered}


def render(template: Template, labels: Sequence[str]) -> str:
    """The prompt text for one candidate list, joined by ", " as in the study."""
    return template.text.format(**_fill(labels))


def render_split(template: Template, labels: Sequence[str]) -> tuple[str, str]:
    """(prefix, suffix) for the labels-first layout: the template cut right after its label list
    (and the punctuation that closes it), so the list goes before the image and the question after."""
    import re

    key = "{numbered}" if "{numbered}" in template.text else "{labels}"
    head, tail = template.text.split(key, 1)
    cut = re.match(r"[.:;\s]*", tail).end()
    return (head + key + tail[:cut]).format(**_fill(labels)).strip(), tail[cut:].strip()


def render_labels_first(labels: Sequence[str]) -> tuple[str, str]:
    """The study's sentences, split around the image."""
    return render_split(TEMPLATES[STUDY_PROMPT], labels)
