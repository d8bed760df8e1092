"""Mutation run 8 (mutmut): what the tests of the model-against-model section (report/pairwise.py), prompt
files and sweeps (prompts.py) and the remote-code check (remote_code.py) did not pin down.

In process, so that mutmut's per-test coverage sees them: the prompt-file rules are otherwise tested
through `pytest bench` subprocesses. Every message a user reads is checked word for word."""
from __future__ import annotations

import hashlib
from itertools import combinations
from pathlib import Path

import pytest

from test_pairwise import answers, row, run_folder, tables
from vlmcls import prompts, remote_code
from vlmcls.prompts import PromptError
from vlmcls.report import pairwise
from vlmcls.report.markdown import parse_table

CANDIDATES = ("cat", "dog", "fox")
OTHER = ("dog", "cat", "owl")


# ================================================================================ report/pairwise.py
# ---------------------------------------------------------------------------------- what is paired
def test_the_same_sample_id_with_another_label_and_candidates_is_not_paired():
    """s0 and s1 swap their (label, candidates) between the cases: every key part matches some sample
    of the other case, but never the same sample's."""
    a = answers("r", CANDIDATES) + answers("r", OTHER, true=(2, "dog"), start=1)
    b = answers("r", OTHER, true=(2, "dog")) + answers("r", CANDIDATES, start=1)
    assert pairwise.versus(a, b).n == 0
    assert [v.tested for v in pairwise.comparisons([(row("model-a", 20, a), a), (row("model-b", 20, b), b)])] == [False]


def test_the_same_class_id_under_another_label_text_is_not_paired():
    """Another label mode names class 1 otherwise: not the same question."""
    a, b = answers("rrrr"), answers("wwww", true=(1, "kitty"))
    assert pairwise.versus(a, b).n == 0
    assert pairwise.versus(a, answers("wwww")).n == 4  # the same label text: paired


# ---------------------------------------------------------------------------------- the alike column
def alike_column(accuracy_patterns: dict[str, str], holm: dict[tuple[str, str], float | None],
                 alpha: float = 0.05) -> dict[str, str]:
    """The ranking's "Not significantly different from" column for cases whose pairwise Holm p-values
    are given by hand (a pair not listed: 0.001, clearly different)."""
    rows = {name: row(name, 20, answers(p)) for name, p in accuracy_patterns.items()}
    paired = pairwise.versus(answers("r"), answers("w"))
    pairs = [pairwise.Versus(rows[x], rows[y], paired, holm.get((x, y), holm.get((y, x), 0.001)))
             for x, y in combinations(rows, 2)]
    table = parse_table(pairwise.rank_table(pairwise.ranked(list(rows.values())), pairs, alpha))
    return {r["Model"]: r["Not significantly different from"] for r in table}


def test_two_alike_cases_name_each_other():
    assert alike_column({"model-a": "rrrr", "model-b": "rrww"}, {("model-a", "model-b"): 0.5}) == {
        "model-a": "model-b", "model-b": "model-a"}


def test_two_of_three_others_are_listed_by_name():
    column = alike_column({"model-a": "rrrr", "model-b": "rrrw", "model-c": "rrww", "model-d": "rwww"},
                          {("model-a", "model-b"): 0.5, ("model-a", "model-c"): 0.2})
    assert column == {"model-a": "model-b, model-c", "model-b": "model-a", "model-c": "model-a", "model-d": "—"}


def test_all_but_only_when_the_complement_is_shorter():
    """Four others, two alike: the list and its complement are as long, so the list is named."""
    pattern = {"model-a": "rrrrr", "model-b": "rrrrw", "model-c": "rrrww", "model-d": "rrwww", "model-e": "rwwww"}
    column = alike_column(pattern, {("model-a", "model-b"): 0.5, ("model-a", "model-c"): 0.5})
    assert column["model-a"] == "model-b, model-c"
    column = alike_column(pattern, {("model-a", x): 0.5 for x in ("model-b", "model-c", "model-d")})
    assert column["model-a"] == "all but model-e"


