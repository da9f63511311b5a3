"""Datasets behind one DATA argument, transforms from a model's default_cfg, seeded splits."""
from .loaders import EpochSampler, Split, TransformedSubset, make_loader, make_split, split_indices
from .sources import NAMES, DataSource, load_source, read_idx
from .transforms import build_transform

__all__ = ["NAMES", "DataSource", "EpochSampler", "Split", "TransformedSubset", "build_transform",
           "load_source", "make_loader", "make_split", "read_idx", "split_indices"]
