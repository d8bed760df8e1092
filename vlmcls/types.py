"""Plain data passed down the flow: dataset -> labels -> candidates -> prompt -> backend -> resolver -> metrics.

Everything here is a frozen dataclass or a Protocol, and importing it never imports torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, Sequence, runtime_checkable

from .vocab import STAGES, LabelMode, Stage  # noqa: F401 (STAGES re-exported for older imports)

if TYPE_CHECKING:  # pragma: no cover
    from PIL.Image import Image



@dataclass(frozen=True)
class Sample:
    """One image of the split. `image` is encoded bytes or a path; decoding happens per sample so
    that one bad file becomes an error row instead of stopping the run."""

    sample_id: str
    label: int
    image: bytes | str = field(repr=False)


@dataclass(frozen=True)
class LabelSet:
    """Class names of a dataset. `names` are the prompt labels (index = class id);
    `synonyms[i]` are all the names of the full annotation of class i (first = raw first synonym)."""

    names: tuple[str, ...]
    synonyms: tuple[tuple[str, ...], ...]
    mode: LabelMode = "unique"  # "unique" (collisions disambiguated) or the study's raw first synonyms

    def __len__(self) -> int:
        return len(self.names)

    def ambiguous_ids(self) -> frozenset[int]:
        """Class ids whose prompt label another class shares, as the resolver reads names (raw mode:
        "crane" 134/517, "maillot" 638/639, "Cardigan" 264 / "cardigan" 474)."""
        from .words import name_key

        seen: dict[object, list[int]] = {}
        for i, n in enumerate(self.names):
            seen.setdefault(name_key(n), []).append(i)
        return frozenset(i for ids in seen.values() if len(ids) > 1 for i in ids)


@dataclass(frozen=True)
class CandidateSet:
    """The N labels offered for one sample: its true class + N-1 distractors, shuffled."""

    sample_id: str
    ways: int
    true_id: int
    class_ids: tuple[int, ...]

    def labels(self, labels: LabelSet) -> tuple[str, ...]:
        return tuple(labels.names[i] for i in self.class_ids)


@dataclass(frozen=True)
class Query:
    """What a backend receives for one image: the decoded image, its candidates and the prompt."""

    sample_id: str
    image: "Image" = field(repr=False)
    class_ids: tuple[int, ...]  # candidate class ids, in prompt order
    labels: tuple[str, ...]  # candidate labels, in prompt order (same length as class_ids)
    prompt: str  # text placed after the image
    prefix: str = ""  # text placed before the image ("labels-first" layout: identical for every image)


@dataclass(frozen=True)
class Answer:
    """A backend's raw output for one query.

    Free-text backends fill `text`; direct backends (CLIP, classifiers) and constrained decoding
    fill `class_id` and `stage`. `error` marks a sample that failed (it becomes an error row)."""

    text: str | None = None
    class_id: int | None = None
    stage: Stage | None = None
    latency_s: float = 0.0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: float | None = None
    error: str | None = None
    # Backends that score every candidate (ranking mode, CLIP, classifiers): the best five class ids,
    # best first, and the softmax probability of the best one over the query's candidates.
    top5: tuple[int, ...] | None = None
    top1_prob: float | None = None
    stand_in: bool = False  # the reply came from vlmcls's stub server, not a model (kept in the store)


@dataclass(frozen=True)
class Resolution:
    """The resolver's verdict on one answer: a candidate class id, or None when unresolved."""

    class_id: int | None
    stage: Stage
    ambiguous: bool = False
    note: str = ""


@dataclass(frozen=True)
class Prediction:
    """One per-sample record: everything needed to rescore or audit a case."""

    sample_id: str
    true_id: int
    true_label: str
    candidates: tuple[str, ...]
    answer: str | None
    pred_id: int | None
    pred_label: str | None
    stage: Stage
    latency_s: float = 0.0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: float | None = None
    error: str | None = None
    ambiguous: bool = False
    fingerprint: str = ""  # of the image and label this prediction was made for (stale-store guard)
    top5: tuple[int, ...] | None = None  # as Answer.top5 (None: the backend gave no scores)
    top1_prob: float | None = None
    order: int = 0  # which of the K candidate orders (--orders) this answer was given in; 0 = the usual one
    stand_in: bool = False  # as Answer.stand_in: a rerun answered from the store still knows it was a stand-in's

    def __post_init__(self) -> None:
        if isinstance(self.top5, list):  # read back from JSON (store, samples/*.jsonl)
            object.__setattr__(self, "top5", tuple(self.top5))


@runtime_checkable
class Backend(Protocol):
    """Runs a model; nothing else. Prompting and resolution live outside the backend.

    `kind` is "text" (free-text answers, resolved afterwards) or "direct" (returns class ids).
    `answer` must return one Answer per query, in order; a per-sample failure is an Answer with
    `error` set, never an exception (an exception means the whole backend is broken). Optional: `notes`
    (one-line remarks for the case's report) and `begin_case()`, called as each case begins, so that
    counts in the notes are that case's (one backend serves all of a model's cases)."""

    kind: str

    def answer(self, queries: Sequence[Query]) -> list[Answer]: ...

    def close(self) -> None: ...
