"""int8 on the CPU: static post-training quantization of any cnnzoo model, in one call.

``quantize(model, calibration)`` folds BatchNorm, observes the activations on the calibration
batches and returns a :class:`QuantizedModel`: weights int8 per output channel, activations
8-bit per tensor. It is built twice, on the two libraries that do this well, and the faster one
on this CPU is kept, as ``optimize`` races its candidates:

- ``onnxruntime``: the model exported to ONNX, quantized by ONNX Runtime's static QDQ quantizer
  (``quantize_static``: uint8 activations, int8 weights, the u8s8 pairs that VNNI and AMX
  multiply; ranges at the 99.999th percentile of each activation's histogram, which agreed
  with fp32 better than min-max ranges on the trained models of bench/int8_accuracy.py:
  mobilenet_v2 99.2% of held-out images against 98.65%, efficientnet_b0 96.45% against 95.95%) and run by an ONNX Runtime session, which fuses each QDQ group into one int8 kernel.
  The same QDQ file is what ``cnnzoo export --int8`` writes.
- ``inductor``: PyTorch's PT2E flow, from torchao: ``torch.export``, ``X86InductorQuantizer``
  (which gives a residual add and a concatenation's inputs the quantization parameters the
  fused oneDNN kernels need), ``convert_pt2e``, then ``torch.compile`` with frozen weights,
  which lowers each quantize-conv-dequantize pattern to oneDNN's int8 convolution.
- ``reference`` (asked for by name, never raced): the converted PT2E graph run as it is, each
  quantize/dequantize pair computed in float. It has the int8 numerics at no compile cost and
  no speed; tests and accuracy checks use it.

Ops that no backend computes in int8 (LocalResponseNorm, the deformable conv, the non-local
block's products) stay in float, and ``report.float_ops`` counts them.

Measured (2-core AMD EPYC with AVX512-VNNI, batch 16, 2 threads, a shared machine), resnet18 at
224: timm fp32 eager 8.8 images/s, ``inductor`` 30, ``onnxruntime`` 55; building them took
44 s (compile) and 7 s. ``bench/peers.py --int8`` and ``bench/int8_accuracy.py`` measure the
rest; docs/int8.md holds their tables.
"""
from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from . import onnxrt as _onnxrt
from .fold import fold_batchnorm
from .timing import race

BACKENDS = ("onnxruntime", "inductor", "reference")
# Module classes that keep a float kernel in both backends, by the name the report gives.
_FLOAT_MODULES = {"LocalResponseNorm": "LocalResponseNorm (no int8 kernel)",
                  "DeformConv2d": "deformable conv (no int8 kernel)"}


@dataclass
class QuantizeReport:
    """What ``quantize`` built and chose."""

    backend: str = ""
    # Median milliseconds of one batch of ``batch_size`` images, by candidate raced.
    timings_ms: dict[str, float] = field(default_factory=dict)
    # Seconds each candidate took to build (export, calibration, quantization, compilation).
    build_s: dict[str, float] = field(default_factory=dict)
    # Candidates that could not be built, with the one-line reason.
    failed: dict[str, str] = field(default_factory=dict)
    # What stays in float: a description -> how many in the model.
    float_ops: dict[str, int] = field(default_factory=dict)
    folded: int = 0
    calibration_images: int = 0
    # How activation ranges were set: 'percentile' (ONNX Runtime, 99.999th), 'min-max' (its
    # fallback), 'histogram observers' (PT2E: X86InductorQuantizer's default).
    calibration: str = ""
    batch_size: int = 0

    @property
    def passes(self) -> list[str]:
        parts = [f"{self.folded} BN folded",
                 f"int8 ({self.backend}), calibrated on {self.calibration_images} images"
                 + (f" ({self.calibration})" if self.calibration else "")]
        parts += [f"{n} {what} in float" for what, n in self.float_ops.items()]
        return parts

    def describe(self) -> str:
        text = ", ".join(self.passes)
        if len(self.timings_ms) > 1:
            text += "; raced: " + ", ".join(f"{k} {v:.1f} ms" for k, v in self.timings_ms.items())
        return text


