"""Throughput of the NLI resolver: vlmcls's Resolver on a full-size random BART-large-MNLI, nothing downloaded.

The model is BART-large-MNLI's architecture from a config written here (random weights, saved in
float32 as the hub's checkpoint is, loaded back by the Resolver as the product loads it). A
byte-level BPE tokenizer trained here on ImageNet's annotations and answer-like text keeps the
premise-hypothesis pairs at realistic lengths (~26 tokens, as BART's own tokenizer gives).
Prints one JSON line per measurement:
  setup       build time, parameters, mean tokens per pair
  peak        matmul TFLOP/s measured in this process, in each dtype the NLI runs in
  resolve     s per answer through Resolver.resolve_many: every answer of a batch (--answers, a VLM
              batch) goes to the model together; NLI dtype, forward passes, MFU (model FLOPs / peak).
              With --compile both, after every uncompiled row, one more per N with the model through
              torch.compile (--nli-compile): first_call_s (the first includes the compile),
              speedup_vs_eager, equal_decisions_vs_eager
  per_answer  the same kind of answers resolved one by one (what batching across answers saves)
  agreement   float32 against the NLI dtype on the same answers: s per answer in float32, share of
              equal decisions, and how close float32's own top two were where they differ (random
              weights give near-ties that a trained model would not)

With --overlap: whole cases instead (CaseRunner, as pytest runs them) of the full-size random
Qwen2-VL-2B (vlmcls.perf_models) answering synthetic JPEGs, its answers resolved by this BART, without
and with --nli-overlap (the NLI of window k beside the VLM's window k+1). Random weights answer garbage;
--nli-share of the answers (a seeded hash, not their text) go to the NLI, the rest count as matched.
  overlap        per run: wall_s, images_per_s, nli_s (the resolver's NLI seconds), answers sent to NLI
  overlap_ratio  speedup = wall without / wall with; hidden = the share of the NLI seconds it saved;
                 same_predictions: the two runs' rows agree

  python bench/perf_nli.py                                          # GPU: 20/100/1000-way, ~60 s on an H100
  python bench/perf_nli.py --device cpu --ways 20 --answers 2       # a check on the CPU
  python bench/perf_nli.py --ways 100,1000 --compile both           # GPU: uncompiled vs torch.compile
  python bench/perf_nli.py --overlap                                # GPU: 100-way, 320 images, ~80 s on an H100
  python bench/perf_nli.py --overlap --tiny --device cpu            # the smoke models: a functional check
Issue #13's target (one H100/H200): <= 0.06 s per answer at 1000 candidates, <= 0.01 s at 100.
"""
from __future__ import annotations

import argparse
import io
import json
import random
import shutil
import sys
import tempfile
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from vlmcls import devices  # noqa: E402
from vlmcls import labels as labels_mod  # noqa: E402
from vlmcls import resolve  # noqa: E402

# Answers a VLM gives when it names no candidate: these are what reaches the NLI stage.
OPENINGS = ("It looks like", "The image shows", "Probably", "Hard to say, possibly", "I think this is",
            "This seems to be", "Most likely", "A blurry picture of")
SUBJECTS = ("some kind of large striped animal resting near the water", "a household object made of metal",
            "a vehicle of some sort", "something round and colourful on a table", "a bird sitting on a branch",
            "an insect on a leaf", "a musical instrument", "some food on a plate", "a dog running on grass",
            "a building with a tall tower", "a piece of clothing", "a small boat at sea")
TAILS = ("", " in the centre of the frame", " on a plain white background", ", though the light is poor",
         ", seen from above", " next to a person", " with some blur around the edges")
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
ID2LABEL = {0: "contradiction", 1: "neutral", 2: "entailment"}


def emit(**row) -> None:
    print(json.dumps(row), flush=True)


def answers(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.choice(OPENINGS)} {rng.choice(SUBJECTS)}{rng.choice(TAILS)}." for _ in range(n)]


