"""The README's claims read together with the code's truth, so that the two cannot drift apart: the Options
table against the options pytest registers (names and defaults), the counts it states (micro-benchmarks,
smoke cases, the study's rows, the bundled sample), the `vlmcls` commands, the files and fields a run writes,
and the commands .ci/run runs. Each test parses README.md; a change on either side alone fails it."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


# ------------------------------------------------------------------------------------------ README parsing
def section(title: str) -> str:
    """The text of `## title` (or `### title`) up to the next heading of the same or a higher level
    (a `# comment` inside a fenced code block is no heading)."""
    lines = README.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if re.fullmatch(rf"#+ {re.escape(title)}\n", line)), None)
    assert start is not None, f"README has no heading {title!r}"
    level = len(lines[start]) - len(lines[start].lstrip("#"))
    fenced, out = False, []
    for line in lines[start + 1:]:
        fenced ^= line.startswith("```")
        if not fenced and re.match(rf"#{{1,{level}}} ", line):
            break
        out.append(line)
    return "".join(out)


def options_table() -> dict[str, tuple[str, str]]:
    """`## Options` as {option: (its default cell, the row's meaning cell)}. A row naming several options
    (`--quant` / `--dtype` / `--device` | catalog / auto) gives each its own default, the last one
    standing for the rest; pytest's own `--strict` (named in the `--strict-cases` row) is not ours."""
    table: dict[str, tuple[str, str]] = {}
    for line in section("Options").splitlines():
        if not line.startswith("| `--"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        assert len(cells) == 3, f"an Options row without 3 cells: {line[:80]}"
        first = re.sub(r"\(or pytest's `--strict`\)", "", cells[0])
        names = re.findall(r"`(--[a-z][a-z0-9-]*)", first)
        defaults = [d.strip() for d in cells[1].split(" / ")]
        for i, name in enumerate(names):
            table[name] = (defaults[min(i, len(defaults) - 1)], cells[2])
    return table


def plain(cell: str) -> str:
    return cell.replace("`", "").strip()


def number_before(words: str, text: str = README) -> list[int]:
    """Every integer the README writes right before `words` ("14 micro-benchmarks" -> [14, ...])."""
    return [int(n.replace(",", "")) for n in re.findall(rf"(\d[\d,]*) {re.escape(words)}", text)]


def unparenthesised(text: str) -> str:
    while True:
        shorter = re.sub(r"\([^()]*\)", "", text)
        if shorter == text:
            return text
        text = shorter


def ticked(text: str) -> list[str]:
    return re.findall(r"`([^`]+)`", text)


# ------------------------------------------------------------------------------------------ code's truth
@pytest.fixture(scope="module")
def help_options() -> list[str]:
    """The options of the `vlmcls benchmark` group in `pytest --help`, in order, from a real pytest."""
    out = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120).stdout
    group = out.split("vlmcls benchmark:\n", 1)[1]
    group = re.split(r"\n\S", group, maxsplit=1)[0]  # up to the next group's heading
    return re.findall(r"^  (--[a-z][a-z0-9-]*)", group, re.M)


@pytest.fixture(scope="module")
def defaults():
    """The parsed options of a command line with no vlmcls option, as the plugin's parser makes them."""
    from _pytest.config.argparsing import Parser

    from vlmcls.plugin import pytest_addoption

    parser = Parser(_ispytest=True)
    pytest_addoption(parser)
    return parser.parse_known_args([])


_COLLECTED: dict[tuple[str, ...], list[str]] = {}


def collected_ids(*args: str) -> list[str]:
    """`pytest bench --co -q ARGS` from another folder, as a user lists the ids (a subprocess: an in-process
    run inside an xdist worker takes that worker down); each command line once per process."""
    if args not in _COLLECTED:
        out = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", str(ROOT / "bench"), "--co",
                              "-q", *args], cwd=ROOT / "vlmcls", capture_output=True, text=True, timeout=180)
        _COLLECTED[args] = [line.split("bench/", 1)[1] for line in out.stdout.splitlines() if "::" in line]
        assert _COLLECTED[args], out.stdout[-2000:] + out.stderr[-2000:]
    return _COLLECTED[args]


def case_ids(*args: str) -> list[str]:
    return [i.split("[", 1)[1].rstrip("]") for i in collected_ids(*args) if i.startswith("test_classify.py")]


