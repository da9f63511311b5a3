"""WebDataset shards: tar files of samples, an image (``jpg``, ``png``, ``webp``) and its ``cls``.

DATA is a shard pattern (``train-{0000..0146}.tar``) or a folder of ``.tar`` files; class names
come from a ``classes.txt`` beside them (one per line), else classes are numbered. On start each
shard's headers and ``cls`` entries are read (no image is decoded): that gives the sample counts
the split below needs, and finds a truncated shard or a class index out of range before the first
step, in one line that names it.

Every epoch the shards are put in an order seeded by (seed, epoch) and read as one stream of N
samples. Rank ``r`` of ``W`` takes stream positions ``[r*M, (r+1)*M)`` with ``M = ceil(N/W)``
(the last rank wraps round to the start for the at most ``W-1`` samples it lacks, as the folder
sampler pads), so a rank opens only the few shards its range touches. Its ``ceil(M/B)`` batches go
to its loader workers in contiguous chunks whose batch counts follow the DataLoader's round robin
(worker ``w`` delivers batches ``w, w+K, ...``), so the batches come out in one fixed order. A run
resumed mid-epoch skips, in each worker's chunk, the batches already trained on and rotates the
workers so that the round robin goes on where it stopped: resume is exact at any step, provided
the run keeps its world size and workers (a resumed run does). Held-out shards are split the same
way without order or padding: every sample is scored once.
"""
from __future__ import annotations

import bisect
import copy
import io
import math
import re
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..errors import DataError
from .images import BadImage, open_image, shown

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")
CLASSES_FILE = "classes.txt"
_META = re.compile(r"__[^/]*__($|/)")


class ShardError(DataError):
    """A shard that cannot be read (skipped with --skip-bad-shards)."""


class SampleError(DataError):
    """A sample that cannot be used: no image, no class, a class that is not an index."""


def is_shards(spec: str) -> bool:
    if "{" in spec and ".tar" in spec or spec.endswith(".tar"):
        return True
    path = Path(spec).expanduser()
    return path.is_dir() and any(p.suffix == ".tar" for p in path.iterdir())


def expand(spec: str) -> list[Path]:
    """The shard files of a pattern (braces expanded by webdataset) or of a folder."""
    from webdataset.shardlists import expand_urls

    path = Path(spec).expanduser()
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix == ".tar")
    paths = [Path(p).expanduser() for p in expand_urls(spec)]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"shard {shown(missing[0])} not found"
                        f"{f' ({len(missing)} of {len(paths)} missing)' if len(missing) > 1 else ''}")
    return paths


def _key(name: str) -> tuple[str | None, str]:
    from webdataset.tariterators import base_plus_ext

    key, ext = base_plus_ext(name)
    return key, (ext or "").lower()


def _is_member(info: tarfile.TarInfo) -> bool:
    # The files webdataset's tar reader yields: regular files that are not metadata.
    return info.isreg() and not _META.match(info.name) and not (
        "/" not in info.name and info.name.startswith("__") and info.name.endswith("__"))


def _image(sample: dict):
    return next((k for k in IMAGE_KEYS if k in sample), None)


@dataclass
class ShardInfo:
    path: str
    samples: int
    lowest: tuple[int, str] = (0, "")  # (class, sample key) of the lowest and highest class
    highest: tuple[int, str] = (-1, "")


def scan(path: Path) -> ShardInfo:
    """Samples and class range of one shard, from its headers and ``cls`` entries."""
    info = ShardInfo(str(path), 0)
    try:
        with tarfile.open(path, "r:") as tar:
            key, sample = None, {}
            for member in tar:
                k, ext = _key(member.name) if _is_member(member) else (None, "")
                if k is None:
                    continue
                if k != key:
                    if sample:
                        _count(info, path, key, sample, tar)
                    key, sample = k, {}
                sample[ext] = member
            if sample:
                _count(info, path, key, sample, tar)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ShardError(f"shard {shown(path)} is truncated or not a tar file ({exc})") from None
    return info


def _count(info: ShardInfo, path: Path, key: str, sample: dict, tar: tarfile.TarFile) -> None:
    if _image(sample) is None or "cls" not in sample:
        what = "an image (jpg, png, webp)" if _image(sample) is None else "a cls entry"
        raise SampleError(f"sample {key!r} of shard {shown(path)} has no {what}")
    text = tar.extractfile(sample["cls"]).read().decode("utf-8", "replace").strip()
    try:
        cls = int(text)
    except ValueError:
        raise SampleError(f"sample {key!r} of shard {shown(path)}: cls {text[:20]!r} is not a "
                         f"class index") from None
    info.samples += 1
    if info.samples == 1 or cls < info.lowest[0]:
        info.lowest = (cls, key)
    if cls > info.highest[0]:
        info.highest = (cls, key)


