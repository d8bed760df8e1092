"""Command-line options, validated when parsed (a bad value is one-sentence usage error)."""
from __future__ import annotations

import argparse
from typing import Any, Callable

from .prompts import TEMPLATES, PromptError, parse_prompts
from .vocab import (ALIASES, AVERAGES, DTYPE_ALIASES, DTYPES, LABEL_MODES, LAYOUTS, QUANTS, RESOLVERS, STUDY_LABELS, STUDY_PROMPT,
                    STUDY_RESOLVER)

DEFAULT_WAYS = (20, 100)


def _fail(msg: str):
    raise argparse.ArgumentTypeError(msg)


def ways_list(text: str) -> tuple[int, ...]:
    """`--ways 20,100` -> (20, 100); each N must be an integer >= 2."""
    try:
        values = tuple(int(v) for v in text.split(","))  # "20,,100": a value left out is an error, not skipped
    except ValueError:
        _fail(f"--ways takes integers separated by commas, e.g. 20,100 (got {text!r})")
    if not values or any(v < 2 for v in values):
        _fail(f"--ways needs every N >= 2, e.g. --ways 20,100 (got {text!r})")
    return tuple(dict.fromkeys(values))


def positive(name: str, kind: Callable = int) -> Callable[[str], Any]:
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            _fail(f"{name} takes a positive number (got {text!r})")
        if value <= 0:
            _fail(f"{name} must be positive (got {text!r})")
        return value
    return parse


def choice(name: str, options, aliases: dict[str, str] | None = None) -> Callable[[str], str]:
    """One of `options`; an alias (vocab.ALIASES: "thesis", the older name) becomes its canonical name."""
    def parse(text: str) -> str:
        text = (aliases or {}).get(text, text)
        if text not in options:
            _fail(f"{name} must be one of {', '.join(options)} (got {text!r})")
        return text
    return parse


def prompt_list(text: str):
    """`--prompt NAME|FILE[,NAME|FILE...]` -> the templates (vlmcls.prompts.Template), each file read and
    checked now: a name first, else a path relative to the directory pytest was started in (as
    --report-dir). xdist workers parse their own command line, in that same directory."""
    try:
        return parse_prompts(text)
    except PromptError as exc:
        _fail(str(exc))


def batch_size(text: str) -> int | str:
    """`--batch-size 16` -> 16; `--batch-size auto` -> "auto" (local VLMs: the largest batch that fits)."""
    return "auto" if text == "auto" else positive("--batch-size")(text)


def device(text: str) -> str:
    import re

    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", text):
        _fail(f"--device takes auto, cpu, mps, cuda or cuda:N (got {text!r})")
    return text


