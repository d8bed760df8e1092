"""Dataset sources -> Samples, and seeded stratified subsets.

`--dataset` accepts:
  sample               the bundled offline sample (synthetic images, real ImageNet class ids)
  imagenet             ILSVRC/imagenet-1k validation from the hub (gated: HF_TOKEN), streamed
  PATH                 an image folder, one subfolder per class (PATH/<class>/*.jpg, or
                       PATH/<split>/<class>/...), an ImageNet synset folder (every class folder an
                       ImageNet-1k synset id: PATH/n01440764/*.JPEG, or PATH/val/n0.../), a folder saved
                       with `save_to_disk`, or a .parquet file / folder of them
  PATH:SPLIT           the same, one split of it (a DatasetDict's split, or PATH/SPLIT/n0.../)
  HUB_ID[/CONFIG][:SPLIT]  any hub dataset with an image column and a ClassLabel column

Without a split named, every kind scores validation, else val, else test, else train; where that was a
choice among several splits, the run's dataset name carries it (`DIR:test`: results.json, the report
and the store key say which) and a dataset note says so.
"""
from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from . import labels as labels_mod
from .sources import IMAGENET_NAMES, DatasetError, Source, hub_error, quotas, seed_key
from .types import Sample

BUNDLED = Path(__file__).parent / "data" / "sample.parquet"
SYNSET = re.compile(r"^n\d{8}$")
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".jfif", ".jpe", ".jp2", ".j2k",
                  ".apng", ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".ico", ".psd"}
LAYOUTS = ("expected DIR/val/<synset>/*.JPEG (ImageNet), an image folder DIR/<split>/<class>/<image> "
           "(DIR:SPLIT picks the split), a save_to_disk folder, or .parquet files")
# the words `datasets` reads a split from in a file name (datasets.data_files.SPLIT_KEYWORDS)
SPLIT_WORDS = {"train": "train|training", "validation": "validation|valid|dev|val", "test": "test|testing|eval|evaluation"}
SMALL_CLASS = 5  # fewer images than this: a class whose recall can only be 0, 1/4, ... (the Dataset section lists it)


# ----------------------------------------------------------------------------- subsets
def stratified(index: Sequence[tuple[str, int]], k: int | None, seed: int, what: str = "the dataset") -> list[int]:
    """Positions of a seeded stratified subset of (sample_id, label) pairs; k=None takes all.

    `--samples 10000` on ImageNet's 50,000 validation images gives 10 per class, as in the study.
    Output is interleaved across classes, so any prefix of a run covers many classes."""
    if k is not None and k > len(index):
        raise DatasetError(f"--samples {k} exceeds the {len(index)} images of {what}; use --samples {len(index)} or less")
    by_class: dict[int, list[int]] = {}
    for pos, (_, label) in enumerate(index):
        by_class.setdefault(label, []).append(pos)
    for members in by_class.values():
        members.sort(key=lambda p: seed_key(seed, index[p][0]))
    want = quotas({c: len(m) for c, m in by_class.items()}, len(index) if k is None else k, seed)
    picked = [(rank, seed_key(seed, f"class:{c}"), by_class[c][rank]) for c, n in want.items() for rank in range(n)]
    return [pos for _, _, pos in sorted(picked)]


# ----------------------------------------------------------------------------- sources
def _bundled() -> Source:
    import pyarrow.parquet as pq

    table = pq.read_table(BUNDLED)
    ids, labels, images = (table.column(c).to_pylist() for c in ("sample_id", "label", "image"))
    index = list(zip(ids, labels))

    def select(k: int | None, seed: int) -> list[Sample]:
        return [Sample(ids[p], labels[p], images[p]) for p in stratified(index, k, seed, "the bundled sample")]

    return Source("sample", labels_mod.imagenet_annotations(), select, len(index), class_sizes=Counter(labels))


