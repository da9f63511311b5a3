"""A model as a graph of layers: a torch.fx trace with the shape of every tensor.

Diagrams and receptive fields both need the real data flow (a residual's skip, an Inception
module's parallel towers, a dense block's concatenations), which a module tree alone does not
give. torch.fx records it without running the network's arithmetic when the model sits on the
meta device, so even EfficientNet-B7 at 600x600 traces in a moment.

Tracing is generic: whatever a family writes, a module whose ``forward`` fx cannot follow
(a Python ``if`` on a tensor's shape, say) is retried as one opaque leaf, so every registered
model gets a graph, only coarser where its code is dynamic.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
import torch.fx as fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from .meta import meta_norms

# How many modules may be turned into leaves before giving up on a model.
_MAX_RETRIES = 40


@dataclass
class GNode:
    """One operation of the traced network."""

    name: str                        # unique fx node name
    op: str                          # 'input', 'module', 'function', 'output'
    target: str                      # module path ('stages.0.blocks.1.conv2') or function name
    module: nn.Module | None = field(repr=False)
    inputs: list[str]                # names of the tensor-valued nodes it reads
    shape: tuple[int, ...] | None    # its output shape without the batch dimension
    scope: tuple[str, ...]           # the module paths it is inside, outer to inner
    fn: object = None                # the function or method name of a 'function' node
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)


@dataclass
class ModelGraph:
    model: nn.Module
    input_size: tuple[int, ...]
    nodes: list[GNode]               # topological order
    module_outputs: dict[str, str]   # module path -> name of the node holding its output

    def node(self, name: str) -> GNode:
        return self._by_name[name]

    def __post_init__(self) -> None:
        self._by_name = {n.name: n for n in self.nodes}

    def output_of(self, path: str) -> GNode | None:
        name = self.module_outputs.get(path)
        return self._by_name.get(name) if name else None


def is_atomic(m: nn.Module) -> bool:
    """A Sequential of plain torch layers (ConvNormAct, a stem) reads as one layer in a diagram."""
    children = list(m.children())
    return (isinstance(m, nn.Sequential) and len(children) > 0
            and all(_is_torch_layer(c) for c in children))


def _is_torch_layer(m: nn.Module) -> bool:
    mod = type(m).__module__
    return (mod.startswith("torch.nn") or mod.startswith("torchvision.ops")) and not isinstance(
        m, (nn.Sequential, nn.ModuleList, nn.ModuleDict))


class _Tracer(fx.Tracer):
    def __init__(self, leaves: set[str], atomic: bool, guess_bools: bool = False):
        super().__init__()
        self.leaves = leaves
        self.atomic = atomic
        self.guess_bools = guess_bools
        self.module_outputs: dict[str, str] = {}
        self.failed_at: str | None = None

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if qualname in self.leaves or (self.atomic and is_atomic(m)):
            return True
        return super().is_leaf_module(m, qualname)

    def to_bool(self, obj):
        # Only the root module can need this (any other is retried as a leaf): a drawn block
        # whose own forward asks a tensor a question (is it channels-last?) takes the False
        # branch, the plain one.
        return False if self.guess_bools else super().to_bool(obj)

    def call_module(self, m, forward, args, kwargs):
        path = self.path_of_module(m)
        try:
            out = super().call_module(m, forward, args, kwargs)
        except Exception:
            # The innermost failing module is the first to see the exception.
            if self.failed_at is None:
                self.failed_at = path
            raise
        if isinstance(out, fx.Proxy) and path not in self.module_outputs:
            self.module_outputs[path] = out.node.name
        return out


def trace(model: nn.Module, input_size: tuple[int, ...] | None = None, *,
          atomic: bool = True, guess_bools: bool = False) -> ModelGraph:
    """Trace ``model`` and propagate shapes for one input of ``input_size`` (C, H, W).

    ``atomic=True`` keeps Sequentials of plain torch layers (conv-norm-act) as single nodes, as
    a diagram wants; receptive fields use ``atomic=False`` to see every layer.
    ``guess_bools=True`` follows the False branch of every question a forward asks a tensor
    (is it channels-last?) instead of folding that module into one box: one block drawn at full
    detail wants its insides, a deformable conv's offset branch among them.
    """
    if input_size is None:
        input_size = tuple(model.default_cfg.input_size)
    # Traced in eval mode: the graph of inference (no auxiliary heads, no stochastic depth).
    was_training = model.training
    model.eval()
    try:
        return _trace(model, tuple(input_size), atomic, guess_bools)
    finally:
        model.train(was_training)


def _trace(model: nn.Module, input_size: tuple[int, ...], atomic: bool,
           guess: bool) -> ModelGraph:
    leaves: set[str] = set()
    for _ in range(_MAX_RETRIES):
        tracer = _Tracer(leaves, atomic, guess)
        try:
            graph = tracer.trace(model)
            break
        except fx.proxy.TraceError:
            if tracer.failed_at is None and not guess:
                guess = True
                continue
            if tracer.failed_at is None or tracer.failed_at in leaves:
                raise
            leaves.add(tracer.failed_at)
        except Exception:
            if tracer.failed_at is None or tracer.failed_at in leaves:
                raise
            leaves.add(tracer.failed_at)
    else:  # pragma: no cover - a model that needs more opaque modules than this is a bug
        raise RuntimeError(f"could not trace {type(model).__name__}")
    gm = fx.GraphModule(model, graph)
    _propagate_shapes(gm, model, input_size)
    return _to_model_graph(model, input_size, gm, tracer.module_outputs)


def _propagate_shapes(gm: fx.GraphModule, model: nn.Module, input_size) -> None:
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    with torch.no_grad(), meta_norms(device):
        ShapeProp(gm).propagate(torch.zeros(1, *input_size, device=device))


def _shape(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    if meta is None or not hasattr(meta, "shape"):
        return None
    return tuple(meta.shape[1:])


def _scope(node: fx.Node) -> tuple[str, ...]:
    stack = node.meta.get("nn_module_stack") or {}
    paths = [qualname for qualname, _ in stack.values() if qualname]
    if node.op == "call_module" and paths and paths[-1] == node.target:
        paths = paths[:-1]
    return tuple(paths)


def _to_model_graph(model, input_size, gm: fx.GraphModule, module_outputs) -> ModelGraph:
    nodes: list[GNode] = []
    tensor_nodes: set[str] = set()
    for n in gm.graph.nodes:
        shape = _shape(n)
        inputs = [a.name for a in n.all_input_nodes if a.name in tensor_nodes]
        if n.op == "placeholder":
            op, target, module, fn = "input", "input", None, None
        elif n.op == "output":
            op, target, module, fn = "output", "output", None, None
        elif n.op == "call_module":
            op, target, module, fn = "module", str(n.target), gm.get_submodule(n.target), None
        elif n.op in ("call_function", "call_method"):
            op, fn = "function", n.target
            target = n.target if isinstance(n.target, str) else getattr(
                n.target, "__name__", str(n.target))
            module = None
        else:  # get_attr: a parameter used directly, not a step of the data flow
            continue
        if shape is None and op not in ("input", "output"):
            continue  # sizes and other non-tensor values are bookkeeping, not data flow
        tensor_nodes.add(n.name)
        nodes.append(GNode(n.name, op, target, module, inputs, shape, _scope(n), fn,
                           tuple(n.args), dict(n.kwargs)))
        if op == "module":
            module_outputs.setdefault(target, n.name)
    out = nodes[-1]
    if out.op == "output" and out.inputs:
        out.shape = nodes[[x.name for x in nodes].index(out.inputs[0])].shape
    return ModelGraph(model, tuple(input_size), nodes, dict(module_outputs))


ADD_OPS = (operator.add, operator.iadd, torch.add, "add", "add_")
MUL_OPS = (operator.mul, operator.imul, torch.mul, "mul", "mul_")
CAT_OPS = (torch.cat, torch.concat, "cat")


def module_input_size(model: nn.Module, path: str,
                      input_size: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """The shape (without the batch) of what ``model``'s module at ``path`` receives, found by
    one pass of the whole model (free on the meta device).

    A module that is never called in inference, or that takes more than one tensor, is a
    ``CnnzooError``: it has no single input to draw from.
    """
    from ..errors import CnnzooError

    module = find_module(model, path)
    if input_size is None:
        input_size = tuple(model.default_cfg.input_size)
    seen: list = []

    def grab(_m, args):
        if not seen:
            seen.append(args)

    handle = module.register_forward_pre_hook(grab)
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), meta_norms(device):
            model(torch.zeros(1, *input_size, device=device))
    finally:
        handle.remove()
        model.train(was_training)
    if not seen:
        raise CnnzooError(f"module {path!r} is not called in inference, so it has no input "
                          f"to draw it from")
    tensors = [a for a in seen[0] if isinstance(a, torch.Tensor)]
    if len(tensors) != 1 or len(tensors) != len(seen[0]):
        raise CnnzooError(f"module {path!r} takes {len(seen[0])} inputs, not one tensor; "
                          f"draw the module around it")
    return tuple(tensors[0].shape[1:])


def find_module(model: nn.Module, path: str) -> nn.Module:
    """``model.get_submodule(path)``, with a wrong path said in one line with close names."""
    import difflib

    from ..errors import CnnzooError

    names = [n for n, _ in model.named_modules() if n]
    if path not in names:
        close = difflib.get_close_matches(path, names, n=3, cutoff=0.6)
        tops = ", ".join(dict.fromkeys(n.split(".")[0] for n in names))
        hint = f"did you mean {', '.join(close)}?" if close else f"its top-level modules: {tops}"
        raise CnnzooError(f"{getattr(model, 'model_name', type(model).__name__)} has no module "
                          f"{path!r}; {hint}")
    return model.get_submodule(path)


def trace_module(model: nn.Module, path: str,
                 input_size: tuple[int, ...] | None = None) -> ModelGraph:
    """The graph of one module of ``model`` at every layer, with the shapes it sees inside the
    whole network at ``input_size`` (the model's own by default)."""
    shape = module_input_size(model, path, input_size)
    module = model.get_submodule(path)
    try:
        return trace(module, shape, guess_bools=True)
    except Exception:  # a guessed branch that does not run: the module's dynamic parts folded
        return trace(module, shape)