def run_id(text: str) -> str:
    """`--run-id pr-123` -> the run folder's name under --report-dir: one plain name (letters, digits,
    `.`, `_`, `-`; not starting with a dot), never a path that could reach outside it."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", text):
        _fail(f"--run-id takes a folder name of letters, digits, '.', '_' and '-' (got {text!r})")
    return text


def base_urls(text: str) -> str:
    """`--base-url URL[,URL...]` or `--base-url FILE` (one URL per line, `#` comments) -> the URLs
    joined by commas: several servers of one deployment share the requests (vlmcls.backends.api).
    Not `@FILE`: pytest expands `@file` arguments itself, before any option sees them."""
    from pathlib import Path

    from .settings import redact_urls, server_urls

    if "://" not in text:
        try:
            lines = Path(text).expanduser().read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            # `--base-url @servers.txt`: pytest put the file's first line here (a comment, say)
            hint = ("; with --base-url @FILE pytest reads the file itself and passes its lines: write "
                    "--base-url FILE") if text.lstrip().startswith("#") or "\n" in text else ""
            _fail(f"--base-url takes http(s) URLs separated by commas, or a file with one per line; "
                  f"cannot read {text!r} ({exc.strerror or exc}){hint}")
        text = ",".join(line.split("#", 1)[0] for line in lines)
    urls = server_urls(text)
    bad = [u for u in urls if not u.startswith(("http://", "https://"))]
    if not urls or bad:
        _fail(f"--base-url takes http(s) URLs separated by commas, or a file with one per line (got {redact_urls((bad or [text])[0])!r})")
    return ",".join(urls)


def nli_model(text: str) -> str:
    """`--nli-model ~/nli` -> its folder under the home directory (the loader takes a path as given: an
    unexpanded `~` reads as a malformed hub repo id). A smoke name, hub repo id or other path stays as given."""
    from pathlib import Path

    return str(Path(text).expanduser()) if text.startswith("~") else text


def seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        _fail(f"--seed takes a non-negative integer (got {text!r})")
    return value


def label_names_file(text: str) -> str:
    """--label-names FILE: a file that is there (relative to where pytest was started); read with the dataset."""
    from pathlib import Path

    if not Path(text).is_file():
        _fail(f"--label-names: no file {text!r} (relative to where pytest was started)")
    return text


def add_options(parser) -> None:
    g = parser.getgroup("vlmcls", "vlmcls benchmark")
    add = g.addoption
    add("--ways", type=ways_list, default=None, help="N-way settings, comma separated (default 20,100)")
    add("--samples", type=positive("--samples"), default=None, help="seeded stratified subset size (default: the whole split)")
    add("--seed", type=seed, default=0, help="seed for subsets, candidates and the F1 bootstrap (default 0)")
    add("--orders", type=positive("--orders"), default=1,
        help="ask each image K times, its candidates in K seeded orders (the first is the usual one); "
             "the report measures order robustness and position bias (default 1)")
    add("--dataset", default="sample", help="sample | imagenet | PATH | HUB_ID[:SPLIT] (default: the bundled sample)")
    add("--prompt", type=prompt_list, default=STUDY_PROMPT,
        help=f"prompt: a template ({', '.join(TEMPLATES)}; default {STUDY_PROMPT}, the study's), else a UTF-8 file "
             "with {labels} (the candidates, comma separated) or {numbered} (one per line); several, comma "
             "separated, run every case once per prompt")
    add("--labels", dest="labels_mode", type=choice("--labels", LABEL_MODES, ALIASES["labels"]), default=None,
        help="unique (collisions disambiguated, default) or raw (alias thesis: the study's raw first synonyms; default with --study)")
    add("--label-names", type=label_names_file, default=None, metavar="FILE",
        help="the names the prompt shows: one per line (or a .json list) in class-id order, or a .json object / "
             ".csv of class,name rows renaming some classes; the names as given still resolve an answer")
    add("--resolver", type=choice("--resolver", RESOLVERS, ALIASES["resolver"]), default=STUDY_RESOLVER,
        help=f"answer resolution: {', '.join(RESOLVERS)} (study, alias thesis: match, synonym, then NLI; the default)")
    add("--nli-model", type=nli_model, default=None, help="NLI model for the study/nli resolver (default facebook/bart-large-mnli; smoke models use a tiny one)")
    add("--nli-overlap", action="store_true", default=False,
        help="study/nli resolver: resolve each window of answers in a thread while the model answers the next "
             "(off by default until measured on a GPU: bench/perf_nli.py --overlap; not applied with --max-cost, and the case notes say so)")
    add("--nli-compile", action="store_true", default=False,
        help="study/nli resolver: compile the NLI model with torch.compile (once per process: ~2 min for "
             "BART-large on a 2-core CPU; same decisions; off by default until measured on a GPU: bench/perf_nli.py --compile both)")
    add("--quant", type=choice("--quant", QUANTS), default=None, help="local VLM quantization (default: the catalog's; with --study the study's per row)")
    add("--dtype", type=choice("--dtype", DTYPES, DTYPE_ALIASES), default=None,
        help="local model dtype: auto (bfloat16 on CUDA, float32 on the CPU; the default), bfloat16 (bf16), "
             "float16 (fp16, half), float32 (fp32)")
    add("--device", type=device, default=None, help="auto | cpu | cuda | cuda:N | mps (default auto: CUDA, else the CPU; xdist workers spread over GPUs)")
    add("--batch-size", type=batch_size, default=None, help="images per batch for local models, or auto: the largest that fits (default: auto on CUDA, 8 on CPU)")
    add("--max-new-tokens", type=positive("--max-new-tokens"), default=None, help="generation bound (default 32)")
    add("--layout", type=choice("--layout", LAYOUTS, ALIASES["layout"]), default=None,
        help="prompt layout: image-first (alias thesis; the study's, default) or labels-first (KV-cache reuse)")
    add("--concurrency", type=positive("--concurrency"), default=None, help="API requests in flight (default 8)")
    add("--max-image-side", type=positive("--max-image-side"), default=None, help="API images: long side in pixels (default 768)")
    add("--base-url", type=base_urls, default=None,
        help="OpenAI-compatible server URL (vLLM, SGLang, Ollama); several: URL,URL,... or a file with one per line")
    add("--api-constrained", action="store_true", default=False, help="OpenAI-compatible servers: restrict answers to the candidates")
    add("--max-cost", type=positive("--max-cost", float), default=None, help="stop API cases before spending more than this many USD")
    add("--trust-remote-code", action="store_true", default=False, help="allow hub remote code (Phi-3-vision); the report says it ran")
    add("--catalog", default=None, help="model catalog TOML (default: vlmcls/catalog.toml)")
    add("--report-dir", default="reports", help="where reports/<run-id>/ goes (default ./reports)")
    add("--store", default=None, help="per-sample result store (default <report-dir>/store.sqlite)")
    add("--run-id", type=run_id, default=None,
        help="name the run folder (<report-dir>/NAME instead of a timestamp); an earlier run of that name is replaced")
    add("--baseline", default=None, help="a saved run folder: a case also fails when McNemar's test finds it significantly worse")
    add("--refresh", action="store_true", default=False, help="ignore stored results and recompute every sample")
    add("--study", action="store_true", default=False,
        help="run exactly the study's 18 rows with its settings per row (N, images, quant, prompt, labels, resolver); "
             "an option given explicitly still wins, and the report says where the run differs from the study")
    add("--average", type=choice("--average", AVERAGES), default="present",
        help="precision/recall/F1 averaging: present (macro over true classes, default), "
             "union (scikit-learn's default macro over true and predicted classes), weighted (scikit-learn's weighted)")
    # pytest owns --strict (strict markers/config); vlmcls honours it too: a case that cannot run
    # here then fails instead of being skipped. --strict-cases does only the vlmcls part.
    add("--strict-cases", action="store_true", default=False, help="a case that cannot run here fails instead of being skipped, and so does one that --baseline gives nothing to compare (also implied by pytest's --strict)")


def labels_mode(opt) -> str:
    """--labels as given; else the study's raw names under --study, disambiguated names otherwise."""
    return opt.labels_mode or (STUDY_LABELS if opt.study else "unique")


def cli_settings(opt) -> dict[str, Any]:
    """The BackendSettings fields given on the command line (None = not given)."""
    return {
        "quant": opt.quant, "dtype": opt.dtype, "device": opt.device,
        "batch_size": None if opt.batch_size in (None, "auto") else opt.batch_size,
        "batch_auto": None if opt.batch_size is None else opt.batch_size == "auto",
        "max_new_tokens": opt.max_new_tokens, "layout": opt.layout, "concurrency": opt.concurrency,
        "max_image_side": opt.max_image_side, "base_url": opt.base_url,
        "constrained": True if opt.resolver == "constrained" else None,
        "rank": True if opt.resolver == "rank" else None,
        "trust_remote_code": True if opt.trust_remote_code else None,
    }
