"""The window loop of one case: images decoded a window ahead, the backend answers, the resolver
decides, rows are stored window by window (a kill loses at most the windows in flight).

With --nli-overlap (`CaseRunner.overlaps()`), window k's resolution (match + NLI, record, store,
progress) runs in one worker thread while the backend answers window k+1; at most one resolution is in
flight, so rows are stored in the same order as without it. On a GPU the NLI then runs on a CUDA stream
of its own: the VLM's synchronisations (generate checks its stopping criteria every step) wait for the
VLM's kernels only, not for the NLI's. The runner (vlmcls.runner) passes itself in; nothing here
imports it.
"""
from __future__ import annotations

import contextlib
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Sequence

FAIL_FAST = 8  # this many samples in a row, all failed, from the start: the backend is broken (wrong URL...)


@dataclass(frozen=True)
class BudgetStop:
    """--max-cost stopped the case after `done` of its `total` requests (this run and stored runs; an
    image is `orders` requests, one per candidate order). Kept as data, not only as the note's
    sentence, because the gate fails such a case (vlmcls.gate): it scored only its first samples."""

    max_cost: float
    done: int
    total: int
    orders: int = 1


def run_windows(runner: Any, todo: Sequence[Any], already: int, total: int, overlap: bool = False):
    """(fresh predictions in order, seconds of work, why the case stopped early or "", and the
    BudgetStop when that was --max-cost, else None)."""
    loop = _Loop(runner, todo, already, total, overlap)
    return (*loop.run(), loop.budget)


class _Loop:
    def __init__(self, runner: Any, todo: Sequence[Any], already: int, total: int, overlap: bool):
        self.r, self.todo, self.already, self.total, self.overlap = runner, todo, already, total, overlap
        self.fresh: list = []
        self.elapsed = 0.0
        self.answered = 0  # samples answered so far, this run
        self.all_failed = True  # every one of them an error row (answer errors are row errors)
        self.inflight: Future | None = None
        self.budget: BudgetStop | None = None  # set when --max-cost stops the case
        self.stream = _nli_stream(runner.resolver) if overlap else None

    def run(self) -> tuple[list, float, str]:
        r, start = self.r, 0
        r.progress(self.already, self.total)
        # Decoding runs in threads one window ahead, so the model never waits for JPEG decoding
        # (PIL releases the GIL while it decodes and resizes).
        with ThreadPoolExecutor(max(1, r.decode_workers)) as pool, \
                ThreadPoolExecutor(1, thread_name_prefix="vlmcls-resolve") as worker:
            batch = r.next_batch(self.todo, start)
            pending = [pool.submit(r.read_image, s) for s in batch]
            while batch:
                t0 = time.perf_counter()
                images = [f.result() for f in pending]
                start += len(batch)
                ahead = r.spec.max_cost is None  # under a budget the next size depends on this batch's cost
                following = r.next_batch(self.todo, start) if ahead else []
                pending = [pool.submit(r.read_image, s) for s in following]
                stopped = self._window(worker, r.answer_batch(batch, images), t0)
                if stopped:
                    return self.fresh, self.elapsed, stopped
                if not ahead:
                    following = r.next_batch(self.todo, start)
                    pending = [pool.submit(r.read_image, s) for s in following]
                batch = following
            t0 = time.perf_counter()
            self._wait()
            self.elapsed += time.perf_counter() - t0
        return self.fresh, self.elapsed, self._budget_stop() if start < len(self.todo) else ""

    def _window(self, worker: ThreadPoolExecutor, answered, t0: float) -> str:
        """Window k answered: window k-1's rows are stored first, then k is resolved here or handed to
        the worker. Returns why the case stops here, or ""."""
        self._wait()
        if self._failing(answered):
            self._finish(answered, t0)
            return f"stopped after the first {len(self.fresh)} samples all failed (e.g. {self.fresh[0].error[:200]})"
        if self.overlap:
            self.inflight = worker.submit(self._resolve_store, answered, self.already + self.answered)
            self.elapsed += time.perf_counter() - t0
        else:
            self._finish(answered, t0)
        return ""

    def _budget_stop(self) -> str:
        done, budget, k = self.already + len(self.fresh), self.r.spec.max_cost, self.r.spec.orders
        self.budget = BudgetStop(budget, done, self.total, k)
        from .report.text import usd

        why = f"spent {usd(self.r.spent[0])} USD, this run and stored runs of this case"
        if k > 1:  # each image is K requests: counting them as "samples" read as more images than the table's n
            return f"stopped by --max-cost {budget:g} USD after {done} requests ({k} per image, one per order; {why})"
        return f"stopped by --max-cost {budget:g} USD after {done} samples ({why})"

    def _failing(self, answered) -> bool:
        """FAIL_FAST, decided from the answers (a row is an error exactly when its answer is), so that
        it stops at the same window with or without overlap."""
        answers = answered[2]
        self.answered += len(answers)
        self.all_failed = self.all_failed and all(a.error is not None for a in answers)
        return self.answered >= FAIL_FAST and self.all_failed

    def _finish(self, answered, t0: float) -> None:
        """Resolve here (its seconds are the case's; storing is not), then store."""
        preds = self.r.resolve_batch(answered)
        self.elapsed += time.perf_counter() - t0
        self._store(preds, self.already + self.answered)
        self.fresh.extend(preds)

    def _resolve_store(self, answered, done: int) -> list:
        """The worker's job: one window resolved, recorded, stored and reported."""
        with _on(self.stream):
            preds = self.r.resolve_batch(answered)
        self._store(preds, done)
        return preds

    def _store(self, preds: list, done: int) -> None:
        r = self.r
        r.spent[0] += sum(p.cost_usd or 0.0 for p in preds)
        r.spent[1] += len(preds)
        if r.store is not None:
            r.store.put(r.key, preds, time.time())
        r.progress(done, self.total)

    def _wait(self) -> None:
        """The resolution in flight, if any, done: its rows join `fresh`; its exception is raised here."""
        if self.inflight is not None:
            future, self.inflight = self.inflight, None
            self.fresh.extend(future.result())


def _nli_stream(resolver: Any):
    """A CUDA stream of its own for the NLI, when torch is loaded and the resolver's device is a GPU."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    from .devices import pick_device

    device = pick_device(getattr(resolver, "device", "auto"))
    if not device.startswith("cuda"):
        return None
    stream = torch.cuda.Stream(device=device)
    stream.wait_stream(torch.cuda.current_stream(device))  # e.g. weights still being copied in
    return stream


def _on(stream):
    if stream is None:
        return contextlib.nullcontext()
    return sys.modules["torch"].cuda.stream(stream)
