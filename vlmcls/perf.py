"""Throughput of the hf-vlm backend on random-weight models: nothing is downloaded.

The model is built from its published config with random weights (full size: timings are about the
architecture, not the answers) or is one of the smoke tiny models (a CPU check of this script). The
real backend runs on synthetic images with real N-way prompts over the ImageNet class names, in both
prompt layouts, and one JSON line is printed per (arch, quant, layout, ways, batch size):

  images_per_s      steady state over --images images (warm-up batch excluded; labels-first: the label
                    prefix is already cached, as it is for every image after the first in a real run);
                    batch size 1 over the first 16 of them (its rate is steady at once, and slow)
  prefill_s         seconds for one batch generating a single token (prompt processing + 1 step)
  generate_share    share of the timed wall spent inside model.generate (the rest: the host preparing
                    inputs that the prefetch did not hide, decoding answers; 1.0 = the GPU never waits)
  decode_ms_per_step  (generate seconds of a full batch - of its one-token generate) / (new tokens - 1):
                    one decode step of the whole batch, where per-step host overhead shows
  decode_ms_per_step_alone  the same from one whole batch generated alone (prepared before, nothing
                    prepared beside it)
  overlap_slowdown  mean generate seconds of a full batch in the timed run (the next batch being prepared
                    beside it) / the same batch's generate alone: above 1, the prefetch thread slows
                    generation (the GIL, or its image work on the GPU's stream); about 1, it does not
  speedup_vs_b1     images_per_s / the batch-size-1 figure of the same run
  cache             the generation KV cache: dynamic, or static (transformers compiles the decode step on CUDA)
  speedup_vs_dynamic  a static-cache row's images_per_s / the dynamic row's, same ways, layout and batch size
  prefetch          batches prepared ahead in the background thread (--prefetch; 0: none beside generate;
                    "2p": 2 ahead in a spawned process, no GIL shared with generate);
                    speedup_vs_prefetch_default: a row's images_per_s / the default prefetch's, all else equal
  speedup_vs_image_first labels-first images_per_s / the image-first (study) layout's, same ways and batch size
                         (rows measured before 2026-11-27 call it speedup_vs_thesis and layout "thesis")
  prompt_tokens     mean per image (text + image tokens); new_tokens: tokens generated per image
  tflop_per_image   model FLOPs per image: 2 x parameters x tokens for the language model (tokens it
                    computes: a cached label prefix is not recomputed) and the vision tower, + attention
  mfu               tflop_per_image x images_per_s / the matmul peak measured in this process (bf16 on
                    CUDA, float32 on the CPU; the env row gives peak_tflops)
  --profile         after each dynamic-cache row of batch size > 1, a part "profile" row: one more batch under
                    torch.profiler: wall_s, busy_share (CUDA: the device's kernel time / wall),
                    device_top (kernels), host_ops_share and host_top (operators by self time)
  batch size "auto" the backend's --batch-size auto; effective_batch_size is the largest that ran
  --resolver rank   also (or, with "rank" alone, only) ranking mode: part "hf_vlm_rank" rows give
                    images_per_s of scoring every candidate (one prefill per image + the candidates as
                    one token tree, or in chunks: rank_path), candidate_tokens per image (before the tree
                    shares prefixes), and rank_cost_vs_generate = the generate row's
                    images_per_s / rank's (same layout, ways and batch size; the issue's goal: <= 2)

  python -m vlmcls.perf --arch qwen2-vl-2b --quant none,int8 --ways 20,100,1000 --batch-sizes 1,32,auto
  python -m vlmcls.perf --arch smoke-qwen2-vl --ways 20,100 --batch-sizes 1,8 --device cpu
  python -m vlmcls.perf --ways 20,100 --batch-sizes 32 --layout image-first --resolver generate,rank

Compare ratios with ../shared/perf/gpu_reference.py run in the same command, never absolute times
across machines. The models are built in perf_models.py, the FLOPs and the matmul peak counted in
perf_flops.py, a batch profiled in perf_profile.py. In labels-first every image gets the same N
labels (a fixed N-class subset, in class order) so that their KV cache is shared; in image-first
each image gets its own seeded candidate set.
"""
from __future__ import annotations