def shard_source(spec: str, *, skip_bad: bool = False, min_classes: int = 2):
    """A :class:`~cnnzoo.data.sources.DataSource` of shards, checked as the module note says."""
    from .sources import DataSource

    paths = expand(spec)
    if not paths:
        raise DataError(f"{shown(spec)} holds no .tar shards")
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(_scan_or_error, paths))
    wrong = [r for r in results if isinstance(r, SampleError)]
    if wrong:
        raise wrong[0]
    bad = [(p, r) for p, r in zip(paths, results) if isinstance(r, ShardError)]
    if bad and not skip_bad:
        raise DataError(f"{bad[0][1]}; fix or remove it, or pass --skip-bad-shards"
                        f"{f' ({len(bad)} bad shards)' if len(bad) > 1 else ''}")
    shards = [r for r in results if isinstance(r, ShardInfo) and r.samples]
    if not shards:
        raise DataError(f"{shown(spec)}: no readable sample in its shards")
    low = min((s.lowest + (s.path,) for s in shards))
    high = max((s.highest + (s.path,) for s in shards))
    if low[0] < 0:
        raise DataError(f"sample {low[1]!r} of shard {shown(low[2])} has class {low[0]}; class "
                        f"indices start at 0")
    listed = paths[0].parent / CLASSES_FILE
    if listed.is_file():
        classes = [line.strip() for line in listed.read_text().splitlines() if line.strip()]
        if high[0] >= len(classes):
            raise DataError(f"sample {high[1]!r} of shard {shown(high[2])} has class {high[0]}, "
                            f"but {shown(listed)} lists {len(classes)} classes "
                            f"(0..{len(classes) - 1})")
    else:
        classes = [str(c) for c in range(high[0] + 1)]
    if len(classes) < min_classes:
        raise DataError(f"{shown(spec)} holds a single class; classification needs at least two")
    stream = ShardSet([(s.path, s.samples) for s in shards], classes)
    stream.skip_bad = skip_bad
    return DataSource(shown(spec), "photo", classes, stream, None, channels=3,
                      bad_shards=[(shown(p), str(r)) for p, r in bad])


def _scan_or_error(path: Path):
    try:
        return scan(path)
    except (ShardError, SampleError) as exc:
        return exc


def plan(counts: list[int], *, epoch: int, seed: int, rank: int, world: int, workers: int,
         batch: int, train: bool, start_step: int = 0) -> list[list[tuple[int, int, int, int]]]:
    """Per loader worker, the pieces of shards it reads: ``(shard, first sample, samples, stream
    position of the first)``; the module note says how they are chosen."""
    total = sum(counts)
    order = (torch.randperm(len(counts), generator=torch.Generator().manual_seed(seed + epoch))
             .tolist() if train else list(range(len(counts))))
    starts = [0]
    for j in order:
        starts.append(starts[-1] + counts[j])
    if train:
        size = math.ceil(total / world)
        lo = rank * size
    else:
        lo, size = rank * total // world, (rank + 1) * total // world - rank * total // world
    k = max(1, workers)
    batches = math.ceil(size / batch)
    per_worker = [len(range(w, batches, k)) for w in range(k)]
    chunks, at = [], 0
    for w in range(k):
        done = len(range(w, start_step, k))  # batches of this worker already trained on
        first, end = at + done * batch, min(size, at + per_worker[w] * batch)
        chunks.append(_pieces(lo + first, lo + max(first, end), total, order, starts, counts))
        at += per_worker[w] * batch
    # Worker 0 delivers the next batch: the one the round robin had reached.
    return [chunks[(w + start_step) % k] for w in range(k)]


def _pieces(a: int, b: int, total: int, order, starts, counts):
    out = []
    while a < b:
        p = a % total
        j = bisect.bisect_right(starts, p) - 1
        take = min(b - a, starts[j] + counts[order[j]] - p)
        out.append((order[j], p - starts[j], take, p))
        a += take
    return out


