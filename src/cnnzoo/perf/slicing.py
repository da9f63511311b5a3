"""Micro-batches and early slices: a large batch run in pieces on a CPU.

Every sample is computed alone anyway in inference, and smaller activations stay in cache (and,
where the heap is not kept, in memory the allocator already holds: ``memory.py``).
:class:`~cnnzoo.perf.inference_model.InferenceModel` runs the pieces; ``optimize`` races the
sizes 2, 4 and 8 against the whole batch, and the early split below against that.
mobilenet_v2, batch 16 on 2 cores: 86 ms in slices of 8, 77 with its first three pieces 2 at a
time and the rest whole. The values are the whole batch's, bit for bit where the kernels do
not depend on the batch size.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..models.base import ZooNet

if TYPE_CHECKING:
    from .inference_model import InferenceModel


@torch.inference_mode()
def early_split(candidate: "InferenceModel", example: torch.Tensor) -> int | None:
    """How many body pieces bring the maps to a quarter of the input's side; None: no split.

    Only a cnnzoo model in eval mode, run by torch on a 4-d batch of more than two, whose body
    is a chain with more pieces after that point.
    """
    model = candidate.model
    if not (isinstance(model, ZooNet) and candidate._run is model and not model.training
            and example.dim() == 4 and example.shape[0] > 2):
        return None
    pieces = model.feature_pieces()
    x = candidate._prepare(example[:1])
    side = x.shape[-1]
    with candidate._context(x):
        for i, piece in enumerate(pieces[:-1]):
            x = piece(x)
            if x.dim() != 4:
                return None
            if 4 * x.shape[-1] <= side:
                return i + 1
    return None


def join(outs: list):
    """The slices' outputs joined along the batch, whatever nest of tuples holds them."""
    first = outs[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(outs)
    if isinstance(first, (tuple, list)):
        joined = [join(list(parts)) for parts in zip(*outs)]
        # A named tuple (InceptionOutputs) is built from fields, a plain one from an iterable.
        return type(first)(*joined) if hasattr(first, "_fields") else type(first)(joined)
    if first is None:
        return None
    raise TypeError(f"cannot join micro-batch outputs of type {type(first).__name__}")
