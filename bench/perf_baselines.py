"""Throughput of the CLIP and classifier baselines, random weights, nothing downloaded.

Full-size models are built from their published configs (CLIP ViT-L/14, ResNet-50, ViT-L/16) and
wrapped in the same DirectBackend that `load()` returns; smoke-* archs go through `load()` itself.
Prints one JSON line per measurement (images/s):
  encode      pixel tensors -> class scores (the model alone; compare with gpu_reference.py's
              clip_vitl14_image_encode / resnet50_classify, run in the same command)
  preprocess  decoded PIL images -> pixel tensors, per image processor backend, W threads
  e2e         JPEG bytes -> decode -> backend.answer (100-way): decoding in the caller's thread
              ("decode=caller") or left lazy so the backend's pool threads decode ("decode=pool")

  python bench/perf_baselines.py --arch resnet-50 --arch clip-vit-l-14 --images 512 --workers 8
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

from vlmcls.backends import baselines  # noqa: E402
from vlmcls.catalog import load_catalog  # noqa: E402
from vlmcls.settings import BackendSettings  # noqa: E402
from vlmcls.smoke.baselines import byte_clip_tokenizer, imagenet_annotations  # noqa: E402
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
    return _timed_text(lambda: baselines.clip_backend(model, processor, labels, settings), device)


def build_resnet50(device, dtype, settings, labels):
    from transformers import ResNetConfig, ResNetForImageClassification

    model = _on_device(lambda: ResNetForImageClassification(ResNetConfig(num_labels=1000)), device, dtype)
    # microsoft/resnet-50 preprocessor_config.json: shortest edge 224 / crop_pct 0.875, bicubic
    processor = _processor_class("ConvNextImageProcessor", settings)(
        size={"shortest_edge": 224}, crop_pct=0.875, resample=3)
    return baselines.classifier_backend(model, processor, labels, settings)


def build_vit_l16(device, dtype, settings, labels):
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                       patch_size=16, image_size=224, num_labels=1000)
    model = _on_device(lambda: ViTForImageClassification(config), device, dtype)
    processor = _processor_class("ViTImageProcessor", settings)(image_mean=[0.5] * 3, image_std=[0.5] * 3)
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


def make_backend(arch: str, device: str, settings: BackendSettings, labels: LabelSet):
    if arch.startswith("smoke-"):
        return baselines.load(load_catalog()[arch], settings, labels)
    _, dtype = baselines.resolve_device(settings)
    return FULL[arch](device, dtype, settings, labels)


# ---------------------------------------------------------------- measurements


def jpeg_bytes(n: int, seed: int = 0) -> list[bytes]:
    """375x500 quality-90 JPEGs (ImageNet val's typical size), as gpu_reference.py's PIL test.
    A few distinct ones, repeated: decoding cost does not depend on which."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    distinct = []
    for _ in range(8):
        buf = io.BytesIO()
        Image.fromarray((rng.random((375, 500, 3)) * 255).astype("uint8")).save(buf, "JPEG", quality=90)
        distinct.append(buf.getvalue())
    return [distinct[i % len(distinct)] for i in range(n)]


def decode(data: bytes, lazy: bool = False):
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    return image if lazy else image.convert("RGB")


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


def measure_e2e(backend, data: list[bytes], n_classes: int, lazy: bool) -> float:
    backend.answer(queries([decode(b) for b in data[:backend.batch_size]], n_classes))  # warm-up
    t = time.perf_counter()
    images = [decode(b, lazy=lazy) for b in data]
    answers = backend.answer(queries(images, n_classes))
    elapsed = time.perf_counter() - t
    assert all(a.error is None for a in answers), answers[0]
    return len(data) / elapsed


def run_arch(arch: str, args, device: str) -> None:
    labels = imagenet_labels(args.classes if arch.startswith("clip") else 1000)
    extra = {"workers": args.workers, **({"image_backend": args.image_backend} if args.image_backend else {})}
    settings = BackendSettings(device=device, batch_size=args.batch, dtype=args.dtype, extra=extra)
    backend = make_backend(arch, device, settings, labels)
    common = dict(arch=arch, device=device, batch=args.batch, workers=args.workers)
    emit(part="encode", **common, img_per_s=round(measure_encode(backend, device, args.batch, args.reps), 1))
    data = jpeg_bytes(args.images)
    decoded = [decode(b) for b in data]
    emit(part="preprocess", **common, image_backend=args.image_backend or "default",
         img_per_s=round(measure_preprocess(backend, decoded, args.workers), 1))
    for lazy in (False, True):
        emit(part="e2e", **common, ways=min(WAYS, len(labels)), decode="pool" if lazy else "caller",
             img_per_s=round(measure_e2e(backend, data, len(labels), lazy), 1))
    backend.close()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", action="extend", nargs="+", choices=ARCHS,
                   help="repeatable; default resnet-50 and clip-vit-l-14")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--dtype", default="auto", help="auto (fp16 on CUDA, fp32 on CPU) | bf16 | fp16 | fp32")
    p.add_argument("--images", type=int, default=None, help="images per e2e run (default 1024 on CUDA, 32 on CPU)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default 256 on CUDA, 16 on CPU)")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="preprocessing threads")
    p.add_argument("--classes", type=int, default=1000, help="CLIP classes to embed (text time grows with it)")
    p.add_argument("--image-backend", choices=("pil", "torchvision"), default=None)
    p.add_argument("--reps", type=int, default=None, help="encode repetitions (default 5 on CUDA, 2 on CPU)")
    return p.parse_args(argv)


def main(argv=None) -> None:
    import torch
    import transformers

    args = parse_args(argv)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    gpu = device.startswith("cuda")
    args.images = args.images or (1024 if gpu else 32)
    args.batch = args.batch or (256 if gpu else 16)
    args.reps = args.reps or (5 if gpu else 2)
    emit(part="env", device=torch.cuda.get_device_name(0) if gpu else "cpu", cores=os.cpu_count(),
         torch=torch.__version__, transformers=transformers.__version__)
    for arch in args.arch or ["resnet-50", "clip-vit-l-14"]:
        run_arch(arch, args, device)


if __name__ == "__main__":
    main()
