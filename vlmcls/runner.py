"""One benchmark case, no pytest: samples -> candidates -> prompt -> backend -> resolve -> store -> metrics.

The same function runs from the pytest plugin, a script, a notebook or the throughput benchmark.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

from . import candidates as cand
from . import metrics as metrics_mod
from . import prompts
from .catalog import ModelEntry
from .images import ImageError, decode
from .settings import BackendSettings
from .store import Store, case_key
from .types import Answer, Backend, LabelSet, Prediction, Query, Sample


@dataclass(frozen=True)
class CaseSpec:
    """Everything that defines a case; all of it (but `refresh`/`max_cost`) enters the store key."""

    model: ModelEntry
    ways: int
    settings: BackendSettings
    dataset: str = "sample"
    samples: int | None = None
    seed: int = 0
    prompt: str = "thesis"
    labels_mode: str = "unique"
    resolver: str = "thesis"
    nli_model: str = "facebook/bart-large-mnli"
    max_cost: float | None = None
    refresh: bool = False

    @property
    def case_id(self) -> str:
        return f"{self.model.case_tag(self.settings.quant)}-{self.ways}way"

    def key_fields(self) -> dict[str, Any]:
        s = asdict(self.settings)
        for k in ("batch_size", "concurrency", "timeout_s", "max_retries", "device", "base_url"):
            s.pop(k)  # these change speed, not answers
        return {
            "model": self.model.name, "backend": self.model.backend, "weights": self.model.weights,
            "settings": s, "dataset": self.dataset, "ways": self.ways, "seed": self.seed,
            "prompt": prompts.get_template(self.prompt).text, "labels": self.labels_mode,
            "resolver": self.resolver, "nli_model": self.nli_model if self.resolver in ("thesis", "nli") else None,
        }


@dataclass
class CaseResult:
    spec: CaseSpec
    predictions: list[Prediction]
    metrics: metrics_mod.Metrics | None
    images_per_s: float | None
    resumed: int = 0
    not_run: int = 0
    stopped: str = ""  # why the case stopped early (e.g. --max-cost)
    notes: list[str] = field(default_factory=list)

    def stage_shares(self) -> dict[str, float]:
        n = len(self.predictions) or 1
        shares: dict[str, float] = {}
        for p in self.predictions:
            shares[p.stage] = shares.get(p.stage, 0) + 1 / n
        return dict(sorted(shares.items()))


def _decode_one(s: Sample):
    """The decoded image, or the ImageError that becomes this sample's error row."""
    try:
        return decode(s.image)
    except ImageError as exc:
        return exc


