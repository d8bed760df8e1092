"""The hf-vlm backend's ranking mode (--resolver rank): per image, one prefill, then every candidate
scored as its continuation -- as one token tree (backends/rank_tree.py) where the model honours a 4D
attention mask, else in chunks (backends/rank.py). A mixin of HFVLMBackend, which provides `model`,
`settings`, `pad_id`, `_cache_kw`, `rank_path` and `note`. Importing this module never imports torch.
"""
from __future__ import annotations

import time

from ..errors import one_line
from ..types import Answer, Query
from . import rank, rank_tree


class Ranking:
    def _rank(self, batch: list[Query], prep) -> list[Answer]:
        import torch

        answers = []
        for query, inputs, seqs in zip(batch, prep.inputs, prep.tries):
            t0 = time.perf_counter()
            try:
                scores = self.rank_scores(inputs, seqs)
            except torch.cuda.OutOfMemoryError:
                raise  # the caller halves the batch (and at batch 1 records the error)
            except Exception as exc:  # this image only: an error row, the run goes on
                answers.append(Answer(error=one_line(exc, with_type=True)))
                continue
            latency = prep.seconds / len(batch) + time.perf_counter() - t0
            answers.append(self._rank_answer(query, scores, latency, int(inputs["input_ids"].shape[1])))
        return answers

    def rank_scores(self, inputs, seqs: list[list[int]], chunk: int | None = None,
                    path: str | None = None) -> "rank.Scores":
        """Per-token log-probabilities of each candidate sequence after one prefilled prompt. The path:
        `path`, else the token tree where the model honours a 4D mask (checked at the first image and
        noted), else chunks; the catalog's `rank_chunk` (candidates per chunk) asks for chunks."""
        pre = rank.prefill(self.model, inputs, self._cache_kw)
        configured = int(self.settings.extra.get("rank_chunk", 0))
        if path is None and self.rank_path is None:
            self.rank_path, why = ("chunked", f"rank: chunks of {configured} candidates (option rank_chunk)") \
                if configured else rank_tree.choose(self.model, pre, seqs)
            self.note(why)
        if (path or self.rank_path) == "tree":
            return rank_tree.score(self.model, pre, seqs)
        chunk = chunk or configured or rank.chunk_size(pre, seqs, int(pre.first.shape[0]))
        return rank.score(self.model, pre, seqs, self._cache_kw, chunk, self.pad_id)

    def _rank_answer(self, query: Query, scores: "rank.Scores", latency: float, prompt_tokens: int) -> Answer:
        top, prob = rank.ranked(scores.total, query.class_ids)
        best = query.class_ids.index(top[0])
        return Answer(text=query.labels[best], class_id=top[0], stage="rank", latency_s=latency,
                      prompt_tokens=prompt_tokens, top5=top, top1_prob=prob)
