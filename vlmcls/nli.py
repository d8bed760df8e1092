"""The NLI stage's machinery: BART-MNLI zero-shot entailment for answers the match stage left open.

The pipeline is loaded once per process per (model, device, dtype); pairs are assembled from each
distinct premise and hypothesis tokenized once, and run in token-budgeted batches. torch and
transformers are imported only when an answer reaches this stage.
"""
from __future__ import annotations

import itertools
import threading
import warnings
from typing import Any, Sequence

from vlmcls import devices
from vlmcls.vocab import DTYPES

HYPOTHESIS = "This example is {}."  # transformers' default template, as the study used it


# Padded tokens per forward pass (rows x longest row). 32k tokens keep an H100 busy on BART-large
# (1,000 pairs of ~26 tokens fit in one pass) and take ~1 GB of activations in half precision.
NLI_BATCH_TOKENS = 32768

_PIPELINES: dict[tuple[str, str, str, bool], Any] = {}
_PIPELINES_LOCK = threading.Lock()


def nli_pipeline(model: str = "facebook/bart-large-mnli", device: str = "auto", dtype: str = "auto",
                 compile: bool = False) -> Any:
    """The zero-shot pipeline for (model, device, dtype, compile), loaded once per process. With
    `compile` its model is wrapped by torch.compile (dynamic shapes: a batch's rows and width vary),
    which compiles on the first forward pass (--nli-compile)."""
    key = (model, device, dtype, compile)
    with _PIPELINES_LOCK:
        if key not in _PIPELINES:
            _PIPELINES[key] = _load_pipeline(model, device, dtype, compile)
        return _PIPELINES[key]


def model_reason(model: str) -> str | None:
    """One line saying why the NLI model (--nli-model: a smoke name, a local folder or a hub repo id)
    cannot be loaded here, or None. Imports no torch: it runs before any case, not inside the load."""
    from vlmcls import hub

    from vlmcls import smoke

    if smoke.is_smoke(model) and model[len(smoke.PREFIX):] not in smoke.BUILDERS:
        return f"--nli-model {model}: no such smoke model; the tiny random NLI model is {smoke.PREFIX}bart-mnli"
    reason = hub.weights_reason(model)
    if reason is None:
        return None
    if hub.nowhere_reason(model):  # a mistyped path: say so, not HFValidationError 99 lines down
        return f"--nli-model {model!r}: no such folder, and not a hub repo id"
    if hub.offline():
        return (f"NLI model {model} is not reachable offline (run `hf download {model}`); "
                "use --resolver exact, or --nli-model PATH (smoke:bart-mnli: a tiny random one, to rehearse)")
    return f"NLI model {reason}; use --resolver exact, or --nli-model PATH"


def nli_dtype(device: str, dtype: str = "auto") -> str:
    """float32 on the CPU (half precision is slow there); on a GPU bfloat16, or float16 on cards
    without bf16 (before Ampere). The hub's checkpoint is float32, which a pipeline keeps as loaded."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown NLI dtype {dtype!r}; choose one of: {', '.join(DTYPES)}")
    return devices.pick_dtype(dtype, device, gpu=devices.half_dtype)


def _load_pipeline(model: str, device: str, dtype: str = "auto", compile: bool = False) -> Any:
    import torch
    from transformers import pipeline

    from vlmcls import smoke

    path = str(smoke.ensure(model)) if smoke.is_smoke(model) else model
    device = devices.pick_device(device)
    pipe = pipeline("zero-shot-classification", model=path, device=device,
                    dtype=getattr(torch, nli_dtype(device, dtype)))
    if compile:
        # the compiled module forwards attributes (config, device) to the model it wraps
        pipe.model = torch.compile(pipe.model, dynamic=True)
    return pipe


def _forward(pipe: Any, input_ids, mask):
    """The model's entailment logits; a compiled model that fails to compile (no C++ compiler, an
    operator inductor lacks) runs uncompiled from then on, with one warning, not a failed case."""
    from torch._dynamo.exc import TorchDynamoException  # compiling failed (BackendCompilerFailed, InductorError)

    try:
        return pipe.model(input_ids=input_ids, attention_mask=mask).logits[:, pipe.entailment_id].float()
    except TorchDynamoException as exc:
        pipe.model = pipe.model._orig_mod  # the model torch.compile wrapped
        cause = getattr(exc, "inner_exception", None) or exc  # the compiler's own error, not dynamo's wrapper
        first = (str(cause).strip().splitlines() or [""])[0][:200]
        pipe.compile_error = f"{type(cause).__name__}: {first}"  # the case notes say it too (compile_note)
        warnings.warn(f"--nli-compile: torch.compile failed ({pipe.compile_error}); "
                      "the NLI model runs uncompiled", RuntimeWarning, stacklevel=2)
        return _forward(pipe, input_ids, mask)


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
            chunks.append(_forward(pipe, input_ids, mask))
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