class CaseRunner:
    """Holds a case's fixed context; `run()` drives the batches."""

    def __init__(self, spec: CaseSpec, labels: LabelSet, backend: Backend, resolver, store: Store | None,
                 progress: Callable[[int, int], None] | None = None, decode_workers: int | None = None):
        self.spec, self.labels, self.backend, self.resolver, self.store = spec, labels, backend, resolver, store
        self.progress = progress or (lambda done, total: None)
        self.decode_workers = decode_workers or min(8, os.cpu_count() or 1)
        self.template = prompts.get_template(spec.prompt)
        self.key = case_key(spec.key_fields())
        self.ambiguous = labels.ambiguous_ids() if labels.mode == "thesis" else frozenset()

    def candidates(self, s: Sample):
        cs = cand.candidate_set(s.sample_id, s.label, self.spec.ways, len(self.labels), self.spec.seed)
        if self.spec.settings.layout == "labels-first" and self.spec.ways == len(self.labels):
            # The label list must be identical for every image to reuse its KV cache: class order.
            cs = type(cs)(cs.sample_id, cs.ways, cs.true_id, tuple(sorted(cs.class_ids)))
        return cs

    def query(self, s: Sample, image, cs) -> Query:
        labels = cs.labels(self.labels)
        if self.spec.settings.layout == "labels-first":
            prefix, prompt = prompts.render_labels_first(labels)
        else:
            prefix, prompt = "", prompts.render(self.template, labels)
        return Query(s.sample_id, image, cs.class_ids, labels, prompt, prefix)

    def record(self, s: Sample, cs, answer: Answer, resolution=None) -> Prediction:
        if answer.error is not None:
            pred_id, stage, ambiguous = None, "error", False
        elif answer.class_id is not None:
            pred_id, stage, ambiguous = answer.class_id, answer.stage or "direct", False
        else:
            pred_id, stage, ambiguous = resolution.class_id, resolution.stage, resolution.ambiguous
        if pred_id is not None and pred_id not in cs.class_ids:
            pred_id, stage = None, "unresolved"  # a backend bug must never score outside the candidates
        ambiguous = ambiguous or bool(self.ambiguous and {s.label, pred_id} & self.ambiguous)
        return Prediction(
            sample_id=s.sample_id, true_id=s.label, true_label=self.labels.names[s.label],
            candidates=cs.labels(self.labels), answer=answer.text, pred_id=pred_id,
            pred_label=None if pred_id is None else self.labels.names[pred_id], stage=stage,
            latency_s=answer.latency_s, prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens, cost_usd=answer.cost_usd, error=answer.error, ambiguous=ambiguous,
        )

    def run_batch(self, batch: Sequence[Sample], images: Sequence[Any] | None = None) -> list[Prediction]:
        if images is None:
            images = [_decode_one(s) for s in batch]
        sets = [self.candidates(s) for s in batch]
        ok = [i for i, im in enumerate(images) if not isinstance(im, Exception)]
        answers: dict[int, Answer] = {i: Answer(error=str(images[i])) for i in range(len(batch)) if i not in ok}
        if ok:
            got = self.backend.answer([self.query(batch[i], images[i], sets[i]) for i in ok])
            if len(got) != len(ok):
                raise RuntimeError(f"backend returned {len(got)} answers for {len(ok)} queries")
            answers.update(zip(ok, got))
        need = [i for i in ok if answers[i].error is None and answers[i].class_id is None]
        resolved = dict(zip(need, self.resolver.resolve_many([(answers[i].text, sets[i].class_ids) for i in need]))) if need else {}
        return [self.record(batch[i], sets[i], answers[i], resolved.get(i)) for i in range(len(batch))]

    def batch_size(self) -> int:
        s = self.spec.settings
        return max(s.batch_size, s.concurrency * 2) if self.spec.model.backend in ("openai", "anthropic", "openai-compatible") else s.batch_size

    def run(self, samples: Sequence[Sample]) -> CaseResult:
        cand.check_ways(self.spec.ways, len(self.labels))
        stored = {} if (self.store is None or self.spec.refresh) else self.store.get(self.key)
        done = {sid: p for sid, p in stored.items() if p.error is None}  # error rows are retried
        todo = [s for s in samples if s.sample_id not in done]
        if self.store is not None:
            self.store.register(self.key, self.spec.key_fields())
        fresh, elapsed, stopped = self._loop(todo, len(samples) - len(todo), len(samples))
        by_id = {**done, **{p.sample_id: p for p in fresh}}
        preds = [by_id[s.sample_id] for s in samples if s.sample_id in by_id]
        return CaseResult(
            spec=self.spec, predictions=preds, metrics=metrics_mod.compute(preds, self.spec.seed) if preds else None,
            images_per_s=(len(fresh) / elapsed) if fresh and elapsed > 0 else None,
            resumed=len(samples) - len(todo), not_run=len(samples) - len(preds), stopped=stopped,
            notes=list(getattr(self.backend, "notes", [])),
        )

    def _loop(self, todo: Sequence[Sample], already: int, total: int) -> tuple[list[Prediction], float, str]:
        fresh: list[Prediction] = []
        elapsed, cost, start = 0.0, 0.0, 0
        self.progress(already, total)
        # Decoding runs in threads one batch ahead, so the model never waits for JPEG decoding
        # (PIL releases the GIL while it decodes and resizes).
        with ThreadPoolExecutor(max(1, self.decode_workers)) as pool:
            batch = self._next(todo, start, fresh)
            pending = [pool.submit(_decode_one, s) for s in batch]
            while batch:
                if self._over_budget(cost, len(fresh), len(batch)):
                    return fresh, elapsed, f"stopped by --max-cost {self.spec.max_cost:g} USD after {already + len(fresh)} samples (spent {cost:.4f} USD)"
                t0 = time.perf_counter()
                images = [f.result() for f in pending]
                start += len(batch)
                following = self._next(todo, start, fresh or [None])
                pending = [pool.submit(_decode_one, s) for s in following]
                preds = self.run_batch(batch, images)
                elapsed += time.perf_counter() - t0
                cost += sum(p.cost_usd or 0.0 for p in preds)
                fresh.extend(preds)
                if self.store is not None:
                    self.store.put(self.key, preds, time.time())
                self.progress(already + len(fresh), total)
                batch = following
        return fresh, elapsed, ""

    def _next(self, todo: Sequence[Sample], start: int, fresh: Sequence) -> Sequence[Sample]:
        # Under --max-cost the first batch is one sample: it measures the cost per sample.
        n = 1 if (self.spec.max_cost is not None and not fresh) else self.batch_size()
        return todo[start:start + n]

    def _over_budget(self, spent: float, done: int, next_n: int) -> bool:
        """Stop before a batch whose expected cost (mean so far, per sample) would pass the budget."""
        if self.spec.max_cost is None:
            return False
        per_sample = spent / done if done else 0.0
        return spent >= self.spec.max_cost or spent + per_sample * next_n > self.spec.max_cost


def run_case(spec: CaseSpec, samples: Sequence[Sample], labels: LabelSet, backend: Backend, resolver,
             store: Store | None = None, progress=None) -> CaseResult:
    return CaseRunner(spec, labels, backend, resolver, store, progress).run(samples)
