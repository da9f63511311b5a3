"""``optimize(model)``: the same function, faster, for inference; a pipeline of perf/ passes.

Always, on a copy: eval mode, parameters frozen, every call under ``torch.inference_mode``, and
the passes that pay wherever they apply:

- ``gates.py``: the SE and CBAM gates' 1x1 convs as GEMMs;
- ``pooling.py``: max and average pools on oneDNN's kernels (CPUs where those are faster);
- ``fold.py``, ``dense_buffer.py``, ``preact.py``: BatchNorm folded into the conv before it,
  DenseNet's blocks on one buffer, and its BatchNorm -> ReLU folded into the 1x1 conv after it;
- ``inplace.py``: BatchNorm and SE gates in place where the graph shows their input is fresh.

Then, chosen by racing candidates in turns on the device (``timing.race``), because no rule
holds everywhere: BatchNorm folded or not, the memory layout (``layout.py``), low precision by
autocast or by weights cast once (``precision.py``), convolutions fused with what follows them
into pre-packed oneDNN calls (``onednn.py``) with 3x3 ones on NNPACK where each ran faster
(``nnpack.py``), micro-batches and early slices (``slicing.py``), ``torch.compile`` and ONNX
Runtime (``onnxrt.py``). ``result.report`` lists the passes the returned model runs and what
each candidate measured.
"""
from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from . import nnpack as _nnpack
from . import onednn as _onednn
from .dense_buffer import buffer_dense_blocks
from .fold import fold_batchnorm
from .gates import PooledConv2d, gemm_gates
from .inference_model import InferenceModel, OptimizeReport
from .inplace import count_inplace, use_inplace
from .layout import set_layout
from . import onnxrt as _onnxrt
from .onnxrt import BackendUnavailable
from .pooling import available as pooling_available, count_pools, use_onednn_pooling
from .precision import deform_in_float32
from .preact import fold_preactivation
from .slicing import early_split
from .timing import Clock, race, synchronizer

__all__ = ["InferenceModel", "OptimizeReport", "onnxruntime_model", "optimize"]


@torch.inference_mode()
def _runs(candidate: InferenceModel, example: torch.Tensor) -> bool:
    """Whether ``candidate`` runs ``example``; False where it meets an op with no kernel for
    its dtype on this device (torch raises NotImplementedError, or a RuntimeError saying "not
    implemented for 'BFloat16'")."""
    try:
        candidate(example[:1])
    except (NotImplementedError, RuntimeError) as exc:
        if isinstance(exc, NotImplementedError) or "not implemented for" in str(exc):
            return False
        raise
    return True


def _example_input(model: nn.Module, batch_size: int, device: torch.device) -> torch.Tensor:
    cfg = getattr(model, "default_cfg", None)
    size = tuple(cfg.input_size) if cfg is not None else (3, 224, 224)
    return torch.randn(batch_size, *size, device=device)


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters(), torch.empty(0)).device


def _check(fold_bn, channels_last, compile, onnxruntime, onednn, nnpack, micro_batch) -> None:
    for name, value in (("fold_bn", fold_bn), ("channels_last", channels_last),
                        ("compile", compile), ("onnxruntime", onnxruntime), ("onednn", onednn),
                        ("nnpack", nnpack)):
        if value not in (True, False, "auto"):
            raise ValueError(f"{name} must be True, False or 'auto', got {value!r}")
    if not (micro_batch in (None, "auto") or (isinstance(micro_batch, int)
                                              and not isinstance(micro_batch, bool)
                                              and micro_batch > 0)):
        raise ValueError(f"micro_batch must be a positive int, None or 'auto', "
                         f"got {micro_batch!r}")


def _layout_name(key: str, layout: bool) -> str:
    return f"{key}_{'channels_last' if layout else 'nchw'}"


