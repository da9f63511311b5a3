"""``optimize(model)``: the same function, faster, for inference.

What is done always: eval mode, BatchNorm folded into its convolution (``fold.py``), parameters
frozen, every call under ``torch.inference_mode`` (no autograd bookkeeping at all). What is
chosen by measuring on the device, because no rule holds everywhere: the memory layout
(channels_last lets oneDNN and cuDNN use their fastest dense kernels, yet depthwise and grouped
convolutions can be slower in it on some builds), and, when asked, low precision by autocast or
by weights cast once, ``torch.compile``, and ONNX Runtime (often the fastest on a CPU for the
depthwise-heavy families). On a CPU, three more: convolutions fused with what follows them into
pre-packed oneDNN calls (``onednn.py``; in float32, and in bfloat16 on weights cast once where
oneDNN has bf16 kernels), 3x3 ones moved to NNPACK's Winograd kernels one by one where each
measured faster there (``nnpack.py``, float32), and micro-batches.
"""
from __future__ import annotations

import contextlib
import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..layers.conv2d import PooledConv2d
from ..models.base import ZooNet
from . import nnpack as _nnpack
from . import onednn as _onednn
from .dense_buffer import buffer_dense_blocks
from .fold import fold_batchnorm
from .preact import fold_preactivation
from .timing import Clock, race, synchronizer


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

    def describe(self) -> str:
        parts = [f"{self.folded} BN folded"]
        if self.preact:
            parts.append(f"{self.preact} BN-ReLU folded into the next conv")
        if self.buffered:
            parts.append(f"{self.buffered} dense blocks on one buffer each")
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
        if self.onnxruntime:
            parts.append("onnxruntime")
        if self.compiled:
            parts.append(f"compiled ({self.compiled})")
        return ", ".join(parts)


