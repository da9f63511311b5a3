"""`cnnzoo shards FOLDER -o OUT`: an image folder as WebDataset shards, for training on many
machines (`cnnzoo train MODEL --data 'OUT/train-{0000..0099}.tar' --val-data ...`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import CnnzooError
from ._types import positive_int

NAME = "shards"
HELP = "write an image folder as WebDataset .tar shards (image + cls, and classes.txt)"
ORDER = 42


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", help="image folder: class folders, or train/ and val/ or test/ "
                                  "folders of them (each split becomes its own shards)")
    p.add_argument("-o", "--output", required=True, help="folder for the shards")
    p.add_argument("--per-shard", type=positive_int, default=1000, metavar="N",
                   help="samples per shard (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the order samples are written in")
    p.add_argument("--workers", type=positive_int, help="processes checking images "
                                                        "(default: min(cores, 8))")
    p.add_argument("--force", action="store_true", help="replace shards already in OUT")


def run(args: argparse.Namespace) -> int:
    from ..data.folders import check_files, default_workers, image_folder
    from ..data.images import shown
    from ..data.shards import CLASSES_FILE, write_shards

    folder = Path(args.folder).expanduser()
    if not folder.is_dir():
        raise CnnzooError(f"{folder} is not a folder of images")
    source = image_folder(folder)
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise CnnzooError(f"{out} is a file; choose another --output")
    existing = sorted(out.glob("*.tar")) + sorted(out.glob(CLASSES_FILE)) if out.is_dir() else []
    if existing and not args.force:
        raise CnnzooError(f"{out} already holds {existing[0].name}; pass --force to replace its "
                          f"shards or choose another --output")
    for old in existing:
        old.unlink()
    out.mkdir(parents=True, exist_ok=True)
    splits = {"train": source.train}
    if source.val is not None:
        splits[source.val_name or "val"] = source.val
    if source.test is not None and source.val_name != "test":
        splits["test"] = source.test
    workers = args.workers or default_workers()
    for name, files in splits.items():
        # Broken files are left out here, where it costs one pass, not on every epoch.
        good, bad = check_files(files.samples, workers)
        if bad:
            print(f"{name}: left out {len(bad)} unreadable image(s), e.g. {bad[0][0]} "
                  f"({bad[0][1]})")
        shards = write_shards(good, out, name, per_shard=args.per_shard, seed=args.seed)
        pattern = (f"{name}-{{0000..{len(shards) - 1:04d}}}.tar" if len(shards) > 1
                   else shards[0].name)
        print(f"{name}: {len(good)} samples in {len(shards)} shard(s): {shown(out / pattern)}")
    (out / CLASSES_FILE).write_text("".join(f"{c}\n" for c in source.classes))
    print(f"classes: {len(source.classes)}, listed in {shown(out / CLASSES_FILE)}")
    return 0
