"""Image folders as datasets ship them: one folder per class, or split folders holding those.

    ROOT/CLASS/*                              one split (held out with --val-split)
    ROOT/train/CLASS/* + ROOT/val/CLASS/*     val, valid or validation: the held-out set
    ROOT/train/CLASS/* + ROOT/test/CLASS/*    test: the held-out set where there is no val folder,
                                              and what `cnnzoo eval --split test` scores

Listing is a scan of names (``os.walk`` runs on ``os.scandir``); nothing is opened, so a folder of
a million files starts at once. A file that does not decode is found where it is read, in the
loader's workers (``loaders.py``), unless ``check`` validates every file up front, in parallel.
"""
from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from torch.utils.data import Dataset

from ..errors import DataError
from .images import check_image, open_image, shown

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
HELD_OUT_NAMES = ("val", "valid", "validation")
SPLIT_NAMES = ("train", *HELD_OUT_NAMES, "test")


class ImageFiles(Dataset):
    """``(image, class index)`` of files listed by name; a file that does not decode raises
    :class:`~cnnzoo.data.images.BadImage` where it is read."""

    def __init__(self, samples: list[tuple[str, int]], classes: list[str]):
        self.samples, self.classes = samples, classes

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        file, label = self.samples[i]
        return open_image(file), label

    def file_labels(self) -> list[int]:
        return [label for _, label in self.samples]


def default_workers() -> int:
    """Loader processes for photos: one per core this process may use, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


def _image_files(folder: Path, root: Path) -> list[str]:
    """Image files under ``folder``, sorted, following symbolic links but never into a folder
    already walked (a link to a parent would otherwise repeat every image dozens of times)."""
    def key(p) -> tuple[int, int] | None:
        try:
            st = os.stat(p)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    seen = {key(root)}
    files = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        k = key(dirpath)
        if k is None or k in seen:
            dirnames[:] = []
            continue
        seen.add(k)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files += [os.path.join(dirpath, f) for f in sorted(filenames)
                  if f.lower().endswith(IMAGE_SUFFIXES) and not f.startswith(".")]
    return files


def _class_dirs(path: Path) -> list[Path]:
    root_key = os.stat(path)
    with os.scandir(path) as entries:
        dirs = [Path(e.path) for e in entries if not e.name.startswith(".") and e.is_dir()]
    return sorted(d for d in dirs if not os.path.samestat(os.stat(d), root_key))


def _split_folders(path: Path) -> dict[str, Path] | None:
    """``{'train': ..., 'val': ..., 'test': ...}`` when ``path`` holds split folders, else None.
    Only a folder whose every sub-folder is a split name, ``train`` among them, counts: a dataset
    with a class named 'train' among 'bus' and 'car' stays a class-folder dataset."""
    subs = {d.name: d for d in _class_dirs(path)}
    if "train" not in subs or not set(subs) <= set(SPLIT_NAMES) or not _class_dirs(subs["train"]):
        return None
    held = [n for n in HELD_OUT_NAMES if n in subs]
    if len(held) > 1:
        raise DataError(f"{shown(path)} holds {' and '.join(held)}: keep one held-out folder")
    found = {"train": subs["train"]}
    if held:
        found["val"] = subs[held[0]]
    if "test" in subs:
        found["test"] = subs["test"]
    return found


def _classes_of(path: Path, min_classes: int = 2) -> tuple[list[str], dict[Path, list[str]]]:
    """Class names and files of a training folder, or one clear error."""
    class_dirs = _class_dirs(path)
    if not class_dirs:
        raise DataError(f"{shown(path)} has no class sub-folders (expected one folder per class "
                        f"holding its images, or MNIST IDX files)")
    found = {d: _image_files(d, path) for d in class_dirs}
    empty = [shown(d.name) for d, files in found.items() if not files]
    if not any(found.values()):
        raise DataError(f"{shown(path)} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    if empty:
        raise DataError(f"class folder(s) without images in {shown(path)}: {', '.join(empty[:5])}")
    if len(class_dirs) < min_classes:
        raise DataError(f"{shown(path)} holds a single class ({shown(class_dirs[0].name)}); "
                        f"classification needs at least two class folders")
    return [shown(d.name) for d in class_dirs], found


def _held_out(path: Path, train_dir: Path, classes: list[str]) -> list[tuple[str, int]]:
    """Samples of a held-out folder, labelled in the training folder's class order; a class
    missing here is fine, a class found only here is an error."""
    index = {name: i for i, name in enumerate(classes)}
    samples = []
    for d in _class_dirs(path):
        name = shown(d.name)
        if name not in index:
            raise DataError(f"class folder {name!r} of {shown(path)} is not a class of "
                            f"{shown(train_dir)} (class names come from the training folder)")
        samples += [(f, index[name]) for f in _image_files(d, path)]
    if not samples:
        raise DataError(f"{shown(path)} holds no images in class folders named as in "
                        f"{shown(train_dir)}")
    return samples


def check_files(samples: list[tuple[str, int]], workers: int) -> tuple[list, list]:
    """(decodable samples, [(file, reason)] of the others), checked by ``workers`` processes."""
    files = [f for f, _ in samples]
    if workers > 1 and len(files) > 64:
        with ProcessPoolExecutor(workers) as pool:
            reasons = list(pool.map(check_image, files, chunksize=256))
    else:
        reasons = [check_image(f) for f in files]
    good = [s for s, r in zip(samples, reasons) if r is None]
    bad = [(shown(f), r) for (f, _), r in zip(samples, reasons) if r is not None]
    return good, bad


def unusable_classes(classes: list[str], labels: list[int], bad_labels: list[int]) -> list[str]:
    """Classes all of whose files failed to decode."""
    total, bad = Counter(labels), Counter(bad_labels)
    return [classes[c] for c, n in total.items() if n and bad[c] >= n]


def image_folder(path: Path, *, check: bool = False, workers: int = 1, min_classes: int = 2):
    """A :class:`~cnnzoo.data.sources.DataSource` of a folder in any of the layouts above."""
    from .sources import DataSource

    splits = _split_folders(path) or {"train": path}
    classes, found = _classes_of(splits["train"], min_classes)
    train = [(f, label) for label, files in enumerate(found.values()) for f in files]
    held = {name: _held_out(splits[name], splits["train"], classes)
            for name in ("val", "test") if name in splits}
    skipped = []
    if check:
        train, skipped = check_files(train, workers)
        for name in held:
            held[name], bad = check_files(held[name], workers)
            skipped += bad
        labels = [label for _, label in train]
        missing = [c for i, c in enumerate(classes) if i not in set(labels)]
        if missing:
            raise DataError(f"no readable image in class folder(s) {', '.join(missing[:5])} of "
                            f"{shown(splits['train'])} ({len(skipped)} unreadable, e.g. "
                            f"{skipped[0][0]}: {skipped[0][1]})")
    val = held.get("val", held.get("test"))
    val_name = next((shown(splits[n].name) for n in ("val", "test") if n in splits), "")
    return DataSource(
        shown(path), "photo", classes, ImageFiles(train, classes),
        ImageFiles(val, classes) if val is not None else None, channels=3, skipped=skipped,
        test=ImageFiles(held["test"], classes) if "test" in held else None, val_name=val_name)
