"""Dataset sources -> Samples, and seeded stratified subsets.

`--dataset` accepts:
  sample               the bundled offline sample (synthetic images, real ImageNet class ids)
  imagenet             ILSVRC/imagenet-1k validation from the hub (gated: HF_TOKEN), streamed
  PATH                 an ImageNet synset folder (PATH/n01440764/*.JPEG, or PATH/val/n0.../),
                       a folder saved with `save_to_disk`, or a .parquet file / folder of them
  PATH:SPLIT           the same, one split of it (a DatasetDict's split, or PATH/SPLIT/n0.../)
  HUB_ID[/CONFIG][:SPLIT]  any hub dataset with an image column and a ClassLabel column
"""
from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from typing import Sequence

from . import labels as labels_mod
from .sources import DatasetError, Source, hub_error, quotas, seed_key
from .types import Sample

BUNDLED = Path(__file__).parent / "data" / "sample.parquet"
SYNSET = re.compile(r"^n\d{8}$")
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
LAYOUTS = ("expected DIR/val/<synset>/*.JPEG (ImageNet), an image folder DIR/<split>/<class>/<image> "
           "(DIR:SPLIT picks the split), a save_to_disk folder, or .parquet files")


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

    return Source("sample", labels_mod.imagenet_annotations(), select, len(index))


