"""(catalog, run options) -> case specs: the one place where precedence is decided.

CLI option > catalog entry (or, with --study, the study's row) > default, for every setting and for
the subset size. `RunOptions` is the command line, read once and frozen; nothing here touches
pytest, so a script or a notebook plans the same cases as `pytest bench`.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable, Mapping

from .catalog import ModelEntry, StudyRow, study_cases
from .options import DEFAULT_WAYS, cli_settings, labels_mode
from .prompts import TEMPLATES, Template, parse_prompts
from .runner import CaseSpec
from .settings import resolve_settings
from .vocab import STUDY_PROMPT, STUDY_RESOLVER, canonical

SMOKE_NLI = "smoke:bart-mnli"
DEFAULT_NLI = "facebook/bart-large-mnli"


@dataclass(frozen=True)
class RunOptions:
    """The vlmcls command-line options (vlmcls.options declares them; the names are their `dest`s)."""

    def __repr__(self) -> str:  # --base-url may carry credentials (pytest -l shows locals)
        from .settings import redacted_repr

        return redacted_repr(self)

    ways: tuple[int, ...] | None = None
    samples: int | None = None
    seed: int = 0
    orders: int = 1
    dataset: str = "sample"
    # --prompt: names and/or prompt files, several for a sweep; always a tuple of Templates after init
    prompt: str | Template | tuple[str | Template, ...] = STUDY_PROMPT
    labels_mode: str | None = None
    label_names: str | None = None  # --label-names FILE: the names the prompt shows (labels.read_label_names)
    resolver: str = STUDY_RESOLVER
    nli_model: str | None = None
    nli_overlap: bool = False
    nli_compile: bool = False
    quant: str | None = None
    dtype: str | None = None
    device: str | None = None
    batch_size: int | str | None = None
    max_new_tokens: int | None = None
    layout: str | None = None
    concurrency: int | None = None
    max_image_side: int | None = None
    base_url: str | None = None
    api_constrained: bool = False
    max_cost: float | None = None
    trust_remote_code: bool = False
    catalog: str | None = None
    report_dir: str = "reports"
    store: str | None = None
    run_id: str | None = None  # --run-id: the run folder's name (else a timestamp)
    baseline: str | None = None
    refresh: bool = False
    study: bool = False
    average: str = "present"
    strict: bool = False  # --strict-cases, or pytest's own --strict: a case that cannot run here fails

    def __post_init__(self) -> None:
        # a script or notebook may still write "thesis": the canonical name from here on, as the CLI does
        for name, setting in (("labels_mode", "labels"), ("resolver", "resolver"), ("layout", "layout")):
            object.__setattr__(self, name, canonical(setting, getattr(self, name)))
        object.__setattr__(self, "prompt", parse_prompts(self.prompt))  # the CLI's is parsed already: kept as is

    @classmethod
    def from_namespace(cls, opt: Any) -> "RunOptions":
        """From pytest's `config.option` (missing names keep their defaults: another plugin's tests)."""
        given = {f.name: getattr(opt, f.name) for f in fields(cls) if f.name != "strict" and hasattr(opt, f.name)}
        strict = bool(getattr(opt, "strict", False) or getattr(opt, "strict_cases", False))
        return cls(**given, strict=strict)

    @property
    def labels(self) -> str:
        return labels_mode(self)

    @property
    def ways_or_default(self) -> tuple[int, ...]:
        return self.ways or DEFAULT_WAYS

    @property
    def prompts(self) -> tuple[Template, ...]:
        return self.prompt  # type: ignore[return-value]  (a tuple of Templates since __post_init__)


def spec(entry: ModelEntry, ways: int, opts: RunOptions, row: StudyRow | None = None,
         auto_device: Callable[[], str] = lambda: "auto", prompt: Template | None = None) -> CaseSpec:
    """One case. `row` (--study): the study's quant and images stand in for the catalog's; an option
    given on the command line still wins, and the comparison with the study says so. `auto_device()`:
    what "auto" means for a local model in this process (an xdist worker's own GPU); asked only then,
    as answering may import torch. `prompt`: one of a sweep's prompts (default: the only one given);
    in a sweep its slug joins the case id."""
    prompt = prompt or opts.prompts[0]
    cli = cli_settings(opts)
    if opts.api_constrained and entry.info.served and entry.info.constrained:
        cli["constrained"] = True  # --api-constrained concerns served models only
    study = {"quant": row.quant} if row is not None and row.quant else {}
    settings = resolve_settings(cli, {**entry.defaults(), **study})
    if settings.device == "auto" and entry.is_local_hf:
        settings = settings.with_(device=auto_device())
    return CaseSpec(
        model=entry, ways=ways, settings=settings, dataset=opts.dataset,
        samples=opts.samples or (row.images if row is not None else entry.samples),
        seed=opts.seed, prompt=prompt.name if TEMPLATES.get(prompt.name) == prompt else prompt,  # a built-in by name, as before
        prompt_id=prompt.slug if len(prompts_for(entry, opts)) > 1 else "", labels_mode=opts.labels, resolver=opts.resolver,
        nli_model=opts.nli_model or (SMOKE_NLI if entry.smoke else DEFAULT_NLI),
        # a budget binds priced models only: on another it would only trim the first batch and stop --nli-overlap
        max_cost=opts.max_cost if entry.price is not None else None, refresh=opts.refresh, orders=opts.orders, nli_overlap=opts.nli_overlap,
        nli_compile=opts.nli_compile,
    )


def cases(catalog: Mapping[str, ModelEntry], opts: RunOptions,
          auto_device: Callable[[], str] = lambda: "auto") -> list[CaseSpec]:
    """Every case of the run: each catalog model at each N, or with --study the study's rows (only
    those at --ways, when given), each with its own settings; each once per --prompt (`prompts_for`). A prompt sweep
    with --study runs each study row once per prompt: an explicit option wins under --study, and the
    comparison with the study names the prompt where it is not the study's."""
    if opts.study:
        return [spec(entry, row.ways, opts, row, auto_device, p)
                for entry, row in study_cases(catalog, opts.ways) for p in prompts_for(entry, opts)]
    return [spec(entry, w, opts, auto_device=auto_device, prompt=p)
            for entry in catalog.values() for w in opts.ways_or_default for p in prompts_for(entry, opts)]


def prompts_for(entry: ModelEntry, opts: RunOptions) -> tuple[Template, ...]:
    """The prompts a model's cases run with: a sweep's every one for a model that reads the prompt; the
    first only for one that scores the candidates itself (CLIP, classifiers), which a prompt cannot change:
    it runs once, under its usual case id, not once per prompt with identical results."""
    return opts.prompts if entry.info.answers == "generative" else opts.prompts[:1]


def subset_size(case: CaseSpec, opts: RunOptions, dataset_size: int | None) -> int | None:
    """--samples as given; a catalog or study default (slow smoke models, the study's image counts)
    is capped by the dataset's size, where the dataset knows it."""
    if opts.samples is None and case.samples and dataset_size is not None:
        return min(case.samples, dataset_size)
    return case.samples