def test_a_holm_p_equal_to_alpha_is_not_significant():
    """Significant means p < alpha: at p == alpha the difference is not called real."""
    column = alike_column({"model-a": "rrrr", "model-b": "rrww"}, {("model-a", "model-b"): 0.05})
    assert column == {"model-a": "model-b", "model-b": "model-a"}
    column = alike_column({"model-a": "rrrr", "model-b": "rrww"}, {("model-a", "model-b"): 0.0499})
    assert column == {"model-a": "—", "model-b": "—"}


def test_alpha_reaches_the_ranking_and_the_intro(tmp_path):
    """A → B's Holm p is tiny; at an alpha of exactly that p it is no longer a real difference."""
    rows = run_folder(tmp_path, ("model-a", 20, answers("r" * 40)), ("model-b", 20, answers("r" * 10 + "w" * 30)))
    default = pairwise.pairwise_section(rows, tmp_path)
    assert "at most a 5 % family-wise chance" in default
    assert {r["Not significantly different from"] for r in tables(default)[0]} == {"—"}
    (v,) = pairwise.comparisons([(r, pairwise.Run(tmp_path, {}, rows).predictions(r["case_id"])) for r in rows])
    assert v.holm < 0.001
    lenient = pairwise.pairwise_section(rows, tmp_path, alpha=v.holm)
    assert [r["Not significantly different from"] for r in tables(lenient)[0]] == ["model-b", "model-a"]
    assert "at most a 1 % family-wise chance" in pairwise.pairwise_section(rows, tmp_path, alpha=0.01)


# ---------------------------------------------------------------------------------- the section's text
# 4 images per case here: too few for any difference to be significant, and the section says so
FEW = ("With 4 paired images no difference can be significant (McNemar's exact test needs 6 images right in one "
       "case only): these cases are not compared in any real sense.")


def test_an_adjacent_pair_with_nothing_in_common_shows_dashes(tmp_path):
    rows = run_folder(tmp_path, ("model-a", 20, answers("rrrr")), ("model-b", 20, answers("wwww", ("cat", "emu", "owl"))))
    text = pairwise.pairwise_section(rows, tmp_path)
    assert "2 cases, 0 pairs tested (Holm over 0)." in text
    (_, (line,)) = tables(text)
    assert line == {"A": "model-a", "B": "model-b", "Paired n": "0", "A right only": "0", "B right only": "0",
                    "Accuracy A − B (paired)": "—", "McNemar p": "—", "Holm p": "—"}


def test_every_untested_pair_is_named(tmp_path):
    rows = run_folder(tmp_path, ("model-a", 20, answers("rrrr", ("cat", "emu", "owl"))),
                      ("model-b", 20, answers("rrww")), ("model-c", 20, answers("rwww")))
    text = pairwise.pairwise_section(rows, tmp_path)
    assert ("3 cases, 1 pair tested (Holm over 1). " + FEW + " Not compared (no image with the same label and candidates): "
            "model-a – model-b, model-a – model-c.") in text


def test_the_section_layout_with_two_n_and_every_remark(tmp_path):
    """Heading, intro and each N's heading, line and tables as separate markdown blocks; both N kept."""
    rows = run_folder(tmp_path, ("model-a", 20, answers("rrrr")), ("model-b", 20, answers("rrww")),
                      ("echo", 20, answers("wwww"), True),
                      ("model-a", 100, answers("rrrr")), ("model-b", 100, answers("rwww")),
                      ("model-c", 100, answers("rrww")), ("model-d", 100, answers("rrrw")))
    for gone in rows[-2:]:
        (tmp_path / "samples" / f"{gone['case_id']}.jsonl").unlink()
    text = pairwise.pairwise_section(rows, tmp_path)
    blocks = text.split("\n\n")
    assert blocks[:3] == [pairwise.HEADING, pairwise.INTRO.format(exact=25, pct=5), "### 20-way"]
    assert blocks[3] == "2 cases, 1 pair tested (Holm over 1). *Smoke* cases left out (1): their accuracy is chance. " + FEW
    assert blocks[6:8] == ["### 100-way", "2 cases, 1 pair tested (Holm over 1). Left out, no per-sample records: "
                                          "model-c, model-d. " + FEW]
    assert len(blocks) == 10
    for table in blocks[4:6] + blocks[8:10]:
        assert all(line.startswith("|") for line in table.split("\n"))
    assert [r["Model"] for r in tables(blocks[8])[0]] == ["model-a", "model-b"]


