"""Low precision on a CPU where an op has no kernel for it: the deformable conv in float32.

torchvision's ``deform_conv2d`` has float32 and float64 CPU kernels only (on CUDA its autocast
rule casts to float32 too), so a bfloat16 or float16 model with one fails on a CPU. The twin
here computes the sum in float32 and hands back the input's dtype; ``optimize(amp_dtype=...)``
and :func:`~cnnzoo.perf.training.for_training` swap it in. Float32 inputs and other devices
run the plain layer.
"""
from __future__ import annotations

import torch
from torch import nn

from ..layers.deform_conv import DeformConv2d, _deform_conv2d
from .tracer import PassLayer, swap_class


class Float32DeformConv2d(PassLayer, DeformConv2d):
    def deform(self, x: torch.Tensor, offset: torch.Tensor,
               mask: torch.Tensor | None = None) -> torch.Tensor:
        dtype = x.dtype
        if x.device.type != "cpu" or dtype not in (torch.bfloat16, torch.float16):
            return super().deform(x, offset, mask)
        bias = None if self.bias is None else self.bias.float()
        out = _deform_conv2d(x.float(), offset.float(), self.weight.float(), bias, self.stride,
                             self.padding, self.dilation, None if mask is None else mask.float())
        return out.to(dtype)


def deform_in_float32(model: nn.Module) -> int:
    """Swap, in place, every plain deformable conv for its float32-computing twin."""
    convs = [m for m in model.modules() if type(m) is DeformConv2d]
    for m in convs:
        swap_class(m, Float32DeformConv2d)
    return len(convs)
