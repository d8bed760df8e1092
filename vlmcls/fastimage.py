"""Encoded images -> model-ready pixel batches, at the speed of the hardware.

The HF image processors run per image in Python (~600 img/s on 8 threads), far below what a CLIP or
ResNet encoder eats on a GPU. This module does the same arithmetic as transformers' torchvision
("fast") image processors, as batched tensor ops:

  decode      JPEG: nvJPEG on CUDA (`decode_jpegs_cuda`, the hardware decoder on A100/H100) or
              libjpeg-turbo on the CPU (bit-identical to PIL); anything else (PNG, CMYK, EXIF-rotated,
              16-bit, tiny, huge, broken) goes through `images.decode`, image by image, so every
              image gets exactly what the PIL path gives it and a broken one becomes one error.
  resize/crop `torchvision.transforms.v2.functional.resize` (antialiased, uint8 in, uint8 out) and
              the processor's centre crop, same sizes, same rounding, images grouped by shape.
  normalise   `(x - mean/rescale) / (std/rescale)` in float32, fused exactly as transformers does.

On the CPU decoding and resizing run in worker processes (one per core, not threads: the GIL and the
per-image Python overhead capped threads at ~1.3 cores); on CUDA in the calling process.
`ImagePipeline` splits the work into a CPU part that can run ahead (`submit`) and a device part
(`pixels`). What a processor does (its Spec) and the resize/crop/normalise tensor ops are in
vlmcls.imageproc. torch is imported inside functions so `import vlmcls` stays light.
"""
from __future__ import annotations

import atexit
import io
import os
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

from .imageproc import Spec, center_crop, normalise, resize_crop, spec_of
from .images import MAX_SIDE, MIN_SIDE, ImageError, decode

# Re-exported: callers and tests name them as fastimage.X (the processor arithmetic lives in vlmcls.imageproc).
__all__ = ["PATHS", "ImagePipeline", "Spec", "center_crop", "decode_many", "encoded", "normalise", "plain_jpeg",
           "resize_crop", "spec_of", "to_tensor"]

JPEG_MAGIC = b"\xff\xd8\xff"
RGB_MODE = 3  # torchvision.io.ImageReadMode.RGB
PATHS = ("auto", "gpu", "processes", "processor")  # options.image_path values


# ---------------------------------------------------------------- decoding


