"""The attention table: what ``attn=`` means for any backbone.

A backbone asks ``get_attn(attn)`` for a factory and calls it with the channel count where its
paper puts attention (inside the residual branch, before the addition). Names map to classes in
this package; a class or a ``functools.partial`` passes straight through, so a researcher can plug
in a block of their own without touching the backbone.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from .cbam import CBAM
from .non_local import NonLocal
from .squeeze_excite import SqueezeExcite

AttnLike = str | type[nn.Module] | Callable[..., nn.Module] | None

_ATTENTION: dict[str, Callable[..., nn.Module]] = {
    "se": SqueezeExcite,  # SENet (arXiv 1709.01507)
    "cbam": CBAM,  # CBAM (arXiv 1807.06521)
    # Non-local (arXiv 1711.07971) as an in-branch block; its paper inserts whole blocks between
    # residual blocks instead, which the ResNet family does with ``nl_blocks``.
    "nl": NonLocal,
}


def register_attn(name: str, factory: Callable[..., nn.Module]) -> None:
    """Add an attention block (``factory(chs, **kwargs) -> nn.Module``) to the table."""
    if name in _ATTENTION and _ATTENTION[name] is not factory:
        raise ValueError(f"attention {name!r} is already registered")
    _ATTENTION[name] = factory


def attn_names() -> list[str]:
    return sorted(_ATTENTION)


def get_attn(attn: AttnLike) -> Callable[..., nn.Module] | None:
    if attn is None or attn == "" or (isinstance(attn, str) and attn.lower() == "none"):
        return None
    if isinstance(attn, str):
        key = attn.lower()
        if key not in _ATTENTION:
            raise ValueError(f"unknown attention {attn!r}; known: {', '.join(attn_names())}")
        return _ATTENTION[key]
    return attn


def create_attn(attn: AttnLike, chs: int, **kwargs) -> nn.Module | None:
    factory = get_attn(attn)
    return None if factory is None else factory(chs, **kwargs)

