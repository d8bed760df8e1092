"""Local Hugging Face VLMs: one generic backend on AutoModelForImageTextToText + AutoProcessor + chat template.

Per-family differences live in small `Family` records (pixel budgets, remote code, batch limits) rather
than in branches through the code. Importing this module never imports torch or transformers.

What the backend guarantees (each is tested with tiny random models in tests/test_hf_vlm.py):
- greedy, deterministic, left-padded batches; a batched answer equals the unbatched one;
- "labels-first" layout: the label list before the image is prefilled once and its KV cache reused for
  every image; the answer equals the one computed without the cache;
- constrained answers: generation walks a token trie of the query's candidate labels, so the answer is
  exactly one candidate;
- CUDA out of memory: the batch is retried in halves and the smaller size kept (recorded in `notes`);
- ranking mode (`settings.rank`, --resolver rank): no generation; each image's prompt is prefilled once and
  every candidate label scored as its continuation (backends/rank.py); the answer is the best candidate,
  with the top 5 and the best one's probability over the candidates. Equal to scoring each candidate with
  its own full forward pass (tests/test_rank.py).
"""
from __future__ import annotations

import importlib.util
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from .. import devices
from ..errors import one_line
from ..types import Answer, Query
from . import rank

if TYPE_CHECKING:  # pragma: no cover
    from ..catalog import ModelEntry
    from ..settings import BackendSettings
    from ..types import LabelSet

_TRUE = ("1", "true", "yes", "on")
# Families whose processor has no pixel budget of its own get images shrunk to this before processing
# (LLaVA-NeXT's largest grid is 672x1008; anything far above only costs resize time).
DEFAULT_MAX_PIXELS = 1344 * 1344
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")


@dataclass(frozen=True)
class Family:
    """What differs between VLM families, keyed by `config.model_type`."""

    name: str
    pixel_budget: bool = False  # processor takes min/max pixels (Qwen): bound there, not by pre-shrinking
    string_content: bool = False  # chat template takes a string with an image placeholder, not typed parts
    image_placeholder: str = ""  # that placeholder
    max_batch: int | None = None  # processors that cannot batch


FAMILIES = {f.name: f for f in (
    Family("qwen2_vl", pixel_budget=True),
    Family("qwen2_5_vl", pixel_budget=True),
    Family("qwen3_vl", pixel_budget=True),
    # Remote code, untestable offline: its processor takes one "<|image_1|>" prompt at a time.
    Family("phi3_v", string_content=True, image_placeholder="<|image_1|>\n", max_batch=1),
)}


def family_of(model_type: str) -> Family:
    return FAMILIES.get(model_type, Family(model_type))


# ---------------------------------------------------------------- requirements (no torch import)

