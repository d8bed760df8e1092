"""Free-text answer -> one candidate class, staged, recording which stage decided.

Stages: "match" (a candidate's prompt label is in the answer), "synonym" (found only through another
name of its full annotation), "nli" (BART-MNLI zero-shot picks the most entailed candidate),
"constrained" (the backend could only emit a label) and "unresolved".

The match stage (vlmcls.match) reads the answer's structure and never lets a negated mention win;
the NLI stage (vlmcls.nli) runs the answers left open through the model together. torch and
transformers are imported only when an answer reaches the NLI stage.
"""
from __future__ import annotations

import time
from collections import Counter
from typing import Any, Sequence

from vlmcls.match import PhraseIndex, find, phrase, phrase_index, strip_article
from vlmcls.nli import (HYPOTHESIS, NLI_BATCH_TOKENS, entailment_scores, nli_dtype, nli_pipeline, pair_ids,
                        token_batches)
from vlmcls.types import LabelSet, Resolution
from vlmcls.vocab import DTYPES, NLI_RESOLVERS, RESOLVERS, STUDY_RESOLVER, canonical

# Re-exported: callers and tests name them as resolve.X.
__all__ = ["HYPOTHESIS", "MODES", "NLI_BATCH_TOKENS", "PhraseIndex", "Resolver", "entailment_scores", "nli_dtype",
           "nli_pipeline", "pair_ids", "phrase", "phrase_index", "token_batches"]

MODES = RESOLVERS  # rank: backends answer with class ids

# ---------------------------------------------------------------- the resolver

class Resolver:
    """Resolves answers for one LabelSet in one mode; `stage_counts` tallies the deciding stages and
    `stage_seconds` the time spent in each: "match" (every rule, no model) and "nli" (the model)."""

    def __init__(self, mode: str, labels: LabelSet, nli_model: str = "facebook/bart-large-mnli",
                 device: str = "auto", nli_batch_tokens: int = NLI_BATCH_TOKENS, nli_impl: str = "batched",
                 nli_dtype: str = "auto", nli_compile: bool = False):
        mode = canonical("resolver", mode)  # "thesis", the older name of "study"
        if mode not in MODES:
            raise ValueError(f"unknown resolver mode {mode!r}; choose one of: {', '.join(MODES)}")
        if nli_impl not in ("batched", "pipeline"):
            raise ValueError(f"unknown NLI implementation {nli_impl!r}; choose 'batched' or 'pipeline'")
        if nli_dtype not in DTYPES:
            raise ValueError(f"unknown NLI dtype {nli_dtype!r}; choose one of: {', '.join(DTYPES)}")
        self.nli_impl, self.nli_dtype, self.nli_compile = nli_impl, nli_dtype, nli_compile
        self.mode, self.labels = mode, labels
        self.nli_model, self.device, self.nli_batch_tokens = nli_model, device, nli_batch_tokens
        self.index = phrase_index(labels)
        self.stage_counts: Counter[str] = Counter()
        self.stage_seconds: Counter[str] = Counter()

    def pipeline(self) -> Any:
        return nli_pipeline(self.nli_model, self.device, self.nli_dtype, self.nli_compile)

    def compile_note(self) -> str:
        """What --nli-compile did, for the notes of a case whose answers reached the NLI model."""
        error = getattr(self.pipeline(), "compile_error", None)
        if error:
            return f"--nli-compile: torch.compile failed ({error}); the NLI model ran uncompiled"
        return ("--nli-compile: the NLI model ran through torch.compile (compiled by the process's first NLI "
                "pass, whose time is in the resolver's NLI seconds)")

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

    def rules(self, text: str | None, class_ids: Sequence[int]) -> tuple[Resolution | None, bool]:
        """What the rules alone decide, and whether the NLI must decide instead (no model runs here)."""
        return self._rules(text, tuple(class_ids))

    def _rules(self, text: str | None, class_ids: tuple[int, ...]) -> tuple[Resolution | None, bool]:
        """(the resolution, whether the NLI must decide instead); no model runs here."""
        if not text or not text.strip():  # an empty premise would make NLI pick at random
            return Resolution(None, "unresolved", note="empty answer"), False
        if self.mode == "constrained":
            return self._constrained(text, class_ids), False
        if self.mode == "nli":
            return None, True
        found = self._match(text, class_ids)
        # rank: an answer the backend could not rank (API: its first token names no one candidate) is
        # text, resolved as the study resolves text; local rankers answer class ids and never get here
        return found, found.class_id is None and self.mode != "exact"

    def _constrained(self, text: str, class_ids: tuple[int, ...]) -> Resolution:
        words = strip_article(phrase(text))
        ids = [c for c in class_ids if self.index.names[c] == words]
        if len(ids) == 1:
            return Resolution(ids[0], "constrained")
        if ids:
            return Resolution(None, "unresolved", ambiguous=True, note=self._shared_note(ids))
        return Resolution(None, "unresolved", note="not a candidate label")

    def _match(self, text: str, class_ids: tuple[int, ...]) -> Resolution:
        found = find(text, self.index, class_ids)
        ids = found.ids
        stage = "synonym" if found.synonym else "match"
        if len(ids) == 1:
            return Resolution(ids[0], stage)
        if not ids:
            return Resolution(None, "unresolved", note="only negated mentions" if found.mentioned else "no candidate found")
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
