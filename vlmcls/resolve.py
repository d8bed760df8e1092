"""Free-text answer -> one candidate class, staged, recording which stage decided.

Stages: "match" (a candidate's prompt label is in the answer), "synonym" (found only through another
name of its full annotation), "nli" (BART-MNLI zero-shot picks the most entailed candidate),
"constrained" (the backend could only emit a label) and "unresolved".

The match stage reads the answer's structure when several candidates appear (emphasis, cue words,
first sentence) instead of trusting list order, and never lets a negated mention win. It scans the
answer's n-grams against a phrase index built once per LabelSet, so its cost hardly depends on the
number of candidates. torch and transformers are imported only when an answer reaches the NLI stage.
"""
from __future__ import annotations

import bisect
import itertools
import re
import threading
import time
import unicodedata
from collections import Counter
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any, Callable, Sequence

from vlmcls import devices
from vlmcls.types import LabelSet, Resolution
from vlmcls.vocab import DTYPES, NLI_RESOLVERS, RESOLVERS, STUDY_RESOLVER

MODES = RESOLVERS  # rank: backends answer with class ids
HYPOTHESIS = "This example is {}."  # transformers' default template, as the study used it

# Ranks of a phrase for a class, best first: the prompt label is what the model was shown.
NAME, NAME_PLURAL, SYNONYM, SYNONYM_PLURAL = range(4)

_TOKEN = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")  # words; "_" is markdown, not a letter
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
    ("is",), ("be",), ("its",), ("as",), ("say",), ("shows",), ("depicts",), ("called",), ("named",),
    ("choose",), ("pick",), ("select",), ("guess",), ("image", "of"), ("photo", "of"), ("picture", "of"),
)
_NEGATIONS = _by_last_word(
    ("not",), ("no",), ("nor",), ("neither",), ("never",), ("isnt",), ("arent",), ("doesnt",),
    ("dont",), ("unlike",), ("except",), ("without",), ("rather", "than"), ("instead", "of"),
    ("other", "than"),
)
# Verbs skipped only when looking for a negation: "does not look like a X" negates X.
_NEGATION_BRIDGE = frozenset({"like", "look", "looks", "resemble", "resembles", "seem", "seems",
                              "appear", "appears", "to", "be"})
_EMPHASIS = re.compile(
    r"\*\*[^*\n]+\*\*|__[^_\n]+__|(?<![\w*])\*[^*\n]+\*(?!\w)|(?<!\w)_[^_\n]+_(?!\w)|`[^`\n]+`"
    r"|\"[^\"\n]+\"|“[^”\n]+”|‘[^’\n]+’|(?<!\w)'[^'\n]+'(?!\w)|^#{1,6}[ \t].*$",
    re.MULTILINE,
)
_SENTENCE_END = re.compile(r"[.!?](?=\s)|\n")
_CLAUSE_BREAK = re.compile(r"[.,;:!?\n]")


# ---------------------------------------------------------------- normalisation

def _norm_token(token: str) -> str:
    token = token.casefold().replace("'", "").replace("’", "")
    if token.isascii():
        return token
    # "Pokémon" and "Pokemon" are one word to a reader.
    return "".join(c for c in unicodedata.normalize("NFKD", token) if not unicodedata.combining(c))


def phrase(text: str) -> tuple[str, ...]:
    """Normalised words of a label or answer: case, accents, apostrophes and punctuation dropped."""
    return tuple(_norm_token(m.group()) for m in _TOKEN.finditer(text))


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


@lru_cache(maxsize=16)
def phrase_index(labels: LabelSet) -> PhraseIndex:
    """Built once per LabelSet (frozen, hence hashable): ~2k names -> ~6k phrases."""
    phrases: dict[tuple[str, ...], dict[int, int]] = {}
    for class_id, (name, synonyms) in enumerate(zip(labels.names, labels.synonyms)):
        for text, rank in [(name, NAME)] + [(s, SYNONYM) for s in synonyms]:
            words = phrase(text)
            if words:
                for variant, r in [(words, rank)] + [(p, rank + 1) for p in _plurals(words)]:
                    ranks = phrases.setdefault(variant, {})
                    ranks[class_id] = min(r, ranks.get(class_id, r))
    lengths: dict[str, set[int]] = {}
    for words in phrases:
        lengths.setdefault(words[0], set()).add(len(words))
    return PhraseIndex(phrases, {w: tuple(sorted(n)) for w, n in lengths.items()},
                       tuple(_strip_article(phrase(n)) for n in labels.names))


