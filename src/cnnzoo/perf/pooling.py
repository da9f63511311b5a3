"""``use_onednn_pooling(model)``: max and average pools on oneDNN's kernels in CPU inference.

torch's CPU pooling for NCHW tensors walks every window element by element: a ResNet stem's
3x3/2 max pool over a batch of 16 takes ~47 ms on two cores of an AVX-512 Xeon, where oneDNN's
kernel takes ~3 ms on the same data (on AVX2 alone oneDNN has no such kernel:
:func:`onednn_pooling_pays`). Moving the data there and back costs copies, so the batch goes
in pieces small enough to stay in cache and in glibc's reused heap (a 16x64x112x112 input:
47 ms -> ~8 ms; VGG's first pool: 174 -> 54 ms). On finite inputs the result is torch's, bit
for bit (checked over kernel, stride, padding and ceil_mode); oneDNN's max skips NaN where
torch's propagates it. Only inference takes this path; training keeps torch's kernels (their
backward needs the argmax indices), as do tracing, export and compilation, which must see the
plain op. These classes are ``nn.MaxPool2d``/``nn.AvgPool2d`` in every other respect; perf's tracer
keeps each one call. ``optimize`` applies the pass where :func:`onednn_pooling_pays`.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from .tracer import PassLayer, swap_class, traced

# Bytes of input per piece: a few images of a stem-sized activation, well inside L2+L3 and
# under glibc's default 32 MiB mmap ceiling, so each piece reuses memory instead of faulting
# in pages even where the heap is not kept (memory.py).
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
    # The public capability first; torch's private probe only where that API is missing.
    capability = getattr(torch.backends.cpu, "get_cpu_capability", None)
    if capability is not None:
        return capability().startswith("AVX512")
    check = getattr(torch.cpu, "_is_avx512_supported", None)
    return bool(check()) if check is not None else False


def _fast_path(x: torch.Tensor) -> bool:
    # Tracing and export first: they must see the plain op, and asking a traced tensor about
    # its size would warn.
    if traced():
        return False
    return (x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4
            and x.is_contiguous() and x.numel() > 0
            and not (x.requires_grad and torch.is_grad_enabled())
            and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
            and _has_onednn_ops() and onednn_pooling_pays())


def available() -> bool:
    """Whether the pass pays here: oneDNN's entry points exist and its pooling kernel is fast."""
    return torch.backends.mkldnn.is_available() and _has_onednn_ops() and onednn_pooling_pays()


def _has_onednn_ops() -> bool:
    # torch's private oneDNN entry points: a build without them keeps torch's own pooling.
    return hasattr(torch, "mkldnn_max_pool2d") and hasattr(torch.Tensor, "to_mkldnn")


def _in_pieces(x: torch.Tensor, pool) -> torch.Tensor:
    per_image = x[0].numel() * x.element_size()
    step = max(1, _PIECE_BYTES // per_image)
    outs = [pool(piece.to_mkldnn()).to_dense() for piece in x.split(step)]
    return outs[0] if len(outs) == 1 else torch.cat(outs)


def _pair(v) -> list[int]:
    return list(v) if isinstance(v, (tuple, list)) else [v, v]


class OneDnnMaxPool2d(PassLayer, nn.MaxPool2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # oneDNN's max pool has no dilation.
        if (self.return_indices or _pair(self.dilation) != [1, 1]
                or not isinstance(x, torch.Tensor) or not _fast_path(x)):
            return super().forward(x)
        kernel, padding = _pair(self.kernel_size), _pair(self.padding)
        stride = _pair(self.stride if self.stride is not None else self.kernel_size)
        return _in_pieces(x, lambda t: torch.mkldnn_max_pool2d(
            t, kernel, stride, padding, [1, 1], self.ceil_mode))


class OneDnnAvgPool2d(PassLayer, nn.AvgPool2d):
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


_TWINS = {nn.MaxPool2d: OneDnnMaxPool2d, nn.AvgPool2d: OneDnnAvgPool2d}


def use_onednn_pooling(model: nn.Module) -> int:
    """Swap, in place, every plain ``nn.MaxPool2d``/``nn.AvgPool2d`` for its oneDNN twin; return
    how many. Changes nothing for finite inputs; a NaN in a max pool's window is skipped."""
    count = 0
    for m in model.modules():
        twin = _TWINS.get(type(m))
        if twin is not None:
            swap_class(m, twin)
            count += 1
    return count


def count_pools(model: nn.Module) -> int:
    return sum(isinstance(m, (OneDnnMaxPool2d, OneDnnAvgPool2d)) for m in model.modules())
