"""Throughput of the CLIP and classifier baselines, random weights, nothing downloaded.

Full-size models are built from their published configs (CLIP ViT-L/14, ResNet-50, ViT-L/16) and
wrapped in the same DirectBackend that `load()` returns; smoke-* archs go through `load()` itself.
Prints one JSON line per measurement (images/s):
  encode      pixel tensors -> class scores (the model alone; compare with gpu_reference.py's
              clip_vitl14_image_encode / resnet50_classify, run in the same command)
  preprocess  decoded PIL images -> pixel tensors with the HF image processor, W threads (old path)
  decode      JPEG bytes -> pixel tensors on the device by vlmcls.fastimage, per path
  e2e         JPEG bytes -> backend.answer (100-way), per image path: "processor" (the old path: PIL
              decode + HF processor in W threads), "gpu" (nvJPEG + tensor ops), "processes" (decode +
              resize in worker processes); `of_encode` = e2e / encode
  equal       the new path's pixels against the HF processor's (grey levels, max and mean) and the
              share of e2e answers equal to the old path's

Images: ImageNet-val-like JPEGs (quality 90, the usual 500x375 / 375x500 / 500x333 ... sizes, smooth
colour with grain: ~90 KB, where pure noise would be ~3x larger and slower to decode than photos).

  python bench/perf_baselines.py --arch resnet-50 --arch clip-vit-l-14 --images 2048
  python bench/perf_baselines.py --arch smoke-clip --device cpu      # seconds, a smoke test
"""
from __future__ import annotations

import argparse
import io
import json
import os
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from vlmcls import devices  # noqa: E402
from vlmcls.backends import baselines  # noqa: E402
from vlmcls.catalog import load_catalog  # noqa: E402
from vlmcls.settings import BackendSettings  # noqa: E402
from vlmcls.labels import imagenet_annotations  # noqa: E402
from vlmcls.smoke.baselines import byte_clip_tokenizer  # noqa: E402
from vlmcls.types import LabelSet, Query  # noqa: E402

ARCHS = ("clip-vit-l-14", "resnet-50", "vit-l-16", "smoke-clip", "smoke-resnet", "smoke-vit")
WAYS = 100


def emit(**row) -> None:
    print(json.dumps(row), flush=True)


def imagenet_labels(n: int) -> LabelSet:
    synonyms = tuple(tuple(s.strip() for s in a.split(",")) for a in imagenet_annotations()[:n])
    return LabelSet(names=tuple(s[0] for s in synonyms), synonyms=synonyms)


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ---------------------------------------------------------------- full-size random models


def _on_device(build, device: str, dtype):
    """Initialise straight on the device in the target dtype (CPU init of ViT-L in fp32 is slow)."""
    import torch

    with torch.device(device):
        torch.set_default_dtype(dtype)
        try:
            return build().eval()
        finally:
            torch.set_default_dtype(torch.float32)


def build_clip_l14(device, dtype, settings, labels):
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor

    # openai/clip-vit-large-patch14 config.json
    config = CLIPConfig(
        text_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                         max_position_embeddings=77, vocab_size=49408, projection_dim=768),
        vision_config=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                           patch_size=14, image_size=224, projection_dim=768),
        projection_dim=768)
    model = _on_device(lambda: CLIPModel(config), device, dtype)
    # Byte-level tokenizer: ~3x more tokens per prompt than CLIP's BPE, so text time is an upper bound.
    images = _processor_class("CLIPImageProcessor", settings)()  # defaults = the checkpoint's
    processor = CLIPProcessor(image_processor=images, tokenizer=byte_clip_tokenizer())
    backend = _timed_text(lambda: baselines.clip_backend(model, processor, labels, settings), device)
    _BUILT["clip-vit-l-14"] = (model, processor, backend.text_embeddings)
    return backend


def build_resnet50(device, dtype, settings, labels):
    from transformers import ResNetConfig, ResNetForImageClassification

    model = _on_device(lambda: ResNetForImageClassification(ResNetConfig(num_labels=1000)), device, dtype)
    # microsoft/resnet-50 preprocessor_config.json: shortest edge 224 / crop_pct 0.875, bicubic
    processor = _processor_class("ConvNextImageProcessor", settings)(
        size={"shortest_edge": 224}, crop_pct=0.875, resample=3,
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    _BUILT["resnet-50"] = (model, processor, None)
    return baselines.classifier_backend(model, processor, labels, settings)


def build_vit_l16(device, dtype, settings, labels):
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                       patch_size=16, image_size=224, num_labels=1000)
    model = _on_device(lambda: ViTForImageClassification(config), device, dtype)
    processor = _processor_class("ViTImageProcessor", settings)(image_mean=[0.5] * 3, image_std=[0.5] * 3)
    _BUILT["vit-l-16"] = (model, processor, None)
    return baselines.classifier_backend(model, processor, labels, settings)


