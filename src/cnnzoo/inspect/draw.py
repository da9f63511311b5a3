"""Block diagrams the way papers draw them, from the traced graph of any model.

Nothing here knows a family: the module tree gives the boxes (a stage, a block), the traced data
flow gives the arrows, so a residual's skip is the arrow that jumps to a '+', an Inception
module's towers are the parallel chains between a fork and a 'concat', and a dense block is a
ladder of concatenations. ``depth`` folds every module deeper than that many name levels
(``stages.2.blocks.1`` is level 4) into one box; runs of identical folded blocks become one
'× n' box, as the ResNet table writes its stages.
"""
from __future__ import annotations

import html
import os
import shutil
import subprocess
from dataclasses import dataclass, field

from torch import nn

from ..errors import CnnzooError
from .describe import describe_function, describe_layer, fmt_shape, layer_kind
from .graph import GNode, ModelGraph

FILL = {"conv": "#cfe2f3", "fc": "#d9ead3", "pool": "#fce5cd", "norm": "#ead1dc",
        "other": "#eeeeee", "group": "#fff2cc", "io": "#ffffff"}
FORMATS = ("svg", "png", "pdf", "dot")


@dataclass
class Box:
    id: str
    kind: str                     # 'layer', 'group', 'function', 'io'
    title: str
    lines: list[str]
    shape: tuple | None
    clusters: tuple[str, ...]     # enclosing module paths, outer to inner
    cls: str = ""                 # the module class of a group (for merging runs)
    fill: str = FILL["other"]
    count: int = 1
    members: list[str] = field(default_factory=list)
    params: int = 0
    outline: str = ""
    last: str = ""                # the last folded block of a '× n' run

    def label_lines(self) -> list[str]:
        if self.kind != "group":
            return self.lines
        lines = [self.cls + (f" ×{self.count}" if self.count > 1 else "")]
        if self.outline:
            lines.append(self.outline)
        if self.params:
            lines.append(f"{_fmt_count(self.params)} params")
        return lines + [fmt_shape(self.shape)]


@dataclass
class View:
    boxes: dict[str, Box]
    edges: list[tuple[str, str]]
    graph: ModelGraph


def _path_of(node: GNode) -> tuple[str, ...]:
    if node.op == "module":
        return tuple(node.target.split("."))
    if node.op == "function":
        inner = node.scope[-1].split(".") if node.scope else []
        return (*inner, "<fn>")
    return ()


def max_depth(graph: ModelGraph) -> int:
    return max((len(_path_of(n)) for n in graph.nodes), default=1)


def build_view(graph: ModelGraph, depth: int | None = None) -> View:
    model = graph.model
    alias: dict[str, str] = {}        # hidden node -> the node it passes through
    owner: dict[str, str] = {}        # graph node -> box id
    boxes: dict[str, Box] = {}
    for n in graph.nodes:
        if n.op == "module" and isinstance(n.module, nn.Identity) and n.inputs:
            alias[n.name] = n.inputs[0]
            continue
        path = _path_of(n)
        if depth is not None and len(path) > depth:
            group = _group_path(model, path, depth)
        else:
            group = None
        if group is not None:
            owner[n.name] = group
            if group not in boxes:
                boxes[group] = _group_box(model, group)
            boxes[group].members.append(n.name)
            continue
        owner[n.name] = n.name
        boxes[n.name] = _node_box(n)
    for gid, box in boxes.items():  # a folded group shows the shape of its module's output
        if box.kind == "group":
            out = graph.output_of(gid)
            box.shape = out.shape if out is not None else graph.node(box.members[-1]).shape
            box.outline = main_path_outline(graph, box.members)

    def resolve(name: str) -> str | None:
        while name in alias:
            name = alias[name]
        return owner.get(name)

    edges: dict[tuple[str, str], None] = {}  # ordered and without repeats
    for n in graph.nodes:
        if n.name not in owner:
            continue
        dst = owner[n.name]
        for i in n.inputs:
            src = resolve(i)
            if src is not None and src != dst:
                edges[(src, dst)] = None
    return _merge_runs(_fold_pointwise(View(boxes, list(edges), graph)))


