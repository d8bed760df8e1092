"""One benchmark case, no pytest: samples -> candidates -> prompt -> backend -> resolve -> store -> metrics.

The same function runs from the pytest plugin, a script, a notebook or the throughput benchmark.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from typing import Any, Callable, Mapping, Sequence

from . import candidates as cand
from . import metrics as metrics_mod
from . import prompts
from .catalog import ModelEntry
from .devices import device_kind  # noqa: F401 (re-exported: callers import it from here)
from .images import ImageError, decode
from .pipeline import FAIL_FAST, BudgetStop, run_windows  # noqa: F401 (FAIL_FAST, BudgetStop: re-exported, callers import them from here)
from .settings import BackendSettings, redact_urls, redact_values, server_urls
from .store import Store, case_key, row_key
from .types import Answer, Backend, LabelSet, Prediction, Query, Sample
from .vocab import LABELS_FIRST, NLI_RESOLVERS, STUDY_LABELS, STUDY_PROMPT, STUDY_RESOLVER, LabelMode, ResolverMode
from .vocab import canonical, stored
from .words import name_key


@dataclass(frozen=True)
class CaseSpec:
    """Everything that defines a case. `key_fields()` is the part that can change an answer (the
    store key); speed settings, `samples`, `refresh` and `max_cost` stay out of it, and so does
    `orders` (K candidate orders per image): each row carries its order index instead, so a run with
    K=3 reuses the order-0 rows of a K=1 run. `nli_overlap` and `nli_compile` (speed only) are out of it too."""

    model: ModelEntry
    ways: int
    settings: BackendSettings
    dataset: str = "sample"
    samples: int | None = None
    seed: int = 0
    prompt: str | prompts.Template = STUDY_PROMPT  # a built-in's name, or the Template read from a prompt file
    labels_mode: LabelMode = "unique"
    resolver: ResolverMode = STUDY_RESOLVER
    nli_model: str = "facebook/bart-large-mnli"
    max_cost: float | None = None
    refresh: bool = False
    orders: int = 1
    nli_overlap: bool = False  # --nli-overlap: resolve window k while the backend answers window k+1
    nli_compile: bool = False  # --nli-compile: the NLI model through torch.compile
    # a prompt sweep (--prompt a,b): the prompt's slug, appended to the case id; "" with one prompt, so
    # single-prompt ids (stored runs, --baseline) stay as they were. Not in the key: the text is.
    prompt_id: str = ""
    # an own dataset's class names (labels.names_digest): "" for the sample and ImageNet, whose names the
    # code fixes (their keys stay as they were); in the key, so a renamed class folder is asked again
    label_digest: str = ""

    def __post_init__(self) -> None:
        # "thesis", the older name of the study's label mode and resolver, becomes the canonical one
        object.__setattr__(self, "labels_mode", canonical("labels", self.labels_mode))
        object.__setattr__(self, "resolver", canonical("resolver", self.resolver))

    @property
    def case_id(self) -> str:
        base = f"{self.model.case_tag(self.settings.quant)}-{self.ways}way"
        return f"{base}-{self.prompt_id}" if self.prompt_id else base

    @property
    def template(self) -> prompts.Template:
        return prompts.get_template(self.prompt)

    @property
    def prompt_name(self) -> str:
        """The prompt as reports name it: a built-in's name, or `file.txt@<hash of its text>`."""
        return self.template.name

    def key_fields(self) -> dict[str, Any]:
        s = asdict(self.settings)
        for k in ("batch_size", "batch_auto", "concurrency", "timeout_s", "max_retries", "device"):
            s.pop(k)  # these change speed, not answers ...
        if not s.get("rank"):
            s.pop("rank", None)  # absent unless ranking: the keys of runs made before it existed stay valid
        info = self.model.info
        if info.local:  # ... except that the device decides the dtype when it is "auto"
            s["device_kind"] = device_kind(self.settings.device)
        # the hub's code runs only when the entry and the user both allow it (as the report says)
        s["trust_remote_code"] = bool(self.model.trust_remote_code and self.settings.trust_remote_code)
        for k in info.key_drops():  # what cannot change this backend's answers (the registry says)
            s.pop(k)
        if s.get("base_url"):  # several servers: one deployment, whatever the order they were listed in
            # ... and without the credentials a URL may carry: a key is stored, and they change no answer
            s["base_url"] = ",".join(sorted(redact_urls(u) for u in server_urls(s["base_url"])))
        # keys hold the names used before image-first / raw / study had their own (vocab.STORED_AS):
        # stores written then still resume
        if "layout" in s:
            s["layout"] = stored("layout", s["layout"])
        if "extra" in s:  # a catalog's `options.base_url` is kept in extra too: stored without its credentials
            s["extra"] = redact_values(s["extra"])
        if "layout" in s.get("extra", {}):
            s["extra"] = {**s["extra"], "layout": stored("layout", s["extra"]["layout"])}
        return {
            "model": self.model.name, "backend": self.model.backend, "weights": self.model.weights,
            "settings": s, "dataset": self.dataset, "ways": self.ways, "seed": self.seed,
            "prompt": self.template.text, "labels": stored("labels", self.labels_mode),
            "resolver": stored("resolver", self.resolver), "nli_model": self.nli_model if self.resolver in NLI_RESOLVERS else None,
            **self.folder_fields(), **({"label_names": self.label_digest} if self.label_digest else {}),
        }

    def folder_fields(self) -> dict[str, str]:
        """Weights in a local folder are named by a path that a new checkpoint can be saved to: the key
        holds what its files are (hub.folder_files), so a retrained model is never answered from the
        old one's rows. Hub ids, smoke and served models add nothing (their keys are as before)."""
        from . import hub

        named = {"weights_files": self.model.weights if self.model.info.local else None,
                 "nli_files": self.nli_model if self.resolver in NLI_RESOLVERS else None}
        return {k: files for k, w in named.items() if (files := hub.folder_files(w))}


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
    # seconds in each resolver stage ("match", "nli") for the fresh samples, and their wall time
    # (model loading excluded, as for images_per_s)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    wall_s: float | None = None
    # --orders K > 1: the rows of every order (0..K-1); `predictions` and `metrics` are order 0 only,
    # the list as K=1 would ask it, so the headline figures stay comparable with K=1 runs
    order_rows: list[Prediction] = field(default_factory=list)
    # --max-cost stopped the case before all its samples (the gate fails it); `stopped` says it in words
    budget_stop: BudgetStop | None = None
    ran_on: str | None = None  # a local model's device and dtype as loaded ("cuda:0, bfloat16"); None: not loaded
    stand_in: bool = False  # the answers came from vlmcls's stub server, not a model: the row is smoke

    def stage_shares(self) -> dict[str, float]:
        n = len(self.predictions) or 1
        shares: dict[str, float] = {}
        for p in self.predictions:
            shares[p.stage] = shares.get(p.stage, 0) + 1 / n
        return dict(sorted(shares.items()))


