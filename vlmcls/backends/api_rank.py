"""Ranking mode for OpenAI(-compatible) APIs: the candidates ranked by the first reply token's distribution.

An API gives no score for a whole label, only (with `logprobs=True, top_logprobs=20`, the API's
maximum) the log-probabilities of the 20 likeliest tokens at each position of its reply. The first
position's distribution ranks the candidates when the reply is a bare label: a token "starts" a
candidate when the label, lower-cased, begins with the token, lower-cased and without its leading
spaces ("Gold", " gold" and "gold" all start "goldfish"; their probabilities add up). We have no
tokenizer, so a token is taken for the start of every candidate it starts.

Rules, per answer (an answer that breaks one is not ranked: it goes to the case's resolver as text --
resolved as the study resolves text (match, then NLI) -- and the backend's notes count how many and
why; never a ranking that may be wrong):
1. The reply carries logprobs for its first token ("no logprobs"). When no answer of a model has
   them (the model does not provide them), ranking is not available for it and the case is skipped
   with that reason (errors.Unavailable); so does a server that refuses the `logprobs` parameter (HTTP 400: reasoning models).
2. The reply starts with a candidate label, whole words ("Goldfish." does; "The most probable class
   is goldfish" does not: its first token says how sentences start, not which class). The study's
   prompt invites sentences: `--prompt label-only` asks for the bare label.
3. A candidate's score is the probability of the tokens that start it alone. A token that starts
   several candidates ("great": great white shark, great grey owl) cannot be split between them, so
   the top candidate must stay first even if any other candidate got all the shared tokens it
   starts; otherwise the answer is not ranked ("first token shared").
The stored prediction is the top candidate (stage "rank"). top5 lists the candidates in score order
as far as each position is just as certain, and only candidates with a score: a candidate whose
start is not among the 20 tokens ranks below every listed one (each of its first tokens is less
likely than the 20th), but their order among themselves is unknown, so an answer may list fewer than
five (top-5 accuracy then counts the rest as misses). top1_prob is the top candidate's score over
the probability of all tokens that start some candidate (those outside the 20 are left out: each is
below the 20th); tokens it shares count for no one, so with such tokens it is a lower bound.

Pure Python, no SDK: the protocol turns a response into a FirstToken, the backend calls `rank()`.
"""
from __future__ import annotations

import math
import re
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

TOP_LOGPROBS = 20  # the API's maximum
MAX_TOKENS = 16  # a bare label fits; the first token ranks, the rest is only read if it does not
TOP_K = 5

NO_LOGPROBS = "no logprobs"
NOT_A_LABEL = "reply does not start with a candidate label"
SHARED = "first token shared by several candidates"


@dataclass(frozen=True)
class FirstToken:
    """The reply's first token and the likeliest tokens at its position, as (token, logprob)."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class Ranking:
    """`top5` (class ids) and `top1_prob` when the answer is ranked; else `reason` (and an example)."""

    top5: tuple[int, ...] = ()
    top1_prob: float | None = None
    reason: str = ""
    example: str = ""


def first_token(choice: Any) -> FirstToken | None:
    """The first token of an SDK response's choice (`choice.logprobs.content[0]`); None without logprobs."""
    content = getattr(getattr(choice, "logprobs", None), "content", None)
    if not content:
        return None
    head = content[0]
    try:
        top = tuple((str(t.token), float(t.logprob)) for t in (head.top_logprobs or ()))
        return FirstToken(str(head.token), float(head.logprob), top)
    except (AttributeError, TypeError, ValueError):  # a server's odd shape: as if it sent none
        return None


def _norm(text: str) -> str:
    return text.lstrip().casefold()


