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

import torch
from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_weights

from .inplace import InplaceBatchNorm2d
from .tracer import module_calls, search_traced
from .training import Conv2d, DepthwiseConv2d

# The torch layers, and the perf twins that compute what they do.
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, Conv2d, DepthwiseConv2d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, InplaceBatchNorm2d, nn.BatchNorm3d)


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
    calls = module_calls(graph)
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
