"""Theoretical receptive field of every stage, walked along the traced graph.

Per layer, with kernel k, dilation d and stride s (Araujo, Norris & Sim 2019, 'Computing
Receptive Fields of Convolutional Neural Networks', Distill, Eq. 1-2):

    size_out = size_in + (k - 1) * d * jump_in        jump_out = jump_in * s

``jump`` is the distance in input pixels between neighbouring output positions (the cumulative
stride). Where paths meet (a residual addition, an Inception concatenation) the theoretical
field is the largest of theirs. Any layer with ``kernel_size`` and ``stride`` attributes counts
as a window (convolutions, pools, a family's own conv); any other layer that shrinks the map is
taken as a window of its stride (an adaptive pool); the rest (norms, activations) change nothing.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch.nn.functional as F
from torch import nn

from ..errors import CnnzooError
from .graph import GNode, ModelGraph, trace


@dataclass
class StageRF:
    module: str                  # feature_info module name
    shape: tuple[int, ...] | None
    size: int                    # receptive field side in input pixels
    stride: int                  # this stage's own stride (jump ratio to the previous stage)
    jump: int                    # cumulative stride: input pixels between output positions

    def to_dict(self) -> dict:
        return asdict(self)


def _first(v) -> int:
    return int(v[0] if isinstance(v, (tuple, list)) else v)


def _window(node: GNode) -> tuple[int, int, int] | None:
    """(kernel, stride, dilation) of a windowed layer or pooling call, or None."""
    m = node.module
    if m is not None and hasattr(m, "kernel_size") and hasattr(m, "stride"):
        stride = m.stride if m.stride is not None else m.kernel_size
        return _first(m.kernel_size), _first(stride), _first(getattr(m, "dilation", 1))
    if node.op == "function" and node.fn in (F.max_pool2d, F.avg_pool2d):
        args = list(node.args[1:]) + [None, None]
        k = node.kwargs.get("kernel_size", args[0])
        s = node.kwargs.get("stride", args[1]) or k
        d = node.kwargs.get("dilation", 1) if node.fn is F.max_pool2d else 1
        return _first(k), _first(s), _first(d)
    return None


def propagate(graph: ModelGraph) -> dict[str, tuple[int, int]]:
    """(size, jump) at every node of the graph."""
    rf: dict[str, tuple[int, int]] = {}
    for node in graph.nodes:
        if node.op == "input":
            rf[node.name] = (1, 1)
            continue
        ins = [rf[i] for i in node.inputs if i in rf]
        if not ins:
            rf[node.name] = (1, 1)
            continue
        size, jump = max(s for s, _ in ins), max(j for _, j in ins)
        win = _window(node)
        if win is None:
            win = _shrink(graph, node)
        if win is not None:
            k, s, d = win
            size, jump = size + (k - 1) * d * jump, jump * s
        rf[node.name] = (size, jump)
    return rf


def _shrink(graph: ModelGraph, node: GNode) -> tuple[int, int, int] | None:
    """A layer without a declared window that still makes the map smaller (adaptive pooling)."""
    if not node.inputs or node.shape is None or len(node.shape) != 3:
        return None
    src = graph.node(node.inputs[0]).shape
    if src is None or len(src) != 3 or src[1] <= node.shape[1]:
        return None
    s = src[1] // node.shape[1]
    return s, s, 1


def stage_receptive_fields(model: nn.Module, input_size: tuple[int, ...] | None = None,
                           graph: ModelGraph | None = None) -> list[StageRF]:
    """Receptive field size, stride and jump at each of ``model.feature_info``'s maps."""
    graph = graph or trace(model, input_size, atomic=False)
    rf = propagate(graph)
    rows, prev_jump = [], 1
    for info in model.feature_info:
        node = graph.output_of(info["module"])
        if node is None:  # inside a module whose forward fx could not follow
            raise CnnzooError(f"cannot follow the receptive field to {info['module']!r}: it "
                              f"sits inside a module traced as one opaque step")
        size, jump = rf[node.name]
        rows.append(StageRF(info["module"], node.shape, size, jump // prev_jump, jump))
        prev_jump = jump
    return rows