def bpe_tokenizer(target: Path):
    """A byte-level BPE (vocab 6,000) trained on the label names and answer-like text, as a BartTokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import BartTokenizer

    text = ", ".join(labels_mod.imagenet_annotations()) + " " + " ".join(answers(200)) + " This example is"
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator([text] * 3, trainers.BpeTrainer(
        vocab_size=6000, special_tokens=SPECIALS, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    tok = BartTokenizer(vocab=model["vocab"], merges=merges)
    tok.save_pretrained(target)
    return tok


def bart_large_mnli_config(vocab_size: int):
    """facebook/bart-large-mnli's architecture, written out (its vocabulary is 50,265; ours is smaller,
    which changes the embedding table only, not the FLOPs of a forward pass)."""
    from transformers import BartConfig

    return BartConfig(
        vocab_size=vocab_size, d_model=1024, encoder_layers=12, decoder_layers=12, encoder_attention_heads=16,
        decoder_attention_heads=16, encoder_ffn_dim=4096, decoder_ffn_dim=4096, max_position_embeddings=1024,
        activation_function="gelu", scale_embedding=False, num_labels=3, id2label=ID2LABEL,
        label2id={v: k for k, v in ID2LABEL.items()}, pad_token_id=1, bos_token_id=0, eos_token_id=2,
        decoder_start_token_id=2, forced_bos_token_id=0,
    )


def build_model(target: Path, device: str):
    """Random weights initialised on the device (fast), saved in float32 like the hub's checkpoint."""
    import torch
    from transformers import BartForSequenceClassification

    tok = bpe_tokenizer(target)
    config = bart_large_mnli_config(len(tok))
    torch.manual_seed(0)
    with torch.device(device):
        model = BartForSequenceClassification(config).eval()
    model.save_pretrained(target)
    params = sum(p.numel() for p in model.parameters())
    del model
    return tok, config, params


def flops_per_pair(config, tokens: int) -> float:
    """Forward FLOPs of one pair: 2 x matmul weights x tokens, plus attention scores and mixing
    (encoder self; decoder self and cross, all over the same length). Embeddings and the 3-way head
    are left out."""
    d, ffn_e, ffn_d = config.d_model, config.encoder_ffn_dim, config.decoder_ffn_dim
    weights = config.encoder_layers * (4 * d * d + 2 * d * ffn_e) + config.decoder_layers * (8 * d * d + 2 * d * ffn_d)
    attention = 4 * tokens * tokens * d * (config.encoder_layers + 2 * config.decoder_layers)
    return 2 * weights * tokens + attention


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_peak(device: str, dtype: str) -> float:
    """FLOP/s of a large square matmul in `dtype` on `device`."""
    import torch

    n, reps = (8192, 20) if device.startswith("cuda") else (1024, 3)
    a = torch.randn(n, n, device=device, dtype=getattr(torch, dtype))
    b = torch.randn(n, n, device=device, dtype=getattr(torch, dtype))
    for _ in range(3):
        a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - t)


def timed(fn, device: str, budget_s: float = 2.0, reps: int = 3) -> float:
    """Best wall time of up to `reps` runs (fewer when one run takes over budget_s / reps)."""
    best, spent = float("inf"), 0.0
    for _ in range(reps):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        dt = time.perf_counter() - t
        best, spent = min(best, dt), spent + dt
        if spent > budget_s:
            break
    return best