class QuantizedModel(nn.Module):
    """An int8 model: call it with float images, get float logits.

    ``onnx_bytes`` holds the QDQ ONNX file where ONNX Runtime built it (``cnnzoo export --int8``
    writes it); ``graph`` the converted PT2E module where torchao did.
    """

    def __init__(self, runner, report: QuantizeReport, *, onnx_bytes: bytes | None = None,
                 graph: nn.Module | None = None):
        super().__init__()
        self.report = report
        self.onnx_bytes = onnx_bytes
        # Not registered as a submodule: its int8 buffers are not a state dict to load.
        self.__dict__["graph"] = graph
        self.__dict__["runner"] = runner

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # int8 runs on the CPU, in float at its edges: a batch from elsewhere is brought here.
        return self.runner(x.to("cpu", torch.float32))

    def extra_repr(self) -> str:
        return self.report.describe()


def calibration_batches(calibration, limit: int | None = None,
                        batch_size: int = 32) -> list[torch.Tensor]:
    """Float image batches from a tensor (N, C, H, W), or an iterable of tensors or of
    ``(images, labels)`` pairs (a DataLoader); at most ``limit`` images in all."""
    if isinstance(calibration, torch.Tensor):
        calibration = calibration.split(batch_size)
    batches, seen = [], 0
    for item in calibration:
        x = item[0] if isinstance(item, (tuple, list)) else item
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            raise ValueError("calibration must give image batches shaped (N, C, H, W), got "
                             f"{type(x).__name__}{tuple(x.shape) if hasattr(x, 'shape') else ''}")
        if limit is not None:
            x = x[:limit - seen]
        batches.append(x.detach().to("cpu", torch.float32))
        seen += len(x)
        if limit is not None and seen >= limit:
            break
    if not seen:
        raise ValueError("calibration gave no images")
    return batches


def _float_modules(model: nn.Module) -> dict[str, int]:
    counts: dict[str, int] = {}
    for m in model.modules():
        what = _FLOAT_MODULES.get(type(m).__name__)
        if what:
            counts[what] = counts.get(what, 0) + 1
    return counts


def _one_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


# -- ONNX Runtime: QDQ ------------------------------------------------------------------------
def onnx_qdq(model: nn.Module, batches: list[torch.Tensor]) -> tuple[bytes, str]:
    """``model`` (BatchNorm folded, eval) as a statically quantized QDQ ONNX file's bytes, and
    how its activation ranges were calibrated."""
    _onnxrt._ort()  # a missing onnxruntime is one line saying how to get it
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        """The batches, handed over one stride at a time (``set_range``)."""

        def __init__(self):
            self.items = iter(batches)

        def __len__(self):
            return len(batches)

        def set_range(self, start_index: int, end_index: int):
            self.items = iter(batches[start_index:end_index])

        def get_next(self):
            x = next(self.items, None)
            return None if x is None else {"input": x.numpy()}

    with tempfile.TemporaryDirectory() as tmp:
        plain, pre, out = (os.path.join(tmp, f) for f in ("f.onnx", "p.onnx", "q.onnx"))
        # The deformable conv has an ONNX form from opset 19 on, through cnnzoo's exporter.
        from ..export.onnx import DEFORM_OPSET, _has_deform_conv, _register_symbolics
        _register_symbolics()
        opset = DEFORM_OPSET if _has_deform_conv(model) else _onnxrt.OPSET
        with torch.no_grad():
            # torchvision checks its compiled ops on the first deform_conv2d call; traced, that
            # check is an op ONNX has no form for.
            model(batches[0][:1])
        with open(plain, "wb") as f:
            f.write(_onnxrt.export_onnx_bytes(model, batches[0][:1], opset=opset))
        # The quantizer logs to the root logger, once per weight it quantizes per tensor
        # (DenseNet's pre-activation BN scales), lines a user can do nothing about.
        with warnings.catch_warnings(), _quiet_logs(""):
            warnings.simplefilter("ignore")
            # ONNX's own optimiser and shape inference first, as ONNX Runtime advises, so the
            # quantizer sees the graph the session will run.
            quant_pre_process(plain, pre, skip_symbolic_shape=True)
            # One batch at a time ("strided"): its histograms merged into the ones before, so
            # memory holds one batch's activations, not all (256 VGG-16 images: 15 GB). The
            # histogram collector prints a line a batch; the user sees the report instead.
            # numpy cannot cut a histogram of 2048 bins over a range a few floats wide (an
            # activation that hardly varies, as a random network's SE gates); min-max then.
            for method in (CalibrationMethod.Percentile, CalibrationMethod.MinMax):
                try:
                    with contextlib.redirect_stdout(io.StringIO()):
                        quantize_static(pre, out, Reader(), quant_format=QuantFormat.QDQ,
                                        per_channel=True, activation_type=QuantType.QUInt8,
                                        weight_type=QuantType.QInt8, calibrate_method=method,
                                        extra_options={"WeightSymmetric": True,
                                                       "ActivationSymmetric": False,
                                                       "CalibStridedMinMax": 1})
                    break
                except ValueError as exc:
                    if method != CalibrationMethod.Percentile or "bins" not in str(exc):
                        raise
        with open(out, "rb") as f:
            return f.read(), "percentile" if method == CalibrationMethod.Percentile else "min-max"


