"""`cnnzoo list [PATTERN]`: the registry as a timeline."""
from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

from ..inspect.param_table import listed_param_count
from ..registry import default_cfg, list_models, model_card

NAME = "list"
HELP = "list registered models by year: family, params, paper top-1"
ORDER = 10


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default="*", help="shell wildcard, e.g. 'resnet*'")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def rows(pattern: str) -> list[dict]:
    out = []
    for name in list_models(pattern):
        card, cfg = model_card(name), default_cfg(name)
        out.append(dict(name=name, family=card.family, year=card.year,
                        params=listed_param_count(name), top1=card.top1,
                        input_size=list(cfg.input_size), paper=card.paper, arxiv=card.arxiv,
                        innovation=card.innovation))
    return out


def run(args: argparse.Namespace) -> int:
    found = rows(args.pattern)
    if not found:
        print(f"no registered model matches {args.pattern!r} (`cnnzoo list` shows them all)")
        return 1
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    table = Table(title=f"cnnzoo models matching {args.pattern!r}" if args.pattern != "*" else
                  f"cnnzoo: {len(found)} models, 1998 to now")
    for col, justify in (("model", "left"), ("family", "left"), ("year", "right"),
                         ("params", "right"), ("input", "right"), ("paper top-1", "right")):
        table.add_column(col, justify=justify)
    for r in found:
        table.add_row(r["name"], r["family"], str(r["year"]), f"{r['params'] / 1e6:.2f}M",
                      "x".join(map(str, r["input_size"])),
                      "-" if r["top1"] is None else f"{r['top1']:.1f}%")
    Console(width=120).print(table)
    return 0
