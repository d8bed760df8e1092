"""Throughput of the hf-vlm backend on random-weight models: nothing is downloaded.

The model is built from its published config with random weights (full size: timings are about the
architecture, not the answers) or is one of the smoke tiny models (a CPU check of this script). The
real backend runs on synthetic images with real N-way prompts over the ImageNet class names, in both
prompt layouts, and one JSON line is printed per (arch, quant, layout, ways, batch size):

  images_per_s      steady state over --images images (warm-up batch excluded; labels-first: the label
                    prefix is already cached, as it is for every image after the first in a real run);
                    batch size 1 over the first 16 of them (its rate is steady at once, and slow)
  prefill_s         seconds for one batch generating a single token (prompt processing + 1 step)
  speedup_vs_b1     images_per_s / the batch-size-1 figure of the same run
  speedup_vs_thesis labels-first images_per_s / the thesis layout's, same ways and batch size
  prompt_tokens     mean per image (text + image tokens); new_tokens: tokens generated per image
  tflop_per_image   model FLOPs per image: 2 x parameters x tokens for the language model (tokens it
                    computes: a cached label prefix is not recomputed) and the vision tower, + attention
  mfu               tflop_per_image x images_per_s / the matmul peak measured in this process (bf16 on
                    CUDA, float32 on the CPU; the env row gives peak_tflops)
  batch size "auto" the backend's --batch-size auto; effective_batch_size is the largest that ran
  --resolver rank   also (or, with "rank" alone, only) ranking mode: part "hf_vlm_rank" rows give
                    images_per_s of scoring every candidate (one prefill per image + the candidates in
                    chunks), candidate_tokens per image, and rank_cost_vs_generate = the generate row's
                    images_per_s / rank's (same layout, ways and batch size; the issue's goal: <= 2)

  python -m vlmcls.perf --arch qwen2-vl-2b --quant none,int8 --ways 20,100,1000 --batch-sizes 1,32,auto
  python -m vlmcls.perf --arch smoke-qwen2-vl --ways 20,100 --batch-sizes 1,8 --device cpu
  python -m vlmcls.perf --ways 20,100 --batch-sizes 32 --layout thesis --resolver generate,rank

Compare ratios with ../shared/perf/gpu_reference.py run in the same command, never absolute times
across machines. In labels-first every image gets the same N labels (a fixed N-class subset, in class
order) so that their KV cache is shared; in thesis each image gets its own seeded candidate set.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from . import devices
from . import labels as labels_mod
from . import prompts
from .catalog import ModelEntry, load_catalog
from .settings import BackendSettings
from .types import Query
from .vocab import LABELS_FIRST, STUDY_LAYOUT

FULL_SIZE = ("qwen2-vl-2b",)
B1_IMAGES = 16  # batch size 1 is measured on this many images: one at a time, the rate is steady at once
TOKENS_PER_LABEL = 4.5  # "label, " in Qwen2's BPE, the estimate gpu_reference.py uses
SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"  # Qwen2-VL's default system turn


def emit(row: dict, out) -> None:
    line = json.dumps(row)
    print(line, flush=True)
    if out is not None:
        out.write(line + "\n")
        out.flush()


# ---------------------------------------------------------------- labels and queries

def imagenet_names() -> list[str]:
    """The 1000 ImageNet class names (first synonym), from the lists timm ships; numbered names without timm."""
    try:
        return list(labels_mod.imagenet_names())
    except RuntimeError:  # timm is not installed: the names' lengths barely matter to throughput
        return [f"class {i}" for i in range(1000)]


def synthetic_images(n: int, size: tuple[int, int], seed: int = 0) -> list:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(n)]


def make_queries(names: Sequence[str], ways: int, layout: str, images: list, seed: int = 0) -> list[Query]:
    """Thesis: a seeded candidate set per image. Labels-first: one fixed N-class list for every image."""
    rng = random.Random(seed)
    shared = sorted(rng.sample(range(len(names)), ways))
    queries = []
    for i, image in enumerate(images):
        own = random.Random(seed + i).sample(range(len(names)), ways)
        ids = tuple(shared if layout == LABELS_FIRST else own)
        labels = tuple(names[j] for j in ids)
        if layout == LABELS_FIRST:
            prefix, prompt = prompts.render_labels_first(labels)
        else:
            prefix, prompt = "", prompts.render(prompts.get_template(prompts.STUDY_PROMPT), labels)
        queries.append(Query(f"img{i}", image, ids, labels, prompt, prefix))
    return queries


# ---------------------------------------------------------------- full-size random models

def bpe_tokenizer(names: Sequence[str], tokens_per_label: float = TOKENS_PER_LABEL):
    """A byte-level BPE trained on the class names until "label, " costs about as many tokens as in
    Qwen2's real vocabulary: sequence length decides the cost, and one token per byte would triple it."""
    text = ", ".join(names)
    low, high = 257, 20000
    while high - low > 16:  # bisect the vocabulary size: more merges, fewer tokens
        mid = (low + high) // 2
        tok = _train_bpe(text, mid)
        if len(tok(text)["input_ids"]) / len(names) > tokens_per_label:
            low = mid
        else:
            high = mid
    return _train_bpe(text, high)