class Bench:
    def __init__(self, args, path: Path, tok, config):
        self.args, self.path, self.tok, self.config = args, path, tok, config
        self.device = args.device
        self.labels = labels_mod.imagenet_labelset()
        self.dtype = resolve.nli_dtype(self.device)
        self.peaks: dict[str, float] = {}
        self.eager: dict[int, tuple[float, list]] = {}  # N -> (s, resolutions) of its uncompiled row

    def peak(self, dtype: str) -> float:
        if dtype not in self.peaks:
            self.peaks[dtype] = matmul_peak(self.device, dtype)
            emit(part="peak", device=self.device, dtype=dtype, tflops=round(self.peaks[dtype] / 1e12, 2))
        return self.peaks[dtype]

    def items(self, ways: int, n: int, seed: int = 0) -> list[tuple[str, list[int]]]:
        rng = random.Random(ways * 1000 + seed)
        return [(text, rng.sample(range(len(self.labels)), ways)) for text in answers(n, seed)]

    def flops(self, items) -> tuple[float, int]:
        """Model FLOPs and real (unpadded) tokens of resolving `items` by NLI."""
        premises, hyps = [], []
        for text, ids in items:
            for name in sorted({self.labels.names[c] for c in ids}):
                premises.append(text)
                hyps.append(resolve.HYPOTHESIS.format(name))
        lengths = [len(x) for x in self.tok(premises, hyps, truncation="only_first")["input_ids"]]
        return sum(flops_per_pair(self.config, n) for n in lengths), sum(lengths)

    def resolver(self, dtype: str = "auto", compile: bool = False) -> resolve.Resolver:
        r = resolve.Resolver("nli", self.labels, nli_model=str(self.path), device=self.device, nli_dtype=dtype,
                             nli_batch_tokens=self.args.batch_tokens, nli_compile=compile)
        r.warm()
        return r

    def resolve_row(self, ways: int, compiled: bool = False) -> None:
        """s per answer at `ways` candidates; a compiled row compares itself with the uncompiled row of
        the same N, if one ran before it."""
        items = self.items(ways, self.args.answers)
        flops, tokens = self.flops(items)
        r, passes = self.resolver(compile=compiled), []
        handle = None if compiled else r.pipeline().model.register_forward_hook(lambda *a: passes.append(1))
        t = time.perf_counter()
        got = r.resolve_many(items)  # untimed: warms kernels and the allocator at full size (compiles)
        first_s = time.perf_counter() - t
        if handle is not None:
            handle.remove()
        s = timed(lambda: r.resolve_many(items), self.device)
        row = dict(part="resolve", device=self.device, ways=ways, answers=len(items), dtype=self.dtype,
                   compile=compiled, s_per_answer=round(s / len(items), 5), pairs_per_s=round(len(items) * ways / s),
                   tokens_per_pair=round(tokens / (len(items) * ways), 1), passes=len(passes) or None,
                   batch_tokens=self.args.batch_tokens, tflops=round(flops / s / 1e12, 2),
                   mfu=round(flops / s / self.peak(self.dtype), 3), target_s=TARGETS.get(ways))
        if not compiled:
            self.eager[ways] = s, got
        else:
            row["first_call_s"] = round(first_s, 2)  # with the compile (once per process and model)
            if ways in self.eager:
                row["speedup_vs_eager"] = round(self.eager[ways][0] / s, 3)
                row["equal_decisions_vs_eager"] = sum(a == b for a, b in zip(got, self.eager[ways][1]))
        emit(**row)

    def per_answer_row(self, ways: int) -> None:
        r, items = self.resolver(), self.items(ways, min(self.args.answers, 8), seed=1)
        s = timed(lambda: [r.resolve(text, ids) for text, ids in items], self.device)
        emit(part="per_answer", device=self.device, ways=ways, answers=len(items), dtype=self.dtype,
             s_per_answer=round(s / len(items), 5))

    def agreement_row(self, ways: int) -> None:
        half = self.dtype if self.dtype != "float32" else "bfloat16"  # on a CPU: what bf16 would change
        items = [(t, sorted({self.labels.names[c] for c in ids}))
                 for t, ids in self.items(ways, min(self.args.answers, 8), seed=2)]
        p32 = resolve.nli_pipeline(str(self.path), self.device, "float32")
        ph = resolve.nli_pipeline(str(self.path), self.device, half)
        resolve.entailment_scores(ph, items[:1], self.args.batch_tokens)  # warm the float32 model's kernels
        resolve.entailment_scores(p32, items[:1], self.args.batch_tokens)
        t = time.perf_counter()
        a = resolve.entailment_scores(p32, items, self.args.batch_tokens)  # returns on the CPU: synchronised
        s32 = time.perf_counter() - t
        b = resolve.entailment_scores(ph, items, self.args.batch_tokens)
        same = [int(x.argmax() == y.argmax()) for x, y in zip(a, b)]
        # where they differ: float32's gap between its winner and half's, over float32's score range
        gaps = [float(x.max() - x[y.argmax()]) / max(float(x.max() - x.min()), 1e-30)
                for x, y, ok in zip(a, b, same) if not ok]
        emit(part="agreement", device=self.device, ways=ways, answers=len(items), dtype=half,
             equal_decisions=sum(same), fp32_s_per_answer=round(s32 / len(items), 5),
             max_abs_diff=round(max(float((x - y).abs().max()) for x, y in zip(a, b)), 6),
             score_range=round(max(float(x.max() - x.min()) for x in a), 6),
             worst_gap_of_differing=round(max(gaps), 5) if gaps else None)