# ------------------------------------------------------------------------------------------ the Options table
def test_every_option_pytest_help_shows_is_in_the_readme_options_table_and_no_other(help_options):
    table = options_table()
    assert len(help_options) >= 30, help_options  # the group was found and read
    assert sorted(set(help_options) - set(table)) == [], "options in `pytest --help` the README table lacks"
    assert sorted(set(table) - set(help_options)) == [], "options in the README table pytest does not have"


def test_the_options_table_defaults_are_the_ones_the_code_uses(defaults):
    """Each default cell against what the parser (or, where the option is left None, the setting's own
    default) gives a command line without the option."""
    from vlmcls.options import DEFAULT_WAYS, labels_mode
    from vlmcls.plan import DEFAULT_NLI
    from vlmcls.settings import BackendSettings

    table = {k: plain(v[0]) for k, v in options_table().items()}
    s = BackendSettings()
    off = {False: "off", True: "on"}
    truth = {
        "--ways": ",".join(map(str, DEFAULT_WAYS)),
        "--seed": str(defaults.seed),
        "--orders": str(defaults.orders),
        "--dataset": defaults.dataset,
        "--prompt": ",".join(t.name for t in defaults.prompt),
        "--resolver": defaults.resolver,
        "--nli-model": DEFAULT_NLI,
        "--average": defaults.average,
        "--report-dir": defaults.report_dir,
        "--max-new-tokens": str(s.max_new_tokens),
        "--layout": s.layout,
        "--concurrency": str(s.concurrency),
        "--max-image-side": str(s.max_image_side),
        "--dtype": s.dtype,
        "--device": s.device,
    }
    for flag in ("--nli-overlap", "--nli-compile", "--api-constrained", "--trust-remote-code", "--refresh",
                 "--strict-cases", "--study"):
        truth[flag] = off[getattr(defaults, flag[2:].replace("-", "_"))]
    for name, want in truth.items():
        assert table[name] == want, f"README says {name} defaults to {table[name]!r}; the code: {want!r}"
    # options whose default is "not given" (None): the README names what then happens, never a value
    for name, dest in (("--samples", "samples"), ("--quant", "quant"), ("--catalog", "catalog"),
                       ("--run-id", "run_id"), ("--baseline", "baseline"), ("--base-url", "base_url"),
                       ("--max-cost", "max_cost"), ("--store", "store"), ("--labels", "labels_mode"),
                       ("--batch-size", "batch_size")):
        assert getattr(defaults, dest) is None, name
    assert table["--samples"] == "whole split" and table["--quant"] == "catalog" and table["--catalog"] == "bundled"
    assert table["--baseline"] == table["--base-url"] == table["--max-cost"] == "–"
    assert table["--store"] == f"<report-dir>/{Path(defaults.report_dir, 'store.sqlite').name}"
    # --labels: `unique` (`raw` with `--study`)
    assert table["--labels"] == f"{labels_mode(defaults)} (raw with --study)"
    assert labels_mode(type(defaults)(**{**vars(defaults), "study": True})) == "raw"
    # --batch-size: `auto` on CUDA, 8 on CPU
    assert table["--batch-size"] == f"auto on CUDA, {s.batch_size} on CPU"


def test_the_run_id_default_looks_like_the_readmes_example():
    from vlmcls.options import run_id

    example = re.search(r"a timestamp \(`([^`]+)`\)", options_table()["--run-id"][0]).group(1)
    assert run_id(example) == example
    src = (ROOT / "vlmcls" / "session.py").read_text()
    assert 'time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]' in src
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{6}", example)


@pytest.mark.parametrize("option, names", [
    ("--resolver", "RESOLVERS"), ("--labels", "LABEL_MODES"), ("--layout", "LAYOUTS"), ("--average", "AVERAGES"),
    ("--quant", "QUANTS"), ("--prompt", "TEMPLATES")])
def test_every_choice_the_code_accepts_is_named_in_the_options_row(option, names):
    import vlmcls.prompts
    import vlmcls.vocab

    values = getattr(vlmcls.vocab, names, None) or getattr(vlmcls.prompts, names)
    row = {**options_table()}[option]
    words = set(ticked(row[0] + " " + row[1]))
    assert set(values) <= words, f"{option}: {sorted(set(values) - words)} missing from the README row"