def _train_bpe(text: str, vocab_size: int):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from .smoke.vlm import qwen_tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator([text], trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return qwen_tokenizer(model["vocab"], merges)


def qwen2_vl_2b(names: Sequence[str], device: str, dtype) -> tuple[Any, Any]:
    """Qwen2-VL-2B-Instruct's published config with random weights, its stock processor, a local BPE."""
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

    from .smoke.vlm import QWEN_TEMPLATE, qwen_ids, qwen_processor

    tok = bpe_tokenizer(names)
    text = dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768,
                rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None)
    vision = dict(depth=32, embed_dim=1280, hidden_size=1536, num_heads=16, mlp_ratio=4)
    config = Qwen2VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, **qwen_ids(tok))
    with torch.device(device):
        torch.set_default_dtype(dtype)
        try:
            model = Qwen2VLForConditionalGeneration(config).eval()
        finally:
            torch.set_default_dtype(torch.float32)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, qwen_processor(Qwen2VLProcessor, tok, template=SYSTEM + QWEN_TEMPLATE)


FULL_BUILDERS: dict[str, Callable] = {"qwen2-vl-2b": qwen2_vl_2b}


# ---------------------------------------------------------------- models per quantization

class Models:
    """(model, processor) per quantization for one arch. Full size: built once in memory; int8/nf4 go
    through a saved copy and `hf_vlm.load`, because bitsandbytes quantizes while loading."""

    def __init__(self, arch: str, entry: ModelEntry, names: Sequence[str], device: str) -> None:
        self.arch, self.entry, self.names, self.device = arch, entry, names, device
        self._built: tuple | None = None
        self._saved: tempfile.TemporaryDirectory | None = None

    def get(self, settings: BackendSettings):
        from .backends import hf_vlm

        if self.arch not in FULL_BUILDERS:  # smoke models load like checkpoints, at any quantization
            backend = hf_vlm.load(self.entry, settings, None)
            return backend.model, backend.processor, backend.notes
        if settings.quant == "none":
            model, processor = self._build(settings)
            return model, processor, []
        backend = hf_vlm.load(self._saved_entry(settings), settings, None)
        return backend.model, backend.processor, backend.notes

    def _build(self, settings: BackendSettings):
        from .backends import hf_vlm

        if self._built is None:
            self._built = FULL_BUILDERS[self.arch](self.names, self.device, hf_vlm.torch_dtype(settings, self.device))
        return self._built

    def _saved_entry(self, settings: BackendSettings) -> ModelEntry:
        if self._saved is None:
            model, processor = self._build(settings.with_(quant="none"))
            self._saved = tempfile.TemporaryDirectory(prefix=f"vlmcls-perf-{self.arch}-")
            model.save_pretrained(self._saved.name)
            processor.save_pretrained(self._saved.name)
        return ModelEntry(name=self.arch, backend="hf-vlm", weights=self._saved.name)

    def release(self) -> None:
        self._built = None
        if self._saved is not None:
            self._saved.cleanup()


# ---------------------------------------------------------------- measuring

def _timed(backend, queries) -> tuple[float, list]:
    t0 = time.perf_counter()
    answers = backend.answer(queries)  # answers come back as Python objects: the device has finished
    return time.perf_counter() - t0, answers