class ShardSet(IterableDataset):
    """Shards read as the module note says; items are ``(image, label, notes)`` as the other
    datasets' (``loaders.TransformedSubset``)."""

    def __init__(self, shards: list[tuple[str, int]], classes: list[str]):
        self.shards, self.classes = shards, classes
        self.transform, self.train, self.mapping = None, False, None
        self.seed = self.rank = self.workers = self.epoch = self.start_step = 0
        self.world = self.batch = 1
        self.skip_bad = False

    def _with(self, **kw) -> "ShardSet":
        new = copy.copy(self)
        new.__dict__.update(kw)
        return new

    def transformed(self, transform, *, train: bool) -> "ShardSet":
        from .transforms import direct

        return self._with(transform=direct(transform), train=train)

    def relabeled(self, mapping: list[int]) -> "ShardSet":
        return self._with(mapping=mapping)

    def placed(self, *, seed: int, rank: int, world: int, workers: int, batch: int) -> "ShardSet":
        return self._with(seed=seed, rank=rank, world=world, workers=workers, batch=batch)

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start_step = epoch, start_step

    def __len__(self) -> int:
        """Samples this rank reads in an epoch."""
        total = sum(n for _, n in self.shards)
        if self.train:
            return math.ceil(total / self.world)
        return (self.rank + 1) * total // self.world - self.rank * total // self.world

    def __iter__(self):
        info = get_worker_info()
        worker = info.id if info is not None else 0
        pieces = plan([n for _, n in self.shards], epoch=self.epoch, seed=self.seed,
                      rank=self.rank, world=self.world, workers=self.workers, batch=self.batch,
                      train=self.train, start_step=self.start_step)[worker]
        # In training an unreadable sample's place goes to the next readable one, as in image
        # folders: every batch keeps its size, and which sample stands in depends on what
        # follows only, so a resumed epoch substitutes as the uninterrupted one did.
        waiting: list[tuple[int, list]] = []
        last = None
        for position, image, label, notes in self._read(pieces):
            if image is None and self.train and notes and notes[0][0] == "skip":
                waiting.append((position, notes))
            elif image is None:
                yield None, -1, notes
            elif not self.train:
                yield self.transform(image), label, notes
            else:
                for at, waited in waiting:
                    yield self._augment(image, at), label, waited
                waiting, last = [], (image, label)
                yield self._augment(image, position), label, notes
        for at, waited in waiting:  # nothing readable after them in this worker's share
            yield (self._augment(last[0], at), last[1], waited) if last else (None, -1, waited)

    def _augment(self, image, position: int):
        from .loaders import apply_seeded, sample_seed

        return apply_seeded(self.transform, image, sample_seed(self.seed, self.epoch, position))

    def _read(self, pieces):
        """``(stream position, image or None, label, notes)`` of the samples in ``pieces``."""
        for shard, first, take, position in pieces:
            path = self.shards[shard][0]
            try:
                for i, sample in enumerate(_samples(path, first, take)):
                    label = int(sample["cls"])
                    label = self.mapping[label] if self.mapping else label
                    try:
                        image = open_image(io.BytesIO(sample[_image(sample)]))
                    except BadImage as exc:
                        name = f"{shown(path)}:{sample['__key__']}"
                        yield position + i, None, label, [("skip", name, exc.reason, label)]
                        continue
                    yield position + i, image, label, []
            except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
                reason = str(exc).split(" @ ")[0] or type(exc).__name__
                if not self.skip_bad:
                    yield 0, None, -1, [("error", f"shard {shown(path)} cannot be read "
                                                  f"({reason}); fix or remove it, or pass "
                                                  f"--skip-bad-shards")]
                    return
                yield 0, None, -1, [("bad shard", shown(path), reason)]


def _samples(path: str, first: int, take: int):
    """Samples ``first .. first+take-1`` of a shard, through webdataset's tar reader (the ones
    before ``first`` are read past, not decoded)."""
    from webdataset.tariterators import group_by_keys, tar_file_iterator

    with open(path, "rb") as f:
        files = ({**item, "__url__": path} for item in tar_file_iterator(f))
        for i, sample in enumerate(group_by_keys(files)):
            if i >= first + take:
                return
            if i >= first:
                yield sample


_AS_IS = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".webp": "webp"}


def write_shards(samples: list[tuple[str, int]], out: Path, prefix: str, *, per_shard: int,
                 seed: int = 0) -> list[Path]:
    """Write ``samples`` (file, class index) as ``OUT/PREFIX-0000.tar ...``, in a seeded order so
    that every shard mixes the classes (shards are read in order). JPEG, PNG and WebP files go in
    as they are; other formats are converted to PNG."""
    from webdataset import ShardWriter

    order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(seed)).tolist()
    written = []
    with ShardWriter(str(out / f"{prefix}-%04d.tar"), maxcount=per_shard, verbose=0,
                     encoder=False, post=lambda name: written.append(Path(name))) as sink:
        for n, i in enumerate(order):
            file, label = samples[i]
            ext = _AS_IS.get(Path(file).suffix.lower())
            if ext is None:
                buf = io.BytesIO()
                open_image(file).save(buf, format="PNG")
                data, ext = buf.getvalue(), "png"
            else:
                data = Path(file).read_bytes()
            sink.write({"__key__": f"{n:08d}", ext: data, "cls": str(label).encode()})
    return written
