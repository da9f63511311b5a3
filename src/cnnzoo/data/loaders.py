"""Splits, transformed subsets and the (distributed) loaders a training run uses.

A single-split source is divided by a seeded permutation; the held-out indices are recorded in
the run folder so ``cnnzoo eval`` scores exactly the images training never saw. Every sampler is
seeded per epoch (``seed + epoch``) rather than drawn from a running generator, so a resumed run
walks the data in the same order as an uninterrupted one, and N processes together see the
batches one process would.

Augmentation draws from a generator seeded by (run seed, epoch, image) for each image, not from a
worker's running state: which worker process loads an image, and how many there are, changes
nothing, so a run resumed mid-epoch with ``--workers N`` repeats the uninterrupted one exactly.

Files are decoded where they are read, in the workers. Each item travels with notes: a file that
does not decode is named in a note and, in training, its place is taken by the next readable image
(every step keeps its batch size; in evaluation it is left out). :class:`NotedLoader` collects
the notes in the main process and raises the errors they carry as one line.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from ..errors import DataError
from .images import BadImage, shown
from .sources import ArrayDataset, DataSource
from .transforms import direct, split_tail

# Images in a row that may fail before a training set is taken to be unreadable as a whole.
MAX_BAD_IN_A_ROW = 64


def sample_seed(seed: int, epoch: int, index: int) -> int:
    return ((seed * 1_000_003 + epoch) * 1_000_000_007 + index) % (1 << 63)


def apply_seeded(transform, image, key: int):
    """``transform(image)`` drawing its random numbers from a generator seeded with ``key``,
    leaving the process's own generator as it was (in the main process it also serves dropout)."""
    # The CPU generator alone: torch.manual_seed also visits every accelerator's, at 100x the
    # cost of the seeding itself, and transforms draw on the CPU.
    generator = torch.default_generator
    state = generator.get_state()
    generator.manual_seed(key)
    try:
        return transform(image)
    finally:
        generator.set_state(state)


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded (train, val) index lists; ``val`` gets ``round(n * val_fraction)`` items."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"--val-split must be between 0 and 1, got {val_fraction}")
    n_val = max(1, int(round(n * val_fraction)))
    if n_val >= n:
        raise DataError(f"--val-split {val_fraction} leaves no training images out of {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(perm[n_val:]), sorted(perm[:n_val])


class TransformedSubset(Dataset):
    """``base`` restricted to ``indices`` and transformed; items are ``(image, label, notes)``.

    Indexed by ``(position, seed)`` (``SeededSampler``) in training, by a position in evaluation.
    ``substitute``: a file that does not decode gives way to the next readable one (training);
    otherwise its image is None and the batch leaves it out (evaluation).
    """

    def __init__(self, base: Dataset, indices: Sequence[int] | None, transform, *,
                 substitute: bool = False):
        self.base, self.transform, self.substitute = base, transform, substitute
        self._apply = direct(transform)
        self._head, self._tail = split_tail(self._apply)
        self.indices = list(range(len(base))) if indices is None else list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def file_labels(self) -> list[int] | None:
        """Labels of the items, where the base can tell them without decoding (image files)."""
        if not hasattr(self.base, "file_labels"):
            return None
        labels = self.base.file_labels()
        return [labels[i] for i in self.indices]

    def __getitem__(self, item):
        return self._read(item, self._apply)

    def __getitems__(self, items: list):
        """The items of a batch (the DataLoader's batched fetch), as ``__getitem__`` gives them:
        the per-pixel steps at the end of the transform (``transforms.split_tail``) run once on
        the batch rather than once an image.

        With ``transforms.DirectCompose``, one epoch of ``cnnzoo train lenet5`` on 12,000 JPEGs
        against ImageFolder + DataLoader (``PYTHONPATH=src python bench/data_pipeline.py
        --files 12000 --rounds 5``, 2 workers, 2-core EPYC shared, load 4.5-6): ratio 1.11 ->
        0.90; CPU time of the main process and its workers (median of 4 turns, load 5.6-6),
        cnnzoo 9.3 s against the peer's 11.6 s, where it was 12.2 s against 11.3 s."""
        if self._tail is None:
            return [self._read(item, self._apply) for item in items]
        out = [self._read(item, self._head) for item in items]
        kept = [k for k, (x, _, _) in enumerate(out) if x is not None]
        heads = [out[k][0] for k in kept]
        if heads and all(isinstance(x, torch.Tensor) for x in heads) and \
                len({(x.shape, x.dtype) for x in heads}) == 1:
            images = self._tail(torch.stack(heads)).unbind(0)
        else:
            images = [self._tail(x) for x in heads]
        for k, image in zip(kept, images):
            out[k] = (image, *out[k][1:])
        return out

    def _read(self, item, transform):
        i, key = item if isinstance(item, tuple) else (item, None)
        notes = []
        for attempt in range(min(len(self.indices), MAX_BAD_IN_A_ROW) if self.substitute else 1):
            at = self.indices[(i + attempt) % len(self.indices)]
            try:
                image, label = self.base[at]
            except BadImage as exc:
                label = self.base.samples[at][1] if hasattr(self.base, "samples") else -1
                notes.append(("skip", shown(exc.path), exc.reason, label))
                continue
            image = transform(image) if key is None else apply_seeded(transform, image, key)
            return image, label, notes
        if self.substitute:
            notes.append(("error", f"{len(notes)} images in a row cannot be read, e.g. "
                                   f"{notes[0][1]}: {notes[0][2]}; check the data "
                                   f"(--check-images lists every unreadable file)"))
        return None, -1, notes


def collate_noted(items):
    """``(images, labels, notes)`` of a batch of noted items, the left-out ones dropped."""
    notes = [n for item in items for n in item[2]]
    kept = [(x, y) for x, y, _ in items if x is not None]
    if not kept:
        return torch.empty(0), torch.empty(0, dtype=torch.long), notes
    images, labels = default_collate(kept)
    return images, labels, notes


class NotedLoader:
    """A DataLoader whose batches carry notes: yields ``(images, labels)``, keeps the files that
    did not decode in ``skipped`` (file -> (reason, label)) and raises a noted error as one line.
    Batches that lost every image are not yielded (evaluation only: training substitutes)."""

    def __init__(self, loader: DataLoader):
        self.loader = loader
        self.skipped: dict[str, tuple[str, int]] = {}
        self.bad_shards: dict[str, str] = {}

    def __getattr__(self, name):  # sampler, generator, batch_size, dataset
        return getattr(self.__dict__["loader"], name)

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Walk epoch ``epoch`` from batch ``start_step`` on (a run resumed mid-epoch)."""
        if hasattr(self.loader.dataset, "set_epoch"):
            self.loader.dataset.set_epoch(epoch, start_step)
        else:
            self.loader.sampler.set_epoch(epoch, start_step * self.loader.batch_size)

    def __iter__(self):
        for batch in self.loader:
            if len(batch) == 2:  # prepared arrays: nothing to note
                yield batch
                continue
            images, labels, notes = batch
            for note in notes:
                if note[0] == "error":
                    raise DataError(note[1])
                if note[0] == "skip":
                    self.skipped.setdefault(note[1], (note[2], note[3]))
                elif note[0] == "bad shard":
                    self.bad_shards.setdefault(note[1], note[2])
            if labels.numel():
                yield images, labels


class EpochSampler(Sampler[int]):
    """Shuffles with ``seed + epoch`` and gives rank ``r`` of ``W`` the items ``r, r+W, ...``.

    The permutation does not depend on the world size: W processes with batch B/W consume, step
    for step, the same images as one process with batch B. Training pads by repeating the first
    items so every rank takes the same number of steps; evaluation (``shuffle=False``) never pads,
    so no image counts twice.
    """

    def __init__(self, n: int, *, shuffle: bool, seed: int = 0, rank: int = 0, world: int = 1):
        self.n, self.shuffle, self.seed, self.rank, self.world = n, shuffle, seed, rank, world
        self.epoch = self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Walk epoch ``epoch``'s order from this rank's item ``start`` on (a run resumed from a
        checkpoint taken mid-epoch skips the items it has trained on without loading them)."""
        self.epoch, self.start = epoch, start

    def _order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))[self.rank::self.world]
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(
            self.seed + self.epoch)).tolist()
        total = math.ceil(self.n / self.world) * self.world
        order += order[:total - self.n]
        return order[self.rank::self.world]

    def __iter__(self):
        return iter(self._order()[self.start:])

    def __len__(self) -> int:
        full = len(self._order()) if not self.shuffle else math.ceil(self.n / self.world)
        return max(0, full - self.start)


