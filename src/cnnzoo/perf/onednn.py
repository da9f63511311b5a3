"""Convolutions fused with their activation and residual add into oneDNN calls, weights pre-packed.

Eager PyTorch on a CPU runs ``conv -> act`` as two passes over the activation, ``conv -> +
shortcut -> relu`` as three, and hands oneDNN the weights in PyTorch's plain layout on every
call, which it reorders to its blocked layout before it can start. Inference with frozen weights
needs none of that: :func:`fuse_for_cpu` reorders every weight once (``_reorder_convolution_weight``
for the input size the model will see) and replaces each convolution by one
``mkldnn._convolution_pointwise`` call that applies the activation, and the residual add with
the activation after it, while the output is still in cache. These are the kernels inductor
emits for a frozen graph on a CPU; calling them from eager code gives most of that gain with no
compilation.

A bfloat16 model (``optimize(model, amp_dtype=torch.bfloat16)`` casts its weights once) is
packed in bf16 where oneDNN has bf16 kernels for this CPU (``available(torch.bfloat16)``): on
AMX's tiles that is where a CPU's convolutions run fastest.

Patterns are found on the torch.fx graph, like BatchNorm folding (``fold.py``): a plain
``Conv2d`` whose output is read only by an activation the kernel knows (through any Identity
modules folding left behind), or only by an add whose result is read only by a ReLU. Modules fx
cannot trace are searched child by child. The model's own class and methods stay; traced
sub-modules become ``fx.GraphModule``s with the same sub-module names.
"""
from __future__ import annotations

import copy
import functools
import operator

import torch
from torch import fx, nn
import torch.nn.functional as F

from .tracer import PerfTracer, module_calls
from .training import Conv2d, DepthwiseConv2d

# Convolutions the fused call computes exactly; a depthwise one differs only in training.
_PLAIN_CONVS = (nn.Conv2d, Conv2d, DepthwiseConv2d)


def available(dtype: torch.dtype = torch.float32) -> bool:
    """Whether this PyTorch build has the fused oneDNN convolution (x86 and Arm CPU builds) for
    ``dtype``: float32 wherever it has it, bfloat16 where oneDNN has bf16 kernels on this CPU
    (AVX-512 or AMX; AMX's tiles ran resnet50 in bf16 5x faster than in float32)."""
    # Private ops of torch's oneDNN build (what inductor emits for frozen graphs): asked for by
    # name, so a build without them runs the plain model instead.
    ops = getattr(torch.ops, "mkldnn", None)
    if not (torch.backends.mkldnn.is_available() and hasattr(ops, "_convolution_pointwise")
            and hasattr(ops, "_reorder_convolution_weight")):
        return False
    if dtype == torch.float32:
        return True
    return dtype == torch.bfloat16 and _bf16_kernels()


@functools.cache
def _bf16_kernels() -> bool:
    # Asked once: _packable asks for every module of every traced subtree.
    check = getattr(getattr(torch.ops, "mkldnn", None), "_is_mkldnn_bf16_supported", None)
    return bool(check()) if check is not None else False


def _unary(node: fx.Node, root: nn.Module) -> tuple[str, list, str | None] | None:
    """oneDNN's name and scalars for the activation ``node`` computes, if it has one."""
    if node.op == "call_module":
        m = root.get_submodule(node.target)
        kind = type(m)
        if kind is nn.ReLU:
            return "relu", [], None
        if kind is nn.ReLU6:
            return "hardtanh", [0.0, 6.0], None
        if kind is nn.Hardtanh:
            return "hardtanh", [m.min_val, m.max_val], None
        if kind is nn.SiLU:
            return "swish", [], None
        if kind is nn.Hardswish:
            return "hardswish", [], None
        if kind is nn.Sigmoid:
            return "sigmoid", [], None
        if kind is nn.Tanh:
            return "tanh", [], None
        if kind is nn.LeakyReLU:
            return "leaky_relu", [m.negative_slope], None
        if kind is nn.GELU:
            return "gelu", [], m.approximate
        return None
    if node.op == "call_function" and node.target in (F.relu, torch.relu) and \
            len(node.args) == 1 and not node.kwargs.get("inplace", False):
        return "relu", [], None
    if node.op == "call_method" and node.target in ("relu", "relu_") and len(node.args) == 1:
        return "relu", [], None
    return None


