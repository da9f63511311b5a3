"""What ``optimize`` returns: a model run in inference mode, in a chosen layout and precision,
whole or in slices (``slicing.py``), with the report of what was chosen."""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..models.base import ZooNet
from .slicing import join


@dataclass
class OptimizeReport:
    folded: int = 0
    # BatchNorm -> ReLU pairs folded into the 1x1 conv after them (DenseNet's pre-activation).
    preact: int = 0
    # DenseNet blocks run on one buffer each instead of a concatenation per layer.
    buffered: int = 0
    channels_last: bool = False
    compiled: str | None = None
    onnxruntime: bool = False
    # Convolutions fused into pre-packed oneDNN calls (CPU, float32 or bf16); 0 where none were.
    onednn: int = 0
    # 3x3 convolutions run on NNPACK's Winograd kernels (CPU, float32); 0 where none were.
    nnpack: int = 0
    # The batch is run this many samples at a time; None: whole.
    micro_batch: int | None = None
    # (pieces, rows): the first pieces of the body, on the largest maps, run this many samples
    # at a time, the rest as micro_batch says; None: the body runs all in one way.
    early: tuple[int, int] | None = None
    amp: str | None = None
    # Median step time (ms) of each candidate measured, by candidate name.
    timings_ms: dict[str, float] = field(default_factory=dict)
    # Counted on the returned model: SE/CBAM gate convs run as GEMMs, pools on oneDNN's
    # kernels, BatchNorms and SE gates in place (ONNX Runtime runs none of them).
    gemm_gates: int = 0
    onednn_pools: int = 0
    inplace: int = 0

    @property
    def passes(self) -> list[str]:
        """What the returned model runs, pass by pass, in the order ``optimize`` applied them."""
        torch_run = not self.onnxruntime
        parts = []
        if self.gemm_gates and torch_run:
            parts.append(f"{self.gemm_gates} gate convs as GEMMs")
        if self.onednn_pools and torch_run:
            parts.append(f"{self.onednn_pools} pools on oneDNN")
        parts.append(f"{self.folded} BN folded")
        if self.buffered:
            parts.append(f"{self.buffered} dense blocks on one buffer each")
        if self.preact:
            parts.append(f"{self.preact} BN-ReLU folded into the next conv")
        if self.inplace and torch_run:
            parts.append(f"{self.inplace} BatchNorm/SE in place")
        parts.append("channels_last" if self.channels_last else "NCHW")
        if self.amp:
            parts.append(self.amp)
        if self.onednn:
            parts.append(f"{self.onednn} convs fused for oneDNN")
        if self.nnpack:
            parts.append(f"{self.nnpack} 3x3 convs on NNPACK")
        if self.early:
            parts.append(f"first {self.early[0]} body pieces {self.early[1]} at a time")
        if self.micro_batch:
            parts.append(f"micro-batches of {self.micro_batch}")
        if self.compiled:
            parts.append(f"compiled ({self.compiled})")
        if self.onnxruntime:
            parts.append("onnxruntime")
        return parts

    def describe(self) -> str:
        return ", ".join(self.passes)


