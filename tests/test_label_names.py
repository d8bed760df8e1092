"""--label-names FILE: the names a prompt shows, for folders named `golden_retriever` or for ImageNet's
curated CLIP names. Real files on disk, the real labelset and resolver, and the plugin through pytester."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlmcls import labels
from vlmcls.labels import labelset, read_label_names
from vlmcls.resolve import Resolver

BENCH = Path(__file__).resolve().parents[1] / "bench" / "test_classify.py"
FOLDERS = ("golden_retriever", "tabby_cat", "salt, pepper")


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


# ------------------------------------------------------------------------------------------ formats
def test_a_text_file_names_every_class_in_id_order(tmp_path):
    f = write(tmp_path, "names.txt", "golden retriever\ntabby cat\nsalt and pepper\n\n")
    assert read_label_names(f, FOLDERS, synonyms=False) == {0: "golden retriever", 1: "tabby cat", 2: "salt and pepper"}


def test_a_json_list_is_the_same_as_a_text_file(tmp_path):
    f = write(tmp_path, "names.json", json.dumps(["golden retriever", "tabby cat", "salt and pepper"]))
    assert read_label_names(f, FOLDERS, synonyms=False) == {0: "golden retriever", 1: "tabby cat", 2: "salt and pepper"}


def test_a_json_object_renames_some_classes_by_name_or_id(tmp_path):
    f = write(tmp_path, "names.json", json.dumps({"tabby_cat": "tabby cat", "2": "salt and pepper"}))
    assert read_label_names(f, FOLDERS, synonyms=False) == {1: "tabby cat", 2: "salt and pepper"}


def test_a_csv_of_class_name_rows_with_or_without_header_and_a_quoted_comma(tmp_path):
    rows = 'golden_retriever,golden retriever\n"salt, pepper","salt, pepper shaker"\n'
    for text in (rows, "class,name\n" + rows):
        f = write(tmp_path, "names.csv", text)
        assert read_label_names(f, FOLDERS, synonyms=False) == {0: "golden retriever", 2: "salt, pepper shaker"}


def test_a_class_named_by_digits_is_its_name_before_an_id(tmp_path):
    f = write(tmp_path, "names.json", json.dumps({"1": "first"}))
    assert read_label_names(f, ("0", "1", "7"), synonyms=False) == {1: "first"}  # the folder "1" (id 1 too, by chance)
    assert read_label_names(f, ("10", "20", "1"), synonyms=False) == {2: "first"}  # the folder "1" is class 2


def test_imagenet_classes_are_named_by_annotation_or_first_synonym(tmp_path):
    ann = labels.imagenet_annotations()
    f = write(tmp_path, "clip.json", json.dumps({"tench, Tinca tinca": "tench fish", "goldfish": "goldfish fish"}))
    assert read_label_names(f, ann) == {0: "tench fish", 1: "goldfish fish"}
    twice = write(tmp_path, "crane.json", json.dumps({"crane": "bird"}))
    with pytest.raises(labels.LabelNamesError, match=r"names more than one class: 'crane' \(classes 134, 517\); use the class id"):
        read_label_names(twice, ann)


# ------------------------------------------------------------------------------------------ errors: one line each
@pytest.mark.parametrize("name, text, message", [
    ("short.txt", "a\nb\n", "has 2 lines; the dataset has 3 classes (one name per class, in class-id order"),
    ("hole.txt", "a\n\nc\n", "line 2 is empty; each class needs a name"),
    ("list.json", '["a", "b", "c", "d"]', "has 4 names; the dataset has 3 classes"),
    ("bad.json", '{"a": ', "not JSON (Expecting value, line 1)"),
    ("num.json", "3", "a JSON list of names (in class-id order) or an object {class: name}, not int"),
    ("null.json", '["a", null, "c"]', "name 2 is None; each class needs a name"),
    ("typo.json", '{"golden_retreiver": "dog"}', "1 not a class of the dataset: 'golden_retreiver' (a class is its name "
                                                 "as the dataset gives it, e.g. 'golden_retriever', or its id 0-2)"),
    ("id.json", '{"3": "dog"}', "1 not a class of the dataset: '3'"),
    ("three.csv", "golden_retriever,dog,extra\n", "row 1 has 3 columns; each row is class,name (quote a name that holds a comma)"),
    ("blank.csv", "tabby_cat,  \n", "the name for 'tabby_cat' is empty"),
])
def test_a_file_that_does_not_fit_is_one_line_that_says_why(tmp_path, name, text, message):
    f = write(tmp_path, name, text)
    with pytest.raises(labels.LabelNamesError) as err:
        read_label_names(f, FOLDERS, synonyms=False)
    assert message in str(err.value) and "\n" not in str(err.value) and str(f) in str(err.value)


def test_a_file_that_is_not_utf8_says_it_cannot_be_read(tmp_path):
    f = tmp_path / "latin.txt"
    f.write_bytes("caf\xe9\nb\nc\n".encode("latin-1"))
    with pytest.raises(labels.LabelNamesError, match="cannot read it .UnicodeDecodeError"):
        read_label_names(f, FOLDERS, synonyms=False)


# ------------------------------------------------------------------------------------------ what the labels become
def test_the_new_name_leads_and_the_name_as_given_still_resolves():
    ls = labelset(FOLDERS, "unique", synonyms=False, display={0: "retriever", 1: "tabby cat"})
    assert ls.names == ("retriever", "tabby cat", "salt, pepper")
    assert ls.synonyms[:2] == (("retriever", "golden_retriever"), ("tabby cat",))  # "tabby_cat" reads as "tabby cat"
    exact = Resolver("exact", ls)
    assert exact.resolve("It is a retriever.", (0, 1, 2)).class_id == 0
    assert exact.resolve("golden_retriever", (0, 1, 2)).class_id == 0  # the folder's name, as before


def test_a_new_name_that_collides_is_settled_like_any_other_in_unique_mode():
    ls = labelset(FOLDERS, "unique", synonyms=False, display={0: "tabby_cat"})
    assert len(set(ls.names)) == 3 and "tabby_cat" in ls.names  # never two classes with one prompt label
    raw = labelset(FOLDERS, "raw", synonyms=False, display={0: "tabby_cat"})
    assert raw.names[:2] == ("tabby_cat", "tabby_cat") and raw.ambiguous_ids() == {0, 1}  # raw keeps it, and counts it


# ------------------------------------------------------------------------------------------ through pytest
def tree(root: Path) -> Path:
    from PIL import Image

    for i, name in enumerate(FOLDERS):
        (root / name).mkdir(parents=True)
        for k in range(2):
            Image.new("RGB", (24, 16), (60 * i, 90, 30 * k)).save(root / name / f"img_{k}.jpg")
    return root


def run(pytester, *args):
    return pytester.runpytest_subprocess("bench", "--dataset", "pets", "--ways", "3", "-k", "smoke-echo",
                                         "-p", "no:cacheprovider", "--report-dir", "out", *args)


@pytest.fixture
def pets(pytester: pytest.Pytester):
    (pytester.path / "bench").mkdir()
    (pytester.path / "bench" / "test_classify.py").write_text(BENCH.read_text())
    tree(pytester.path / "pets")
    return pytester


def test_a_run_shows_the_names_records_them_and_asks_again_when_they_change(pets):
    (pets.path / "names.txt").write_text("golden retriever\ntabby cat\nsalt and pepper\n")
    first = run(pets, "--label-names", "names.txt", "--run-id", "a")
    assert first.ret == pytest.ExitCode.OK, first.stdout.str()
    results = json.loads((pets.path / "out" / "a" / "results.json").read_text())
    rows = [json.loads(line) for f in (pets.path / "out" / "a" / "samples").glob("*.jsonl") for line in f.read_text().splitlines()]
    assert {r["true_label"] for r in rows} == {"golden retriever", "tabby cat", "salt and pepper"}
    assert all(set(r["candidates"]) == {"golden retriever", "tabby cat", "salt and pepper"} for r in rows)
    note = ("prompt labels from --label-names names.txt: 3 of 3 classes named differently from the dataset's own "
            "names (those still resolve an answer)")
    assert note in results["meta"]["dataset"]["notes"] and note in (pets.path / "out" / "a" / "report.md").read_text()
    assert run(pets, "--label-names", "names.txt", "--run-id", "b").ret == 0
    (case,) = json.loads((pets.path / "out" / "b" / "results.json").read_text())["cases"]
    assert case["resumed"] == 6  # the same names: answered from the store
    assert case["label_names"] == labels.names_digest(["golden retriever", "tabby cat", "salt and pepper"])
    (pets.path / "names.txt").write_text("golden retriever\ntabby\nsalt and pepper\n")
    assert run(pets, "--label-names", "names.txt", "--run-id", "c", "--baseline", "out/b").ret == 0
    (case,) = json.loads((pets.path / "out" / "c" / "results.json").read_text())["cases"]
    assert case["resumed"] == 0  # one name changed: every prompt that showed it changed
    # the row names the names it asked with, and a baseline that asked with others is said to differ there
    was, now = (labels.names_digest(["golden retriever", t, "salt and pepper"]) for t in ("tabby cat", "tabby"))
    assert case["label_names"] == now
    assert any(f"label_names ({was} vs {now})" in n for n in case["notes"]), case["notes"]


@pytest.mark.parametrize("content, expected", [
    (None, "--label-names: no file 'missing.txt' (relative to where pytest was started)"),
    ("one\ntwo\n", "ERROR: --label-names missing.txt has 2 lines; the dataset has 3 classes (one name per class, "
                   "in class-id order; a .json object or a .csv renames some)"),
])
def test_a_missing_or_misfit_file_is_one_usage_error(pets, content, expected):
    if content is not None:
        (pets.path / "missing.txt").write_text(content)
    out = run(pets, "--label-names", "missing.txt")
    assert out.ret == pytest.ExitCode.USAGE_ERROR and expected in out.stderr.str(), out.errlines
    assert "Traceback" not in out.stderr.str() and "collecting" not in out.stdout.str()  # before collection