def _importable(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def _offline() -> bool:
    return any(os.environ.get(k, "").lower() in _TRUE for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _cached_snapshot(repo_id: str) -> Path | None:
    """The local snapshot folder of a hub model when it holds weights, else None. Never downloads."""
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not cached (LocalEntryNotFoundError) or not a valid repo id (HFValidationError)
        return None
    return folder if any(next(folder.glob(p), None) for p in WEIGHT_FILES) else None


def _hub_reason(repo_id: str) -> str | None:
    """Online and not cached: ask the hub whether we may download (gated / missing / unreachable)."""
    from huggingface_hub import auth_check
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        auth_check(repo_id, token=os.environ.get("HF_TOKEN") or None)
    except GatedRepoError:
        if os.environ.get("HF_TOKEN"):
            return f"{repo_id} is gated and HF_TOKEN has no access: accept its licence on huggingface.co"
        return f"{repo_id} is gated: accept its licence on huggingface.co and set HF_TOKEN"
    except RepositoryNotFoundError:
        return f"{repo_id} is not on the Hugging Face hub (or is private: set HF_TOKEN)"
    except Exception as exc:  # network down, proxy, ...
        return f"{repo_id} is not cached and the hub is unreachable ({type(exc).__name__})"
    return None


def _weights_reason(weights: str) -> str | None:
    from .. import smoke

    if smoke.is_smoke(weights) or Path(weights).expanduser().is_dir():
        return None
    if weights.startswith((".", "/", "~")):
        return f"local weights folder {weights} does not exist"
    if _cached_snapshot(weights) is not None:
        return None
    if _offline():
        return (f"{weights} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set "
                f"(run `hf download {weights}`)")
    return _hub_reason(weights)


def _needs_remote_code(entry: "ModelEntry") -> bool:
    return entry.trust_remote_code


def requirements(entry: "ModelEntry", settings: "BackendSettings", labels: "LabelSet") -> str | None:
    """One line saying why this model cannot run here, or None. Cheap: imports no torch."""
    for module in ("torch", "transformers"):
        if not _importable(module):
            return f"hf-vlm needs {module} (pip install {module})"
    if settings.quant not in ("none", "int8", "nf4"):
        return f"unknown quantization {settings.quant!r} (none, int8 or nf4)"
    if settings.quant != "none" and not _importable("bitsandbytes"):
        return f"{settings.quant} quantization needs bitsandbytes (pip install bitsandbytes)"
    if _needs_remote_code(entry) and not settings.trust_remote_code:
        return f"{entry.name} runs the hub's remote code; allow it with --trust-remote-code"
    return _weights_reason(entry.weights)


# ---------------------------------------------------------------- loading

def torch_dtype(settings: "BackendSettings", device: str):
    """The weights' dtype on `device`. Auto: bf16, the checkpoints' own, on CUDA; float32 on CPUs,
    where it is exact and fast."""
    return devices.torch_dtype(devices.pick_dtype(settings.dtype, device, gpu="bfloat16"))


def _quant_config(quant: str, dtype):
    from transformers import BitsAndBytesConfig

    if quant == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    if quant == "nf4":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
    return None


class _DropCastWarning:
    """bitsandbytes logs "inputs will be cast ... to float16" on every int8 matmul: thousands of lines per
    run. Said once in the backend's notes instead."""

    def filter(self, record) -> bool:
        return "will be cast from" not in record.getMessage()


def _quiet_bitsandbytes() -> None:
    import logging

    logger = logging.getLogger("bitsandbytes.autograd._functions")
    if not any(isinstance(f, _DropCastWarning) for f in logger.filters):
        logger.addFilter(_DropCastWarning())


def _model_class(path: str, remote: bool):
    """AutoModelForImageTextToText; remote-code models that only register a causal-LM class use that."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(path, trust_remote_code=remote)
    if remote:
        auto_map = getattr(config, "auto_map", {}) or {}
        if "AutoModelForImageTextToText" not in auto_map and "AutoModelForCausalLM" in auto_map:
            return AutoModelForCausalLM
    # native models mapped only to a causal LM (Phi-4-multimodal in transformers 5.17-5.24)
    elif type(config) not in AutoModelForImageTextToText._model_mapping and type(config) in AutoModelForCausalLM._model_mapping:
        return AutoModelForCausalLM
    return AutoModelForImageTextToText


def _resolve_path(weights: str) -> str:
    from .. import smoke

    return str(smoke.ensure(weights)) if smoke.is_smoke(weights) else weights


def load(entry: "ModelEntry", settings: "BackendSettings", labels: "LabelSet") -> "HFVLMBackend":
    reason = requirements(entry, settings, labels)
    if reason:
        raise RuntimeError(reason)
    from transformers import AutoProcessor

    # Remote code only for a model the catalog marks as needing it, and only with the user's opt-in: a
    # global --trust-remote-code must not let a native model's repo swap in its own code.
    remote = _needs_remote_code(entry) and settings.trust_remote_code
    path, device = _resolve_path(entry.weights), devices.pick_device(settings.device)
    dtype = torch_dtype(settings, device)
    # device_map loads the weights straight onto the device (no full copy in CPU memory first)
    kwargs: dict[str, Any] = dict(dtype=dtype, trust_remote_code=remote, device_map={"": device})
    quant = _quant_config(settings.quant, dtype)
    if quant is not None:
        kwargs["quantization_config"] = quant
    model = _model_class(path, remote).from_pretrained(path, **kwargs).eval()
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=remote)
    backend = HFVLMBackend(model, processor, settings, name=entry.name)
    if remote:
        backend.note(f"{entry.name}: ran the hub's remote code (trust_remote_code)")
    if settings.quant == "int8":
        _quiet_bitsandbytes()
        backend.note("int8: bitsandbytes casts matmul inputs to float16 (its per-call warning is silenced)")
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
AUTO_FIRST = 8  # --batch-size auto: the first batch of a case, whose memory peak sizes the rest
AUTO_MAX = 256  # beyond this the GPU is saturated and a batch only delays the store
AUTO_HEADROOM = 0.8  # share of the memory left after the weights that batches may plan to use


@dataclass
class _Prepared:
    """One model batch, ready for generate: tensors on the model's device, the constraint tries, and the
    label-list prefix (token ids) when labels-first can reuse its cache."""

    inputs: Any = None
    tries: list = None  # type: ignore[assignment]
    prefix: tuple[int, ...] | None = None
    seconds: float = 0.0  # host time spent preparing (counted in each image's latency)
    error: BaseException | None = None


class HFVLMBackend:
    """A loaded VLM. `notes` collects one-line remarks (fallbacks, batch-size cuts) for the report."""

    kind = "text"

    def __init__(self, model, processor, settings: "BackendSettings", name: str = "") -> None:
        self.model, self.processor, self.settings, self.name = model, processor, settings, name
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.tokenizer.padding_side = "left"  # decoder-only generation continues from the right end
        self.family = family_of(model.config.model_type)
        self.auto = _wants_auto(settings, model.device)
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
        self._cache_kw = _cache_kwarg(model)
        self.rank = bool(getattr(settings, "rank", False))

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

    @property
    def cached_prefix_tokens(self) -> int:
        """Tokens of the labels-first prefix whose keys and values are cached now (0: none)."""
        return len(self._prefix[0]) if self._prefix else 0

    def share_prefix_cache(self, other: "HFVLMBackend") -> None:
        """Use `other`'s cached prefix (same model): a second backend then starts in the steady state."""
        self._prefix, self._split = other._prefix, other._split

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

        self.model = self.processor = self._prefix = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # ------------------------------------------------------------ batching and the prefetch pipeline
    def answer(self, queries: Sequence[Query]) -> list[Answer]:
        from concurrent.futures import ThreadPoolExecutor

        # longest first: the first batch, whose memory peak sizes --batch-size auto, is the largest
        order = sorted(range(len(queries)), key=lambda i: _length_key(queries[i]), reverse=True)
        answers: list[Answer | None] = [None] * len(queries)
        # One worker: the tokenizer is not thread-safe (padding is state on the Rust object), so every
        # tokenizer call happens in it, and batches come out in submission order.
        with ThreadPoolExecutor(1, thread_name_prefix="vlmcls-prepare") as pool:
            pending: list = []
            start = 0
            while start < len(order) or pending:
                while start < len(order) and len(pending) <= PREFETCH:  # the generating batch + PREFETCH
                    self._fit_auto(queries[order[start]])
                    index = order[start:start + self.batch_size]
                    batch = [queries[i] for i in index]
                    pending.append((index, batch, pool.submit(self._prepare, batch)))
                    start += len(index)
                index, batch, future = pending.pop(0)
                for i, a in zip(index, self._answer_prepared(batch, future.result())):
                    answers[i] = a
        return answers  # type: ignore[return-value]

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

    # ------------------------------------------------------------ --batch-size auto
    def _fit_auto(self, query: Query) -> None:
        """Before cutting a batch: the size learnt for this kind of query (ways, layout), if any."""
        if self.auto:
            self.batch_size = self._auto_sizes.get(_auto_key(query), min(self.batch_size, AUTO_FIRST))

    def _probe_start(self, batch: list[Query]) -> int | None:
        """Bytes in use before the first batch of a kind (the weights, mostly), with the peak counter reset;
        None when nothing is to be learnt."""
        if not self.auto or _auto_key(batch[0]) in self._auto_sizes or not _is_cuda(self.model.device):
            return None
        return _gpu_memory(self.model.device, reset_peak=True)["allocated"]

    def _learn_auto(self, batch: list[Query], base: int) -> None:
        """After the first batch of a kind (the longest prompts come first): the largest batch that its
        memory peak per image allows. Out-of-memory halving stays as the safety net."""
        mem = _gpu_memory(self.model.device)
        budget = mem["free"] + mem["reserved"] - base  # what other processes hold stays theirs
        per_image = max(1, mem["peak"] - base) / len(batch)
        size = max(1, min(AUTO_MAX, int(AUTO_HEADROOM * budget / per_image), self.family.max_batch or AUTO_MAX))
        key = _auto_key(batch[0])
        self._auto_sizes[key] = size
        self.note(f"batch size auto: {size} at {key[0]}-way{' labels-first' if key[1] else ''} "
                  f"({per_image / 2**20:.0f} MiB per image at batch {len(batch)})")

    # ------------------------------------------------------------ encoding (runs in the prefetch thread)
    def render(self, query: Query) -> str:
        """The chat-templated prompt text for one query (image placeholder included)."""
        if self.family.string_content:
            text = f"{query.prefix}\n{self.family.image_placeholder}{query.prompt}" if query.prefix else \
                f"{self.family.image_placeholder}{query.prompt}"
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
        content: list[dict] = [{"type": "image"}, {"type": "text", "text": query.prompt}]
        if query.prefix:  # labels-first: the constant label list comes before the image
            content.insert(0, {"type": "text", "text": query.prefix})
        text = self.processor.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True)
        return self._without_template_bos(text)

    def _without_template_bos(self, text: str) -> str:
        """Gemma's template writes <bos> and its tokenizer adds one too: keep the tokenizer's only."""
        bos = self.tokenizer.bos_token
        if not bos or not text.startswith(bos):
            return text
        if self._adds_bos is None:
            self._adds_bos = self.tokenizer("")["input_ids"][:1] == [self.tokenizer.bos_token_id]
        return text[len(bos):] if self._adds_bos else text

    def _image_kwargs(self) -> dict:
        kwargs: dict[str, Any] = {}
        if self.image_device is not None:  # torchvision-backed: resize and normalise on the model's device
            kwargs["device"] = self.image_device
        extra = self.settings.extra
        if self.family.pixel_budget and ("min_pixels" in extra or "max_pixels" in extra):
            size = dict(self.processor.image_processor.size)
            if "min_pixels" in extra:
                size["shortest_edge"] = int(extra["min_pixels"])
            if "max_pixels" in extra:
                size["longest_edge"] = int(extra["max_pixels"])
            kwargs["size"] = size
        return {"images_kwargs": kwargs} if kwargs else {}

    def _bound(self, image):
        """Shrink huge images for families without a pixel budget of their own (keeps aspect ratio)."""
        if self.family.pixel_budget:
            return image
        limit = int(self.settings.extra.get("max_pixels", DEFAULT_MAX_PIXELS))
        w, h = image.size
        if w * h <= limit:
            return image
        scale = (limit / (w * h)) ** 0.5
        return image.resize((max(1, int(w * scale)), max(1, int(h * scale))))

    def _prepare(self, batch: list[Query]) -> _Prepared:
        t0 = time.perf_counter()
        prep = _Prepared()
        if self.rank:
            return self._prepare_rank(batch, prep, t0)
        try:
            texts = [self.render(q) for q in batch]
            prep.prefix, texts = self._split_prefix(batch, texts)
            prep.inputs = self._encode(texts, [self._bound(q.image) for q in batch], prep.prefix)
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

    def _encode(self, texts: list[str], images: list, prefix: tuple[int, ...] | None):
        if self.family.max_batch == 1:  # one-prompt processors (Phi-3-vision) take a string, not a list
            texts, images = texts[0], images[:1]  # type: ignore[assignment]
        else:  # one image per prompt, said explicitly: Gemma 3 reads a flat list as all images of one prompt
            images = [[image] for image in images]
        # with a cached prefix only the rest is tokenized: its special tokens are in the prefix already
        text_kwargs = {} if prefix is None else {"add_special_tokens": False}
        inputs = self.processor(text=texts, images=images, return_tensors="pt", padding=True,
                                **text_kwargs, **self._image_kwargs())
        if prefix is not None:
            _prepend(inputs, prefix)
        inputs = inputs.to(self.model.device)
        for key, value in inputs.items():  # pixel values in the compute dtype (bf16 on GPU)
            if value.is_floating_point():
                inputs[key] = value.to(self.model.dtype)
        return inputs

    # ------------------------------------------------------------ generation
    def _generate(self, batch: list[Query], prep: _Prepared) -> list[Answer]:
        import torch

        t0 = time.perf_counter()
        inputs = prep.inputs
        kwargs = dict(inputs)
        if prep.prefix is not None:
            kwargs[self._cache_kw] = self._cached_prefix(prep.prefix, len(batch))
            _forget_rope_deltas(self.model)
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

    # ------------------------------------------------------------ ranking
    def _rank(self, batch: list[Query], prep: _Prepared) -> list[Answer]:
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

    def rank_scores(self, inputs, seqs: list[list[int]], chunk: int | None = None) -> "rank.Scores":
        """Per-token log-probabilities of each candidate sequence after one prefilled prompt."""
        pre = rank.prefill(self.model, inputs, self._cache_kw)
        if chunk is None:
            chunk = int(self.settings.extra.get("rank_chunk", 0)) or \
                rank.chunk_size(pre, seqs, int(pre.first.shape[0]))
        return rank.score(self.model, pre, seqs, self._cache_kw, chunk, self.pad_id)

    def _rank_answer(self, query: Query, scores: "rank.Scores", latency: float, prompt_tokens: int) -> Answer:
        top, prob = rank.ranked(scores.total, query.class_ids)
        best = query.class_ids.index(top[0])
        return Answer(text=query.labels[best], class_id=top[0], stage="rank", latency_s=latency,
                      prompt_tokens=prompt_tokens, top5=top, top1_prob=prob)

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

    # ------------------------------------------------------------ labels-first prefix cache
    def _split_prefix(self, batch: list[Query], texts: list[str]) -> tuple[tuple[int, ...] | None, list[str]]:
        """(prefix token ids, the texts after the prefix) when the cached label list can be reused, else
        (None, the full texts). The prefix is tokenized once per case, not once per image: at 1000-way it
        is ~5,000 tokens of every image's prompt."""
        if self.settings.layout != "labels-first" or not batch[0].prefix:
            return None, texts
        cut = self._prefix_end(batch[0], texts[0])
        if cut is None:
            return None, texts
        head = texts[0][:cut]
        if any(t[:cut] != head for t in texts):
            self.note("labels-first: the text before the image differs between images; ran without the cache")
            return None, texts
        if head not in self._split:
            self._split[head] = self._prefix_ids(head, texts[0], cut)
        prefix = self._split[head]
        return (None, texts) if prefix is None else (prefix, [t[cut:] for t in texts])

    def _prefix_end(self, query: Query, text: str) -> int | None:
        """Where the image placeholder starts, when the chat template keeps the label list before it."""
        placeholder = getattr(self.processor, "image_token", None)
        if self.image_token_id is None or not placeholder or placeholder not in text:
            self.note(f"labels-first: no image token known for {self.family.name}; ran without the cache")
            return None
        at = text.find(query.prefix)
        if at < 0 or at > text.find(placeholder):
            self.note("labels-first: the chat template puts the image before the labels; ran without the cache")
            return None
        return text.find(placeholder)

    def _prefix_ids(self, head: str, text: str, cut: int) -> tuple[int, ...] | None:
        """The prefix's token ids, checked once against the whole prompt: tokenizing the two parts apart
        must give the same tokens (the cut is just before a special token, where no merge crosses)."""
        prefix = self.tokenizer(head)["input_ids"]
        rest = self.tokenizer(text[cut:], add_special_tokens=False)["input_ids"]
        if self.tokenizer(text)["input_ids"] != prefix + rest:
            self.note("labels-first: the prompt does not tokenize apart at the image; ran without the cache")
            return None
        return tuple(prefix)

    def _cached_prefix(self, prefix: tuple[int, ...], batch_size: int):
        if self._prefix is None or self._prefix[0] != prefix:
            self._prefix = (prefix, self._prefill(prefix))
        return self._expanded_cache(batch_size)

    def _prefill(self, prefix: tuple[int, ...]) -> list:
        """Keys and values of the prefix, computed once (batch 1, no padding: positions 0..k-1)."""
        import torch
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config.get_text_config(decoder=True))
        ids = torch.tensor([prefix], device=self.model.device)
        with torch.inference_mode():
            # logits_to_keep=1: the prefix's logits are never used, and at 1000-way they would be gigabytes
            self.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True,
                       logits_to_keep=1, **{self._cache_kw: cache})
        return [(layer.keys, layer.values) for layer in cache.layers]

    def _expanded_cache(self, batch_size: int):
        """A fresh cache per batch: generate appends to it, the stored prefix must stay untouched."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config.get_text_config(decoder=True))
        for i, (keys, values) in enumerate(self._prefix[1]):
            # expand() is a view; the layer's first update concatenates it into new memory
            cache.update(keys.expand(batch_size, -1, -1, -1), values.expand(batch_size, -1, -1, -1), i)
        return cache


def _length_key(query: Query) -> tuple[int, int]:
    """Prompt length before tokenizing: text characters, then image area (image tokens grow with it)."""
    size = getattr(query.image, "size", (0, 0))
    return len(query.prefix) + len(query.prompt), int(size[0]) * int(size[1])


def _auto_key(query: Query) -> tuple[int, bool]:
    return len(query.labels), bool(query.prefix)


def _is_cuda(device) -> bool:
    return getattr(device, "type", str(device).split(":")[0]) == "cuda"


def _gpu_memory(device, reset_peak: bool = False) -> dict[str, int]:
    """The CUDA allocator's counters in bytes (allocated, peak, reserved) and the device's free memory."""
    import torch

    if reset_peak:
        torch.cuda.reset_peak_memory_stats(device)
    free, _ = torch.cuda.mem_get_info(device)
    return dict(allocated=torch.cuda.memory_allocated(device), peak=torch.cuda.max_memory_allocated(device),
                reserved=torch.cuda.memory_reserved(device), free=free)


def _wants_auto(settings: "BackendSettings", device) -> bool:
    """--batch-size auto, or no size given on a GPU: the largest batch that fits."""
    auto = getattr(settings, "batch_auto", None)
    return bool(auto) if auto is not None else _is_cuda(device)


def _image_device(processor, device) -> str | None:
    """The model's device when the image processor is torchvision-backed (it takes `device=`), else None."""
    image_processor = getattr(processor, "image_processor", None)
    if getattr(image_processor, "backend", None) != "torchvision":
        return None
    return str(device)


