"""Mutation run 9 (mutmut): what the tests of this session's new code did not pin down: the PR-comment
summary (report/summary.py), the Dataset section (report/dataset.py), the report's gate column, gate
notes and chance line (report/markdown.py), URL redaction (settings.py), own-dataset reading (data.py),
name normalisation (words.py) and the resolver's line rules (match.py).

In process, so that mutmut's per-test coverage sees them: most of these paths are otherwise tested
through `pytest bench` or `python -m vlmcls` subprocesses. Every message a user reads is checked word
for word."""
from __future__ import annotations

import pytest

from vlmcls.report.summary import summary_markdown


# ================================================================================ report/summary.py
def _row(cid: str, ways: int, acc: float, n: int, status: str = "passed", threshold=None, smoke: bool = False,
         baseline=None, reason: str | None = None) -> dict:
    r = {"case_id": cid, "ways": ways, "status": status, "threshold": threshold, "smoke": smoke,
         "metrics": {"accuracy": acc, "accuracy_ci": [0.1, 0.9], "n": n}}
    if baseline is not None:
        r["baseline"] = baseline
    if reason:
        r["reason"] = reason
    return r


SUMMARY_ROWS = [
    _row("b-100way", 100, 0.5, 40, "failed", 0.6, reason="b-100way: accuracy 0.500 < 0.6; b-100way: 2 error rows",
         baseline={"run_id": "r1", "compared": True, "verdict": "significantly worse than the baseline", "worse": True,
                   "lost": 9, "gained": 1, "p": 0.0123456, "paired_n": 40}),
    _row("a-20way", 20, 0.25, 8, "passed", 0, smoke=True, baseline={"run_id": "r1", "compared": False, "why": ""}),
    _row("c-20way", 20, 0.75, 12, "no gate", None,
         baseline={"run_id": "r0", "compared": True, "verdict": "no significant difference", "lost": 1, "gained": 2,
                   "p": 1.0, "paired_n": 12}),
    {"case_id": "d-20way", "ways": 20, "status": "skipped", "reason": "no key"},
    {"case_id": "e-20way", "ways": 20, "status": "error", "reason": "e-20way: boom at /x/y/z.bin"},
]
SUMMARY = """\
### vlmcls R\\|1: **1 error**, **1 failed**, 1 passed, 1 no gate, 1 skipped

| Case            | Accuracy   | 95 % CI     | n   | Threshold   | Gate       | vs baseline                                             |
|-----------------|------------|-------------|-----|-------------|------------|---------------------------------------------------------|
| a-20way *smoke* | 0.250      | 0.100–0.900 | 8   | plumbing    | passed     | not compared: no paired sample                          |
| c-20way         | 0.750      | 0.100–0.900 | 12  | –           | no gate    | no significant difference: lost 1, gained 2, p=1 (n=12) |
| b-100way        | 0.500      | 0.100–0.900 | 40  | 0.6         | **failed** | **worse**: lost 9, gained 1, p=0.0123 (n=40)            |

*smoke*: a random-weight model or a scripted stand-in; its accuracy is chance in expectation (it shows the pipeline runs, not how good a model is; on few images its interval may miss chance by luck).

Baseline r0, r1: 2 cases compared by McNemar's test on the images both runs scored, 1 significantly worse; 1 not compared (see the table).

**Why the failing cases failed**

- b-100way: accuracy 0.500 &lt; 0.6; 2 error rows
- e-20way: boom at …/z.bin

Not run (1 skipped): d-20way (no key).
"""


def test_the_summary_of_a_mixed_run_word_for_word():
    """Every part at once: the title's tally (failures first, in bold), the table sorted by N then case,
    a smoke model's 0 threshold as plumbing, each baseline verdict, the baseline line over two baseline
    runs, each failure's reasons without the case id, and the skipped case named. Kills the summary.py
    mutants of _title, _table, _line, _versus, _baseline_line, _failures, _reason and _not_run that
    change a character of this text."""
    assert summary_markdown(SUMMARY_ROWS, {"run_id": "R|1"}) == SUMMARY


def test_a_summary_names_its_folder_without_a_run_id_and_says_no_case_without_rows():
    """The title falls back to the folder's name, then to "run"; no rows: "no case" and nothing else."""
    assert summary_markdown([], None, "folder") == "### vlmcls folder: no case\n"
    assert summary_markdown([], {}) == "### vlmcls run: no case\n"
    assert summary_markdown([], {"run_id": ""}, "f").startswith("### vlmcls f:")


