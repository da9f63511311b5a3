"""Splits, transformed subsets and the (distributed) loaders a training run uses.

A single-split source is divided by a seeded permutation; the held-out indices are recorded in
the run folder so ``cnnzoo eval`` scores exactly the images training never saw. Every sampler is
seeded per epoch (``seed + epoch``) rather than drawn from a running generator, so a resumed run
walks the data in the same order as an uninterrupted one, and N processes together see the
batches one process would.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import DataError
from .sources import ArrayDataset, DataSource


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
    def __init__(self, base: Dataset, indices: Sequence[int] | None, transform):
        self.base, self.transform = base, transform
        self.indices = list(range(len(base))) if indices is None else list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        image, label = self.base[self.indices[i]]
        return self.transform(image), label


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
               val_indices: list[int] | None = None) -> Split:
    """Use the source's own split, or hold out ``val_fraction`` (or the recorded indices).

    In-memory glyph sets are prepared once with the evaluation transform (both sides); their
    training augmentation is then applied per batch (``Split.batch_augment``).
    """
    def subset(base, indices, tf):
        if isinstance(base, ArrayDataset):
            return PreparedArrays(base, indices, val_tf)
        return TransformedSubset(base, indices, tf)

    arrays = isinstance(source.train, ArrayDataset)
    if val_indices is None and source.val is not None and val_fraction is None:
        return Split(subset(source.train, None, train_tf), subset(source.val, None, val_tf), None,
                     arrays)
    n = len(source.train)
    if val_indices is None:
        train_idx, val_indices = split_indices(n, 0.2 if val_fraction is None else val_fraction,
                                               seed)
    else:
        if val_indices and max(val_indices) >= n:
            raise DataError(f"the recorded split does not fit {source.spec} ({n} images)")
        held = set(val_indices)
        train_idx = [i for i in range(n) if i not in held]
    return Split(subset(source.train, train_idx, train_tf),
                 subset(source.train, val_indices, val_tf), list(val_indices), arrays)


def make_loader(ds: Dataset, *, batch_size: int, train: bool, seed: int, rank: int = 0,
                world: int = 1, workers: int = 0, pin_memory: bool = False) -> DataLoader:
    sampler = EpochSampler(len(ds), shuffle=train, seed=seed, rank=rank, world=world)
    if isinstance(ds, PreparedArrays):
        # Batches are one tensor index away: a collate that just unpacks the batched fetch.
        return DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=0,
                          collate_fn=lambda batch: batch[0],
                          generator=torch.Generator().manual_seed(seed))
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      drop_last=False, pin_memory=pin_memory,
                      persistent_workers=workers > 0,
                      # Worker seeds come from this generator, itself seeded per run, so a
                      # resumed run augments as the uninterrupted one did.
                      generator=torch.Generator().manual_seed(seed))
