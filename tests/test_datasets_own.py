"""A researcher's own labelled images (walkthrough 10): which split is scored and how the run names it,
which trees are ImageNet, sample ids a user can open, class names as given, errors that name the fix,
and the report's Dataset section. Real files on disk, made with PIL and `datasets`."""
from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
from PIL import Image

from vlmcls import data, labels
from vlmcls.data import DatasetError, dataset_name, describe, open_dataset
from vlmcls.images import ImageError, decode

BENCH = Path(__file__).resolve().parents[1] / "bench" / "test_classify.py"
COLORS = [(200, 160, 60), (60, 60, 200), (30, 200, 30), (220, 30, 30), (0, 200, 200), (200, 0, 200), (90, 90, 90)]


def jpeg(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), color).save(buf, "JPEG")
    return buf.getvalue()


def tree(root: Path, classes: dict[str, int], start: int = 0) -> Path:
    """root/<class>/img_<k>.jpg, the same file names in every class folder (as exports have them)."""
    for i, (name, n) in enumerate(classes.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for k in range(n):
            (root / name / f"img_{k}.jpg").write_bytes(jpeg(COLORS[(i + start) % len(COLORS)]))
    return root


def labelset_of(src):
    return labels.labelset(src.annotations, "unique", synonyms=src.synonyms)


# ---------------------------------------------------------------------------------------------- finding 1: splits
def test_an_image_folder_with_train_and_test_scores_test_and_says_so(tmp_path):
    ds = tmp_path / "ds6"
    tree(ds / "train", {"cat": 6, "dog": 6, "bird": 6})
    tree(ds / "test", {"cat": 2, "dog": 2, "bird": 2}, start=3)
    src = open_dataset(str(ds))
    assert src.size == 6 and src.split == "test"  # was the 18 training images, silently
    assert {Path(str(s.image)).parts[-3] for s in src.select(None, 0)} == {"test"}
    assert dataset_name(str(ds), src) == f"{ds}:test" and dataset_name(f"{ds}/", src) == f"{ds}:test"
    assert src.notes[0] == f"{ds} has splits train, test; scored test (pick one with --dataset {ds}:SPLIT)"
    again = open_dataset(f"{ds}:test")  # the name it gets opens the same images, and is a name of its own
    assert again.size == 6 and again.split is None and dataset_name(f"{ds}:test", again) == f"{ds}:test"
    assert open_dataset(f"{ds}:train").size == 18


def test_an_image_folder_with_a_val_folder_scores_it_like_a_saved_dataset(tmp_path):
    from datasets import load_dataset

    ds = tmp_path / "pets"
    tree(ds / "train", {"cat": 3, "dog": 3})
    tree(ds / "val", {"cat": 2, "dog": 1})
    tree(ds / "test", {"cat": 1, "dog": 1})
    src = open_dataset(str(ds))
    assert src.size == 3 and src.split == "validation"
    load_dataset("imagefolder", data_dir=str(ds)).save_to_disk(str(tmp_path / "saved"))
    saved = open_dataset(str(tmp_path / "saved"))  # the same data saved with save_to_disk: the same split
    assert saved.size == src.size and saved.split == "validation"


def test_a_parquet_folder_with_split_files_scores_validation_else_test(tmp_path):
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as HFImage

    feats = Features({"image": HFImage(), "label": ClassLabel(names=["a", "b"])})
    (tmp_path / "pq").mkdir()
    for split, n in (("train", 8), ("test", 4)):
        rows = {"image": [jpeg(COLORS[k % 2]) for k in range(n)], "label": [k % 2 for k in range(n)]}
        Dataset.from_dict(rows, features=feats).to_parquet(tmp_path / "pq" / f"{split}-00000-of-00001.parquet")
    src = open_dataset(str(tmp_path / "pq"))
    assert src.size == 4 and src.split == "test"  # was train and test merged into one "train" of 12
    assert open_dataset(f"{tmp_path / 'pq'}:train").size == 8


# ---------------------------------------------------------------------------------------------- finding 3: synsets
def test_one_synset_named_folder_among_plain_names_is_an_image_folder_with_a_note(tmp_path):
    ds = tree(tmp_path / "ds1", {"golden_retriever": 2, "tabby cat": 2, "n01440764": 2})
    src = open_dataset(str(ds))
    assert src.annotations == ("golden_retriever", "n01440764", "tabby cat")  # was an error on 2 of the folders
    assert "read as an image folder" in src.notes[0] and "only 1 of its 3 class folders (n01440764)" in src.notes[0]


def test_imagenet21k_ids_are_an_image_folder_and_1k_ids_are_imagenet(tmp_path):
    ds = tree(tmp_path / "in21k", {"n00004475": 2, "n01440764": 2})  # "organism" is no ImageNet-1k class
    src = open_dataset(str(ds))
    assert src.annotations == ("n00004475", "n01440764") and "1 folder (n00004475) is not ImageNet-1k" in src.notes[0]
    ds = tree(tmp_path / "in1k" / "val", {"n01443537": 2, "n01440764": 2})
    tree(tmp_path / "in1k" / "train", {"n01440764": 1})
    src = open_dataset(str(tmp_path / "in1k"))
    assert src.annotations == labels.imagenet_annotations() and src.size == 4 and src.split == "val"
    assert dataset_name(str(tmp_path / "in1k"), src) == f"{tmp_path / 'in1k'}:val"
    assert "all 1,000 ImageNet-1k classes" in " ".join(src.notes) and "N = all means 1000, not 2" in " ".join(src.notes)
    whole = tree(tmp_path / "whole", {"n01443537": 1, "n01440764": 1})  # no split folders: the name as given
    assert open_dataset(str(whole)).split is None


def test_a_synset_split_named_by_hand_lists_every_unknown_folder(tmp_path):
    tree(tmp_path / "mixed" / "train", {"n01440764": 1, "n01443537": 1})  # a synset split: 'val' is missing
    with pytest.raises(DatasetError, match="has no split 'val'; it has \\['train'\\]"):
        open_dataset(str(tmp_path / "mixed"))
    names = {f"n9999999{k}": 1 for k in range(3)}
    folder = tree(tmp_path / "odd", {"n01440764": 1, **names})
    with pytest.raises(DatasetError) as info:
        data._synset_folder(folder)  # the reader itself, should a caller hand it such a tree
    text = str(info.value)
    assert all(n in text for n in names) and "3 folders" in text and "name no folder like a synset" in text


# ---------------------------------------------------------------------------------------------- finding 4: sample ids
def test_repeated_file_names_give_paths_a_user_can_open(tmp_path):
    ds = tree(tmp_path / "ds3", {"tabby cat": 3, "golden_retriever": 3})
    (ds / "tabby cat" / "broken.jpg").write_bytes(jpeg(COLORS[0])[:200])
    got = {s.sample_id: s for s in open_dataset(str(ds)).select(None, 0)}
    assert set(got) == {f"{c}/img_{k}.jpg" for c in ("tabby cat", "golden_retriever") for k in range(3)} | {"tabby cat/broken.jpg"}
    assert (ds / "tabby cat/broken.jpg").exists()  # the id opens the file from the dataset's folder
    with pytest.raises(ImageError):
        decode(got["tabby cat/broken.jpg"].image)
    unique = tree(tmp_path / "uniq", {"a": 1, "b": 1})
    (unique / "b" / "img_0.jpg").rename(unique / "b" / "other.jpg")  # unique names keep today's ids
    assert sorted(s.sample_id for s in open_dataset(str(unique)).select(None, 0)) == ["img_0.jpg", "other.jpg"]


def test_sample_ids_fall_back_to_rows_only_when_paths_cannot_tell_apart():
    assert data.sample_ids(["/d/a/x.jpg", "/d/b/x.jpg"], 2) == ["a/x.jpg", "b/x.jpg"]
    assert data.sample_ids(["d/a/x.jpg", "d/b/y.jpg"], 2) == ["x.jpg", "y.jpg"]
    assert data.sample_ids(["x.jpg", "x.jpg"], 2) == ["row0000000", "row0000001"]  # save_to_disk keeps bare names
    assert data.sample_ids(["/d/a/x.jpg", None], 2) == ["x.jpg", "row0000001"]
    assert data.sample_ids(["/d/a/x.jpg", "d/b/x.jpg"], 2) == ["row0000000", "row0000001"]  # absolute and relative


def test_the_store_and_the_sample_files_take_ids_with_slashes_and_spaces(tmp_path):
    from vlmcls.report import write_samples
    from vlmcls.store import Store
    from vlmcls.types import Prediction

    p = Prediction(sample_id="tabby cat/img_0.jpg", true_id=1, true_label="tabby cat", candidates=("crane", "tabby cat"),
                   answer="tabby cat", pred_id=1, pred_label="tabby cat", stage="match", latency_s=0.1)
    store = Store(tmp_path / "s.sqlite")
    store.put("k", [p], now=1.0)
    assert store.get("k") == {"tabby cat/img_0.jpg": p}
    store.close()
    write_samples(tmp_path / "samples" / "case.jsonl", [p])
    assert json.loads((tmp_path / "samples" / "case.jsonl").read_text())["sample_id"] == "tabby cat/img_0.jpg"


# ---------------------------------------------------------------------------------------------- findings 5, 10: names
def test_a_folder_name_with_a_comma_is_one_name_and_a_classlabel_keeps_the_synonym_rule(tmp_path):
    ds = tree(tmp_path / "ds4", {"salt, pepper": 2, "salt": 2, "tabby cat": 2})
    src = open_dataset(str(ds))
    assert labelset_of(src).names == ("salt", "salt, pepper", "tabby cat")  # was "pepper" for "salt, pepper"
    d = describe("ds4", src, labelset_of(src))
    assert d["renamed"] == [] and d["notes"] == [
        "1 prompt label holds a comma ('salt, pepper'), which a prompt joining the candidates with commas ({labels}: "
        "thesis, label-only) shows like two candidates: --label-names gives another name, --prompt numbered lists one "
        "per line"]
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as HFImage

    feats = Features({"image": HFImage(), "label": ClassLabel(names=["tench, Tinca tinca", "goldfish, Carassius auratus"])})
    Dataset.from_dict({"image": [jpeg(COLORS[0]), jpeg(COLORS[1])], "label": [0, 1]}, features=feats).save_to_disk(tmp_path / "hf")
    src = open_dataset(str(tmp_path / "hf"))
    d = describe("hf", src, labelset_of(src))
    assert labelset_of(src).names == ("tench", "goldfish") and d["renamed"][0] == [0, "tench, Tinca tinca", "tench"]
    assert "'tench, Tinca tinca' (class 0) → 'tench'" in d["notes"][-1] and "a comma separates synonyms" in d["notes"][-1]
    assert not any("holds a comma" in n for n in d["notes"])  # a ClassLabel's comma separates synonyms: none is left


def test_every_renamed_class_is_listed_with_its_id(tmp_path):
    ds = tree(tmp_path / "ds3", {"Crane": 2, "blue circle": 2, "crane": 2})
    src = open_dataset(str(ds))
    d = describe("ds3", src, labelset_of(src))
    assert d["renamed"] == [[0, "Crane", "Crane (class 0)"], [2, "crane", "crane (class 2)"]]
    note = d["notes"][-1]
    assert "'Crane' (class 0) → 'Crane (class 0)'; 'crane' (class 2) → 'crane (class 2)'" in note
    assert "often one class twice" in note
    assert describe("s", open_dataset("sample"), labels.imagenet_labelset())["renamed"] == []  # ImageNet: documented rule


# ---------------------------------------------------------------------------------------------- findings 6, 15: errors
def test_a_parquet_of_relative_paths_read_elsewhere_says_image_file_not_found(tmp_path, monkeypatch):
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as HFImage

    tree(tmp_path / "ds2", {"blue circle": 1, "crane": 1})
    monkeypatch.chdir(tmp_path)
    feats = Features({"img": HFImage(), "label": ClassLabel(names=["blue circle", "crane"])})
    Dataset.from_dict({"img": ["ds2/blue circle/img_0.jpg", "ds2/crane/img_0.jpg"], "label": [0, 1]},
                      features=feats).to_parquet("mine.parquet")
    assert not open_dataset("mine.parquet").notes  # read from where the paths start: fine
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    src = open_dataset("../mine.parquet")
    assert "2 image paths of 2" in src.notes[0] and "Dataset.to_parquet keeps image paths" in src.notes[0]
    sample = src.select(None, 0)[0]
    with pytest.raises(ImageError, match=r"^image file not found: ds2/(blue circle|crane)/img_0\.jpg$"):
        decode(sample.image)  # was "cannot identify image file <_io.BytesIO ...>"


def test_a_pandas_parquet_names_the_conversion(tmp_path):
    import pandas as pd

    pd.DataFrame({"image": [{"bytes": jpeg(COLORS[0]), "path": None}], "label": ["cat"]}).to_parquet(tmp_path / "p.parquet")
    with pytest.raises(DatasetError) as info:
        open_dataset(str(tmp_path / "p.parquet"))
    text = str(info.value)
    assert ".cast_column('image', datasets.Image()).class_encode_column('label')" in text and "save_to_disk" in text


def test_the_default_ways_on_a_small_dataset_says_it_is_the_default(pytester: pytest.Pytester, tmp_path):
    (pytester.path / "bench").mkdir()
    (pytester.path / "bench" / "test_classify.py").write_text(BENCH.read_text())
    tree(pytester.path / "six", {f"class {k}": 1 for k in range(6)})
    out = pytester.runpytest_subprocess("bench", "--dataset", "six", "-k", "smoke-echo", "-p", "no:cacheprovider")
    errors = [line for line in out.errlines if line.startswith("ERROR:")]
    assert out.ret == pytest.ExitCode.USAGE_ERROR and len(errors) == 1
    assert errors[0] == ("ERROR: the default --ways 20,100 exceeds the 6 classes of dataset 'six'; "
                         "pass --ways 6 (all classes) or less, e.g. --ways 5,6")


# ---------------------------------------------------------------------------------------------- finding 8: the section
def test_describe_counts_classes_small_ones_and_empty_folders(tmp_path):
    ds = tree(tmp_path / "ds3", {"tabby cat": 9, "lonely": 1, "crane": 6})
    (ds / "empty_class").mkdir()
    (ds / "tabby cat" / "notes.txt").write_text("not an image")
    src = open_dataset(str(ds))
    d = describe("ds3", src, labelset_of(src))
    assert (d["classes"], d["images"], d["per_class"]) == (3, 16, [1, 9])
    assert d["small_classes"] == [["lonely", 1]] and d["ignored_folders"] == ["empty_class"]
    assert json.loads(json.dumps(d)) == d  # results.json's meta holds it as it is


def test_a_run_on_an_image_folder_writes_the_dataset_section(pytester: pytest.Pytester):
    (pytester.path / "bench").mkdir()
    (pytester.path / "bench" / "test_classify.py").write_text(BENCH.read_text())
    ds = pytester.path / "mine"
    tree(ds / "train", {"tabby cat": 4, "crane": 4, "Crane": 4})
    tree(ds / "test", {"tabby cat": 6, "crane": 1, "Crane": 2}, start=2)
    (ds / "test" / "empty_class").mkdir()
    out = pytester.runpytest_subprocess("bench", "--dataset", "mine", "--ways", "3", "-k", "smoke-echo",
                                        "-p", "no:cacheprovider", "--report-dir", "out")
    assert out.ret == pytest.ExitCode.OK, out.stdout.str()
    run = next((pytester.path / "out").glob("*/results.json")).parent
    results = json.loads((run / "results.json").read_text())
    assert {c["dataset"] for c in results["cases"]} == {"mine:test"}  # the split scored is in the name
    assert results["meta"]["dataset"]["name"] == "mine:test"
    report = (run / "report.md").read_text()
    assert "dataset `mine:test`" in report
    section = report.split("## Dataset", 1)[1].split("\n## ", 1)[0]
    assert ("- `mine:test`: 3 classes, 9 images scored of the 9 in the dataset (1–6 per class); classes with fewer "
            "than 5 images (their recall moves in steps of 1/n): \"crane (class 1)\" (1), \"Crane (class 0)\" (2);") in section
    assert 'left out of the classes: "empty_class"' in section
    assert "mine has splits train, test; scored test (pick one with --dataset mine:SPLIT)" in section
    assert "'Crane' (class 0) → 'Crane (class 0)'" in section
    again = pytester.run(sys.executable, "-m", "vlmcls", "report", str(run), "--no-plots")  # a re-render says the same
    assert again.ret == 0 and section in (run / "report.md").read_text()


def test_the_section_renders_each_run_of_a_merged_report_and_sums_up_a_sample():
    from vlmcls.report.dataset import dataset_section

    ds = {"name": "ds2", "read_from": "ds2", "classes": 6, "label_set": 6, "images": 48, "per_class": [8, 8],
          "small_classes": [], "ignored_folders": [], "renamed": [], "notes": []}
    six = {**ds, "name": "ds6:test", "read_from": "ds6:test", "classes": 3, "label_set": 3, "images": 6,
           "per_class": [2, 2], "small_classes": [["bird", 2], ["cat", 2], ["dog", 2]], "notes": ["ds6 has splits train, test"]}
    rows = [{"dataset": "ds2", "metrics": {"n": 12}}, {"dataset": "ds2", "metrics": {"n": 48}}, {"dataset": "ds6:test", "metrics": None}]
    text = dataset_section({"merged_from": [{"dataset": ds}, {"dataset": six}, {"dataset": ds}]}, rows)
    assert text.count("\n- ") == 2  # one line per dataset, the same run twice once
    assert "- `ds2`: 6 classes, 12–48 images scored of the 48 in the dataset (8 per class)\n" in text
    assert "- `ds6:test`: 3 classes, 6 images (2 per class); every class has fewer than 5 images" in text
    assert "  - ds6 has splits train, test" in text
    assert dataset_section({"run_id": "old"}, rows) == ""  # a run written before meta.dataset: no section


def test_a_hidden_folder_in_a_synset_tree_is_no_class(tmp_path):
    """A notebook's `val/.ipynb_checkpoints` made the whole tree fail ("1 folder (.ipynb_checkpoints) are
    not ImageNet-1k synsets"): hidden folders are skipped, as the synset check and `datasets` skip them."""
    import io

    from PIL import Image

    from vlmcls.data import open_dataset

    for name in ("n01440764", "n01443537"):
        folder = tmp_path / "val" / name
        folder.mkdir(parents=True)
        buf = io.BytesIO()
        Image.new("RGB", (8, 8), (10, 20, 30)).save(buf, "JPEG")
        (folder / f"{name}_1.JPEG").write_bytes(buf.getvalue())
    (tmp_path / "val" / ".ipynb_checkpoints").mkdir()
    source = open_dataset(str(tmp_path))
    assert source.size == 2 and len(source.select(None, 0)) == 2


# ------------------------------------------------------------------ hub datasets: only the split scored is downloaded
class HubStandIn:
    """`datasets`' hub entry points, standing in for the network: the split names of a dataset with
    train and validation, and a real `Dataset` for the split loaded. Records what was asked."""

    def __init__(self, splits=("train", "validation")):
        self.splits, self.loads = list(splits), []

    def get_dataset_split_names(self, name, config_name=None, token=None):
        return self.splits

    def load_dataset(self, name, config=None, split=None, token=None):
        from datasets import ClassLabel, Dataset, Features, Image as HFImage

        self.loads.append((name, config, split))
        if split is None:  # what the old loader asked for: every split, train included
            raise AssertionError("load_dataset without a split downloads every split")
        features = Features({"image": HFImage(), "label": ClassLabel(names=["cat", "dog"])})
        return Dataset.from_dict({"image": [{"bytes": jpeg(COLORS[i]), "path": None} for i in range(4)],
                                  "label": [0, 1, 0, 1]}, features=features)


def test_a_hub_dataset_downloads_only_the_split_it_scores_and_names_it(monkeypatch):
    import datasets

    hub = HubStandIn()
    monkeypatch.setattr(datasets, "get_dataset_split_names", hub.get_dataset_split_names)
    monkeypatch.setattr(datasets, "load_dataset", hub.load_dataset)
    src = open_dataset("someone/pets")
    assert hub.loads == [("someone/pets", None, "validation")] and src.size == 4 and src.split == "validation"
    assert src.notes[0] == "someone/pets has splits train, validation; scored validation (pick one with --dataset someone/pets:SPLIT)"
    assert dataset_name("someone/pets", src) == "someone/pets:validation"
    named = open_dataset("someone/pets/small:train")  # a config and a split, as typed
    assert hub.loads[-1] == ("someone/pets", "small", "train") and named.split is None and not any("has splits" in n for n in named.notes)
    with pytest.raises(DatasetError) as missing:  # a split it lacks: named before anything downloads
        open_dataset("someone/pets:test")
    assert str(missing.value) == ("dataset 'someone/pets' has no split 'test'; it has ['train', 'validation'] — "
                                  "pick one with --dataset someone/pets:SPLIT")
    assert len(hub.loads) == 2


@pytest.mark.parametrize("spec", ["ILSVRC/imagenet-1k", "ILSVRC/imagenet-1k:validation", "imagenet", "imagenet-1k"])
def test_imagenet_by_its_hub_id_is_the_streamed_validation_subset_not_a_whole_download(spec, monkeypatch):
    """`--dataset ILSVRC/imagenet-1k` went to the generic hub loader: every split downloaded (140 GB of
    train) and the run named other data than the study's. It is the study's data: streamed, ImageNet labels."""
    import datasets
    from vlmcls.report.compare import _dataset_line

    hub = HubStandIn()
    monkeypatch.setattr(datasets, "get_dataset_split_names", hub.get_dataset_split_names)
    monkeypatch.setattr(datasets, "load_dataset", hub.load_dataset)
    src = open_dataset(spec)
    assert src.name == "imagenet" and src.size == 50_000 and hub.loads == []
    assert src.annotations == labels.imagenet_annotations()
    assert _dataset_line([{"dataset": spec, "metrics": {}}]) == []


def test_a_split_asked_of_a_dataset_that_names_none_says_drop_it_not_use_train(tmp_path):
    """Class folders directly in DIR (or parquet files that name no split) are one dataset, which `datasets`
    calls 'train': DIR:val is told to drop ':val', not sent to DIR:train as if training images existed."""
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as HFImage

    flat = tree(tmp_path / "birds", {"cat": 2, "dog": 2})
    with pytest.raises(DatasetError) as got:
        open_dataset(f"{flat}:val")
    assert str(got.value) == (f"dataset '{flat}' has no splits (its class folders are directly in it; `datasets` "
                              "calls the whole of it 'train'): drop ':val'")
    assert open_dataset(str(flat)).size == 4
    named = tree(tmp_path / "named" / "train", {"cat": 2, "dog": 2}).parent  # a real train split: use it
    with pytest.raises(DatasetError, match=r"has no split 'val'; it has \['train'\] — use --dataset .*named:train$"):
        open_dataset(f"{named}:val")
    feats = Features({"image": HFImage(), "label": ClassLabel(names=["a", "b"])})
    (tmp_path / "pq").mkdir()
    rows = {"image": [jpeg(COLORS[k % 2]) for k in range(4)], "label": [k % 2 for k in range(4)]}
    Dataset.from_dict(rows, features=feats).to_parquet(tmp_path / "pq" / "birds.parquet")
    with pytest.raises(DatasetError, match=r"has no splits \(no file name says one; .*drop ':test'$"):
        open_dataset(f"{tmp_path / 'pq'}:test")


def test_renaming_a_class_folder_asks_again_and_an_unchanged_tree_resumes(pytester: pytest.Pytester):
    """The class names are candidate texts, so they are in the prompt: a store keyed without them answered a
    renamed class from the old name's rows. The key holds their digest for an own dataset (not for the
    sample or ImageNet, whose names the code fixes)."""
    (pytester.path / "bench").mkdir()
    (pytester.path / "bench" / "test_classify.py").write_text(BENCH.read_text())
    ds = tree(pytester.path / "birds", {"crane": 2, "stork": 2, "tabby cat": 2})

    def run(name: str) -> dict:
        out = pytester.runpytest_subprocess("bench", "--dataset", "birds", "--ways", "3", "-k", "smoke-echo",
                                            "-p", "no:cacheprovider", "--report-dir", "out", "--run-id", name,
                                            "--store", "answers.sqlite")
        assert out.ret == pytest.ExitCode.OK, out.stdout.str()
        (case,) = json.loads((pytester.path / "out" / name / "results.json").read_text())["cases"]
        return case

    assert run("first")["resumed"] == 0
    assert run("again")["resumed"] == 6  # nothing changed: every answer comes from the store
    (ds / "crane").rename(ds / "heron")
    renamed = run("renamed")
    assert renamed["resumed"] == 0  # was 6: the answers given to "crane" counted for "heron"
    assert run("renamed-again")["resumed"] == 6


def test_only_an_own_dataset_keys_its_class_names():
    from dataclasses import replace

    from vlmcls.catalog import load_catalog
    from vlmcls.labels import names_digest
    from vlmcls.runner import CaseSpec
    from vlmcls.settings import BackendSettings

    entry = next(iter(load_catalog(None).values()))
    spec = CaseSpec(model=entry, ways=3, settings=BackendSettings())
    assert "label_names" not in spec.key_fields()  # the sample's and ImageNet's keys are as before
    a, b = (replace(spec, dataset="birds", label_digest=names_digest(n)) for n in (("crane", "stork"), ("heron", "stork")))
    assert a.key_fields()["label_names"] != b.key_fields()["label_names"]
    assert names_digest(("crane", "stork")) != names_digest(("stork", "crane"))  # ids matter: the names in id order


@pytest.mark.parametrize("where", [".", "val"])
def test_a_metadata_csv_with_its_class_column_named_otherwise_names_the_rename(tmp_path, where):
    folder = tmp_path / "flat" / where
    folder.mkdir(parents=True)
    rows = ["file_name,species"] + [f"img_{k}.jpg,{'ab'[k % 2]}" for k in range(4)]
    (folder / "metadata.csv").write_text("\n".join(rows) + "\n")
    for k in range(4):
        (folder / f"img_{k}.jpg").write_bytes(jpeg(COLORS[k]))
    with pytest.raises(DatasetError) as err:
        open_dataset(str(tmp_path / "flat"))
    csv_at = "metadata.csv" if where == "." else f"{where}/metadata.csv"
    assert str(err.value).endswith(f"; {csv_at} holds no column named `label`, the one whose text becomes the classes "
                                   "(it has species): rename the class column to label")
    (folder / "metadata.csv").write_text("\n".join(["file_name,label"] + rows[1:]) + "\n")  # renamed: read
    assert len(labelset_of(open_dataset(str(tmp_path / "flat")))) == 2
