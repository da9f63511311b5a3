"""The memory layout a model runs in: NCHW or channels_last (NHWC).

oneDNN's convolutions take NHWC as it stands and reorder NCHW on every call: on 2 AVX2 cores,
batch 16, eager inference ran 1.03-1.85x faster NHWC over 23 models (geometric mean 1.17;
resnet50 1.03, mobilenet_v2 1.25, googlenet 1.85), a training step (batch 8) 1.07x; yet
depthwise and grouped convolutions can be slower in it on some builds, and on a GPU NHWC pays
in half precision only. So no model picks its own layout: ``optimize`` races both,
:func:`~cnnzoo.perf.training.for_training` picks NHWC on a CPU, and ``--channels-last`` asks
for it on the command line. The values are the same up to the order of a sum.
"""
from __future__ import annotations

import torch
from torch import nn

from .tracer import layout_of

__all__ = ["layout_of", "set_layout"]


def set_layout(model: nn.Module, channels_last: bool) -> nn.Module:
    """``model``'s 4-d parameters and buffers, in place, in NHWC or NCHW; the convolutions then
    write their output in that layout whatever the input's."""
    return model.to(memory_format=torch.channels_last if channels_last
                    else torch.contiguous_format)
