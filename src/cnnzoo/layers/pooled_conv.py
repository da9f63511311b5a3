"""A 1x1 convolution for pooled maps: one pixel per channel, as in SE and CBAM's channel MLP."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PooledConv2d(nn.Conv2d):
    """``nn.Conv2d(in, out, 1)`` that runs as a matrix product on a one-pixel map when it pays.

    On a ``(N, C, 1, 1)`` input a 1x1 convolution is a linear layer, but oneDNN still sets up a
    convolution for it, and its backward costs more again: an EfficientNet-B0 training step
    (32 such convs) took 8-20% less time with them as GEMMs (batch 16, 2-core EPYC), a
    MobileNetV3-Large step 19% less. So they are GEMMs wherever autograd records (training,
    gradients in eval mode) and where ``optimize`` asks (``as_matmul``). Plain inference keeps
    the convolution: that is what timm and torchvision run, and a GEMM sums in another order,
    which over the 16 SE blocks of an SE-ResNet-50 moved the logits by 1.4e-5, past the 1e-5
    to which imported weights match their peers. Parameters, state dict, hooks and
    ``isinstance(m, nn.Conv2d)`` are the convolution's.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True, **kwargs):
        super().__init__(in_channels, out_channels, 1, bias=bias, **kwargs)
        self.as_matmul = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (not (self.as_matmul or torch.is_grad_enabled()) or x.dim() != 4
                or x.shape[-2:] != (1, 1) or self.groups != 1 or self.padding_mode != "zeros"
                or self.padding != (0, 0)):
            return super().forward(x)
        out = F.linear(x.flatten(1), self.weight.flatten(1), self.bias)
        return out.view(*out.shape, 1, 1)