def _is_relu(node: fx.Node, root: nn.Module) -> bool:
    found = _unary(node, root)
    return found is not None and found[0] == "relu"


_ADDS = (operator.add, operator.iadd, torch.add)


class FusedConv2d(nn.Module):
    """A Conv2d and what follows it as one oneDNN call, with the weight packed for that call.

    ``forward(x)`` is ``act(conv(x))``; ``forward(x, other)`` is ``post(conv(x) + other)``. The
    original conv stays as ``.conv`` (for its weights, its repr and its name in state dicts);
    the packed copy is a plain attribute, since oneDNN's blocked tensors cannot be saved.
    """

    def __init__(self, conv: nn.Conv2d, input_size: tuple[int, ...] | None,
                 unary: tuple[str, list, str | None] | None = None, binary: str | None = None):
        super().__init__()
        if binary not in (None, "add", "sum_"):
            raise ValueError(f"binary must be None, 'add' or 'sum_', got {binary!r}")
        self.conv = conv
        self.args = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)
        self.unary = unary or ("none", [], None)
        # 'sum_' accumulates into ``other`` in place (no new activation allocated), 'add' reads
        # it and writes a new tensor; the graph pass picks 'sum_' only where nothing reads
        # ``other`` afterwards.
        self.binary = binary
        self.input_size = input_size
        self._pack()

    def _pack(self) -> None:
        weight = self.conv.weight.detach()
        if not _packable(self.conv):
            raise RuntimeError("a convolution fused for oneDNN runs on the CPU in float32 (or "
                               "bfloat16 where oneDNN has bf16 kernels); call optimize() again "
                               "for another device or dtype")
        if self.input_size is not None:
            weight = torch.ops.mkldnn._reorder_convolution_weight(
                weight, *self.args, list(self.input_size))
        object.__setattr__(self, "packed", weight)
        object.__setattr__(self, "bias", None if self.conv.bias is None
                           else self.conv.bias.detach())

    def _apply(self, fn, recurse=True):
        # .to() / .float() reach the conv's weight; the packed copy is made again from it.
        super()._apply(fn, recurse)
        self._pack()
        return self

    def __deepcopy__(self, memo):
        # oneDNN's blocked tensors have no storage to copy: pack the copied weight again.
        return FusedConv2d(copy.deepcopy(self.conv, memo), self.input_size, self.unary,
                           self.binary)

    def forward(self, x: torch.Tensor, other: torch.Tensor | None = None) -> torch.Tensor:
        padding, stride, dilation, groups = self.args
        bias = self.bias
        attr, scalars, algorithm = self.unary
        if other is None:
            return torch.ops.mkldnn._convolution_pointwise(
                x, self.packed, bias, padding, stride, dilation, groups, attr, scalars,
                algorithm)
        post = None if attr == "none" else attr
        if self.binary == "sum_":
            return torch.ops.mkldnn._convolution_pointwise_.binary(
                other, x, self.packed, bias, padding, stride, dilation, groups, "add", 1.0,
                post, scalars, algorithm)
        return torch.ops.mkldnn._convolution_pointwise.binary(
            x, other, self.packed, bias, padding, stride, dilation, groups, "add", None,
            post, scalars, algorithm)

    def extra_repr(self) -> str:
        post = {None: "", "add": "+ other, ", "sum_": "other += conv, then "}[self.binary]
        return f"{post}{self.unary[0]}"


def _packable(conv: nn.Module) -> bool:
    return (type(conv) in _PLAIN_CONVS and conv.padding_mode == "zeros"
            and not isinstance(conv.padding, str) and conv.weight.device.type == "cpu"
            and available(conv.weight.dtype))


def _skip_identities(node: fx.Node, root: nn.Module) -> fx.Node:
    # Folding leaves an Identity where each BatchNorm was; the value passes through unchanged.
    while len(node.users) == 1:
        (user,) = node.users
        if user.op == "call_module" and type(root.get_submodule(user.target)) is nn.Identity:
            node = user
        else:
            break
    return node


def _through_identities(node: fx.Node, root: nn.Module) -> fx.Node:
    while node.op == "call_module" and type(root.get_submodule(node.target)) is nn.Identity:
        node = node.args[0]
    return node


