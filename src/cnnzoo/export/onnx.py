"""ONNX export with a dynamic batch dimension, checked against onnxruntime before it counts.

The graph is traced at batch 1 and then run by onnxruntime on a random batch of another size:
that one run proves both that the batch axis really is dynamic and that the exported network
computes what the PyTorch one does (max abs difference <= ``atol``). The file is written under a
temporary name and renamed only after the check passed, so a failed export leaves nothing behind
and an existing file is never replaced without ``force``.

The exporter is torch's TorchScript-based one (``dynamo=False``): the torch.export-based default
needs the ``onnxscript`` package, which cnnzoo does not depend on, and every network here is a
static graph the tracer captures exactly (the parity check would say otherwise).
"""
from __future__ import annotations

import io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import CnnzooError
from ..weights.io import atomic_write

DEFAULT_OPSET = 17
# ONNX has a DeformConv operator from opset 19 on (onnxruntime runs it on the CPU); torch's
# exporter does not know torchvision's op, so it is taught below.
DEFORM_OPSET = 19


class ExportError(CnnzooError):
    """An export that cannot be done or did not reproduce the model."""


@dataclass(frozen=True)
class ExportResult:
    path: Path
    opset: int
    input_size: tuple[int, int, int]
    check_batch: int
    max_abs_diff: float
    size_bytes: int


def _require_onnx():
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise ExportError(f"ONNX export needs the onnx and onnxruntime packages ({exc.name} is "
                          f"missing): pip install 'cnnzoo[export]'") from None
    return onnx, onnxruntime


def _deform_conv2d_symbolic(g, input, weight, offset, mask, bias, stride_h, stride_w, pad_h,
                            pad_w, dil_h, dil_w, n_weight_grps, n_offset_grps, use_mask):
    # torchvision's offsets are laid out as ONNX's: (N, 2 * offset groups * kh * kw, H, W), y first.
    from torch.onnx.symbolic_helper import _get_const
    sh, sw, ph, pw, dh, dw = (_get_const(v, "i", "int") for v in
                              (stride_h, stride_w, pad_h, pad_w, dil_h, dil_w))
    groups, offset_groups = _get_const(n_weight_grps, "i", "g"), _get_const(n_offset_grps, "i", "o")
    inputs = [input, weight, offset, bias] + ([mask] if _get_const(use_mask, "b", "m") else [])
    return g.op("DeformConv", *inputs, dilations_i=[dh, dw], group_i=groups,
                offset_group_i=offset_groups, pads_i=[ph, pw, ph, pw], strides_i=[sh, sw])


def _has_deform_conv(model: nn.Module) -> bool:
    return any(type(m).__name__ == "DeformConv2d" for m in model.modules())


def _register_symbolics() -> None:
    from torch.onnx import register_custom_op_symbolic
    register_custom_op_symbolic("torchvision::deform_conv2d", _deform_conv2d_symbolic,
                                DEFORM_OPSET)


def _metadata(model: nn.Module, opset: int, input_size: tuple[int, ...]) -> dict[str, str]:
    cfg = getattr(model, "default_cfg", None)
    meta = {"cnnzoo.opset": str(opset), "cnnzoo.input_size": json.dumps(list(input_size))}
    if getattr(model, "model_name", None):
        meta["cnnzoo.model"] = model.model_name
    if cfg is not None:
        for key in ("mean", "std", "interpolation", "crop_pct", "num_classes"):
            meta[f"cnnzoo.{key}"] = json.dumps(getattr(cfg, key))
        if "pretrained" in cfg.extra:
            meta["cnnzoo.pretrained"] = json.dumps(cfg.extra["pretrained"])
    return meta


def export_onnx(model: nn.Module, path: str | os.PathLike, *,
                input_size: tuple[int, int, int] | None = None, opset: int | None = None,
                check_batch: int = 2, atol: float = 1e-4, force: bool = False,
                seed: int = 0) -> ExportResult:
    """Write ``model`` to ``path`` as ONNX (input ``input``, output ``logits``, batch dynamic).

    The file is kept only if onnxruntime reproduces PyTorch on a random batch of
    ``check_batch`` within ``atol`` (times the largest output magnitude where that exceeds 1).

    ``opset`` defaults to ``DEFAULT_OPSET``, or ``DEFORM_OPSET`` for deformable convolutions.
    """
    path = Path(path)
    if path.exists() and not force:
        raise ExportError(f"{path} already exists; pass --force (force=True) to replace it")
    if path.is_dir():
        raise ExportError(f"{path} is a folder; give a file name such as model.onnx")
    if check_batch < 2:
        raise ValueError("check_batch must be >= 2: a batch other than the traced 1")
    onnx, ort = _require_onnx()
    if opset is None:
        opset = DEFORM_OPSET if _has_deform_conv(model) else DEFAULT_OPSET
    _register_symbolics()
    cfg = getattr(model, "default_cfg", None)
    input_size = tuple(input_size or (cfg.input_size if cfg else (3, 224, 224)))
    model = model.eval()
    gen = torch.Generator().manual_seed(seed)
    example = torch.randn(1, *input_size, generator=gen)
    batch = torch.randn(check_batch, *input_size, generator=gen)
    with torch.no_grad():
        expected = model(batch)
    if not isinstance(expected, torch.Tensor):
        raise ExportError("only models returning one tensor can be exported "
                          "(not features_only models)")
    diff: list[float] = []

    def write(tmp: str) -> None:
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            # The legacy exporter announces its deprecation, and tracing warns about
            # shape checks it freezes; the onnxruntime comparison below is the real check.
            warnings.simplefilter("ignore")
            try:
                torch.onnx.export(model, (example,), buffer, dynamo=False, opset_version=opset,
                                  input_names=["input"], output_names=["logits"],
                                  dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
            except torch.onnx.errors.OnnxExporterError as exc:
                what = str(exc).strip().splitlines()[0].split(" Please feel free")[0]
                raise ExportError(f"ONNX opset {opset} cannot express this model at input "
                                  f"{'x'.join(map(str, input_size))}: {what}") from None
        proto = onnx.load_from_string(buffer.getvalue())
        del buffer
        for key, value in _metadata(model, opset, input_size).items():
            proto.metadata_props.add(key=key, value=value)
        # No separate onnx.checker pass: onnxruntime validates the graph as it loads it below,
        # and the checker would serialise a VGG's 500 MB once more.
        onnx.save(proto, tmp)
        del proto
        session = ort.InferenceSession(tmp, providers=["CPUExecutionProvider"])
        got = session.run(None, {"input": batch.numpy()})[0]
        diff.append(float((torch.from_numpy(got) - expected).abs().max()))
        # Float error grows with the values summed: the bound is atol for outputs of size <= 1
        # and relative beyond (an untrained network's logits can reach the hundreds).
        bound = atol * max(1.0, float(expected.abs().max()))
        if got.shape != tuple(expected.shape) or not diff[0] <= bound:
            raise ExportError(f"onnxruntime disagrees with PyTorch on {path.name}: max abs "
                              f"difference {diff[0]:.2e} > {bound:.1e}, output "
                              f"{tuple(got.shape)} vs {tuple(expected.shape)}; nothing written")

    atomic_write(path, write)
    return ExportResult(path=path, opset=opset, input_size=input_size, check_batch=check_batch,
                        max_abs_diff=diff[0], size_bytes=path.stat().st_size)