def _group_path(model: nn.Module, path: tuple[str, ...], depth: int) -> str | None:
    # A container without a forward of its own (a plain ModuleList) is never called: its
    # members are the blocks to fold. A ModuleDict subclass with a forward (DenseNet's dense
    # block in torchvision) is a block like any other.
    for d in range(depth, len(path)):
        prefix = ".".join(path[:d])
        if type(model.get_submodule(prefix)).forward is not nn.Module.forward:
            return prefix
    return None


def _group_box(model: nn.Module, path: str) -> Box:
    m = model.get_submodule(path)
    parts = path.split(".")
    title = path
    n_params = sum(p.numel() for p in m.parameters())
    return Box(path, "group", title, [], None, _prefixes(parts[:-1]), cls=type(m).__name__,
               fill=FILL["group"], members=[], params=n_params)


def _node_box(n: GNode) -> Box:
    if n.op in ("input", "output"):
        return Box(n.name, "io", n.op, [fmt_shape(n.shape)], n.shape, (), fill=FILL["io"])
    if n.op == "function":
        symbol, _ = describe_function(n)
        return Box(n.name, "function", symbol, [], n.shape, _prefixes(list(_path_of(n)[:-1])))
    parts = n.target.split(".")
    return Box(n.name, "layer", parts[-1], [describe_layer(n.module), fmt_shape(n.shape)], n.shape,
               _prefixes(parts[:-1]), fill=FILL[layer_kind(n.module)])


def main_path_outline(graph: ModelGraph, members: list[str], limit: int = 5) -> str:
    """The convolutions on the longest chain through a block: '1×1, 64 → 3×3, 64 → 1×1, 256'.

    The longest chain is the block's main path, so a projection shortcut or the short tower of
    an Inception module stays out of the outline; how many towers meet is said beside it.
    Convolutions on 1×1 maps (a squeeze-excitation gate) are a side branch, named as such.
    """
    inside = set(members)
    best: dict[str, list[nn.Module]] = {}
    widest_cat, gated = 0, False
    for name in members:
        n = graph.node(name)
        chains = [best[i] for i in n.inputs if i in inside]
        chain = max(chains, key=len, default=[])
        convs = _convs(n.module) if n.op == "module" else []
        if convs and n.shape is not None and len(n.shape) == 3 and n.shape[1:] == (1, 1):
            gated, convs = True, []
        best[name] = chain + convs
        if n.op == "function" and describe_function(n)[1] == "cat":
            widest_cat = max(widest_cat, len(n.inputs))
    chain = max(best.values(), key=len, default=[])
    text = ""
    if chain:
        text = (f"{len(chain)} convs deep" if len(chain) > limit else
                " → ".join(_conv_words(c) for c in chain))
    if gated:
        text += " + gate"
    if widest_cat > 1:
        text = f"concat of {widest_cat}" + (f"; longest: {text}" if text else "")
    return text


def _convs(m: nn.Module | None) -> list[nn.Module]:
    return [] if m is None else [c for c in m.modules() if isinstance(c, nn.Conv2d)]


def _conv_words(c: nn.Conv2d) -> str:
    k = c.kernel_size
    text = f"{k[0]}×{k[1]}"
    if c.groups > 1:
        text += " dw" if c.groups == c.in_channels else f" g{c.groups}"
    text += f", {c.out_channels}"
    return text + (f" /{c.stride[0]}" if c.stride[0] > 1 else "")


def _prefixes(parts: list[str]) -> tuple[str, ...]:
    return tuple(".".join(parts[:i]) for i in range(1, len(parts) + 1))


def _fmt_count(n: int) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return str(n)


_POINTWISE = (nn.modules.batchnorm._BatchNorm, nn.Dropout, nn.ReLU, nn.ReLU6, nn.LeakyReLU,
              nn.ELU, nn.PReLU, nn.Tanh, nn.Sigmoid, nn.Hardsigmoid, nn.Hardswish, nn.SiLU,
              nn.GELU, nn.Mish, nn.LocalResponseNorm)