def _synset_folder(root: Path, split: str | None = None) -> Source:
    if split is not None:
        splits = _synset_splits(root)
        if split not in splits:
            raise _no_split(split, splits, str(root))
        root = root / split
    elif (root / "val").is_dir():
        root = root / "val"
    position = {s: i for i, s in enumerate(labels_mod.imagenet_synsets())}  # ImageNet order, not alphabetical
    unknown = sorted(d.name for d in root.iterdir() if d.is_dir() and d.name not in position)
    if unknown:
        raise DatasetError(f"{root}: folders {unknown[:3]} are not ImageNet-1k synsets")
    files = sorted(f for d in root.iterdir() if d.is_dir() for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DatasetError(f"{root}: no images found in its synset folders (expected {root}/n01440764/*.JPEG)")
    index = [(f"{f.parent.name}/{f.name}", position[f.parent.name]) for f in files]

    def select(k: int | None, seed: int) -> list[Sample]:
        return [Sample(index[p][0], index[p][1], str(files[p])) for p in stratified(index, k, seed, str(root))]

    return Source(str(root), labels_mod.imagenet_annotations(), select, len(index))


def _columns(features, name: str, hint: str = "") -> tuple[str, str]:
    from datasets import ClassLabel, Image

    image = next((c for c, f in features.items() if isinstance(f, Image)), None)
    label = next((c for c, f in features.items() if isinstance(f, ClassLabel)), None)
    if image is None or label is None:
        raise DatasetError(f"dataset {name!r} needs an image column and a ClassLabel column; it has "
                           f"{dict((c, type(f).__name__) for c, f in features.items())}{hint}")
    return image, label


def _image_payload(value: dict, name: str) -> bytes | str:
    if value.get("bytes"):
        return value["bytes"]
    if value.get("path") and os.path.exists(value["path"]):
        return value["path"]
    return b""  # decodes to a clear error row, never a silently lost sample


def _from_hf(ds, name: str, hint: str = "") -> Source:
    """An in-memory / memory-mapped datasets.Dataset with image + ClassLabel columns."""
    from datasets import Image

    image_col, label_col = _columns(ds.features, name, hint)
    ds = ds.cast_column(image_col, Image(decode=False))
    labels = ds[label_col]
    paths = [(v or {}).get("path") for v in ds.select_columns([image_col])[image_col]] if len(ds) < 200_000 else []
    ids = [Path(p).name if p else f"row{i:07d}" for i, p in enumerate(paths or [None] * len(ds))]
    if len(set(ids)) != len(ids):
        ids = [f"row{i:07d}" for i in range(len(ds))]
    index = list(zip(ids, labels))

    def select(k: int | None, seed: int) -> list[Sample]:
        pos = stratified(index, k, seed, name)
        rows = ds.select(pos)
        return [Sample(ids[p], labels[p], _image_payload(r[image_col] or {}, name)) for p, r in zip(pos, rows)]

    return Source(name, tuple(ds.features[label_col].names), select, len(index))


def _local_hf(path: Path, split: str | None = None) -> Source:
    from datasets import DatasetDict

    saved = (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()
    ds, kind = _load_local(path, saved)
    name = f"{path}:{split}" if split else str(path)
    if isinstance(ds, DatasetDict):
        # Without a chosen split, parquet files and image folders give "train" (as they always did),
        # a saved DatasetDict its validation, else test, else train split.
        ds = ds[_pick_split(list(ds), split, str(path), default=None if saved else "train")]
    elif split:
        raise DatasetError(f"dataset {str(path)!r} has no split {split!r}: it is a single dataset, drop ':{split}'")
    hint = "; an image folder needs one subfolder per class, at least two, e.g. DIR/<split>/<class>/<image>"
    return _from_hf(ds, name, hint if kind == "an image folder" else "")


def _load_local(path: Path, saved: bool):
    """(the local dataset, whole: a Dataset or a DatasetDict, and what it was read as). Any failure of
    `datasets` on a folder that is not a dataset becomes one DatasetError line naming the layouts."""
    from datasets import load_dataset, load_from_disk

    if saved:
        kind, load = "a save_to_disk folder", lambda: load_from_disk(str(path))
    elif path.suffix == ".parquet" or (path.is_dir() and any(path.glob("*.parquet"))):
        files = [str(path)] if path.is_file() else sorted(map(str, path.glob("*.parquet")))
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


def _pick_split(splits: list[str], wanted: str | None, name: str, default: str | None = None) -> str:
    for s in ([wanted or default] if wanted or default else ["validation", "val", "test", "train"]):
        if s in splits:
            return s
    raise _no_split(wanted or default or "validation/test/train", splits, name)


def _no_split(wanted: str, splits: list[str], name: str) -> DatasetError:
    """The split is not there: name the ones that are, and how to pick one."""
    use = f" — use --dataset {name}:{splits[0]}" if len(splits) == 1 else (
        f" — pick one with --dataset {name}:SPLIT" if splits else "")
    return DatasetError(f"dataset {name!r} has no split {wanted!r}; it has {splits}{use}")


def _hub(spec: str) -> Source:
    from datasets import load_dataset

    from datasets import DatasetDict

    name, _, split = spec.partition(":")
    owner, repo, *config = name.split("/")  # HUB_ID[/CONFIG][:SPLIT], e.g. frgfm/imagenette/320px:validation
    name = f"{owner}/{repo}"
    try:
        ds = load_dataset(name, config[0] if config else None, split=split or None, token=os.environ.get("HF_TOKEN"))
    except Exception as exc:
        raise DatasetError(hub_error(name, exc)) from None
    if isinstance(ds, DatasetDict):  # no split named: validation, else test, else train
        ds = ds[_pick_split(list(ds), None, spec.partition(":")[0])]
    return _from_hf(ds, spec)


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


def _has_synsets(folder: Path) -> bool:
    return any(SYNSET.match(d.name) for d in folder.iterdir() if d.is_dir())


def _synset_splits(root: Path) -> list[str]:
    """Subfolders of `root` laid out as synset folders (PATH/val/n01440764/...): its splits."""
    return sorted(d.name for d in root.iterdir() if d.is_dir() and not SYNSET.match(d.name) and _has_synsets(d))


def _local(path: Path, split: str | None) -> Source:
    if not path.is_dir():
        return _local_hf(path, split)
    if split is None:
        root = path / "val" if (path / "val").is_dir() else path
        if _has_synsets(root):
            return _synset_folder(path)
        if _synset_splits(path):  # PATH/train/n0.../ only: say so, never read it as an image folder
            return _synset_folder(path, "val")
        return _local_hf(path)
    if _has_synsets(path) or _synset_splits(path):
        return _synset_folder(path, split)
    return _local_hf(path, split)


def open_dataset(spec: str) -> Source:
    """The one entry point: a --dataset value -> a Source, or one DatasetError line."""
    if spec in ("sample", "", None):
        return _bundled()
    if spec in ("imagenet", "imagenet-1k"):
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