class InferenceModel(nn.Module):
    """An optimised model: call it like the original, in inference mode, in the chosen layout.

    ``amp_dtype`` runs it in lower precision, either under autocast or, when ``cast`` is set,
    with weights converted once (no per-call weight casts) and inputs cast on the way in.
    ``micro_batch`` runs a larger batch that many samples at a time: every sample is computed
    alone anyway in inference, and smaller activations stay in cache (and, where the heap is
    not kept, in memory the allocator already holds: ``cnnzoo/memory.py``). For a cnnzoo
    model in eval mode only the body is sliced; its head runs once on the whole batch.
    ``early=(pieces, rows)`` (a cnnzoo model whose body is a chain, ``feature_pieces``) runs the
    first pieces ``rows`` samples at a time and the rest as ``micro_batch`` says: the first
    maps are the large ones, whose slices stay in cache, and the later ones are small, where
    a GEMM wants many rows (mobilenet_v2, batch 16 on 2 cores: 86 ms in slices of 8, 77 with
    its first three pieces 2 at a time and the rest whole).
    """

    def __init__(self, model: nn.Module, *, channels_last: bool = False,
                 runner: Callable | None = None, amp_dtype: torch.dtype | None = None,
                 cast: bool = False, micro_batch: int | None = None,
                 early: tuple[int, int] | None = None,
                 report: OptimizeReport | None = None):
        super().__init__()
        if micro_batch is not None and micro_batch < 1:
            raise ValueError(f"micro_batch must be a positive int or None, got {micro_batch}")
        pieces: list[nn.Module] = []
        if early is not None:
            if not (isinstance(model, ZooNet) and runner is None):
                raise ValueError("early slices need a cnnzoo model run by torch")
            pieces = model.feature_pieces()
            count = len(pieces)
            if not (0 < early[0] < count and early[1] >= 1):
                raise ValueError(f"early must be (pieces, rows) with 0 < pieces < {count} "
                                 f"and rows >= 1, got {early}")
        self.model = model
        self.channels_last = channels_last
        self.amp_dtype = amp_dtype
        self.cast = cast
        self.micro_batch = micro_batch
        self.early = early
        # A compiled module or an ONNX Runtime session wrapping self.model; kept out of the
        # module tree so parameters are not listed twice.
        object.__setattr__(self, "_run", model if runner is None else runner)
        # Listed once, not on every call; a plain list, as the modules are self.model's.
        object.__setattr__(self, "_pieces", pieces)
        self.report = report or OptimizeReport()
        for attr in ("default_cfg", "card", "model_name", "num_classes", "num_features"):
            if hasattr(model, attr):
                object.__setattr__(self, attr, getattr(model, attr))

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if self.cast and self.amp_dtype is not None:
            x = x.to(self.amp_dtype)
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def _context(self, x: torch.Tensor):
        if self.amp_dtype is None or self.cast:
            return contextlib.nullcontext()
        return torch.autocast(x.device.type, dtype=self.amp_dtype)

    def _in_pieces(self, fn: Callable, x: torch.Tensor):
        mb = self.micro_batch
        if mb is None or x.dim() == 0 or x.shape[0] <= mb:
            return fn(x)
        return join([fn(piece) for piece in x.split(mb)])

    def _early_applies(self, x: torch.Tensor) -> bool:
        return (self.early is not None and x.dim() > 0 and x.shape[0] > self.early[1]
                and not self.model.training)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        if not self._early_applies(x):
            return self._in_pieces(self.model.forward_features, x)
        count, rows = self.early
        pieces = self._pieces

        def chain(modules, t):
            for m in modules:
                t = m(t)
            return t
        # Each slice's output is a new tensor, and torch.cat copies it: a later piece may
        # overwrite its input (onednn.py) without touching anything the caller holds.
        mid = torch.cat([chain(pieces[:count], piece) for piece in x.split(rows)])
        return self._in_pieces(lambda t: chain(pieces[count:], t), mid)

    def _head_whole(self, x: torch.Tensor) -> bool:
        # Only the body is sliced where the model's own forward is the contract's
        # head(features): a classifier reads all its weights once per call, however few
        # samples it gets, so in slices vgg16's 0.5 GB of fc weights were read 8 times a batch.
        # (In training mode a model with aux heads returns more than the head does.)
        return (self.micro_batch is not None and x.dim() > 0 and x.shape[0] > self.micro_batch
                and self._run is self.model and isinstance(self.model, ZooNet)
                and not self.model.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), self._context(x):
            x = self._prepare(x)
            if self._head_whole(x) or self._early_applies(x):
                return self.model.forward_head(self._features(x))
            return self._in_pieces(self._run, x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), self._context(x):
            return self._features(self._prepare(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.cast and self.amp_dtype is not None:
            x = x.to(self.amp_dtype)
        with torch.inference_mode(), self._context(x):
            return self.model.forward_head(x, pre_logits=pre_logits)
