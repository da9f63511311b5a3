"""Stand-ins for ``nn.Conv2d`` that compute the same thing, faster somewhere on a CPU.

Both keep the convolution's parameters, state dict, hooks and ``isinstance(m, nn.Conv2d)``;
tracers, diagrams and the perf passes treat them as the torch layer (``STAND_INS`` in
``pool.py``, ``fold.py``, ``onednn.py``). Each takes its other path only where it measured
faster and the result is the same up to the order of a sum; everywhere else it is torch's conv.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from .helpers import traced


class PooledConv2d(nn.Conv2d):
    """``nn.Conv2d(in, out, 1)`` that runs as a matrix product on a one-pixel map when it pays.

    On a ``(N, C, 1, 1)`` input a 1x1 convolution is a linear layer, but oneDNN still sets up a
    convolution for it, and its backward costs more again: an EfficientNet-B0 training step
    (32 such convs) took 8-20% less time with them as GEMMs (batch 16, 2-core EPYC), a
    MobileNetV3-Large step 19% less. So they are GEMMs wherever autograd records (training,
    gradients in eval mode) and where ``optimize`` asks (``as_matmul``). Plain inference keeps
    the convolution: that is what timm and torchvision run, and a GEMM sums in another order,
    which over the 16 SE blocks of an SE-ResNet-50 moved the logits by 1.4e-5, past the 1e-5
    to which imported weights match their peers.
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


class _WeightGradChannelsLast(torch.autograd.Function):
    """A convolution whose weight gradient is computed on channels_last copies of its inputs."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):
        ctx.save_for_backward(x, weight)
        ctx.conf = (list(stride), list(padding), list(dilation), groups, bias is not None)
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups, has_bias = ctx.conf
        backward = torch.ops.aten.convolution_backward
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = backward(grad, x, weight, None, stride, padding, dilation, False, [0, 0],
                              groups, [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            cl = torch.channels_last
            grad_w = backward(grad.contiguous(memory_format=cl), x.contiguous(memory_format=cl),
                              weight, None, stride, padding, dilation, False, [0, 0], groups,
                              [False, True, False])[1]
        if has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None, None, None, None


class DepthwiseConv2d(nn.Conv2d):
    """A depthwise ``nn.Conv2d`` (one filter per channel) whose large kernels train faster.

    On a CPU, oneDNN's weight gradient of a depthwise 5x5 or 7x7 convolution over an NCHW map
    is slow: 1.2-3.7x slower than on channels_last copies of the same tensors, copies included
    (16 shapes of MobileNetV3 and EfficientNet, batch 16, 2-core EPYC); an EfficientNet-B0
    training step took 1.3x less time, MobileNetV3-Large 1.2x. For 3x3 the NCHW kernel is the
    faster one (0.3-1.0x), so it stays. Only the weight gradient moves; the forward and the
    input gradient are torch's. This path is first-order only (no ``create_graph``) and runs
    only in float32 without autocast, outside tracing, export and compilation.
    """

    def _channels_last_grad(self, x: torch.Tensor) -> bool:
        return (torch.is_grad_enabled() and self.weight.requires_grad
                and max(self.kernel_size) > 3 and self.groups == self.in_channels > 1
                and self.padding_mode == "zeros" and not isinstance(self.padding, str)
                and isinstance(x, torch.Tensor) and x.dim() == 4 and x.device.type == "cpu"
                and x.dtype == self.weight.dtype == torch.float32 and x.is_contiguous()
                and not torch.is_autocast_enabled("cpu")
                and not traced())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._channels_last_grad(x):
            return super().forward(x)
        return _WeightGradChannelsLast.apply(x, self.weight, self.bias, self.stride,
                                             self.padding, self.dilation, self.groups)