def test_only_smoke_cases_or_only_real_ones_say_nothing_about_left_out_smoke(tmp_path):
    smoke = run_folder(tmp_path / "s", ("echo-a", 20, answers("rrww"), True), ("echo-b", 20, answers("rwrw"), True))
    text = pairwise.pairwise_section(smoke, tmp_path / "s")
    assert pairwise.SMOKE_ONLY in text and "left out" not in text
    real = run_folder(tmp_path / "r", ("model-a", 20, answers("rrww")), ("model-b", 20, answers("rwrw")))
    text = pairwise.pairwise_section(real, tmp_path / "r")
    assert "*Smoke*" not in text and f"2 cases, 1 pair tested (Holm over 1). {FEW}\n" in text


# ================================================================================ prompts.py
def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def test_an_unknown_builtin_name_lists_the_templates():
    with pytest.raises(ValueError) as err:
        prompts.get_template("nope")
    assert str(err.value) == "unknown prompt 'nope'; choose one of: thesis, label-only, numbered"
    t = prompts.Template("x", "{labels}", "")
    assert prompts.get_template(t) is t and prompts.get_template("numbered") is prompts.TEMPLATES["numbered"]


def test_the_text_hash_is_the_first_8_hex_digits_of_the_utf8_sha256():
    text = "Which one, é or ü: {labels}?"
    assert prompts.text_hash(text) == hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


USE = "use {labels} or {numbered} (and {{ }} for literal braces)"
PLAIN = "write {{{}}} plain, without a conversion or format spec"


@pytest.mark.parametrize("text, message", [
    (" \n\t", "prompt file p.txt is empty"),
    ("Pick {labels} {", "prompt file p.txt has a stray brace (Single '{' encountered in format string); "
                        "write {{ or }} for a literal brace"),
    ("Pick {labels} }", "prompt file p.txt has a stray brace (Single '}' encountered in format string); "
                        "write {{ or }} for a literal brace"),
    ("Pick one of {label}.", f"prompt file p.txt has an unknown field {{label}}; {USE}"),
    ("Pick one of {labels!r}.", f"prompt file p.txt has {{labels!r}}: {PLAIN.format('labels')}"),
    ("Pick one of {labels:>9}.", f"prompt file p.txt has {{labels:>9}}: {PLAIN.format('labels')}"),
    ("Pick one of {numbered!s:^9}.", f"prompt file p.txt has {{numbered!s:^9}}: {PLAIN.format('numbered')}"),
    ("Pick {labels}, not {0}.", f"prompt file p.txt has an unknown field {{0}}; {USE}"),
    ("Name the {{object}}.", "prompt file p.txt has no {labels} or {numbered} placeholder for the candidate list"),
])
def test_each_bad_prompt_text_is_one_sentence(text, message):
    with pytest.raises(PromptError) as err:
        prompts.check_text(text, "p.txt")
    assert str(err.value) == message


@pytest.mark.parametrize("text", ["{labels}", "Pick {numbered}", "{labels} or {numbered}, {{not a field}}"])
def test_good_prompt_texts_pass(text):
    assert prompts.check_text(text, "p.txt") is None


def test_a_prompt_file_is_named_as_given_or_by_its_path(tmp_path):
    bad = write(tmp_path / "bad.txt", "Name it.")
    with pytest.raises(PromptError, match=rf"^prompt file {bad} has no \{{labels\}}"):
        prompts.load_template(bad)
    with pytest.raises(PromptError, match=r"^prompt file mine/bad.txt has no \{labels\}"):
        prompts.load_template(bad, "mine/bad.txt")
    with pytest.raises(PromptError, match=r"^prompt file bad.txt has no \{labels\}"):  # relative to base, as typed
        prompts.resolve("bad.txt", tmp_path)


def test_unreadable_prompt_files(tmp_path):
    latin1 = write(tmp_path / "latin1.txt", "Café: {labels}".encode("latin-1"))
    with pytest.raises(PromptError) as err:
        prompts.load_template(latin1, "latin1.txt")
    assert str(err.value) == "prompt file latin1.txt is not UTF-8 text"
    with pytest.raises(PromptError) as err:
        prompts.load_template(tmp_path, "here")
    assert str(err.value) == "cannot read prompt file here (Is a directory)"


