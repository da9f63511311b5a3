"""ONNX Runtime as an inference backend.

ONNX Runtime fuses conv + BN + activation and, on CPU, runs depthwise convolutions through
kernels that eager PyTorch lacks, so for the depthwise-heavy families it is often the fastest
path on a CPU. :class:`OrtRunner` takes a model (exported here, in memory) or an ``.onnx`` file
and is called like a module: a tensor in, a tensor out.

The export below is the smallest that works (TorchScript exporter, a dynamic batch axis); the
``cnnzoo.export`` package holds the full one with its parity check. ``optimize`` builds on this
module (``onnxruntime=True``, and ``optimize.onnxruntime_model``); nothing here imports it.
"""
from __future__ import annotations

import copy
import io
import os
import warnings

import numpy as np
import torch
from torch import nn

from ..errors import CnnzooError

OPSET = 17


class BackendUnavailable(CnnzooError):
    """A backend whose package is missing or cannot run the model."""


def _ort():
    try:
        import onnxruntime
    except ImportError as exc:  # optional dependency, so say how to get it
        raise BackendUnavailable("the onnxruntime backend needs "
                                 "`pip install onnxruntime`") from exc
    return onnxruntime


def export_onnx_bytes(model: nn.Module, example: torch.Tensor, opset: int = OPSET) -> bytes:
    """The model as ONNX bytes, batch axis dynamic, weights folded in as constants."""
    buf = io.BytesIO()
    model = model.eval()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of the dynamo one, which needs
        # onnxscript; the graphs it writes for these CNNs are the same.
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), buf, dynamo=False, opset_version=opset,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                          do_constant_folding=True)
    return buf.getvalue()


def _providers(device: torch.device) -> list[str]:
    available = _ort().get_available_providers()
    if device.type == "cuda" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OrtRunner:
    """Run a model with ONNX Runtime: ``runner(x) -> logits`` as a torch tensor."""

    def __init__(self, source: nn.Module | bytes | str | os.PathLike, *,
                 example: torch.Tensor | None = None, threads: int | None = None,
                 device: str | torch.device = "cpu"):
        ort = _ort()
        self.device = torch.device(device)
        if isinstance(source, nn.Module):
            if example is None:
                raise ValueError("exporting a module needs an example input")
            if any(p.device.type != "cpu" for p in source.parameters()):
                source = copy.deepcopy(source).cpu()  # export on the CPU; leave theirs in place
            source = export_onnx_bytes(source, example.cpu())
        elif not isinstance(source, bytes):
            source = os.fspath(source)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Same thread count as torch, so a side-by-side compares kernels, not thread pools.
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(source, options, providers=_providers(self.device))
        self.input_name = self.session.get_inputs()[0].name

    def run_numpy(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(self.run_numpy(x))


def ort_errors() -> tuple[type[BaseException], ...]:
    """ONNX Runtime's own errors (Fail, InvalidGraph, ...), which derive from Exception alone;
    raises :class:`BackendUnavailable` where onnxruntime is not installed."""
    state = getattr(getattr(_ort(), "capi", None), "onnxruntime_pybind11_state", None)
    return tuple(v for v in vars(state).values() if isinstance(v, type)
                 and issubclass(v, Exception)) if state is not None else ()