def _prepend(inputs, prefix: tuple[int, ...]) -> None:
    """Put the cached prefix's ids before each row: [pad pad S S] -> [P P P pad pad S S]. The pads sit
    after the prefix, where the cache (computed without padding) expects them; masks skip them."""
    import torch

    ids = inputs["input_ids"]
    head = torch.tensor(prefix, dtype=ids.dtype).expand(ids.shape[0], -1)
    for key, value in list(inputs.items()):
        if getattr(value, "shape", None) == ids.shape:  # per-token: ids, attention mask, token types
            fill = head if key == "input_ids" else (torch.ones_like(head) if key == "attention_mask"
                                                     else torch.zeros_like(head))
            inputs[key] = torch.cat([fill.to(value.dtype), value], dim=1)


def _cache_kwarg(model) -> str:
    """transformers renamed `past_key_values` to `cache` (5.2x); GPU machines may run an older release."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _image_token_id(config, processor) -> int | None:
    for owner, attr in ((config, "image_token_id"), (config, "image_token_index"), (processor, "image_token_id")):
        value = getattr(owner, attr, None)
        if isinstance(value, int):
            return value
    return None


# ---------------------------------------------------------------- token trie

def label_trie(sequences: list[list[int]]) -> dict:
    """Nested dicts token -> node; key None marks a complete label and holds its first index."""
    root: dict = {}
    for index, seq in enumerate(sequences):
        node = root
        for token in seq:
            node = node.setdefault(token, {})
        node.setdefault(None, index)  # duplicate labels: the first candidate wins
    return root


def walk_trie(node: dict, tokens: Sequence[int]) -> dict:
    """The node reached by `tokens` (EOS and what follows ignored); {} when they leave the trie."""
    for token in tokens:
        if token not in node:
            return node if None in node else {}
        node = node[token]
    return node


class LabelConstraint:
    """LogitsProcessor: each row may only continue along its own candidates' token trie; after a complete
    label, EOS (or a longer label sharing that start). Finished rows are left alone."""

    def __init__(self, tries: list[dict], prompt_length: int, eos_ids: list[int]) -> None:
        self.tries, self.prompt_length, self.eos_ids = tries, prompt_length, eos_ids
        self.longest = max((_depth(t) for t in tries), default=0)

    def __call__(self, input_ids, scores):
        import torch

        mask = torch.full_like(scores, float("-inf"))
        for row, trie in enumerate(self.tries):
            generated = input_ids[row, self.prompt_length:].tolist()
            if any(t in self.eos_ids for t in generated):
                mask[row] = 0  # finished: generate replaces its tokens with padding anyway
                continue
            node = walk_trie(trie, generated)
            allowed = [t for t in node if t is not None]
            if None in node or not allowed:  # a complete label (or, defensively, a dead end): EOS may end it
                allowed.append(self.eos_ids[0])
            mask[row, allowed] = 0
        return scores + mask


def _depth(node: dict) -> int:
    children = [child for token, child in node.items() if token is not None]
    return 1 + max(map(_depth, children)) if children else 0


def _forget_rope_deltas(model) -> None:
    """Qwen-family models keep the previous call's M-RoPE deltas on the model; before transformers ~5.20,
    a generate that starts from a non-empty cache (the labels-first prefix) reused them for the image
    tokens after the prefix: wrong positions, and a batch-size mismatch when the previous batch was
    another size (seen on transformers 5.17). Without them the positions are computed from the input."""
    for module in (model, getattr(model, "model", None)):
        if module is not None and getattr(module, "rope_deltas", None) is not None:
            module.rope_deltas = None