def test_a_loaded_file_drops_the_bom_and_one_final_line_break(tmp_path):
    path = write(tmp_path / "Mine.txt", b"\xef\xbb\xbfFirst: {labels}\n\nLast line.\n\n")
    t = prompts.load_template(path)
    assert t.text == "First: {labels}\n\nLast line.\n"
    assert t.name == f"Mine.txt@{hashlib.sha256(t.text.encode()).hexdigest()[:8]}"
    assert t.path == str(path.resolve()) and t.slug == "mine"


def test_resolve_messages(tmp_path):
    (tmp_path / "sub").mkdir()
    with pytest.raises(PromptError) as err:
        prompts.resolve("nope.txt", tmp_path)
    assert str(err.value) == "--prompt 'nope.txt' is neither a template (thesis, label-only, numbered) nor an existing file"
    with pytest.raises(PromptError) as err:
        prompts.resolve("sub", tmp_path)
    assert str(err.value) == "--prompt 'sub' is a directory, not a prompt file"


def test_an_empty_prompt_list_is_one_sentence(tmp_path):
    with pytest.raises(PromptError) as err:
        prompts.parse_prompts(" , ,", tmp_path)
    assert str(err.value) == "--prompt needs a template name or a prompt file"


def test_two_prompts_sharing_a_case_id_part_name_both(tmp_path):
    write(tmp_path / "thesis.txt", "Classes: {labels}.")
    with pytest.raises(PromptError) as err:
        prompts.parse_prompts("thesis,thesis.txt", tmp_path)
    name = f"thesis.txt@{prompts.text_hash('Classes: {labels}.')}"
    assert str(err.value) == (f"--prompt thesis and {name} would share the case-id part 'thesis'; "
                              "rename one of the files")
    write(tmp_path / "other.txt", "Classes: {labels}!")
    assert [t.slug for t in prompts.parse_prompts("thesis,other.txt", tmp_path)] == ["thesis", "other"]


LABELS = ["cat", "dog", "red fox"]


def test_render_fills_the_list_and_the_numbered_lines():
    assert prompts.render(prompts.TEMPLATES["thesis"], LABELS) == (
        "This image represents an object that belongs to one of the following classes: cat, dog, red fox. "
        "What is the most probable class that the object in the image belongs to, given the provided classes?")
    assert prompts.render(prompts.TEMPLATES["numbered"], LABELS) == (
        "This image represents an object that belongs to one of the following classes:\n"
        "1. cat\n2. dog\n3. red fox\nAnswer with the class name only.")
    both = prompts.Template("f", "{labels} | {numbered} | {{x}}", "")
    assert prompts.render(both, ["a", "b"]) == "a, b | 1. a\n2. b | {x}"


def test_render_split_cuts_after_the_list_and_its_punctuation():
    assert prompts.render_labels_first(LABELS) == (
        "This image represents an object that belongs to one of the following classes: cat, dog, red fox.",
        prompts.QUESTION)
    assert prompts.render_split(prompts.TEMPLATES["numbered"], LABELS) == (
        "This image represents an object that belongs to one of the following classes:\n1. cat\n2. dog\n3. red fox",
        "Answer with the class name only.")
    twice = prompts.Template("f", "Pick one: {labels}; then answer with one of {labels} {{exactly}}.", "")
    assert prompts.render_split(twice, ["a", "b"]) == ("Pick one: a, b;", "then answer with one of a, b {exactly}.")
    bare = prompts.Template("f", "Classes {labels} which?", "")
    assert prompts.render_split(bare, ["a"]) == ("Classes a", "which?")
    numbered_first = prompts.Template("f", "{numbered}\nThose were {labels}.", "")  # cut at the numbered list
    assert prompts.render_split(numbered_first, ["a", "b"]) == ("1. a\n2. b", "Those were a, b.")


# ================================================================================ remote_code.py
def code(tmp_path: Path, **files: str | bytes) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        write(tmp_path / f"{name}.py", text)
    return tmp_path