def float_nodes(onnx_bytes: bytes) -> dict[str, int]:
    """Compute nodes of a QDQ file that read no dequantized input: those that run in float."""
    import onnx

    graph = onnx.load_from_string(onnx_bytes).graph
    made_by = {out: node.op_type for node in graph.node for out in node.output}
    counts: dict[str, int] = {}
    for node in graph.node:
        if node.op_type in ("Conv", "Gemm", "MatMul", "ConvTranspose"):
            if not any(made_by.get(i) == "DequantizeLinear" for i in node.input[:1]):
                counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


# -- PT2E: torchao's X86InductorQuantizer ---------------------------------------------------------
@contextlib.contextmanager
def _quiet_logs(*names: str):
    """torch's loggers at ERROR for a while: torchao's import logs a pytree deprecation and
    inductor's first compile a CUDA_HOME guess, lines that say nothing about the user's model."""
    loggers = [logging.getLogger(n or None) for n in names]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for log, level in zip(loggers, levels):
            log.setLevel(level)


def _torchao():
    try:
        with _quiet_logs("torch.utils._pytree"):
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
            from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq
    except ImportError as exc:
        raise _onnxrt.BackendUnavailable("the inductor int8 backend needs "
                                         "`pip install torchao`") from exc
    return prepare_pt2e, convert_pt2e, xiq


def pt2e_reference(model: nn.Module, batches: list[torch.Tensor]) -> nn.Module:
    """The converted PT2E graph: quantize/dequantize pairs around each int8 op, run in float."""
    prepare_pt2e, convert_pt2e, xiq = _torchao()
    batch = torch.export.Dim.DYNAMIC
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exported = torch.export.export(model, (batches[0],), dynamic_shapes=({0: batch},))
        quantizer = xiq.X86InductorQuantizer().set_global(
            xiq.get_default_x86_inductor_quantization_config())
        prepared = prepare_pt2e(exported.module(), quantizer)
        with torch.no_grad():
            for x in batches:
                prepared(x)
        return convert_pt2e(prepared)


def graph_float_ops(graph: nn.Module) -> dict[str, int]:
    """Compute nodes of a converted PT2E graph that read no dequantized input (run in float)."""
    names = {"aten.conv2d.default": "conv", "aten.linear.default": "linear",
             "aten.matmul.default": "matmul", "aten.bmm.default": "matmul"}
    counts: dict[str, int] = {}
    for node in graph.graph.nodes:
        kind = names.get(str(node.target)) if node.op == "call_function" else None
        if kind is None:
            continue
        first = node.args[0]
        if not (isinstance(first, torch.fx.Node) and "dequantize" in str(first.target)):
            counts[kind] = counts.get(kind, 0) + 1
    return counts


class _Frozen:
    """``torch.compile`` of the converted graph with inductor's weight freezing on for every
    call: freezing is what lets inductor pack the int8 weights and match the int8 conv
    patterns, and a call at a new batch size compiles again, under the same setting."""

    def __init__(self, graph: nn.Module):
        self.compiled = torch.compile(graph)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import torch._inductor.config as inductor_config  # private; checked in _inductor_ok

        with inductor_config.patch(freezing=True), torch.no_grad(), \
                _quiet_logs("torch.utils.cpp_extension"):
            return self.compiled(x)


