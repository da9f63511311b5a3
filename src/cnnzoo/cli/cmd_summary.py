"""`cnnzoo summary MODEL`: the layer table, totals, and the receptive field of each stage."""
from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

from ..inspect.build import build, shape_error
from ..inspect.receptive_field import stage_receptive_fields
from ..inspect.summary import summary
from ..inspect.variants import checked_settings, create_variant
from ._types import add_set_option

NAME = "summary"
HELP = "layer table: output shapes, params (trainable/frozen), MACs, FLOPs, memory; --rf"
ORDER = 20


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a registered name (see `cnnzoo list`), a saved-model or "
                                 "training run folder, or hf-hub:ORG/NAME[@REVISION]")
    p.add_argument("--input-size", nargs=3, type=int, metavar=("C", "H", "W"),
                   help="input channels, height and width (default: the model's own)")
    p.add_argument("--depth", type=int, default=4, metavar="N",
                   help="show modules down to N name levels (stages.2.blocks.1 is 4; 0 for "
                        "totals only; default 4)")
    p.add_argument("--all", action="store_true", help="every module, however deep")
    p.add_argument("--rf", action="store_true",
                   help="also the theoretical receptive field, stride and jump of each stage")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_set_option(p)


def run(args: argparse.Namespace) -> int:
    settings = checked_settings(args.model, args.settings)
    model, size = create_variant(args.model, settings,
                                 lambda **kw: build(args.model, args.input_size, **kw))
    try:
        s = summary(model, size, depth=None if args.all else args.depth)
        rf = stage_receptive_fields(model, size) if args.rf else None
    except RuntimeError as exc:
        raise shape_error(args.model, size, exc) from None
    if args.json:
        out = s.to_dict()
        if rf is not None:
            out["receptive_fields"] = [r.to_dict() for r in rf]
        print(json.dumps(out, indent=2))
        return 0
    console = Console(width=120)
    if s.visible_rows():
        console.print(s.table())
        print()
    print(s.totals_text())
    if rf is not None:
        table = Table(title="receptive field per stage (theoretical, input pixels)",
                      title_justify="left")
        for col in ("stage", "output shape", "RF size", "stride", "jump"):
            table.add_column(col, justify="left" if col == "stage" else "right")
        for r in rf:
            table.add_row(r.module, "×".join(map(str, r.shape or ())), str(r.size), str(r.stride),
                          str(r.jump))
        print()
        console.print(table)
    return 0
