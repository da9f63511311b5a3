"""`cnnzoo evolution -o DIR`: the atlas of every registered model, as one HTML page and charts."""
from __future__ import annotations

import argparse
import os
import sys

from ..errors import CnnzooError
from ..inspect.atlas import DOCS_URL, build_atlas
from ..inspect.variants import check_variant
from ..registry import list_models
from ._types import add_set_option

NAME = "evolution"
HELP = "the atlas: build and measure every model; timeline, charts, table, diagrams in one page"
ORDER = 70


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", required=True, metavar="DIR",
                   help="folder for index.html, the charts (svg, png) and the diagrams")
    p.add_argument("--models", default="*", metavar="PATTERN",
                   help="only the models matching this shell wildcard (default: all)")
    p.add_argument("--runs", type=int, default=3,
                   help="timed runs per model for the CPU latency (median; default 3)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads for the latency (default 1: comparable across machines)")
    p.add_argument("--timed", default="*", metavar="PATTERN",
                   help="time only the models matching this wildcard (default: all of them)")
    p.add_argument("--quick", action="store_true",
                   help="skip the latency: params, MACs and diagrams only (seconds, not minutes)")
    p.add_argument("--docs-url", default=DOCS_URL, metavar="URL",
                   help="where each model's docs link points: the site `make docs` builds "
                        f"(default {DOCS_URL}, relative to DIR)")
    p.add_argument("--force", action="store_true", help="overwrite an atlas already in DIR")
    add_set_option(p)


def run(args: argparse.Namespace) -> int:
    if args.runs < 1 or args.threads < 1:
        raise CnnzooError(f"--runs and --threads must be at least 1, got {args.runs} and "
                          f"{args.threads}")
    if not list_models(args.models):
        raise CnnzooError(f"no registered model matches {args.models!r} (`cnnzoo list` shows them)")
    index = os.path.join(args.output, "index.html")
    if os.path.exists(index) and not args.force:
        raise CnnzooError(f"{index} exists; pass --force to overwrite the atlas")
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise CnnzooError(f"{args.output} is a file, not a folder")
    settings = dict(args.settings)
    for name in list_models(args.models):  # a wrong key is one line before minutes of measuring
        check_variant(name, settings)
    build_atlas(args.output, args.models, quick=args.quick, runs=args.runs,
                threads=args.threads, settings=settings, timed=args.timed,
                docs_url=args.docs_url,
                log=lambda line: print(line, file=sys.stderr, flush=True))
    print(index)
    return 0
