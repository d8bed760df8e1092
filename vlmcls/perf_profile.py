"""Where one batch's time goes (`python -m vlmcls.perf --profile`): torch.profiler around one call.

On CUDA: the device's busy share of the wall (kernels, copies and memsets, summed) and the kernels that
take most of it; on any device: the host operators with the most self time. A busy share well under 1
says the GPU waits for the host (launch overhead, Python, preprocessing not hidden); near 1 with a
matmul kernel on top says the arithmetic itself bounds the batch. The profiler adds host overhead, so
the wall here is a little longer than the unprofiled figures of the same row.
"""
from __future__ import annotations

import time
from typing import Callable

from .errors import one_line


def _short(name: str, width: int = 72) -> str:
    return name if len(name) <= width else name[:width - 1] + "…"


def _top(events, key: str, wall_us: float, top: int) -> list[dict]:
    ranked = sorted(events, key=lambda e: getattr(e, key, 0.0), reverse=True)[:top]
    return [dict(name=_short(e.key), share=round(getattr(e, key) / wall_us, 4), calls=int(e.count))
            for e in ranked if getattr(e, key, 0.0) > 0]


def profile_call(run: Callable[[], object], device_type: str, top: int = 8) -> dict:
    """Profile `run()` once: wall_s, busy_share (CUDA only), top device kernels (CUDA only) and top host
    operators by self time, each with its share of the wall. A profiler failure is an `error` entry,
    never an exception: the figures measured without it stand."""
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = device_type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    try:
        sync()
        start = time.perf_counter()
        with profile(activities=activities) as prof:
            run()
            sync()
        wall_us = (time.perf_counter() - start) * 1e6
        return _summary(prof.key_averages(), wall_us, cuda, top, DeviceType)
    except Exception as exc:  # e.g. CUPTI unavailable, a clash with CUDA graphs, an event field renamed
        return dict(error=one_line(exc, with_type=True))


def _summary(events, wall_us: float, cuda: bool, top: int, DeviceType) -> dict:
    events = [e for e in events if not getattr(e, "is_user_annotation", False)]  # ranges, not work: no double count
    host = [e for e in events if e.device_type == DeviceType.CPU]
    result = dict(wall_s=round(wall_us / 1e6, 4))
    if cuda:
        kernels = [e for e in events if e.device_type == DeviceType.CUDA]
        result.update(busy_share=round(sum(e.self_device_time_total for e in kernels) / wall_us, 4),
                      device_top=_top(kernels, "self_device_time_total", wall_us, top))
    # the host's time inside operators; the rest of the wall is Python, waiting, or the GPU's tail
    result["host_ops_share"] = round(sum(e.self_cpu_time_total for e in host) / wall_us, 4)
    result["host_top"] = _top(host, "self_cpu_time_total", wall_us, top)
    return result
