"""The 1000 ImageNet-1k class names, in the order of every ImageNet classifier's outputs.

``imagenet_classes.txt`` is generated (``python -m cnnzoo.weights._generate``) from the names
torchvision ships with its weights, so index ``i`` here is output ``i`` of torchvision's and
timm's ImageNet models alike (both use the standard sorted-WordNet-id order).
"""
from __future__ import annotations

from pathlib import Path

IMAGENET_CLASSES: tuple[str, ...] = tuple(
    (Path(__file__).parent / "imagenet_classes.txt").read_text().splitlines())
