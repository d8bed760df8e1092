""""auto" -> a device and a dtype, once for every backend and the NLI resolver.

torch is imported only to settle "auto", so that naming an explicit device stays torch-free.
"""
from __future__ import annotations

import os
from typing import Any, Callable

from .vocab import DTYPE_ALIASES, DTYPES


def pick_device(device: str = "auto") -> str:
    """"auto" -> "cuda" when torch sees a GPU, else "cpu" (also without torch); others unchanged."""
    if device != "auto":
        return device
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def device_kind(device: str) -> str:
    """"cuda" for any CUDA device ("cuda:1" too), else the device's own name; "auto" is settled first."""
    device = pick_device(device)
    return "cuda" if device.startswith("cuda") else device


def unavailable(device: str) -> str | None:
    """Why `device` cannot be used here (a CUDA device asked for where torch sees none, or an index past
    the GPUs there are), or None: scripts stop on it with one line instead of a CUDA traceback."""
    if device == "mps":
        import torch

        return None if torch.backends.mps.is_available() else "--device mps but this machine has no Apple GPU (MPS) torch can use"
    if not device.startswith("cuda"):
        return None
    if device_kind("auto") != "cuda":
        return f"--device {device} but no CUDA GPU is visible here"
    import torch

    index = int(device.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        return f"--device {device} but this machine has {torch.cuda.device_count()} CUDA GPU(s)"
    return None


def worker_device() -> str:
    """"auto", or on a multi-GPU machine under xdist this worker's own GPU (gw3 -> cuda:3 % count),
    so that `-n 8` on eight GPUs puts one worker on each instead of all on cuda:0."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        return "auto"
    try:
        import torch

        count = torch.cuda.device_count()
    except Exception:  # no torch, or a broken CUDA install: let "auto" decide later, and say why there
        return "auto"
    return f"cuda:{int(worker[2:]) % count}" if count > 1 else "auto"


def half_dtype() -> str:
    """bfloat16 where the GPU has it, float16 on cards before Ampere."""
    import torch

    return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"


def ran_on(model) -> str:
    """Where a loaded model runs and in what precision ("cuda:0, bfloat16"), for the report: "auto" in the
    settings says what was asked, this what it became."""
    device, dtype = getattr(model, "device", None), getattr(model, "dtype", None)
    text = f"{device}, {str(dtype).removeprefix('torch.')}"
    if str(device).startswith("cpu") and str(dtype).removeprefix("torch.") in ("float16", "bfloat16"):
        text += " (half precision on the CPU: slower than float32 there)"
    return text


def pick_dtype(dtype: str | None, device: str, gpu: str | Callable[[], str] = "bfloat16") -> str:
    """The dtype's canonical name ("bf16" -> "bfloat16"). "auto" (or None): `gpu` on a CUDA device (a
    name, or a function asked only there), float32 elsewhere, where half precision is slow."""
    if dtype in (None, "auto"):
        if not pick_device(device).startswith("cuda"):
            return "float32"
        return gpu() if callable(gpu) else gpu
    name = DTYPE_ALIASES.get(dtype, dtype)
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of: {', '.join(DTYPES)}")
    return name


def torch_dtype(name: str) -> Any:
    """"bfloat16" -> torch.bfloat16 (aliases accepted)."""
    import torch

    return getattr(torch, pick_dtype(name, "cpu"))
