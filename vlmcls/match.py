"""The match stage's machinery: which candidates a free-text answer names, and which of them its
structure points at.

It reads the answer's structure when several candidates appear (emphasis, cue words, first
sentence) instead of trusting list order, and never lets a negated mention win. It scans the
answer's n-grams against a phrase index built once per LabelSet, so its cost hardly depends on the
number of candidates. Pure Python: no model, no torch.
"""
from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Callable, Sequence

from vlmcls.types import LabelSet
from vlmcls.words import TOKEN as _TOKEN
from vlmcls.words import norm_token as _norm_token
from vlmcls.words import phrase

# Ranks of a phrase for a class, best first: the prompt label is what the model was shown.
NAME, NAME_PLURAL, SYNONYM, SYNONYM_PLURAL = range(4)

_ARTICLES = frozenset({"a", "an", "the"})
# Words allowed between a cue and the label: "is most likely a tabby cat".
_FILLERS = _ARTICLES | {"most", "likely", "probably", "definitely", "clearly", "certainly",
                        "therefore", "thus", "indeed", "actually", "just", "simply"}
_Cues = dict[str, tuple[tuple[str, ...], ...]]


def _by_last_word(*cues: tuple[str, ...]) -> _Cues:
    """Cue phrases grouped by their last word, so a check reads one small group, not the table."""
    table: dict[str, list[tuple[str, ...]]] = {}
    for cue in cues:
        table.setdefault(cue[-1], []).append(cue)
    return {w: tuple(c) for w, c in table.items()}


_STRONG_CUES = _by_last_word(
    ("answer",), ("answer", "is"), ("answer", "would", "be"), ("class",), ("class", "is"),
    ("class", "would", "be"), ("category",), ("category", "is"), ("label",), ("label", "is"),
    ("prediction",), ("prediction", "is"), ("belongs", "to"), ("belong", "to"), ("belongs", "to", "is"),
)
_WEAK_CUES = _by_last_word(
    ("is",), ("be",), ("it's",), ("as",), ("say",), ("shows",), ("depicts",), ("called",), ("named",),
    ("choose",), ("pick",), ("select",), ("guess",), ("image", "of"), ("photo", "of"), ("picture", "of"),
)
_NEGATIONS = _by_last_word(
    ("not",), ("no",), ("nor",), ("neither",), ("never",), ("isnt",), ("arent",), ("doesnt",),
    ("dont",), ("didnt",), ("wasnt",), ("werent",), ("cannot",), ("cant",), ("wont",), ("wouldnt",),
    ("couldnt",), ("shouldnt",), ("hasnt",), ("havent",), ("unlikely",), ("unlike",), ("except",),
    ("without",), ("rather", "than"), ("instead", "of"), ("other", "than"),
)
# Words skipped only when looking for a negation: "does not look like a X", "cannot be a X", "does not
# show a X" negate X.
_NEGATION_BRIDGE = frozenset({"like", "look", "looks", "resemble", "resembles", "seem", "seems",
                              "appear", "appears", "to", "be", "show", "shows", "depict", "depicts",
                              "contain", "contains", "think", "believe"})
# ... and these only after "think" or "believe" ("I don't think it's a X"): alone they would let a "No" or a
# question reach the label ("No it is a X", "Isn't it a X?" both say X)
_OPINION_BRIDGE = frozenset({"it", "is", "it's", "this", "that", "thats"})
_OPINION = frozenset({"think", "believe"})
_EMPHASIS = re.compile(
    r"\*\*[^*\n]+\*\*|__[^_\n]+__|(?<![\w*])\*[^*\n]+\*(?!\w)|(?<!\w)_[^_\n]+_(?!\w)|`[^`\n]+`"
    r"|\"[^\"\n]+\"|“[^”\n]+”|‘[^’\n]+’|(?<!\w)'[^'\n]+'(?!\w)|^#{1,6}[ \t].*$",
    re.MULTILINE,
)
_SENTENCE_END = re.compile(r"[.!?](?=\s)|\n")
_CLAUSE_BREAK = re.compile(r"[.,;:!?\n—–…]")  # a dash or an ellipsis ends a clause as a comma does
_LINE = re.compile(r"^[^\S\n]*\S", re.MULTILINE)  # the start of a non-blank line


