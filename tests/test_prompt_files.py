"""A user's own prompt (`--prompt mine.txt`) and prompt sweeps (`--prompt thesis,label-only,mine.txt`).

Run as users run them where it matters (`pytest bench` in a temp dir, serially and with -n 2, the
instant `echo` smoke backend); the parsing and rendering rules directly on vlmcls.prompts and plan.
A conftest in the temp dir records every query the real echo backend receives, so the tests see
the prompt text exactly as the model would.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlmcls import plan, prompts
from vlmcls.catalog import load_catalog
from vlmcls.report.compare import unlike_study

CATALOG = '[models.echo-a]\nbackend = "echo"\nweights = "smoke:echo"\nsmoke = true\n'
# wraps the real backend: every query it answers, as it got it, one JSON line per query
RECORDER = """
import json, os
from vlmcls.backends import echo

_answer = echo.EchoBackend.answer

def answer(self, queries):
    with open(os.path.join(os.path.dirname(__file__), "asked.jsonl"), "a", encoding="utf-8") as log:
        for q in queries:
            log.write(json.dumps({"prefix": q.prefix, "prompt": q.prompt, "labels": list(q.labels)}) + "\\n")
    return _answer(self, queries)

echo.EchoBackend.answer = answer
"""
# `|`, HTML and a backtick: the report must escape them; a blank line and a second line: kept
MINE = "Which of these is it: {labels}?\n\nReply <b>only</b> with the name | no `code`.\n"


@pytest.fixture
def bench(bench: pytest.Pytester) -> pytest.Pytester:
    bench.makefile(".toml", catalog=CATALOG)
    (bench.path / "conftest.py").write_text(RECORDER)
    (bench.path / "mine.txt").write_text(MINE, encoding="utf-8")
    return bench


def run(p: pytest.Pytester, *args: str) -> pytest.RunResult:
    return p.runpytest_subprocess("bench", "--catalog", "catalog.toml", "-p", "no:cacheprovider", *args)


def results(p: pytest.Pytester, folder: str = "reports") -> tuple[list[dict], Path]:
    (run_dir,) = [d for d in (p.path / folder).iterdir() if d.is_dir()]
    return json.loads((run_dir / "results.json").read_text())["cases"], run_dir


def asked(p: pytest.Pytester) -> list[dict]:
    path = p.path / "asked.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


def collected(out: pytest.RunResult) -> list[str]:
    return sorted(line.split("[", 1)[1].rstrip("]") for line in out.stdout.lines if "::test_classify[" in line)


# ---------------------------------------------------------------------------------- usage errors
@pytest.mark.parametrize("text, problem", [
    (None, "'missing.txt' is neither a template (thesis, label-only, numbered) nor an existing file"),
    ("Name the object.", "has no {labels} or {numbered} placeholder"),
    ("Pick one of {label}.", "has an unknown field {label}"),
    ("Pick one of {labels} {", "has a stray brace"),
    ("Pick one of {labels} }", "has a stray brace"),
    (" \n\n", "is empty"),
])
def test_a_bad_prompt_file_is_one_usage_line_naming_the_problem(bench, text, problem):
    if text is not None:
        (bench.path / "missing.txt").write_text(text, encoding="utf-8")
    out = run(bench, "--prompt", "thesis,missing.txt", "--ways", "5")
    assert out.ret == pytest.ExitCode.USAGE_ERROR
    err = out.stderr.str()
    assert "Traceback" not in err and "INTERNALERROR" not in err
    (line,) = [l for l in err.splitlines() if "argument --prompt:" in l]
    assert problem in line
    if text is not None:
        assert "prompt file missing.txt " in line  # the file as the user named it
    assert not asked(bench)  # nothing ran


def test_two_prompts_with_one_case_id_part_are_a_usage_error(bench):
    (bench.path / "thesis.txt").write_text("Classes: {labels}.", encoding="utf-8")
    out = run(bench, "--prompt", "thesis,thesis.txt")
    assert out.ret == pytest.ExitCode.USAGE_ERROR
    (line,) = [l for l in out.stderr.str().splitlines() if "argument --prompt:" in l]
    assert "share the case-id part 'thesis'" in line


# ---------------------------------------------------------------------------------- the text asked
def expected(text: str, labels: list[str]) -> str:
    """The file's text as the model must get it, built without str.format: the placeholder replaced,
    the doubled braces undone, the final line break (the editor's) dropped."""
    return text.rstrip("\n").replace("{labels}", ", ".join(labels)).replace("{{", "{").replace("}}", "}")


def test_a_file_prompt_reaches_the_backend_verbatim_and_the_report_shows_it(bench):
    out = run(bench, "--prompt", "mine.txt", "--ways", "5", "--samples", "12")
    out.assert_outcomes(passed=1)
    queries = asked(bench)
    assert len(queries) == 12
    assert all(q["prefix"] == "" and q["prompt"] == expected(MINE, q["labels"]) for q in queries)
    (row,), run_dir = results(bench)
    name = f"mine.txt@{prompts.text_hash(MINE[:-1])}"
    assert row["case_id"] == "echo-a-5way"  # one prompt: the id as before
    assert row["tag"] == "echo-a" and row["prompt"] == name
    assert row["prompt_text"] == MINE[:-1] and Path(row["prompt_file"]).samefile(bench.path / "mine.txt")
    text = (run_dir / "report.md").read_text()
    assert f"prompt `{name}`" in text  # the settings line above the table
    section = text.split("## Prompts", 1)[1].split("\n## ", 1)[0]
    (entry,) = [l for l in section.splitlines() if l.startswith("- ")]
    assert entry.startswith(f"- `{name}`: ") and str(bench.path) not in text  # no local folder published
    assert entry.endswith(": Which of these is it: {labels}?<br><br>"
                          "Reply &lt;b&gt;only&lt;/b&gt; with the name \\| no \\`code\\`.")
    assert "<b>" not in text


def test_a_single_builtin_prompt_report_has_no_prompt_section(bench):
    run(bench, "--prompt", "label-only", "--ways", "5", "--samples", "6").assert_outcomes(passed=1)
    (row,), run_dir = results(bench)
    assert row["prompt"] == "label-only" and "prompt_file" not in row and row["tag"] == "echo-a"
    assert row["prompt_text"] == prompts.TEMPLATES["label-only"].text  # what was asked, if the built-in changes
    assert "## Prompts" not in (run_dir / "report.md").read_text()
    template = prompts.TEMPLATES["label-only"].text
    assert all(q["prompt"] == expected(template, q["labels"]) for q in asked(bench))


NUMBERED = "Classes {{as listed}}:\n{numbered}\nWhich one is it? Not one of {labels}? Say so.\n"


def test_labels_first_splits_a_file_prompt_after_its_list(bench):
    (bench.path / "num.txt").write_text(NUMBERED, encoding="utf-8")
    run(bench, "--prompt", "num.txt", "--layout", "labels-first", "--ways", "5", "--samples", "8").assert_outcomes(passed=1)
    queries = asked(bench)
    assert len(queries) == 8
    for q in queries:
        listed = "\n".join(f"{i}. {label}" for i, label in enumerate(q["labels"], 1))
        assert q["prefix"] == "Classes {as listed}:\n" + listed
        # the question after the image is filled in too (a list named twice, escaped braces)
        assert q["prompt"] == f"Which one is it? Not one of {', '.join(q['labels'])}? Say so."


# ---------------------------------------------------------------------------------- the store
def test_the_store_keys_the_text_so_an_edited_file_gets_fresh_answers(bench):
    args = ("--prompt", "mine.txt", "--ways", "5", "--samples", "10", "--store", "store.sqlite")
    run(bench, *args, "--report-dir", "first").assert_outcomes(passed=1)
    run(bench, *args, "--report-dir", "again").assert_outcomes(passed=1)
    assert len(asked(bench)) == 10  # the second run asked nothing
    (again,), _ = results(bench, "again")
    assert again["resumed"] == 10
    (bench.path / "mine.txt").write_text(MINE.replace("Which of these", "Which one"), encoding="utf-8")
    run(bench, *args, "--report-dir", "edited").assert_outcomes(passed=1)
    (edited,), _ = results(bench, "edited")
    assert edited["resumed"] == 0 and edited["case_id"] == again["case_id"]
    assert edited["prompt"] != again["prompt"]  # the name's hash follows the text
    fresh = asked(bench)[10:]
    assert len(fresh) == 10 and all(q["prompt"].startswith("Which one is it: ") for q in fresh)


# ---------------------------------------------------------------------------------- sweeps
def test_a_sweep_adds_the_prompt_to_the_case_ids_and_k_selects_it(bench):
    (bench.path / "My Prompt v2.txt").write_text("Options: {labels}.", encoding="utf-8")
    sweep = ("--prompt", "thesis,label-only,My Prompt v2.txt", "--ways", "5,10", "--collect-only", "-q")
    assert collected(run(bench, *sweep)) == sorted(
        f"echo-a-{n}way-{p}" for n in (5, 10) for p in ("thesis", "label-only", "my-prompt-v2"))
    assert collected(run(bench, *sweep, "-k", "label-only")) == ["echo-a-10way-label-only", "echo-a-5way-label-only"]
    assert collected(run(bench, *sweep, "-k", "5way and my-prompt-v2")) == ["echo-a-5way-my-prompt-v2"]
    # one prompt, a file or a name: the ids stored runs and --baseline pair by
    for one in ("My Prompt v2.txt", "label-only"):
        assert collected(run(bench, "--prompt", one, "--ways", "5,10", "--collect-only", "-q")) == \
            ["echo-a-10way", "echo-a-5way"]


def test_a_sweep_runs_each_prompt_and_the_report_tells_the_rows_apart(bench):
    sub = bench.path / "prompts"
    sub.mkdir()
    (sub / "mine.txt").write_text(MINE, encoding="utf-8")
    # under xdist: each worker parses the relative path itself, from where pytest was started
    out = run(bench, "--prompt", "thesis,label-only,prompts/mine.txt", "--ways", "5", "--samples", "6", "-n", "2")
    out.assert_outcomes(passed=3)
    rows, run_dir = results(bench)
    by_id = {r["case_id"]: r for r in rows}
    name = f"mine.txt@{prompts.text_hash(MINE[:-1])}"
    assert {cid: (r["tag"], r["prompt"]) for cid, r in by_id.items()} == {
        "echo-a-5way-thesis": ("echo-a [thesis]", "thesis"),
        "echo-a-5way-label-only": ("echo-a [label-only]", "label-only"),
        "echo-a-5way-mine": ("echo-a [mine]", name),
    }
    texts = {q["prompt"].split(":", 1)[0] for q in asked(bench)}  # each prompt asked, 6 images each
    assert len(asked(bench)) == 18 and len(texts) == 3
    report_md = (run_dir / "report.md").read_text()
    table = report_md.split("## 5-way", 1)[1].split("\n## ", 1)[0]
    models = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| echo-a")]
    assert sorted(models) == ["echo-a [label-only] *smoke*", "echo-a [mine] *smoke*", "echo-a [thesis] *smoke*"]
    section = report_md.split("## Prompts", 1)[1].split("\n## ", 1)[0]
    assert f"- `thesis`: {prompts.THESIS}" in section
    assert f"- `{name}`: Which of these is it" in section
    assert sum(l.startswith("- `") for l in section.splitlines()) == 3  # each prompt once
    terminal = out.stdout.str()
    assert all(f"echo-a [{p}] *smoke*" in terminal for p in ("thesis", "label-only", "mine"))


# ---------------------------------------------------------------------------------- rules
def test_a_name_wins_over_a_file_and_a_whole_value_naming_a_file_is_one_file(tmp_path):
    (tmp_path / "thesis").write_text("Mine: {labels}.", encoding="utf-8")
    (tmp_path / "a,b.txt").write_text("\ufeffPick: {labels}.\r\n", encoding="utf-8")  # BOM, CRLF
    (tmp_path / "b.txt").write_text("B: {labels}.", encoding="utf-8")
    assert prompts.parse_prompts("thesis", tmp_path) == (prompts.TEMPLATES["thesis"],)
    assert [t.name for t in prompts.parse_prompts("./thesis", tmp_path)] == [f"thesis@{prompts.text_hash('Mine: {labels}.')}"]
    (one,) = prompts.parse_prompts("a,b.txt", tmp_path)
    assert one.text == "Pick: {labels}." and one.slug == "a-b"
    both = prompts.parse_prompts("label-only, b.txt,label-only,./b.txt", tmp_path)  # each prompt once
    assert [t.slug for t in both] == ["label-only", "b"]


def test_a_script_plans_a_sweep_with_the_same_rules(tmp_path):
    (tmp_path / "mine.txt").write_text("Mine: {labels}.", encoding="utf-8")
    catalog = {"smoke-echo": load_catalog()["smoke-echo"]}
    sweep = plan.RunOptions(ways=(5,), prompt=("label-only", str(tmp_path / "mine.txt")))
    specs = plan.cases(catalog, sweep)
    assert [s.case_id for s in specs] == ["smoke-echo-5way-label-only", "smoke-echo-5way-mine"]
    assert specs[0].prompt == "label-only"  # a built-in by name, as before
    assert specs[1].template.text == "Mine: {labels}." and specs[0].key_fields() != specs[1].key_fields()
    (single,) = plan.cases(catalog, plan.RunOptions(ways=(5,), prompt=str(tmp_path / "mine.txt")))
    assert single.case_id == "smoke-echo-5way" and single.key_fields() == specs[1].key_fields()


def test_a_model_that_scores_the_candidates_itself_runs_once_per_sweep():
    """CLIP and classifiers take no prompt: a sweep would recompute identical results once per prompt."""
    catalog = {name: load_catalog()[name] for name in ("smoke-echo", "smoke-clip", "smoke-resnet")}
    specs = plan.cases(catalog, plan.RunOptions(ways=(5,), prompt="label-only,thesis"))
    assert [s.case_id for s in specs] == ["smoke-echo-5way-label-only", "smoke-echo-5way-thesis",
                                          "smoke-clip-5way", "smoke-resnet-5way"]
    alone = plan.cases(catalog, plan.RunOptions(ways=(5,), prompt="label-only"))
    assert [s.key_fields() for s in specs[2:]] == [s.key_fields() for s in alone[1:]]  # as a one-prompt run: stored rows serve


def test_study_with_a_sweep_runs_each_study_row_once_per_prompt_and_says_where_it_differs():
    """--study: an explicit option wins (plan.py), a sweep too; the comparison names the prompt."""
    catalog = load_catalog()
    study = plan.cases(catalog, plan.RunOptions(study=True))
    sweep = plan.cases(catalog, plan.RunOptions(study=True, prompt="thesis,label-only"))
    generative = lambda s: s.model.info.answers == "generative"
    assert [s.case_id for s in sweep] == [
        i for s in study for i in ([f"{s.case_id}-{p}" for p in ("thesis", "label-only")] if generative(s) else [s.case_id])]
    assert any(not generative(s) for s in study)  # the baselines: once each
    assert [(s.model.name, s.ways, s.samples, s.settings.quant) for s in sweep if s.prompt_id != "label-only"] == \
        [(s.model.name, s.ways, s.samples, s.settings.quant) for s in study]
    row = next(r for r in catalog.values() if r.study).study[0]
    assert unlike_study({"prompt": "label-only"}, row) == ["prompt label-only (study's: thesis)"]
    assert unlike_study({"prompt": "thesis"}, row) == []