def _inductor_ok() -> str | None:
    """Why the inductor candidate cannot run here, or None."""
    try:
        import torch._inductor.config as inductor_config
    except ImportError:
        return "this torch has no inductor"
    if not hasattr(inductor_config, "freezing"):
        return "this torch's inductor has no weight freezing"
    return None


# -- the call ---------------------------------------------------------------------------------------
def _build(name: str, model: nn.Module, batches: list[torch.Tensor], example: torch.Tensor,
           threads: int | None):
    """(runner, onnx_bytes, graph) of one candidate, run once on ``example``."""
    if name == "onnxruntime":
        data, how = onnx_qdq(model, batches)
        runner = _onnxrt.OrtRunner(data, threads=threads)
        runner(example)
        runner.calibration = how
        return runner, data, None
    graph = pt2e_reference(model, batches)
    if name == "reference":
        return graph, None, graph
    why = _inductor_ok()
    if why:
        raise _onnxrt.BackendUnavailable(why)
    runner = _Frozen(graph)
    runner(example)
    return runner, None, graph


def quantize(model: nn.Module, calibration, *, backend: str | None = None,
             batch_size: int = 16, limit: int | None = None, threads: int | None = None,
             steps: int = 3) -> QuantizedModel:
    """Return ``model`` quantized to int8 on the CPU, calibrated on ``calibration``.

    ``calibration``: a tensor of images (N, C, H, W) or an iterable of batches (a DataLoader
    of ``(images, labels)`` too), as the model sees them (normalized); ``limit`` caps how many
    images are used. ``backend``: ``'onnxruntime'``, ``'inductor'``, ``'reference'`` or None
    (``'auto'``), which builds the first two and keeps the faster on a batch of
    ``batch_size`` calibration images, timed in turns for ``steps`` rounds. The model is copied;
    the result's ``report`` says which backend won, what each measured, what took how long to
    build, what stays in float and why. A backend that cannot be built (a package missing, an
    op its exporter rejects) is left out with its reason in ``report.failed``; when none can
    be, :class:`~cnnzoo.perf.onnxrt.BackendUnavailable` says why in one line.
    """
    if backend == "auto":
        backend = None
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)} or None, got {backend!r}")
    batches = calibration_batches(calibration, limit)
    images = torch.cat(batches)
    example = images[:batch_size]
    if len(example) < batch_size:  # a short calibration set still times a whole batch
        example = example.repeat((batch_size + len(example) - 1) // len(example), 1, 1, 1)
        example = example[:batch_size]
    work = copy.deepcopy(model).cpu().float().eval()
    for p in work.parameters():
        p.requires_grad_(False)
    report = QuantizeReport(folded=len(fold_batchnorm(work)), calibration_images=len(images),
                            batch_size=batch_size, float_ops=_float_modules(work))
    names = [backend] if backend else ["onnxruntime", "inductor"]
    built = {}
    for name in names:
        start = time.perf_counter()
        try:
            built[name] = _build(name, work, batches, example, threads)
        except Exception as exc:  # noqa: BLE001 - any failure of a candidate rules it out
            if isinstance(exc, (KeyboardInterrupt, MemoryError)):
                raise
            report.failed[name] = _one_line(exc)
            continue
        report.build_s[name] = round(time.perf_counter() - start, 2)
    if not built:
        reasons = "; ".join(f"{k}: {v}" for k, v in report.failed.items())
        raise _onnxrt.BackendUnavailable(f"cannot quantize the model: {reasons}")
    if len(built) > 1:
        with torch.no_grad():
            per_step = race({n: (lambda r=b[0]: r(example)) for n, b in built.items()},
                            rounds=steps)
        report.timings_ms = {n: round(1000 * statistics.median(v), 3) for n, v in per_step.items()}
        report.backend = min(report.timings_ms, key=report.timings_ms.get)
    else:
        report.backend = next(iter(built))
    runner, data, graph = built[report.backend]
    report.calibration = getattr(runner, "calibration", "histogram observers")
    found = float_nodes(data) if data is not None else graph_float_ops(graph)
    for op, n in found.items():
        report.float_ops[f"{op} ops with float inputs"] = n
    return QuantizedModel(runner, report, onnx_bytes=data, graph=graph)