def _strip_article(words: tuple[str, ...]) -> tuple[str, ...]:
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
        self.words = [_norm_token(m.group()) for m in found]
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


def _spans(words: list[str], index: PhraseIndex) -> list[tuple[int, int, dict[int, int]]]:
    """All label phrases in the answer, minus those inside a longer one ("tiger" in "tiger shark").

    Every class of the LabelSet counts here, candidate or not: in "sea lion" the model named a sea
    lion, so the candidate "lion" must not match."""
    hits = []
    for i, word in enumerate(words):
        for n in index.lengths.get(word, ()):
            if i + n > len(words):
                break  # lengths are sorted
            ranks = index.phrases.get(tuple(words[i:i + n]))
            if ranks is not None:
                hits.append((i, i + n, ranks))
    return _outermost(hits)


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
    for start, end, ranks in _spans(parsed.words, index):
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
    i = _cue_end(p.words, m.start, _NEGATIONS, _FILLERS | _NEGATION_BRIDGE)
    # "I think not. **Tabby**.": punctuation ends a negation's reach (a cue's reaches on: "is: X").
    return i > 0 and not _CLAUSE_BREAK.search(p.text, p.ends[i - 1], p.starts[m.start])


def _modifier(m: _Mention, starts: dict[int, _Mention], p: _Parsed) -> bool:
    """In "an orange tabby cat" the label "orange" only describes the tabby: English puts the head last."""
    head = starts.get(m.end)
    return head is not None and not p.text[p.ends[m.end - 1]:p.starts[head.start]].strip()


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
    """Mentions in the earliest sentence or line that mentions any candidate."""
    first = min(p.sentence(m) for m in alive)
    return [m for m in alive if p.sentence(m) == first]


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


# ---------------------------------------------------------------- NLI

# Padded tokens per forward pass (rows x longest row). 32k tokens keep an H100 busy on BART-large
# (1,000 pairs of ~26 tokens fit in one pass) and take ~1 GB of activations in half precision.
NLI_BATCH_TOKENS = 32768

_PIPELINES: dict[tuple[str, str, str], Any] = {}
_PIPELINES_LOCK = threading.Lock()


def nli_pipeline(model: str = "facebook/bart-large-mnli", device: str = "auto", dtype: str = "auto") -> Any:
    """The zero-shot pipeline for (model, device, dtype), loaded once per process."""
    with _PIPELINES_LOCK:
        if (model, device, dtype) not in _PIPELINES:
            _PIPELINES[(model, device, dtype)] = _load_pipeline(model, device, dtype)
        return _PIPELINES[(model, device, dtype)]


