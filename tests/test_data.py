"""Dataset sources and seeded stratified subsets, on real files built in the test."""
from __future__ import annotations

import io
from collections import Counter

import pytest
from PIL import Image

from vlmcls import data, labels
from vlmcls.data import DatasetError, open_dataset, stratified


def jpeg(color=(200, 30, 30), size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG")
    return buf.getvalue()


def test_bundled_sample_is_small_real_imagenet_ids():
    assert data.BUNDLED.stat().st_size <= 2_000_000
    src = open_dataset("sample")
    all_ = src.select(None, 0)
    assert src.annotations == labels.imagenet_annotations()
    assert len(all_) >= 300 and len({s.label for s in all_}) >= 100
    assert {134, 517, 638, 639} <= {s.label for s in all_}  # the colliding names are exercised


def test_stratified_spreads_evenly_and_is_seeded():
    index = [(f"s{c}-{k}", c) for c in range(1000) for k in range(50)]  # ImageNet val shape
    picked = stratified(index, 10_000, seed=1)
    per_class = Counter(index[p][1] for p in picked)
    assert len(picked) == 10_000 and set(per_class.values()) == {10}
    assert stratified(index, 10_000, seed=1) == picked
    assert stratified(index, 10_000, seed=2) != picked


def test_uneven_sizes_spread_as_far_as_classes_allow():
    index = [("a0", 0)] + [(f"b{k}", 1) for k in range(10)] + [(f"c{k}", 2) for k in range(10)]
    counts = Counter(index[p][1] for p in stratified(index, 13, seed=0))
    assert counts[0] == 1 and sorted([counts[1], counts[2]]) == [6, 6]
    counts = Counter(index[p][1] for p in stratified(index, 7, seed=0))
    assert counts == {0: 1, 1: 3, 2: 3}  # class 0 has a single image: the others share the rest
    counts = Counter(index[p][1] for p in stratified(index, 2, seed=0))
    assert sum(counts.values()) == 2 and max(counts.values()) == 1


def test_too_many_samples_is_one_line():
    with pytest.raises(DatasetError, match=r"--samples 999 exceeds the 318 images .* use --samples 318"):
        open_dataset("sample").select(999, 0)


def test_synset_folder_maps_ids_in_imagenet_order(tmp_path):
    for syn in ("n01443537", "n01440764"):  # goldfish (1), tench (0): not alphabetical by name
        d = tmp_path / "val" / syn
        d.mkdir(parents=True)
        for k in range(3):
            (d / f"ILSVRC2012_val_{syn}_{k}.JPEG").write_bytes(jpeg())
    src = open_dataset(str(tmp_path))
    got = src.select(None, 0)
    assert {s.sample_id.split("/")[0]: s.label for s in got} == {"n01440764": 0, "n01443537": 1}
    assert len(src.select(4, 0)) == 4


def test_local_hf_dataset_with_classlabel(tmp_path):
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as HFImage

    feats = Features({"img": HFImage(), "fine_label": ClassLabel(names=["apple", "aquarium fish", "baby"])})
    ds = Dataset.from_dict({"img": [jpeg()] * 6, "fine_label": [0, 1, 2, 0, 1, 2]}, features=feats)
    ds.save_to_disk(tmp_path / "cifar")
    src = open_dataset(str(tmp_path / "cifar"))
    assert src.annotations == ("apple", "aquarium fish", "baby")
    got = src.select(3, 0)
    assert sorted(s.label for s in got) == [0, 1, 2] and all(isinstance(s.image, bytes) for s in got)
    ds.to_parquet(tmp_path / "c.parquet")
    assert open_dataset(str(tmp_path / "c.parquet")).annotations == src.annotations


def test_dataset_without_label_column_is_one_line(tmp_path):
    from datasets import Dataset, Features, Value
    from datasets import Image as HFImage

    ds = Dataset.from_dict({"img": [jpeg()], "caption": ["x"]}, features=Features({"img": HFImage(), "caption": Value("string")}))
    ds.save_to_disk(tmp_path / "caps")
    with pytest.raises(DatasetError, match="needs an image column and a ClassLabel column"):
        open_dataset(str(tmp_path / "caps"))


@pytest.mark.parametrize("spec, message", [
    ("imagenett", "unknown dataset 'imagenett'"),
    ("./no/such/folder", "does not exist"),
    ("someone/not-a-dataset", "not reachable"),
])
def test_unknown_dataset_is_one_line(spec, message):
    with pytest.raises(DatasetError, match=message):
        open_dataset(spec)


def test_stream_select_fills_quotas_and_caches(tmp_path):
    from vlmcls.imagenet_hub import _cached, stream_select

    rows = ({"label": i % 4, "image": {"bytes": jpeg((i, 0, 0)), "path": f"ILSVRC2012_val_{i:08d}.JPEG"}} for i in range(100))
    got = stream_select(rows, {0: 2, 1: 2, 2: 1, 3: 0}, tmp_path)
    assert Counter(s.label for s in got) == {0: 2, 1: 2, 2: 1}
    assert _cached(tmp_path) == got and got[0].sample_id == "ILSVRC2012_val_00000000"


# ---------------------------------------------------------------------------------- folders that are not datasets
def images(folder, names, color=(200, 30, 30)):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(jpeg(color))


def one_line(spec) -> str:
    with pytest.raises(DatasetError) as info:
        open_dataset(str(spec))
    text = str(info.value)
    assert "\n" not in text
    return text


def test_a_folder_of_code_names_what_it_holds_and_the_layouts(tmp_path):
    code = tmp_path / "bench"
    (code / "measured").mkdir(parents=True)
    for name in ("test_classify.py", "test_micro.py", "perf_nli.py"):  # "test*" files made datasets see a test split
        (code / name).write_text("x = 1\n")
    (code / "measured" / "h100.jsonl").write_text("{}\n")
    text = one_line(code)
    assert "holds no images (found 4 files: 3 .py, 1 .jsonl; 1 subfolder)" in text
    assert "DIR/val/<synset>/*.JPEG" in text and "DIR:SPLIT" in text


def test_an_empty_folder_says_it_is_empty(tmp_path):
    (tmp_path / "empty").mkdir()
    assert f"dataset folder '{tmp_path / 'empty'}' is empty; expected DIR/val/<synset>" in one_line(tmp_path / "empty")


def test_a_file_that_is_not_parquet_is_one_line(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    assert "is a file, not a dataset" in one_line(tmp_path / "notes.txt")


def test_an_image_folder_with_one_split_scores_it_under_its_own_name(tmp_path):
    images(tmp_path / "pets" / "test" / "cat", ["a.png", "b.png"])
    images(tmp_path / "pets" / "test" / "dog", ["c.png"], (0, 90, 0))
    src = open_dataset(str(tmp_path / "pets"))  # a test split only: no longer "has no split 'train'"
    assert src.annotations == ("cat", "dog") and src.size == 3
    assert src.split is None and data.dataset_name(str(tmp_path / "pets"), src) == str(tmp_path / "pets")
    assert open_dataset(f"{tmp_path / 'pets'}:test").size == 3


def test_synset_folders_under_a_train_split_only_name_the_split(tmp_path):
    images(tmp_path / "fake2" / "train" / "n01440764", ["a.JPEG"])  # one class: an image folder would have no labels
    text = one_line(tmp_path / "fake2")
    assert text.endswith(f"has no split 'val'; it has ['train'] — use --dataset {tmp_path / 'fake2'}:train")
    images(tmp_path / "fake2" / "train" / "n01443537", ["b.JPEG"])  # two classes: never read as classes 'n0...'
    assert "has no split 'val'" in one_line(tmp_path / "fake2")
    src = open_dataset(f"{tmp_path / 'fake2'}:train")
    assert src.annotations == labels.imagenet_annotations() and src.size == 2


def test_images_without_class_folders_say_how_to_lay_them_out(tmp_path):
    images(tmp_path / "flat", ["a.jpg", "b.jpg"])
    text = one_line(tmp_path / "flat")
    assert "needs an image column and a ClassLabel column" in text and "one subfolder per class, at least two" in text


def test_what_datasets_cannot_read_becomes_one_line(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "part.parquet").write_bytes(b"not parquet at all")
    text = one_line(tmp_path / "broken")
    assert text.startswith(f"dataset '{tmp_path / 'broken'}' could not be read as parquet (") and "DIR:SPLIT" in text


def test_pytest_bench_on_a_folder_that_is_no_dataset_is_one_error_line(pytester: pytest.Pytester):
    from pathlib import Path

    bench = Path(__file__).resolve().parents[1] / "bench" / "test_classify.py"
    (pytester.path / "bench").mkdir()
    (pytester.path / "bench" / "test_classify.py").write_text(bench.read_text())
    (pytester.path / "empty").mkdir()
    for folder, says in (("bench", "holds no images (found "), ("empty", "is empty; ")):
        out = pytester.runpytest_subprocess("bench", "--dataset", folder, "-k", "smoke-echo", "-p", "no:cacheprovider")
        assert out.ret == pytest.ExitCode.USAGE_ERROR
        errors = [line for line in out.errlines if line.startswith("ERROR:")]
        assert len(errors) == 1 and errors[0].startswith(f"ERROR: dataset folder '{folder}' {says}")
        assert errors[0].endswith(data.LAYOUTS)
        assert "INTERNALERROR" not in out.stdout.str() + out.stderr.str()
