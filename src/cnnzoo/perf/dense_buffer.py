"""DenseNet's blocks for inference without their concatenations: one buffer per block.

Layer ``l`` of a dense block reads ``cat(x, y_1, ..., y_{l-1})``, and eager PyTorch copies all
of those maps into a new tensor for every layer: work quadratic in the block's depth (``cat``
was 15% of an optimised densenet121's time on 2 Xeon cores). Here the block holds one buffer with
room for every map it will make; each layer reads a channel prefix of it, and its new maps are
written once into their slice. The prefix is a strided view, not a dense tensor, so the first
op of the layer must copy it anyway. Once its BatchNorm -> ReLU has become a per-channel clamp
(``perf/preact.py``), that clamp is the copy: it reads the view and writes the dense tensor the
1x1 conv needs, where ``cat`` and an in-place clamp took two passes over it. Inference only (an
eval-mode block under no_grad): autograd could not keep the views it saves while the buffer
fills. The values are the concatenating block's, to fp32 rounding (a BatchNorm reading a
strided view takes another kernel than on a dense one).
"""
from __future__ import annotations

import torch
from torch import fx, nn

from ..models.densenet import DenseBlock, DenseLayer
from .tracer import layout_of


def _empty_like_with_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    n, _, h, w = x.shape
    return torch.empty((n, channels, h, w), dtype=x.dtype, device=x.device,
                       memory_format=layout_of(x))


# One node in an fx graph (it looks at a shape and a layout, which tracing cannot), so that
# BatchNorm folding and oneDNN fusion still see the layers' convs and activations.
fx.wrap("_empty_like_with_channels")


class BufferedDenseBlock(nn.Module):
    """A :class:`DenseBlock`'s layers, under the same names, run on one preallocated buffer."""

    def __init__(self, block: DenseBlock):
        super().__init__()
        for name, layer in block.items():
            self.add_module(name, layer)
        self.out_channels = block.out_channels
        growth = [layer.conv2.out_channels for layer in block.values()]
        self.in_channels = block.out_channels - sum(growth)
        self.growth = growth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        buf = _empty_like_with_channels(x, self.out_channels)
        buf.narrow(1, 0, self.in_channels).copy_(x)
        c = self.in_channels
        for layer, k in zip(self.children(), self.growth):
            # DenseLayer.bottleneck and forward, with the prefix in the concatenation's place.
            y = layer.conv1(layer.act1(layer.norm1(buf.narrow(1, 0, c))))
            y = layer.drop(layer.conv2(layer.act2(layer.norm2(y))))
            buf.narrow(1, c, k).copy_(y)
            c += k
        return buf


def _bufferable(block: nn.Module) -> bool:
    return (type(block) is DenseBlock and not block.training
            and all(type(layer) is DenseLayer for layer in block.values()))


def buffer_dense_blocks(model: nn.Module) -> int:
    """Replace, in place, every eval-mode cnnzoo DenseBlock by its buffered twin; return how many.

    Call it before :func:`fold_preactivation`, which then sees each layer's BatchNorm read a
    prefix of the buffer (no fresh tensor) and makes its clamp out of place: an in-place clamp
    would write into the maps of the layers before.
    """
    names = [name for name, m in model.named_modules() if name and _bufferable(m)]
    for name in names:
        model.set_submodule(name, BufferedDenseBlock(model.get_submodule(name)))
    return len(names)
