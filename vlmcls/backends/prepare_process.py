"""The hf-vlm backend's batches prepared in a separate process (catalog option prefetch_process).

Why: a small VLM's decode step is host-bound (Python launching operators, holding the GIL), and the
prefetch thread's preparing (chat template, tokenizer, image processor: Python too) shares that GIL, so
it stretches the decode steps it overlaps (bench/perf_prefetch.py: 1.6-3.5x per step on the CPU). In a
process of its own the preparing shares nothing with generate; the main process only copies the
finished tensors to the model's device.

The worker is spawned (not forked: the parent runs CUDA, OpenMP and tokenizer threads) once per backend
with a copy of the backend's state minus the model, and prepares with the backend's own code
(`HFVLMBackend._prepare`), on the CPU: images are processed there, not on the GPU. Its notes come back
with each batch. Importing this module never imports torch.
"""
from __future__ import annotations

import os
import pickle
import types
from typing import Any

_WORKER: Any = None  # the backend shell in the worker process


class ModelStub:
    """What preparing asks of the model: where tensors go (the CPU, here) and the compute dtype."""

    def __init__(self, dtype) -> None:
        import torch

        self.device, self.dtype = torch.device("cpu"), dtype


def worker_state(backend) -> dict:
    """The backend's attributes that preparing uses, picklable: everything but the model, the prefix cache,
    the pool and functions set on the instance (wrappers, spies: they belong to this process)."""
    state = {k: v for k, v in backend.__dict__.items()
             if k not in ("model", "_prefix", "_pool") and not isinstance(v, (types.FunctionType, types.MethodType))}
    state.update(image_device=None, notes=[], model_dtype=backend.model.dtype, backend_class=type(backend))
    return state


def start(state: dict):
    """A one-process pool whose worker holds a backend shell built from `state`."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_init, initargs=(state,))


def _init(state: dict) -> None:
    global _WORKER
    import torch

    torch.set_num_threads(max(1, min(4, (os.cpu_count() or 1) // 2)))  # the parent's threads need cores too
    cls = state.pop("backend_class")  # HFVLMBackend (pickled by name: no import cycle between the modules)
    shell = cls.__new__(cls)
    dtype = state.pop("model_dtype")
    shell.__dict__.update(state)
    shell.model = ModelStub(dtype)
    _WORKER = shell


def prepare(batch: list) -> tuple[Any, list[str], int]:
    """(the prepared batch, the notes the worker added since the last call, the worker's pid)."""
    prep = _WORKER._prepare(batch)
    if prep.error is not None:
        try:
            pickle.dumps(prep.error)
        except Exception:  # an exception that cannot travel back: its type and message as text
            prep.error = RuntimeError(f"{type(prep.error).__name__}: {prep.error}")
    notes, _WORKER.notes = _WORKER.notes, []
    return prep, notes, os.getpid()
