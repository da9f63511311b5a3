"""Stand-ins for ``nn.Conv2d`` that compute the same thing, faster somewhere on a CPU.

Each keeps the convolution's parameters, state dict, hooks and ``isinstance(m, nn.Conv2d)``;
tracers, diagrams and the perf passes treat them as the torch layer (``STAND_INS`` in
``pool.py``, ``fold.py``, ``onednn.py``). Each takes its other path only where it measured
faster and the result is the same up to the order of a sum; everywhere else it is torch's conv.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

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


class _WeightGradIn(torch.autograd.Function):
    """A convolution whose weight gradient is computed on copies of its tensors in ``layout``.

    The backward is written in differentiable ops, so a second-order gradient
    (``create_graph=True``) works through it as through torch's conv.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups, layout):
        ctx.save_for_backward(x, weight)
        ctx.conf = (list(stride), list(padding), list(dilation), groups, bias is not None)
        ctx.layout = layout
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups, has_bias = ctx.conf
        backward = torch.ops.aten.convolution_backward
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = backward(grad, x, weight, None, stride, padding, dilation, False, [0, 0],
                              groups, [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            fmt = ctx.layout
            grad_w = backward(grad.contiguous(memory_format=fmt), x.contiguous(memory_format=fmt),
                              weight, None, stride, padding, dilation, False, [0, 0], groups,
                              [False, True, False])[1]
            # The parameter's own layout: an optimiser's state follows the gradient's.
            grad_w = grad_w.contiguous(memory_format=_layout_of_weight(weight))
        if has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None, None, None, None, None


def _layout_of_weight(weight: torch.Tensor) -> torch.memory_format:
    if not weight.is_contiguous() and weight.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _float32_cpu_conv(conv: nn.Conv2d, x) -> bool:
    """Whether ``conv(x)`` records a float32 CPU convolution the paths here may take over."""
    return (torch.is_grad_enabled() and conv.weight.requires_grad
            and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)
            and isinstance(x, torch.Tensor) and x.dim() == 4 and x.device.type == "cpu"
            and x.dtype == conv.weight.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu") and not traced())


@functools.cache
def _slow_nhwc_weight_grad() -> bool:
    # With AVX2 alone oneDNN's NHWC weight gradient is a direct kernel, 1.5-3.4x slower than its
    # NCHW one on large maps; it is fixed for the process, like the kernels oneDNN picks.
    return torch.backends.mkldnn.is_available() and \
        torch.backends.cpu.get_cpu_capability() == "AVX2"


class Conv2d(nn.Conv2d):
    """A dense ``nn.Conv2d`` whose weight gradient, on an AVX2-only CPU, is computed in NCHW.

    On a CPU the models run NHWC (``ZooNet.cpu_layout``), where oneDNN's forward and input
    gradient are its brgemm kernels and the faster ones. For the weight gradient of an NHWC
    conv, with AVX2 alone, it runs a direct kernel instead (``ONEDNN_VERBOSE=1``: jit:avx2),
    slow on large maps: on a 2-core EPYC, batch 8, each pair timed in turns (median of 7), 1.8x
    slower than NCHW at VGG-16's 64 channels on 224x224 and 1.5x at 128 on 112x112, the copies
    to NCHW included, and 1.0-1.2x over 14 smaller shapes of VGG, ResNet, AlexNet and
    Inception (one, 0.95, within the noise); a VGG-16 training step ran 0.69x as fast NHWC as
    NCHW. So there, for a k x k convolution (k > 1) from 16 or more channels to 64 or more
    (with fewer, DenseNet's 32-channel growth convs, NHWC measured faster, copies included),
    the weight gradient is computed on NCHW copies of the input and the output gradient;
    the forward and the input gradient stay torch's own NHWC kernels, and the result is the
    same up to the order of a sum. Only where autograd records a float32 CPU conv on a
    channels_last input with a trainable weight, outside tracing, export and compilation;
    everywhere else, and on AVX-512 (not measured here), it is torch's conv.
    """

    def _nchw_weight_grad(self, x) -> bool:
        return (self.groups == 1 and max(self.kernel_size) > 1 and self.in_channels >= 16
                and self.out_channels >= 64 and _float32_cpu_conv(self, x)
                and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
                and _slow_nhwc_weight_grad())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._nchw_weight_grad(x):
            return super().forward(x)
        return _WeightGradIn.apply(x, self.weight, self.bias, self.stride, self.padding,
                                   self.dilation, self.groups, torch.contiguous_format)


class DepthwiseConv2d(nn.Conv2d):
    """A depthwise ``nn.Conv2d`` (one filter per channel) whose large kernels train faster.

    On a CPU, oneDNN's weight gradient of a depthwise 5x5 or 7x7 convolution over an NCHW map
    is slow: 1.2-3.7x slower than on channels_last copies of the same tensors, copies included
    (16 shapes of MobileNetV3 and EfficientNet, batch 16, 2-core EPYC); an EfficientNet-B0
    training step took 1.3x less time, MobileNetV3-Large 1.2x. For 3x3 the NCHW kernel is the
    faster one (0.3-1.0x), so it stays. Only the weight gradient moves; the forward and the
    input gradient are torch's. This path runs on NCHW inputs (``cpu_layout = None``: the
    models' NHWC default is the fast layout already), in float32 without autocast, outside
    tracing, export and compilation.
    """

    def _channels_last_grad(self, x: torch.Tensor) -> bool:
        return (max(self.kernel_size) > 3 and self.groups == self.in_channels > 1
                and _float32_cpu_conv(self, x) and x.is_contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._channels_last_grad(x):
            return super().forward(x)
        return _WeightGradIn.apply(x, self.weight, self.bias, self.stride, self.padding,
                                   self.dilation, self.groups, torch.channels_last)
