"""The activation table: one name per nonlinearity the classic papers use.

Blocks take ``act_layer`` as a name, a class, or None, so a family can switch ReLU for
hard-swish by changing one argument (MobileNetV3) instead of one class per activation.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

ActLike = str | type[nn.Module] | Callable[..., nn.Module] | None

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "prelu": nn.PReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "hsigmoid": nn.Hardsigmoid,
    "hard_sigmoid": nn.Hardsigmoid,
    "hswish": nn.Hardswish,
    "hard_swish": nn.Hardswish,
    "swish": nn.SiLU,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "mish": nn.Mish,
    "identity": nn.Identity,
}

# Functions that take `inplace`; passing it to the others raises.
_INPLACE = {nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.Hardsigmoid, nn.Hardswish, nn.SiLU, nn.Mish}


def activation_names() -> list[str]:
    return sorted(_ACTIVATIONS)


def get_act_layer(act: ActLike) -> type[nn.Module] | Callable[..., nn.Module] | None:
    """Resolve a name from the table (or pass a class/factory through)."""
    if act is None or not isinstance(act, str):
        return act
    key = act.lower()
    if key not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; known: {', '.join(activation_names())}")
    return _ACTIVATIONS[key]


def create_act(act: ActLike, inplace: bool = True) -> nn.Module:
    """An activation module; ``None`` gives ``nn.Identity`` so callers never branch."""
    layer = get_act_layer(act)
    if layer is None:
        return nn.Identity()
    if layer in _INPLACE:
        return layer(inplace=inplace)
    return layer()