def test_the_thesis_alias_is_said_exactly_where_the_code_accepts_it():
    from vlmcls.vocab import ALIASES

    table = options_table()
    said = {opt[2:] for opt, (_, meaning) in table.items() if "`thesis` is accepted as an alias" in meaning}
    assert said == {k for k, table_ in ALIASES.items() if "thesis" in table_}


# ------------------------------------------------------------------------------------------ counts
def test_the_counts_the_readme_gives_of_the_offline_default_are_what_pytest_collects():
    """`28 cases plus 14 micro-benchmarks` (Two commands; the CPU table), `the 14 micro-benchmarks`,
    `54 real-model cases skip offline`, and the smoke subsets' sizes (32 images for the tiny VLMs, 8 for
    the five newer families)."""
    from vlmcls.catalog import load_catalog

    micro = [i for i in collected_ids() if i.startswith("test_micro")]
    cases = case_ids()
    smoke = [c for c in cases if c.startswith("smoke-")]
    assert set(number_before("micro-benchmarks")) == {len(micro)}, (number_before("micro-benchmarks"), len(micro))
    assert number_before("cases plus") == [len(smoke)]
    assert number_before("smoke cases") == [len(smoke)]
    assert number_before("real-model cases skip offline") == [len(cases) - len(smoke)]
    # every smoke model is gated on plumbing; the subsets it runs unless --samples is given
    entries = [e for e in load_catalog().values() if e.smoke]
    m = re.search(r"the tiny VLMs on a (\d+)-image subset, the (\w+) newer families on (\d+) images", README)
    tiny, newer = int(m.group(1)), int(m.group(3))
    count = {"five": 5, "four": 4, "six": 6, "three": 3}[m.group(2)]
    assert {e.samples for e in entries if e.samples} == {tiny, newer}
    assert sum(e.samples == newer for e in entries) == count


def test_the_studys_18_rows_are_what_study_collects():
    rows = number_before("rows", section("Options")) + number_before("rows", section("Running real models"))
    ids = case_ids("--study")
    assert rows and set(rows) == {len(ids)}, (rows, len(ids))


def test_the_bundled_sample_is_as_described():
    import pyarrow.parquet as pq

    m = re.search(r"`vlmcls/data/sample\.parquet`, ([\d,]+) images of (\d+) ImageNet classes[^,]*, ([\d.]+) MB",
                  README)
    images, classes, mb = int(m.group(1).replace(",", "")), int(m.group(2)), float(m.group(3))
    path = ROOT / "vlmcls" / "data" / "sample.parquet"
    labels = pq.read_table(path, columns=["label"]).column("label").to_pylist()
    assert (len(labels), len(set(labels))) == (images, classes)
    assert round(path.stat().st_size / 1e6, 2) == mb


def test_the_catalogs_backends_are_the_ones_the_readme_lists():
    """`backend` (`hf-vlm`, `openai`, ...), and `the echo backend is the scripted stand-in`."""
    from vlmcls.backends.registry import BACKENDS

    m = re.search(r"one table per model with `backend`\s+\(([^)]*)\)", README)
    listed = set(ticked(m.group(1)))
    assert listed | {"echo"} == set(BACKENDS)
    assert "The `echo` backend is the scripted stand-in" in README


def test_the_resolver_stages_a_sample_records_are_the_ones_the_readme_lists():
    from vlmcls.vocab import STAGES

    m = re.search(r"`stage` \(what decided: ([^)]*)\)", README)
    assert ticked(m.group(1)) and set(ticked(m.group(1))) == set(STAGES)


EXAMPLE_IDS = [i for i in dict.fromkeys(re.findall(r"`([a-z0-9][a-z0-9.-]*-\d+way(?:-[a-z-]+)?)`", README))
               if i != "model-20way"]  # `model-20way`: the shape, not an id


@pytest.mark.parametrize("case_id", EXAMPLE_IDS)
def test_every_case_id_the_readme_gives_as_an_example_is_one_pytest_collects(case_id):
    """Case ids are `<model>[-<quant>]-<N>way` (`-<prompt>` at the end in a prompt sweep): each example the
    README writes is an id of the bundled catalog, in a plain run or in a sweep of two prompts."""
    assert len(EXAMPLE_IDS) >= 4, EXAMPLE_IDS
    ids = set(case_ids()) | set(case_ids("--prompt", "thesis,label-only"))
    assert case_id in ids, sorted(i for i in ids if i.startswith(case_id.split("-")[0]))


