"""Small numeric helpers shared by every family."""
from __future__ import annotations

import math

import torch


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None,
                   round_limit: float = 0.9) -> int:
    """Round a channel count to a multiple of ``divisor``.

    This is the rule of the MobileNet/EfficientNet reference code: round to the nearest multiple,
    but never go more than ``1 - round_limit`` (10%) below the requested width, because a big
    cut in channels costs accuracy that the scaling rule did not account for.
    """
    min_value = min_value or divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < round_limit * value:
        new_value += divisor
    return new_value


def round_repeats(repeats: int, depth_mult: float) -> int:
    """Scale a stage's block count; EfficientNet rounds depth up so no stage ever shrinks."""
    return int(math.ceil(repeats * depth_mult))


def same_padding(kernel_size: int, stride: int = 1, dilation: int = 1) -> int:
    """Symmetric padding that keeps the size for stride 1 (and halves it, rounded up, for stride 2)."""
    return ((stride - 1) + dilation * (kernel_size - 1)) // 2


def in_layout_of(y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``y`` in the memory layout of ``like``: for an op that makes its output in a layout of
    its own (torchvision's deformable conv writes NCHW, a transposed product comes out NHWC),
    so the layers after it run in the layout the caller chose. A no-op where they agree."""
    if like.dim() == 4 and not like.is_contiguous() and \
            like.is_contiguous(memory_format=torch.channels_last):
        return y.contiguous(memory_format=torch.channels_last)
    return y.contiguous()
