"""Building a registered model to look at it: on the meta device, at the size the user asked for."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import InputSizeError
from ..registry import create_model, default_cfg
from .meta import on_meta


def build(name: str, input_size: tuple[int, ...] | None = None, *, meta: bool = True,
          weights: str | None = None, **kwargs) -> tuple[nn.Module, tuple[int, int, int]]:
    """``(model, (C, H, W))`` for ``name`` at ``input_size`` (default: its own).

    On the meta device (``meta=True``) nothing is allocated or initialised: shapes, parameter
    counts and MACs come out the same, for free. A size the network cannot take fails here with
    one line instead of deep inside a convolution.
    """
    cfg = default_cfg(name)
    c, h, w = tuple(cfg.input_size) if input_size is None else tuple(int(v) for v in input_size)
    if min(c, h, w) < 1:
        raise InputSizeError(f"input size must be positive, got {c}x{h}x{w}")
    if min(h, w) < cfg.min_size:
        raise InputSizeError(f"{name} needs images of at least {cfg.min_size}x{cfg.min_size}, "
                             f"got {h}x{w}")
    if cfg.fixed_size and (h, w) != tuple(cfg.input_size[1:]):
        if h != w:
            raise InputSizeError(f"{name} takes square images only (its dense layers fix the "
                                 f"size), got {h}x{w}")
        kwargs.setdefault("img_size", h)
    if meta and weights is None:
        with on_meta():
            model = create_model(name, in_chans=c, **kwargs)
    else:
        model = create_model(name, in_chans=c, pretrained=weights, **kwargs)
    return model, (c, h, w)


def shape_error(name: str, size: tuple[int, ...], exc: RuntimeError) -> InputSizeError:
    """A convolution that ran out of pixels, said in one line."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return InputSizeError(f"{name} cannot take a {'x'.join(map(str, size))} input: {first}")