def _processor_class(name: str, settings):
    import transformers

    suffix = "Pil" if settings.extra.get("image_backend") == "pil" else ""
    return getattr(transformers, name + suffix)


def _timed_text(make, device):
    t = time.perf_counter()
    backend = make()
    sync(device)
    emit(part="text_embeddings", classes=backend.text_embeddings.shape[0], s=round(time.perf_counter() - t, 2))
    return backend


FULL = {"clip-vit-l-14": build_clip_l14, "resnet-50": build_resnet50, "vit-l-16": build_vit_l16}


_BUILT: dict = {}


def make_backend(arch: str, device: str, settings: BackendSettings, labels: LabelSet, quiet: bool = False):
    """A backend for `arch`; full-size models are built once and rewrapped for each image path."""
    if arch.startswith("smoke-"):
        return baselines.load(load_catalog()[arch], settings, labels)
    if arch in _BUILT:
        model, processor, text = _BUILT[arch]
        if text is not None:
            return baselines.clip_backend(model, processor, labels, settings, text=text)
        return baselines.classifier_backend(model, processor, labels, settings)
    _, dtype = baselines.resolve_device(settings)
    return FULL[arch](device, dtype, settings, labels)


# ---------------------------------------------------------------- measurements


SIZES = ((500, 375), (375, 500), (500, 333), (500, 500), (333, 500), (500, 400), (400, 500), (640, 480))