def _sig(value: float) -> float:
    return float(f"{value:.4g}")  # smoke models do micro-TFLOPs: four significant digits, not decimals


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(sum(values) / len(values), 1) if values else None


def _settings_for(settings: BackendSettings, batch_size) -> BackendSettings:
    if batch_size == "auto":
        return settings.with_(batch_auto=True)
    return settings.with_(batch_size=batch_size, batch_auto=False)  # a fixed size, also on CUDA


def measure(model, processor, settings: BackendSettings, queries: list[Query], new_tokens: int) -> dict:
    from .backends.hf_vlm import HFVLMBackend

    backend = HFVLMBackend(model, processor, settings)
    model.generation_config.min_new_tokens = new_tokens  # equal lengths: random weights may stop anywhere
    try:
        # warm-up: kernels, allocator, the labels-first prefix; with auto, the size is learnt here and
        # warmed up at the size it chose
        _timed(backend, queries[:backend.batch_size])
        if backend.auto:
            _timed(backend, queries[:backend.window // 4])
        backend.sizes_run.clear()
        elapsed, answers = _timed(backend, queries)
    finally:
        model.generation_config.min_new_tokens = None
    size = max(backend.sizes_run)
    one = HFVLMBackend(model, processor, settings.with_(max_new_tokens=1, batch_size=size, batch_auto=False))
    one.share_prefix_cache(backend)  # cached already: prefill_s is the steady state
    batch = queries[:size]
    _timed(one, batch)
    prefill, _ = _timed(one, batch)
    row = dict(images_per_s=round(len(queries) / elapsed, 3), prefill_s=round(prefill, 4),
               s_per_batch=round(elapsed * size / len(queries), 4),
               prompt_tokens=_mean(a.prompt_tokens for a in answers),
               new_tokens=_mean(a.completion_tokens for a in answers),
               errors=sum(a.error is not None for a in answers),
               effective_batch_size=size, notes=backend.notes + one.notes)
    shape = image_shape(backend, queries[0])
    row["tflop_per_image"] = _sig(flops_per_image(
        model, row["prompt_tokens"] or 0, row["new_tokens"] or 0, shape["vision_tokens"],
        backend.cached_prefix_tokens) / 1e12)
    return row


# ---------------------------------------------------------------- model FLOPs

def image_shape(backend, query: Query) -> dict:
    """Tokens the vision tower computes for one image (Qwen: patches before the 2x2 merge; others: the
    image tokens the language model sees)."""
    inputs = backend.model_inputs(query)
    if inputs is None:
        return dict(vision_tokens=0)
    pixels = inputs.get("pixel_values")
    if pixels is not None and pixels.dim() == 2:  # Qwen: one row per patch
        return dict(vision_tokens=int(pixels.shape[0]))
    return dict(vision_tokens=int((inputs["input_ids"] == backend.image_token_id).sum()))


def parameter_counts(model) -> dict[str, int]:
    """Parameters of the vision tower (with its projector), the language model's blocks (no embeddings)
    and the output head. bitsandbytes' 4-bit weights count at their unpacked size."""
    def numel(p) -> int:
        state = getattr(p, "quant_state", None)
        return int(state.shape.numel()) if state is not None else p.numel()

    vision = sum(numel(p) for n, p in model.named_parameters()
                 if any(k in n for k in ("visual", "vision_tower", "multi_modal_projector")))
    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight if model.get_output_embeddings() is not None else embed
    total = sum(numel(p) for p in model.parameters())
    untied = 0 if head is embed else numel(head)
    return dict(vision=vision, language=total - vision - numel(embed) - untied, head=numel(head))


def flops_per_image(model, prompt_tokens: float, new_tokens: float, vision_tokens: int, cached: int) -> float:
    """Model FLOPs for one image: 2 x parameters x tokens + attention (QK^T and AV, 4 x width x query x key).
    The prefill computes the prompt's tokens but a cached prefix; each of the new tokens after the first
    is one decode step over the whole context; the head runs once per new token."""
    counts = parameter_counts(model)
    text = model.config.get_text_config(decoder=True)
    width = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    width *= text.num_attention_heads
    computed = max(0.0, prompt_tokens - cached)
    steps = max(0.0, new_tokens - 1)
    lm = 2 * counts["language"] * (computed + steps) + 2 * counts["head"] * new_tokens
    keys_prefill = cached + computed / 2  # causal: on average half the new tokens, all the cached ones
    lm += 4 * text.num_hidden_layers * width * (computed * keys_prefill + steps * (prompt_tokens + steps / 2))
    vision_cfg = getattr(model.config, "vision_config", None)
    depth = getattr(vision_cfg, "depth", None) or getattr(vision_cfg, "num_hidden_layers", 0)
    vwidth = getattr(vision_cfg, "embed_dim", None) or getattr(vision_cfg, "hidden_size", 0)
    vision = 2 * counts["vision"] * vision_tokens + 4 * depth * vwidth * vision_tokens ** 2
    return float(lm + vision)


def matmul_peak(device: str) -> dict:
    """The matmul throughput this process gets: bf16 8192^3 products on CUDA (CUDA events), float32
    2048^3 on the CPU. MFU is measured against it, not against a datasheet."""
    import torch

    cuda = device.startswith("cuda")
    n, dtype, reps = (8192, torch.bfloat16, 20) if cuda else (2048, torch.float32, 3)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    if cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        for _ in range(reps):
            a @ b
        end.record()
        torch.cuda.synchronize(device)
        seconds = start.elapsed_time(end) / 1000
    else:
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        seconds = time.perf_counter() - t0
    return dict(peak_tflops=round(2 * n ** 3 * reps / seconds / 1e12, 2), peak_dtype=str(dtype).removeprefix("torch."))


# ---------------------------------------------------------------- command line

def _csv(kind: Callable, allowed: Sequence | None = None) -> Callable[[str], tuple]:
    def parse(text: str) -> tuple:
        try:
            values = tuple(kind(v.strip()) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}") from None
        bad = [v for v in values if allowed is not None and v not in allowed]
        if bad or not values:
            raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(map(str, allowed or ()))}")
        return values
    return parse


def _batch(text: str) -> int | str:
    if text == "auto":
        return text
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    return w, h


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m vlmcls.perf", description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", action="append", help=f"{', '.join(FULL_SIZE)} or a smoke hf-vlm catalog name "
                   "(repeatable; default qwen2-vl-2b)")
    p.add_argument("--ways", type=_csv(int), default=(20, 100, 1000), help="N values (default 20,100,1000)")
    p.add_argument("--batch-sizes", type=_csv(_batch), default=(1, 8, 32),
                   help="sizes or auto (the backend's --batch-size auto), default 1,8,32")
    p.add_argument("--quant", type=_csv(str, ("none", "int8", "nf4")), default=("none",),
                   help="none, int8, nf4 (default none)")
    p.add_argument("--layout", type=_csv(str, prompts.LAYOUTS), default=prompts.LAYOUTS,
                   help="thesis, labels-first (default both)")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    p.add_argument("--images", type=int, default=None,
                   help="images per measurement (default 2x the largest batch size, at least 8)")
    p.add_argument("--image-size", type=_size, default=(500, 375), help="synthetic image size (ImageNet-like)")
    p.add_argument("--new-tokens", type=int, default=12, help="tokens generated per image (forced)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", type=Path, default=None, help="also append the JSON lines to this file")
    p.add_argument("--resolver", type=_csv(str, ("generate", "rank")), default=("generate",),
                   help="generate, rank or both (default generate): what each image costs")
    return p.parse_args(argv)


