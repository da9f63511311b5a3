"""Fold inference-mode BatchNorm into the convolution that feeds it.

In eval mode a BatchNorm is an affine map per channel, ``y = a * x + b`` with
``a = gamma / sqrt(var + eps)`` and ``b = beta - a * mean``; applied to a convolution's output it
can be pushed into the convolution's weights and bias, so one kernel does the work of two and a
full pass over the activation disappears.

Pairs are found on the graph torch.fx traces, not by family: any ``ConvNd`` whose output is read
only by a ``BatchNormNd`` is folded, whether the two sit in a ``ConvNormAct``, a ResNet stem, a
torchvision-style block that calls ``self.bn1(self.conv1(x))`` or a family written tomorrow. A
module fx cannot trace as a whole (an input-size check, a data-dependent branch) is searched
child by child instead, so one untraceable head does not hide the body's pairs.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_weights

from ..layers.conv2d import Conv2d, DepthwiseConv2d
from ..layers.deform_conv import DeformConv2d
from ..layers.norm import BatchNorm2d
from ..layers.pool import LayerTracer
from ..layers.squeeze_excite import SqueezeExcite

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, Conv2d, DepthwiseConv2d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, BatchNorm2d, nn.BatchNorm3d)


def _plain(module: nn.Module, bases: tuple[type[nn.Module], ...]) -> bool:
    # A subclass that overrides forward (timm's BatchNormAct2d applies an activation too, a
    # same-padding conv pads first) computes something else: folding it would be wrong.
    return any(isinstance(module, b) and type(module).forward is b.forward for b in bases)


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return (_plain(conv, _CONVS) and _plain(bn, _NORMS) and isinstance(bn, _BatchNorm)
            and bn.running_mean is not None and bn.running_var is not None
            and bn.num_features == conv.out_channels
            # BatchNorm1d after Conv1d, 2d after 2d...: the input ranks must agree.
            and type(bn).__name__[-2:] == type(conv).__name__[-2:])


def _pairs_in_graph(graph: fx.Graph, root: nn.Module) -> list[tuple[str, str]]:
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
            continue
        src = node.args[0]
        if not isinstance(src, fx.Node) or src.op != "call_module" or len(src.users) != 1:
            continue
        # A module called twice shares its weights between two places: folding one BN into it
        # would change the other call.
        if calls[node.target] != 1 or calls[src.target] != 1:
            continue
        if _foldable(root.get_submodule(src.target), root.get_submodule(node.target)):
            pairs.append((src.target, node.target))
    return pairs


class PerfTracer(LayerTracer):
    """The tracer of the rewrites in perf/: a deformable convolution and an SE block are one call.

    torchvision's ``deform_conv2d`` checks its arguments' shapes in Python, which fx cannot
    trace; traced as a whole, the block around it (and the pairs in it) would be lost to the
    search, and every module above it traced again child by child. An SE block has nothing to
    fold or fuse inside, and inlined into a rewritten block it would lose its in-place gate
    (``SqueezeExcite.fresh_input``).
    """

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (DeformConv2d, SqueezeExcite)) or \
            super().is_leaf_module(m, qualname)


def search_traced(module: nn.Module, find: Callable[[fx.Graph, nn.Module], list[tuple]],
                  prefix: str = "") -> list[tuple]:
    """``find`` on the graph of ``module``, or of each child where fx cannot trace the whole.

    ``find`` returns tuples whose strings are module names in the graph's root; they come
    back qualified from the module the search started at.
    """
    try:
        graph = PerfTracer().trace(module)
    except Exception:  # noqa: BLE001 - any tracing failure means: look one level down
        return [hit for name, child in module.named_children()
                for hit in search_traced(child, find, f"{prefix}{name}.")]
    return [tuple(prefix + v if isinstance(v, str) else v for v in hit)
            for hit in find(graph, module)]


def find_conv_bn_pairs(module: nn.Module, prefix: str = "") -> list[tuple[str, str]]:
    """Qualified names ``(conv, bn)`` of every foldable pair in ``module``, in graph order."""
    return search_traced(module, _pairs_in_graph, prefix)


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> list[tuple[str, str]]:
    """Fold, in place, every BatchNorm that reads only a convolution's output; return the pairs.

    The model must be in eval mode (a training-mode BatchNorm normalises with batch statistics,
    which no fixed weight can reproduce).
    """
    if model.training:
        raise ValueError("fold_batchnorm needs an eval-mode model: call model.eval() first")
    pairs = find_conv_bn_pairs(model)
    for conv_name, bn_name in pairs:
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean,
                                            bn.running_var, bn.eps, bn.weight, bn.bias)
        conv.weight, conv.bias = weight, bias
        # An Identity in the BN's place rather than no module: code that reaches the BN by
        # name (``block.conv1.bn``, ``features[3]``) keeps working, and an Identity costs one call.
        model.set_submodule(bn_name, nn.Identity())
    return pairs