NEVER = "from transformers.no_such_module_{} import thing\n"


def test_every_file_is_read_past_one_that_cannot_be_parsed(tmp_path):
    found = remote_code.gaps(code(tmp_path, a_broken="def broken(:\n", b_old=NEVER.format("b"), c_old=NEVER.format("c")))
    v = remote_code._version()
    assert found == ["a_broken.py cannot be parsed (invalid syntax, line 1)",
                     f"b_old.py: imports thing from transformers.no_such_module_b, a module {v} does not have",
                     f"c_old.py: imports thing from transformers.no_such_module_c, a module {v} does not have"]


def test_a_byte_that_is_not_utf8_does_not_stop_the_check(tmp_path):
    found = remote_code.gaps(code(tmp_path, modeling_x=b"# caf\xe9 (latin-1)\n" + NEVER.format("x").encode()))
    assert found == [f"modeling_x.py: imports thing from transformers.no_such_module_x, a module "
                     f"{remote_code._version()} does not have"]


def test_a_star_import_of_an_existing_module_is_no_gap(tmp_path):
    assert remote_code.gaps(code(tmp_path, modeling_x="from transformers.utils import *\n")) == []


def test_an_attribute_the_cache_sets_on_its_instances_counts_as_present():
    """Old transformers set `seen_tokens` in DynamicCache.__init__: a name only an instance has is there."""
    from transformers.cache_utils import DynamicCache

    instance_only = [n for n in vars(DynamicCache()) if not hasattr(DynamicCache, n)]
    if not instance_only:
        pytest.skip("this transformers' DynamicCache sets no attribute in __init__")
    assert remote_code._cache_has(instance_only[0])
    assert remote_code._cache_has("get_seq_length") and not remote_code._cache_has("no_such_method_anywhere")


def test_the_reason_for_one_or_two_gaps(tmp_path):
    one = code(tmp_path / "one", modeling_x=NEVER.format("x"))
    (gap,) = remote_code.gaps(one)
    assert remote_code.unavailable_reason("old", str(one)) == (
        f"old: its hub code was written for an older transformers: {gap}. Serve it with vLLM and run it as an "
        "openai-compatible model (README: Running real models, Phi-3-vision)")
    two = code(tmp_path / "two", modeling_x=NEVER.format("x") + NEVER.format("y"))
    first, _ = remote_code.gaps(two)
    assert remote_code.unavailable_reason("old", str(two)).startswith(
        f"old: its hub code was written for an older transformers: {first} (and 1 more). Serve it with vLLM")


def test_a_hub_model_that_is_not_cached_offline_has_no_reason():
    """Offline (the tests' HF_HUB_OFFLINE=1) and not cached: no code to read, the load says why."""
    assert remote_code.code_folder("no-such-org/no-such-model") is None
    assert remote_code.unavailable_reason("x", "no-such-org/no-such-model") is None


def test_a_hub_model_is_checked_from_its_code_files_alone(tmp_path, monkeypatch):
    """A stand-in hub that serves one repository and honours allow_patterns as huggingface_hub does:
    the check fetches the Python and JSON files, never the weights, and reads the code it got."""
    import huggingface_hub
    from huggingface_hub.utils import filter_repo_objects

    repo = {"modeling_x.py": NEVER.format("x"), "config.json": "{}", "model.safetensors": "weights",
            "README.md": "card"}
    fetched: list[str] = []

    def snapshot_download(repo_id, *, allow_patterns=None, **kwargs):
        if repo_id != "org/old-model":
            raise huggingface_hub.errors.LocalEntryNotFoundError(f"{repo_id} is not cached")
        folder = tmp_path / "snapshot"
        folder.mkdir(exist_ok=True)
        for name in filter_repo_objects(repo, allow_patterns=allow_patterns):
            fetched.append(name)
            (folder / name).write_text(repo[name])
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    assert remote_code.code_folder("org/old-model") == tmp_path / "snapshot"
    assert sorted(fetched) == ["config.json", "modeling_x.py"]
    reason = remote_code.unavailable_reason("old", "org/old-model")
    assert reason.startswith("old: its hub code was written for an older transformers: modeling_x.py: imports thing")
    assert remote_code.code_folder("org/another") is None
