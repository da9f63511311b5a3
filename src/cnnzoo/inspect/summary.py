"""``summary(model)``: the Keras-style layer table, with MACs, FLOPs and memory.

One forward pass of one image, with a hook on every module, gives each module's output shape in
call order; torch.utils.flop_counter.FlopCounterMode runs around it and the difference of its
running total between a module's pre- and post-hook is that module's MACs. On the meta device the
pass costs no arithmetic, so the CLI summarises VGG-19 or EfficientNet-B7 in a moment.

torchinfo does most of this, but counts MACs its own way (from parameter counts and output sizes),
which differs from FlopCounterMode for grouped and strided layers and from the published
figures; one hooked pass here gives the same MACs as ``count_macs`` without another dependency.
"""
from __future__ import annotations

import io
from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass
class LayerRow:
    name: str                     # readable module path, '' for the model itself
    type: str
    depth: int                    # levels of the name: 'stages.0.blocks.1' is 4
    output_shape: list | None     # without the batch dimension; None if never called
    params: int                   # this module's parameters, its children's included
    trainable: int
    macs: int                     # of this module's calls, its children's included


@dataclass
class Summary:
    model_name: str
    input_size: tuple[int, ...]
    rows: list[LayerRow]
    total_params: int
    trainable_params: int
    buffers: int                  # numel of buffers (BatchNorm running stats ...)
    macs: int                     # multiply-accumulates, batch 1
    activation_bytes: int         # every leaf module's output, batch 1
    weight_bytes: int             # parameters and buffers
    input_bytes: int
    depth: int | None = None

    @property
    def non_trainable_params(self) -> int:
        return self.total_params - self.trainable_params

    @property
    def flops(self) -> int:
        return 2 * self.macs

    def visible_rows(self) -> list[LayerRow]:
        return [r for r in self.rows if r.name and (self.depth is None or r.depth <= self.depth)]

    def to_dict(self) -> dict:
        return dict(model=self.model_name, input_size=list(self.input_size), depth=self.depth,
                    layers=[asdict(r) for r in self.visible_rows()],
                    totals=dict(params=self.total_params, trainable=self.trainable_params,
                                non_trainable=self.non_trainable_params, buffers=self.buffers,
                                macs=self.macs, flops=self.flops,
                                activation_bytes=self.activation_bytes,
                                weight_bytes=self.weight_bytes, input_bytes=self.input_bytes))

    def table(self):
        from rich import box
        from rich.table import Table
        table = Table(title=f"{self.model_name}  input 1×{'×'.join(map(str, self.input_size))}",
                      title_justify="left", box=box.SIMPLE_HEAD)
        for col, justify in (("layer", "left"), ("type", "left"), ("output shape", "right"),
                             ("params", "right"), ("trainable", "center"), ("MACs", "right")):
            table.add_column(col, justify=justify, no_wrap=col == "layer")
        for r in self.visible_rows():
            frozen = "-" if r.params == 0 else "yes" if r.trainable == r.params else \
                "no" if r.trainable == 0 else "partly"
            table.add_row("  " * (r.depth - 1) + r.name, r.type, _fmt_shape(r.output_shape),
                          f"{r.params:,}", frozen, human(r.macs) if r.macs else "-")
        return table

    def totals_text(self) -> str:
        lines = [
            f"params:       {self.total_params:,} (trainable {self.trainable_params:,}, "
            f"non-trainable {self.non_trainable_params:,})",
            f"buffers:      {self.buffers:,}",
            f"MACs:         {human(self.macs)} multiply-accumulates ({self.macs:,})",
            f"FLOPs:        {human(self.flops)} (= 2 x MACs; conv and matmul only)",
            f"activations:  {mib(self.activation_bytes)} (outputs of every layer, batch 1)",
            f"weights:      {mib(self.weight_bytes)} (params + buffers)",
            f"input:        {mib(self.input_bytes)}",
        ]
        return "\n".join(lines)

    def __str__(self) -> str:
        from rich.console import Console
        buf = io.StringIO()
        Console(file=buf, width=120, no_color=True, force_terminal=False).print(self.table())
        return buf.getvalue() + "\n" + self.totals_text() + "\n"