class _Search:
    """One ``optimize`` call: the always-on passes, then the stages of the race in turn.

    Each stage reads the best candidate so far (``best``, ``best_name``, ``best_ms``) and
    replaces it where one of its own candidates ran faster.
    """

    def __init__(self, model: nn.Module, example, batch_size, fold_bn, channels_last,
                 amp_dtype, compile, compile_backend, onnxruntime, onednn, nnpack, micro_batch,
                 warmup, steps, clock):
        self.fold_bn, self.channels_last, self.amp_dtype = fold_bn, channels_last, amp_dtype
        self.compile, self.compile_backend = compile, compile_backend
        self.onnxruntime, self.onednn_asked, self.nnpack_asked = onnxruntime, onednn, nnpack
        self.micro_batch, self.warmup, self.steps, self.clock = micro_batch, warmup, steps, clock
        self.report = OptimizeReport()
        self.model = model
        self.device = _device_of(model)
        # ONNX Runtime asked for: torch's own choices (layout, oneDNN calls, compile) would be
        # measured for nothing; ONNX Runtime folds BatchNorm itself, and lays out its tensors.
        self.ort_only = onnxruntime is True
        cpu = self.device.type == "cpu"
        # In bfloat16 the fused calls take weights cast once, so they race as a cast model.
        self.use_onednn = bool(onednn) and cpu and not self.ort_only and \
            _onednn.available(amp_dtype or torch.float32)
        self.use_nnpack = self.use_onednn and amp_dtype is None and bool(nnpack) and \
            _nnpack.available()
        # 'auto' tries ONNX Runtime only where it runs its fast kernels: its CPU build, fp32.
        self.wants_ort = self.ort_only or (onnxruntime == "auto" and amp_dtype is None and cpu)
        self.sizes = [m for m in (2, 4, 8) if m < (example.shape[0] if example is not None
                                                   else batch_size)] \
            if micro_batch == "auto" and cpu else []
        needs_example = "auto" in (fold_bn, channels_last, compile, onnxruntime, micro_batch) \
            or self.use_onednn or micro_batch is not None
        if example is None and needs_example:
            example = _example_input(model, batch_size, self.device)
        self.example = example
        self.sync = synchronizer(self.device)
        self.best: InferenceModel | None = None
        self.best_name, self.best_ms = "", None
        self.fused: dict[str, bool] = {}  # the fused candidates, with their layout
        self.nnpack_names: dict[bool, list[str]] = {}  # by layout: measured in each

    # -- the always-on passes -------------------------------------------------------------
    def prepare(self, inplace: bool) -> None:
        folded = self.model if inplace else copy.deepcopy(self.model)
        folded.eval()
        gemm_gates(folded)
        if self.device.type == "cpu":
            if pooling_available():
                use_onednn_pooling(folded)
            if self.amp_dtype is not None:
                deform_in_float32(folded)
        # Where oneDNN fusion follows, the unfolded model is no real candidate: a BatchNorm
        # between a conv and its activation is a fusion lost. Raced anyway on 2 shared cores,
        # it won by noise (resnet50, mobilenet_v3_large), then ran slower than folded.
        unfolded = copy.deepcopy(folded) if self.fold_bn == "auto" and not self.ort_only \
            and not self.use_onednn else None
        self.for_ort = folded
        if self.fold_bn:
            self.report.folded = len(fold_batchnorm(folded))
            # ONNX Runtime gets the model before the pre-activation fold: its per-channel
            # clamps are no ops ONNX Runtime fuses (densenet121 ran 1.5x slower for them).
            if self.wants_ort:
                self.for_ort = folded if self.ort_only else copy.deepcopy(folded)
            if not self.ort_only:
                # Before the pre-activation fold, which then makes each dense layer's clamp
                # read the block's buffer out of place: the clamp is the one copy it needs.
                self.report.buffered = buffer_dense_blocks(folded)
                self.report.preact = len(fold_preactivation(folded))
        if not self.report.folded and not self.report.preact:
            unfolded = None  # nothing was folded: nothing to choose between
        self.models = {"folded" if self.report.folded or self.report.preact else "eager": folded}
        if unfolded is not None:
            self.models["unfolded"] = unfolded
        for m in self.models.values():
            if not self.ort_only:
                use_inplace(m)
            for p in m.parameters():
                p.requires_grad_(False)

    # -- racing -----------------------------------------------------------------------------
    def race_pick(self, candidates: dict[str, InferenceModel],
                  prepare: dict[str, Callable[[], None]] | None = None) -> tuple[str, float]:
        """Time the candidates in turns; record each one's median; return the fastest."""
        per_step = race({n: (lambda c=c: c(self.example)) for n, c in candidates.items()},
                        rounds=self.steps, warmup=self.warmup, sync=self.sync,
                        clock=self.clock, prepare=prepare)
        ms = {n: 1000 * statistics.median(v) for n, v in per_step.items()}
        self.report.timings_ms.update({n: round(v, 3) for n, v in ms.items()})
        name = min(ms, key=ms.get)
        return name, ms[name]

    def contest(self, candidates: dict[str, InferenceModel]) -> None:
        """The fastest of ``candidates`` (which include the best so far) becomes the best."""
        if len(candidates) > 1:
            self.best_name, self.best_ms = self.race_pick(candidates)
            self.best = candidates[self.best_name]

    def baseline(self) -> float:
        if self.best_ms is None:
            self.best_ms = self.race_pick({self.best_name: self.best})[1]
        return self.best_ms

    def wrap(self, m: nn.Module, layout: bool, **kw) -> InferenceModel:
        return InferenceModel(m, channels_last=layout, amp_dtype=self.amp_dtype,
                              report=self.report, **kw)

    # -- stage 1: folded or not, NCHW or channels_last ------------------------------------
    def race_layout(self) -> None:
        layouts = (False,) if self.ort_only else (False, True) \
            if self.channels_last == "auto" else (self.channels_last is True,)
        choices = {_layout_name(k, lay): (k, lay) for k in self.models for lay in layouts}
        if len(choices) > 1:
            # One model in two layouts is switched between turns rather than copied.
            self.best_name, self.best_ms = self.race_pick(
                {n: self.wrap(self.models[k], lay) for n, (k, lay) in choices.items()},
                prepare={n: (lambda m=self.models[k], lay=lay: set_layout(m, lay))
                         for n, (k, lay) in choices.items()})
        else:
            self.best_name = next(iter(choices))
        self.key, self.layout = choices[self.best_name]
        self.chosen = self.models[self.key]
        set_layout(self.chosen, self.layout)
        self.best = self.wrap(self.chosen, self.layout)
        self.best_folded = self.key == "folded"

    # -- stage 2: low precision, autocast against weights cast once -----------------------
    def try_cast(self) -> None:
        # Autocast re-casts every weight on every call; weights cast once save that, at the
        # price of pooling and the classifier running in low precision too. A model cast whole
        # that meets an op with no low-precision kernel (AlexNet's LRN pools in 3-d, which a
        # CPU has in float32 only) is no candidate.
        self.cast_runs = False
        if self.amp_dtype is None or self.ort_only:
            return
        cast = self.wrap(copy.deepcopy(self.chosen).to(self.amp_dtype), self.layout, cast=True)
        self.cast_runs = _runs(cast, self.example)
        if self.cast_runs:
            name = self.best_name + "_cast"
            ms = self.race_pick({name: cast})[1]
            if ms < self.baseline():
                self.best, self.best_name, self.best_ms = cast, name, ms

    # -- stage 3: oneDNN fusion and NNPACK; stage 4: micro-batches ------------------------
    def fused_copy(self, rows: int, lay: bool | None = None) -> nn.Module:
        """The chosen model with its convs fused for an input of ``rows`` samples; packed
        weights suit one input size, so each slice size gets its own copy."""
        lay = self.layout if lay is None else lay
        m = copy.deepcopy(self.chosen)
        set_layout(m, lay)
        x = self.example[:rows]  # as InferenceModel hands it on
        if self.amp_dtype is not None:
            m, x = m.to(self.amp_dtype), x.to(self.amp_dtype)
        if lay:
            x = x.contiguous(memory_format=torch.channels_last)
        _onednn.fuse_for_cpu(m, x)
        if self.use_nnpack:
            if lay not in self.nnpack_names:
                self.nnpack_names[lay] = _nnpack.choose(
                    m, x, measure=self.nnpack_asked == "auto", warmup=self.warmup,
                    steps=self.steps, clock=self.clock)
            _nnpack.place(m, self.nnpack_names[lay])
        return m

    def fuse_and_slice(self) -> None:
        pool = {self.best_name: self.best}
        cast = self.amp_dtype is not None
        if self.use_onednn and (not cast or self.cast_runs):
            m = self.fused_copy(self.example.shape[0])
            if _onednn.count_fused(m) or _nnpack.count(m):
                if self.onednn_asked is True:
                    pool = {}  # asked for: the plain model is no candidate
                name = _layout_name(self.key, self.layout) + ("_cast" if cast else "") + "_onednn"
                pool[name] = self.wrap(m, self.layout, cast=cast)
                self.fused[name] = self.layout
            # NNPACK takes NCHW only: where the plain model chose channels_last, the fused one
            # in NCHW races too. VGG-16 is the case: its convs ran 1.1-1.6x faster on NNPACK
            # from NCHW and 0.7-1.5x from NHWC (bench/nnpack_layers.py).
            if self.use_nnpack and self.layout and self.channels_last == "auto":
                m = self.fused_copy(self.example.shape[0], False)
                if _nnpack.count(m):
                    name = _layout_name(self.key, False) + "_onednn"
                    pool[name] = self.wrap(m, False)
                    self.fused[name] = False
        if not self.ort_only:
            for whole_name, whole in list(pool.items()):
                for mb in self.sizes:
                    pool[f"{whole_name}_mb{mb}"] = self.sliced(whole_name, whole, mb)
        if len(pool) > 1:
            self.contest(pool)
        else:
            self.best_name = next(iter(pool))
            self.best = pool[self.best_name]
            self.best_ms = self.report.timings_ms.get(self.best_name)

    def sliced(self, name: str, whole: InferenceModel, mb: int, **kw) -> InferenceModel:
        m = self.fused_copy(mb, self.fused[name]) if name in self.fused else whole.model
        return InferenceModel(m, channels_last=whole.channels_last, amp_dtype=self.amp_dtype,
                              cast=whole.cast, micro_batch=mb, report=self.report, **kw)

    # -- stage 4b: the body's first pieces in slices of 1 or 2 ----------------------------
    def try_early(self) -> None:
        if self.micro_batch != "auto" or self.device.type != "cpu" or self.ort_only:
            return
        at = early_split(self.best, self.example)
        if at is None:
            return
        best = self.best
        contest = {self.best_name: best}
        for rows in (1, 2):
            if rows < (best.micro_batch or self.example.shape[0]):
                contest[f"{self.best_name}_early{at}x{rows}"] = InferenceModel(
                    best.model, channels_last=best.channels_last, amp_dtype=self.amp_dtype,
                    cast=best.cast, micro_batch=best.micro_batch, early=(at, rows),
                    report=self.report)
        self.contest(contest)

    def fixed_micro_batch(self) -> None:
        # A size given: slice the chosen model, without measuring.
        if isinstance(self.micro_batch, int) and not self.ort_only:
            self.best = self.sliced(self.best_name, self.best, self.micro_batch)
            self.best_name, self.best_ms = f"{self.best_name}_mb{self.micro_batch}", None

    # -- stage 5: torch.compile, from the folded model ------------------------------------
    def try_compile(self) -> None:
        if not self.compile or self.ort_only:
            return
        folded = self.models["folded" if "folded" in self.models else "eager"]
        base = folded if not self.best.cast else copy.deepcopy(folded).to(self.amp_dtype)
        set_layout(base, self.layout)
        # Freezing (CPU only) lets inductor pre-pack weights for oneDNN: the weights are frozen.
        options = {"freezing": True} if self.compile_backend == "inductor" and \
            self.device.type == "cpu" else None
        name = f"compiled_{self.compile_backend}"
        compiled = self.wrap(base, self.layout, cast=self.best.cast, runner=torch.compile(
            base, backend=self.compile_backend, options=options))
        if self.compile is True or self.race_pick({name: compiled})[1] < self.baseline():
            self.best, self.best_ms = compiled, self.report.timings_ms.get(name)
            self.best_folded = bool(self.report.folded or self.report.preact)
            self.report.compiled = self.compile_backend

    # -- stage 6: ONNX Runtime, whole or in slices ----------------------------------------
    def try_onnxruntime(self) -> None:
        # Its arena reuses memory, but micro-batches still pay for the depthwise families,
        # whose activations then stay in cache (~20% at batch 16 on 2 cores).
        if not self.wants_ort:
            return
        ref = self.example if self.example is not None else \
            _example_input(self.for_ort, 1, self.device)
        runner = _onnxrt.OrtRunner(self.for_ort, example=ref[:1].contiguous(), device=self.device)
        slices = [self.micro_batch] if isinstance(self.micro_batch, int) else [None, *self.sizes]
        ort_pool = {"onnxruntime" + (f"_mb{mb}" if mb else ""):
                    self.wrap(self.for_ort, False, runner=runner, micro_batch=mb)
                    for mb in slices}
        contest = ort_pool if self.ort_only else {**ort_pool, self.best_name: self.best}
        name = self.race_pick(contest)[0] if len(contest) > 1 else next(iter(contest))
        if name in ort_pool:
            self.best, self.best_folded = ort_pool[name], bool(self.report.folded)
            self.report.onnxruntime = True
            self.report.preact = 0

    def finish(self) -> InferenceModel:
        best, report = self.best, self.report
        report.channels_last = best.channels_last
        report.micro_batch = best.micro_batch
        report.early = best.early
        report.onednn = _onednn.count_fused(best.model)
        report.nnpack = _nnpack.count(best.model)
        if not self.best_folded:
            report.folded = report.preact = 0
        if report.onnxruntime:
            report.buffered = 0
        report.amp = (f"{str(self.amp_dtype).removeprefix('torch.')} "
                      f"{'weights cast' if best.cast else 'autocast'}") if self.amp_dtype else None
        m = best.model
        report.gemm_gates = sum(isinstance(c, PooledConv2d) and c.as_matmul for c in m.modules())
        report.onednn_pools = count_pools(m)
        report.inplace = count_inplace(m)
        return best


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
    choices (layout, oneDNN calls, compile), which it would not use. ``steps`` is the number
    of rounds of a race, each timing one step of every candidate. The choices, the passes
    and the timings are in ``result.report``. The model is copied unless ``inplace=True``,
    because the passes rewrite its modules and folding its weights.
    """
    _check(fold_bn, channels_last, compile, onnxruntime, onednn, nnpack, micro_batch)
    search = _Search(model, example, batch_size, fold_bn, channels_last, amp_dtype, compile,
                     compile_backend, onnxruntime, onednn, nnpack, micro_batch, warmup, steps,
                     clock)
    search.prepare(inplace)
    search.race_layout()
    search.try_cast()
    search.fuse_and_slice()
    search.try_early()
    search.fixed_micro_batch()
    search.try_compile()
    search.try_onnxruntime()
    return search.finish()


def onnxruntime_model(model: nn.Module, name: str = "the model") -> nn.Module:
    """``model`` as ONNX Runtime runs it, behind the module interface ``predict`` and
    ``evaluate`` call: BatchNorm folded, exported once, the batch whole. Nothing is timed: the
    candidates ``optimize`` would race cost a command more than they save it. A model the
    exporter or ONNX Runtime cannot take ends in one line saying so, like a missing package;
    an error of another kind is a bug of ours and is shown as one."""
    errors = _onnxrt.ort_errors()
    try:
        fast = optimize(model, onnxruntime=True, micro_batch=None)
        # Two images, once: an export that fixed the batch size, or an op ONNX Runtime cannot
        # run, fails here, in one line, rather than later inside predict or eval.
        cfg = getattr(model, "default_cfg", None)
        fast(torch.zeros(2, *(cfg.input_size if cfg is not None else (3, 224, 224))))
    except (RuntimeError, *errors) as exc:  # the exporter's are RuntimeErrors
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BackendUnavailable(f"onnxruntime cannot run {name}: {detail}") from exc
    return fast
