"""--batch-size auto for the hf-vlm backend: the first batch of a kind of query (ways, layout) runs at
AUTO_FIRST images; its CUDA memory peak per image sizes the batches after it. Out-of-memory halving (in
the backend) stays as the safety net.

`AutoBatchSize` is a mixin of the backend; it uses the backend's `auto`, `batch_size`, `model`, `family`,
`note()` and keeps what it learnt in `_auto_sizes`. Importing this module never imports torch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from ..settings import BackendSettings
    from ..types import Query

AUTO_FIRST = 8  # --batch-size auto: the first batch of a case, whose memory peak sizes the rest
AUTO_MAX = 256  # beyond this the GPU is saturated and a batch only delays the store
AUTO_HEADROOM = 0.8  # share of the memory left after the weights that batches may plan to use


class AutoBatchSize:
    """Learning the largest batch that fits, per (ways, labels-first)."""

    def _fit_auto(self, query: "Query") -> None:
        """Before cutting a batch: the size learnt for this kind of query (ways, layout), if any."""
        if self.auto:
            self.batch_size = self._auto_sizes.get(_auto_key(query), min(self.batch_size, AUTO_FIRST))

    def _probe_start(self, batch: "list[Query]") -> int | None:
        """Bytes in use before the first batch of a kind (the weights, mostly), with the peak counter reset;
        None when nothing is to be learnt."""
        if not self.auto or _auto_key(batch[0]) in self._auto_sizes or not _is_cuda(self.model.device):
            return None
        return _gpu_memory(self.model.device, reset_peak=True)["allocated"]

    def _learn_auto(self, batch: "list[Query]", base: int) -> None:
        """After the first batch of a kind (the longest prompts come first): the largest batch that its
        memory peak per image allows. Out-of-memory halving stays as the safety net."""
        mem = _gpu_memory(self.model.device)
        budget = mem["free"] + mem["reserved"] - base  # what other processes hold stays theirs
        per_image = max(1, mem["peak"] - base) / len(batch)
        size = max(1, min(AUTO_MAX, int(AUTO_HEADROOM * budget / per_image), self.family.max_batch or AUTO_MAX))
        key = _auto_key(batch[0])
        self._auto_sizes[key] = size
        self.note(f"batch size auto: {size} at {key[0]}-way{' labels-first' if key[1] else ''} "
                  f"({per_image / 2**20:.0f} MiB per image at batch {len(batch)})")


def wants_auto(settings: "BackendSettings", device) -> bool:
    """--batch-size auto, or no size given on a GPU: the largest batch that fits."""
    auto = getattr(settings, "batch_auto", None)
    return bool(auto) if auto is not None else _is_cuda(device)


def _auto_key(query: "Query") -> tuple[int, bool]:
    return len(query.labels), bool(query.prefix)


def _is_cuda(device) -> bool:
    return getattr(device, "type", str(device).split(":")[0]) == "cuda"


def _gpu_memory(device, reset_peak: bool = False) -> dict[str, int]:
    """The CUDA allocator's counters in bytes (allocated, peak, reserved) and the device's free memory."""
    import torch

    if reset_peak:
        torch.cuda.reset_peak_memory_stats(device)
    free, _ = torch.cuda.mem_get_info(device)
    return dict(allocated=torch.cuda.memory_allocated(device), peak=torch.cuda.max_memory_allocated(device),
                reserved=torch.cuda.memory_reserved(device), free=free)

