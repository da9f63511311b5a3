"""Training at the peers' numbers, faster: ``for_training(model)`` swaps in three conv twins.

Each twin is ``nn.Conv2d`` in every respect (parameters, state dict, hooks, ``isinstance``) and
computes the same convolution; only where autograd records a float32 CPU conv does it take
another path, whose result is the same up to the order of a sum. Inference, tracing, export and
compilation run torch's own conv. :func:`for_training` also lays the model out NHWC on a CPU:
oneDNN's forward and input-gradient kernels take NHWC as it stands and reorder NCHW on every
call (a training step, batch 8 on 2 AVX2 cores, 1.07x over 11 models).

Measured together, against timm's NCHW step (``bench/peers.py --train -b 16 --threads 2``, the
2-core AVX-512 EPYC): resnet50 1.13, mobilenet_v2 1.47, mobilenet_v3_large 1.58,
efficientnet_b0 1.53, densenet121 1.20, vgg16 1.14, inception_v3 1.22 (geometric mean 1.31).
``cnnzoo train`` applies it unless given ``--plain``.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from .gates import PooledConv2d, gate_convs
from .tracer import PassLayer, swap_class, traced


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
    # An fx proxy first: a tracer records the plain conv, and asks nothing of the weight.
    return (isinstance(x, torch.Tensor) and torch.is_grad_enabled()
            and conv.weight.requires_grad and conv.padding_mode == "zeros"
            and not isinstance(conv.padding, str) and x.dim() == 4 and x.device.type == "cpu"
            and x.dtype == conv.weight.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu") and not traced())


@functools.cache
def _slow_nhwc_weight_grad() -> bool:
    # With AVX2 alone oneDNN's NHWC weight gradient is a direct kernel, 1.5-3.4x slower than its
    # NCHW one on large maps; it is fixed for the process, like the kernels oneDNN picks.
    return torch.backends.mkldnn.is_available() and \
        torch.backends.cpu.get_cpu_capability() == "AVX2"


class Conv2d(PassLayer, nn.Conv2d):
    """A dense ``nn.Conv2d`` whose weight gradient, on an AVX2-only CPU, is computed in NCHW.

    On a CPU :func:`for_training` runs the model NHWC, where oneDNN's forward and input
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


class DepthwiseConv2d(PassLayer, nn.Conv2d):
    """A depthwise ``nn.Conv2d`` (one filter per channel) whose large kernels train faster.

    On a CPU, oneDNN's weight gradient of a depthwise 5x5 or 7x7 convolution over an NCHW map
    is slow: 1.2-3.7x slower than on channels_last copies of the same tensors, copies included
    (16 shapes of MobileNetV3 and EfficientNet, batch 16, 2-core EPYC); an EfficientNet-B0
    training step took 1.3x less time, MobileNetV3-Large 1.2x. For 3x3 the NCHW kernel is the
    faster one (0.3-1.0x), so it stays. Only the weight gradient moves; the forward and the
    input gradient are torch's. This path runs on NCHW inputs (a model :func:`for_training`
    put in NHWC has the fast layout already), in float32 without autocast, outside tracing,
    export and compilation.
    """

    def _channels_last_grad(self, x: torch.Tensor) -> bool:
        return (max(self.kernel_size) > 3 and self.groups == self.in_channels > 1
                and _float32_cpu_conv(self, x) and x.is_contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._channels_last_grad(x):
            return super().forward(x)
        return _WeightGradIn.apply(x, self.weight, self.bias, self.stride, self.padding,
                                   self.dilation, self.groups, torch.channels_last)


def _twin(conv: nn.Conv2d, in_gate: bool) -> type[nn.Conv2d]:
    if in_gate:
        return PooledConv2d
    if conv.groups == conv.in_channels == conv.out_channels > 1:
        return DepthwiseConv2d
    return Conv2d


def uses_channels_last(model: nn.Module) -> bool:
    """Whether :func:`for_training` lays ``model`` out NHWC: on a CPU, where its convs are wide
    enough to gain (LeNet-5's 6 and 16 channels of 32x32 gain nothing)."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    device = next(model.parameters(), torch.empty(0)).device
    return device.type == "cpu" and bool(convs) and max(c.out_channels for c in convs) >= 32


def for_training(model: nn.Module, *, channels_last: bool | None = None) -> nn.Module:
    """Swap, in place, every plain ``nn.Conv2d`` of ``model`` for its training twin; return it.

    ``channels_last`` None lays the model out NHWC where :func:`uses_channels_last` says so;
    True or False forces it. Parameters stay the same objects, so an optimiser built before
    the call keeps working, and the state dict is unchanged. Call it again after moving the
    model to another device only to change the layout: the twins decide per call.
    """
    gates = {id(conv) for conv in gate_convs(model)}
    for m in model.modules():
        if type(m) is nn.Conv2d:
            swap_class(m, _twin(m, id(m) in gates))
    if channels_last is None:
        channels_last = uses_channels_last(model)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def count_twins(model: nn.Module) -> int:
    return sum(isinstance(m, (Conv2d, DepthwiseConv2d, PooledConv2d)) for m in model.modules())