TARGETS = {100: 0.01, 1000: 0.06}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--ways", default=None, help="candidates per answer, comma-separated (default 20,100,1000; "
                   "--overlap: 100)")
    p.add_argument("--answers", type=int, default=32, help="answers resolved together (a VLM batch)")
    p.add_argument("--batch-tokens", type=int, default=resolve.NLI_BATCH_TOKENS, help="padded tokens per forward pass")
    p.add_argument("--compile", choices=("off", "on", "both"), default="off",
                   help="resolve rows with the NLI model uncompiled, through torch.compile (--nli-compile), or both")
    p.add_argument("--skip", action="extend", nargs="+", default=[], choices=("per_answer", "agreement"))
    p.add_argument("--overlap", action="store_true", help="time whole VLM + NLI cases without and with --nli-overlap")
    p.add_argument("--tiny", action="store_true", help="--overlap with the smoke VLM and NLI (a functional check)")
    p.add_argument("--images", type=int, default=None, help="--overlap: images per run (default 320; --tiny 48)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="--overlap: VLM batch, default 32 (--tiny 4); the runner's window is 4 batches")
    p.add_argument("--new-tokens", type=int, default=12, help="--overlap: tokens generated per image (forced)")
    p.add_argument("--nli-share", type=float, default=1.0, help="--overlap: share of the answers sent to the NLI")
    p.add_argument("--repeats", type=int, default=1, help="--overlap: runs of each mode, alternating (best kept)")
    args = p.parse_args(argv)
    args.ways = args.ways or ("100" if args.overlap else "20,100,1000")
    args.compile = {"off": (False,), "on": (True,), "both": (False, True)}[args.compile]
    args.batch_size = args.batch_size or (4 if args.tiny else 32)
    try:
        args.ways = tuple(int(w) for w in args.ways.split(","))
    except ValueError:
        p.error(f"--ways takes integers separated by commas, not {args.ways!r}")
    args.device = devices.pick_device(args.device)
    if reason := devices.unavailable(args.device):
        raise SystemExit(reason)
    return args


# ---------------------------------------------------------------- --overlap: whole cases, NLI beside the VLM

class ForcedShare(resolve.Resolver):
    """The NLI resolver, but only `share` of the answers reach the model (chosen by a hash of the answer
    and its candidates); the others count as matched to their first candidate, at no cost."""

    share = 1.0

    def _rules(self, text, class_ids):
        if zlib.crc32(repr((text, class_ids)).encode()) < self.share * 2 ** 32:
            return None, True
        return resolve.Resolution(class_ids[0], "match"), False


def jpeg_samples(n: int, size=(500, 375)) -> list:
    from vlmcls.perf import synthetic_images
    from vlmcls.types import Sample

    out = []
    for i, image in enumerate(synthetic_images(n, size)):
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=90)
        out.append(Sample(f"img{i}", (i * 37) % 1000, buf.getvalue()))
    return out


def overlap_vlm(args, labels):
    """(catalog entry, settings, backend): the full-size random Qwen2-VL-2B, or with --tiny the smoke one."""
    from vlmcls import backends, perf_models
    from vlmcls.backends import hf_vlm
    from vlmcls.catalog import load_catalog
    from vlmcls.settings import resolve_settings

    entry = load_catalog()["smoke-qwen2-vl" if args.tiny else "qwen2-vl-2b"]
    cli = dict(device=args.device, batch_size=args.batch_size, batch_auto=False, max_new_tokens=args.new_tokens)
    settings = resolve_settings(cli, {**entry.defaults(), "quant": "none"})
    if args.tiny:
        backend = backends.load(entry, settings, labels)
    else:
        model, processor = perf_models.qwen2_vl_2b(labels.names, args.device, hf_vlm.torch_dtype(settings, args.device))
        backend = hf_vlm.HFVLMBackend(model, processor, settings, name=entry.name)
    backend.model.generation_config.min_new_tokens = args.new_tokens  # equal lengths: random weights stop anywhere
    return entry, settings, backend


