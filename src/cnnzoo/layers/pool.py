"""Max and average pooling that run on oneDNN's kernels in CPU inference, where those are faster.

torch's CPU pooling for NCHW tensors walks every window element by element: a ResNet stem's
3x3/2 max pool over a batch of 16 takes ~47 ms on two cores of an AVX-512 Xeon, where oneDNN's
kernel takes ~3 ms on the same data (on AVX2 alone oneDNN has no such kernel:
:func:`onednn_pooling_pays`). Moving the data there and back costs copies, so the batch goes
in pieces small enough to stay in cache and in glibc's reused heap (a 16x64x112x112 input:
47 ms -> ~8 ms; VGG's first pool: 174 -> 54 ms). On finite inputs the result is torch's, bit
for bit (checked over kernel, stride, padding and ceil_mode); oneDNN's max skips NaN where
torch's propagates it. Only inference takes this path; training keeps torch's kernels (their
backward needs the argmax indices), as do tracing, export and compilation, which must see the
plain op. These classes are ``nn.MaxPool2d``/``nn.AvgPool2d`` in every other respect; tracers
and diagrams treat them as the torch layers they stand for (``STAND_INS``, ``LayerTracer``).
"""
from __future__ import annotations

import functools

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .conv2d import Conv2d, DepthwiseConv2d, PooledConv2d
from .helpers import traced
from .norm import BatchNorm2d

# Bytes of input per piece: a few images of a stem-sized activation, well inside L2+L3 and
# under glibc's default 32 MiB mmap ceiling, so each piece reuses memory instead of faulting
# in pages even where the heap is not kept (perf/memory.py).
_PIECE_BYTES = 16 << 20


@functools.lru_cache(maxsize=None)
def onednn_pooling_pays() -> bool:
    """Whether this CPU has oneDNN's JIT pooling kernel for plain NCHW tensors: AVX-512.

    Where it has (an AVX-512 Xeon: the ResNet stem pool 47 -> 7 ms with the copies), the
    layers below take it. With AVX2 alone oneDNN runs its 'simple_nchw' reference kernel
    instead (ONEDNN_VERBOSE says so), slower than torch's own: on a 2-core AMD EPYC the stem
    pool took 62 ms in torch and 94 ms through oneDNN, Inception's 3x3 average pool 27 and
    49 ms. There torch's kernel stays; the results are the same either way.
    """
    check = getattr(torch.cpu, "_is_avx512_supported", None)
    if check is not None:
        return bool(check())
    return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def _fast_path(x: torch.Tensor) -> bool:
    # Tracing and export first: they must see the plain op, and asking a traced tensor about
    # its size would warn.
    if traced():
        return False
    return (x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4
            and x.is_contiguous() and x.numel() > 0
            and not (x.requires_grad and torch.is_grad_enabled())
            and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
            and onednn_pooling_pays())


def _in_pieces(x: torch.Tensor, pool) -> torch.Tensor:
    per_image = x[0].numel() * x.element_size()
    step = max(1, _PIECE_BYTES // per_image)
    outs = [pool(piece.to_mkldnn()).to_dense() for piece in x.split(step)]
    return outs[0] if len(outs) == 1 else torch.cat(outs)


def _pair(v) -> list[int]:
    return list(v) if isinstance(v, (tuple, list)) else [v, v]


class MaxPool2d(nn.MaxPool2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # oneDNN's max pool has no dilation.
        if (self.return_indices or _pair(self.dilation) != [1, 1]
                or not isinstance(x, torch.Tensor) or not _fast_path(x)):
            return super().forward(x)
        kernel, padding = _pair(self.kernel_size), _pair(self.padding)
        stride = _pair(self.stride if self.stride is not None else self.kernel_size)
        return _in_pieces(x, lambda t: torch.mkldnn_max_pool2d(
            t, kernel, stride, padding, [1, 1], self.ceil_mode))


class AvgPool2d(nn.AvgPool2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A ceil-mode window hanging past the padding: torch divides by the part inside the
        # padded input, oneDNN by the whole window.
        if (self.divisor_override is not None or (self.ceil_mode and self.count_include_pad)
                or not isinstance(x, torch.Tensor) or not _fast_path(x)):
            return super().forward(x)
        kernel, padding = _pair(self.kernel_size), _pair(self.padding)
        stride = _pair(self.stride if self.stride is not None else self.kernel_size)
        return _in_pieces(x, lambda t: F.avg_pool2d(
            t, kernel, stride, padding, self.ceil_mode, self.count_include_pad))


# Layers that compute what the torch layer they subclass computes, only faster somewhere.
STAND_INS = (MaxPool2d, AvgPool2d, BatchNorm2d, Conv2d, PooledConv2d, DepthwiseConv2d)


class LayerTracer(fx.Tracer):
    """torch.fx's tracer, with the layers above kept whole like the torch layers they replace."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, STAND_INS) or super().is_leaf_module(m, qualname)