# ================================================================================ report/dataset.py
def test_the_dataset_line_lists_twenty_small_classes_and_folders_then_counts_the_rest():
    """A name read from elsewhere, fewer classes with images than the label set, the scored count of
    this dataset's cases only (a case with n = 0 and another dataset's case left out), 22 small classes
    and 21 empty folders (20 named, the rest counted), a note escaped. Kills report.dataset mutants of
    _line (read_from, classes vs label set, SHOWN slicing and "and N more") and _images (the rows'
    dataset filter and the n filter)."""
    from vlmcls.report.dataset import dataset_section

    d = {"name": "mine:test", "read_from": "/data/mine", "classes": 25, "label_set": 30, "images": 200,
         "per_class": [1, 20], "small_classes": [[f"c{i}", i % 4 + 1] for i in range(22)],
         "ignored_folders": [f"f{i}" for i in range(21)], "notes": ["a | b"]}
    rows = [{"dataset": "mine:test", "metrics": {"n": 50}}, {"dataset": "other", "metrics": {"n": 7}},
            {"dataset": "mine:test", "metrics": {"n": 0}}]
    small = ", ".join(f'"c{i}" ({i % 4 + 1})' for i in range(20))
    folders = ", ".join(f'"f{i}"' for i in range(20))
    assert dataset_section({"dataset": d}, rows) == (
        "## Dataset\n\n"
        "- `mine:test` (read from /data/mine): 25 classes with images, of a label set of 30, 50 images scored of "
        f"the 200 in the dataset (1–20 per class); classes with fewer than 5 images (their recall moves in steps of "
        f"1/n): {small}, and 2 more; folders without images, left out of the classes: {folders}, and 1 more\n"
        "  - a \\| b\n")


def test_the_dataset_line_without_class_count_images_or_a_read_from_of_its_own():
    """Only the label set's size known, no image total: "1000 classes, 5 images scored"; a name read
    from itself says no "read from"; merged_from entries that are not records, or have no name, are
    skipped, and one record twice is one line. Two small classes of three are listed, not summed up."""
    from vlmcls.report.dataset import dataset_records, dataset_section

    e = {"name": "x", "read_from": "x", "classes": None, "label_set": 1000, "images": None, "per_class": None}
    meta = {"dataset": e, "merged_from": [{"dataset": {"name": ""}}, "junk", {"dataset": e}, {}]}
    assert dataset_records(meta) == [e]
    assert dataset_section(meta, [{"dataset": "x", "metrics": {"n": 5}}]) == "## Dataset\n\n- `x`: 1000 classes, 5 images scored\n"
    f = {"name": "y", "classes": 3, "label_set": 3, "images": 9, "per_class": [3, 3], "small_classes": [["a", 3], ["b", 3]],
         "ignored_folders": ["e"]}
    assert dataset_section({"dataset": f}, []) == (
        "## Dataset\n\n- `y`: 3 classes, 9 images (3 per class); classes with fewer than 5 images (their recall "
        "moves in steps of 1/n): \"a\" (3), \"b\" (3); folders without images, left out of the classes: \"e\"\n")
    assert dataset_section(None, []) == ""


# ================================================================================ settings.py: URL redaction
@pytest.mark.parametrize("url, shown", [
    ("http://h/v1?next=http://x", "http://h/v1?next=***"),  # a URL in a query value: one split at "://"
    ("http://u:p@h", "http://***@h"),  # no path: the whole rest is the host part
    ("http://u:p@h/x@y/z", "http://***@h/x@y/z"),  # an @ in the path is no credential
    ("http://X:p@h/v1", "http://***@h/v1"),  # only / ? # end the host part
    ("http:///a@b/c", "http:///a@b/c"),  # an empty host part: the @ is in the path
    ("http://u:p@ss@h/v1", "http://***@h/v1"),  # a password with an @: the host is after the last one
    ("http://h/v1?a=b?c", "http://h/v1?a=***"),  # a ? inside the query is part of a value
    ("http://h/v1?flag&token=x", "http://h/v1?***&token=***"),  # a bare flag and a value, split at &
])
def test_redaction_of_urls_with_odd_parts(url, shown):
    """Kills settings._redact mutants 5, 6, 8 (the scheme split), 11, 13 (no / ? #), 15, 16, 17, 18
    (where the host part ends), 28, 29, 31 (an @ in the password), 39, 40, 42 (a ? in the query), 60,
    61 (the & split)."""
    from vlmcls.settings import redact_urls

    assert redact_urls(url) == shown
    assert redact_urls(f"see {url}, then") == f"see {shown}, then"