def _fold_pointwise(view: View) -> View:
    """Write 'fc 4096 · ReLU · dropout 0.5' in one box, as papers do, not three boxes in a row.

    A norm, activation or dropout joins the layer before it when that layer feeds nothing else
    and both sit in the same module; after a '+' or at a fork it keeps its own box.
    """
    succ: dict[str, list[str]] = {}
    pred: dict[str, list[str]] = {}
    for a, b in view.edges:
        succ.setdefault(a, []).append(b)
        pred.setdefault(b, []).append(a)
    into: dict[str, str] = {}
    for bid, box in view.boxes.items():
        node = view.graph.node(bid) if box.kind == "layer" else None
        if node is None or not isinstance(node.module, _POINTWISE) or len(pred.get(bid, [])) != 1:
            continue
        head = pred[bid][0]
        head = into.get(head, head)
        target = view.boxes[head]
        if target.kind != "layer" or len(succ.get(pred[bid][0], [])) != 1 \
                or target.clusters != box.clusters:
            continue
        target.lines[0] += " · " + box.lines[0]
        target.lines[-1] = box.lines[-1]
        target.shape = box.shape
        into[bid] = head
    if not into:
        return view
    edges: dict[tuple[str, str], None] = {}
    for a, b in view.edges:
        a, b = into.get(a, a), into.get(b, b)
        if a != b:
            edges[(a, b)] = None
    return View({k: v for k, v in view.boxes.items() if k not in into}, list(edges), view.graph)


def _merge_runs(view: View) -> View:
    """Fold a chain of identical blocks (same class, same output shape) into one '× n' box."""
    succ: dict[str, list[str]] = {}
    pred: dict[str, list[str]] = {}
    for a, b in view.edges:
        succ.setdefault(a, []).append(b)
        pred.setdefault(b, []).append(a)
    boxes = view.boxes
    merged_into: dict[str, str] = {}
    for bid in list(boxes):
        box = boxes[bid]
        if box.kind != "group" or bid in merged_into:
            continue
        nxt = succ.get(bid, [])
        head = bid
        while len(nxt) == 1 and len(pred.get(nxt[0], [])) == 1:
            cand = boxes[nxt[0]]
            if (cand.kind != "group" or cand.cls != box.cls or cand.shape != box.shape
                    or cand.clusters != box.clusters):
                break
            merged_into[cand.id] = head
            box.count += 1
            box.params += cand.params
            box.last = cand.id
            nxt = succ.get(cand.id, [])
        if box.count > 1:
            last = box.last.split(".")[-1]
            box.title = f"{box.title}–{last}"
    if not merged_into:
        return view
    edges: dict[tuple[str, str], None] = {}
    for a, b in view.edges:
        a, b = merged_into.get(a, a), merged_into.get(b, b)
        if a != b:
            edges[(a, b)] = None
    return View({k: v for k, v in boxes.items() if k not in merged_into}, list(edges),
                view.graph)


def auto_depth(graph: ModelGraph, max_boxes: int = 50) -> int:
    """The deepest folding whose diagram stays within ``max_boxes`` boxes."""
    best = 1
    for d in range(1, max_depth(graph) + 1):
        if len(build_view(graph, d).boxes) <= max_boxes:
            best = d
    return best


