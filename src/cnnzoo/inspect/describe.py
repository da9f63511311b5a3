"""Short, paper-style words for a layer: '3x3 conv, 64 /2', 'BN', 'global avg pool'."""
from __future__ import annotations

import operator

from torch import nn

from .graph import ADD_OPS, CAT_OPS, MUL_OPS, GNode


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)[:2]


def _kernel(k) -> str:
    kh, kw = _pair(k)
    return f"{kh}×{kw}"


def describe_layer(m: nn.Module) -> str:
    """One layer in the words a paper's table uses."""
    if isinstance(m, nn.Conv2d):
        text = f"{_kernel(m.kernel_size)} conv, {m.out_channels}"
        if max(_pair(m.stride)) > 1:
            text += f" /{_pair(m.stride)[0]}"
        if m.groups > 1:
            text += " dw" if m.groups == m.in_channels else f" g{m.groups}"
        if max(_pair(m.dilation)) > 1:
            text += f" d{_pair(m.dilation)[0]}"
        return text
    if isinstance(m, nn.Linear):
        return f"fc {m.out_features}"
    if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
        kind = "max" if isinstance(m, nn.MaxPool2d) else "avg"
        stride = _pair(m.stride)[0] if m.stride else _pair(m.kernel_size)[0]
        return f"{_kernel(m.kernel_size)} {kind} pool" + (f" /{stride}" if stride > 1 else "")
    if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        kind = "avg" if isinstance(m, nn.AdaptiveAvgPool2d) else "max"
        size = _pair(m.output_size) if m.output_size is not None else None
        if size == (1, 1):
            return f"global {kind} pool"
        return f"adaptive {kind} pool {size[0]}×{size[1]}" if size else f"adaptive {kind} pool"
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return "BN"
    if isinstance(m, nn.LocalResponseNorm):
        return "LRN"
    if isinstance(m, nn.GroupNorm):
        return f"GN {m.num_groups}"
    if isinstance(m, nn.LayerNorm):
        return "LN"
    if isinstance(m, nn.Dropout):
        return f"dropout {m.p:g}"
    if isinstance(m, nn.Flatten):
        return "flatten"
    if isinstance(m, nn.Identity):
        return "identity"
    children = list(m.children())
    if children:
        parts = [describe_layer(c) for c in _leaves(m)]
        parts = [p for p in parts if p not in ("identity",)]
        if len(parts) > 6:
            parts = parts[:5] + [f"… ({len(parts)} layers)"]
        return " · ".join(parts)
    return type(m).__name__


def _leaves(m: nn.Module) -> list[nn.Module]:
    return [c for c in m.modules() if not list(c.children())]


def describe_function(node: GNode) -> tuple[str, str]:
    """(symbol, kind) of a function node: ('+', 'add'), ('concat', 'cat') ..."""
    fn = node.fn
    if fn in ADD_OPS:
        return "+", "add"
    if fn in MUL_OPS:
        return "×", "mul"
    if fn in CAT_OPS:
        return "concat", "cat"
    if fn is operator.getitem:
        return "split", "other"
    name = fn if isinstance(fn, str) else getattr(fn, "__name__", str(fn))
    return name, "other"


def layer_kind(m: nn.Module) -> str:
    """A colour class for a leaf: conv, pool, fc, norm or other."""
    leaves = _leaves(m) if list(m.children()) else [m]
    if any(isinstance(c, nn.Conv2d) for c in leaves):
        return "conv"
    if any(isinstance(c, nn.Linear) for c in leaves):
        return "fc"
    if any(isinstance(c, (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d))
           for c in leaves):
        return "pool"
    if any(isinstance(c, (nn.modules.batchnorm._BatchNorm, nn.LocalResponseNorm)) for c in leaves):
        return "norm"
    return "other"


def fmt_shape(shape) -> str:
    return "×".join(str(s) for s in shape) if shape else "?"