class SeededSampler(EpochSampler):
    """:class:`EpochSampler` whose items carry the seed of their image's augmentation."""

    def __iter__(self):
        return ((i, sample_seed(self.seed, self.epoch, i)) for i in self._order()[self.start:])


class PreparedArrays(Dataset):
    """In-memory glyphs transformed once (resize, scale, channels, normalisation) and kept as
    float tensors; training augments them batch by batch (``transforms.BatchAffine``)."""

    def __init__(self, base: ArrayDataset, indices: Sequence[int] | None, transform,
                 chunk: int = 4096):
        self.indices = list(range(len(base))) if indices is None else list(indices)
        idx = torch.tensor(self.indices, dtype=torch.long)
        images = base.images[idx]
        self.images = torch.cat([transform(images[i:i + chunk])
                                 for i in range(0, len(images), chunk)]) if len(images) else images
        self.labels = base.labels[idx]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i])

    def __getitems__(self, items: list[int]):
        # Batched fetch (the DataLoader's fast path): one index op instead of per-item stacking.
        idx = torch.tensor(items, dtype=torch.long)
        return [(self.images[idx], self.labels[idx])]


@dataclass
class Split:
    """What a run trains and validates on, and how to rebuild it (recorded in the run folder)."""

    train: Dataset
    val: Dataset
    val_indices: list[int] | None  # None: the source's own test split was used
    batch_augment: bool = False  # the train set is prepared arrays: augment on the batch

    def record(self) -> dict:
        return {"val_indices": self.val_indices}


