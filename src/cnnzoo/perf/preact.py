"""Fold a pre-activation BatchNorm -> ReLU into the 1x1 convolution that reads it.

DenseNet's layers (and its transitions) normalise and rectify their input before a 1x1 conv:
``conv(relu(s * x + t))`` with ``s, t`` the eval-mode BatchNorm's scale and shift per channel.
That cannot fold like a BatchNorm *after* a conv, because the ReLU sits between; but per channel

    relu(s * x + t) = s * clamp(x, lo, hi) + t

with ``lo = -t / s`` (``hi`` unbounded) where ``s > 0``, ``hi = -t / s`` (``lo`` unbounded) where
``s < 0``, and ``clamp`` to 0 with ``t`` replaced by ``relu(t)`` where ``s == 0``. A 1x1 conv
without padding is linear in its input pixel by pixel, so ``s`` moves into its weights and ``t``
into its bias, and two passes over the input (BatchNorm, then ReLU) become one clamp. When the
BatchNorm reads a fresh concatenation that nothing else reads (DenseNet's ``torch.cat`` of the
features so far), the clamp runs in place on it (when the cat is made in the same module as the BatchNorm, so
no caller holds it): no new tensor at all.

A padded or wider kernel would see the padding's zeros, which the clamp does not map to what
``relu(s * 0 + t)`` would have been, so only 1x1 kernels without padding are folded.
"""
from __future__ import annotations

import torch
from torch import fx, nn

from .inplace import InplaceBatchNorm2d, inference_affine
from .tracer import module_calls, search_traced
from .training import Conv2d


class ClampPerChannel(nn.Module):
    """``clamp(x, lo[c], hi[c])`` per channel, in place when the graph showed it may be."""

    def __init__(self, lo: torch.Tensor, hi: torch.Tensor, inplace: bool):
        super().__init__()
        self.register_buffer("lo", lo.view(1, -1, 1, 1))
        self.register_buffer("hi", hi.view(1, -1, 1, 1))
        self.inplace = inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp_(self.lo, self.hi) if self.inplace else x.clamp(self.lo, self.hi)

    def extra_repr(self) -> str:
        return f"{self.lo.shape[1]}, inplace={self.inplace}"


def _is_plain(m: nn.Module, kind: type[nn.Module]) -> bool:
    return type(m) is kind


def _conv_ok(conv: nn.Module, channels: int) -> bool:
    return ((_is_plain(conv, nn.Conv2d) or _is_plain(conv, Conv2d))
            and conv.kernel_size == (1, 1) and conv.groups == 1
            and conv.in_channels == channels and conv.padding_mode == "zeros"
            and conv.padding in ((0, 0), "valid"))


def _bn_ok(bn: nn.Module) -> bool:
    return ((_is_plain(bn, nn.BatchNorm2d) or _is_plain(bn, InplaceBatchNorm2d)) and not bn.training
            and bn.running_mean is not None and bn.running_var is not None)


def _is_relu(node: fx.Node, root: nn.Module) -> bool:
    return node.op == "call_module" and _is_plain(root.get_submodule(node.target), nn.ReLU)


def _scope(node: fx.Node) -> str:
    """The qualified name of the innermost module whose forward made ``node``."""
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack)[-1] if stack else ""


def _triples_in_graph(graph: fx.Graph, root: nn.Module) -> list[tuple[str, str, str, bool]]:
    calls = module_calls(graph)
    found = []
    for bn in graph.nodes:
        if bn.op != "call_module" or calls[bn.target] != 1 or len(bn.users) != 1 or \
                not _bn_ok(root.get_submodule(bn.target)):
            continue
        (act,) = bn.users
        if not _is_relu(act, root) or calls[act.target] != 1 or len(act.users) != 1:
            continue
        (conv,) = act.users
        if conv.op != "call_module" or calls[conv.target] != 1 or len(conv.args) != 1 or \
                not _conv_ok(root.get_submodule(conv.target),
                             root.get_submodule(bn.target).num_features):
            continue
        src = bn.args[0]
        # Fresh only where the cat is made in the module that owns the BN (DenseNet's layer):
        # a cat handed out as another module's output (a dense block's, to its transition) may
        # be kept by the caller, a feature extractor or a hook.
        fresh = (isinstance(src, fx.Node) and src.op == "call_function"
                 and src.target is torch.cat and len(src.users) == 1
                 and _scope(src) == bn.target.rpartition(".")[0])
        found.append((bn.target, act.target, conv.target, fresh))
    return found


def find_preactivations(module: nn.Module, prefix: str = "") -> list[tuple[str, str, str, bool]]:
    """``(bn, relu, conv, input_is_fresh)`` names of every foldable chain, searched like fold's."""
    return search_traced(module, _triples_in_graph, prefix)


@torch.no_grad()
def fold_preactivation(model: nn.Module) -> list[tuple[str, str, str, bool]]:
    """Fold, in place, every BatchNorm -> ReLU -> 1x1 conv chain; return the chains folded."""
    if model.training:
        raise ValueError("fold_preactivation needs an eval-mode model: call model.eval() first")
    chains = find_preactivations(model)
    for bn_name, act_name, conv_name, fresh in chains:
        bn, conv = model.get_submodule(bn_name), model.get_submodule(conv_name)
        s, t = inference_affine(bn)
        inf = torch.full_like(s, float("inf"))
        zero = s == 0
        # Where s == 0 the division gives nan or inf; those channels are set apart below.
        edge = torch.where(zero, torch.zeros_like(s), -t / torch.where(zero, torch.ones_like(s), s))
        lo = torch.where(s > 0, edge, torch.where(zero, torch.zeros_like(s), -inf))
        hi = torch.where(s < 0, edge, torch.where(zero, torch.zeros_like(s), inf))
        shift = torch.where(zero, t.clamp_min(0), t)
        w = conv.weight
        bias = w[:, :, 0, 0] @ shift
        if conv.bias is not None:
            bias = bias + conv.bias
        conv.weight = nn.Parameter(w * s.view(1, -1, 1, 1), requires_grad=False)
        conv.bias = nn.Parameter(bias, requires_grad=False)
        model.set_submodule(bn_name, ClampPerChannel(lo, hi, inplace=fresh))
        model.set_submodule(act_name, nn.Identity())
    return chains