def nli_dtype(device: str, dtype: str = "auto") -> str:
    """float32 on the CPU (half precision is slow there); on a GPU bfloat16, or float16 on cards
    without bf16 (before Ampere). The hub's checkpoint is float32, which a pipeline keeps as loaded."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown NLI dtype {dtype!r}; choose one of: {', '.join(DTYPES)}")
    return devices.pick_dtype(dtype, device, gpu=devices.half_dtype)


def _load_pipeline(model: str, device: str, dtype: str = "auto") -> Any:
    import torch
    from transformers import pipeline

    from vlmcls import smoke

    path = str(smoke.ensure(model)) if smoke.is_smoke(model) else model
    device = devices.pick_device(device)
    return pipeline("zero-shot-classification", model=path, device=device,
                    dtype=getattr(torch, nli_dtype(device, dtype)))


def token_batches(lengths: Sequence[int], budget: int) -> list[range]:
    """Consecutive runs of `lengths` (sorted ascending) whose padded size, rows x the last (longest)
    row, stays within `budget` tokens; a row longer than the budget goes alone."""
    out, start = [], 0
    for i, n in enumerate(lengths):
        if i > start and (i + 1 - start) * n > budget:
            out.append(range(start, i))
            start = i
    return out + ([range(start, len(lengths))] if lengths else [])


def entailment_scores(pipe: Any, items: Sequence[tuple[str, Sequence[str]]],
                      batch_tokens: int = NLI_BATCH_TOKENS) -> list[Any]:
    """Entailment logits of every (premise, hypotheses) item, all items through the model together.

    The pipeline's own model, tokenizer, hypothesis template and entailment index, but the pairs
    are built from each distinct premise and hypothesis tokenized once (the pipeline tokenizes pair
    by pair in Python, which costs more than BART-large's forward pass at 1,000 candidates), sorted
    by length and cut into token-budgeted batches, so a batch pads little and short pairs are not
    run in small batches. With multi_label=False the pipeline's winner is the argmax of these
    logits (a softmax over them); tests check both give the same answer."""
    import torch

    sizes = [len(hyps) for _, hyps in items]
    if not any(sizes):
        return [torch.empty(0) for _ in items]
    pairs = _pairs(pipe.tokenizer, items)
    order = torch.sort(pairs.lengths, stable=True).indices  # stable: ties keep the input order
    lengths = pairs.lengths[order].tolist()
    # The batches are gathered where the model runs: BART's forward waits for the GPU at its end
    # (it checks every row's count of </s>), so host work between passes would leave it idle.
    device = pipe.model.device
    pairs, on_device = pairs.to(device), order.to(device)
    chunks = []
    with torch.inference_mode():
        for rows in token_batches(lengths, batch_tokens):
            input_ids, mask = pairs.rows(on_device[rows.start:rows.stop], lengths[rows.stop - 1])
            chunks.append(pipe.model(input_ids=input_ids, attention_mask=mask).logits[:, pipe.entailment_id].float())
    scores = torch.empty(len(lengths))
    scores[order] = torch.cat(chunks).cpu()
    return list(scores.split(sizes))


def pair_ids(tokenizer: Any, items: Sequence[tuple[str, Sequence[str]]]) -> list[list[int]]:
    """Token ids of every (premise, hypothesis) pair, as `tokenizer(premise, hypothesis,
    truncation="only_first")` gives them (for tests and tools; the model gets them as tensors)."""
    import torch

    pairs = _pairs(tokenizer, items)
    ids, mask = pairs.rows(torch.arange(len(pairs.lengths)), int(pairs.lengths.max()))
    return [row[:int(n)].tolist() for row, n in zip(ids, mask.sum(1))]


class _Pairs:
    """Every (premise, hypothesis) pair as two indices into small tables of token ids: the starts
    (specials + premise + specials) and the ends (hypothesis + specials). A batch's padded input ids
    are gathered from them in a few tensor operations, with no Python work per pair."""

    def __init__(self, starts: list[list[int]], ends: list[list[int]], premise: list[int], hypothesis: list[int],
                 pad: int):
        import torch

        self.pad = pad
        self.starts, self.start_len = _table(starts, pad)
        self.ends, self.end_len = _table(ends, pad)
        self.premise, self.hypothesis = torch.tensor(premise), torch.tensor(hypothesis)
        self.lengths = self.start_len[self.premise] + self.end_len[self.hypothesis]

    def to(self, device) -> "_Pairs":
        moved = object.__new__(_Pairs)
        moved.__dict__ = {k: v.to(device) if hasattr(v, "to") else v for k, v in self.__dict__.items()}
        return moved

    def rows(self, which, width: int):
        """Right-padded input ids and attention mask of pairs `which` (BART's classifier reads the
        last </s> of each row)."""
        import torch

        p, h = self.premise[which], self.hypothesis[which]
        cols = torch.arange(width, device=p.device)
        split = self.start_len[p][:, None]
        total = split + self.end_len[h][:, None]
        # flat indices into the tables: one 1-D gather each (2-D advanced indexing is ~5x slower on a CPU)
        ws, we = self.starts.shape[1], self.ends.shape[1]
        start = self.starts.view(-1)[(p * ws)[:, None] + cols.clamp(max=ws - 1)]
        end = self.ends.view(-1)[(h * we)[:, None] + (cols - split).clamp(0, we - 1)]
        ids = torch.where(cols < split, start, torch.where(cols < total, end, self.pad))
        return ids, (cols < total).long()


def _table(rows: list[list[int]], pad: int):
    import torch

    width = max(1, max(map(len, rows)))
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], dtype=torch.long)
    return ids, torch.tensor([len(r) for r in rows])


def _pairs(tokenizer: Any, items: Sequence[tuple[str, Sequence[str]]]) -> _Pairs:
    """Each distinct premise and hypothesis tokenized once: 32 answers x 1,000 candidates are 32
    premises and <= 1,000 hypotheses, not 32,000 pairs (~6 s for the tokenizer on 2 cores).

    split_special_tokens: an answer is untrusted text; a literal "</s>" in it must stay text (it
    would change the row's count of </s>, which BART's classifier requires to be equal in a batch).
    The assembly assumes the pair template specials + premise + specials + hypothesis + specials
    (BART, RoBERTa, BERT, DeBERTa); it is checked against the tokenizer on each item's first pair,
    and a tokenizer it does not fit, or a premise that must be truncated, gets whole pairs."""
    items = [(p, hs) for p, hs in items if hs]
    premises = {p: i for i, p in enumerate(dict.fromkeys(p for p, _ in items))}
    labels = {h: i for i, h in enumerate(dict.fromkeys(h for _, hs in items for h in hs))}
    template = _pair_template(tokenizer)
    if template is not None:
        head, mid, tail = template
        enc = tokenizer(list(premises) + [HYPOTHESIS.format(h) for h in labels], add_special_tokens=False,
                        split_special_tokens=True)["input_ids"]
        pairs = _Pairs([head + ids + mid for ids in enc[:len(premises)]], [ids + tail for ids in enc[len(premises):]],
                       [premises[p] for p, hs in items for _ in hs], [labels[h] for _, hs in items for h in hs],
                       tokenizer.pad_token_id)
        if int(pairs.lengths.max()) <= tokenizer.model_max_length and _fits(tokenizer, items, pairs):
            return pairs
    whole = _tokenized(tokenizer, [(p, h) for p, hs in items for h in hs])
    return _Pairs(whole, [[]], list(range(len(whole))), [0] * len(whole), tokenizer.pad_token_id)


def _fits(tokenizer: Any, items, pairs: _Pairs) -> bool:
    """The assembled ids equal the tokenizer's own for each item's first pair."""
    import torch

    firsts = torch.tensor(list(itertools.accumulate((len(hs) for _, hs in items[:-1]), initial=0)))
    ids, mask = pairs.rows(firsts, int(pairs.lengths[firsts].max()))
    mine = [row[:int(n)].tolist() for row, n in zip(ids, mask.sum(1))]
    return mine == _tokenized(tokenizer, [(p, hs[0]) for p, hs in items])


def _tokenized(tokenizer: Any, pairs: Sequence[tuple[str, str]]) -> list[list[int]]:
    return tokenizer([p for p, _ in pairs], [HYPOTHESIS.format(h) for _, h in pairs], truncation="only_first",
                     split_special_tokens=True)["input_ids"]


def _pair_template(tokenizer: Any) -> tuple[list[int], list[int], list[int]] | None:
    """The special ids before, between and after a pair's two texts ("<s>", "</s></s>", "</s>")."""
    a, b = (tokenizer(t, add_special_tokens=False)["input_ids"] for t in ("premise", "hypothesis"))
    full = tokenizer("premise", "hypothesis")["input_ids"]
    for i in range(len(full) - len(a) + 1):
        if full[i:i + len(a)] == a:
            rest = full[i + len(a):]
            for j in range(len(rest) - len(b) + 1):
                if rest[j:j + len(b)] == b:
                    return full[:i], rest[:j], rest[j + len(b):]
    return None


# ---------------------------------------------------------------- the resolver

class Resolver:
    """Resolves answers for one LabelSet in one mode; `stage_counts` tallies the deciding stages and
    `stage_seconds` the time spent in each: "match" (every rule, no model) and "nli" (the model)."""

    def __init__(self, mode: str, labels: LabelSet, nli_model: str = "facebook/bart-large-mnli",
                 device: str = "auto", nli_batch_tokens: int = NLI_BATCH_TOKENS, nli_impl: str = "batched",
                 nli_dtype: str = "auto"):
        if mode not in MODES:
            raise ValueError(f"unknown resolver mode {mode!r}; choose one of: {', '.join(MODES)}")
        if nli_impl not in ("batched", "pipeline"):
            raise ValueError(f"unknown NLI implementation {nli_impl!r}; choose 'batched' or 'pipeline'")
        if nli_dtype not in DTYPES:
            raise ValueError(f"unknown NLI dtype {nli_dtype!r}; choose one of: {', '.join(DTYPES)}")
        self.nli_impl, self.nli_dtype = nli_impl, nli_dtype
        self.mode, self.labels = mode, labels
        self.nli_model, self.device, self.nli_batch_tokens = nli_model, device, nli_batch_tokens
        self.index = phrase_index(labels)
        self.stage_counts: Counter[str] = Counter()
        self.stage_seconds: Counter[str] = Counter()

    def pipeline(self) -> Any:
        return nli_pipeline(self.nli_model, self.device, self.nli_dtype)

    def warm(self) -> None:
        """Load the NLI model ahead of time (it is otherwise loaded by the first answer needing it)."""
        if self.mode in NLI_RESOLVERS:
            self.pipeline()

    def resolve(self, text: str | None, class_ids: Sequence[int]) -> Resolution:
        return self.resolve_many([(text, class_ids)])[0]

    def resolve_many(self, items: Sequence[tuple[str | None, Sequence[int]]]) -> list[Resolution]:
        """Every answer through the rules first; those left to the NLI go to the model together."""
        start = time.perf_counter()
        ruled = [self._rules(text, tuple(ids)) for text, ids in items]
        nli_start = time.perf_counter()
        self.stage_seconds["match"] += nli_start - start
        need = [i for i, (_, to_nli) in enumerate(ruled) if to_nli]
        out = [found for found, _ in ruled]
        if need:
            decided = dict(zip(need, self._nli([(items[i][0], tuple(items[i][1]), ruled[i][0]) for i in need])))
            out = [decided.get(i, r) for i, r in enumerate(out)]
            self.stage_seconds["nli"] += time.perf_counter() - nli_start
        self.stage_counts.update(r.stage for r in out)
        return out

    def _rules(self, text: str | None, class_ids: tuple[int, ...]) -> tuple[Resolution | None, bool]:
        """(the resolution, whether the NLI must decide instead); no model runs here."""
        if not text or not text.strip():  # an empty premise would make NLI pick at random
            return Resolution(None, "unresolved", note="empty answer"), False
        if self.mode == "constrained":
            return self._constrained(text, class_ids), False
        if self.mode == "nli":
            return None, True
        found = self._match(text, class_ids)
        return found, found.class_id is None and self.mode not in ("exact", "rank")  # rank never loads NLI

    def _constrained(self, text: str, class_ids: tuple[int, ...]) -> Resolution:
        words = _strip_article(phrase(text))
        ids = [c for c in class_ids if self.index.names[c] == words]
        if len(ids) == 1:
            return Resolution(ids[0], "constrained")
        if ids:
            return Resolution(None, "unresolved", ambiguous=True, note=self._shared_note(ids))
        return Resolution(None, "unresolved", note="not a candidate label")

    def _match(self, text: str, class_ids: tuple[int, ...]) -> Resolution:
        parsed = _Parsed(text)
        mentions = _mentions(parsed, self.index, class_ids)
        chosen = _choose(mentions, parsed)
        ids = _classes(chosen)
        stage = "synonym" if all(m.synonym for m in chosen) else "match"
        if len(ids) == 1:
            return Resolution(ids[0], stage)
        if not ids:
            return Resolution(None, "unresolved", note="only negated mentions" if mentions else "no candidate found")
        if not self._same_name(ids):
            return Resolution(None, "unresolved", ambiguous=True, note=self._several_note(ids))
        if self.mode == STUDY_RESOLVER:  # identical strings: the NLI could not tell them apart either
            return Resolution(ids[0], stage, ambiguous=True, note=self._shared_note(ids) + "; took the first")
        return Resolution(None, "unresolved", ambiguous=True, note=self._shared_note(ids))

    def _nli(self, work: Sequence[tuple[str, tuple[int, ...], Resolution | None]]) -> list[Resolution]:
        # One hypothesis per distinct label, sorted: the model then sees the same pairs (in the same
        # batches) whatever the candidate order, so the winner cannot depend on it.
        hyps = [sorted({self.labels.names[c] for c in ids}) for _, ids, _ in work]
        pipe = self.pipeline()
        if self.nli_impl == "pipeline":  # the reference: transformers' zero-shot pipeline, answer by answer
            best = [pipe(text, candidate_labels=h, hypothesis_template=HYPOTHESIS, multi_label=False,
                         batch_size=64)["labels"][0] for (text, _, _), h in zip(work, hyps)]
        else:
            scores = entailment_scores(pipe, [(text, h) for (text, _, _), h in zip(work, hyps)], self.nli_batch_tokens)
            best = [h[int(s.argmax())] for h, s in zip(hyps, scores)]
        return [self._nli_verdict(ids, before, b) for (_, ids, before), b in zip(work, best)]

    def _nli_verdict(self, class_ids: tuple[int, ...], before: Resolution | None, best: str) -> Resolution:
        ids = [c for c in class_ids if self.labels.names[c] == best]
        notes = [before.note] if before is not None and before.ambiguous else []
        if len(ids) > 1:
            notes.append(self._shared_note(ids) + "; took the first")
        return Resolution(ids[0], "nli", ambiguous=bool(notes), note="; ".join(notes))

    def _same_name(self, ids: Sequence[int]) -> bool:
        return len({self.labels.names[c] for c in ids}) == 1

    def _shared_note(self, ids: Sequence[int]) -> str:
        return f"candidates share the label {self.labels.names[ids[0]]!r}: classes {', '.join(map(str, ids))}"

    def _several_note(self, ids: Sequence[int]) -> str:
        return "several candidates: " + ", ".join(self.labels.names[c] for c in ids)

