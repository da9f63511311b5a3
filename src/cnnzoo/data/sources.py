"""Where images come from: a DATA argument that is a name or a path, resolved to raw datasets.

A source yields raw items ``(image, label)``: a ``uint8`` tensor ``C x H x W`` for the in-memory
digit sets (scikit-learn's digits, MNIST IDX files) and a PIL image for photos (image folders,
torchvision datasets). Transforms (``transforms.py``) turn either into the model's input. Every
problem a user can cause (a missing path, an empty folder, a single class, an unreadable image,
a dataset not downloaded) raises :class:`DataError` with one line saying what to do.
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DataError
from .folders import ImageFiles, image_folder

# name -> (torchvision class name, kind of images, the keyword that picks a split)
TORCHVISION_SETS = {
    "mnist": ("MNIST", "digits"),
    "fashion-mnist": ("FashionMNIST", "digits"),
    "cifar10": ("CIFAR10", "photo"),
    "cifar100": ("CIFAR100", "photo"),
    "flowers102": ("Flowers102", "photo"),
}
NAMES = ("digits", *TORCHVISION_SETS)


@dataclass
class DataSource:
    """Raw datasets of one DATA argument; ``val`` is None where the source has a single split."""

    spec: str
    kind: str  # 'digits' (small grey glyphs, affine augmentation) or 'photo' (crop/flip)
    classes: list[str]
    train: Dataset
    val: Dataset | None
    channels: int  # channels of the raw images: 1 or 3
    # (file, reason) of every image found unreadable before training (--check-images)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    test: Dataset | None = None  # a test split besides the held-out one (ROOT/test)
    val_name: str = ""  # what the held-out split is called in messages ('val', 'test')
    bad_shards: list[tuple[str, str]] = field(default_factory=list)  # (shard, reason) skipped

    @property
    def num_classes(self) -> int:
        return len(self.classes)


class ArrayDataset(Dataset):
    """Images held in memory as ``uint8 N x C x H x W`` with integer labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i])


def load_source(spec: str, *, root: str | os.PathLike | None = None, download: bool = False,
                check_images: bool = False, workers: int = 1, skip_bad_shards: bool = False,
                held_out: bool = False) -> DataSource:
    """Resolve DATA: a known name, WebDataset shards (a pattern or a folder of ``.tar``), a folder
    of IDX files or an image folder (``folders.py``: class folders, or split folders of them).
    ``held_out``: only scored (``--val-data``), so a single class is fine."""
    from .shards import is_shards, shard_source

    if spec == "digits":
        return _digits()
    if spec in TORCHVISION_SETS:
        return _torchvision(spec, Path(root or default_root()), download)
    if is_shards(spec):
        return shard_source(spec, skip_bad=skip_bad_shards, min_classes=1 if held_out else 2)
    path = Path(spec).expanduser()
    if not path.exists():
        raise DataError(f"no dataset named {spec!r} and no such path; use a path or one of: "
                        f"{', '.join(NAMES)}")
    if not path.is_dir():
        raise DataError(f"{path} is a file; DATA must be a folder (class sub-folders or MNIST IDX "
                        f"files), .tar shards, or one of: {', '.join(NAMES)}")
    if list(path.glob("*-images-idx3-ubyte*")):
        return _idx_folder(path)
    return image_folder(path, check=check_images, workers=workers,
                        min_classes=1 if held_out else 2)


def default_root() -> Path:
    return Path(os.environ.get("CNNZOO_DATA", Path.home() / ".cache" / "cnnzoo" / "data"))