def _entry(arch: str) -> ModelEntry:
    catalog = load_catalog()
    if arch in FULL_SIZE:
        return catalog[arch]
    entry = catalog.get(arch)
    if entry is None or entry.backend != "hf-vlm" or not entry.smoke:
        smoke = [n for n, e in catalog.items() if e.backend == "hf-vlm" and e.smoke]
        raise SystemExit(f"unknown arch {arch!r}; choose from {', '.join(FULL_SIZE + tuple(smoke))}")
    return entry


def _environment(device: str) -> dict:
    import torch
    import transformers

    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"
    return dict(part="env", device=name, torch=torch.__version__, transformers=transformers.__version__,
                threads=torch.get_num_threads(), **matmul_peak(device))


def run_arch(arch: str, entry: ModelEntry, args, names, device: str, out) -> None:
    models = Models(arch, entry, names, device)
    base = BackendSettings(device=device, max_new_tokens=args.new_tokens, extra=dict(entry.options))
    try:
        for quant in args.quant:
            model, processor, load_notes = models.get(base.with_(quant=quant))
            run_grid(arch, quant, model, processor, base.with_(quant=quant), args, names, out, load_notes)
            del model, processor
    finally:
        models.release()


def run_grid(arch, quant, model, processor, settings, args, names, out, load_notes) -> None:
    peak = getattr(args, "peak_tflops", None)
    fixed = [b for b in args.batch_sizes if b != "auto"] or [32]
    images = synthetic_images(args.images or max(8, 2 * max(fixed)), args.image_size)
    results: dict[tuple, float] = {}
    for layout in args.layout:
        for ways in args.ways:
            queries = make_queries(names, min(ways, len(names)), layout, images)
            for batch_size in args.batch_sizes:
                s = _settings_for(settings.with_(layout=layout), batch_size)
                if "generate" not in getattr(args, "resolver", ("generate",)):
                    _rank_row(arch, quant, model, processor, s, queries, batch_size, ways, None, out)
                    continue
                row = measure(model, processor, s, queries[:B1_IMAGES] if batch_size == 1 else queries,
                              args.new_tokens)
                row["mfu"] = _sig(row["tflop_per_image"] * row["images_per_s"] / peak) if peak else None
                results[(layout, ways, batch_size)] = row["images_per_s"]
                b1 = results.get((layout, ways, 1))
                thesis = results.get((STUDY_LAYOUT, ways, batch_size))
                emit(dict(part="hf_vlm_generate", arch=arch, ways=ways, batch_size=batch_size, quant=quant,
                          layout=layout, device=settings.device, **row,
                          speedup_vs_b1=round(row["images_per_s"] / b1, 2) if b1 else None,
                          speedup_vs_thesis=round(row["images_per_s"] / thesis, 2)
                          if thesis and layout != STUDY_LAYOUT else None,
                          load_notes=load_notes), out)
                if "rank" in getattr(args, "resolver", ()):
                    _rank_row(arch, quant, model, processor, s, queries, batch_size, ways, row["images_per_s"], out)


