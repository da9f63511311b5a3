"""`cnnzoo draw MODEL -o FILE.svg`: the architecture as a block diagram, through Graphviz."""
from __future__ import annotations

import argparse
import os
import sys

from ..errors import CnnzooError
from ..inspect.build import build, shape_error
from ..inspect.draw import FORMATS, auto_depth, build_view, dot_available, render, to_dot
from ..inspect.graph import trace, trace_module
from ..inspect.variants import checked_settings, create_variant
from ._types import add_set_option

NAME = "draw"
HELP = "draw the architecture as a block diagram (svg, png, pdf or Graphviz dot source)"
ORDER = 30


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a registered name (see `cnnzoo list`), a saved-model or "
                                 "training run folder, or hf-hub:ORG/NAME[@REVISION]")
    p.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="FILE.svg, FILE.png, FILE.pdf or FILE.dot")
    p.add_argument("--depth", default=None, metavar="N|auto",
                   help="fold modules deeper than N name levels into one box (stages.2.blocks.1 "
                        "is 4); 'auto' picks the deepest that stays readable; default: every layer")
    p.add_argument("--input-size", nargs=3, type=int, metavar=("C", "H", "W"),
                   help="input channels, height and width (default: the model's own)")
    p.add_argument("--module", default=None, metavar="PATH",
                   help="draw only this module (stages.0.blocks.0) at full detail, with the "
                        "shapes it sees in the whole network")
    add_set_option(p)
    p.add_argument("--force", action="store_true", help="overwrite FILE if it exists")


def _check_target(path: str, force: bool) -> None:
    if os.path.exists(path) and not force:
        raise CnnzooError(f"{path} exists; pass --force to overwrite it")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise CnnzooError(f"folder {parent} does not exist")


def run(args: argparse.Namespace) -> int:
    fmt = os.path.splitext(args.output)[1].lstrip(".").lower()
    if fmt not in FORMATS:
        raise CnnzooError(f"cannot draw to {args.output!r}: the name must end in "
                          f"{', '.join('.' + f for f in FORMATS)}")
    _check_target(args.output, args.force)
    if args.depth not in (None, "auto") and not str(args.depth).isdigit():
        raise CnnzooError(f"--depth must be a number or 'auto', got {args.depth!r}")
    settings = checked_settings(args.model, args.settings)
    model, size = create_variant(args.model, settings,
                                 lambda **kw: build(args.model, args.input_size, **kw))
    try:
        graph = trace_module(model, args.module, size) if args.module else trace(model, size)
    except RuntimeError as exc:
        raise shape_error(args.model, size, exc) from None
    depth = auto_depth(graph) if args.depth == "auto" else \
        None if args.depth is None else max(1, int(args.depth))
    view = build_view(graph, depth)
    variant = "".join(f", {k}={v!r}" for k, v in settings.items())
    title = f"{args.model}{variant}  ({'x'.join(map(str, size))} input)"
    if args.module:
        title = (f"{args.model}{variant} · {args.module}: {type(graph.model).__name__}  "
                 f"({'x'.join(map(str, graph.input_size))} in, of a "
                 f"{'x'.join(map(str, size))} image)")
    source = to_dot(view, title)
    if fmt != "dot" and not dot_available():
        dot_path = os.path.splitext(args.output)[0] + ".dot"
        _check_target(dot_path, args.force)
        render(source, dot_path, "dot")
        print(f"cnnzoo: Graphviz's `dot` is not installed, so {args.output} was not drawn; "
              f"wrote the diagram's source to {dot_path}. Install Graphviz (Debian: apt-get "
              f"install graphviz) and run: dot -T{fmt} {dot_path} -o {args.output}",
              file=sys.stderr)
        return 1
    render(source, args.output, fmt)
    print(f"wrote {args.output} ({len(view.boxes)} boxes"
          f"{'' if depth is None else f', folded at depth {depth}'})")
    return 0