def encoded(source) -> bytes:
    """The encoded bytes of a sample's image (bytes, or a path read here)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if isinstance(source, (str, Path)):
        try:
            return Path(source).read_bytes()
        except FileNotFoundError:
            raise ImageError(f"image file not found: {source}") from None
        except OSError as exc:
            raise ImageError(f"cannot read image file: {exc}") from None
    raise ImageError(f"unsupported image source: {type(source).__name__}")


def plain_jpeg(data: bytes) -> bool:
    """A JPEG whose plain RGB decode is what `images.decode` returns: 3-channel or grey, no EXIF
    rotation, sides within [MIN_SIDE, MAX_SIDE]. Reads the header only (~25 us)."""
    if not data.startswith(JPEG_MAGIC):
        return False
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format != "JPEG" or img.mode not in ("RGB", "L"):
                return False
            if not (MIN_SIDE <= min(img.size) and max(img.size) <= MAX_SIDE):
                return False
            return img.getexif().get(0x0112, 1) in (0, 1)
    except Exception:  # let the PIL path produce the one error message
        return False


def to_tensor(image):
    """A PIL image -> uint8 (3, H, W), RGB (grey and palette images converted, as the processors do)."""
    import numpy as np
    import torch

    if image.mode != "RGB":
        image = image.convert("RGB")
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous()  # a copy: writable


def _ops():
    """torchvision's image ops (registered when torchvision loads). Called directly: the Python
    wrappers warn on every call that they are deprecated (torchvision 0.29) in favour of TorchCodec."""
    import torch
    import torchvision  # noqa: F401

    return torch.ops.image


def decode_cpu(source):
    """bytes | path | PIL image -> uint8 (3, H, W) on the CPU; raises ImageError."""
    import torch

    if hasattr(source, "mode") and hasattr(source, "size"):  # already a PIL image
        return to_tensor(source)
    data = encoded(source)
    if plain_jpeg(data):
        try:
            return _ops().decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), RGB_MODE, False)
        except RuntimeError:
            pass  # libjpeg refused (truncated...): PIL gives the error text or a tolerant decode
    return to_tensor(decode(data))


def decode_many(sources: Sequence[Any], device: str = "cpu") -> list[Any]:
    """Sources -> uint8 (3, H, W) tensors on `device`, or the ImageError of each one that failed.
    JPEGs are decoded in one nvJPEG batch on CUDA; the rest (and CPU devices) one by one.
    Usable by any backend whose processor takes tensors (e.g. hf-vlm with a torchvision processor)."""
    prepared = prepare(sources, gpu=str(device).startswith("cuda"))
    return finish_decode(prepared, device)


def prepare(sources: Sequence[Any], gpu: bool) -> list[Any]:
    """The CPU part of decoding: per source, a 1-D uint8 tensor of JPEG bytes for nvJPEG (gpu=True),
    a decoded uint8 (3, H, W) CPU tensor, or an ImageError."""
    import torch

    out: list[Any] = []
    for s in sources:
        try:
            if gpu and not hasattr(s, "mode"):
                data = encoded(s)
                if plain_jpeg(data):
                    out.append(("jpeg", torch.frombuffer(bytearray(data), dtype=torch.uint8)))
                    continue
                s = data
            out.append(decode_cpu(s))
        except ImageError as exc:
            out.append(exc)
        except Exception as exc:  # an odd image must cost one row, not the batch
            out.append(ImageError(f"preprocessing failed: {type(exc).__name__}: {exc}".splitlines()[0]))
    return out


def finish_decode(prepared: list[Any], device: str) -> list[Any]:
    """Decodes the nvJPEG part of `prepare`'s output in one batch; moves the rest to `device`."""
    jpegs = [i for i, p in enumerate(prepared) if isinstance(p, tuple)]
    decoded = _nvjpeg([prepared[i][1] for i in jpegs], device) if jpegs else []
    out = list(prepared)
    for i, img in zip(jpegs, decoded):
        out[i] = img
    return [p if isinstance(p, Exception) else p.to(device, non_blocking=True) for p in out]


def _nvjpeg(datas: list[Any], device: str) -> list[Any]:
    """One batched nvJPEG call; if the batch fails (it has no partial results), image by image,
    and an image nvJPEG refuses goes through PIL (its error, if any, is the sample's)."""
    import torch

    ops = _ops()
    try:
        return list(ops.decode_jpegs_cuda(datas, RGB_MODE, torch.device(device)))
    except RuntimeError:
        out = []
        for d in datas:
            try:
                out.append(ops.decode_jpegs_cuda([d], RGB_MODE, torch.device(device))[0])
            except RuntimeError:
                try:
                    out.append(to_tensor(decode(d.numpy().tobytes())))
                except ImageError as exc:
                    out.append(exc)
        return out


# ---------------------------------------------------------------- worker processes (CPU decode)


def _work(sources: list[Any], spec: Spec) -> list[Any]:
    """In a worker process: sources -> resized, cropped uint8 numpy arrays (3, h, w), or error text."""
    out: list[Any] = []
    for s in sources:
        try:
            out.append(resize_crop([decode_cpu(s)], spec)[0].numpy())
        except ImageError as exc:
            out.append(str(exc))
        except Exception as exc:  # a bug or an odd image must cost one row, not the chunk
            out.append(f"preprocessing failed: {type(exc).__name__}: {exc}".splitlines()[0])
    return out


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)  # one process per core; intra-op threads would oversubscribe


_POOLS: dict[int, Executor] = {}
# a forked child (a DataLoader worker, a user's multiprocessing "fork") inherits the dict but not the
# pools' threads or pipes: its first submit would wait forever. It starts its own pools instead.
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_POOLS.clear)


def worker_pool(workers: int) -> Executor:
    """A process pool shared by every pipeline with this many workers (started once: ~1-3 s).
    forkserver with torch preloaded: workers fork from a clean process that never touched CUDA or
    the caller's threads, without paying the torch import each."""
    if workers not in _POOLS:
        import multiprocessing as mp

        if workers <= 1:
            _POOLS[workers] = ThreadPoolExecutor(1, thread_name_prefix="vlmcls-decode")
        else:
            method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
            ctx = mp.get_context(method)
            if method == "forkserver":
                ctx.set_forkserver_preload(["torch", "torchvision.transforms.v2.functional", "PIL.Image",
                                            "vlmcls.fastimage"])
            _POOLS[workers] = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker)
    return _POOLS[workers]


