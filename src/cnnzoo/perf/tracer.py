"""The graph every pass in perf/ reads: torch.fx, with the layers a pass swapped in kept whole.

A pass that swaps a torch layer for a faster twin (``pooling.py``, ``inplace.py``,
``training.py``) marks the twin with :class:`PassLayer`; fx then records one call for it, as it
does for the torch layer it stands for, so the passes after it still find their patterns.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import torch
from torch import fx, nn

from ..layers.deform_conv import DeformConv2d
from ..layers.squeeze_excite import SqueezeExcite


class PassLayer:
    """Mixin of a layer a perf pass put in a torch layer's place: same parameters, same result
    up to what its docstring says, one call to a tracer."""


def traced() -> bool:
    """Whether torch is tracing, scripting, compiling or exporting: a pass layer then runs the
    plain op of the torch layer it stands for, which the tracer records."""
    return (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling()
            or torch.onnx.is_in_onnx_export())


def layout_of(x: torch.Tensor) -> torch.memory_format:
    """The memory format a 4-D map is laid out in; a map that is both (one channel, one pixel)
    counts as NCHW."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


class PerfTracer(fx.Tracer):
    """torch.fx's tracer, with pass layers, deformable convolutions and SE blocks as one call.

    torchvision's ``deform_conv2d`` checks its arguments' shapes in Python, which fx cannot
    trace; traced as a whole, the block around it (and the pairs in it) would be lost to the
    search, and every module above it traced again child by child. An SE block has nothing to
    fold or fuse inside, and kept whole it can be swapped for its in-place twin (``inplace.py``).
    """

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (PassLayer, DeformConv2d, SqueezeExcite)) or \
            super().is_leaf_module(m, qualname)


def module_calls(graph: fx.Graph) -> Counter:
    """How often each module is called in ``graph``: a pass rewrites only modules called once,
    since a module called twice shares its weights between two places."""
    return Counter(node.target for node in graph.nodes if node.op == "call_module")


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


def swap_class(module: nn.Module, cls: type[nn.Module]) -> nn.Module:
    """``module`` turned, in place, into ``cls`` (a subclass of its own class that adds no
    state): its parameters, buffers, hooks and state-dict keys stay the same objects, so an
    optimiser or a hook holding them is unaffected."""
    if not issubclass(cls, type(module)):
        raise TypeError(f"{cls.__name__} does not stand for {type(module).__name__}")
    module.__class__ = cls
    return module
