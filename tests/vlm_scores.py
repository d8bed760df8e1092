"""Each generated row's first-token scores (the logits generate chose from), beside its token ids: the
tiny-VLM family tests compare them between code paths (batched / alone, labels-first cache / none).
Greedy ids alone can hide a difference: some tiny models answer the same tokens for every image."""
from __future__ import annotations

from vlm_inputs import load

# float32 on the CPU: the compared paths differ only in summation order (matrix shapes, padding masks,
# a prefix computed apart), ~1e-6 of the scores (measured: at most 3e-6 on scores up to 13); a wrong
# mask or position moves them by 1e-2 and more (the labels-first cache's sliding window: 5e-2 to 1.7)
TOLERANCE = dict(rtol=1e-4, atol=1e-4)


def run_scored(entry, queries, **settings):
    """(answers, each row's new token ids up to EOS, each row's first-token scores, the backend), rows in
    generation order (longest prompt first, as the backend sorts them)."""
    backend = load(entry, **settings)
    rows, scores = [], []
    generate = backend.model.generate

    def spy(**kwargs):
        out = generate(**kwargs, output_scores=True, return_dict_in_generate=True)
        rows.extend(backend._completion(row) for row in out.sequences[:, kwargs["input_ids"].shape[1]:].tolist())
        scores.extend(out.scores[0].float().cpu())
        return out.sequences

    backend.model.generate = spy
    return backend.answer(queries), rows, scores, backend


def assert_scores_close(actual, expected) -> None:
    import torch

    assert len(actual) == len(expected)
    torch.testing.assert_close(torch.stack(actual), torch.stack(expected), **TOLERANCE)


def spread(scores) -> float:
    """How far the rows' scores differ from the first row's: 0 means the model ignores its input."""
    return max(float((s - scores[0]).abs().max()) for s in scores)