def make_split(source: DataSource, train_tf, val_tf, *, val_fraction: float | None, seed: int,
               val_indices: list[int] | None = None, val_source: DataSource | None = None,
               held_out_tf=None) -> Split:
    """Use the source's own split, a held-out set from ``val_source`` (``--val-data``, through
    ``held_out_tf`` when its images are of another kind), or hold out ``val_fraction`` (or the
    recorded indices).

    In-memory glyph sets are prepared once with the evaluation transform (both sides); their
    training augmentation is then applied per batch (``Split.batch_augment``).
    """
    from .shards import ShardSet
    from .sources import held_out_set

    def subset(base, indices, tf, train):
        if isinstance(base, ArrayDataset):
            return PreparedArrays(base, indices, val_tf if train else tf)
        if isinstance(base, ShardSet):
            return base.transformed(tf, train=train)
        return TransformedSubset(base, indices, tf, substitute=train)

    arrays = isinstance(source.train, ArrayDataset)
    if val_source is not None:
        if val_fraction is not None:
            raise DataError("--val-split and --val-data both choose the held-out images; "
                            "give one of them")
        held = held_out_set(val_source, source.classes)
        return Split(subset(source.train, None, train_tf, True),
                     subset(held, None, held_out_tf or val_tf, False), None, arrays)
    if val_indices is None and source.val is not None and val_fraction is None:
        return Split(subset(source.train, None, train_tf, True),
                     subset(source.val, None, val_tf, False), None, arrays)
    if isinstance(source.train, ShardSet):
        raise DataError(f"{source.spec} is a stream of shards with no held-out split: give "
                        f"held-out shards (or a folder) with --val-data")
    n = len(source.train)
    if val_indices is None:
        train_idx, val_indices = split_indices(n, 0.2 if val_fraction is None else val_fraction,
                                               seed)
    else:
        if val_indices and max(val_indices) >= n:
            raise DataError(f"the recorded split does not fit {source.spec} ({n} images)")
        held = set(val_indices)
        train_idx = [i for i in range(n) if i not in held]
    return Split(subset(source.train, train_idx, train_tf, True),
                 subset(source.train, val_indices, val_tf, False), list(val_indices), arrays)


def eval_view(base: Dataset, indices: Sequence[int] | None, transform) -> Dataset:
    """Images of ``base`` (at ``indices``) as evaluation scores them."""
    from .shards import ShardSet

    if isinstance(base, ShardSet):
        return base.transformed(transform, train=False)
    return TransformedSubset(base, indices, transform)


def make_loader(ds: Dataset, *, batch_size: int, train: bool, seed: int, rank: int = 0,
                world: int = 1, workers: int = 0, pin_memory: bool = False) -> NotedLoader:
    from .shards import ShardSet

    generator = torch.Generator().manual_seed(seed)
    if isinstance(ds, PreparedArrays):
        # Batches are one tensor index away: a collate that just unpacks the batched fetch.
        sampler = EpochSampler(len(ds), shuffle=train, seed=seed, rank=rank, world=world)
        return NotedLoader(DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=0,
                                      collate_fn=lambda batch: batch[0], generator=generator))
    if isinstance(ds, ShardSet):
        # The shard plan depends on the epoch: workers start afresh each epoch to read it.
        ds = ds.placed(seed=seed, rank=rank, world=world, workers=workers, batch=batch_size)
        return NotedLoader(DataLoader(ds, batch_size=batch_size, num_workers=workers,
                                      collate_fn=collate_noted, pin_memory=pin_memory))
    kind = SeededSampler if train else EpochSampler
    sampler = kind(len(ds), shuffle=train, seed=seed, rank=rank, world=world)
    return NotedLoader(DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=workers,
                                  drop_last=False, pin_memory=pin_memory,
                                  collate_fn=collate_noted, persistent_workers=workers > 0,
                                  generator=generator))