# ================================================================================ data.py: ids and splits
def test_sample_ids_without_paths_and_with_paths_that_share_no_folder():
    """No paths: row ids (sample_ids 7); a missing path among repeated names: rows, not a crash
    (_relative 1); relative paths with no common folder stay as they are (_relative 9)."""
    from vlmcls import data

    assert data.sample_ids([], 2) == data.sample_ids(None, 2) == ["row0000000", "row0000001"]
    assert data.sample_ids(["/d/a/x.jpg", "/d/b/x.jpg", None], 3) == ["row0000000", "row0000001", "row0000002"]
    assert data.sample_ids(["a/x.jpg", "b/x.jpg"], 2) == ["a/x.jpg", "b/x.jpg"]


def _jpeg() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buf, "JPEG")
    return buf.getvalue()


def _parts(**sizes: int):
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as HFImage

    feats = Features({"img": HFImage(), "label": ClassLabel(names=["a", "b"])})
    return {split: Dataset.from_dict({"img": [_jpeg()] * n, "label": [i % 2 for i in range(n)]}, features=feats)
            for split, n in sizes.items()}


def test_a_saved_dataset_dict_with_a_val_split_scores_it_and_one_without_any_known_split_says_so(tmp_path):
    """"val" comes before test and train (_pick_split 5, 6); no known split and none named: the error
    names the splits tried and the dataset (_pick_split 14, 19, 20; _local_hf 21, 26); a split named
    that is not there names the path (the same mutants through `wanted`)."""
    from datasets import DatasetDict

    from vlmcls.data import DatasetError, open_dataset

    DatasetDict(_parts(train=6, val=2, test=4)).save_to_disk(tmp_path / "dd")
    src = open_dataset(str(tmp_path / "dd"))
    assert (src.size, src.split, src.name) == (2, "val", f"{tmp_path / 'dd'}:val")
    DatasetDict(_parts(extra=2, other=2)).save_to_disk(tmp_path / "odd")
    with pytest.raises(DatasetError) as info:
        open_dataset(str(tmp_path / "odd"))
    assert str(info.value) == (f"dataset {str(tmp_path / 'odd')!r} has no split 'validation/test/train'; it has "
                               f"['extra', 'other'] — pick one with --dataset {tmp_path / 'odd'}:SPLIT")
    with pytest.raises(DatasetError) as info:
        open_dataset(f"{tmp_path / 'odd'}:nope")
    assert str(info.value).startswith(f"dataset {str(tmp_path / 'odd')!r} has no split 'nope'")


def test_a_single_saved_dataset_is_named_by_its_path_and_refuses_a_split(tmp_path):
    """_local_hf 16, 17 (the name without a split), 41, 42 (the single-dataset message word for word)."""
    from vlmcls.data import DatasetError, open_dataset

    _parts(all=4)["all"].save_to_disk(tmp_path / "one")
    src = open_dataset(str(tmp_path / "one"))
    assert (src.name, src.split, src.size) == (str(tmp_path / "one"), None, 4)
    with pytest.raises(DatasetError) as info:
        open_dataset(f"{tmp_path / 'one'}:test")
    assert str(info.value) == f"dataset {str(tmp_path / 'one')!r} has no split 'test': it is a single dataset, drop ':test'"


def test_a_parquet_file_named_with_a_split_it_lacks_is_refused(tmp_path):
    """A file (not a folder) with :SPLIT: the split reaches the reader (_local 3, 5), which has only train."""
    from vlmcls.data import DatasetError, open_dataset

    _parts(all=4)["all"].to_parquet(str(tmp_path / "d.parquet"))
    assert open_dataset(str(tmp_path / "d.parquet")).size == 4
    with pytest.raises(DatasetError) as info:
        open_dataset(f"{tmp_path / 'd.parquet'}:test")
    assert str(info.value) == (f"dataset {str(tmp_path / 'd.parquet')!r} has no splits (no file name says one; "
                               "`datasets` calls the whole of it 'train'): drop ':test'")


# ================================================================================ data.py: ImageNet synset trees
def _synset_tree(root, sizes: dict[str, int]):
    for name, n in sizes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for k in range(n):
            (root / name / f"{name}_{k}.JPEG").write_bytes(_jpeg())
    return root