# ------------------------------------------------------------------------------------------ commands
def test_the_vlmcls_commands_are_the_ones_the_readme_names():
    out = subprocess.run([sys.executable, "-m", "vlmcls", "--help"], capture_output=True, text=True, timeout=60,
                         cwd=ROOT).stdout
    commands = set(re.findall(r"^    ([a-z][a-z-]+)\s", out, re.M))
    assert commands == {"report", "stub-server"}
    for c in commands:
        assert f"python -m vlmcls {c}" in README
    report = subprocess.run([sys.executable, "-m", "vlmcls", "report", "--help"], capture_output=True, text=True,
                            timeout=60, cwd=ROOT).stdout
    flags = set(re.findall(r"(--[a-z][a-z-]+)", report)) - {"--help"}
    told = section("Options")  # `python -m vlmcls report ...` is described at the end of Options
    assert {"--baseline", "--out", "--catalog", "--summary"} <= flags
    for flag in sorted({"--baseline", "--out", "--catalog", "--summary"}):
        assert flag in told


def test_every_vlmcls_report_option_is_in_the_readme():
    report = subprocess.run([sys.executable, "-m", "vlmcls", "report", "--help"], capture_output=True, text=True,
                            timeout=60, cwd=ROOT).stdout
    flags = set(re.findall(r"(--[a-z][a-z-]+)", report)) - {"--help"}
    assert {f for f in flags if f not in README} == set()


def test_ci_runs_the_readmes_install_test_and_bench_commands():
    """.ci/run is the README's "Two commands" (install, tests, offline bench), not other ones."""
    ci = (ROOT / ".ci" / "run").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", section("Two commands"), re.S)
    install, tests = blocks[0].strip(), blocks[1].strip()
    assert 'pip install -e ".[all]"' in install and 'pip install --quiet -e ".[all]"' in ci
    assert re.search(rf"^{re.escape(tests)}$", ci, re.M), f"{tests!r} is not a line of .ci/run"
    assert "HF_HUB_OFFLINE=1 pytest bench" in install
    assert re.search(r"^HF_HUB_OFFLINE=1 python -m pytest bench( |$)", ci, re.M)


def test_the_example_run_in_reports_cannot_serve_as_a_baseline_as_the_readme_says():
    assert "`reports/example-smoke` has no `samples/`" in README
    example = ROOT / "reports" / "example-smoke"
    assert (example / "results.json").is_file() and not (example / "samples").exists()