def overlap_case(args, vlm, resolver, ways: int, items, overlap: bool) -> dict:
    from vlmcls.runner import CaseRunner, CaseSpec

    entry, settings, backend = vlm
    spec = CaseSpec(model=entry, ways=ways, settings=settings, resolver="nli", nli_model=resolver.nli_model,
                    nli_overlap=overlap)
    sync(args.device)
    t = time.perf_counter()
    result = CaseRunner(spec, resolver.labels, backend, resolver, None).run(items)
    sync(args.device)
    wall = time.perf_counter() - t
    return dict(wall_s=round(wall, 3), images_per_s=round(len(items) / wall, 2), nli_s=round(result.stage_seconds.get("nli", 0.0), 3),
                nli_answers=sum(p.stage == "nli" for p in result.predictions), errors=sum(p.error is not None for p in result.predictions),
                notes=[n for n in result.notes if "overlap" in n], preds=[p.pred_id for p in result.predictions])


def overlap_rows(args, vlm, resolver) -> None:
    items = jpeg_samples(args.images or (48 if args.tiny else 320))
    window = getattr(vlm[2], "window", args.batch_size)
    for ways in args.ways:
        for overlap in (False, True):  # warm-up, one batch: kernels, allocator, the NLI's own stream
            overlap_case(args, vlm, resolver, ways, items[:args.batch_size], overlap)
        best: dict[bool, dict] = {}
        for _ in range(args.repeats):
            for overlap in (False, True):
                row = overlap_case(args, vlm, resolver, ways, items, overlap)
                emit(part="overlap", device=args.device, ways=ways, images=len(items), windows=-(-len(items) // window),
                     overlap=overlap, nli_share=args.nli_share, **{k: v for k, v in row.items() if k != "preds"})
                if overlap not in best or row["wall_s"] < best[overlap]["wall_s"]:
                    best[overlap] = row
        off, on = best[False], best[True]
        emit(part="overlap_ratio", device=args.device, ways=ways, images=len(items), wall_off_s=off["wall_s"],
             wall_on_s=on["wall_s"], speedup=round(off["wall_s"] / on["wall_s"], 3),
             hidden=round((off["wall_s"] - on["wall_s"]) / off["nli_s"], 3) if off["nli_s"] else None,
             same_predictions=off["preds"] == on["preds"], faster="overlap" if on["wall_s"] < off["wall_s"] else "serial")


def overlap_main(args) -> None:
    import torch

    labels = labels_mod.imagenet_labelset()
    target = Path(tempfile.mkdtemp(prefix="perf-nli-"))
    try:
        t = time.perf_counter()
        nli_model = "smoke:bart-mnli" if args.tiny else str(target)
        if not args.tiny:
            build_model(target, args.device)
        resolver = ForcedShare("nli", labels, nli_model=nli_model, device=args.device, nli_batch_tokens=args.batch_tokens)
        resolver.share = args.nli_share
        resolver.warm()
        vlm = overlap_vlm(args, labels)
        emit(part="setup", device=args.device, torch=torch.__version__, tiny=args.tiny, vlm=vlm[0].name, nli=nli_model,
             batch_size=args.batch_size, window=getattr(vlm[2], "window", None), new_tokens=args.new_tokens,
             build_and_load_s=round(time.perf_counter() - t, 1),
             gpu=torch.cuda.get_device_name() if args.device.startswith("cuda") else None)
        overlap_rows(args, vlm, resolver)
    finally:
        shutil.rmtree(target, ignore_errors=True)


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch

    torch.set_grad_enabled(False)
    if args.overlap:
        return overlap_main(args)
    target = Path(tempfile.mkdtemp(prefix="perf-nli-"))
    try:
        t = time.perf_counter()
        tok, config, params = build_model(target, args.device)
        bench = Bench(args, target, tok, config)
        bench.resolver()
        enc = tok(answers(1)[0], resolve.HYPOTHESIS.format("tiger shark"))
        emit(part="setup", device=args.device, torch=torch.__version__, params_m=round(params / 1e6, 1),
             tokens_example=len(enc["input_ids"]), build_and_load_s=round(time.perf_counter() - t, 1),
             gpu=torch.cuda.get_device_name() if args.device.startswith("cuda") else None)
        # every uncompiled row first: a compile that outlasts the caller's timeout costs only the compiled rows
        for compiled in args.compile:
            for ways in args.ways:
                bench.resolve_row(ways, compiled)
        for ways in args.ways:
            if "per_answer" not in args.skip:
                bench.per_answer_row(ways)
            if "agreement" not in args.skip:
                bench.agreement_row(ways)
    finally:
        shutil.rmtree(target, ignore_errors=True)


if __name__ == "__main__":
    main()