@atexit.register
def _close_pools() -> None:
    for pool in _POOLS.values():
        pool.shutdown(wait=False, cancel_futures=True)
    _POOLS.clear()


# ---------------------------------------------------------------- the pipeline


def default_workers() -> int:
    """Worker processes for CPU decoding: one per core up to 16, but none (one background thread) on
    a small machine, where the model needs the cores and pickling images costs more than it saves
    (2 cores: ~300 img/s in a thread, a fraction of that with 2 processes)."""
    cores = os.cpu_count() or 1
    return 1 if cores <= 4 else min(16, cores)


class ImagePipeline:
    """sources -> (float32 pixels (n_ok, 3, h, w) on `device`, per source None or its error text).

    path "gpu": prepare (read, sniff headers, PIL fallbacks) in a thread, nvJPEG + resize on CUDA.
    path "processes": decode + resize in `workers` processes, normalise on `device`."""

    def __init__(self, spec: Spec, device: str, path: str = "auto", workers: int | None = None):
        if path not in PATHS[:3]:
            raise ValueError(f"image path must be one of {', '.join(PATHS[:3])}, got {path!r}")
        self.spec, self.device = spec, str(device)
        if path == "auto":
            path = "gpu" if self.device.startswith("cuda") and nvjpeg_available() else "processes"
        if path == "gpu" and not self.device.startswith("cuda"):
            raise ValueError("image path 'gpu' needs a CUDA device")
        self.path = path
        self.workers = workers or default_workers()
        self._threads = ThreadPoolExecutor(1, thread_name_prefix="vlmcls-prepare") if path == "gpu" else None

    def describe(self) -> str:
        where = f"{self.workers} worker processes" if self.workers > 1 else "a background thread"
        how = ("nvJPEG batch decode + resize/crop/normalise on " + self.device if self.path == "gpu" else
               f"decode + resize/crop in {where}, normalise on {self.device}")
        h, w = self.spec.out_size
        return (f"images: {how}; tensor ops matching transformers' {self.spec.source} "
                f"({self.spec.interpolation}, antialias, {h}x{w}); non-JPEG/rotated/odd images via PIL")

    def submit(self, sources: Sequence[Any]) -> list[Future]:
        """Starts the CPU part now; `pixels` collects it."""
        if self.path == "gpu":
            return [self._threads.submit(prepare, list(sources), True)]
        pool = worker_pool(self.workers)
        step = max(4, -(-len(sources) // self.workers))  # one task per worker, a few images at least
        return [pool.submit(_work, list(sources[i:i + step]), self.spec) for i in range(0, len(sources), step)]

    def pixels(self, futures: list[Future]) -> tuple[Any, list[str | None]]:
        import torch
        from concurrent.futures.process import BrokenProcessPool

        try:
            parts = [x for f in futures for x in f.result()]
        except BrokenProcessPool:
            _POOLS.pop(self.workers, None)  # the next call starts a fresh pool
            raise
        if self.path == "gpu":
            decoded = finish_decode(parts, self.device)
            errors = [str(d) if isinstance(d, Exception) else None for d in decoded]
            ok = [d for d in decoded if not isinstance(d, Exception)]
            return (normalise(resize_crop(ok, self.spec), self.spec) if ok else None), errors
        errors = [p if isinstance(p, str) else None for p in parts]
        ok = [torch.from_numpy(p) for p in parts if not isinstance(p, str)]
        if not ok:
            return None, errors
        return normalise(torch.stack(ok).to(self.device, non_blocking=True), self.spec), errors

    def close(self) -> None:
        if self._threads is not None:
            self._threads.shutdown(wait=True, cancel_futures=True)


def nvjpeg_available() -> bool:
    import torch

    try:
        return torch.cuda.is_available() and hasattr(_ops(), "decode_jpegs_cuda")
    except (RuntimeError, AttributeError):
        return False
