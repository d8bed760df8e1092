"""Local Hugging Face VLMs: one generic backend on AutoModelForImageTextToText + AutoProcessor + chat template.

Per-family differences live in small `Family` records (pixel budgets, remote code, batch limits) rather
than in branches through the code. Importing this module never imports torch or transformers.

What the backend guarantees (each is tested with tiny random models in tests/test_hf_vlm.py):
- greedy, deterministic, left-padded batches; a batched answer equals the unbatched one;
- "labels-first" layout: the label list before the image is prefilled once and its KV cache reused for
  every image; the answer equals the one computed without the cache (backends/prefix_cache.py);
- constrained answers: generation walks a token trie of the query's candidate labels, so the answer is
  exactly one candidate (backends/constrain.py);
- CUDA out of memory: the batch is retried in halves and the smaller size kept (recorded in `notes`);
  --batch-size auto learns the largest batch that fits (backends/autobatch.py);
- ranking mode (`settings.rank`, --resolver rank): no generation; each image's prompt is prefilled once and
  every candidate label scored as its continuation, all candidates in one forward pass as a token tree
  where the model honours a 4D mask (backends/rank_tree.py), else in chunks (backends/rank.py); the answer
  is the best candidate, with the top 5 and the best one's probability over the candidates. Equal to
  scoring each candidate with its own full forward pass (tests/test_rank.py).

Here: the backend (batching, the prefetch pipeline, generation). Loading and requirements are in
backends/hf_load.py, prompt encoding in backends/hf_encode.py, ranking in backends/hf_rank.py; their public
names are re-exported here.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from .. import devices
from ..errors import one_line
from ..types import Answer, Query
from . import autobatch, rank
from .autobatch import AUTO_FIRST, AUTO_HEADROOM, AUTO_MAX, AutoBatchSize, wants_auto
from .constrain import LabelConstraint, label_trie, walk_trie
from .hf_encode import DEFAULT_MAX_PIXELS, PromptEncoder
from .hf_rank import Ranking
from .hf_load import FAMILIES, WEIGHT_FILES, Family, family_of, load_model, requirements, torch_dtype
from .prefix_cache import LabelsFirstCache, cache_kwarg_of, cache_limits, forget_rope_deltas

if TYPE_CHECKING:  # pragma: no cover
    from ..catalog import ModelEntry
    from ..settings import BackendSettings
    from ..types import LabelSet

__all__ = ["AUTO_FIRST", "AUTO_HEADROOM", "AUTO_MAX", "DEFAULT_MAX_PIXELS", "FAMILIES", "PREFETCH", "WEIGHT_FILES",
           "WINDOW_BATCHES", "Family", "HFVLMBackend", "LabelConstraint", "family_of", "label_trie", "load",
           "requirements", "torch_dtype", "walk_trie"]


def load(entry: "ModelEntry", settings: "BackendSettings", labels: "LabelSet") -> "HFVLMBackend":
    reason = requirements(entry, settings, labels)
    if reason:
        raise RuntimeError(reason)
    model, processor, notes = load_model(entry, settings)
    backend = HFVLMBackend(model, processor, settings, name=entry.name)
    backend.ran_on = devices.ran_on(model)
    for note in notes:
        backend.note(note)
    return backend


# ---------------------------------------------------------------- the backend

def _eos_ids(model, tokenizer) -> list[int]:
    eos = model.generation_config.eos_token_id
    ids = list(eos) if isinstance(eos, (list, tuple)) else ([eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    if not ids:
        raise RuntimeError("the model defines no end-of-sequence token: cannot stop generation")
    return ids


# How the backend feeds the GPU: the caller's queries are ordered by prompt length (less padding),
# cut into model batches, and each batch is prepared (chat template, tokenizer, image processor) in
# one background thread up to PREFETCH batches ahead of the one generating.
PREFETCH = 2
WINDOW_BATCHES = 4  # the runner hands over this many batches at once, so that there is something to prefetch


@dataclass
class _Prepared:
    """One model batch, ready for generate: tensors on the model's device, the constraint tries, and the
    label-list prefix (token ids) when labels-first can reuse its cache."""

    inputs: Any = None
    tries: list = None  # type: ignore[assignment]
    prefix: tuple[int, ...] | None = None
    seconds: float = 0.0  # host time spent preparing (counted in each image's latency)
    error: BaseException | None = None
    worker: int | None = None  # pid of the process that prepared it (option prefetch_process), None: this one


class HFVLMBackend(PromptEncoder, LabelsFirstCache, AutoBatchSize, Ranking):
    """A loaded VLM. `notes` collects one-line remarks (fallbacks, batch-size cuts) for the report."""

    kind = "text"

    def __init__(self, model, processor, settings: "BackendSettings", name: str = "") -> None:
        self.model, self.processor, self.settings, self.name = model, processor, settings, name
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.tokenizer.padding_side = "left"  # decoder-only generation continues from the right end
        self.family = family_of(model.config.model_type)
        self.auto = wants_auto(settings, model.device)
        size = AUTO_FIRST if self.auto else settings.batch_size
        self.batch_size = max(1, min(size, self.family.max_batch or size))
        self._auto_sizes: dict[tuple, int] = {}  # (ways, labels-first) -> the size that the memory peak allows
        self.sizes_run: list[int] = []  # batch sizes that generated, in order (what the report and perf show)
        self.eos_ids = _eos_ids(model, self.tokenizer)
        self.pad_id = self._pad_id()
        self.image_token_id = _image_token_id(model.config, processor)
        self.image_device = _image_device(processor, model.device)
        self.notes: list[str] = []
        self._prefix: tuple[tuple[int, ...], list] | None = None  # (prefix token ids, per-layer (keys, values))
        self._split: dict[str, tuple[int, ...] | None] = {}  # prefix text -> its token ids (None: not separable)
        self._adds_bos: bool | None = None  # whether the tokenizer adds <bos> itself (asked once)
        self._cache_kw = cache_kwarg_of(model)
        # whether the labels-first cache can serve this model (asked here: the preparing process has no model)
        self._cache_limits = cache_limits(model, self.family)
        self.rank = bool(getattr(settings, "rank", False))
        self.rank_path: str | None = None  # "tree" or "chunked": chosen at the first ranked image
        # catalog option static_cache: a fixed-shape KV cache, with which transformers compiles the decode
        # step on CUDA (CUDA graphs: one launch per step instead of ~30 per layer). Batches run longest
        # first and transformers keeps the largest cache length, so the shape is set by the first batch.
        self.static_cache = bool(settings.extra.get("static_cache", False))
        if self.static_cache:
            self.note("static KV cache (decode compiled on CUDA)" if model.device.type == "cuda" else
                      "static KV cache (not compiled off CUDA)")
        # catalog option prefetch: batches prepared ahead in the background thread (0: each batch is prepared
        # just before it generates, nothing running beside generate: the host's Python, e.g. the GIL, is
        # generate's alone; which is faster depends on how host-bound generate is: vlmcls.perf --prefetch)
        self.prefetch = int(settings.extra.get("prefetch", PREFETCH))
        if self.prefetch < 0:
            raise ValueError(f"option prefetch must be 0 or more batches, got {self.prefetch}")
        # catalog option prefetch_process: the batches are prepared in a spawned process, not a thread, so
        # that preparing shares no GIL with generate (backends/prepare_process.py); images on its CPU
        self.prefetch_process = bool(settings.extra.get("prefetch_process", False)) and not self.rank
        self._pool: Any = None
        if self.prefetch_process and self.image_device not in (None, "cpu"):
            self.note("prefetch_process: images are processed on the CPU, in the preparing process")
        if self.auto and not autobatch._is_cuda(model.device):  # asked for where it cannot measure
            self.note(f"batch size auto: sized from CUDA memory, so on {model.device.type} every batch is "
                      f"{self.batch_size}")

    @property
    def window(self) -> int:
        """How many queries the runner should hand over at once: enough batches to prefetch."""
        return self.batch_size * WINDOW_BATCHES

    def _pad_id(self) -> int:
        pad = self.model.generation_config.pad_token_id
        if pad is None:
            pad = self.tokenizer.pad_token_id
        return self.eos_ids[0] if pad is None else pad  # no pad token: pad with EOS, as generate does

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def model_inputs(self, query: Query) -> Any:
        """The processor's tensors for one query, as generation gets them; None when it fails to prepare.
        In rank mode: (the image's prompt tensors, each candidate's token ids ending in EOS)."""
        prep = self._prepare([query])
        if prep.error is not None:
            return None
        return (prep.inputs[0], prep.tries[0]) if self.rank else prep.inputs

    @property
    def cache_kwarg(self) -> str:
        """The name under which this model's forward takes a KV cache (rank.prefill and rank.score need it)."""
        return self._cache_kw

    def close(self) -> None:
        import gc

        import torch

        self.stop_workers()
        self.model = self.processor = self._prefix = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # ------------------------------------------------------------ batching and the prefetch pipeline
    def answer(self, queries: Sequence[Query]) -> list[Answer]:
        from concurrent.futures import ThreadPoolExecutor

        # longest first: the first batch, whose memory peak sizes --batch-size auto, is the largest
        order = sorted(range(len(queries)), key=lambda i: length_key(queries[i]), reverse=True)
        answers: list[Answer | None] = [None] * len(queries)
        # One worker: the tokenizer is not thread-safe (padding is state on the Rust object), so every
        # tokenizer call happens in it, and batches come out in submission order.
        with ThreadPoolExecutor(1, thread_name_prefix="vlmcls-prepare") as pool:
            pending: list = []
            start = 0
            while start < len(order) or pending:
                while start < len(order) and len(pending) <= self.prefetch:  # the generating batch + prefetch
                    self._fit_auto(queries[order[start]])
                    index = order[start:start + self.batch_size]
                    batch = [queries[i] for i in index]
                    pending.append((index, batch, self._submit(pool, batch)))
                    start += len(index)
                index, batch, future = pending.pop(0)
                for i, a in zip(index, self._answer_prepared(batch, self._received(batch, future))):
                    answers[i] = a
        return answers  # type: ignore[return-value]

    def _submit(self, threads, batch: list[Query]):
        """The batch's preparation, started in the prefetch thread or (option prefetch_process) the process."""
        if self.prefetch_process:
            from . import prepare_process

            try:
                if self._pool is None:
                    self._pool = prepare_process.start(prepare_process.worker_state(self))
                return self._pool.submit(prepare_process.prepare, batch)
            except Exception as exc:  # e.g. a broken pool: the rest of the run prepares in the thread
                self._process_failed(exc)
        return threads.submit(self._prepare, batch)

    def _received(self, batch: list[Query], future) -> _Prepared:
        try:
            result = future.result()
        except Exception as exc:  # only the process path raises here (the thread's _prepare keeps errors)
            if self.prefetch_process:  # the first failure says why; batches queued behind it were cancelled
                self._process_failed(exc)
            return self._prepare(batch)
        if isinstance(result, _Prepared):
            return result
        prep, notes, prep.worker = result
        for text in notes:
            self.note(text)
        if prep.inputs is not None:  # tensors come on the CPU, in the compute dtype already
            prep.inputs = prep.inputs.to(self.model.device)
        return prep

    def _process_failed(self, exc: BaseException) -> None:
        self.note(f"prefetch_process: the preparing process failed ({one_line(exc, with_type=True)}); "
                  f"batches were prepared in a thread instead")
        self.prefetch_process = False
        self.stop_workers()

    def stop_workers(self) -> None:
        """Ends the preparing process (option prefetch_process), if one runs; a later batch starts another."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _answer_batch(self, batch: list[Query]) -> list[Answer]:
        """One batch prepared here (no prefetch): used for retries after an error or out of memory."""
        return self._answer_prepared(batch, self._prepare(batch))

    def _answer_prepared(self, batch: list[Query], prep: _Prepared) -> list[Answer]:
        if prep.error is not None:  # a bad image or prompt: isolate it so that only that sample is an error row
            if len(batch) == 1:
                return [Answer(error=one_line(prep.error, with_type=True))]
            return [a for q in batch for a in self._answer_batch([q])]
        return self._generate_or_split(batch, prep)

    def _generate_or_split(self, batch: list[Query], prep: _Prepared) -> list[Answer]:
        import torch

        try:
            base = self._probe_start(batch)
            answers = self._rank(batch, prep) if self.rank else self._generate(batch, prep)
            self.sizes_run.append(len(batch))
            if base is not None:
                self._learn_auto(batch, base)
            return answers
        except torch.cuda.OutOfMemoryError:
            pass  # handled below: outside the except block the failed attempt's tensors can be freed
        prep.inputs = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if len(batch) == 1:
            return [Answer(error="CUDA out of memory at batch size 1")]
        half = len(batch) // 2
        self.note(f"CUDA out of memory at batch size {len(batch)}: continued at batch size {half}")
        self.batch_size = min(self.batch_size, half)  # keep the size that fits for the rest of the run
        self._auto_sizes = {key: min(size, half) for key, size in self._auto_sizes.items()}
        return self._answer_batch(batch[:half]) + self._answer_batch(batch[half:])

    # ------------------------------------------------------------ preparing (runs in the prefetch thread)
    def _prepare(self, batch: list[Query]) -> _Prepared:
        t0 = time.perf_counter()
        prep = _Prepared()
        if self.rank:
            return self._prepare_rank(batch, prep, t0)
        try:
            full, images = [self.render(q) for q in batch], [self._bound(q.image) for q in batch]
            prep.prefix, texts = self._split_prefix(batch, full)
            prep.inputs = self._encode(texts, images, prep.prefix)
            if prep.prefix is not None and not self._padding_fits_cache(prep.inputs, batch):
                prep.prefix, prep.inputs = None, self._encode(full, images, None)
            prep.tries = [label_trie(self._label_ids(q)) for q in batch] if self.settings.constrained \
                else [None] * len(batch)
        except Exception as exc:
            prep.error = exc
        prep.seconds = time.perf_counter() - t0
        return prep

    def _prepare_rank(self, batch: list[Query], prep: _Prepared, t0: float) -> _Prepared:
        """Ranking prefills each image alone (batch 1, no padding: its positions are the plain ones), so
        each query gets its own inputs; `tries` holds the candidates' token sequences."""
        try:
            if self.settings.layout == "labels-first" and batch[0].prefix:
                self.note("rank: labels-first prompts are prefilled whole per image (the label-list cache "
                          "is used by generation only)")
            prep.inputs = [self._encode([self.render(q)], [self._bound(q.image)], None) for q in batch]
            prep.tries = [rank.sequences(self.tokenizer, q.labels, self.eos_ids[0]) for q in batch]
        except Exception as exc:
            prep.error = exc
        prep.seconds = time.perf_counter() - t0
        return prep

    # ------------------------------------------------------------ generation
    def _generate(self, batch: list[Query], prep: _Prepared) -> list[Answer]:
        import torch

        t0 = time.perf_counter()
        inputs = prep.inputs
        kwargs = dict(inputs)
        if prep.prefix is not None:
            kwargs[self._cache_kw] = self._cached_prefix(prep.prefix, len(batch))
            forget_rope_deltas(self.model)
            if self.static_cache:
                self.note("static_cache: not used with the labels-first prefix (a dynamic cache holds it)")
        elif self.static_cache:
            kwargs["cache_implementation"] = "static"  # see the `static_cache` note in __init__
        max_new = self.settings.max_new_tokens
        processors = []
        if self.settings.constrained:
            constraint = LabelConstraint(prep.tries, inputs["input_ids"].shape[1], self.eos_ids)
            processors.append(constraint)
            # room for the longest candidate + EOS, so the answer is always one whole label
            max_new = max(max_new, constraint.longest + 1)
        with torch.inference_mode():
            out = self.model.generate(**kwargs, max_new_tokens=max_new, do_sample=False, num_beams=1,
                                      temperature=None, top_p=None, top_k=None, pad_token_id=self.pad_id,
                                      # checkpoints ship e.g. repetition_penalty 1.05 (Qwen2.5-VL): it
                                      # would penalise the candidate labels, all of which are in the prompt
                                      repetition_penalty=1.0, no_repeat_ngram_size=0,
                                      eos_token_id=self.eos_ids, logits_processor=processors)
        new = out[:, inputs["input_ids"].shape[1]:].tolist()
        latency = (prep.seconds + time.perf_counter() - t0) / len(batch)
        prompt_tokens = inputs["attention_mask"].sum(-1).tolist()
        return [self._answer_row(q, row, trie, latency, int(n))
                for q, row, trie, n in zip(batch, new, prep.tries, prompt_tokens)]

    def _completion(self, row: list[int]) -> list[int]:
        """The new tokens up to and including the first EOS (generate pads finished rows after it)."""
        for i, token in enumerate(row):
            if token in self.eos_ids:
                return row[:i + 1]
        return row

    def _answer_row(self, query: Query, row: list[int], trie: dict | None, latency: float,
                    prompt_tokens: int) -> Answer:
        tokens = self._completion(row)
        common = dict(latency_s=latency, prompt_tokens=prompt_tokens, completion_tokens=len(tokens))
        if trie is None:
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            return Answer(text=text.strip(), **common)
        # the label is read off the trie, not decoded: decoding may not round-trip (sentencepiece spaces)
        index = walk_trie(trie, tokens).get(None)
        if index is None:  # cannot happen with room for the longest label; kept as an error row, not a guess
            return Answer(error="constrained decoding stopped before a complete label", **common)
        return Answer(text=query.labels[index], class_id=query.class_ids[index], stage="constrained", **common)

    # ------------------------------------------------------------ constrained decoding
    def _label_ids(self, query: Query) -> list[list[int]]:
        # Tokenized alone, as the start of the reply (sentencepiece adds its word-start marker, as a reply would)
        return self.tokenizer(list(query.labels), add_special_tokens=False)["input_ids"]


def length_key(query: Query) -> tuple[int, int]:
    """Prompt length before tokenizing: text characters, then image area (image tokens grow with it)."""
    size = getattr(query.image, "size", (0, 0))
    return len(query.prefix) + len(query.prompt), int(size[0]) * int(size[1])


def _image_device(processor, device) -> str | None:
    """The model's device when the image processor is torchvision-backed (it takes `device=`), else None."""
    image_processor = getattr(processor, "image_processor", None)
    if getattr(image_processor, "backend", None) != "torchvision":
        return None
    return str(device)


def _image_token_id(config, processor) -> int | None:
    for owner, attr in ((config, "image_token_id"), (config, "image_token_index"), (processor, "image_token_id")):
        value = getattr(owner, attr, None)
        if isinstance(value, int):
            return value
    return None