def jpeg_bytes(n: int, seed: int = 0) -> list[bytes]:
    """n JPEGs, 16 distinct ones (sizes above) repeated: decoding cost does not depend on which."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    distinct = []
    for i in range(16):
        w, h = SIZES[i % len(SIZES)]
        coarse = Image.fromarray((rng.random((h // 24, w // 24, 3)) * 255).astype("uint8")).resize((w, h), Image.BICUBIC)
        arr = np.clip(np.asarray(coarse).astype(int) + rng.integers(-20, 20, (h, w, 3)), 0, 255).astype("uint8")
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "JPEG", quality=90)
        distinct.append(buf.getvalue())
    return [distinct[i % len(distinct)] for i in range(n)]


def decode(data: bytes):
    from PIL import Image

    return Image.open(io.BytesIO(data)).convert("RGB")


def queries(images, n_classes: int, seed: int = 0) -> list[Query]:
    rng = random.Random(seed)
    ways = min(WAYS, n_classes)
    return [Query(sample_id=str(i), image=im, class_ids=tuple(rng.sample(range(n_classes), ways)), labels=(), prompt="")
            for i, im in enumerate(images)]


def measure_encode(backend, device: str, batch: int, reps: int) -> float:
    import torch

    pixels = torch.cat([backend.preprocess(decode(b)) for b in jpeg_bytes(1)] * batch)
    backend.score(pixels)  # warm-up (cuDNN autotune, lazy init)
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        backend.score(pixels)
    sync(device)
    return batch * reps / (time.perf_counter() - t)


def measure_preprocess(backend, images, workers: int) -> float:
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(backend.preprocess, images[:workers]))  # warm-up
        t = time.perf_counter()
        list(pool.map(backend.preprocess, images))
        return len(images) / (time.perf_counter() - t)


def measure_decode(pipeline, data: list[bytes], batch: int) -> float:
    pipeline.pixels(pipeline.submit(data[:batch]))  # warm-up (nvJPEG init, worker start)
    sync(pipeline.device)
    t = time.perf_counter()
    for i in range(0, len(data), batch):
        pipeline.pixels(pipeline.submit(data[i:i + batch]))
    sync(pipeline.device)
    return len(data) / (time.perf_counter() - t)


def measure_e2e(backend, data: list[bytes], n_classes: int) -> tuple[float, list]:
    """JPEG bytes in, answers out, as the runner hands them over (encoded: the backend decodes)."""
    backend.answer(queries(data[:backend.batch_size], n_classes))  # warm-up
    qs = queries(data, n_classes)  # candidate sets drawn before the clock (~50 us each, not image work)
    t = time.perf_counter()
    answers = backend.answer(qs)
    elapsed = time.perf_counter() - t
    assert all(a.error is None for a in answers), answers[0]
    return len(data) / elapsed, [a.class_id for a in answers]


def pixel_agreement(backend, data: list[bytes]) -> dict:
    """New path's pixels vs the HF processor's on the same decoded images, in grey levels."""
    import torch

    pixels, _ = backend.pipeline.pixels(backend.pipeline.submit(data))
    ref = torch.cat([backend.preprocess(decode(b)) for b in data]).to(pixels.device)
    std = torch.tensor(backend.pipeline.spec.std, device=pixels.device).view(1, 3, 1, 1) * 255
    diff = (pixels - ref).abs() * std
    return {"max_levels": round(diff.max().item(), 3), "mean_levels": round(diff.mean().item(), 4)}


def run_arch(arch: str, args, device: str) -> None:
    labels = imagenet_labels(args.classes if arch.startswith("clip") else 1000)
    extra = {"workers": args.workers, **({"image_backend": args.image_backend} if args.image_backend else {})}
    settings = BackendSettings(device=device, batch_size=args.batch, dtype=args.dtype, extra=extra)
    backend = make_backend(arch, device, settings, labels)
    common = dict(arch=arch, device=device, batch=args.batch)
    encode = measure_encode(backend, device, args.batch, args.reps)
    emit(part="encode", **common, img_per_s=round(encode, 1))
    data = jpeg_bytes(args.images)
    emit(part="preprocess", **common, path="processor", threads=args.workers, image_backend=args.image_backend or "default",
         img_per_s=round(measure_preprocess(backend, [decode(b) for b in data[:512]], args.workers), 1))
    backend.close()
    paths = args.path or (["processor", "gpu", "processes"] if device.startswith("cuda") else ["processor", "processes"])
    picks = {}
    for path in paths:
        new_settings = settings.with_(extra={**extra, "image_path": path,
                                             "workers": args.workers if path == "processor" else args.procs})
        b = make_backend(arch, device, new_settings, labels, quiet=True)
        if b.pipeline is not None:
            emit(part="decode", **common, path=path, workers=b.pipeline.workers,
                 img_per_s=round(measure_decode(b.pipeline, data, args.batch), 1))
        rate, picks[path] = measure_e2e(b, data, len(labels))
        emit(part="e2e", **common, path=path, ways=min(WAYS, len(labels)),
             workers=b.pipeline.workers if b.pipeline else args.workers,
             img_per_s=round(rate, 1), of_encode=round(rate / encode, 3), note=b.notes[0])
        if b.pipeline is not None:
            same = sum(x == y for x, y in zip(picks[path], picks.get("processor", picks[path]))) / len(data)
            emit(part="equal", **common, path=path, **pixel_agreement(b, jpeg_bytes(16, seed=1)),
                 answers_equal_to_processor=round(same, 4))
        b.close()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", action="extend", nargs="+", choices=ARCHS,
                   help="repeatable; default resnet-50 and clip-vit-l-14")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--dtype", default="auto", help="auto (fp16 on CUDA, fp32 on CPU) | bf16 | fp16 | fp32")
    p.add_argument("--images", type=int, default=None, help="images per e2e run (default 2048 on CUDA, 64 on CPU)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default 256 on CUDA, 16 on CPU)")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="threads of the old processor path")
    p.add_argument("--procs", type=int, default=None, help="worker processes of the 'processes' path (default: cores, at most 16)")
    p.add_argument("--path", action="extend", nargs="+", choices=("processor", "gpu", "processes"),
                   help="image paths to time end to end (default: all that the device has)")
    p.add_argument("--classes", type=int, default=1000, help="CLIP classes to embed (text time grows with it)")
    p.add_argument("--image-backend", choices=("pil", "torchvision"), default=None)
    p.add_argument("--reps", type=int, default=None, help="encode repetitions (default 5 on CUDA, 2 on CPU)")
    return p.parse_args(argv)


def main(argv=None) -> None:
    import torch
    import transformers

    args = parse_args(argv)
    device = devices.pick_device(args.device)
    if reason := devices.unavailable(device):
        raise SystemExit(reason)
    gpu = device.startswith("cuda")
    args.images = args.images or (2048 if gpu else 64)
    args.batch = args.batch or (256 if gpu else 16)
    args.reps = args.reps or (5 if gpu else 2)
    args.procs = args.procs or min(16, os.cpu_count() or 1)
    sample = jpeg_bytes(16)
    emit(part="env", device=torch.cuda.get_device_name(0) if gpu else "cpu", cores=os.cpu_count(),
         torch=torch.__version__, transformers=transformers.__version__,
         jpeg_kb=round(sum(map(len, sample)) / len(sample) / 1024, 1))
    for arch in args.arch or ["resnet-50", "clip-vit-l-14"]:
        run_arch(arch, args, device)


if __name__ == "__main__":
    main()
