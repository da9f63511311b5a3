"""Small datasets written by the tests themselves: an image folder and MNIST-format IDX files."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from PIL import Image

# Classes differ in colour and brightness, so a tiny model learns them in a few steps, in RGB
# and after the grey conversion of a one-channel model alike.
COLOURS = {"red": (220, 30, 30), "green": (30, 160, 30), "blue": (20, 20, 120)}


def make_image_folder(root: Path, per_class: int = 12, size: int = 20, seed: int = 0,
                      classes: dict = COLOURS) -> Path:
    rng = np.random.default_rng(seed)
    for name, colour in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            noise = rng.integers(-25, 25, size=(size, size, 3))
            pixels = np.clip(np.array(colour)[None, None] + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def make_idx_folder(root: Path, n: int = 200, prefixes=("train",), seed: int = 0) -> Path:
    """Glyph-like 28x28 images: class c is a bright bar at row band c (10 classes)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for prefix in prefixes:
        labels = rng.integers(0, 10, size=n)
        images = rng.integers(0, 40, size=(n, 28, 28))
        for i, c in enumerate(labels):
            images[i, 2 + 2 * c: 5 + 2 * c, 4:24] = 255
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root
