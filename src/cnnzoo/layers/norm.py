"""Normalisation layers and their table."""
from __future__ import annotations

from typing import Callable

from torch import nn

NormLike = str | type[nn.Module] | Callable[..., nn.Module] | None

_NORMS: dict[str, type[nn.Module]] = {
    "batchnorm": nn.BatchNorm2d,
    "bn": nn.BatchNorm2d,
    "groupnorm": nn.GroupNorm,
    "instancenorm": nn.InstanceNorm2d,
}


def get_norm_layer(norm: NormLike):
    if norm is None or not isinstance(norm, str):
        return norm
    if norm.lower() not in _NORMS:
        raise ValueError(f"unknown norm layer {norm!r}; known: {', '.join(sorted(_NORMS))}")
    return _NORMS[norm.lower()]


def lrn(size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0) -> nn.LocalResponseNorm:
    """Local response normalisation with the constants as the AlexNet paper writes them.

    The paper (Section 3.3) divides by ``(k + alpha * sum(a^2)) ** beta``; torch's
    LocalResponseNorm divides ``alpha`` by ``size`` first, so we multiply it back.
    """
    return nn.LocalResponseNorm(size, alpha=alpha * size, beta=beta, k=k)