def to_dot(view: View, title: str = "") -> str:
    model = view.graph.model
    # Clusters: the module paths that hold boxes; a wrapper holding exactly what its parent holds
    # (stages.0 around stages.0.blocks) would only add a frame, so it is dropped.
    content: dict[str, set[str]] = {}
    for box in view.boxes.values():
        for c in box.clusters:
            content.setdefault(c, set()).add(box.id)
    kept: dict[str, str | None] = {}
    for c in sorted(content, key=lambda p: p.count(".")):
        parent = next((p for p in reversed(_prefixes(c.split(".")[:-1])) if p in kept), None)
        if len(content[c]) < 2 or (parent is not None and content[parent] == content[c]):
            continue
        kept[c] = parent
    home: dict[str | None, list[Box]] = {}
    for box in view.boxes.values():
        inner = next((c for c in reversed(box.clusters) if c in kept), None)
        home.setdefault(inner, []).append(box)

    out = ["digraph cnnzoo {", '  graph [rankdir=TB, nodesep=0.2, ranksep=0.28, fontname="Helvetica",'
           ' fontsize=11, labelloc=t, newrank=true' + (f', label=<<b>{_esc(title)}</b>>' if title
                                                       else "") + "];",
           '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=9,'
           ' margin="0.08,0.03", penwidth=0.6];',
           '  edge [arrowsize=0.5, color="#555555", penwidth=0.8];']

    def emit(cluster: str | None, indent: str) -> None:
        for box in home.get(cluster, []):
            out.append(indent + _box_dot(box))
        for i, child in enumerate(c for c, p in kept.items() if p == cluster):
            m = model.get_submodule(child)
            label = child if isinstance(m, (nn.Sequential, nn.ModuleList)) else \
                f"{child}: {type(m).__name__}"
            out.append(f'{indent}subgraph "cluster_{child}" {{')
            out.append(f'{indent}  label=<<font point-size="9">{_esc(label)}</font>>; '
                       f'labeljust=l; style="rounded,dashed"; color="#999999";')
            emit(child, indent + "  ")
            out.append(indent + "}")

    emit(None, "  ")
    # Parallel paths leaving one fork start on one rank, side by side: an Inception module's
    # towers, a projection shortcut beside the block's first conv (each such head has no other
    # input, so none of them can lie on another's path).
    inputs: dict[str, list[str]] = {}
    for a, b in view.edges:
        inputs.setdefault(b, []).append(a)
    forks: dict[str, list[str]] = {}
    for b, srcs in inputs.items():
        if len(srcs) == 1:
            forks.setdefault(srcs[0], []).append(b)
    for heads in forks.values():
        if len(heads) > 1:
            # Invisible flat edges keep the towers in the order the code defines them.
            out.append("  { rank=same; " + " -> ".join(f'"{h}"' for h in heads)
                       + " [style=invis]; }")
    for a, b in view.edges:
        out.append(f'  "{a}" -> "{b}";')
    out.append("}")
    return "\n".join(out) + "\n"


def _esc(text: str) -> str:
    return html.escape(str(text), quote=True)


def _box_dot(box: Box) -> str:
    if box.kind == "function":
        shape = "circle" if len(box.title) <= 1 else "box"
        size = (", width=0.3, height=0.3, fixedsize=true" if shape == "circle" else
                ", height=0.25, margin=\"0.06,0.02\"")
        return (f'"{box.id}" [label=<{_esc(box.title)}>, shape={shape}, style=filled, '
                f'fillcolor="#ffffff", fontsize=10{size}];')
    label = f"<b>{_esc(box.title)}</b>" + "".join(
        f'<br/><font point-size="8">{_esc(line)}</font>' for line in box.label_lines())
    shape = ', shape=oval' if box.kind == "io" else ""
    extra = ', peripheries=2' if box.count > 1 else ""
    return f'"{box.id}" [label=<{label}>, fillcolor="{box.fill}"{shape}{extra}];'


def diagram_source(graph: ModelGraph, depth: int | None = None, title: str = "") -> str:
    return to_dot(build_view(graph, depth), title)


def dot_available() -> bool:
    return shutil.which("dot") is not None


class GraphvizMissing(CnnzooError):
    """Graphviz's ``dot`` is not on PATH: the diagram can only be written as DOT source."""


def render(source: str, path: str | os.PathLike, fmt: str | None = None) -> None:
    """Render DOT ``source`` to ``path`` (svg, png or pdf) with Graphviz's ``dot``."""
    path = os.fspath(path)
    fmt = fmt or os.path.splitext(path)[1].lstrip(".").lower()
    if fmt not in FORMATS:
        raise CnnzooError(f"cannot draw to {path!r}: use one of .svg, .png, .pdf, .dot")
    if fmt == "dot":
        with open(path, "w") as f:
            f.write(source)
        return
    if not dot_available():
        raise GraphvizMissing("Graphviz's `dot` is not installed (Debian: apt-get install graphviz)")
    args = ["dot", f"-T{fmt}", "-o", path] + (["-Gdpi=110"] if fmt == "png" else [])
    proc = subprocess.run(args, input=source, text=True, capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"dot failed: {proc.stderr.strip()[:500]}")


def render_svg_text(source: str) -> str | None:
    """The SVG of a diagram as text (for embedding), or None without Graphviz."""
    if not dot_available():
        return None
    proc = subprocess.run(["dot", "-Tsvg"], input=source, text=True, capture_output=True)
    return proc.stdout if proc.returncode == 0 else None
