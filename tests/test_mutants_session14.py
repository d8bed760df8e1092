"""Mutation run 14 (mutmut 3.8.1): tests for the mutants of session 14's new and changed functions that
the earlier tests left alive (README, Mutation testing). Each test pins what a user sees."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from vlmcls import labels
from vlmcls.data import describe
from vlmcls.options import label_names_file, ways_list
from vlmcls.sources import Source

FOLDERS = ("golden_retriever", "tabby_cat", "salt, pepper")


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def why(path: Path, annotations=FOLDERS, synonyms: bool = False) -> str:
    """The one line a file that does not fit prints (LabelNamesError is a ValueError; the class is read at call
    time: the test conftest re-runs labels.py under a mutant)."""
    with pytest.raises(ValueError) as err:
        labels.read_label_names(path, annotations, synonyms=synonyms)
    assert isinstance(err.value, labels.LabelNamesError)
    return str(err.value)


# ---------------------------------------------------------------------------------------- --label-names files
def test_a_file_suffix_in_capitals_and_a_byte_order_mark_read_like_any_other(tmp_path):
    upper = write(tmp_path, "NAMES.JSON", json.dumps({"tabby_cat": "tabby cat"}))
    assert labels.read_label_names(upper, FOLDERS, synonyms=False) == {1: "tabby cat"}
    csv = write(tmp_path, "Names.CSV", "Class , NAME\ntabby_cat,tabby cat\n , \n")  # header any case; a blank row skipped
    assert labels.read_label_names(csv, FOLDERS, synonyms=False) == {1: "tabby cat"}
    bom = tmp_path / "names.txt"
    bom.write_bytes("\ufeffretriever\n  tabby cat  \nsalt and pepper\n\n \n".encode("utf-8"))  # Notepad's UTF-8
    assert labels.read_label_names(bom, FOLDERS, synonyms=False) == {0: "retriever", 1: "tabby cat", 2: "salt and pepper"}


def test_a_folder_given_as_the_file_says_it_cannot_be_read(tmp_path):
    assert why(tmp_path) == f"--label-names {tmp_path}: cannot read it (IsADirectoryError: Is a directory)"


def test_each_format_error_is_word_for_word(tmp_path):
    assert why(write(tmp_path, "bad.json", '{"a": ')) == (
        f"--label-names {tmp_path / 'bad.json'}: not JSON (Expecting value, line 1)")
    assert why(write(tmp_path, "two.json", '[\n"a",\n')) == (
        f"--label-names {tmp_path / 'two.json'}: not JSON (Expecting value, line 3)")
    assert why(write(tmp_path, "s.json", '"a"')) == (
        f"--label-names {tmp_path / 's.json'}: a JSON list of names (in class-id order) or an object {{class: name}}, not str")
    assert why(write(tmp_path, "short.txt", "a\nb\n")) == (
        f"--label-names {tmp_path / 'short.txt'} has 2 lines; the dataset has 3 classes (one name per class, in class-id "
        "order; a .json object or a .csv renames some)")
    assert why(write(tmp_path, "n.json", '["a", "b", 7]')) == (
        f"--label-names {tmp_path / 'n.json'}: name 3 is 7; each class needs a name")
    assert why(write(tmp_path, "e.json", '["a", " ", "c"]')) == (
        f"--label-names {tmp_path / 'e.json'}: name 2 is empty; each class needs a name")
    assert why(write(tmp_path, "rows.csv", "class,name\ntabby_cat,cat\ngolden_retriever\n")) == (
        f"--label-names {tmp_path / 'rows.csv'}: row 2 has 1 columns; each row is class,name (quote a name that holds a comma)")


def test_unknown_classes_are_counted_the_first_five_shown_and_the_ids_given(tmp_path):
    many = write(tmp_path, "many.json", json.dumps({k: "x" for k in ("a", "b", "c", "d", "e", "3")}))
    assert why(many) == (f"--label-names {many}: 6 not a class of the dataset: 'a', 'b', 'c', 'd', 'e' ... (a class is its "
                         "name as the dataset gives it, e.g. 'golden_retriever', or its id 0-2)")
    five = write(tmp_path, "five.json", json.dumps({k: "x" for k in ("a", "b", "c", "d", "e")}))
    assert why(five).endswith(": 5 not a class of the dataset: 'a', 'b', 'c', 'd', 'e' (a class is its name as the dataset "
                              "gives it, e.g. 'golden_retriever', or its id 0-2)")
    padded = write(tmp_path, "p.json", json.dumps({"zebra": "x"}))
    assert why(padded, (" zebu ", "yak")).endswith("e.g. 'zebu', or its id 0-1)")


def test_a_class_named_twice_lists_every_such_name_and_a_class_named_by_id_or_padded_name_is_found(tmp_path):
    twice = write(tmp_path, "t.json", json.dumps({k: "x" for k in ("a", "b", "c", "d", "e", "f")}))
    six = tuple(k for k in "abcdef" for _ in range(2))
    assert why(twice, six) == (f"--label-names {twice}: names more than one class: 'a' (classes 0, 1), 'b' (classes 2, 3), "
                               "'c' (classes 4, 5), 'd' (classes 6, 7), 'e' (classes 8, 9); use the class id")
    ids = write(tmp_path, "ids.csv", " 0 , dog \n2,salt\n")
    assert labels.read_label_names(ids, FOLDERS, synonyms=False) == {0: "dog", 2: "salt"}
    assert labels.read_label_names(write(tmp_path, "one.json", '{"1": "cat"}'), ("a", "b")) == {1: "cat"}
    plain = write(tmp_path, "plain.json", json.dumps({"cat": "kitty", " dog": "puppy"}))
    # with synonyms (a ClassLabel's names), a name that is its own first synonym is still one class
    assert labels.read_label_names(plain, ("cat", "dog ")) == {0: "kitty", 1: "puppy"}
    assert labels.read_label_names(plain, ("cat", "dog "), synonyms=False) == {0: "kitty", 1: "puppy"}
    first = write(tmp_path, "first.json", json.dumps({"tabby": "cat"}))
    assert labels.read_label_names(first, ("tabby, tabby cat", "dog")) == {0: "cat"}  # its first synonym
    assert "not a class of the dataset: 'tabby'" in why(first, ("tabby, tabby cat", "dog"), synonyms=False)  # a folder


# ---------------------------------------------------------------------------------------- the option's checks
def test_label_names_must_be_a_file_and_ways_every_n_at_least_two_once_each(tmp_path):
    f = write(tmp_path, "n.txt", "a\n")
    assert label_names_file(str(f)) == str(f)
    with pytest.raises(argparse.ArgumentTypeError) as err:
        label_names_file(str(tmp_path))
    assert str(err.value) == f"--label-names: no file {str(tmp_path)!r} (relative to where pytest was started)"
    assert ways_list("2") == (2,) and ways_list("100,20,100") == (100, 20)
    with pytest.raises(argparse.ArgumentTypeError) as err:
        ways_list("20,1")
    assert str(err.value) == "--ways needs every N >= 2, e.g. --ways 20,100 (got '20,1')"
    with pytest.raises(argparse.ArgumentTypeError) as err:
        ways_list("20,x")
    assert str(err.value) == "--ways takes integers separated by commas, e.g. 20,100 (got '20,x')"


# ---------------------------------------------------------------------------------------- the Dataset notes
def test_the_notes_name_comma_labels_and_how_many_classes_the_file_renamed():
    ann = ("a, b", "c, d", "e, f", "g, h", "i, j", "k, l", "plain")
    src = Source("ds", ann, lambda k, s: [], 7, class_sizes={k: 10 for k in range(7)}, synonyms=False)
    shown = labels.labelset(ann, "unique", synonyms=False, display={6: "plain"})
    notes = describe("ds", src, shown, label_names="names.json")["notes"]
    assert notes[-2] == ("6 prompt labels hold a comma ('a, b', 'c, d', 'e, f', 'g, h', 'i, j' and 1 more), which a prompt "
                         "joining the candidates with commas ({labels}: thesis, label-only) shows like two candidates: "
                         "--label-names gives another name, --prompt numbered lists one per line")
    assert notes[-1] == ("prompt labels from --label-names names.json: 0 of 7 classes named differently from the dataset's "
                         "own names (those still resolve an answer)")
    one = labels.labelset(ann[:2], "unique", synonyms=False, display={1: "cd"})
    src2 = Source("ds", ann[:2], lambda k, s: [], 2, class_sizes={0: 10, 1: 10}, synonyms=False)
    notes2 = describe("ds", src2, one, label_names="n.txt")["notes"]
    assert "1 prompt label holds a comma ('a, b'), which" in notes2[-2]
    assert notes2[-1].startswith("prompt labels from --label-names n.txt: 1 of 2 classes named differently")


def test_the_file_note_counts_against_the_same_mode_and_synonym_reading():
    ann = ("cat, kitty", "dog")  # a ClassLabel's names: "cat" is the prompt label, with or without the file
    src = Source("hf", ann, lambda k, s: [], 4, class_sizes={0: 2, 1: 2}, synonyms=True)
    shown = labels.labelset(ann, "unique", display={1: "hound"})
    assert describe("hf", src, shown, label_names="n.json")["notes"][-1].startswith(
        "prompt labels from --label-names n.json: 1 of 2 classes named differently")
    twice = ("cat", "Cat", "dog")  # --labels raw keeps both; unique would have set them apart
    src2 = Source("f", twice, lambda k, s: [], 6, class_sizes={0: 2, 1: 2, 2: 2}, synonyms=False)
    raw = labels.labelset(twice, "raw", synonyms=False, display={2: "hound"})
    assert describe("f", src2, raw, label_names="n.json")["notes"][-1].startswith(
        "prompt labels from --label-names n.json: 1 of 3 classes named differently")
    five = ("a, b", "c, d", "e, f", "g, h", "i, j")
    src3 = Source("f", five, lambda k, s: [], 10, class_sizes={k: 2 for k in range(5)}, synonyms=False)
    assert describe("f", src3, labels.labelset(five, synonyms=False))["notes"][-1].startswith(
        "5 prompt labels hold a comma ('a, b', 'c, d', 'e, f', 'g, h', 'i, j'), which a prompt")


def test_a_csv_names_a_class_by_its_first_synonym_only_and_the_store_key_digest_is_pinned(tmp_path):
    ann = ("tabby, tabby cat", "dog")
    f = write(tmp_path, "n.csv", "tabby,cat\n")
    assert labels.read_label_names(f, ann) == {0: "cat"}
    second = write(tmp_path, "s.json", json.dumps({"tabby cat": "cat"}))
    assert "1 not a class of the dataset: 'tabby cat'" in why(second, ann, synonyms=True)  # a second synonym names none
    # an own dataset's store key holds this digest: a store written before must resume, so its form is fixed
    assert labels.names_digest(("crane", "stork")) == __import__("hashlib").sha1(b"crane\nstork").hexdigest()[:16]


# ---------------------------------------------------------------------------------------- metadata.csv's hint
@pytest.mark.parametrize("content, hint", [
    ("\ufefffile_name,species\n".encode("utf-8"), "; metadata.csv holds no column named `label`, the one whose text "
                                                  "becomes the classes (it has species): rename the class column to label"),
    (b"file_name,species,colour\n", "; metadata.csv holds no column named `label`, the one whose text becomes the "
                                    "classes (it has species, colour): rename the class column to label"),
    (b"file_name,label,species\n", ""),  # label is there: the classes are read
    (b"file_name\n", ""),  # no other column: nothing to rename
    (b"", ""),  # an empty file
    ("file_name,espèce\n".encode("latin-1"), ""),  # not UTF-8: no hint rather than a wrong one
])
def test_the_metadata_hint_names_the_columns_to_rename_or_says_nothing(tmp_path, content, hint):
    from vlmcls.data import _metadata_hint  # the tail of the "no image folder" error

    (tmp_path / "metadata.csv").write_bytes(content)
    assert _metadata_hint(tmp_path) == hint