def _digits() -> DataSource:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # 8x8 glyphs with 17 grey levels (0..16), stretched to the 0..255 of every other source.
    images = torch.from_numpy(np.round(bunch.images * (255 / 16)).astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    return DataSource("digits", "digits", [str(c) for c in bunch.target_names],
                      ArrayDataset(images, labels), None, channels=1)


def read_idx(path: Path) -> np.ndarray:
    """One IDX file (``.gz`` or raw): magic 2051 for images ``n x h x w``, 2049 for labels."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}") from None
    if len(data) < 8 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(dims)):
        raise DataError(f"{path} is truncated: header says {dims}, payload has "
                        f"{len(data) - offset} bytes")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def _idx_folder(path: Path) -> DataSource:
    splits = {}
    for images_file in sorted(path.glob("*-images-idx3-ubyte*")):
        prefix = images_file.name.split("-images-idx3-ubyte")[0]
        labels = sorted(path.glob(f"{prefix}-labels-idx1-ubyte*"))
        if not labels:
            raise DataError(f"{images_file} has no labels file {prefix}-labels-idx1-ubyte[.gz] "
                            f"beside it")
        x, y = read_idx(images_file), read_idx(labels[0])
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"{images_file.name} ({x.shape}) and {labels[0].name} ({y.shape}) "
                            f"do not match")
        splits[prefix] = ArrayDataset(torch.from_numpy(x.copy()).unsqueeze(1),
                                      torch.from_numpy(y.astype(np.int64)))
    # MNIST names its splits 'train' and 't10k'; a folder with only one is a single split.
    train = splits.pop("train", None)
    val = splits.pop("t10k", None) or splits.pop("test", None)
    if train is None:
        train, val = (val, None) if val is not None else (splits.popitem()[1], None)
    labels = torch.cat([train.labels] + ([val.labels] if val is not None else []))
    num_classes = int(labels.max()) + 1
    if len(torch.unique(labels)) < 2:
        raise DataError(f"{path} holds a single class; classification needs at least two")
    return DataSource(str(path), "digits", [str(c) for c in range(num_classes)], train, val, 1)


def _torchvision(name: str, root: Path, download: bool) -> DataSource:
    import torchvision.datasets as tvd

    cls_name, kind = TORCHVISION_SETS[name]
    cls = getattr(tvd, cls_name)
    split_kw = ((lambda s: {"split": "train" if s else "test"}) if name == "flowers102" else
                (lambda s: {"train": s}))
    try:
        train = cls(str(root), download=download, **split_kw(True))
        val = cls(str(root), download=download, **split_kw(False))
    except RuntimeError as exc:
        if "download=True" in str(exc) or "not found" in str(exc).lower():
            raise DataError(f"{name} is not in {root}; pass --download to fetch it (needs the "
                            f"network) or --data-root to point at a copy") from None
        raise DataError(f"cannot load {name} from {root}: {exc}") from None
    except OSError as exc:  # URLError, socket errors: offline with --download
        raise DataError(f"cannot download {name} into {root}: {exc}") from None
    if name == "flowers102":
        classes = [str(i) for i in range(102)]
    else:
        classes = [str(c).split(" - ")[-1] for c in train.classes]
    return DataSource(name, kind, classes, train, val, channels=1 if kind == "digits" else 3)


class Relabeled(Dataset):
    def __init__(self, base: Dataset, mapping: list[int]):
        self.base, self.mapping = base, mapping

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        image, label = self.base[i]
        return image, self.mapping[label]


def held_out_set(source: DataSource, classes: list[str]) -> Dataset:
    """The held-out images of ``--val-data``'s source (its own held-out split where it has one,
    else all of it), labelled in the training data's class order: by name, or by index where the
    held-out source names its classes by number (IDX files, shards without classes.txt)."""
    from .shards import ShardSet

    ds = source.val if source.val is not None else source.train
    if source.classes == classes[:len(source.classes)]:
        return ds
    index = {name: i for i, name in enumerate(classes)}
    if set(source.classes) <= set(index):
        mapping = [index[name] for name in source.classes]
    elif all(c.isdigit() for c in source.classes) and len(source.classes) <= len(classes):
        return ds
    else:
        extra = next(c for c in source.classes if c not in index)
        raise DataError(f"class {extra!r} of --val-data {source.spec} is not a class of the "
                        f"training data (its classes: {', '.join(classes[:8])}"
                        f"{', ...' if len(classes) > 8 else ''})")
    if isinstance(ds, ImageFiles):
        return ImageFiles([(f, mapping[label]) for f, label in ds.samples], classes)
    if isinstance(ds, ArrayDataset):
        return ArrayDataset(ds.images, torch.tensor(mapping)[ds.labels])
    if isinstance(ds, ShardSet):
        return ds.relabeled(mapping)
    return Relabeled(ds, mapping)