def _reusable(other: fx.Node, add: fx.Node, tail: fx.Node, root: nn.Module,
              input_owned: bool = False) -> bool:
    """Whether the fused call may overwrite ``other``: a fresh tensor read by nothing after.

    Fresh means a conv's output, or the graph's only input when ``input_owned`` (the caller
    made it and reads it no more: a block after another in a Sequential). Nothing else is
    overwritten, since a view or an in-place result would alias another tensor.
    """
    order = {n: i for i, n in enumerate(tail.graph.nodes)}
    chain, src = [other], other
    while src.op == "call_module" and type(root.get_submodule(src.target)) is nn.Identity:
        src = src.args[0]
        chain.append(src)
    fresh_input = input_owned and src.op == "placeholder" and \
        sum(n.op == "placeholder" for n in tail.graph.nodes) == 1
    if not fresh_input and (src.op != "call_module" or type(
            root.get_submodule(src.target)) not in (*_PLAIN_CONVS, FusedConv2d)):
        return False
    allowed = {add, *chain}
    # The conv may not read what it writes into (``relu(conv(x) + x)``): oneDNN would
    # overwrite pixels its window still has to read.
    conv = _through_identities(add.args[0] if add.args[1] is other else add.args[1], root)
    if conv.op == "call_module" and conv.args and isinstance(conv.args[0], fx.Node) and \
            _through_identities(conv.args[0], root) is src:
        return False
    return all(order[u] < order[tail] for n in chain for u in n.users if u not in allowed)


def _fuse_graph(gm: fx.GraphModule, real: nn.Module, shapes: dict[int, tuple[int, ...]],
                rewrite_ok: bool, input_owned: bool = False) -> tuple[int, bool]:
    """Fuse the patterns in ``gm`` (traced from ``real``); return (how many, graph rewritten).

    A conv followed by an activation module called nowhere else needs no new graph: the conv
    becomes the fused call and the activation an Identity, in ``real`` itself. A residual add
    or an activation written as a function call changes the forward, so it is done only where
    ``rewrite_ok`` (the caller then runs the rewritten graph in ``real``'s place); elsewhere
    that conv is left alone, for the block whose own forward holds the pattern.
    """
    graph, count, rewritten = gm.graph, 0, False
    calls = module_calls(graph)
    for node in list(graph.nodes):
        if node.op != "call_module" or calls.get(node.target) != 1 or len(node.args) != 1 \
                or node.kwargs:
            continue
        conv = gm.get_submodule(node.target)
        if not _packable(conv):
            continue
        last = _skip_identities(node, gm)
        unary, other, tail, user = None, None, last, None
        if len(last.users) == 1:
            (user,) = last.users
            unary = _unary(user, gm)
            if unary is not None:
                tail = user
            elif user.op == "call_function" and user.target in _ADDS and len(user.args) == 2 \
                    and not user.kwargs and user.users:
                a, b = user.args
                # ``other += conv(x)`` would change ``other`` in place, which the fused call
                # does not do; only the conv's own output may be the one updated.
                other = b if a is last else \
                    a if b is last and user.target is not operator.iadd else None
                if isinstance(other, fx.Node) and other is not last:
                    tail = user
                    # ``conv + other``, and the ReLU after it when that is the sum's only reader.
                    (after, *more) = user.users
                    if not more and _is_relu(after, gm):
                        unary, tail = ("relu", [], None), after
                else:
                    other = None
        act_module = tail is not last and other is None and tail.op == "call_module"
        in_place = other is None and (tail is last or (act_module and calls[tail.target] == 1))
        if not in_place and not rewrite_ok:
            continue
        binary = None if other is None else "sum_" if _reusable(other, user, tail, gm, input_owned) \
            else "add"
        fused = FusedConv2d(conv, shapes.get(id(conv)), unary, binary=binary)
        real.set_submodule(node.target, fused)
        gm.set_submodule(node.target, fused)
        if in_place:
            if act_module:
                real.set_submodule(tail.target, nn.Identity())
            count += 1
            continue
        rewritten = True
        # The fused call goes where the tail was: all its inputs exist by then.
        with graph.inserting_before(tail):
            new = graph.call_module(node.target, (node.args[0],) if other is None
                                    else (node.args[0], other))
        tail.replace_all_uses_with(new)
        # Erase from the tail back to the conv: each node's readers are gone before it.
        cur = tail
        while True:
            (prev, *_) = cur.args if cur is not node else (None,)
            if other is not None and cur is user:
                prev = last  # the add: its other input stays
            graph.erase_node(cur)
            if cur is node:
                break
            cur = prev
        count += 1
    if rewritten:
        graph.lint()
        gm.recompile()
    return count, rewritten