def _synset_folder(root: Path, split: str | None = None) -> Source:
    base, picked = root, None
    if split is not None:
        splits = _synset_splits(root)
        if split not in splits:
            raise _no_split(split, splits, str(root))
        root = root / split
    elif (root / "val").is_dir():
        others = [s for s in _synset_splits(root) if s != "val"]
        picked = "val" if others else None  # a choice among several splits: the run's name says it
        root = root / "val"
    position = {s: i for i, s in enumerate(labels_mod.imagenet_synsets())}  # ImageNet order, not alphabetical
    # hidden folders (.ipynb_checkpoints) are no classes: skipped, as _has_synsets and `datasets` skip them
    unknown = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") and d.name not in position)
    if unknown:  # only a split named by hand gets here (an unnamed tree with such folders is an image folder)
        shown = ", ".join(unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
        raise DatasetError(f"{root}: {_count(len(unknown), 'folder')} ({shown}) {'is' if len(unknown) == 1 else 'are'} "
                           "not ImageNet-1k synsets; a tree of "
                           "synset folders must hold only ImageNet-1k ids (n01440764 ...); to use your own class "
                           "names, name no folder like a synset (n########)")
    folders = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    files = sorted(f for d in folders for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DatasetError(f"{root}: no images found in its synset folders (expected {root}/n01440764/*.JPEG)")
    index = [(f"{f.parent.name}/{f.name}", position[f.parent.name]) for f in files]

    def select(k: int | None, seed: int) -> list[Sample]:
        return [Sample(index[p][0], index[p][1], str(files[p])) for p in stratified(index, k, seed, str(root))]

    sizes = Counter(label for _, label in index)
    notes = [_split_note(str(base), sorted([*others, "val"]), "val")] if picked else []
    if len(sizes) < 1000:  # a subset of ImageNet's classes: its label set is still all 1,000 of them
        notes.append(f"read as ImageNet synset folders: the label set is all 1,000 ImageNet-1k classes, so "
                     f"distractors come from all of them and N = all means 1000, not {len(sizes)}; for a closed set "
                     "of these classes, save them as a datasets ClassLabel dataset (README: Your own images)")
    ignored = tuple(d.name for d in folders if position[d.name] not in sizes)
    return Source(str(root), labels_mod.imagenet_annotations(), select, len(index), notes=tuple(notes),
                  split=picked, class_sizes=sizes, ignored=ignored)


def _columns(features, name: str, hint: str = "") -> tuple[str, str]:
    from datasets import ClassLabel, Image

    image = next((c for c, f in features.items() if isinstance(f, Image)), None)
    label = next((c for c, f in features.items() if isinstance(f, ClassLabel)), None)
    if image is None or label is None:
        raise DatasetError(f"dataset {name!r} needs an image column and a ClassLabel column; it has "
                           f"{dict((c, type(f).__name__) for c, f in features.items())}{hint or _convert_hint(features, image, label)}")
    return image, label


def _convert_hint(features, image: str | None, label: str | None) -> str:
    """How to make a plain table (pandas' to_parquet: labels as strings, images as {bytes, path}) a dataset."""
    from datasets import Value

    steps = []
    if image is None:
        col = next((c for c, f in features.items() if isinstance(f, dict) and {"bytes", "path"} <= set(f)), None)
        steps += [f".cast_column({col!r}, datasets.Image())"] if col else []
    if label is None:
        col = next((c for c, f in features.items() if isinstance(f, Value) and "label" in c.lower()), None)
        col = col or next((c for c, f in features.items() if isinstance(f, Value) and f.dtype in ("string", "large_string")), None)
        steps += [f".class_encode_column({col!r})"] if col else []
    if not steps:
        return ""
    return (f"; convert it with datasets: ds = datasets.load_dataset('parquet', data_files=...)['train']{''.join(steps)}, "
            "then ds.save_to_disk(DIR) and pass --dataset DIR")


def _image_payload(value: dict, name: str) -> bytes | str:
    if value.get("bytes"):
        return value["bytes"]
    if value.get("path"):  # a missing file decodes to "image file not found: <path>", one error row
        return value["path"]
    return b""  # decodes to a clear error row, never a silently lost sample


def _from_hf(ds, name: str, hint: str = "", image_folder: bool = False) -> Source:
    """An in-memory / memory-mapped datasets.Dataset with image + ClassLabel columns."""
    from datasets import Image

    image_col, label_col = _columns(ds.features, name, hint)
    ds = ds.cast_column(image_col, Image(decode=False))
    labels = ds[label_col]
    paths, missing = _paths(ds, image_col) if len(ds) < 200_000 else ([], [])
    ids = sample_ids(paths, len(ds))
    index = list(zip(ids, labels))

    def select(k: int | None, seed: int) -> list[Sample]:
        pos = stratified(index, k, seed, name)
        rows = ds.select(pos)
        return [Sample(ids[p], labels[p], _image_payload(r[image_col] or {}, name)) for p, r in zip(pos, rows)]

    notes = (_missing_note(missing, len(paths)),) if missing else ()
    ignored = _empty_class_folders(paths) if image_folder else ()
    skipped = _skipped_files(paths) if image_folder else ""
    notes += (skipped,) if skipped else ()
    return Source(name, tuple(ds.features[label_col].names), select, len(index), notes=notes,
                  class_sizes=Counter(labels), ignored=ignored, synonyms=not image_folder)


def _paths(ds, image_col: str) -> tuple[list[str | None], list[str]]:
    """(each row's image path, or None; the paths of rows without image bytes whose file does not exist
    from here). Read as Arrow columns: the image bytes are not copied."""
    column = ds.select_columns([image_col]).with_format("arrow")[:].column(image_col).combine_chunks()
    paths = column.field("path").to_pylist()
    embedded = column.field("bytes").is_valid().to_pylist()
    missing = [p for p, b in zip(paths, embedded) if p and not b and not os.path.exists(p)]
    return paths, missing


def _missing_note(missing: list[str], total: int) -> str:
    return (f"{_count(len(missing), 'image path')} of {total} stored in the dataset (not the images themselves) "
            f"do not exist from the folder pytest ran in, e.g. {missing[0]}: each is an error row (image file not "
            "found); relative paths are read from there. Dataset.to_parquet keeps image paths, "
            "save_to_disk embeds the images")


def sample_ids(paths: Sequence[str | None], n: int) -> list[str]:
    """Each row's sample id: its file name; where names repeat across class folders (img_0.jpg in each),
    its path from the folder that holds them all ('tabby cat/img_0.jpg'); else its row ('row0000044').
    Unique file names stay the ids, so runs stored with them keep their answers and candidate sets."""
    ids = [Path(p).name if p else f"row{i:07d}" for i, p in enumerate(paths or [None] * n)]
    if len(set(ids)) == len(ids):
        return ids
    relative = _relative(paths)
    if relative is not None and len(set(relative)) == len(relative):
        return relative
    return [f"row{i:07d}" for i in range(n)]


def _relative(paths: Sequence[str | None]) -> list[str] | None:
    """Paths relative to the deepest folder above all of them, '/'-separated; None when some row has
    no path, or absolute and relative paths are mixed."""
    if not paths or not all(paths):
        return None
    try:
        root = os.path.commonpath([os.path.dirname(p) for p in paths]) or "."
        return [Path(os.path.relpath(p, root)).as_posix() for p in paths]
    except ValueError:
        return None


def _empty_class_folders(paths: Sequence[str | None]) -> tuple[str, ...]:
    """Subfolders of an image folder's class root (the split's folder) that hold no image: `datasets`
    leaves them out of the classes without a word, so the Dataset section names them."""
    folders = {os.path.dirname(os.path.dirname(p)) for p in paths if p}
    try:
        root = Path(os.path.commonpath(list(folders))) if folders else None
    except ValueError:
        return ()
    if root is None or not root.is_dir():
        return ()
    return tuple(sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") and _no_images(d)))


def _skipped_files(paths: Sequence[str | None]) -> str:
    """Files in the class folders that `datasets` did not read as images (.heic, .avif, .txt ...), counted."""
    read = {os.path.abspath(p) for p in paths if p}
    folders = {os.path.dirname(p) for p in read}
    try:
        root = Path(os.path.commonpath([os.path.dirname(f) for f in folders])) if folders else None
    except ValueError:
        return ""
    if root is None or not root.is_dir():
        return ""
    kinds: Counter = Counter()
    for d in root.iterdir():
        if d.is_dir() and not d.name.startswith("."):
            for f in d.iterdir():
                if f.is_file() and not f.name.startswith(".") and str(f.absolute()) not in read:
                    kinds[f.suffix.lower() or "no suffix"] += 1
    if not kinds:
        return ""
    return (f"{_count(sum(kinds.values()), 'file')} in the class folders not read as images, left out: "
            + ", ".join(f"{n} {s}" for s, n in kinds.most_common()))


def _local_hf(path: Path, split: str | None = None) -> Source:
    from datasets import DatasetDict

    saved = (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()
    ds, kind = _load_local(path, saved)
    name, picked, notes = f"{path}:{split}" if split else str(path), None, ()
    if isinstance(ds, DatasetDict) and split and split not in ds and _no_split_named(path, kind, list(ds)):
        raise DatasetError(f"dataset {str(path)!r} has no splits ({'its class folders are directly in it' if kind == 'an image folder' else 'no file name says one'}"
                           f"; `datasets` calls the whole of it 'train'): drop ':{split}'")
    if isinstance(ds, DatasetDict):
        # Without a chosen split, every kind scores validation, else val, else test, else train (image folders
        # and parquet gave "train" before: DIR/train + DIR/test scored the training images, silently).
        chosen = _pick_split(list(ds), split, str(path))
        if split is None and len(ds) > 1:  # chosen for the user: the name and a note say which
            picked, name, notes = chosen, f"{path}:{chosen}", (_split_note(str(path), list(ds), chosen),)
        ds = ds[chosen]
    elif split:
        raise DatasetError(f"dataset {str(path)!r} has no split {split!r}: it is a single dataset, drop ':{split}'")
    folder = kind == "an image folder"
    hint = "; an image folder needs one subfolder per class, at least two, e.g. DIR/<split>/<class>/<image>"
    if folder:
        ds = _encode_text_labels(ds)
        csvs = sorted(p.name for p in path.glob("*.csv") if p.name != "metadata.csv")
        if csvs:
            hint += (f"; {csvs[0]} is not read: `datasets` takes a flat folder's labels from a metadata.csv with a "
                     "file_name column (rename it and its file column), or move each image into its class's folder")
        hint += _metadata_hint(path)
    source = _from_hf(ds, name, hint if folder else "", image_folder=folder)
    return replace(source, split=picked, notes=notes + source.notes)


def _metadata_hint(path: Path) -> str:
    """A metadata.csv whose class column has another name than `label`: its classes stay text, never classes."""
    import csv

    meta = next(iter(sorted(path.glob("metadata.csv")) + sorted(path.glob("*/metadata.csv"))), None)
    if meta is None:
        return ""
    try:
        with open(meta, newline="", encoding="utf-8-sig") as f:
            header = [c.strip() for c in next(csv.reader(f), [])]
    except (OSError, UnicodeDecodeError):
        return ""
    others = [c for c in header if c != "file_name"]
    if "label" in header or not others:
        return ""
    return (f"; {meta.relative_to(path)} holds no column named `label`, the one whose text becomes the classes "
            f"(it has {', '.join(others)}): rename the class column to label")


def _encode_text_labels(ds):
    """An image folder whose labels come from metadata.csv (file_name,label): the text column becomes the classes."""
    from datasets import ClassLabel, Value

    if any(isinstance(f, ClassLabel) for f in ds.features.values()):
        return ds
    col = next((c for c, f in ds.features.items() if c == "label" and isinstance(f, Value) and f.dtype in ("string", "large_string")), None)
    return ds.class_encode_column(col) if col else ds


def _split_note(name: str, splits: Sequence[str], chosen: str) -> str:
    return f"{name} has splits {', '.join(splits)}; scored {chosen} (pick one with --dataset {name}:SPLIT)"


def _load_local(path: Path, saved: bool):
    """(the local dataset, whole: a Dataset or a DatasetDict, and what it was read as). Any failure of
    `datasets` on a folder that is not a dataset becomes one DatasetError line naming the layouts."""
    from datasets import load_dataset, load_from_disk

    if saved:
        kind, load = "a save_to_disk folder", lambda: load_from_disk(str(path))
    elif path.suffix == ".parquet" or (path.is_dir() and any(path.glob("*.parquet"))) or _snapshot_data(path):
        files = _parquet_files(_snapshot_data(path) or path)
        kind, load = "parquet", lambda: load_dataset("parquet", data_files=files)
    elif path.is_file():
        raise DatasetError(f"dataset {str(path)!r} is a file, not a dataset; {LAYOUTS}")
    else:
        empty = _no_images(path)
        if empty:
            raise DatasetError(f"dataset folder {str(path)!r} {empty}; {LAYOUTS}")
        kind, load = "an image folder", lambda: load_dataset("imagefolder", data_dir=str(path))
    try:
        return load(), kind
    except Exception as exc:  # datasets raises ValueError, EmptyDatasetError, OSError, ... on odd folders
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise DatasetError(f"dataset {str(path)!r} could not be read as {kind} ({type(exc).__name__}: {text}); "
                           f"{LAYOUTS}") from None


def _no_split_named(path: Path, kind: str, splits: list[str]) -> bool:
    """The one split is the 'train' `datasets` gives a dataset that names none: class folders directly
    in DIR, or parquet files whose names say no split."""
    if splits != ["train"]:
        return False
    if kind == "an image folder":
        return not any(re.fullmatch(SPLIT_WORDS["train"], d) for d in _class_folders(path))
    return kind == "parquet" and isinstance(_parquet_files(_snapshot_data(path) or path), list)


def _snapshot_data(path: Path) -> Path | None:
    """A dataset as `hf download --repo-type dataset` leaves it: DIR/README.md, DIR/data/*.parquet."""
    data = path / "data"
    if path.is_dir() and not any(path.glob("*.parquet")) and data.is_dir() and any(data.glob("*.parquet")):
        return data
    return None


def _parquet_files(path: Path) -> list[str] | dict[str, list[str]]:
    """A .parquet file, or a folder's .parquet files: by split where every file's name says one
    (train-00000-of-00001.parquet, test.parquet: as `datasets` reads names), else all as one dataset."""
    files = [str(path)] if path.is_file() else sorted(map(str, path.glob("*.parquet")))
    by_split: dict[str, list[str]] = {}
    for f in files:
        split = next((s for s, words in SPLIT_WORDS.items() if re.search(rf"(^|[-._ 0-9])({words})([-._ 0-9]|$)", Path(f).stem)), None)
        if split is None:
            return files
        by_split.setdefault(split, []).append(f)
    return by_split if len(by_split) > 1 else files


def _no_images(folder: Path, limit: int = 20_000) -> str:
    """'' when an image lies somewhere under `folder`, else what the folder holds instead ("is empty",
    "holds no images (found 12 files: 6 .py, 6 .jsonl; 1 subfolder)"). Stops at the first image."""
    suffixes: Counter = Counter()
    subfolders = 0
    for _, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]  # datasets skips hidden files and folders too
        subfolders += len(dirs)
        for n in names:
            if n.startswith("."):
                continue
            suffix = Path(n).suffix.lower()
            if suffix in IMAGE_SUFFIXES:
                return ""
            suffixes[suffix or "no suffix"] += 1
        if sum(suffixes.values()) > limit:
            break
    if not suffixes and not subfolders:
        return "is empty"
    kinds = ", ".join(f"{n} {s}" for s, n in suffixes.most_common(4)) + (", ..." if len(suffixes) > 4 else "")
    files = f"{_count(sum(suffixes.values()), 'file')}: {kinds}" if suffixes else "no files"
    return f"holds no images (found {files}; {_count(subfolders, 'subfolder')})"


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'s' if n != 1 else ''}"


def _pick_split(splits: list[str], wanted: str | None, name: str) -> str:
    """The split named, else validation, else val, else test, else train: one rule for every kind."""
    for s in ([wanted] if wanted else ["validation", "val", "test", "train"]):
        if s in splits:
            return s
    raise _no_split(wanted or "validation/test/train", splits, name)


def _no_split(wanted: str, splits: list[str], name: str) -> DatasetError:
    """The split is not there: name the ones that are, and how to pick one."""
    use = f" — use --dataset {name}:{splits[0]}" if len(splits) == 1 else (
        f" — pick one with --dataset {name}:SPLIT" if splits else "")
    return DatasetError(f"dataset {name!r} has no split {wanted!r}; it has {splits}{use}")


def _hub(spec: str) -> Source:
    """A hub dataset: its split names are read first (metadata only), then only the split scored is
    downloaded (`load_dataset` without a split downloads every split: ImageNet's 140 GB train set for
    a validation run)."""
    from datasets import get_dataset_split_names, load_dataset

    given, _, split = spec.partition(":")
    owner, repo, *config = given.split("/")  # HUB_ID[/CONFIG][:SPLIT], e.g. frgfm/imagenette/320px:validation
    name, token = f"{owner}/{repo}", os.environ.get("HF_TOKEN")
    try:
        splits = list(get_dataset_split_names(name, config[0] if config else None, token=token))
    except Exception as exc:
        raise DatasetError(hub_error(name, exc)) from None
    chosen = _pick_split(splits, split or None, given)
    picked = chosen if not split and len(splits) > 1 else None  # chosen for the user: the name and a note say which
    try:
        ds = load_dataset(name, config[0] if config else None, split=chosen, token=token)
    except Exception as exc:
        raise DatasetError(hub_error(name, exc)) from None
    source = _from_hf(ds, f"{spec}:{picked}" if picked else spec)
    notes = (_split_note(spec, splits, chosen),) if picked else ()
    return replace(source, split=picked, notes=notes + source.notes)


def _local_path(spec: str) -> tuple[Path | None, str | None]:
    """(PATH, SPLIT) for an existing PATH or PATH:SPLIT; (None, None) when neither exists.
    A path that exists as given wins, so a folder whose name holds ':' still opens whole."""
    path = Path(spec).expanduser()
    if path.exists():
        return path, None
    head, sep, split = spec.rpartition(":")
    if sep and head and split and Path(head).expanduser().exists():
        return Path(head).expanduser(), split
    return None, None


def _class_folders(folder: Path) -> list[str]:
    return [d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")]


def _has_synsets(folder: Path) -> bool:
    """Every class folder is an ImageNet-1k synset id: only then is a tree read as ImageNet. One
    `n01440764` among plain names, or ImageNet-21k ids, make an image folder (its names the labels)."""
    names = _class_folders(folder)
    if not names or not all(SYNSET.match(n) for n in names):
        return False
    return set(names) <= set(labels_mod.imagenet_synsets())


def _synset_splits(root: Path) -> list[str]:
    """Subfolders of `root` laid out as synset folders (PATH/val/n01440764/...): its splits."""
    return sorted(d.name for d in root.iterdir() if d.is_dir() and not SYNSET.match(d.name) and _has_synsets(d))


def _synset_like(root: Path) -> str:
    """Why a tree with folders named like synsets is read as an image folder: '' when it has none."""
    splits = [root / d for d in _class_folders(root) if any(re.fullmatch(w, d) for w in SPLIT_WORDS.values())]
    for folder in [root, *splits]:  # the split folders only: listing every class folder reads every file name
        names = _class_folders(folder)
        like = sorted(n for n in names if SYNSET.match(n))
        if not like:
            continue
        known = set(labels_mod.imagenet_synsets())
        if len(like) < len(names):
            why = f"only {len(like)} of its {len(names)} class folders ({', '.join(like[:5])}) {'is' if len(like) == 1 else 'are'} named like a synset"
        else:
            other = [n for n in like if n not in known]
            why = (f"{_count(len(other), 'folder')} ({', '.join(other[:5])}{', ...' if len(other) > 5 else ''}) "
                   f"{'is' if len(other) == 1 else 'are'} not ImageNet-1k synset ids")
        return (f"{folder} was read as an image folder, its folder names the labels, not as ImageNet synset folders: "
                f"{why} (ImageNet's labels need every class folder to be an ImageNet-1k synset id)")
    return ""


def _local(path: Path, split: str | None) -> Source:
    if not path.is_dir():
        return _local_hf(path, split)
    if split is None:
        root = path / "val" if (path / "val").is_dir() else path
        if _has_synsets(root):
            return _synset_folder(path)
        if _synset_splits(path):  # PATH/train/n0.../ only: say so, never read it as an image folder
            return _synset_folder(path, "val")
        return _as_image_folder(_local_hf(path), path)
    synset_splits = _synset_splits(path)
    if (_has_synsets(path) and not (path / split).is_dir()) or split in synset_splits:
        return _synset_folder(path, split)
    if synset_splits:  # a synset tree without that split: name its own splits (val), not datasets' (validation)
        raise _no_split(split, synset_splits, str(path))
    return _as_image_folder(_local_hf(path, split), path)


def _as_image_folder(source: Source, path: Path) -> Source:
    """An image folder read from a tree with folders named like synsets says why it was not ImageNet."""
    why = _synset_like(path) if not source.synonyms else ""
    return replace(source, notes=(*source.notes, why)) if why else source


def open_dataset(spec: str) -> Source:
    """The one entry point: a --dataset value -> a Source, or one DatasetError line."""
    if spec in ("sample", "", None):
        return _bundled()
    if spec in IMAGENET_NAMES:
        from .imagenet_hub import imagenet_stream_source

        return imagenet_stream_source()
    path, split = _local_path(spec)
    if path is not None:
        return _local(path, split)
    if spec.startswith((".", "/", "~")):
        raise DatasetError(f"dataset path {spec!r} does not exist")
    if "/" not in spec.split(":")[0]:
        raise DatasetError(f"unknown dataset {spec!r}: use 'sample', 'imagenet', a local path, or a hub id like 'frgfm/imagenette/320px:validation'")
    return _hub(spec)


# ----------------------------------------------------------------------------- what the report says of the data
def dataset_name(spec: str, source: Source) -> str:
    """The run's name for `--dataset spec`: `spec:SPLIT` where the split was picked among several (results,
    report and store key then say which); the spec as given otherwise, so stored runs keep their key."""
    if source.split is None:
        return spec
    return f"{spec.rstrip('/') or spec}:{source.split}"


def describe(name: str, source: Source, labels, label_names: str | None = None) -> dict[str, Any]:
    """results.json's meta.dataset (JSON-safe), which the report's Dataset section renders: the classes and
    images, classes too small to measure, folders left out, and every note on how the data was read.
    `label_names`: the --label-names file the prompt labels came from."""
    sizes = dict(source.class_sizes)
    renames = labels_mod.renamed(source.annotations, labels)
    notes = list(source.notes) + ([_renamed_note(renames, labels.mode)] if renames else [])
    commas = [n for n in labels.names if "," in n]  # only a folder's name or a --label-names name holds one
    if commas:
        shown = ", ".join(map(repr, commas[:5])) + (f" and {len(commas) - 5} more" if len(commas) > 5 else "")
        notes.append(f"{len(commas)} prompt {'label holds' if len(commas) == 1 else 'labels hold'} a comma ({shown}), which "
                     "a prompt joining the candidates with commas ({labels}: thesis, label-only) shows like two candidates: "
                     "--label-names gives another name, --prompt numbered lists one per line")
    if label_names:
        plain = labels_mod.labelset(source.annotations, labels.mode, synonyms=source.synonyms).names
        moved = sum(a != b for a, b in zip(plain, labels.names))
        notes.append(f"prompt labels from --label-names {label_names}: {moved} of {len(labels)} classes named "
                     "differently from the dataset's own names (those still resolve an answer)")
    return {
        "name": name, "read_from": source.name, "classes": len(sizes) or None, "label_set": len(source.annotations),
        "images": source.size, "per_class": [min(sizes.values()), max(sizes.values())] if sizes else None,
        "small_classes": [[labels.names[c], n] for c, n in sorted(sizes.items(), key=lambda x: (x[1], x[0])) if n < SMALL_CLASS],
        "ignored_folders": list(source.ignored), "renamed": [list(r) for r in renames], "notes": notes,
    }


def _renamed_note(renames: Sequence[tuple[int, str, str]], mode: str) -> str:
    shown = "; ".join(f"{given!r} (class {i}) → {label!r}" for i, given, label in renames[:50])
    more = f"; and {len(renames) - 50} more (results.json: meta.dataset.renamed)" if len(renames) > 50 else ""
    why = ["a comma separates synonyms in a ClassLabel's names: the first is kept"] if any("," in g for _, g, _ in renames) else []
    if any(label.endswith(f"(class {i})") for i, _, label in renames):
        why.append("names the resolver cannot tell apart (case, accents, punctuation ignored) carry their class "
                   "id: often one class twice in the data")
    return f"prompt labels differ from the class names as given (--labels {mode}): {shown}{more}" + (
        f" ({'; '.join(why)})" if why else "")
