"""Datasets behind one DATA argument, transforms from a model's default_cfg, seeded splits."""
from .loaders import (EpochSampler, NotedLoader, Split, TransformedSubset, eval_view, make_loader,
                      make_split, split_indices)
from .sources import NAMES, DataSource, held_out_set, load_source, read_idx
from .transforms import build_transform

__all__ = ["NAMES", "DataSource", "EpochSampler", "NotedLoader", "Split", "TransformedSubset",
           "build_transform", "eval_view", "held_out_set", "load_source", "make_loader", "make_split",
           "read_idx", "split_indices"]