def _rate(n: int, seconds: float) -> float | None:
    """Answers per second; None (shown "–") where none was answered (e.g. the only fresh rows were
    unreadable images retried, which never reached the model)."""
    return n / seconds if n and seconds > 0 else None


def fingerprint(s: Sample) -> str:
    """Identifies the image behind a sample id, cheaply: content hash for bytes, size + mtime for a
    file (checked for every sample of a resumed run, so it reads no file). `stamp` adds a file's
    content hash to the rows it writes, which `same_image` falls back on when size + mtime differ."""
    if isinstance(s.image, (bytes, bytearray)):
        return f"{s.label}:" + _sha(s.image)
    try:
        st = os.stat(s.image)
        return f"{s.label}:{st.st_size}-{st.st_mtime_ns}"
    except OSError:
        return f"{s.label}:missing"


def _sha(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()[:16]


def _file_sha(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return _sha(f.read())
    except OSError:
        return None


def same_image(stored: str, s: Sample, quick: str) -> bool:
    """Whether a stored row was made for this sample's image and label: the quick fingerprints agree,
    or (size or mtime differ) the row recorded a content hash and the file's content still has it.
    Rows written before content hashes were recorded have none: a changed mtime makes them stale."""
    head, _, sha = stored.partition("#")
    if head == quick:
        return True
    if not sha or isinstance(s.image, (bytes, bytearray)) or head.split(":", 1)[0] != str(s.label):
        return False
    return _file_sha(s.image) == sha


def stale_note(stale: int) -> str:
    """Stored answers asked again are paid again (APIs): say how many, and the usual cause."""
    if not stale:
        return ""
    return (f"{stale} stored {'answer was' if stale == 1 else 'answers were'} asked again: the image or label "
            "changed since (for an image file: its content; for a row an earlier vlmcls stored without a "
            "content hash, its size or modification time)")


def _decode_one(s: Sample):
    """The decoded image, or the ImageError that becomes this sample's error row."""
    return _decoded(s.image)


def _decoded(source):
    try:
        return decode(source)
    except ImageError as exc:
        return exc


def _read_one(s: Sample):
    """For a backend that decodes images itself (`decodes_images`, e.g. on the GPU): the encoded
    bytes, read ahead like a decode, or the ImageError that becomes this sample's error row."""
    if not isinstance(s.image, str):
        return s.image
    try:
        with open(s.image, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return ImageError(f"image file not found: {s.image}")
    except OSError as exc:
        return ImageError(f"cannot read image file: {exc}")


@dataclass(frozen=True)
class OrderedSample(Sample):
    """One of the K askings of a sample (--orders): the same image, its candidates in permutation `order`."""

    order: int = 0


def with_orders(samples: Sequence[Sample], orders: int) -> Sequence[Sample]:
    """The work items: each sample K times, its orders side by side (a --max-cost stop then leaves
    whole images, not order 0 of many and order 2 of few). K=1: the samples themselves, unchanged."""
    if orders <= 1:
        return samples
    return [OrderedSample(s.sample_id, s.label, s.image, k) for s in samples for k in range(orders)]


# stages the resolver decided from an answer's text: stored rows of these are read again by this version's rules
REJUDGED = frozenset({"match", "synonym", "unresolved", "nli"})


def rejudged_note(n: int) -> str:
    """Stored answers this version's resolver reads otherwise: say how many (the figures use the new reading)."""
    if not n:
        return ""
    return (f"{n} stored {'answer' if n == 1 else 'answers'} resolved otherwise by this version's resolver than "
            "when stored: scored as it resolves them now (the store holds the new resolution)")


def _key(s: Sample) -> str:
    return row_key(s.sample_id, getattr(s, "order", 0))


OVERLAP_NOTE = ("--nli-overlap: each window's answers were resolved while the backend answered the next one "
                "(resolver time overlaps the model's)")


class CaseRunner:
    """Holds a case's fixed context; `run()` drives the batches."""

    def __init__(self, spec: CaseSpec, labels: LabelSet, backend: Backend, resolver, store: Store | None,
                 progress: Callable[[int, int], None] | None = None, decode_workers: int | None = None):
        self.spec, self.labels, self.backend, self.resolver, self.store = spec, labels, backend, resolver, store
        self.progress = progress or (lambda done, total: None)
        self.decode_workers = decode_workers or min(8, os.cpu_count() or 1)
        self.template = spec.template
        self.key = case_key(spec.key_fields())
        self.ambiguous = labels.ambiguous_ids() if canonical("labels", labels.mode) == STUDY_LABELS else frozenset()
        self._fingerprints: dict[str, str] = {}
        self._contents: dict[str, str | None] = {}  # an image file's content hash, taken when it is read
        self._read = _read_one if getattr(backend, "decodes_images", False) else _decode_one
        self.stage_seconds: dict[str, float] = {}

    def candidates(self, s: Sample):
        cs = cand.candidate_set(s.sample_id, s.label, self.spec.ways, len(self.labels), self.spec.seed)
        if self.spec.settings.layout == LABELS_FIRST and self.spec.ways == len(self.labels):
            # The label list must be identical for every image to reuse its KV cache: class order.
            cs = type(cs)(cs.sample_id, cs.ways, cs.true_id, tuple(sorted(cs.class_ids)))
        order = getattr(s, "order", 0)
        if order:  # that list again, in permutation `order`: one per order, shared by every image there
            shared = self.spec.settings.layout == LABELS_FIRST and self.spec.ways == len(self.labels)
            cs = cand.reorder(cs, cand.order_permutation("" if shared else s.sample_id, self.spec.ways, order, self.spec.seed))
        return cs

    def read_image(self, s: Sample):
        """The sample's image as the backend takes it (or the ImageError of its row); for an image file
        its content hash is taken here too, in the read-ahead threads, for the row's fingerprint."""
        if not isinstance(s.image, str):
            return self._read(s)
        data = _read_one(s)  # the file is read once: hashed here, then decoded from these bytes
        if s.sample_id not in self._contents:
            self._contents[s.sample_id] = _sha(data) if isinstance(data, bytes) else None
        if isinstance(data, ImageError) or self._read is _read_one:
            return data
        return _decoded(data)

    def query(self, s: Sample, image, cs) -> Query:
        labels = cs.labels(self.labels)
        if self.spec.settings.layout == LABELS_FIRST:
            prefix, prompt = prompts.render_split(self.template, labels)
        else:
            prefix, prompt = "", prompts.render(self.template, labels)
        return Query(s.sample_id, image, cs.class_ids, labels, prompt, prefix)

    def verdict(self, s: Sample, class_ids: Sequence[int], answer: Answer, resolution=None) -> tuple[int | None, str, bool]:
        """(predicted class, deciding stage, ambiguous) of one answer among the candidates `class_ids`: the
        backend's class, else the resolver's."""
        if answer.error is not None:
            pred_id, stage, ambiguous = None, "error", False
        elif answer.class_id is not None:
            pred_id, stage, ambiguous = answer.class_id, answer.stage or "direct", False
        else:
            pred_id, stage, ambiguous = resolution.class_id, resolution.stage, resolution.ambiguous
        if pred_id is not None and pred_id not in class_ids:
            pred_id, stage = None, "unresolved"  # a backend bug must never score outside the candidates
        return pred_id, stage, ambiguous or bool({s.label, pred_id} & self._colliding(class_ids))

    def rejudge(self, done: dict[str, Prediction], items: Sequence[Sample]) -> tuple[dict[str, Prediction], int]:
        """Stored text answers resolved again by this version's rules, so that a case's figures never mix
        two versions of the resolver (the store keeps answers; how an answer reads may improve). The
        rules are pure Python; an answer they now leave to the NLI keeps a stored NLI verdict (the key
        holds the NLI model) and is asked only if it had none. Changed rows are written back."""
        rules = getattr(self.resolver, "rules", None)  # a resolver of a script's own may have none
        texts = [(k, s) for s in items if (k := _key(s)) in done and done[k].stage in REJUDGED]
        if not texts or rules is None:
            return done, 0
        sets = {k: self._stored_ids(done[k]) or self.candidates(s).class_ids for k, s in texts}
        ruled = {k: rules(done[k].answer, sets[k]) for k, _ in texts}
        ask = [k for k, _ in texts if ruled[k][1] and done[k].stage != "nli"]
        asked = dict(zip(ask, self._resolve([(done[k].answer, sets[k]) for k in ask]))) if ask else {}
        changed = {}
        for k, s in texts:
            found, to_nli = ruled[k]
            if to_nli and k not in asked:
                continue  # the stored NLI verdict stands
            pred_id, stage, ambiguous = self.verdict(s, sets[k], Answer(text=done[k].answer), asked.get(k, found))
            p = done[k]
            if (pred_id, stage, ambiguous) != (p.pred_id, p.stage, p.ambiguous):
                changed[k] = replace(p, pred_id=pred_id, stage=stage, ambiguous=ambiguous,
                                     pred_label=None if pred_id is None else self.labels.names[pred_id])
        if changed and self.store is not None:
            self.store.rewrite(self.key, changed.values())
        return {**done, **changed}, len(changed)

    def _stored_ids(self, p: Prediction) -> tuple[int, ...] | None:
        """The class ids of a stored row's candidates, in the order asked, read from their names (drawing the
        set again costs ~1.5 ms at 1000-way); None where a name is two classes' (`--labels raw`'s "crane")."""
        ids = [self._by_name.get(n, ()) for n in p.candidates]
        return tuple(i[0] for i in ids) if all(len(i) == 1 for i in ids) else None

    @cached_property
    def _by_name(self) -> dict[str, list[int]]:
        """Class name -> the ids of the classes named so (two for a shared name)."""
        by_name: dict[str, list[int]] = {}
        for c, name in enumerate(self.labels.names):
            by_name.setdefault(name, []).append(c)
        return by_name

    def record(self, s: Sample, cs, answer: Answer, resolution=None) -> Prediction:
        pred_id, stage, ambiguous = self.verdict(s, cs.class_ids, answer, resolution)
        return Prediction(
            fingerprint=self.stamp(s), sample_id=s.sample_id, order=getattr(s, "order", 0), true_id=s.label, true_label=self.labels.names[s.label],
            candidates=cs.labels(self.labels), answer=answer.text, pred_id=pred_id,
            pred_label=None if pred_id is None else self.labels.names[pred_id], stage=stage,
            latency_s=answer.latency_s, prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens, cost_usd=answer.cost_usd, error=answer.error, ambiguous=ambiguous,
            top5=answer.top5, top1_prob=answer.top1_prob, stand_in=answer.stand_in,
        )

    def stamp(self, s: Sample) -> str:
        """A new row's fingerprint: the quick one, and for an image file its content hash after `#`, which
        `same_image` falls back on (a copied folder, or a file touched without changing, still matches)."""
        quick = self._fingerprints.get(s.sample_id) or fingerprint(s)
        if isinstance(s.image, (bytes, bytearray)) or quick.endswith(":missing"):
            return quick
        sha = self._contents[s.sample_id] if s.sample_id in self._contents else _file_sha(s.image)
        return f"{quick}#{sha}" if sha else quick

    def _colliding(self, class_ids: Sequence[int]) -> set[int]:
        """--labels raw: the candidates whose name another candidate shares ("crane" and "crane"), which
        no answer can tell apart; a class whose namesake is not among them is as clear as any other."""
        if not self.ambiguous:  # --labels unique: nothing collides (and no loop over 1000 candidates per sample)
            return set()
        shared = [c for c in class_ids if c in self.ambiguous]
        names = [name_key(self.labels.names[c]) for c in shared]
        return {c for c, name in zip(shared, names) if names.count(name) > 1}

    def run_batch(self, batch: Sequence[Sample], images: Sequence[Any] | None = None) -> list[Prediction]:
        return self.resolve_batch(self.answer_batch(batch, images))

    def answer_batch(self, batch: Sequence[Sample], images: Sequence[Any] | None = None):
        """The backend's half of a batch: (samples, candidate sets, answers by position)."""
        if images is None:
            images = [self.read_image(s) for s in batch]
        sets = [self.candidates(s) for s in batch]
        ok = [i for i, im in enumerate(images) if not isinstance(im, Exception)]
        answers: dict[int, Answer] = {i: Answer(error=str(images[i])) for i in range(len(batch)) if i not in ok}
        if ok:
            got = self.backend.answer([self.query(batch[i], images[i], sets[i]) for i in ok])
            if len(got) != len(ok):
                raise RuntimeError(f"backend returned {len(got)} answers for {len(ok)} queries")
            answers.update(zip(ok, got))
        return batch, sets, [answers[i] for i in range(len(batch))]

    def resolve_batch(self, answered) -> list[Prediction]:
        """The resolver's half: the answers that name no class resolved together, then the rows."""
        batch, sets, answers = answered
        need = [i for i, a in enumerate(answers) if a.error is None and a.class_id is None]
        resolved = dict(zip(need, self._resolve([(answers[i].text, sets[i].class_ids) for i in need]))) if need else {}
        return [self.record(batch[i], sets[i], answers[i], resolved.get(i)) for i in range(len(batch))]

    def _resolve(self, items):
        """resolve_many, adding the resolver's per-stage seconds to this case's (a resolver is shared by cases)."""
        before = dict(getattr(self.resolver, "stage_seconds", {}))
        out = self.resolver.resolve_many(items)
        add_stage_seconds(self.stage_seconds, before, getattr(self.resolver, "stage_seconds", {}))
        return out

    def batch_size(self) -> int:
        s = self.spec.settings
        # API: one batch = the requests in flight, stored as soon as they return (a kill loses no more)
        if self.spec.model.info.served:
            return s.concurrency
        # a backend that prefetches (hf-vlm) asks for several of its batches at once
        return getattr(self.backend, "window", None) or s.batch_size

    def overlaps(self) -> bool:
        """--nli-overlap applies: asked for, and nothing in `overlap_unused()` stops it."""
        return self.spec.nli_overlap and not self.overlap_unused()

    def overlap_unused(self) -> str:
        """Why --nli-overlap cannot apply to this case ("" when it can): it needs a backend that answers
        in text, a resolver with a model (study, nli; matching alone is too cheap to hide), and no
        --max-cost (the next window's size waits for this window's cost)."""
        spec = self.spec
        if spec.model.info.direct:
            return f"a {spec.model.backend} model scores the candidates itself: no answer goes through the NLI"
        if spec.resolver not in NLI_RESOLVERS:
            return f"it applies to --resolver {' and '.join(NLI_RESOLVERS)} only, not {spec.resolver}"
        if spec.max_cost is not None:
            return "--max-cost sizes each window from the cost of the ones before, so windows run one after another"
        return ""

    def overlap_note(self, overlap: bool, fresh: int) -> str | None:
        """The case note on --nli-overlap when the user asked for it: that it ran, or why it did not."""
        if not self.spec.nli_overlap:
            return None
        if overlap and fresh:
            return OVERLAP_NOTE
        why = self.overlap_unused() or "every answer came from the result store: nothing was resolved"
        return f"--nli-overlap: not applied: {why}"

    def run(self, samples: Sequence[Sample]) -> CaseResult:
        cand.check_ways(self.spec.ways, len(self.labels))
        if hasattr(self.backend, "begin_case"):  # per-case tallies (requests per server, answers ranked)
            self.backend.begin_case()
        stored = {} if (self.store is None or self.spec.refresh) else self.store.get(self.key)
        current = self._fingerprints = {s.sample_id: fingerprint(s) for s in samples}  # hashed once per sample
        # error rows are retried; rows for an image or label that changed since are recomputed
        by_id = {s.sample_id: s for s in samples}
        # each (sample, stored fingerprint) checked once: a file's content is hashed at most once, not per order
        fits = {(sid, fp): same_image(fp, by_id[sid], current[sid]) for sid, fp in
                {(p.sample_id, p.fingerprint) for p in stored.values() if p.error is None and p.sample_id in current}}
        done = {k: p for k, p in stored.items() if p.error is None and fits.get((p.sample_id, p.fingerprint))}
        # rows matched by their content hash (a copied or touched file) take the file's size + mtime now, so
        # the next run matches them without reading the file again
        moved = {k: replace(p, fingerprint=f"{current[p.sample_id]}#{p.fingerprint.partition('#')[2]}")
                 for k, p in done.items() if p.fingerprint.partition("#")[0] != current[p.sample_id]}
        if moved and self.store is not None:
            self.store.rewrite(self.key, moved.values())
        done.update(moved)
        stale = sum(p.error is None and (p.sample_id, p.fingerprint) in fits and not fits[p.sample_id, p.fingerprint]
                    for p in stored.values())
        items = with_orders(samples, self.spec.orders)  # K=1: the samples themselves
        done, rejudged = self.rejudge(done, items)
        todo = [s for s in items if _key(s) not in done]
        if self.store is not None:
            self.store.register(self.key, self.spec.key_fields())
        ids = {_key(s) for s in items}
        # [USD spent, samples done] for --max-cost, this run and stored runs of the case
        self.spent = [sum(p.cost_usd or 0.0 for k, p in done.items() if k in ids), len(ids) - len(todo)]
        overlap = self.overlaps()
        fresh, elapsed, stopped, budget = run_windows(self, todo, len(items) - len(todo), len(items), overlap)
        notes = list(getattr(self.backend, "notes", []))
        notes += [n for n in (self.overlap_note(overlap, len(fresh)), cand.orders_note(self.spec.orders, self.spec.ways),
                              stale_note(stale), rejudged_note(rejudged)) if n]
        if self.spec.nli_compile and self.stage_seconds.get("nli"):
            notes.append(self.resolver.compile_note())
        by_key = {**done, **{row_key(p.sample_id, p.order): p for p in fresh}}
        rows = [by_key[_key(s)] for s in items if _key(s) in by_key]
        stand_in = bool(getattr(self.backend, "stand_in", False)) or any(p.stand_in for p in rows)
        if stand_in and not self.spec.model.smoke:  # answered from the store, the backend never said so
            from .backends.api import STAND_IN_NOTE

            notes += [] if STAND_IN_NOTE in notes else [STAND_IN_NOTE]
        preds = [p for p in rows if p.order == 0]
        return CaseResult(
            spec=self.spec, predictions=preds, metrics=metrics_mod.compute(preds, self.spec.seed) if preds else None,
            images_per_s=_rate(sum(p.error is None for p in fresh), elapsed - getattr(self.backend, "load_s", 0.0)),
            resumed=len(items) - len(todo), not_run=len(samples) - len(preds), stopped=stopped,
            notes=notes, stage_seconds=dict(self.stage_seconds),
            wall_s=elapsed - getattr(self.backend, "load_s", 0.0), order_rows=rows if self.spec.orders > 1 else [],
            budget_stop=budget, ran_on=getattr(self.backend, "ran_on", None),
            stand_in=stand_in,
        )

    def next_batch(self, todo: Sequence[Sample], start: int) -> Sequence[Sample]:
        """The next batch; under --max-cost trimmed to what the budget still pays for (at the mean cost
        per sample so far, this run and stored runs of the case), and one sample while nothing is known."""
        n = self.batch_size()
        if self.spec.max_cost is not None:
            spent, done = self.spent
            if done == 0 or spent == 0:
                n = 1 if done == 0 else n
            else:
                n = min(n, int((self.spec.max_cost - spent) / (spent / done)))
        return todo[start:start + max(0, n)]


def run_case(spec: CaseSpec, samples: Sequence[Sample], labels: LabelSet, backend: Backend, resolver,
             store: Store | None = None, progress=None) -> CaseResult:
    return CaseRunner(spec, labels, backend, resolver, store, progress).run(samples)


def add_stage_seconds(case: dict[str, float], before: Mapping[str, float], after: Mapping[str, float]) -> None:
    """Add to a case's per-stage seconds what a shared resolver spent during its call: only the stages
    that ran in it (a stage another case used earlier, e.g. its NLI, is not this case's, not even as 0 s)."""
    for stage, t in after.items():
        spent = t - before.get(stage, 0.0)
        if spent > 0:
            case[stage] = case.get(stage, 0.0) + spent