def rank(text: str, first: FirstToken | None, labels: Sequence[str], class_ids: Sequence[int],
         k: int = TOP_K) -> Ranking:
    """The answer's ranking under the module's rules, or the reason it has none."""
    if first is None:
        return Ranking(reason=NO_LOGPROBS)
    names = [label.strip().casefold() for label in labels]
    if not any(re.match(re.escape(n) + r"(?!\w)", _norm(text)) for n in names if n):
        return Ranking(reason=NOT_A_LABEL, example=repr(text.strip()[:40]))
    sure, shared, total = _scores(first, names)
    if total <= 0:  # the label is there, its first token is not (a token running past the label: "ox,")
        return Ranking(reason=NOT_A_LABEL, example=repr(first.token))
    order = sorted(range(len(names)), key=lambda i: (-sure[names[i]], i))
    listed = _certain(order, names, sure, shared, k)
    if not listed:
        return Ranking(reason=SHARED, example=_shared_example(first, labels, names))
    return Ranking(tuple(class_ids[i] for i in listed), sure[names[listed[0]]] / total)


def _scores(first: FirstToken, names: Sequence[str]) -> tuple[dict[str, float], dict[str, float], float]:
    """(per label: probability of the tokens starting it alone; of the tokens it shares; all tokens
    starting some candidate). The generated token is counted once, even when also in the top list."""
    probs: Counter[str] = Counter()
    for token, logprob in dict(((first.token, first.logprob), *first.top)).items():
        if _norm(token):
            probs[_norm(token)] += math.exp(logprob)
    sure, shared, total = dict.fromkeys(names, 0.0), dict.fromkeys(names, 0.0), 0.0
    for token, p in probs.items():
        hit = [n for n in sure if n.startswith(token)]  # distinct labels: a label shown twice is one
        total += p if hit else 0.0
        for n in hit:
            (sure if len(hit) == 1 else shared)[n] += p
    return sure, shared, total


def _certain(order: Sequence[int], names: Sequence[str], sure: dict[str, float], shared: dict[str, float],
             k: int) -> list[int]:
    """The leading positions of `order` that no later candidate could take with its shared tokens
    (ties keep the prompt order, as the local ranking does)."""
    out: list[int] = []
    for j, i in enumerate(order[:k]):
        score = sure[names[i]]
        if score <= 0 or any(shared[names[d]] > 0 and sure[names[d]] + shared[names[d]] >= score
                             for d in order[j + 1:]):
            break
        out.append(i)
    return out


def _shared_example(first: FirstToken, labels: Sequence[str], names: Sequence[str]) -> str:
    """The likeliest token that starts several candidates, and which."""
    for token, _ in sorted(((first.token, first.logprob), *first.top), key=lambda t: -t[1]):
        start = _norm(token)
        hit = list(dict.fromkeys(label for label, n in zip(labels, names) if start and n.startswith(start)))
        if len(hit) > 1:
            return f"{token.strip()!r}: {', '.join(hit[:3])}" + (", ..." if len(hit) > 3 else "")
    return ""


class Tally:
    """Why answers were not ranked, per candidate count, in one case (the backend starts a new tally
    when a case begins: the cases of one model, a prompt sweep's too, share it); answered from several threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[int, Counter[str]] = {}
        self._examples: dict[str, str] = {}

    def add(self, ways: int, ranking: Ranking) -> None:
        with self._lock:
            self._counts.setdefault(ways, Counter())[ranking.reason or "ranked"] += 1
            if ranking.example:
                self._examples.setdefault(ranking.reason, ranking.example)

    def unavailable(self) -> bool:
        """Answers came back, and none with logprobs: the model does not provide them."""
        with self._lock:
            replies = sum(sum(c.values()) for c in self._counts.values())
            return replies > 0 and replies == sum(c[NO_LOGPROBS] for c in self._counts.values())

    def notes(self) -> list[str]:
        with self._lock:
            return [self._line(ways, counts) for ways, counts in sorted(self._counts.items())]

    def _line(self, ways: int, counts: Counter[str]) -> str:
        n = sum(counts.values())
        line = (f"rank ({ways}-way): {counts['ranked']} of {n} answers ranked "
                f"by the first token's top-{TOP_LOGPROBS} log-probabilities")
        why = [f"{counts[r]} {r}" + (f" (e.g. {self._examples[r]})" if r in self._examples else "")
               for r in (SHARED, NOT_A_LABEL, NO_LOGPROBS) if counts[r]]
        if why:
            line += f"; {n - counts['ranked']} not ranked, resolved from their text instead: " + "; ".join(why)
        if counts[NOT_A_LABEL]:
            line += " (--prompt label-only asks for the bare label)"
        return line
