"""Building a registered model to look at it: on the meta device, at the size the user asked for."""
from __future__ import annotations

from torch import nn

from ..errors import InputSizeError
from ..registry import default_cfg
from .meta import on_meta


def build(name: str, input_size: tuple[int, ...] | None = None, *, meta: bool = True,
          weights: str | None = None, **kwargs) -> tuple[nn.Module, tuple[int, int, int]]:
    """``(model, (C, H, W))`` for the model source ``name`` at ``input_size`` (default: its own).

    ``name`` is anything ``create_model`` takes (a registered name, a saved model, a run, an
    ``hf-hub:`` name). On the meta device (``meta=True``) nothing is allocated or initialised:
    shapes, parameter counts and MACs come out the same, for free. A size the network cannot
    take fails here with one line instead of deep inside a convolution.
    """
    from ..resolve import build as build_resolved
    from ..resolve import resolve

    res = resolve(name, pretrained=weights, **kwargs)
    cfg = default_cfg(res.arch)
    own = res.cfg.get("input_size") or cfg.input_size
    chans = res.in_chans or cfg.input_size[0]
    c, h, w = (chans, *tuple(own)[1:]) if input_size is None else \
        tuple(int(v) for v in input_size)
    if min(c, h, w) < 1:
        raise InputSizeError(f"input size must be positive, got {c}x{h}x{w}")
    if min(h, w) < cfg.min_size:
        raise InputSizeError(f"{res.arch} needs images of at least {cfg.min_size}x"
                             f"{cfg.min_size}, got {h}x{w}")
    if cfg.fixed_size and (h, w) != tuple(cfg.input_size[1:]):
        if h != w:
            raise InputSizeError(f"{res.arch} takes square images only (its dense layers fix "
                                 f"the size), got {h}x{w}")
        res.kwargs.setdefault("img_size", h)
    res.in_chans = c
    if meta and weights is None:
        res.weights = None  # shapes and counts need no weights, and meta tensors take none
        with on_meta():
            model = build_resolved(res)
    else:
        model = build_resolved(res)
    return model, (c, h, w)


def shape_error(name: str, size: tuple[int, ...], exc: RuntimeError) -> InputSizeError:
    """A convolution that ran out of pixels, said in one line."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return InputSizeError(f"{name} cannot take a {'x'.join(map(str, size))} input: {first}")
