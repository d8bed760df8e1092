"""The driver of every backend that answers with a class id directly (the baselines): images decoded
and preprocessed chunks ahead of the model, every class scored, the argmax taken within each query's
own candidates. It knows nothing of how the model was loaded: `score` and the image `Spec` are given.
"""
from __future__ import annotations

import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ..errors import one_line
from ..images import ImageError, decode
from ..types import Answer, Query

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..fastimage import Spec
    from ..settings import BackendSettings

PREFETCH = 2  # chunks preprocessed ahead of the one on the model
WINDOW = 4  # chunks asked of the runner per call, so decoding chunk i+1 overlaps the model on chunk i


class DirectBackend:
    """Decode + preprocess (ahead) -> score every class (model) -> argmax within each query's candidates.

    `score` maps a batch of pixel tensors to a (batch, n_classes) tensor whose column i is dataset
    class i; the loaders guarantee that mapping. With a `spec` (what the HF image processor does,
    see vlmcls.fastimage) images go through `ImagePipeline`: nvJPEG + tensor ops on CUDA, worker
    processes on the CPU. Without one, or with `image_path = "processor"`, the HF processor runs per
    image in a thread pool (the old path). Construct directly to wrap a model built in memory (the
    throughput benchmark does)."""

    kind = "direct"
    decodes_images = True  # the runner hands over each sample's encoded image (bytes or path) as is
    text_embeddings: "torch.Tensor | None" = None  # CLIP only: (n_classes, dim), computed once at load

    def __init__(self, preprocess: Callable[[Any], "torch.Tensor"], score: Callable[["torch.Tensor"], "torch.Tensor"],
                 n_classes: int, settings: "BackendSettings", spec: "Spec | None" = None, device: str = "cpu"):
        from .. import fastimage

        self.preprocess = preprocess  # one PIL image -> (1, 3, H, W) with the HF processor (the old path)
        self.score = score  # (B, 3, H, W) -> (B, n_classes) on the model's device
        self.n_classes = n_classes
        self.batch_size = max(1, settings.batch_size)
        self.window = self.batch_size * WINDOW
        path = image_path(settings)
        workers = settings.extra.get("workers")
        self.pipeline = None if spec is None or path == "processor" else fastimage.ImagePipeline(
            spec, device, path, int(workers) if workers else None)
        threads = max(1, int(workers or min(8, os.cpu_count() or 1)))
        self._pool = None if self.pipeline else ThreadPoolExecutor(threads, thread_name_prefix="vlmcls-preprocess")
        self.notes = [self.pipeline.describe() if self.pipeline else
                      f"images: PIL decode + HF image processor per image in {threads} threads"
                      + ("" if spec else " (no tensor equivalent of this processor)")]

    def answer(self, queries: Sequence[Query]) -> list[Answer]:
        for q in queries:
            self._check_candidates(q)
        chunks = [queries[i:i + self.batch_size] for i in range(0, len(queries), self.batch_size)]
        pending = deque(self._submit(c) for c in chunks[:PREFETCH])
        answers: list[Answer] = []
        in_flight = None
        self._clock = time.perf_counter()
        for i, chunk in enumerate(chunks):
            futures = pending.popleft()
            if i + PREFETCH < len(chunks):  # decoding works ahead while the model runs this chunk
                pending.append(self._submit(chunks[i + PREFETCH]))
            launched = self._launch(chunk, futures)
            if in_flight is not None:  # the previous chunk's scores, read back while this one runs
                answers.extend(self._finish(*in_flight))
            in_flight = launched
        if in_flight is not None:
            answers.extend(self._finish(*in_flight))
        return answers

    def close(self) -> None:
        if self.pipeline is not None:
            self.pipeline.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def _submit(self, chunk: Sequence[Query]) -> list[Future]:
        if self.pipeline is not None:
            return self.pipeline.submit([q.image for q in chunk])
        return [self._pool.submit(_processor_input, self.preprocess, q.image) for q in chunk]

    def _launch(self, chunk: Sequence[Query], futures: list[Future]):
        """Pixels -> scores, queued on the device; the copy back is started, not waited for, so the
        next chunk's decode (nvJPEG's own engine) overlaps this chunk's model."""
        pixels, errors = self._pixels(futures)
        if pixels is None:
            return chunk, errors, None, None
        scores = self.score(pixels).float()
        if scores.device.type != "cuda":
            return chunk, errors, scores, None
        import torch

        host = scores.to("cpu", non_blocking=True)  # pinned: truly asynchronous
        done = torch.cuda.Event()
        done.record()
        return chunk, errors, host, done

    def _pixels(self, futures: list[Future]):
        if self.pipeline is not None:
            return self.pipeline.pixels(futures)
        pixels, errors = [], []
        for f in futures:
            try:
                pixels.append(f.result())
                errors.append(None)
            except Exception as exc:  # one bad image becomes an error row, not a failed run
                errors.append(str(exc) if isinstance(exc, ImageError) else f"preprocessing failed: {one_line(exc, with_type=True)}")
        return (_stack(pixels) if pixels else None), errors

    def _finish(self, chunk: Sequence[Query], errors: list[str | None], scores, done) -> list[Answer]:
        """Class id per query, or the error of a query whose image could not be used."""
        if done is not None:
            done.synchronize()
        rows = iter(scores.numpy() if scores is not None else ())
        scale = getattr(self, "logit_scale", 1.0)  # CLIP: cosine x the model's temperature -> its logits
        picks = [e if e is not None else _ranked_within(next(rows), q.class_ids, scale) for e, q in zip(errors, chunk)]
        now = time.perf_counter()
        latency = (now - self._clock) / len(chunk)  # wall time of the chunk, so latencies sum to the run
        self._clock = now
        return [_answer(p, latency) for p in picks]

    def _check_candidates(self, q: Query) -> None:
        # Misuse, not a bad sample: numpy would silently wrap a negative id to another class.
        if not q.class_ids or min(q.class_ids) < 0 or max(q.class_ids) >= self.n_classes:
            raise ValueError(f"query {q.sample_id}: candidate ids must be non-empty and in "
                             f"[0, {self.n_classes}), got {q.class_ids[:5]}...")