def test_a_synset_tree_with_val_and_train_scores_val_and_says_what_it_read(tmp_path):
    """Splits, file paths, class sizes, an empty synset folder and a stray file, each as the report
    and the run read them. Kills data._synset_folder mutants 20-22, 25 (val picked only among several),
    77, 83 (the image path), 96-109 (the split note), 116, 118, 126, 134 (the empty folder), 119, 135
    (the name), 125, 133 (class sizes), 64 (a stray file in the split folder)."""
    from vlmcls import labels
    from vlmcls.data import open_dataset

    syn = labels.imagenet_synsets()
    base = tmp_path / "in1k"
    _synset_tree(base / "val", {syn[0]: 1, syn[1]: 2})
    (base / "val" / syn[5]).mkdir()  # a class folder with no image
    (base / "val" / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n")  # a file beside them
    _synset_tree(base / "train", {syn[0]: 1})
    src = open_dataset(str(base))
    assert (src.name, src.split, src.size, src.ignored) == (str(base / "val"), "val", 3, (syn[5],))
    assert dict(src.class_sizes) == {0: 1, 1: 2}
    assert src.notes[1] == ("read as ImageNet synset folders: the label set is all 1,000 ImageNet-1k classes, so "
                            "distractors come from all of them and N = all means 1000, not 2; for a closed set of these "
                            "classes, save them as a datasets ClassLabel dataset (README: Your own images)")
    assert src.notes[0] == f"{base} has splits train, val; scored val (pick one with --dataset {base}:SPLIT)"
    assert sorted((s.sample_id, s.image) for s in src.select(None, 0)) == sorted(
        (f"{p.parent.name}/{p.name}", str(p)) for p in (base / "val").glob("*/*.JPEG"))
    alone = _synset_tree(tmp_path / "alone" / "val", {syn[0]: 1, syn[1]: 1}).parent  # val and no other split
    only = open_dataset(str(alone))
    assert only.split is None and not only.notes[0].startswith(str(alone))


def test_a_synset_tree_draws_its_subset_with_the_seed_and_names_itself_when_asked_for_too_many(tmp_path):
    """select(k, seed) is data.stratified's draw with that seed (_synset_folder 86) and an overdraw
    names the folder (87, 90-92)."""
    from vlmcls import data, labels

    syn = labels.imagenet_synsets()
    root = _synset_tree(tmp_path / "t", {s: 3 for s in syn[:4]})
    src = data.open_dataset(str(root))
    index = sorted((f"{p.parent.name}/{p.name}", syn.index(p.parent.name)) for p in root.glob("*/*.JPEG"))
    for seed in range(4):
        assert [s.sample_id for s in src.select(5, seed)] == [index[p][0] for p in data.stratified(index, 5, seed)]
    with pytest.raises(data.DatasetError) as info:
        src.select(13, 0)
    assert str(info.value) == f"--samples 13 exceeds the 12 images of {root}; use --samples 12 or less"


def test_a_synset_reader_handed_unknown_folders_lists_ten_then_counts_and_says_the_fix(tmp_path):
    """_synset_folder 41-49, 57-60: the message word for word with 12 unknown folders; 73: a synset tree
    without images says where they were expected."""
    from vlmcls import data, labels

    syn = labels.imagenet_synsets()
    odd = _synset_tree(tmp_path / "odd", {syn[0]: 1, **{f"x{k:02d}": 1 for k in range(12)}})
    with pytest.raises(data.DatasetError) as info:
        data._synset_folder(odd)
    shown = ", ".join(f"x{k:02d}" for k in range(10))
    assert str(info.value) == (f"{odd}: 12 folders ({shown} and 2 more) are not ImageNet-1k synsets; a tree of synset "
                               "folders must hold only ImageNet-1k ids (n01440764 ...); to use your own class names, "
                               "name no folder like a synset (n########)")
    eleven = _synset_tree(tmp_path / "eleven", {syn[0]: 1, **{f"x{k:02d}": 1 for k in range(11)}})
    with pytest.raises(data.DatasetError, match=r"x09 and 1 more\) are not"):
        data._synset_folder(eleven)
    ten = _synset_tree(tmp_path / "ten", {syn[0]: 1, **{f"x{k:02d}": 1 for k in range(10)}})
    with pytest.raises(data.DatasetError, match=r"\(x00, x01, x02, x03, x04, x05, x06, x07, x08, x09\) are not"):
        data._synset_folder(ten)
    (tmp_path / "empty" / syn[0]).mkdir(parents=True)
    with pytest.raises(data.DatasetError) as info:
        data.open_dataset(str(tmp_path / "empty"))
    assert str(info.value) == (f"{tmp_path / 'empty'}: no images found in its synset folders "
                               f"(expected {tmp_path / 'empty'}/n01440764/*.JPEG)")


def test_a_tree_of_all_1000_synsets_is_imagenet_without_the_subset_note(tmp_path):
    """Every ImageNet-1k class present: still ImageNet (_has_synsets 10: a subset, not a proper one) and
    no "a subset of ImageNet's classes" note (_synset_folder 110, 111)."""
    from vlmcls import labels
    from vlmcls.data import open_dataset

    jpeg = _jpeg()
    root = tmp_path / "full"
    for s in labels.imagenet_synsets():
        (root / s).mkdir(parents=True)
        (root / s / "a.JPEG").write_bytes(jpeg)
    src = open_dataset(str(root))
    assert src.annotations == labels.imagenet_annotations() and src.size == 1000 and src.notes == ()


def test_a_synset_split_that_is_not_there_names_the_splits_the_tree_has(tmp_path):
    """_local 35, 36 (a flat synset tree given :val), 44, 48 (a val/ tree given :test)."""
    from vlmcls import labels
    from vlmcls.data import DatasetError, open_dataset

    syn = labels.imagenet_synsets()
    flat = _synset_tree(tmp_path / "flat", {syn[0]: 1, syn[1]: 1})
    with pytest.raises(DatasetError) as info:
        open_dataset(f"{flat}:val")
    assert str(info.value) == f"dataset {str(flat)!r} has no split 'val'; it has []"
    split = _synset_tree(tmp_path / "split" / "val", {syn[0]: 1, syn[1]: 1}).parent
    with pytest.raises(DatasetError) as info:
        open_dataset(f"{split}:test")
    assert str(info.value) == f"dataset {str(split)!r} has no split 'test'; it has ['val'] — use --dataset {split}:val"


# ================================================================================ data.describe, labels.renamed
def test_describe_keys_small_classes_in_size_then_id_order_and_no_note_without_renames():
    """meta.dataset's keys as the report reads them (describe 17-25); small classes by size, ties by
    class id, 5 images is not small (37-43); no renamed note when nothing was renamed (12); a source
    without class sizes has no per_class (31); the note names the label mode (14)."""
    from vlmcls import labels
    from vlmcls.data import describe
    from vlmcls.sources import Source

    ann = ("a", "b", "c", "d")
    src = Source("ds", ann, lambda k, s: [], 12, class_sizes={3: 1, 2: 5, 1: 1, 0: 3})
    d = describe("ds:val", src, labels.labelset(ann))
    assert d == {"name": "ds:val", "read_from": "ds", "classes": 4, "label_set": 4, "images": 12, "per_class": [1, 5],
                 "small_classes": [["b", 1], ["d", 1], ["a", 3]], "ignored_folders": [], "renamed": [], "notes": []}
    bare = describe("x", Source("x", ann, lambda k, s: []), labels.labelset(ann))
    assert (bare["classes"], bare["per_class"], bare["small_classes"]) == (None, None, [])
    ann2 = ("cat, kitty", "dog")
    d2 = describe("y", Source("y", ann2, lambda k, s: []), labels.labelset(ann2, "raw"))
    assert d2["renamed"] == [[0, "cat, kitty", "cat"]] and d2["notes"] == [
        "prompt labels differ from the class names as given (--labels raw): 'cat, kitty' (class 0) → 'cat' (a comma "
        "separates synonyms in a ClassLabel's names: the first is kept)"]


def test_renamed_lists_a_thousand_class_set_that_is_not_imagenet():
    """Only ImageNet-1k itself is exempt, not any set of 1,000 names (labels.renamed 1)."""
    from vlmcls import labels

    ann = [f"thing {i}" for i in range(999)] + ["last, final"]
    assert labels.renamed(ann, labels.labelset(ann)) == [(999, "last, final", "last")]
    assert labels.renamed(labels.imagenet_annotations(), labels.imagenet_labelset()) == []


# ================================================================================ gate.unlike_baseline, markdown._top5
def test_a_baseline_of_another_quantization_is_named_beside_the_verdict():
    """gate.unlike_baseline 22, 23: "quant" is compared as "weights" is."""
    from vlmcls import gate
    from vlmcls.catalog import ModelEntry
    from vlmcls.report import spec_fields
    from vlmcls.runner import CaseResult, CaseSpec
    from vlmcls.settings import BackendSettings

    now = CaseSpec(model=ModelEntry("m", "echo", "smoke:echo"), ways=20, settings=BackendSettings())
    old = {**spec_fields(now), "quant": "int8"}
    assert gate.unlike_baseline(CaseResult(now, [], None, None), old) == [
        f"the --baseline run differs in quant (int8 vs {spec_fields(now)['quant']})"]


@pytest.mark.parametrize("ways, shown", [(5, "n/a (N ≤ 5)"), (6, "0.500"), (2, "n/a (N ≤ 5)")])
def test_top5_is_no_result_up_to_five_candidates_and_a_figure_from_six(ways, shown):
    """markdown._top5 8 (< 5), 9 (<= 6)."""
    from vlmcls.report.markdown import _top5

    assert _top5({"ways": ways}, {"top5_accuracy": 0.5}) == shown


def test_write_summary_writes_summary_md_titled_with_the_folder_name(tmp_path):
    """summary.write_summary: the file's name and the folder name in the title when meta has no run id."""
    from vlmcls.report.summary import write_summary

    path = write_summary(tmp_path / "run-7", SUMMARY_ROWS, {})
    assert path == tmp_path / "run-7" / "summary.md"
    assert path.read_text() == SUMMARY.replace("R\\|1", "run-7")
    assert write_summary(tmp_path / "run-8", SUMMARY_ROWS, {"run_id": "R|1"}).read_text() == SUMMARY


def test_an_image_folder_of_one_class_says_how_to_lay_it_out_word_for_word(tmp_path):
    """_local_hf 48, 49: the image-folder hint after the columns found."""
    from vlmcls.data import DatasetError, open_dataset

    (tmp_path / "one" / "only").mkdir(parents=True)
    for k in range(2):
        (tmp_path / "one" / "only" / f"{k}.jpg").write_bytes(_jpeg())
    with pytest.raises(DatasetError) as info:
        open_dataset(str(tmp_path / "one"))
    assert str(info.value) == (f"dataset {str(tmp_path / 'one')!r} needs an image column and a ClassLabel column; it has "
                               "{'image': 'Image'}; an image folder needs one subfolder per class, at least two, e.g. "
                               "DIR/<split>/<class>/<image>")


def test_summary_edge_cases_of_each_part():
    """Ties sorted by case id (summary_markdown 18); two of a status counted (_title 8, 12-15); a smoke
    entry with a real threshold shows it (_line 32); a row without a baseline in a compared table
    (_versus 2); a verdict with no short form is shown as given (_versus 16-18, 23-26); every case
    compared: no "0 not compared" (_baseline_line 39, 40); a failure without a reason (_failures
    10-12, _reason 7); a merged case's reason keeps neither its id nor its source's (_reason 8, 11-15);
    three cases not run are named, without a reason by status (_not_run 22, 32-34)."""
    seen = {"run_id": "r", "compared": True, "verdict": "worse, oddly", "lost": 1, "gained": 0, "p": 0.5, "paired_n": 3}
    rows = [_row("z-20way", 20, 0.5, 3, "passed", 0.5, smoke=True, baseline=seen),
            _row("y-20way", 20, 0.5, 3, "passed", 0.2),
            {**_row("m-20way#2", 20, 0.1, 3, "failed", 0.5,
                    reason="m-20way: accuracy 0.100 < 0.5; m-20way#2: 1 error row"), "source_case_id": "m-20way"},
            _row("x-20way", 20, 0.1, 3, "failed", 0.5),
            *({"case_id": f"s{k}", "ways": 20, "status": "skipped"} for k in range(3))]
    text = summary_markdown(rows, {"run_id": "R"})
    assert text.splitlines()[0] == "### vlmcls R: **2 failed**, 2 passed, 3 skipped"
    table = [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ") and "way" in line]
    assert table == ["m-20way#2", "x-20way", "y-20way", "z-20way *smoke*"]
    lines = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in text.splitlines()
             if line.startswith("| ") and "way" in line}
    assert lines["z-20way *smoke*"][3:] == ["0.5", "passed", "worse, oddly: lost 1, gained 0, p=0.5 (n=3)"]
    assert lines["y-20way"][3:] == ["0.2", "passed", "–"]
    assert "Baseline r: 1 case compared by McNemar's test on the images both runs scored, 0 significantly worse.\n" in text
    assert "- m-20way#2: accuracy 0.100 &lt; 0.5; 1 error row\n- x-20way: no reason recorded (failed)\n" in text
    assert text.endswith("Not run (3 skipped): s0 (skipped); s1 (skipped); s2 (skipped).\n")


def test_the_dataset_line_at_exactly_twenty_names_and_three_scored_sizes():
    """20 small classes and 20 empty folders are all named, no ", and 0 more" (dataset._line 61, 78);
    three cases of different n give the smallest and the largest (_images 38); nothing scored and no
    total leaves only the class count (_images 29, 30)."""
    from vlmcls.report.dataset import dataset_section

    d = {"name": "d", "classes": 21, "label_set": 21, "images": None, "per_class": None,
         "small_classes": [[f"c{i}", 1] for i in range(20)], "ignored_folders": [f"f{i}" for i in range(20)]}
    text = dataset_section({"dataset": d}, [{"dataset": "d", "metrics": {"n": n}} for n in (30, 12, 48)])
    assert "- `d`: 21 classes, 12–48 images scored; classes with fewer" in text and "more" not in text
    assert text.endswith(f"left out of the classes: {', '.join(f'{chr(34)}f{i}{chr(34)}' for i in range(20))}\n")
    assert dataset_section({"dataset": {"name": "z", "classes": 3, "label_set": 3}}, []) == "## Dataset\n\n- `z`: 3 classes\n"


def test_the_gate_section_lists_failed_cases_only_and_the_chance_line_gives_top5_from_six_ways():
    """markdown.gate_section 2: a skipped case's reason is no gate failure; chance_line 7, 8: top-5
    chance only where N > 5."""
    from vlmcls.report.markdown import chance_line, gate_section

    assert gate_section([{"case_id": "a", "status": "skipped", "reason": "no key"}]) == []
    assert chance_line(5, True) == "Chance at 5-way (a uniform guess among the candidates): accuracy 0.200."
    assert chance_line(6, True) == "Chance at 6-way (a uniform guess among the candidates): accuracy 0.167, top-5 0.833."


# ================================================================================ markdown.notes, gate_notes (rest of run 9)
NOTES_ROWS = [
    {"case_id": "a-20way", "stopped": "stopped at --max-cost: 1 | 2", "notes": ["a note with <b>", "another"],
     "ambiguous": 3, "labels": "thesis", "errors": 5, "input_errors": 2, "first_error": "HTTP 500 | retry",
     "cost_usd": 0.5, "metrics": {"n": 10}, "stages": {"direct": 0.0, "unresolved": 1.0}, "resumed": 4, "not_run": 2,
     "quant": "int8", "device_kind": "cuda", "trust_remote_code": True},
    {"case_id": "b-20way", "ambiguous": 2, "labels": "unique", "errors": 1, "metrics": {"n": 4},
     "stages": {"unresolved": 0.5}, "quant": "int8", "device_kind": "cpu", "orders": {"orders": 3}, "resumed": 5},
    {"case_id": "c-20way", "errors": 1, "input_errors": 1, "ambiguous": 0, "labels": "raw", "quant": "int8",
     "status": "no gate"},
    {"case_id": "d-20way", "status": "no gate", "stages": {"unresolved": 1.0}, "metrics": {"n": 0}},
    # the gate exactly at the bound 0 right out of 40 leaves: the gate fails only below it, so it cannot fail
    {"case_id": "e-20way", "status": "passed", "threshold": 1 - 0.025 ** (1 / 40), "metrics": {"n": 40}},
]
NOTES = [
    "## Notes", "",
    "- `a-20way`: stopped at --max-cost: 1 \\| 2",
    "- `a-20way`: a note with &lt;b&gt;",
    "- `a-20way`: another",
    "- `a-20way`: 3 predictions are ambiguous: they involve a class whose raw (study) label another of its candidates "
    "shares, or an answer naming several candidates",
    "- `a-20way`: 3 error rows (failed request or model), counted as wrong predictions; first: HTTP 500 \\| retry",
    "- `a-20way`: 2 unreadable images (see Unreadable images), counted as wrong predictions",
    "- `a-20way`: cost 0.5000 USD",
    "- `a-20way`: every answer was unresolved: none named a candidate the resolver could read (the raw answers are in "
    "its samples file); try another --prompt, or --resolver study, which sends them to NLI",
    "- `a-20way`: 4 of 12 samples came from the result store (not recomputed; images/s counts only the fresh ones)",
    "- `a-20way`: on a GPU, bitsandbytes int8 (the study's setting) runs 4-6x slower than bf16 (shared H200 "
    "reference); `--quant none` for speed",
    "- `a-20way`: ran the hub's remote code (--trust-remote-code)",
    "- `b-20way`: 2 answers named several candidates; the resolver did not guess",
    "- `b-20way`: 1 error row (failed request or model), counted as wrong predictions",
    "- `b-20way`: 5 of 12 answers (image x order, 3 orders) came from the result store (not recomputed; images/s "
    "counts only the fresh ones)",
    "- `c-20way`: 1 unreadable image (see Unreadable images), counted as wrong predictions",
    "- `c-20way`: on a GPU, bitsandbytes int8 (the study's setting) runs 4-6x slower than bf16 (shared H200 "
    "reference); `--quant none` for speed",
    "- 2 cases with no accuracy gate (no threshold at its N: it passes whatever it scores, unless every sample "
    "fails): `c-20way`, `d-20way`; set `thresholds = { N = accuracy }` in the catalog entry to gate it",
    "- `e-20way`: at n=40 its gate 0.0880973 cannot fail (0 of 40 right still has a 95% upper bound of 0.088); it "
    "needs n ≥ 41 (`--samples`)",
    "",
]


def test_the_notes_section_word_for_word():
    """Every kind of note at once, in row order: a stopped case and its notes (escaped), the raw labels'
    ambiguity (a row saved as "thesis") against the resolver's, backend errors apart from unreadable images
    (with and without a first error; none when every error is an unreadable image), cost, an all-unresolved
    case (not at a share below 1, nor with nothing scored), resumed samples and answers, int8 off the CPU
    (no device: not the CPU either), remote code, two ungated cases, and a gate exactly at the bound 0 of n
    right leaves (gate_notes 43: >=, since the gate fails only below it; gate_notes 19: the ", " between
    cases). Kills the markdown.notes mutants that drop, reorder or change a line or a condition."""
    from vlmcls.report.markdown import notes

    assert notes(NOTES_ROWS) == NOTES
    assert notes([]) == [] and notes([{"case_id": "q", "status": "passed", "metrics": {"n": 3}}]) == []


# ================================================================================ match: a list's lines
@pytest.mark.parametrize("answer, ids", [
    ("- lion\n- tabby", (1, 0)),  # a bulleted list of candidates, each item one word: points at none
    ("lion\ntabby", (1, 0)),  # the same without marks, the list's first word the answer's first
    ("- a lion\n- the tabby", (1, 0)),  # an article before an item keeps it a bare item
    ("1. the lion\n2. a tabby", (1, 0)),
    ("tabby\ntabby\nlion", (0,)),  # the next line repeats the first line's class: no list, the first line counts
])
def test_a_list_of_one_word_items_points_at_none_of_them(answer, ids):
    """_Parsed.bare 9 (the line's end looked up after the word before a one-word mention: the first word of a
    line, or of the answer, was never bare), 29 (an article before the item made it no item); _first_sentence
    26 (the next line's classes minus those of the mention's own line, not minus nothing)."""
    from vlmcls import labels, match

    index = match.phrase_index(labels.labelset(["tabby", "lion", "tiger cat"]))
    assert match.find(answer, index, [0, 1, 2]).ids == ids


# ================================================================================ markdown.gate_cell, pairwise._power
def test_a_zero_gate_is_plumbing_only_for_a_smoke_model():
    """gate_cell 14: a real model's gate of 0 is shown as the gate it is, a smoke model's real gate too."""
    from vlmcls.report.markdown import gate_cell

    assert gate_cell({"status": "passed", "threshold": 0}) == "passed (gate 0)"
    assert gate_cell({"status": "failed", "threshold": 0.5, "smoke": True}) == "failed (gate 0.5)"
    assert gate_cell({"status": "passed", "threshold": 0, "smoke": True}) == "passed (plumbing)"


def test_the_power_line_at_six_paired_images_and_with_no_pair_tested():
    """_power 12: at n = 6 a difference can be significant (all 6 one way: p = 0.031), so the line gives the
    smallest one instead of saying none can be; _power 6: no tested pair says nothing (default n = 0)."""
    from vlmcls.report import pairwise, stats

    paired = pairwise.Versus({}, {}, stats.Paired(6, None, None, 0, 0, 1.0, 0, 0), 1.0)
    assert pairwise._power([paired]) == [
        "With 6 paired images, no difference smaller than 6 images (1.00 in accuracy) can be significant, even before "
        "Holm's correction: *not significantly different* here rules out only large gaps."]
    assert pairwise._power([]) == []


# ================================================================================ words.norm_token, labels.simplify
def test_apostrophes_are_dropped_from_a_word_and_a_blank_folder_name_is_named_by_its_class_id():
    """words.norm_token 10, 11: "Dog's" is the word "dogs" ("dog's" and "dogs" are one name to the resolver);
    labels.simplify 25: a blank folder name (synonyms=False) becomes "class <id>", not an empty label."""
    from vlmcls import labels, words

    assert words.phrase("Dog's bed, the Pokémon’s") == ("dogs", "bed", "the", "pokemons")
    assert words.name_key("dog's") == words.name_key("DOGS")
    assert labels.labelset(["cat, kitty", "  "], synonyms=False).names == ("cat, kitty", "class 1")
