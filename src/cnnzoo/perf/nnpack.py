"""3x3 convolutions on NNPACK's Winograd kernels, each where it measured faster than oneDNN's.

A stride-1, undilated, ungrouped 3x3 convolution computed by Winograd's F(6x6, 3x3) needs about
a fifth of the multiplies of the direct one in its GEMM phase; the transforms take part of that
back, so whether it pays depends on the shape. On a 2-core AVX-512 EPYC, batch 16, fp32,
min of 7 in turns against the fused oneDNN call in channels_last (``bench/nnpack_layers.py``
reproduces it): 256->256 at 56x56 ran 1.48x faster and 512->512 at 28x28 1.56x
(VGG's middle), while 64->64 at 56x56 ran 0.85x and 512->512 at 7x7 0.56x (ResNet's: an 8x8
tile on a 7x7 map is mostly padding). No rule of thumb holds across CPUs, so each conv is timed
at the input it sees in the model and moved only where NNPACK won.

NNPACK ships inside PyTorch (``torch._nnpack_spatial_convolution``), takes NCHW only, and fuses
nothing but the bias: the activation after it is one more pass (in place where torch has one),
and a channels_last input is converted in and the output back, costs the race includes.
"""
from __future__ import annotations

import statistics
import time

import torch
from torch import nn
import torch.nn.functional as F

from .onednn import FusedConv2d
from .timing import Clock, race


def available() -> bool:
    """Whether this PyTorch build has NNPACK and it runs on this CPU.

    The call also initialises NNPACK: before it, every ``_nnpack_spatial_convolution`` fails
    with "NNPACK SpatialConvolution_updateOutput failed" (torch 2.14).
    """
    if not hasattr(torch, "_nnpack_spatial_convolution"):  # private: a build may lack it
        return False
    try:
        return bool(torch._nnpack_available())
    except (AttributeError, RuntimeError):
        return False


def _gelu(y: torch.Tensor, scalars: list, algorithm: str | None) -> torch.Tensor:
    return F.gelu(y, approximate=algorithm or "none")


# oneDNN's activation names (``onednn._unary``) as torch calls, in place where torch has one:
# NNPACK fuses none of them, so each is one more pass over the output.
_ACTIVATIONS = {
    "none": lambda y, scalars, algorithm: y,
    "relu": lambda y, scalars, algorithm: y.relu_(),
    "hardtanh": lambda y, scalars, algorithm: y.clamp_(*scalars),
    "swish": lambda y, scalars, algorithm: F.silu(y, inplace=True),
    "hardswish": lambda y, scalars, algorithm: F.hardswish(y, inplace=True),
    "sigmoid": lambda y, scalars, algorithm: y.sigmoid_(),
    "tanh": lambda y, scalars, algorithm: y.tanh_(),
    "leaky_relu": lambda y, scalars, algorithm: F.leaky_relu_(y, *scalars),
    "gelu": _gelu,
}


def eligible(module: nn.Module) -> bool:
    """A fused conv NNPACK's Winograd path computes: 3x3, stride 1, no dilation, one group,
    padding under the kernel size, with no residual add (its activation runs after it)."""
    if not isinstance(module, FusedConv2d) or module.binary is not None:
        return False
    conv = module.conv
    return (tuple(conv.kernel_size) == (3, 3) and tuple(conv.stride) == (1, 1)
            and tuple(conv.dilation) == (1, 1) and conv.groups == 1
            and all(0 <= p <= 2 for p in conv.padding)
            and module.unary[0] in _ACTIVATIONS)


class NnpackConv2d(nn.Module):
    """``act(conv(x))`` of a fused conv, on NNPACK; the output in the input's layout.

    The original conv stays as ``.conv``, as in :class:`FusedConv2d`, so state dict names are
    unchanged. Off the CPU or in another dtype it runs the plain convolution.
    """

    def __init__(self, fused: FusedConv2d):
        super().__init__()
        if not eligible(fused):
            raise ValueError("NNPACK runs a 3x3, stride-1, ungrouped conv with no residual add")
        self.conv = fused.conv
        self.unary = fused.unary
        self._keep_nchw_weight()

    def _keep_nchw_weight(self) -> None:
        # optimize() may have put the weights in channels_last; NNPACK reads NCHW, and a copy
        # on every call would cost a pass over the weight each time.
        object.__setattr__(self, "weight", self.conv.weight.detach().contiguous())

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self._keep_nchw_weight()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        attr, scalars, algorithm = self.unary
        if x.device.type != "cpu" or x.dtype != torch.float32 or x.dim() != 4:
            y = F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding)
            return _ACTIVATIONS[attr](y, scalars, algorithm)
        nhwc = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        y = torch._nnpack_spatial_convolution(x.contiguous(), self.weight, conv.bias,
                                              list(conv.padding))
        y = _ACTIVATIONS[attr](y, scalars, algorithm)
        return y.contiguous(memory_format=torch.channels_last) if nhwc else y

    def extra_repr(self) -> str:
        return f"Winograd F(6x6, 3x3), then {self.unary[0]}"


def count(model: nn.Module) -> int:
    return sum(isinstance(m, NnpackConv2d) for m in model.modules())


def _inputs(model: nn.Module, example: torch.Tensor) -> dict[str, tuple[tuple[int, ...], bool]]:
    """Each eligible conv's input shape and whether it arrives channels_last, from one run."""
    seen: dict[str, tuple[tuple[int, ...], bool]] = {}
    hooks = []
    for name, m in model.named_modules():
        if eligible(m):
            def hook(mod, args, name=name):
                x = args[0]
                seen[name] = (tuple(x.shape), not x.is_contiguous() and
                              x.is_contiguous(memory_format=torch.channels_last))
            hooks.append(m.register_forward_pre_hook(hook))
    try:
        with torch.inference_mode():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    return seen


def choose(model: nn.Module, example: torch.Tensor, *, measure: bool = True, warmup: int = 1,
           steps: int = 3, clock: Clock = time.perf_counter) -> list[str]:
    """The names of the eligible convs of ``model`` (already fused for oneDNN) to run on NNPACK.

    ``measure=False``: all of them. Otherwise each runs on a random input of the shape and
    layout it sees on ``example``, in turns with its oneDNN call, and goes to NNPACK only if its
    median step was shorter; a shape NNPACK rejects stays on oneDNN.
    """
    if not available():
        return []
    seen = _inputs(model, example)
    if not measure:
        return list(seen)
    chosen = []
    with torch.inference_mode():
        for name, (shape, nhwc) in seen.items():
            fused = model.get_submodule(name)
            x = torch.randn(shape, dtype=example.dtype)
            if nhwc:
                x = x.contiguous(memory_format=torch.channels_last)
            candidate = NnpackConv2d(fused)
            try:
                candidate(x)
            except RuntimeError:
                continue
            per_step = race({"onednn": lambda: fused(x), "nnpack": lambda: candidate(x)},
                            rounds=steps, warmup=warmup, clock=clock)
            if statistics.median(per_step["nnpack"]) < statistics.median(per_step["onednn"]):
                chosen.append(name)
    return chosen


def place(model: nn.Module, names: list[str]) -> int:
    """Run the named fused convs of ``model`` on NNPACK, in place; return how many run there.

    The names may come from :func:`choose` on another copy of the model, fused for another
    batch size: a name that is no eligible conv here is passed over.
    """
    for name in names:
        try:
            module = model.get_submodule(name)
        except AttributeError:
            continue
        if eligible(module):
            model.set_submodule(name, NnpackConv2d(module))
    return count(model)
