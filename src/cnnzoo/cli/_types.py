"""Argument types shared by the commands: a bad value is argparse's one-line error."""
from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def model_setting(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` of ``--set``: the value read as a Python literal (``alpha=0.5``,
    ``layers=(2,2,2,2)``, ``attn='cbam'``), or as the bare word where it is none (``attn=cbam``)."""
    import ast

    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value = ast.literal_eval(raw.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        value = raw.strip()
    return key, value


def add_set_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="settings", action="append", type=model_setting, default=[],
                   metavar="KEY=VALUE",
                   help="a model keyword (repeatable), as create_model takes it: "
                        "--set attn=cbam --set output_stride=8")