# ---------------------------------------------------------------- normalisation

def _word(token: str) -> str:
    """An answer's word as the phrase index spells it, but "it's" kept apart from the possessive "its"
    ("known for its orange colour" does not say the answer is orange)."""
    return "it's" if token.casefold().replace("’", "'") == "it's" else _norm_token(token)


def _plurals(words: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Simple English plurals of the last word (s / es / y -> ies); irregular ones are not guessed."""
    *head, last = words
    forms = [last + "s", last + "es"]
    if len(last) > 1 and last.endswith("y") and last[-2] not in "aeiou":
        forms.append(last[:-1] + "ies")
    return [(*head, form) for form in forms]


# ---------------------------------------------------------------- phrase index

@dataclass(frozen=True)
class PhraseIndex:
    """Every name of every class as normalised words, with plural variants, for n-gram lookup."""

    phrases: dict[tuple[str, ...], dict[int, int]]  # words -> {class id: best rank}
    lengths: dict[str, tuple[int, ...]]  # first word -> phrase lengths that start with it
    names: tuple[tuple[str, ...], ...]  # normalised prompt label per class (constrained mode)
    # phrases whose own name has a clause break between its words ("R.V."): only these match across one
    broken: frozenset[tuple[str, ...]] = frozenset()


@lru_cache(maxsize=16)
def phrase_index(labels: LabelSet) -> PhraseIndex:
    """Built once per LabelSet (frozen, hence hashable): ~2k names -> ~6k phrases."""
    phrases: dict[tuple[str, ...], dict[int, int]] = {}
    broken: set[tuple[str, ...]] = set()
    for class_id, (name, synonyms) in enumerate(zip(labels.names, labels.synonyms)):
        for text, rank in [(name, NAME)] + [(s, SYNONYM) for s in synonyms]:
            words = phrase(text)
            if words:
                variants = [(words, rank)] + [(p, rank + 1) for p in _plurals(words)]
                for variant, r in variants:
                    ranks = phrases.setdefault(variant, {})
                    ranks[class_id] = min(r, ranks.get(class_id, r))
                if _breaks(text):
                    broken.update(v for v, _ in variants)
    lengths: dict[str, set[int]] = {}
    for words in phrases:
        lengths.setdefault(words[0], set()).add(len(words))
    return PhraseIndex(phrases, {w: tuple(sorted(n)) for w, n in lengths.items()},
                       tuple(strip_article(phrase(n)) for n in labels.names), frozenset(broken))


def _breaks(text: str) -> bool:
    """A clause break between two of the name's words ("R.V.", "crane, bird")."""
    found = list(_TOKEN.finditer(text))
    return any(_CLAUSE_BREAK.search(text, a.end(), b.start()) for a, b in zip(found, found[1:]))


def strip_article(words: tuple[str, ...]) -> tuple[str, ...]:
    return words[1:] if len(words) > 1 and words[0] in _ARTICLES else words


# ---------------------------------------------------------------- one answer, parsed

@dataclass(frozen=True)
class _Mention:
    start: int  # word index
    end: int  # exclusive
    ids: tuple[int, ...]  # candidate classes named here (several only for shared names)
    synonym: bool  # found through a synonym, not the prompt label


class _Parsed:
    """An answer's words with their character spans; emphasis and sentences are computed on demand."""

    def __init__(self, text: str):
        self.text = text
        found = list(_TOKEN.finditer(text))
        self.words = [_word(m.group()) for m in found]
        self.starts = [m.start() for m in found]
        self.ends = [m.end() for m in found]

    @cached_property
    def emphasis(self) -> list[tuple[int, int]]:
        return [m.span() for m in _EMPHASIS.finditer(self.text)]

    @cached_property
    def sentence_ends(self) -> list[int]:
        return [m.start() for m in _SENTENCE_END.finditer(self.text)]

    def span(self, m: _Mention) -> tuple[int, int]:
        return self.starts[m.start], self.ends[m.end - 1]

    def sentence(self, m: _Mention) -> int:
        return bisect.bisect_left(self.sentence_ends, self.starts[m.start])

    @cached_property
    def line_starts(self) -> list[int]:
        return [m.start() for m in _LINE.finditer(self.text)]  # non-blank lines only

    def line(self, m: _Mention) -> int:
        """The mention's line, counting non-blank lines (a loose list's blank lines do not part its items)."""
        return bisect.bisect_right(self.line_starts, self.starts[m.start]) - 1

    def bare(self, m: _Mention) -> bool:
        """The mention is all its line says, bar list marks, a number and an article ("2. a **tabby**")."""
        end = self.text.find("\n", self.ends[m.end - 1])
        first = bisect.bisect_left(self.starts, self.line_starts[self.line(m)])
        last = bisect.bisect_left(self.starts, len(self.text) if end < 0 else end)
        return last == m.end and all(w.isdigit() or w in _ARTICLES for w in self.words[first:m.start])


def _spans(p: _Parsed, index: PhraseIndex) -> list[tuple[int, int, dict[int, int]]]:
    """All label phrases in the answer, minus those inside a longer one ("tiger" in "tiger shark").

    Every class of the LabelSet counts here, candidate or not: in "sea lion" the model named a sea
    lion, so the candidate "lion" must not match. A phrase does not run across a clause break ("a
    tiger. Cat lovers ..." names no tiger cat) unless the name itself has one ("R.V.")."""
    words, hits = p.words, []
    for i, word in enumerate(words):
        for n in index.lengths.get(word, ()):
            if i + n > len(words):
                break  # lengths are sorted
            key = tuple(words[i:i + n])
            ranks = index.phrases.get(key)
            if ranks is not None and (n == 1 or key in index.broken or not _broken(p, i, i + n)):
                hits.append((i, i + n, ranks))
    return _outermost(hits)


def _broken(p: _Parsed, start: int, end: int) -> bool:
    """A clause break between two of the words. None: an abbreviation's period ("St. Bernard"), or one line
    break in running text ("Egyptian\ncat", wrapped as markdown wraps it); a blank line or a list mark
    after the break ("- tiger\n- cat") parts the words."""
    for j in range(start, end - 1):
        gap = p.text[p.ends[j]:p.starts[j + 1]]
        if "\n" in gap:
            if gap.count("\n") > 1 or gap.rpartition("\n")[2].strip():
                return True
            gap = gap.replace("\n", " ")
        if _CLAUSE_BREAK.search(gap) and not (gap.strip() == "." and len(p.words[j]) <= 2):
            return True
    return False


def _outermost(hits: list[tuple[int, int, dict[int, int]]]) -> list[tuple[int, int, dict[int, int]]]:
    """Drops spans inside another span; sorted by start, longest first, a span lies inside another
    iff an earlier one reaches as far (linear, for answers that echo all 1000 labels)."""
    kept, reach = [], -1
    for hit in sorted(hits, key=lambda h: (h[0], -h[1])):
        if hit[1] > reach:
            kept.append(hit)
        reach = max(reach, hit[1])
    return kept


def _mentions(parsed: _Parsed, index: PhraseIndex, class_ids: Sequence[int]) -> list[_Mention]:
    candidates = set(class_ids)
    out = []
    for start, end, ranks in _spans(parsed, index):
        mine = {c: r for c, r in ranks.items() if c in candidates}
        if mine:
            best = min(mine.values())
            ids = [c for c, r in mine.items() if r == best]
            if len(ids) > 1:  # classes sharing a name, in candidate order
                ids.sort(key=class_ids.index)
            out.append(_Mention(start, end, tuple(ids), best >= SYNONYM))
    return out


# ---------------------------------------------------------------- structure rules

def _cue_end(words: list[str], start: int, cues: _Cues, skip: frozenset = _FILLERS) -> int:
    """Index just past the cue that ends before word `start` (skipping `skip` words), or -1."""
    i = start
    while i > 0 and words[i - 1] in skip:
        i -= 1
    ends_here = cues.get(words[i - 1], ()) if i > 0 else ()
    return i if any(tuple(words[i - len(c):i]) == c for c in ends_here if i >= len(c)) else -1


def _negated(m: _Mention, p: _Parsed) -> bool:
    i = _cue_end(p.words, m.start, _NEGATIONS, _FILLERS | _NEGATION_BRIDGE | _OPINION_BRIDGE)
    between = p.words[max(i, 0):m.start]
    if i > 0 and _OPINION_BRIDGE.intersection(between) and not _OPINION.intersection(between):
        return False
    # "I think not. **Tabby**.": punctuation ends a negation's reach (a cue's reaches on: "is: X").
    return i > 0 and not _CLAUSE_BREAK.search(p.text, p.ends[i - 1], p.starts[m.start])


def _modifier(m: _Mention, starts: dict[int, _Mention], p: _Parsed) -> bool:
    """In "an orange tabby cat" the label "orange" only describes the tabby: English puts the head last."""
    head = starts.get(m.end)
    if head is None:
        return False
    gap = p.text[p.ends[m.end - 1]:p.starts[head.start]]
    return not gap.strip() and "\n" not in gap  # "tabby\ntiger cat ...": a line ends the phrase


def _cued(cues: _Cues) -> Callable[[_Mention, _Parsed], bool]:
    # "could be X or Y" offers alternatives: the cue does not single X out.
    def rule(m: _Mention, p: _Parsed) -> bool:
        hedged = m.end < len(p.words) and p.words[m.end] == "or"
        return not hedged and _cue_end(p.words, m.start, cues) > 0
    return rule


def _emphasised(m: _Mention, p: _Parsed) -> bool:
    start, end = p.span(m)
    return any(a <= start and end <= b for a, b in p.emphasis)


def _first_sentence(alive: list[_Mention], p: _Parsed) -> list[_Mention]:
    """Mentions in the earliest sentence or line that mentions any candidate; none when that line is an
    item of a list of candidates ("1. tabby\\n2. tiger cat"): a list points at none of its items, on one
    line ("tabby, tiger cat") or one per line (a model echoing the `numbered` prompt)."""
    first = min(p.sentence(m) for m in alive)
    chosen = [m for m in alive if p.sentence(m) == first]
    items: dict[int, set[int]] = {}  # non-blank line -> classes named alone on it
    for m in alive:
        if p.bare(m):
            items.setdefault(p.line(m), set()).update(m.ids)
    return [] if any(items.get(p.line(m) + 1, set()) - items.get(p.line(m), set()) for m in chosen) else chosen


def _keep(rule: Callable[[_Mention, _Parsed], bool]) -> Callable[[list[_Mention], _Parsed], list[_Mention]]:
    return lambda alive, p: [m for m in alive if rule(m, p)]


# Applied in order while several classes remain; a rule that keeps nothing is skipped.
_NARROWERS = (_keep(_emphasised), _keep(_cued(_STRONG_CUES)), _keep(_cued(_WEAK_CUES)), _first_sentence)


def _classes(mentions: list[_Mention]) -> list[int]:
    return list(dict.fromkeys(c for m in mentions for c in m.ids))


def _choose(mentions: list[_Mention], p: _Parsed) -> list[_Mention]:
    """The mentions that the answer's structure points at (all of them when it points nowhere)."""
    starts = {m.start: m for m in mentions}
    alive = [m for m in mentions if not _negated(m, p) and not _modifier(m, starts, p)]
    for narrow in _NARROWERS:
        if len(_classes(alive)) <= 1:
            break
        alive = narrow(alive, p) or alive
    return alive


# ---------------------------------------------------------------- the match stage's verdict

@dataclass(frozen=True)
class Found:
    """What the answer points at among the candidates."""

    ids: tuple[int, ...]  # the classes pointed at, in mention order (several: ambiguous)
    synonym: bool  # every mention pointed at was found through a synonym, not the prompt label
    mentioned: bool  # some candidate is named at all (when `ids` is empty: only negated or modifying)


def find(text: str, index: PhraseIndex, class_ids: Sequence[int]) -> Found:
    """The candidates `text` names, narrowed by its structure."""
    parsed = _Parsed(text)
    mentions = _mentions(parsed, index, class_ids)
    chosen = _choose(mentions, parsed)
    return Found(tuple(_classes(chosen)), all(m.synonym for m in chosen), bool(mentions))