import argparse
import functools
import json
import random
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Sequence

from . import devices
from . import labels as labels_mod
from . import prompts
from .backends.hf_vlm import PREFETCH
from .catalog import ModelEntry, load_catalog
# bpe_tokenizer, parameter_counts, qwen2_vl_2b, SYSTEM, TOKENS_PER_LABEL: perf.X for tests and ../shared/perf
from .perf_flops import GenerateClock, decode_seconds_per_step, flops_per_image, image_shape, matmul_peak, parameter_counts  # noqa: F401
from .perf_models import FULL_SIZE, SYSTEM, TOKENS_PER_LABEL, Models, bpe_tokenizer, qwen2_vl_2b  # noqa: F401
from .settings import BackendSettings
from .types import Query
from .vocab import LABELS_FIRST, STUDY_LAYOUT, canonical

B1_IMAGES = 16  # batch size 1 is measured on this many images: one at a time, the rate is steady at once


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
    """Image-first (the study's): a seeded candidate set per image. Labels-first: one fixed N-class list for every image."""
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


def measure(model, processor, settings: BackendSettings, queries: list[Query], new_tokens: int) -> tuple[dict, object]:
    """The row's figures, and the backend that ran them (for a profile of one more batch)."""
    from .backends.hf_vlm import HFVLMBackend, length_key

    backend = HFVLMBackend(model, processor, settings)
    with forced_new_tokens(model, new_tokens):
        # warm-up: kernels, allocator, the labels-first prefix; with auto, the size is learnt here and
        # warmed up at the size it chose. The longest queries: the run's first batch is theirs (longest
        # first), and a static cache compiled for a shorter one would be rebuilt inside the timed run
        longest = sorted(queries, key=length_key, reverse=True)
        _timed(backend, longest[:backend.batch_size])
        if backend.auto:
            _timed(backend, queries[:backend.window // 4])
        backend.sizes_run.clear()
        with GenerateClock(model) as clock:
            elapsed, answers = _timed(backend, queries)
    size = max(backend.sizes_run)
    one = HFVLMBackend(model, processor, settings.with_(max_new_tokens=1, batch_size=size, batch_auto=False,
                                                        extra={**settings.extra, "prefetch_process": False}))
    one.share_prefix_cache(backend)  # cached already: prefill_s is the steady state
    batch = queries[:size]
    _timed(one, batch)
    with GenerateClock(model) as one_clock:
        prefill, _ = _timed(one, batch)
    # the same whole batch alone: prepared first, then generated with no next batch being prepared
    with forced_new_tokens(model, new_tokens), GenerateClock(model) as alone_clock:
        _timed(backend, batch)
    full = [t for t, n in clock.calls if n == size]  # whole batches: the last may be smaller
    one_token = one_clock.calls[0][0] if one_clock.calls else None
    alone = alone_clock.calls[0][0] if alone_clock.calls else None
    steps = decode_seconds_per_step(full, one_token, new_tokens)
    steps_alone = decode_seconds_per_step([alone] if alone else [], one_token, new_tokens)
    row = dict(images_per_s=round(len(queries) / elapsed, 3), prefill_s=round(prefill, 4),
               s_per_batch=round(elapsed * size / len(queries), 4),
               generate_share=_sig(clock.total / elapsed), decode_ms_per_step=_sig(1000 * steps) if steps else None,
               decode_ms_per_step_alone=_sig(1000 * steps_alone) if steps_alone else None,
               overlap_slowdown=_sig(sum(full) / len(full) / alone) if full and alone else None,
               prompt_tokens=_mean(a.prompt_tokens for a in answers),
               new_tokens=_mean(a.completion_tokens for a in answers),
               errors=sum(a.error is not None for a in answers),
               effective_batch_size=size, notes=list(dict.fromkeys(backend.notes + one.notes)))
    shape = image_shape(backend, queries[0])
    row["tflop_per_image"] = _sig(flops_per_image(
        model, row["prompt_tokens"] or 0, row["new_tokens"] or 0, shape["vision_tokens"],
        backend.cached_prefix_tokens) / 1e12)
    return row, backend


def profile_batch(backend, queries: list[Query], new_tokens: int) -> dict:
    """One more whole batch of a measured row under torch.profiler (perf_profile.py). Run after the row
    is printed: the profiler slows the host, and a failure of it loses no figure."""
    from .perf_profile import profile_call

    with forced_new_tokens(backend.model, new_tokens):
        return profile_call(lambda: backend.answer(queries[:max(backend.sizes_run)]), backend.model.device.type)


@contextmanager
def forced_new_tokens(model, new_tokens: int):
    """Every answer `new_tokens` long (random weights may stop anywhere): equal work per row."""
    model.generation_config.min_new_tokens = new_tokens
    try:
        yield
    finally:
        model.generation_config.min_new_tokens = None


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


def _prefetch(text: str) -> int | str:
    """N (batches ahead, in the thread) or Np (in a process): the number as an int, with p as text."""
    if _prefetch_options(text)["prefetch"] < 0:
        raise ValueError(text)
    return text if text.endswith("p") else int(text)


def _prefetch_options(value: int | str) -> dict:
    """A --prefetch value as the backend's options: 2 -> prefetch 2 in the thread, "2p" -> in a process."""
    text = str(value)
    return {"prefetch": int(text.rstrip("p")), "prefetch_process": text.endswith("p")}


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
    p.add_argument("--layout", type=_csv(lambda v: canonical("layout", v), prompts.LAYOUTS), default=prompts.LAYOUTS,
                   help="image-first (alias thesis), labels-first (default both)")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    p.add_argument("--images", type=int, default=None,
                   help="images per measurement (default 2x the largest batch size, at least 8)")
    p.add_argument("--image-size", type=_size, default=(500, 375), help="synthetic image size (ImageNet-like)")
    p.add_argument("--new-tokens", type=int, default=12, help="tokens generated per image (forced)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", type=Path, default=None, help="also append the JSON lines to this file")
    p.add_argument("--cache", type=_csv(str, ("dynamic", "static")), default=("dynamic",),
                   help="KV cache for generation: dynamic, static (catalog option static_cache: the decode "
                        "step compiled on CUDA) or both (default dynamic)")
    p.add_argument("--prefetch", type=_csv(_prefetch), default=(PREFETCH,),
                   help=f"batches prepared ahead in the backend's background thread (catalog option prefetch; "
                        f"0: each batch prepared just before it generates, nothing beside generate; a trailing p, "
                        f"e.g. {PREFETCH}p: in a process of its own, option prefetch_process), e.g. "
                        f"{PREFETCH},0,{PREFETCH}p (default {PREFETCH})")
    p.add_argument("--resolver", type=_csv(str, ("generate", "rank")), default=("generate",),
                   help="generate, rank or both (default generate): what each image costs")
    p.add_argument("--profile", action="store_true",
                   help="also profile one batch of each dynamic-cache row with batch size > 1 (torch.profiler; "
                        "perf_profile.py): "
                        "the GPU's busy share of the wall, the top kernels and host operators")
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


def _grid(args) -> list[tuple]:
    """(layout, cache, N, batch size, prefetch) of each row, in run order: the cache outermost, so that
    every N's dynamic-cache rows (the default) come before the static cache's, whose first batches
    compile: a caller's timeout costs those first."""
    return [(layout, cache, ways, b, f) for layout in args.layout for cache in getattr(args, "cache", ("dynamic",))
            for ways in args.ways for b in args.batch_sizes for f in getattr(args, "prefetch", (PREFETCH,))]


def run_grid(arch, quant, model, processor, settings, args, names, out, load_notes) -> None:
    peak = getattr(args, "peak_tflops", None)
    fixed = [b for b in args.batch_sizes if b != "auto"] or [32]
    images = synthetic_images(args.images or max(8, 2 * max(fixed)), args.image_size)
    results: dict[tuple, float] = {}
    queries_for = functools.cache(lambda layout, ways: make_queries(names, min(ways, len(names)), layout, images))
    for layout, cache, ways, batch_size, prefetch in _grid(args):
        queries = queries_for(layout, ways)
        s = _settings_for(settings.with_(layout=layout, extra={
            **settings.extra, **_prefetch_options(prefetch), "static_cache": cache == "static"}), batch_size)
        # transformers keeps the largest static cache length of earlier calls: each row sizes its own
        model._previous_max_cache_length = -1
        if "generate" not in getattr(args, "resolver", ("generate",)):
            _rank_row(arch, quant, model, processor, s, queries, batch_size, ways, None, out)
            continue
        row, backend = measure(model, processor, s, queries[:B1_IMAGES] if batch_size == 1 else queries,
                               args.new_tokens)
        row["mfu"] = _sig(row["tflop_per_image"] * row["images_per_s"] / peak) if peak else None
        results[(layout, ways, batch_size, cache, prefetch)] = row["images_per_s"]
        b1 = results.get((layout, ways, 1, cache, prefetch))
        study = results.get((STUDY_LAYOUT, ways, batch_size, cache, prefetch))
        dynamic = results.get((layout, ways, batch_size, "dynamic", prefetch))
        default = results.get((layout, ways, batch_size, cache, PREFETCH))
        emit(dict(part="hf_vlm_generate", arch=arch, ways=ways, batch_size=batch_size, quant=quant,
                  layout=layout, cache=cache, prefetch=prefetch, device=settings.device, **row,
                  speedup_vs_dynamic=round(row["images_per_s"] / dynamic, 2)
                  if dynamic and cache != "dynamic" else None,
                  speedup_vs_prefetch_default=round(row["images_per_s"] / default, 2)
                  if default and prefetch != PREFETCH else None,
                  speedup_vs_b1=round(row["images_per_s"] / b1, 2) if b1 else None,
                  speedup_vs_image_first=round(row["images_per_s"] / study, 2)
                  if study and layout != STUDY_LAYOUT else None,
                  load_notes=load_notes), out)
        # not static-cache rows: a profiler around CUDA-graph replays is unproven here, and a hang
        # there would cost the rows after it
        if getattr(args, "profile", False) and batch_size != 1 and cache == "dynamic" and prefetch == PREFETCH:
            emit(dict(part="profile", arch=arch, ways=ways, batch_size=batch_size, quant=quant, layout=layout,
                      cache=cache, **profile_batch(backend, queries, args.new_tokens)), out)
        backend.stop_workers()
        if "rank" in getattr(args, "resolver", ()):
            _rank_row(arch, quant, model, processor, s, queries, batch_size, ways, row["images_per_s"], out)


def _rank_row(arch, quant, model, processor, settings, queries, batch_size, ways, generate_ips, out) -> None:
    row = measure_rank(model, processor, settings, queries[:B1_IMAGES] if batch_size == 1 else queries)
    emit(dict(part="hf_vlm_rank", arch=arch, ways=ways, batch_size=batch_size, quant=quant, layout=settings.layout,
              device=settings.device, **row,
              rank_cost_vs_generate=round(generate_ips / row["images_per_s"], 2) if generate_ips else None), out)


def measure_rank(model, processor, settings: BackendSettings, queries: list[Query]) -> dict:
    """Ranking mode's steady state: one warm-up batch, then every query (each image prefilled once, its
    candidates scored by the backend's rank path)."""
    from .backends import rank
    from .backends.hf_vlm import HFVLMBackend

    backend = HFVLMBackend(model, processor, settings.with_(rank=True))
    _timed(backend, queries[:backend.batch_size])
    elapsed, answers = _timed(backend, queries)
    scored = [sum(map(len, rank.sequences(backend.tokenizer, q.labels, backend.eos_ids[0]))) for q in queries[:4]]
    return dict(images_per_s=round(len(queries) / elapsed, 3), s_per_image=round(elapsed / len(queries), 4),
                prompt_tokens=_mean(a.prompt_tokens for a in answers), candidate_tokens=_mean(scored),
                errors=sum(a.error is not None for a in answers), rank_path=backend.rank_path, notes=backend.notes)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    entries = {arch: _entry(arch) for arch in args.arch or ["qwen2-vl-2b"]}  # a typo fails before torch loads
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    device = devices.pick_device(args.device)
    if reason := devices.unavailable(device):
        raise SystemExit(reason)
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