class InferenceModel(nn.Module):
    """An optimised model: call it like the original, in inference mode, in the chosen layout.

    ``amp_dtype`` runs it in lower precision, either under autocast or, when ``cast`` is set,
    with weights converted once (no per-call weight casts) and inputs cast on the way in.
    ``micro_batch`` runs a larger batch that many samples at a time: every sample is computed
    alone anyway in inference, and smaller activations stay in cache (and, where the heap is
    not kept, in memory the allocator already holds: ``perf/memory.py``). For a cnnzoo
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
        return _join([fn(piece) for piece in x.split(mb)])

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


@torch.inference_mode()
def _early_split(candidate: InferenceModel, example: torch.Tensor) -> int | None:
    """How many body pieces bring the maps to a quarter of the input's side; None: no split.

    Only a cnnzoo model in eval mode, run by torch on a 4-d batch of more than two, whose body
    is a chain with more pieces after that point.
    """
    model = candidate.model
    if not (isinstance(model, ZooNet) and candidate._run is model and not model.training
            and example.dim() == 4 and example.shape[0] > 2):
        return None
    pieces = model.feature_pieces()
    x = candidate._prepare(example[:1])
    side = x.shape[-1]
    with candidate._context(x):
        for i, piece in enumerate(pieces[:-1]):
            x = piece(x)
            if x.dim() != 4:
                return None
            if 4 * x.shape[-1] <= side:
                return i + 1
    return None


@torch.inference_mode()
def _runs(candidate: InferenceModel, example: torch.Tensor) -> bool:
    """Whether ``candidate`` runs ``example``; False where it meets an op with no kernel for
    its dtype on this device (torch raises NotImplementedError, or a RuntimeError saying "not
    implemented for 'BFloat16'", as torchvision's deformable conv does)."""
    try:
        candidate(example[:1])
    except (NotImplementedError, RuntimeError) as exc:
        if isinstance(exc, NotImplementedError) or "not implemented for" in str(exc):
            return False
        raise
    return True


def _join(outs: list):
    """The slices' outputs joined along the batch, whatever nest of tuples holds them."""
    first = outs[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(outs)
    if isinstance(first, (tuple, list)):
        joined = [_join(list(parts)) for parts in zip(*outs)]
        # A named tuple (InceptionOutputs) is built from fields, a plain one from an iterable.
        return type(first)(*joined) if hasattr(first, "_fields") else type(first)(joined)
    if first is None:
        return None
    raise TypeError(f"cannot join micro-batch outputs of type {type(first).__name__}")


def _example_input(model: nn.Module, batch_size: int, device: torch.device) -> torch.Tensor:
    cfg = getattr(model, "default_cfg", None)
    size = tuple(cfg.input_size) if cfg is not None else (3, 224, 224)
    return torch.randn(batch_size, *size, device=device)


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters(), torch.empty(0)).device


def _set_layout(model: nn.Module, channels_last: bool) -> None:
    model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def _choice(value, name: str) -> None:
    if value not in (True, False, "auto"):
        raise ValueError(f"{name} must be True, False or 'auto', got {value!r}")


def optimize(model: nn.Module, *, example: torch.Tensor | None = None, batch_size: int = 8,
             fold_bn: bool | str = "auto", channels_last: bool | str = "auto",
             amp_dtype: torch.dtype | None = None, compile: bool | str = False,
             compile_backend: str = "inductor", onnxruntime: bool | str = False,
             onednn: bool | str = "auto", nnpack: bool | str = "auto",
             micro_batch: int | str | None = "auto",
             inplace: bool = False, warmup: int = 1, steps: int = 3,
             clock: Clock = time.perf_counter) -> InferenceModel:
    """Return an :class:`InferenceModel` computing what ``model`` computes (to ~1e-5), faster.

    ``fold_bn``, ``channels_last``, ``compile`` and ``onnxruntime`` take True, False or
    ``'auto'``: 'auto' times the choices on ``example`` (or a random batch of ``batch_size`` at
    the model's default input size) and keeps the fastest; True forces it. Folding is a choice
    too because it does not always pay: on an H100 in bf16, cuDNN's conv-with-bias ran resnet50
    about 10% slower than conv + BatchNorm, while compiled, the folded model was the fastest.
    Where ``onednn`` fuses (CPU, float32 or bf16) 'auto' folds without measuring, since the
    fusion needs the BatchNorm gone.
    ``amp_dtype`` (bfloat16, float16) runs in lower precision and measures autocast against
    weights cast once. ``onednn`` (CPU, float32; bfloat16 too where oneDNN has bf16 kernels,
    racing as a model with weights cast once) fuses each convolution with its activation
    and residual add into one oneDNN call on weights packed once (``onednn.py``). ``nnpack``
    (with those fused calls): 'auto' times each 3x3 stride-1 conv on NNPACK against its oneDNN
    call at the input it sees in the model, once at the whole batch, and moves the ones NNPACK
    ran faster; True moves them all, unmeasured.
    ``micro_batch`` (an int, None, or 'auto': on a CPU, 2, 4 and 8 measured against the whole
    batch) runs large batches in slices, through torch or ONNX Runtime alike.
    ``onnxruntime=True`` hands the model to ONNX Runtime without measuring torch's own
    choices (layout, oneDNN calls, compile), which it would not use. The candidates of a
    choice are timed in turns (``timing.race``), so drift on a shared machine cannot decide
    it; ``steps`` is the number of rounds, each timing one step of every candidate. The
    choices and timings are in ``result.report``. The model is copied unless
    ``inplace=True``, because folding rewrites its weights.
    """
    for name, value in (("fold_bn", fold_bn), ("channels_last", channels_last),
                        ("compile", compile), ("onnxruntime", onnxruntime), ("onednn", onednn),
                        ("nnpack", nnpack)):
        _choice(value, name)
    if not (micro_batch in (None, "auto") or (isinstance(micro_batch, int)
                                              and not isinstance(micro_batch, bool)
                                              and micro_batch > 0)):
        raise ValueError(f"micro_batch must be a positive int, None or 'auto', "
                         f"got {micro_batch!r}")
    folded = model if inplace else copy.deepcopy(model)
    folded.eval()
    if isinstance(folded, ZooNet):
        # The layout is raced below and set by InferenceModel; the model must not move the
        # input to its own choice behind it.
        folded.cpu_layout = None
    # The gates of SE and CBAM as GEMMs: on a one-pixel map oneDNN's convolution (fused or
    # not) spends 30-100 us per call on a CPU setting up a few thousand multiply-adds.
    for m in folded.modules():
        if isinstance(m, PooledConv2d):
            m.as_matmul = True
    # ONNX Runtime asked for: torch's own choices (layout, oneDNN calls, compile) would be
    # measured for nothing; ONNX Runtime folds BatchNorm itself, and lays out its own tensors.
    ort_only = onnxruntime is True
    report = OptimizeReport()
    device = _device_of(folded)
    # In bfloat16 the fused calls take weights cast once, so they race as a cast model.
    use_onednn = bool(onednn) and device.type == "cpu" and not ort_only and \
        _onednn.available(amp_dtype or torch.float32)
    # Where oneDNN fusion follows, the unfolded model is no real candidate: a BatchNorm between
    # a conv and its activation is a fusion lost. Raced anyway on 2 shared cores, it won by
    # noise (resnet50, mobilenet_v3_large), then ran slower than folded when measured again.
    unfolded = copy.deepcopy(folded) if fold_bn == "auto" and not ort_only and \
        not use_onednn else None
    # 'auto' tries ONNX Runtime only where it runs its fast kernels: its CPU build, fp32.
    wants_ort = ort_only or (onnxruntime == "auto" and amp_dtype is None
                             and device.type == "cpu")
    for_ort = folded
    if fold_bn:
        report.folded = len(fold_batchnorm(folded))
        # ONNX Runtime gets the model before the pre-activation fold: its per-channel clamps
        # are no ops ONNX Runtime fuses or runs in its blocked layout (densenet121 ran 1.5x
        # slower for them), while it handles BatchNorm -> ReLU itself.
        if wants_ort:
            for_ort = folded if ort_only else copy.deepcopy(folded)
        if not ort_only:
            # Before the pre-activation fold, which then makes each dense layer's clamp read
            # the block's buffer out of place: the clamp is the one copy the layer needs.
            report.buffered = buffer_dense_blocks(folded)
            report.preact = len(fold_preactivation(folded))
    if not report.folded and not report.preact:
        unfolded = None  # nothing was folded: nothing to choose between
    for m in (folded, unfolded):
        for p in (m.parameters() if m is not None else ()):
            p.requires_grad_(False)
    if example is None and ("auto" in (fold_bn, channels_last, compile, onnxruntime, micro_batch)
                            or use_onednn or micro_batch is not None):
        example = _example_input(folded, batch_size, device)
    sync = synchronizer(device)

    def measure(name: str, candidate: InferenceModel) -> float:
        return race_pick({name: candidate})[1]

    def race_pick(candidates: dict[str, InferenceModel],
                  prepare: dict[str, Callable[[], None]] | None = None) -> tuple[str, float]:
        """Time the candidates in turns; record each one's median; return the fastest."""
        per_step = race({n: (lambda c=c: c(example)) for n, c in candidates.items()},
                        rounds=steps, warmup=warmup, sync=sync, clock=clock, prepare=prepare)
        ms = {n: 1000 * statistics.median(v) for n, v in per_step.items()}
        report.timings_ms.update({n: round(v, 3) for n, v in ms.items()})
        name = min(ms, key=ms.get)
        return name, ms[name]

    def wrap(m: nn.Module, layout: bool, **kw) -> InferenceModel:
        return InferenceModel(m, channels_last=layout, amp_dtype=amp_dtype, report=report, **kw)

    def layout_name(key: str, layout: bool) -> str:
        return f"{key}_{'channels_last' if layout else 'nchw'}"

    # Stage 1, eager: BN folded or not, NCHW or channels_last. One model in two layouts is
    # switched between turns rather than copied: half the memory.
    models = {"folded" if report.folded or report.preact else "eager": folded}
    if unfolded is not None:
        models["unfolded"] = unfolded
    layouts = (False,) if ort_only else \
        (False, True) if channels_last == "auto" else (channels_last is True,)
    choices = {layout_name(k, lay): (k, lay) for k in models for lay in layouts}
    best_ms = None
    if len(choices) > 1:
        best_name, best_ms = race_pick(
            {n: wrap(models[k], lay) for n, (k, lay) in choices.items()},
            prepare={n: (lambda m=models[k], lay=lay: _set_layout(m, lay))
                     for n, (k, lay) in choices.items()})
    else:
        best_name = next(iter(choices))
    key, layout = choices[best_name]
    chosen = models[key]
    _set_layout(chosen, layout)
    best = wrap(chosen, layout)
    best_folded = key == "folded"

    def baseline() -> float:
        nonlocal best_ms
        if best_ms is None:
            best_ms = measure(best_name, best)
        return best_ms

    # Stage 2, low precision: autocast re-casts every weight on every call; casting the
    # weights once saves that, at the price of pooling and the classifier running in low
    # precision too. Some ops have no low-precision kernel on some devices (AlexNet's LRN
    # pools in 3-d, which a CPU has in float32 only; autocast runs it so): a model cast whole
    # that cannot run is no candidate.
    cast_runs = False
    if amp_dtype is not None and not ort_only:
        cast = wrap(copy.deepcopy(chosen).to(amp_dtype), layout, cast=True)
        cast_runs = _runs(cast, example)
        if cast_runs:
            cast_ms = measure(best_name + "_cast", cast)
            if cast_ms < baseline():
                best, best_name, best_ms = cast, best_name + "_cast", cast_ms

    # Stage 3, oneDNN on a CPU: conv + activation (+ residual add) as one call each, on weights
    # packed once for the input size they will see; then the 3x3 convs NNPACK runs faster.
    # Those are measured once, on the whole batch, and the same ones move in every slice's copy.
    use_nnpack = use_onednn and amp_dtype is None and bool(nnpack) and _nnpack.available()
    nnpack_names: dict[bool, list[str]] = {}  # by layout: NNPACK's choice is measured in each

    def fused_copy(rows: int, lay: bool = layout) -> nn.Module:
        m = copy.deepcopy(chosen)
        _set_layout(m, lay)  # a no-op in the layout chosen; NCHW for NNPACK's own candidate
        x = example[:rows]  # as InferenceModel._prepare hands it on
        if amp_dtype is not None:
            m, x = m.to(amp_dtype), x.to(amp_dtype)
        if lay:
            x = x.contiguous(memory_format=torch.channels_last)
        _onednn.fuse_for_cpu(m, x)
        if use_nnpack:
            if lay not in nnpack_names:
                nnpack_names[lay] = _nnpack.choose(m, x, measure=nnpack == "auto",
                                                   warmup=warmup, steps=steps, clock=clock)
            _nnpack.place(m, nnpack_names[lay])
        return m

    # Stage 4, micro-batches (CPU): slices of the batch. They are tried on the fused and the
    # plain model alike, as the two are often within noise whole; every candidate of stages 3
    # and 4 races the model chosen so far, in turns.
    pool = {best_name: best}
    fused: dict[str, bool] = {}  # the fused candidates, with their layout
    if use_onednn and (amp_dtype is None or cast_runs):
        m = fused_copy(example.shape[0])
        if _onednn.count_fused(m) or _nnpack.count(m):
            if onednn is True:
                pool = {}  # asked for: the plain model is no candidate
            name = layout_name(key, layout) + ("_cast" if amp_dtype else "") + "_onednn"
            pool[name] = wrap(m, layout, cast=amp_dtype is not None)
            fused[name] = layout
        # NNPACK takes NCHW only: where the plain model chose channels_last, the fused one in
        # NCHW, 3x3 convs on NNPACK with no layout conversions, races too. VGG-16 is the case:
        # its layouts are within noise on oneDNN, while its convs ran 1.1-1.6x faster on
        # NNPACK from NCHW and 0.7-1.5x from NHWC (bench/nnpack_layers.py).
        if use_nnpack and layout and channels_last == "auto":
            m = fused_copy(example.shape[0], False)
            if _nnpack.count(m):
                pool[layout_name(key, False) + "_onednn"] = wrap(m, False)
                fused[layout_name(key, False) + "_onednn"] = False
    sizes = [m for m in (2, 4, 8) if m < example.shape[0]] \
        if micro_batch == "auto" and device.type == "cpu" else []
    if not ort_only:
        for whole_name, whole in list(pool.items()):
            for mb in sizes:
                # Packed weights suit one input size: pack them again for the slice.
                m = fused_copy(mb, fused[whole_name]) if whole_name in fused else whole.model
                pool[f"{whole_name}_mb{mb}"] = InferenceModel(
                    m, channels_last=whole.channels_last, amp_dtype=amp_dtype, cast=whole.cast,
                    micro_batch=mb, report=report)
    if len(pool) > 1:
        best_name, best_ms = race_pick(pool)
    else:
        best_name = next(iter(pool))
        best_ms = report.timings_ms.get(best_name)
    best = pool[best_name]
    # Stage 4b: the body's first pieces, up to where the maps are a quarter of the input's
    # side, in slices of 1 or 2, the rest as just chosen; they race the model chosen so far.
    early_at = _early_split(best, example) if micro_batch == "auto" and \
        device.type == "cpu" and not ort_only else None
    if early_at is not None:
        contest = {best_name: best}
        for rows in (1, 2):
            if rows < (best.micro_batch or example.shape[0]):
                contest[f"{best_name}_early{early_at}x{rows}"] = InferenceModel(
                    best.model, channels_last=best.channels_last, amp_dtype=amp_dtype,
                    cast=best.cast, micro_batch=best.micro_batch, early=(early_at, rows),
                    report=report)
        if len(contest) > 1:
            best_name, best_ms = race_pick(contest)
            best = contest[best_name]
    if isinstance(micro_batch, int) and not ort_only:
        # A size given: slice the chosen model, without measuring.
        m = fused_copy(micro_batch, fused[best_name]) if best_name in fused else best.model
        best = InferenceModel(m, channels_last=best.channels_last, amp_dtype=amp_dtype,
                              cast=best.cast, micro_batch=micro_batch, report=report)
        best_name, best_ms = f"{best_name}_mb{micro_batch}", None

    # Stage 5, compile: always from the folded model, whose conv-bias-activation chains
    # inductor fuses. Freezing (CPU only) lets inductor pre-pack weights for oneDNN, sound
    # here since the weights are frozen.
    if compile and not ort_only:
        base = folded if not best.cast else copy.deepcopy(folded).to(amp_dtype)
        _set_layout(base, layout)
        options = {"freezing": True} if compile_backend == "inductor" and \
            device.type == "cpu" else None
        compiled = wrap(base, layout, cast=best.cast, runner=torch.compile(
            base, backend=compile_backend, options=options))
        if compile is True or measure(f"compiled_{compile_backend}", compiled) < baseline():
            best, best_ms = compiled, report.timings_ms.get(f"compiled_{compile_backend}")
            best_folded = bool(report.folded or report.preact)
            report.compiled = compile_backend

    # Stage 6, ONNX Runtime. Its arena reuses memory, but micro-batches still pay for the
    # depthwise families, whose activations then stay in cache (mobilenet_v2 and
    # efficientnet_b0 ~20% at batch 16 on 2 cores); one session serves every slice size.
    # 'auto' races them against the model chosen so far, in turns.
    if wants_ort:
        from .onnxrt import OrtRunner
        ref = example if example is not None else _example_input(folded, 1, device)
        runner = OrtRunner(for_ort, example=ref[:1].contiguous(), device=device)
        slices = [micro_batch] if isinstance(micro_batch, int) else [None, *sizes]
        ort_pool = {"onnxruntime" + (f"_mb{mb}" if mb else ""):
                    wrap(for_ort, False, runner=runner, micro_batch=mb) for mb in slices}
        contest = ort_pool if ort_only else {**ort_pool, best_name: best}
        name = race_pick(contest)[0] if len(contest) > 1 else next(iter(contest))
        if name in ort_pool:
            best, best_folded = ort_pool[name], bool(report.folded)
            report.onnxruntime = True
            report.preact = 0

    report.channels_last = best.channels_last
    report.micro_batch = best.micro_batch
    report.early = getattr(best, "early", None)
    report.onednn = _onednn.count_fused(best.model)
    report.nnpack = _nnpack.count(best.model)
    if not best_folded:
        report.folded = report.preact = 0
    report.amp = (f"{str(amp_dtype).removeprefix('torch.')} "
                  f"{'weights cast' if best.cast else 'autocast'}") if amp_dtype else None
    return best
