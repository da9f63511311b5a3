"""The 1x1 convs of the SE and CBAM gates as GEMMs: ``gemm_gates(model)``.

A gate's MLP reads one pixel per channel, where a 1x1 convolution is a linear layer; oneDNN
still sets up a whole convolution for it, 30-100 us a call on a CPU for a few thousand
multiply-adds, and its backward costs more again. ``optimize`` runs them as GEMMs in its copy
(``as_matmul``); :func:`~cnnzoo.perf.training.for_training` does wherever autograd records.
A GEMM sums in another order than the conv: over the 16 SE blocks of an SE-ResNet-50 the
logits moved by 1.4e-5 of their scale, which is why the plain models keep the conv.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.cbam import ChannelAttention
from ..layers.squeeze_excite import SqueezeExcite
from .tracer import PassLayer, swap_class

# The blocks whose 1x1 convs read a one-pixel map.
_GATES = (SqueezeExcite, ChannelAttention)


class PooledConv2d(PassLayer, nn.Conv2d):
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

    # Set by ``optimize`` on its copy; a class default, so a swapped-in conv has it.
    as_matmul = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # An fx proxy is no Tensor: a tracer records the plain conv.
        if (not isinstance(x, torch.Tensor) or not (self.as_matmul or torch.is_grad_enabled())
                or x.dim() != 4
                or x.shape[-2:] != (1, 1) or self.groups != 1 or self.padding_mode != "zeros"
                or self.padding != (0, 0)):
            return super().forward(x)
        out = F.linear(x.flatten(1), self.weight.flatten(1), self.bias)
        return out.view(*out.shape, 1, 1)


def gate_convs(model: nn.Module) -> list[nn.Conv2d]:
    """The plain 1x1 convs inside the SE and CBAM gates of ``model``."""
    return [conv for gate in model.modules() if isinstance(gate, _GATES)
            for conv in gate.modules()
            if type(conv) is nn.Conv2d and conv.kernel_size == (1, 1)]


def gemm_gates(model: nn.Module) -> int:
    """Swap, in place, the gates' 1x1 convs for GEMMs in inference too; return how many."""
    convs = gate_convs(model)
    for conv in convs:
        swap_class(conv, PooledConv2d).as_matmul = True
    return len(convs)