def image_path(settings: "BackendSettings") -> str:
    """options.image_path: auto (nvJPEG on CUDA, worker processes on the CPU) | gpu | processes |
    processor (the HF processor per image, in threads). image_backend = "pil" asks for PIL's exact
    arithmetic, which only the processor path gives."""
    from ..fastimage import PATHS

    path = settings.extra.get("image_path", "auto")
    if path not in PATHS:
        raise ValueError(f"options.image_path must be one of {', '.join(PATHS)}, got {path!r}")
    return "processor" if path == "auto" and settings.extra.get("image_backend") == "pil" else path


def _processor_input(preprocess, source):
    """The old path: an encoded image (or an already decoded one) -> the HF processor's pixels."""
    from ..fastimage import encoded

    image = source if hasattr(source, "mode") else decode(encoded(source))
    return preprocess(image)


def _ranked_within(row, class_ids: Sequence[int], scale: float = 1.0) -> tuple[tuple[int, ...], float]:
    """The top 5 of the query's candidates (best first) and the best one's softmax probability over them."""
    from .rank import ranked

    return ranked(row[list(class_ids)] * scale, class_ids)


def _answer(pick: tuple[tuple[int, ...], float] | str, latency: float) -> Answer:
    if isinstance(pick, str):
        return Answer(stage="error", error=pick, latency_s=latency)
    top, prob = pick
    return Answer(class_id=top[0], stage="direct", latency_s=latency, top5=top, top1_prob=prob)


def _stack(pixels: list) -> "torch.Tensor | dict[str, torch.Tensor]":
    import torch

    if isinstance(pixels[0], dict):  # SigLIP 2 NaFlex: pixel_values, pixel_attention_mask, spatial_shapes
        return {k: torch.cat([p[k] for p in pixels]) for k in pixels[0]}
    return torch.cat(pixels)