# ------------------------------------------------------------------------------------------ what a run writes
@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """`pytest bench -k "smoke-echo or smoke-openai"` twice from a user's folder (two cases: the report pairs
    them), the second against the first as --baseline (a subprocess each, once for every test below)."""
    cwd = tmp_path_factory.mktemp("user")
    env_args = ["-p", "no:cacheprovider", str(ROOT / "bench" / "test_classify.py"), "-k",
                "smoke-echo or smoke-openai", "--samples", "12", "--ways", "20"]
    for extra in (["--run-id", "r1"], ["--run-id", "r2", "--baseline", "reports/r1"]):
        done = subprocess.run([sys.executable, "-m", "pytest", *env_args, *extra], cwd=cwd, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return cwd / "reports"


def test_a_run_writes_the_files_the_readme_names(two_runs):
    run = two_runs / "r2"
    text = section("What a run writes")
    for name in ("report.md", "results.json", "summary.md"):
        assert f"`{name}`" in text and (run / name).is_file()
    assert "`per_class/<case>.json`" in text and (run / "per_class" / "smoke-echo-20way.json").is_file()
    assert "`samples/<case>.jsonl`" in text and (run / "samples" / "smoke-echo-20way.jsonl").is_file()
    assert "`<report-dir>/store.sqlite`" in README and (two_runs / "store.sqlite").is_file()


def test_a_samples_record_has_exactly_the_fields_the_readme_lists_in_its_order(two_runs):
    text = section("What a run writes")
    listing = text.split("with one record per sample:", 1)[1].split(". With `--orders K`", 1)[0]
    fields = ticked(unparenthesised(listing))
    record = json.loads((two_runs / "r2" / "samples" / "smoke-echo-20way.jsonl").read_text().splitlines()[0])
    assert fields == list(record), (fields, list(record))


def _bullets(after: str, until: str) -> list[str]:
    text = section("What a run writes").split(after, 1)[1].split(until, 1)[0]
    return [b for b in re.split(r"\n- ", "\n" + text) if b.strip().startswith("`")]


def test_results_json_has_the_keys_the_readme_lists(two_runs):
    results = json.loads((two_runs / "r2" / "results.json").read_text())
    bullets = _bullets("one case per row, for scripts:", "## How it scores")
    assert set(results) == set(re.findall(r'"(\w+)"', README.split("`results.json` is `", 1)[1].split("`", 1)[0]))
    case = results["cases"][0]
    conditional = {"calibration", "baseline", "meta"}  # --resolver rank (or a baseline), --baseline; not a case key
    leading = [ticked(b)[0] for b in bullets]
    assert {"case_id", "status", "threshold", "metrics", "stages", "ran_on", "prompt_text"} <= set(leading)
    for key in leading:
        if key not in conditional:
            assert key in case, f"README lists `{key}` for every case; results.json: {sorted(case)}"
    before, settings = bullets[0].split("every setting it ran", 1)
    for key in ticked(unparenthesised(before)) + ticked(settings):
        assert key in case or key.startswith("--"), key  # an option named beside its key is no key
    metrics = next(b for b in bullets if b.startswith("`metrics`"))
    for key in ticked(unparenthesised(metrics.split(":", 1)[1])):
        if re.fullmatch(r"[a-z_0-9]+", key) and key not in ("present", "union", "weighted"):
            assert key in case["metrics"], key
    assert set(case["metrics"]["conventions"]) == {"present", "union", "weighted"}
    baseline = next(b for b in bullets if b.startswith("`baseline`"))
    for key in ticked(baseline)[1:]:
        if key != "why":  # only when not compared
            assert key in case["baseline"], key
    meta = next(b for b in bullets if b.startswith("`meta`"))
    for key in ticked(unparenthesised(meta.split(":", 1)[1])):
        if key != "git_diff" and not key.startswith("--"):  # only with uncommitted changes; an option named
            assert key in results["meta"], key
    assert {"date", "vlmcls", "torch", "transformers", "scikit-learn", "scipy", "numpy", "python"} <= set(
        results["meta"]["provenance"])


def test_the_readmes_pandas_recipe_runs_on_a_run_folder(two_runs):
    """The `For your own tables (pandas)` block, pointed at this run: its assert holds."""
    block = re.search(r"```python\n(import json, pandas as pd\n.*?)```", README, re.S).group(1)
    run = two_runs / "r2"
    code = (block.replace("reports/pr-123", str(run))
            .replace("qwen2-vl-2b-none-20way", "smoke-echo-20way"))
    exec(compile(code, "README pandas block", "exec"), {})


def test_report_md_sections_come_in_the_order_the_readme_gives(two_runs):
    text = section("What a run writes").split("`results.json`,", 1)[0]
    said = ["Model against model", "comparison with the study", "PNG plots", "most frequent confusions", "notes",
            "provenance"]
    where = {s: text.find(s) for s in said}
    assert all(v >= 0 for v in where.values()), where
    readme_order = sorted(said, key=where.get)
    heading = {"Model against model": "## Model against model",
               "comparison with the study": "## Compared with the study",
               "PNG plots": "## Plots", "most frequent confusions": "## Most frequent confusions",
               "notes": "## Notes", "provenance": "## Provenance"}
    report = (two_runs / "r2" / "report.md").read_text()
    at = {s: report.find("\n" + heading[s]) for s in said}
    assert all(v >= 0 for v in at.values()), at
    assert sorted(said, key=at.get) == readme_order


def test_a_cost_note_never_prints_float_residue_as_a_stored_amount():
    """First run: every sample paid now, total and now summed in different orders. The notes must say
    `0.0000 stored`, not `0.000000000000000028 stored`."""
    from vlmcls.report.markdown import _cost

    total = sum([0.1, 0.2, 0.3])  # 0.6000000000000001
    now = sum([0.3, 0.2, 0.1])  # 0.6
    assert total != now
    assert _cost({"cost_usd": total, "cost_now_usd": now, "smoke": True}).endswith(
        ": 0.6000 this run, 0.0000 stored (from earlier runs)")
