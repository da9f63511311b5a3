"""One epoch of `cnnzoo train lenet5` on a folder of small JPEGs against a plain torchvision
ImageFolder + DataLoader loop doing the same work, timed from the start of each.

The folder is generated: N files (default 12,000) in 10 classes, 80% in train/ and 20% in val/,
one truncated JPEG among the training files. Both sides train LeNet-5 for one epoch on train/
(SGD, batch 64, cnnzoo's training transform) and then score val/ once, with the same number of
loader workers and torch threads. cnnzoo's time is the whole command (listing, model, epoch,
validation, checkpoint, curves); the peer's starts at ImageFolder and ends after scoring. The peer
is given the folder without the truncated file, which PIL would stop it on; cnnzoo names it.
The sides take turns, `--rounds` times; the ratio is of the medians (below 1: cnnzoo is faster).

    PYTHONPATH=src python bench/data_pipeline.py [--files 12000] [--workers 2] [--rounds 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_folder(root: Path, files: int, side: int = 28, seed: int = 0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 255, size=(10, 3))
    for i in range(files):
        c = i % 10
        split = "val" if (i // 10) % 5 == 4 else "train"
        folder = root / split / f"class{c}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = np.clip(colours[c] + rng.integers(-40, 40, (side, side, 3)), 0, 255)
        Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i:06d}.jpg", quality=90)
    bad = root / "train" / "class0" / "000000.jpg"
    bad.write_bytes(bad.read_bytes()[:200])  # truncated mid-scan
    return bad


def peer_epoch(root: Path, bad: Path, workers: int, batch: int) -> float:
    import torch
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    from cnnzoo import create_model
    from cnnzoo.data import build_transform

    start = time.perf_counter()
    model = create_model("lenet5", num_classes=10)
    train_tf = build_transform(model.default_cfg, train=True, kind="photo")
    val_tf = build_transform(model.default_cfg, train=False, kind="photo")
    keep = lambda p: p != str(bad) and p.endswith(".jpg")  # noqa: E731
    train = ImageFolder(str(root / "train"), transform=train_tf, is_valid_file=keep)
    val = ImageFolder(str(root / "val"), transform=val_tf)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    for x, y in DataLoader(train, batch_size=batch, shuffle=True, num_workers=workers):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in DataLoader(val, batch_size=batch, num_workers=workers):
            correct += int((model(x).argmax(1) == y).sum())
    return time.perf_counter() - start


def cnnzoo_epoch(root: Path, run: Path, workers: int, batch: int) -> tuple[float, str]:
    import contextlib
    import io

    from cnnzoo.cli import main

    out = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(out):
        code = main(["train", "lenet5", "--data", str(root), "--epochs", "1", "-b", str(batch),
                     "--lr", "0.05", "--workers", str(workers), "--device", "cpu", "-o", str(run),
                     "--force"])
    seconds = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"cnnzoo train failed:\n{out.getvalue()}")
    return seconds, out.getvalue()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=12000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("-b", "--batch-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        bad = make_folder(root, args.files)
        ours, theirs, named = [], [], None
        for r in range(args.rounds):
            sides = [("peer", None), ("cnnzoo", None)]
            for side, _ in sides if r % 2 else sides[::-1]:
                if side == "peer":
                    theirs.append(peer_epoch(root, bad, args.workers, args.batch_size))
                else:
                    seconds, out = cnnzoo_epoch(root, Path(tmp) / "run", args.workers,
                                                args.batch_size)
                    ours.append(seconds)
                    named = str(bad) in out
            print(f"round {r + 1}: cnnzoo {ours[-1]:.2f} s, torchvision loop {theirs[-1]:.2f} s",
                  flush=True)
    a, b = statistics.median(ours), statistics.median(theirs)
    print(f"{args.files} files, {args.workers} workers, {args.threads} thread(s): one epoch + "
          f"validation: cnnzoo {a:.2f} s, ImageFolder+DataLoader {b:.2f} s, ratio {a / b:.2f} "
          f"(cnnzoo / peer; below 1 is faster); truncated file named: {named}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
