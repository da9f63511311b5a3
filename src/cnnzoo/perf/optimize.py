"""``optimize(model)``: the same function, faster, for inference.

What is done always: eval mode, BatchNorm folded into its convolution (``fold.py``), parameters
frozen, every call under ``torch.inference_mode`` (no autograd bookkeeping at all). What is
chosen by measuring on the device, because no rule holds everywhere: the memory layout
(channels_last lets oneDNN and cuDNN use their fastest dense kernels, yet depthwise and grouped
convolutions can be slower in it on some builds) and, when asked, ``torch.compile``.
"""
from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from .fold import fold_batchnorm
from .timing import Clock, synchronizer, time_steps


@dataclass
class OptimizeReport:
    folded: int = 0
    channels_last: bool = False
    compiled: str | None = None
    # Median step time (ms) of each candidate measured, by candidate name.
    timings_ms: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        parts = [f"{self.folded} BN folded", "channels_last" if self.channels_last else "NCHW"]
        if self.compiled:
            parts.append(f"compiled ({self.compiled})")
        return ", ".join(parts)


class InferenceModel(nn.Module):
    """An optimised model: call it like the original, in inference mode, in the chosen layout."""

    def __init__(self, model: nn.Module, *, channels_last: bool = False,
                 compiled: Callable | None = None, report: OptimizeReport | None = None):
        super().__init__()
        self.model = model
        self.channels_last = channels_last
        # The compiled callable wraps self.model; keep it out of the module tree so its
        # parameters are not listed twice.
        object.__setattr__(self, "_run", model if compiled is None else compiled)
        self.report = report or OptimizeReport()
        for attr in ("default_cfg", "card", "model_name", "num_classes", "num_features"):
            if hasattr(model, attr):
                object.__setattr__(self, attr, getattr(model, attr))

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self._run(self._prepare(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model.forward_features(self._prepare(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        with torch.inference_mode():
            return self.model.forward_head(x, pre_logits=pre_logits)


def _example_input(model: nn.Module, batch_size: int, device: torch.device) -> torch.Tensor:
    cfg = getattr(model, "default_cfg", None)
    size = tuple(cfg.input_size) if cfg is not None else (3, 224, 224)
    return torch.randn(batch_size, *size, device=device)


def _median_ms(fn: Callable[[], object], sync, clock: Clock, warmup: int, steps: int) -> float:
    per_step, _ = time_steps(fn, warmup=warmup, steps=steps, sync=sync, clock=clock)
    return 1000 * statistics.median(per_step)


def _set_layout(model: nn.Module, channels_last: bool) -> None:
    model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def optimize(model: nn.Module, *, example: torch.Tensor | None = None, batch_size: int = 8,
             channels_last: bool | str = "auto", compile: bool | str = False,
             compile_backend: str = "inductor", fold_bn: bool = True, inplace: bool = False,
             warmup: int = 1, steps: int = 3, clock: Clock = time.perf_counter) -> InferenceModel:
    """Return an :class:`InferenceModel` computing what ``model`` computes (to ~1e-5), faster.

    ``channels_last`` and ``compile`` take True, False or ``'auto'``: 'auto' times both choices
    on ``example`` (or a random batch of ``batch_size`` at the model's default input size) and
    keeps the faster; ``compile=True`` always compiles (``compile_backend``, 'inductor' by
    default). The choice and the timings are in ``result.report``. The model is copied unless
    ``inplace=True``, because folding rewrites its weights.
    """
    for name, value in (("channels_last", channels_last), ("compile", compile)):
        if value not in (True, False, "auto"):
            raise ValueError(f"{name} must be True, False or 'auto', got {value!r}")
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    report = OptimizeReport()
    if fold_bn:
        report.folded = len(fold_batchnorm(model))
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    if example is None and "auto" in (channels_last, compile):
        example = _example_input(model, batch_size, device)
    sync = synchronizer(device)

    def measure(name: str, run: Callable, layout: bool) -> float:
        x = example.contiguous(memory_format=torch.channels_last) if layout else example
        with torch.inference_mode():
            ms = _median_ms(lambda: run(x), sync, clock, warmup, steps)
        report.timings_ms[name] = round(ms, 3)
        return ms

    layout = channels_last if channels_last != "auto" else False
    if channels_last == "auto":
        eager = {}
        for cl in (False, True):
            _set_layout(model, cl)
            eager[cl] = measure("eager_channels_last" if cl else "eager_nchw", model, cl)
        layout = min(eager, key=eager.get)
    _set_layout(model, layout)

    compiled = None
    if compile:
        # Freezing turns weights into constants inductor can pre-pack for oneDNN and fold
        # into the graph: sound here, since the model is frozen and only run for inference.
        options = {"freezing": True} if compile_backend == "inductor" else None
        candidate = torch.compile(model, backend=compile_backend, options=options)
        if compile == "auto":
            name = "eager_channels_last" if layout else "eager_nchw"
            eager_ms = report.timings_ms.get(name) or measure(name, model, layout)
            compiled_ms = measure(f"compiled_{compile_backend}", candidate, layout)
            if compiled_ms < eager_ms:
                compiled = candidate
        else:
            compiled = candidate
    report.channels_last = bool(layout)
    report.compiled = compile_backend if compiled is not None else None
    return InferenceModel(model, channels_last=bool(layout), compiled=compiled, report=report)