_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


class _Tracer(PerfTracer):
    # A conv fused at an outer level is one call in the graphs of the blocks inside it.
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, FusedConv2d) or super().is_leaf_module(m, qualname)


def _has_unfused_conv(module: nn.Module) -> bool:
    if isinstance(module, FusedConv2d):
        return False
    return _packable(module) or any(_has_unfused_conv(c) for c in module.children())


def _fuse_module(module: nn.Module, shapes: dict[int, tuple[int, ...]],
                 replaceable: bool, input_owned: bool = False) -> tuple[nn.Module, int]:
    # Tracing is the cost here (a DenseNet has hundreds of modules): a subtree with no conv
    # left to fuse, or a conv alone, has no pattern in its forward.
    if _packable(module) or not _has_unfused_conv(module):
        return module, 0
    try:
        gm = fx.GraphModule(module, _Tracer().trace(module))
    except Exception:  # noqa: BLE001 - any tracing failure means: look one level down
        gm = None
    total = 0
    if gm is not None:
        # A container's forward only chains its children, so nothing in it needs rewriting;
        # keeping it (not a GraphModule) keeps ``model.stages[0]`` and its kind working.
        rewrite_ok = replaceable and not isinstance(module, _CONTAINERS)
        total, rewritten = _fuse_graph(gm, module, shapes, rewrite_ok, input_owned)
        if rewritten:
            # The rewritten forward, over the module's own children (the trace put bare
            # stand-ins in their place): names, kinds and indexing below stay as they were.
            for name, child in module.named_children():
                setattr(gm, name, child)
            return gm, total
    previous = None
    for name, child in list(module.named_children()):
        new, n = _fuse_module(child, shapes, True, _owns_input(module, previous, input_owned))
        previous = new
        if new is not child:
            setattr(module, name, new)
        total += n
    return module, total


def _owns_input(parent: nn.Module, previous: nn.Module | None, parent_owned: bool) -> bool:
    """Whether a child of ``parent`` may overwrite its input once it has read it.

    Only a Sequential says who reads what: its first child gets the Sequential's own input
    (owned only if that was), each later child the output of the one before, which nothing
    else reads. A computing child (one with weights) makes a new tensor; a weightless one
    (Identity, Dropout, a view) may hand on its input, so ownership passes through it as is.
    """
    # A subclass with its own forward may feed one input to every child.
    if not isinstance(parent, nn.Sequential) or type(parent).forward is not nn.Sequential.forward:
        return False
    if previous is None:
        return parent_owned
    return next(previous.parameters(), None) is not None or parent_owned


def count_fused(model: nn.Module) -> int:
    return sum(isinstance(m, FusedConv2d) for m in model.modules())


@torch.no_grad()
def fuse_for_cpu(model: nn.Module, example: torch.Tensor) -> int:
    """Fuse, in place, every convolution the patterns above match; return how many.

    ``example`` is run once to learn each convolution's input size, which picks the packed
    weight layout (another size still works: oneDNN reorders then). The model itself keeps its
    class; its children that fx traced are replaced by rewritten GraphModules. As with torch's
    in-place activations, a block's output may later be overwritten by the next block in its
    Sequential (never the model's input or output): a forward hook that keeps one must clone it.
    """
    if not available():
        return 0
    shapes: dict[int, tuple[int, ...]] = {}
    hooks = [m.register_forward_hook(
        lambda mod, args, out: shapes.__setitem__(id(mod), tuple(args[0].shape)))
        for m in model.modules() if _packable(m)]
    try:
        model(example)
    finally:
        for h in hooks:
            h.remove()
    _fuse_module(model, shapes, replaceable=False)
    # What no pattern took (a conv read by several, an add in the model's own forward, which
    # stays the caller's class) still runs as one call on a packed weight.
    for name, m in list(model.named_modules()):
        if _packable(m) and name and not isinstance(model.get_submodule(
                name.rpartition(".")[0]), FusedConv2d):
            model.set_submodule(name, FusedConv2d(m, shapes.get(id(m))))
    return count_fused(model)