def _rank_row(arch, quant, model, processor, settings, queries, batch_size, ways, generate_ips, out) -> None:
    row = measure_rank(model, processor, settings, queries[:B1_IMAGES] if batch_size == 1 else queries)
    emit(dict(part="hf_vlm_rank", arch=arch, ways=ways, batch_size=batch_size, quant=quant, layout=settings.layout,
              device=settings.device, **row,
              rank_cost_vs_generate=round(generate_ips / row["images_per_s"], 2) if generate_ips else None), out)


def measure_rank(model, processor, settings: BackendSettings, queries: list[Query]) -> dict:
    """Ranking mode's steady state: one warm-up batch, then every query (each image prefilled once, its
    candidates scored in chunks)."""
    from .backends import rank
    from .backends.hf_vlm import HFVLMBackend

    backend = HFVLMBackend(model, processor, settings.with_(rank=True))
    _timed(backend, queries[:backend.batch_size])
    elapsed, answers = _timed(backend, queries)
    scored = [sum(map(len, rank.sequences(backend.tokenizer, q.labels, backend.eos_ids[0]))) for q in queries[:4]]
    return dict(images_per_s=round(len(queries) / elapsed, 3), s_per_image=round(elapsed / len(queries), 4),
                prompt_tokens=_mean(a.prompt_tokens for a in answers), candidate_tokens=_mean(scored),
                errors=sum(a.error is not None for a in answers), notes=backend.notes)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    entries = {arch: _entry(arch) for arch in args.arch or ["qwen2-vl-2b"]}  # a typo fails before torch loads
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    device = devices.pick_device(args.device)
    names = imagenet_names()
    out = args.out.open("a", encoding="utf-8") if args.out else None
    try:
        env = _environment(device)
        args.peak_tflops = env["peak_tflops"]
        emit(env, out)
        for arch, entry in entries.items():
            run_arch(arch, entry, args, names, device, out)
    finally:
        if out is not None:
            out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