def human(n: float) -> str:
    for unit, div in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"


def mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def _fmt_shape(shape) -> str:
    if shape is None:
        return "not run"
    if shape and isinstance(shape[0], list):
        return ", ".join(_fmt_shape(s) for s in shape)
    return "×".join(map(str, shape)) if shape else "scalar"


def _out_shape(out):
    if isinstance(out, torch.Tensor):
        return list(out.shape[1:])
    if isinstance(out, (list, tuple)):
        shapes = [_out_shape(o) for o in out if isinstance(o, torch.Tensor)]
        return shapes or None
    return None


def _out_bytes(out, seen: dict) -> int:
    # An in-place activation or an Identity returns a tensor already counted; ``seen`` keeps the
    # tensors alive for the pass so their ids stay unique.
    if isinstance(out, torch.Tensor):
        if id(out) in seen:
            return 0
        seen[id(out)] = out
        return out.numel() * out.element_size()
    if isinstance(out, (list, tuple)):
        return sum(_out_bytes(o, seen) for o in out)
    return 0


def summary(model: nn.Module, input_size: tuple[int, ...] | None = None,
            depth: int | None = None) -> Summary:
    """Summarise ``model`` for one image of ``input_size`` (C, H, W; default: its default_cfg).

    Rows deeper than ``depth`` name levels are folded into their parents (totals never change).
    A model on the meta device is summarised without computing anything.
    """
    if input_size is None:
        cfg = getattr(model, "default_cfg", None)
        if cfg is None:
            raise ValueError("input_size is needed for a model without default_cfg")
        input_size = tuple(cfg.input_size)
    input_size = tuple(int(s) for s in input_size)
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")

    order: list[str] = []
    shapes: dict[str, list | None] = {}
    macs: dict[str, int] = {}
    start: dict[str, list[int]] = {}
    leaf_bytes = [0]
    seen: dict = {}
    from .counts import flop_counter
    counter = flop_counter(model)
    handles = []
    for name, m in model.named_modules():
        is_leaf = not list(m.children())

        def pre(_m, _args, name=name):
            if name not in shapes:
                order.append(name)
                shapes[name] = None
            start.setdefault(name, []).append(counter.get_total_flops())

        def post(_m, _args, out, name=name, is_leaf=is_leaf):
            if shapes[name] is None:
                shapes[name] = _out_shape(out)
            macs[name] = macs.get(name, 0) + (counter.get_total_flops() - start[name].pop()) // 2
            if is_leaf:
                leaf_bytes[0] += _out_bytes(out, seen)

        handles.append(m.register_forward_pre_hook(pre))
        handles.append(m.register_forward_hook(post))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), counter:
            model(torch.zeros(1, *input_size, device=device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()

    modules = dict(model.named_modules())
    names = order + [n for n in modules if n not in shapes]  # modules the forward never called
    rows = []
    for name in names:
        m = modules[name]
        params = list(m.parameters())
        rows.append(LayerRow(name, type(m).__name__, name.count(".") + 1 if name else 0,
                             shapes.get(name), sum(p.numel() for p in params),
                             sum(p.numel() for p in params if p.requires_grad), macs.get(name, 0)))
    all_params = list(model.parameters())
    buffers = list(model.buffers())
    el = torch.empty((), dtype=param.dtype if param is not None else torch.float32).element_size()
    return Summary(
        model_name=getattr(model, "model_name", None) or type(model).__name__,
        input_size=input_size, rows=rows,
        total_params=sum(p.numel() for p in all_params),
        trainable_params=sum(p.numel() for p in all_params if p.requires_grad),
        buffers=sum(b.numel() for b in buffers),
        macs=counter.get_total_flops() // 2,
        activation_bytes=leaf_bytes[0],
        weight_bytes=sum(p.numel() * p.element_size() for p in all_params + buffers),
        input_bytes=el * int(torch.Size(input_size).numel()),
        depth=depth)
